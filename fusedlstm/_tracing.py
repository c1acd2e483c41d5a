"""How fusedlstm's Python code meets the tracers: torch.jit.trace's warnings
quieted where they are noise, ONNX export, and TorchDynamo's constant marks."""
from __future__ import annotations

import contextlib
import sys
import warnings

import torch

# Stateless, so one instance serves every call outside tracing (a generator
# context manager per call costs a microsecond or two of a small step).
_NOTHING_TO_QUIET = contextlib.nullcontext()


@contextlib.contextmanager
def _tracer_warnings_hidden():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield


def shapes_fixed_by_module():
    """Around Python code that compares shapes which a traced module fixes:
    argument checks (run on the example inputs; they leave nothing in the
    trace) and branches on a parameter's shape. torch.jit.trace warns at each
    such comparison that the trace may not generalise; here it does, so the
    warning is hidden, as torch hides those of its own modules."""
    if not torch.jit.is_tracing():
        return _NOTHING_TO_QUIET
    return _tracer_warnings_hidden()


def tracing_or_compiling() -> bool:
    """Whether torch.jit.trace or TorchDynamo (torch.compile, torch.export,
    the ONNX exporters) is recording the call."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def onnx_exporting() -> bool:
    """Whether torch.onnx.export (either exporter) is tracing the call.

    ONNX has no kernel of fusedlstm's but has an LSTM operator, which
    nn.LSTM's own op exports to; under export the modules run nn.LSTM's
    forward, so that the ONNX graph is the one nn.LSTM gives. Asked only
    while tracing: torch.onnx.is_in_onnx_export costs a microsecond (it
    imports on every call), and both exporters trace."""
    if not tracing_or_compiling():
        return False
    return torch.onnx.is_in_onnx_export()


def assume_constant_result(fn):
    """torch.compiler.assume_constant_result, without importing TorchDynamo.

    The official decorator imports torch._dynamo (about a second here, as
    long as importing torch) only to set one attribute on ``fn``; applied at
    import time it made ``import fusedlstm`` take twice as long as ``import
    torch``. Where TorchDynamo is loaded already, the official decorator
    runs; elsewhere the attribute it sets is set here, and
    tests/test_import.py checks that both mark a function alike."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn
