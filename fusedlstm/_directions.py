"""The two directions of a bidirectional CUDA layer at the same time.

The directions of a layer read the same input and nothing of each other, and
on CUDA each runs its recurrence as a latency-bound loop (one persistent
kernel, or a GEMM and a cell kernel per step) that leaves most of the GPU
idle. With ``FUSEDLSTM_CUDA_DIRECTIONS=concurrent`` the reverse direction runs
on a side stream while the forward one runs on the current stream, and the
current stream waits for the side stream before the layer's output is used.
Autograd runs the backward of an operator on the stream its forward ran on,
so the two directions' backward passes overlap too. The kernels and their
inputs are the same as when the directions run in turn, so are the results,
bit for bit.

``sequential`` (the default, also when unset or empty) runs them in turn on
the current stream: concurrency is opt-in until a GPU run has measured it
(benchmarks/NOTES.md, change 59). Under torch.compile, tracing or a
torch.func transform the directions always run in turn: those see one
stream. Any other value raises a ValueError at a bidirectional call run
eagerly, on any device.
"""
from __future__ import annotations

import os
from typing import Callable

import torch

_VARIABLE = "FUSEDLSTM_CUDA_DIRECTIONS"
_CHOICES = ("sequential", "concurrent")
# One side stream per device, made on first use and kept: a stream is cheap
# to keep and costly to make per call.
_side_streams: dict = {}


def requested() -> str:
    """FUSEDLSTM_CUDA_DIRECTIONS, read now (it may change between calls)."""
    value = os.environ.get(_VARIABLE, "") or "sequential"
    if value not in _CHOICES:
        raise ValueError(f"{_VARIABLE} must be one of {', '.join(_CHOICES)} (or unset); "
                         f"got {value!r}")
    return value


def run_concurrently(input: torch.Tensor) -> bool:
    """Whether this bidirectional layer's directions run on two streams."""
    # First: what torch.compile and tracing record runs on one stream, and
    # they need not see the environment.
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if requested() != "concurrent" or not input.is_cuda:
        return False
    return not torch._C._are_functorch_transforms_active()


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = _side_streams.get(index)
    if stream is None:
        stream = _side_streams[index] = torch.cuda.Stream(device=index)
    return stream


def forward_and_reverse(device: torch.device, forward: Callable[[], tuple],
                        reverse: Callable[[], tuple]) -> tuple[tuple, tuple]:
    """Runs ``reverse`` on the side stream of ``device`` while ``forward``
    runs on its current stream; returns both results, ready for the current
    stream. Works inside CUDA-graph capture (a fork and a join of streams)."""
    main = torch.cuda.current_stream(device)
    side = _side_stream(device)
    side.wait_stream(main)  # the layer's input, states and weights are written
    with torch.cuda.stream(side):
        reverse_results = reverse()
    forward_results = forward()
    main.wait_stream(side)
    # The reverse direction's tensors come from the side stream's memory: the
    # allocator must not hand them out again before the current stream has
    # used them.
    for tensor in reverse_results:
        tensor.record_stream(main)
    return forward_results, reverse_results
