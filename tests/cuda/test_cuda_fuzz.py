"""The fuzz sweeps of tests/test_fuzz.py on CUDA: fusedlstm's CUDA kernels
against torch.nn on cuDNN.

The same draws (tests/fuzz_strategies.py) with the modules and the call's
tensors on CUDA, and the same rule (tests/fuzz_harness.check_call): equal
results, float32 and float64 at torch.testing's defaults (TF32 off,
tests/cuda/conftest.py), bfloat16 and float16 within 2x torch.nn's own error
against a float64 torch.nn (on the CPU, whose native loop lets the rule
price the activations kept in the layer's dtype), or the same exception.
What differs on CUDA:

* training calls have no dropout: cuDNN's masks come from its own generator
  state (test_cuda_dropout.py compares fusedlstm's dropout with nn.LSTM run
  layer by layer instead);
* a device mistake puts tensors on the CPU, the commonest one in practice;
* a state of the wrong dtype or device meets cuDNN's checks or the
  dispatcher's before nn.LSTM's own: torch's message must be one of
  fuzz_harness.CUDA_BACKEND_MESSAGES, the type the same, and fusedlstm's
  message must name the problem.

scripts/gpu_check.sh runs this file in a process of its own, after the other
GPU tests: a torch.nn call that faults on the device would end every later
test of the process. Derandomised, ``CUDA_EXAMPLES`` examples per test; a
longer run with fresh examples:

    FUSEDLSTM_FUZZ_EXAMPLES=5000 python -m pytest tests/cuda/test_cuda_fuzz.py \\
        --hypothesis-show-statistics
"""
from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

from fuzz_strategies import (cell_example, fuzz_settings,  # noqa: E402
                             lstm_malformed_example, lstm_valid_example)

# Each CUDA example runs both modules, forward and backward, and the float64
# reference on the CPU; the counts are a guess at what fits
# scripts/gpu_check.sh's 35 s step per sweep, until a GPU run times them (its
# verbose log shows how many examples each sweep got through).
CUDA_EXAMPLES = {"lstm_valid": 300, "lstm_errors": 200, "cell": 150}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@fuzz_settings(CUDA_EXAMPLES["lstm_valid"])
@given(st.data())
def test_cuda_fuzz_lstm_valid_calls(data):
    """Well-formed calls on CUDA: results and gradients match cuDNN's nn.LSTM."""
    lstm_valid_example(data.draw, "cuda")


@fuzz_settings(CUDA_EXAMPLES["lstm_errors"])
@given(st.data())
def test_cuda_fuzz_lstm_malformed_calls(data):
    """Calls on CUDA with one or two mistakes: the same error as nn.LSTM."""
    lstm_malformed_example(data.draw, "cuda")


@fuzz_settings(CUDA_EXAMPLES["cell"])
@given(st.data())
def test_cuda_fuzz_lstm_cell(data):
    """LSTMCell on CUDA, well-formed or with up to two mistakes."""
    cell_example(data.draw, "cuda")
