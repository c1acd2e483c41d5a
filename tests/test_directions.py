"""FUSEDLSTM_CUDA_DIRECTIONS (fusedlstm/_directions.py) where no GPU is
needed: the values it takes, and that the CPU runs the directions in turn
whatever it says. tests/cuda/test_cuda_directions.py checks the concurrent
run on CUDA."""
import pytest
import torch

from helpers import make_lstm_pair


@pytest.mark.parametrize("value", ["", "sequential", "concurrent"])
def test_cpu_runs_the_directions_in_turn(monkeypatch, directions_spy, value):
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", value)
    ref, ours = make_lstm_pair(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    assert directions_spy == []


def test_unknown_value_raises(monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "parallel")
    _, ours = make_lstm_pair(3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"FUSEDLSTM_CUDA_DIRECTIONS must be one of "
                                         r"sequential, concurrent \(or unset\); got 'parallel'"):
        ours(torch.randn(5, 2, 3))


def test_one_direction_never_reads_it(monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "parallel")
    ref, ours = make_lstm_pair(3, 4)
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])


def test_compiled_bidirectional_layer_runs_in_turn(monkeypatch, directions_spy):
    # What torch.compile records runs on one stream; it never reads the
    # variable (an unknown value does not raise there).
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "parallel")
    ref, ours = make_lstm_pair(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x)[0], ref(x)[0])
    assert directions_spy == []
