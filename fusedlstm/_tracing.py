"""How fusedlstm's Python code meets the tracers: torch.jit.trace's warnings
quieted where they are noise, ONNX export, torch.fx's leaf modules, and
TorchDynamo's constant marks."""
from __future__ import annotations

import contextlib
import sys
import warnings

import torch
from torch.fx import Proxy
from torch.fx._symbolic_trace import is_fx_symbolic_tracing  # noqa: F401 (modules.py)

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


def _first_proxy(value):
    if isinstance(value, Proxy):
        return value
    if isinstance(value, (tuple, list)):  # hx, a PackedSequence's fields
        for item in value:
            found = _first_proxy(item)
            if found is not None:
                return found
    return None


def _calling_tracer():
    """The torch.fx Tracer whose call_module (torch.fx patches
    Module.__call__ to it while tracing) is calling this forward: the
    nearest frame up the stack whose ``self`` is a Tracer. None where that
    is make_fx's (torch.func, AOTAutograd): it raises the same flag, but
    records the operators a module runs, and its modules are never leaves."""
    from torch.fx.experimental.proxy_tensor import PythonKeyTracer

    frame = sys._getframe(2)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, torch.fx.Tracer):
            return None if isinstance(candidate, PythonKeyTracer) else candidate
        frame = frame.f_back
    return None


def fx_leaf_call(module, input, hx):
    """Under torch.fx.symbolic_trace, the ``call_module`` node that the
    module's torch.nn counterpart gets, as a Proxy; None anywhere else.

    torch.fx keeps the modules of torch.nn (``__module__`` under "torch.nn")
    as leaves: one node that calls the module, never traced into. fusedlstm's
    modules live elsewhere, so the tracer calls their forward with Proxies,
    and its first branch on an argument's size raised TraceError, where a
    model with nn.LSTM traces (torchvision's feature extraction, FX model
    surgery). Made here, from inside forward, the node is the one the tracer
    would make for a leaf: the same target, arguments and module stack.

    The tracer is the one that made the arguments' Proxies. A call whose
    arguments are all constants has none, and would otherwise run at trace
    time and put its result in the graph as a constant, which goes stale
    when the weights train; its tracer is found up the stack instead. The
    module traced as the root is left to the plain forward: torch.fx never
    makes the root a leaf, and raises TraceError there, as for nn.LSTM.
    Checked first on every call: is_fx_symbolic_tracing reads one flag, and
    TorchDynamo takes it as False."""
    if not is_fx_symbolic_tracing():
        return None
    args = (input,) if hx is None else (input, hx)
    proxy = _first_proxy(args)
    tracer = proxy.tracer if proxy is not None else _calling_tracer()
    if tracer is None or getattr(tracer, "root", None) is module:
        return None
    return tracer.create_proxy("call_module", tracer.path_of_module(module), args, {})


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
