"""The activations fusedlstm saves for backward take no more memory than
nn.LSTM's, on the CPU.

Measured as in benchmarks/saved_memory.py (its docstring has the method):
the distinct storages autograd saves during one training forward, leaving
out the parameters and the caller's inputs, which both keep alike. nn.LSTM
is measured on both of its CPU paths: as configured (oneDNN where it
applies) and native ATen (mkldnn disabled). The sizes are smaller than the
benchmark's (H = 64) to keep the suite fast; the ratios do not depend on H
much, and the benchmark prints them at H = 256.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import saved_memory  # noqa: E402

PATHS = {
    "configured": contextlib.nullcontext,
    "native": lambda: torch.backends.mkldnn.flags(enabled=False),
}


def test_method_counts_what_is_saved():
    """The measure sees known saved activations, each storage once, and
    skips parameters and inputs. Linear saves its input (the caller's: left
    out) and weight (a parameter); tanh saves its output y; y * y.sum()
    saves y again (the same storage) and the 1-element sum."""
    model = nn.Linear(7, 5)
    x = torch.randn(3, 7, requires_grad=True)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = model

        def forward(self, x):
            y = torch.tanh(self.linear(x))
            return y * y.sum()

    assert saved_memory.saved_bytes(Twice(), (x,)) == (3 * 5 + 1) * 4


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("config", saved_memory.CONFIGS, ids=lambda c: c.name)
def test_saved_activations_not_above_nn_lstm(config, path):
    with PATHS[path]():
        theirs, ours = saved_memory.measure(config, input_size=64, hidden=64, steps=100)
    assert ours > 0
    assert ours <= theirs, f"fusedlstm saves {ours} bytes, nn.LSTM {theirs}"


@pytest.mark.parametrize("config", saved_memory.CONFIGS, ids=lambda c: c.name)
def test_bfloat16_saved_activations_not_above_nn_lstm(config):
    """bfloat16 against nn.LSTM as configured: where it runs oneDNN (float
    activations) we keep float gates and cells too, elsewhere bfloat16 ones
    like its native path. (With oneDNN disabled by the user, nn.LSTM's native
    path saves less than our float choice, which stays fixed per process: see
    the README's memory note.)"""
    theirs, ours = saved_memory.measure(config, input_size=64, hidden=64, steps=100,
                                        dtype=torch.bfloat16)
    assert ours > 0
    assert ours <= theirs, f"fusedlstm saves {ours} bytes, nn.LSTM {theirs}"
