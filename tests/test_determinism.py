"""Determinism on the CPU.

The same call gives bitwise identical outputs, states and gradients every
time, with one intra-op thread and with two (wide enough batches that the
fused cell splits its rows over both threads); training-mode dropout draws
the same masks under the same ``torch.manual_seed``, and takes from the
global generator exactly what nn.LSTM takes (that the masks equal
nn.LSTM's is tests/test_modules_parity.py::test_dropout_masks_match_nn_lstm).
"""
from __future__ import annotations

import pytest
import torch

from helpers import make_cell_pair, make_lstm_pair, run_lstm, state_shapes

CASES = {
    # name: (input_size, hidden_size, config, T, B, packed)
    "deep_bidir_proj": (5, 8, dict(num_layers=2, bidirectional=True, proj_size=3), 6, 4, False),
    "packed_unsorted": (5, 8, dict(num_layers=2, bidirectional=True), 6, 5, True),
    # rows_per_task = 32768 / 4H = 128 rows at H = 64: B = 300 is 3 tasks.
    "wide_batch": (8, 64, dict(bidirectional=True), 4, 300, False),
    "wide_batch_packed": (8, 64, dict(), 4, 300, True),
}


def _case_inputs(case, dtype):
    input_size, hidden, config, T, B, packed = CASES[case]
    ref, ours = make_lstm_pair(input_size, hidden, dtype=dtype, **config)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, input_size, generator=gen, dtype=torch.float64).to(dtype)
    hx = tuple(torch.randn(s, generator=gen, dtype=torch.float64).to(dtype)
               for s in state_shapes(ours, B))
    lengths = None
    if packed:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[0] = T
    return ref, ours, x, hx, lengths


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        if a[key] is None:
            assert b[key] is None, key
            continue
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0,
                                   msg=lambda m, key=key: f"{key}: {m}")


@pytest.fixture(params=[1, 2], ids=["1_thread", "2_threads"])
def threads(request):
    if request.param == 2:
        request.getfixturevalue("two_threads")
    assert torch.get_num_threads() == request.param
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
def test_bitwise_identical_run_to_run(case, dtype, threads):
    _, ours, x, hx, lengths = _case_inputs(case, dtype)
    runs = [run_lstm(ours, x, hx, lengths=lengths, enforce_sorted=False) for _ in range(3)]
    for other in runs[1:]:
        assert_bitwise_equal(other, runs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cell_bitwise_identical_run_to_run(dtype, threads):
    _, ours = make_cell_pair(8, 64, dtype=dtype)
    gen = torch.Generator().manual_seed(1)
    x, h, c = (torch.randn(300, n, generator=gen).to(dtype) for n in (8, 64, 64))
    runs = [run_lstm(ours, x, (h, c)) for _ in range(3)]
    for other in runs[1:]:
        assert_bitwise_equal(other, runs[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_dropout_reproduces_under_manual_seed(packed, dtype, threads):
    """Training mode with dropout 0.5 between three bidirectional layers:
    one seed, bitwise the same results and gradients; another seed,
    different ones (the masks are live)."""
    ref, ours = make_lstm_pair(5, 8, dtype=dtype, num_layers=3, dropout=0.5,
                               bidirectional=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(6, 4, 5, generator=gen).to(dtype)
    lengths = torch.tensor([6, 3, 5, 1]) if packed else None
    first, again, other = (run_lstm(ours, x, lengths=lengths, enforce_sorted=False, seed=s)
                           for s in (7, 7, 8))
    assert_bitwise_equal(again, first)
    assert not torch.equal(other["output"], first["output"])


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_dropout_takes_from_the_generator_what_nn_lstm_takes(packed):
    """After a training call, the global generator is where nn.LSTM's call
    leaves it: code that draws random numbers after the LSTM (the next
    layer's dropout, a sampler) sees the same stream with either module."""
    ref, ours = make_lstm_pair(5, 8, num_layers=3, dropout=0.5, bidirectional=True)
    x = torch.randn(6, 4, 5)
    if packed:
        x = torch.nn.utils.rnn.pack_padded_sequence(x, [6, 3, 5, 1], enforce_sorted=False)
    states = []
    for module in (ref, ours):
        torch.manual_seed(7)
        module(x)
        states.append(torch.get_rng_state())
    torch.manual_seed(7)
    untouched = torch.get_rng_state()
    assert not torch.equal(states[0], untouched), "nn.LSTM drew nothing: the case is moot"
    assert torch.equal(states[1], states[0])


@pytest.fixture
def deterministic_algorithms():
    old = (torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(old[0], warn_only=old[1])


@pytest.mark.parametrize("case", ["deep_bidir_proj", "packed_unsorted"])
def test_deterministic_algorithms_mode_runs_and_changes_nothing(case, deterministic_algorithms):
    """Under torch.use_deterministic_algorithms(True) the CPU kernels run
    (as nn.LSTM's do: no operation of theirs refuses) and give the bits
    they give without it, dropout masks included."""
    ref, ours, x, hx, lengths = _case_inputs(case, torch.float32)
    ours.dropout = ref.dropout = 0.5
    results = {}
    for mode in (True, False):
        torch.use_deterministic_algorithms(mode)
        results[mode] = [run_lstm(m, x, hx, lengths=lengths, enforce_sorted=False, seed=3)
                         for m in (ours, ref)]
    assert_bitwise_equal(results[True][0], results[False][0])
    assert_bitwise_equal(results[True][1], results[False][1])
