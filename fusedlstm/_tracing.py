"""Quieting torch.jit.trace's warnings where they are noise."""
from __future__ import annotations

import contextlib
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
