"""What ``nn.LSTM`` does on the CPU with states of another dtype than the input.

nn.LSTM runs one of two CPU kernels (ATen's ``lstm`` in RNN.cpp). oneDNN's
RNN, where oneDNN is enabled and takes the input's dtype (float32; bfloat16
or, without grad, float16 where the CPU supports them), the input is not
empty, there is no projection, and the input is padded or (torch 2.13;
torch 2.11 and 2.12 run every packed input in the native loop, see
``_ONEDNN_TAKES_EQUAL_PACKED``) packed with every batch size equal.
Otherwise its native loop of ``linear``/``matmul`` and
elementwise ops, which fusedlstm computes too. oneDNN refuses states of
another dtype (with messages of its own); the native loop

* multiplies h0 by W_hh first: an h0 of another dtype fails that ``linear``
  (whose message tells addmm, with a bias, from mm, without);
* computes c = f * c0 + i * g, which promotes: a c0 whose dtype promotes into
  the input's (a narrower float, an integer, bool) computes as
  ``c0.to(input.dtype)``; a wider one (float64 with float32 input, float32
  with bfloat16) makes c, and so h, wider, and the next product fails (the
  projection's, else the next step's or layer's), unless the call was one
  step of one layer, which returns the wider results.

oneDNN takes one mix: bfloat16 or float16 input and h0 with a float32 c0. It
carries c in float32 (as it does for a c0 in the input's dtype) and returns
c_n, and c0's gradient, in float32.

fusedlstm.LSTM follows both on the CPU. On oneDNN's calls it takes that mix
(its CPU operators carry c in float32 too) and refuses the rest with its own
check (``expected scalar type``); on the native loop's it takes c0 as the loop
does and raises the loop's messages. A one-step, one-layer call with a wider
c0 runs torch's own cell step (functional.lstm).
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor

from . import ops
from ._dtype_names import aten_name, c10_name
from ._tracing import assume_constant_result


def _onednn_fp16_supported() -> bool:
    op = getattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", None)
    return bool(op()) if op is not None else False


def _onednn_takes_equal_packed() -> bool:
    """Whether this torch runs packed input of equal lengths on oneDNN (2.13
    does, 2.11 and 2.12 do not), asked of the operator nn.LSTM calls: with
    a float64 c0 oneDNN refuses the dtype in a message of its own
    ("get_mkldnn_dtype: ..."), while the native loop fails at its second
    step's product."""
    if not torch.backends.mkldnn.is_available():
        return False
    # The operator nn.LSTM calls for packed input, on zero weights: a module
    # would draw its initial weights from the caller's RNG.
    data, batch_sizes = torch.zeros(2, 1), torch.tensor([1, 1])
    state = [torch.zeros(1, 1, 1), torch.zeros(1, 1, 1, dtype=torch.float64)]
    weights = [torch.zeros(4, 1), torch.zeros(4, 1), torch.zeros(4), torch.zeros(4)]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        with torch.backends.mkldnn.flags(enabled=True):
            try:
                torch.lstm(data, batch_sizes, state, weights, True, 1, 0.0, False, False)
            # Whatever a later torch raises here, the import must not fail.
            except Exception as error:
                return "mkldnn" in str(error)
    return False


# Read once: properties of the CPU and of this torch.
_ONEDNN_FP16 = _onednn_fp16_supported()
_ONEDNN_TAKES_EQUAL_PACKED = _onednn_takes_equal_packed()


@assume_constant_result
def _onednn_enabled() -> bool:
    # TorchDynamo cannot trace torch.backends.mkldnn; under torch.compile the
    # switch is read once, when the graph is traced. torch.export turns it
    # off while it traces (so that no backend's decomposition enters the
    # graph), and an exported nn.LSTM takes oneDNN's calls where it runs: an
    # export reads oneDNN's default, on wherever torch has it.
    if torch.compiler.is_exporting():
        return bool(torch.backends.mkldnn.is_available())
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def nn_runs_native_loop(input: Tensor, batch_sizes: Optional[Tensor], proj: bool) -> bool:
    """Whether nn.LSTM runs ATen's native loop (not oneDNN) for this CPU call."""
    if proj or not _onednn_enabled():
        return True
    dtype = input.dtype
    onednn_dtype = (
        dtype == torch.float32
        or (dtype == torch.bfloat16 and ops._ONEDNN_BF16)
        or (dtype == torch.float16 and not torch.is_grad_enabled() and _ONEDNN_FP16)
    )
    if not onednn_dtype or input.numel() == 0:
        return True
    if batch_sizes is not None and batch_sizes.numel() > 0:
        if not _ONEDNN_TAKES_EQUAL_PACKED:
            return True
        return bool((batch_sizes != batch_sizes[0]).any())
    return False


def _mismatched_product(left: torch.dtype, right: torch.dtype, *, bias: bool) -> RuntimeError:
    """The error of the native loop's ``linear`` on operands of two dtypes:
    with a bias it runs addmm, without one mm, and the two word it apart."""
    if bias:
        return RuntimeError("mat1 and mat2 must have the same dtype, but got "
                            f"{aten_name(left)} and {aten_name(right)}")
    return RuntimeError("expected m1 and m2 to have the same dtype, but got: "
                        f"{c10_name(left)} != {c10_name(right)}")


def native_loop_states(input: Tensor, hx, w_hh: Tensor, *, proj: bool, bias: bool,
                       single_step: bool) -> tuple[Tensor, Tensor]:
    """(h0, c0) as the native loop takes them, or its error. A wider c0 is
    returned as it is only where the loop returns wider results (one step
    of one layer, no projection)."""
    h0, c0 = hx
    if h0.dtype != w_hh.dtype:
        raise _mismatched_product(h0.dtype, w_hh.dtype, bias=bias)
    state = torch.promote_types(input.dtype, c0.dtype)
    if state == input.dtype:
        return h0, c0.to(input.dtype)
    # The wider h meets the projection's product (never biased), else the
    # next step's or layer's.
    if proj:
        raise _mismatched_product(state, input.dtype, bias=False)
    if not single_step:
        raise _mismatched_product(state, input.dtype, bias=bias)
    return h0, c0


def onednn_takes_float32_c0(input: Tensor, hx, batch_sizes: Optional[Tensor],
                            proj: bool) -> bool:
    """Whether nn.LSTM takes this CPU call's float32 c0 with bfloat16/float16
    input and h0: oneDNN runs it and keeps c in float32."""
    h0, c0 = hx
    return (input.device.type == "cpu"
            and input.dtype in (torch.bfloat16, torch.float16)
            and h0.dtype == input.dtype and c0.dtype == torch.float32
            and not nn_runs_native_loop(input, batch_sizes, proj))
