"""TorchScript: torch.jit.trace works (the trace check included), and
torch.jit.script is refused with a clear NotImplementedError."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fusedlstm
from helpers import assert_results_close, make_cell_pair, make_lstm_pair, run_lstm

# torch.jit.trace itself is deprecated; that warning is torch's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace:DeprecationWarning")


def _trace(module, example):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        # check_trace retraces under no_grad and compares the graphs.
        traced = torch.jit.trace(module, example, check_trace=True)
    # torch's own modules warn too (and torch hides those by default); none
    # may come from fusedlstm's code.
    ours = [w for w in caught if "fusedlstm" in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    return traced


@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2),
    dict(bidirectional=True, batch_first=True),
    dict(proj_size=3, bias=False),
])
def test_traced_lstm_matches_nn_lstm_on_new_shapes_with_gradients(kwargs):
    ref, ours = make_lstm_pair(4, 5, dtype=torch.float64, **kwargs)
    traced = _trace(ours, torch.randn(6, 3, 4, dtype=torch.float64))
    # Another length and batch than traced with: nothing shape-specific was
    # frozen into the trace.
    x = torch.randn(2, 9, 4, dtype=torch.float64)
    # run_lstm reads parameter gradients from the module it is given; the
    # traced module holds ours' very Parameters.
    assert_results_close(run_lstm(traced, x), run_lstm(ref, x))


def test_traced_module_still_rejects_an_empty_sequence():
    _, ours = make_lstm_pair(4, 5)
    traced = _trace(ours, torch.randn(3, 2, 4))
    with pytest.raises(RuntimeError, match="Expected sequence length to be larger than 0 in RNN"):
        traced(torch.randn(0, 2, 4))


def test_traced_cell_matches_nn_lstmcell():
    ref, ours = make_cell_pair(4, 5, dtype=torch.float64)

    def state(batch):
        return (torch.randn(batch, 4, dtype=torch.float64),
                (torch.randn(batch, 5, dtype=torch.float64),
                 torch.randn(batch, 5, dtype=torch.float64)))

    traced = _trace(ours, state(3))
    x, hx = state(7)

    def results(module, params):
        leaves = [t.clone().requires_grad_() for t in (x, *hx)]
        h, c = module(leaves[0], tuple(leaves[1:]))
        grads = torch.autograd.grad((h * h).sum() + c.sum(), leaves + list(params))
        return (h, c, *grads)

    torch.testing.assert_close(results(traced, ours.parameters()),
                               results(ref, ref.parameters()))


@pytest.mark.parametrize("make", [
    lambda: fusedlstm.LSTM(3, 4),
    lambda: fusedlstm.LSTMCell(3, 4),
    lambda: nn.Sequential(nn.Linear(3, 3), fusedlstm.LSTM(3, 4)),
])
def test_script_is_refused_with_a_clear_error(make):
    with pytest.raises(NotImplementedError, match=r"does not support torch\.jit\.script.*"
                       r"restore_lstm"):
        torch.jit.script(make())


def test_restored_cell_scripts():
    # The way out that the error names: torch's LSTMCell scripts.
    ref, ours = make_cell_pair(3, 4)
    x = torch.randn(2, 3)
    expected = ours(x)
    scripted = torch.jit.script(fusedlstm.restore_lstm(ours))
    torch.testing.assert_close(scripted(x), expected)
    torch.testing.assert_close(scripted(x), ref(x), rtol=0, atol=0)
