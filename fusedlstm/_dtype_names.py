"""How ATen names dtypes in the messages fusedlstm reproduces."""
from __future__ import annotations

import torch


def aten_name(dtype: torch.dtype) -> str:
    """ScalarType names, as in "expected scalar type Float": torch.float32 -> Float."""
    return {
        torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
        torch.bfloat16: "BFloat16", torch.int64: "Long", torch.int32: "Int",
        torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
        torch.bool: "Bool", torch.complex64: "ComplexFloat",
        torch.complex128: "ComplexDouble",
    }.get(dtype, str(dtype).replace("torch.", ""))


def c10_name(dtype: torch.dtype) -> str:
    """C++ type names, as in the CPU addmm's "double != c10::BFloat16"."""
    return {
        torch.float64: "double", torch.float32: "float",
        torch.bfloat16: "c10::BFloat16", torch.float16: "c10::Half",
        torch.complex64: "c10::complex<float>", torch.complex128: "c10::complex<double>",
    }.get(dtype, str(dtype).replace("torch.", ""))
