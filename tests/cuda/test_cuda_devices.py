"""Calls that mix the CPU and CUDA, against torch.nn: the commonest mistake
in PyTorch (a model moved to the GPU, its input not). Skipped, with the
reason shown, where CUDA is absent; tests/test_devices.py makes the same
mismatches with the meta device on any machine."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402
from helpers import outcome  # noqa: E402

CPU, CUDA = "cpu", "cuda"


def _lstm(weights, x, h=None, c=None, packed=False):
    def make(cls):
        def call():
            module = cls(3, 4, device=weights)
            inp = torch.randn(5, 2, 3, device=x)
            if packed:
                inp = pack_sequence([torch.randn(5, 3, device=x), torch.randn(3, 3, device=x)])
            if h is None:
                return module(inp)
            return module(inp, (torch.zeros(1, 2, 4, device=h), torch.zeros(1, 2, 4, device=c)))
        return call
    return make


# Padded input that is not on CUDA reaches torch.lstm's native check
# (check_attributes), whose message fusedlstm reproduces.
EXACT = {
    "weights_cuda": _lstm(CUDA, CPU),
    "h0_cuda": _lstm(CPU, CPU, CUDA, CPU),
    "c0_cuda": _lstm(CPU, CPU, CPU, CUDA),
    "states_first": _lstm(CUDA, CPU, CUDA, CUDA),
}

# Input on CUDA meets cuDNN's path first, and packed input or a cell meets
# whichever operation sees the mismatch: the same type is required, and
# fusedlstm's message names the tensor.
SAME_TYPE = {
    "input_cuda_weights_cpu": _lstm(CPU, CUDA),
    "input_cuda_h0_cpu": _lstm(CUDA, CUDA, CPU, CUDA),
    "packed_weights_cuda": _lstm(CUDA, CPU, packed=True),
    "packed_input_cuda": _lstm(CPU, CUDA, packed=True),
}


@pytest.mark.parametrize("case", list(EXACT), ids=list(EXACT))
def test_padded_mismatch_raises_nn_lstm_error(case):
    ref_err, _ = outcome(EXACT[case](nn.LSTM))
    our_err, _ = outcome(EXACT[case](fusedlstm.LSTM))
    assert ref_err is not None
    assert type(our_err) is type(ref_err) and str(our_err) == str(ref_err), (our_err, ref_err)


@pytest.mark.parametrize("case", list(SAME_TYPE), ids=list(SAME_TYPE))
def test_other_mismatch_raises_same_type(case):
    ref_err, _ = outcome(SAME_TYPE[case](nn.LSTM))
    our_err, _ = outcome(SAME_TYPE[case](fusedlstm.LSTM))
    assert ref_err is not None
    assert type(our_err) is type(ref_err), (our_err, ref_err)
    assert " is on " in str(our_err), our_err


@pytest.mark.parametrize("weights,x", [(CUDA, CPU), (CPU, CUDA)])
def test_cell_mismatch_raises_same_type(weights, x):
    def call(cls):
        return lambda: cls(3, 4, device=weights)(torch.randn(2, 3, device=x))
    ref_err, _ = outcome(call(nn.LSTMCell))
    our_err, _ = outcome(call(fusedlstm.LSTMCell))
    assert ref_err is not None
    assert type(our_err) is type(ref_err), (our_err, ref_err)
