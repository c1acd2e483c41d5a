"""The dtypes ``nn.LSTM`` and ``nn.LSTMCell`` give under ``torch.autocast``.

fusedlstm's operators are on no autocast list (under autocast they simply
run in the dtypes they are given); the modules apply torch's behaviour
themselves, because that behaviour is not one cast rule but what torch's
own implementation happens to do:

CPU. ``lstm`` and ``lstm_cell`` are on no CPU autocast list. nn.LSTM's
native CPU path is a loop of ``linear``/``matmul`` (cast to the autocast
dtype) and elementwise ops (which promote), so:

* every GEMM operand is in the autocast dtype;
* c_n is in promote(autocast dtype, c0's dtype): float32 for a float32 c0;
* output and h_n are in the autocast dtype with ``proj_size`` (the step
  ends in a matmul), else in c_n's dtype. LSTMCell: h and c as c_n.

Where mkldnn is enabled, nn.LSTM without ``proj_size`` on padded input
takes oneDNN instead, whose autocast rule casts everything: on CPUs with
oneDNN bf16 support every result comes back in the autocast dtype, and on
CPUs without (no AVX-512) it raises "could not create a primitive
descriptor". fusedlstm follows the native path on every CPU.

CUDA. nn.LSTM runs cuDNN, whose autocast wrapper casts to float16 whatever
the autocast dtype (aten/src/ATen/cudnn/AutocastRNN.cpp), so every result
is float16; without cuDNN, or for bfloat16 input (which cuDNN's RNN does
not take), the native path's fused cell is on the lower-precision list
and every result is in the autocast dtype. nn.LSTMCell's ``lstm_cell`` is on
that list too.

fusedlstm runs its kernels in the GEMM dtype above (the CPU kernels compute
reduced types in float) and casts the results to the dtypes above. Like
autocast, it leaves float64 (and non-floating) tensors alone: a float64
model with float64 input runs in float64; where a float64 tensor meets a
cast one in a GEMM, torch's GEMM refuses it, and so does fusedlstm, with its
message. One case torch computes and fusedlstm does not: a float64 c0 in a
single step of a single layer, where torch returns float64 results
(NotImplementedError).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ._dtype_names import aten_name, c10_name


@dataclass(frozen=True)
class Plan:
    compute: torch.dtype  # the dtype fusedlstm's kernels run in
    state: torch.dtype    # c_n (LSTMCell: h and c)
    output: torch.dtype   # output and h_n


def _autocast_device_types() -> frozenset:
    """The device types autocast exists for, asked once: a property of the
    build. torch.compile (dynamo) in torch 2.11 cannot trace
    ``torch.amp.is_autocast_available``; a lookup in this set it can."""
    candidates = {"cpu", "cuda", "xpu", "mps", "hpu", "xla", "ipu", "mtia", "maia",
                  torch._C._get_privateuse1_backend_name()}
    available = set()
    for kind in candidates:
        try:
            if torch.amp.is_autocast_available(kind):
                available.add(kind)
        except RuntimeError:  # a device type this build does not know
            pass
    return frozenset(available)


_AUTOCAST_DEVICE_TYPES = _autocast_device_types()


def lower_dtype(input: Tensor, *, cell: bool) -> Optional[torch.dtype]:
    """The dtype autocast casts nn.LSTM's (``cell``: nn.LSTMCell's) GEMM
    operands to on ``input``'s device; None where autocast is off there."""
    if not torch._C._is_any_autocast_enabled():
        return None  # the common case, answered without the device lookup
    kind = input.device.type
    if kind not in _AUTOCAST_DEVICE_TYPES or not torch.is_autocast_enabled(kind):
        return None
    if kind == "cuda" and not cell and _cudnn_takes(input):
        return torch.float16
    return torch.get_autocast_dtype(kind)


def _cudnn_takes(input: Tensor) -> bool:
    return (
        torch.backends.cudnn.enabled
        and torch.backends.cudnn.is_available()
        and input.dtype in (torch.float32, torch.float16, torch.float64)
    )


def _gemm_dtype(a: Tensor, w: Tensor, lower: torch.dtype) -> torch.dtype:
    """The dtype of an autocast GEMM of ``a`` and ``w``: autocast casts
    floating tensors other than float64, and the GEMM refuses a mismatch."""
    da = lower if a.is_floating_point() and a.dtype != torch.float64 else a.dtype
    dw = lower if w.is_floating_point() and w.dtype != torch.float64 else w.dtype
    if da != dw:
        raise RuntimeError(
            f"mat1 and mat2 must have the same dtype, but got {aten_name(da)} and {aten_name(dw)}"
        )
    return da


def check_input(input: Tensor, w_ih: Tensor, lower: torch.dtype) -> None:
    """The input projection's check, the first GEMM nn.LSTM runs."""
    _gemm_dtype(input, w_ih, lower)


def lstm_plan(
    lower: torch.dtype, input: Tensor, hx, w_ih: Tensor, w_hh: Tensor, *,
    proj: bool, single_step: bool,
) -> Plan:
    """nn.LSTM's dtypes; raises where its GEMMs refuse the dtypes.
    ``single_step``: one layer and one time step."""
    compute = _gemm_dtype(input, w_ih, lower)  # the input projection
    _gemm_dtype(hx[0], w_hh, lower)  # the first step's recurrent GEMM
    c0 = hx[1]
    state = torch.promote_types(compute, c0.dtype)
    if state != compute and state == torch.float64:
        # c, and so h, became float64: the projection's matmul, or the next
        # step's (or layer's) linear refuses it; after one step of one layer
        # torch returns float64 results.
        if proj:
            raise RuntimeError(
                "expected m1 and m2 to have the same dtype, but got: "
                f"{c10_name(state)} != {c10_name(compute)}"
            )
        if not single_step:
            raise RuntimeError(
                "mat1 and mat2 must have the same dtype, but got "
                f"{aten_name(state)} and {aten_name(compute)}"
            )
        _raise_float64_state()
    if input.device.type == "cuda":
        return Plan(compute, compute, compute)
    return Plan(compute, state, compute if proj else state)


def cell_plan(lower: torch.dtype, input: Tensor, hx, w_ih: Tensor, w_hh: Tensor) -> Plan:
    """nn.LSTMCell's dtypes (its step runs the recurrent GEMM first)."""
    _gemm_dtype(hx[0], w_hh, lower)
    compute = _gemm_dtype(input, w_ih, lower)
    state = torch.promote_types(compute, hx[1].dtype)
    if state != compute and state == torch.float64:
        _raise_float64_state()
    if input.device.type == "cuda":
        return Plan(compute, compute, compute)
    return Plan(compute, state, state)


def _raise_float64_state() -> None:
    raise NotImplementedError(
        "fusedlstm under autocast does not take a float64 c0 with weights "
        "autocast casts: torch.nn returns float64 results for it, fusedlstm "
        "computes in one dtype; pass c0 in float32"
    )
