"""fusedlstm.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell.

Each case compares the outputs, h_n, c_n and the gradients of the input, h0,
c0 and every parameter. float32/float64 use torch.testing.assert_close's
defaults; bfloat16 follows the half-precision rule of
helpers.assert_low_precision_parity (at most 2x nn.LSTM's own bf16 error
against a float64 reference).

The configuration grid is a deterministic 3-wise covering array: every
combination of values of any three factors appears in at least one case,
which covers the interactions that matter (packed x bidirectional x proj,
batch_first x unbatched x hx, ...) in ~100 cases instead of the ~90,000 of
the full product.
"""
from __future__ import annotations

import itertools
import random

import pytest
import torch
from torch import nn

import fusedlstm
from helpers import make_cell_pair, make_lstm_pair, parity_check, state_shapes

INPUT_SIZE = 6

FACTORS = {
    "num_layers": [1, 2, 3],
    "bias": [True, False],
    "batch_first": [False, True],
    "bidirectional": [False, True],
    "proj": [False, True],
    "hidden_size": [1, 4, 16, 33, 64],
    "dtype": [torch.float32, torch.float64, torch.bfloat16],
    "training": [False, True],
    "input": ["padded", "packed_sorted", "packed_unsorted", "unbatched"],
    "hx": [False, True],
    "layout": ["contiguous", "strided"],
    "seq_len": [1, 2, 7],
}


def covering_array(factors: dict, strength: int = 3, seed: int = 0) -> list[dict]:
    """A greedy ``strength``-wise covering array, deterministic in ``seed``."""
    names = list(factors)
    rng = random.Random(seed)
    uncovered = set()
    for combo in itertools.combinations(range(len(names)), strength):
        for values in itertools.product(*(range(len(factors[names[i]])) for i in combo)):
            uncovered.add((combo, values))
    cases = []
    while uncovered:
        # Seed each candidate with one uncovered tuple, fill the rest at random
        # and keep the candidate covering the most uncovered tuples.
        best, best_gain = None, -1
        targets = rng.sample(sorted(uncovered), min(40, len(uncovered)))
        for combo, values in targets:
            row = [rng.randrange(len(factors[n])) for n in names]
            for i, v in zip(combo, values):
                row[i] = v
            gain = sum(
                (c, tuple(row[i] for i in c)) in uncovered
                for c in itertools.combinations(range(len(names)), strength)
            )
            if gain > best_gain:
                best, best_gain = row, gain
        for c in itertools.combinations(range(len(names)), strength):
            uncovered.discard((c, tuple(best[i] for i in c)))
        cases.append({n: factors[n][v] for n, v in zip(names, best)})
    return cases


def _case_id(case: dict) -> str:
    dtype = str(case["dtype"]).replace("torch.", "")
    return (
        f"L{case['num_layers']}-H{case['hidden_size']}-T{case['seq_len']}-{dtype}"
        f"-{case['input']}-{case['layout']}"
        f"{'-bias' if case['bias'] else '-nobias'}"
        f"{'-bf' if case['batch_first'] else ''}"
        f"{'-bidir' if case['bidirectional'] else ''}"
        f"{'-proj' if case['proj'] else ''}"
        f"{'-train' if case['training'] else '-eval'}"
        f"{'-hx' if case['hx'] else ''}"
    )


CASES = covering_array(FACTORS)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout (every other column
    of a wider buffer, and the batch/time dims swapped in storage order)."""
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
    wide[..., ::2] = t
    out = wide[..., ::2]
    assert t.numel() <= 1 or not out.is_contiguous()
    return out


def build_inputs(module, case, *, batch=3, generator_seed=7):
    """(x, hx, lengths) for a case; x is padded and laid out per the module."""
    gen = torch.Generator().manual_seed(generator_seed)
    T = case["seq_len"]
    unbatched = case["input"] == "unbatched"
    dtype = case["dtype"]

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    if unbatched:
        x = randn(T, INPUT_SIZE)
    elif module.batch_first:
        x = randn(batch, T, INPUT_SIZE)
    else:
        x = randn(T, batch, INPUT_SIZE)
    hx = None
    if case["hx"]:
        h_shape, c_shape = state_shapes(module, None if unbatched else batch)
        hx = (randn(*h_shape), randn(*c_shape))
    if case["layout"] == "strided":
        x = _strided(x)
        hx = None if hx is None else tuple(_strided(t) for t in hx)
    lengths = None
    if case["input"] == "packed_sorted":
        lengths = torch.tensor([T, max(1, T - 2), 1])
    elif case["input"] == "packed_unsorted":
        lengths = torch.tensor([max(1, T - 3), T, 1])
    return x, hx, lengths


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_lstm_parity(case):
    hidden = case["hidden_size"]
    proj_size = hidden // 2 if case["proj"] and hidden > 1 else 0
    dropout = 0.3 if case["training"] and case["num_layers"] > 1 else 0.0
    ref, ours = make_lstm_pair(
        INPUT_SIZE, hidden, dtype=case["dtype"], num_layers=case["num_layers"],
        bias=case["bias"], batch_first=case["batch_first"],
        bidirectional=case["bidirectional"], proj_size=proj_size, dropout=dropout,
    )
    ref.train(case["training"])
    ours.train(case["training"])
    x, hx, lengths = build_inputs(ours, case)
    parity_check(
        ref, ours, x, hx, lengths=lengths,
        enforce_sorted=case["input"] != "packed_unsorted",
    )


def test_covering_array_is_three_wise():
    """The grid covers every triple of factor values (guards the generator)."""
    names = list(FACTORS)
    for combo in itertools.combinations(names, 3):
        seen = {tuple(str(case[n]) for n in combo) for case in CASES}
        want = set(itertools.product(*([str(v) for v in FACTORS[n]] for n in combo)))
        assert want <= seen, (combo, want - seen)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_dropout_masks_match_nn_lstm(dtype, bidirectional):
    """Dropout between layers draws the same masks as nn.LSTM under one seed,
    for padded and packed input (a mismatch shows as O(1) differences)."""
    ref, ours = make_lstm_pair(
        5, 8, dtype=dtype, num_layers=3, dropout=0.5, bidirectional=bidirectional,
    )
    x = torch.randn(6, 4, 5, dtype=torch.float64).to(dtype)
    parity_check(ref, ours, x)
    parity_check(ref, ours, x, lengths=torch.tensor([6, 3, 5, 1]), enforce_sorted=False)


def test_dropout_is_random_between_calls():
    """Without reseeding, two training calls differ (dropout is live), and
    eval mode ignores dropout."""
    _, ours = make_lstm_pair(5, 8, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 5)
    a, b = ours(x)[0], ours(x)[0]
    assert not torch.equal(a, b)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], ours(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("hidden_size", [1, 2, 5, 32, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_cell_parity(hidden_size, dtype, bias):
    ref, ours = make_cell_pair(7, hidden_size, dtype=dtype, bias=bias)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, generator=gen, dtype=torch.float64).to(dtype)
    hx = tuple(
        torch.randn(4, hidden_size, generator=gen, dtype=torch.float64).to(dtype)
        for _ in range(2)
    )
    parity_check(ref, ours, x, hx)
    parity_check(ref, ours, x)


@pytest.mark.parametrize("hx", [False, True])
def test_lstm_cell_unbatched_and_strided(hx):
    ref, ours = make_cell_pair(7, 9)
    x = torch.randn(7)
    state = (torch.randn(9), torch.randn(9)) if hx else None
    parity_check(ref, ours, x, state)
    # Non-contiguous batched input and state.
    x2 = torch.randn(7, 4).t()
    state2 = (torch.randn(9, 4).t(), torch.randn(9, 4).t()) if hx else None
    assert not x2.is_contiguous()
    parity_check(ref, ours, x2, state2)


class _CellSubclass(fusedlstm.LSTMCell):
    pass


# Calls that LSTMCell._direct_step must leave to forward's general path:
# each takes (module, x, h, c) and calls the module, batch 4, 7 -> 9.
GENERAL_PATH_CALLS = {
    "hx as a list": lambda m, x, h, c: m(x, [h, c]),
    "hx omitted": lambda m, x, h, c: m(x),
    "unbatched": lambda m, x, h, c: m(x[0], (h[0], c[0])),
    "a subclass": lambda m, x, h, c: _subclass_of(m)(x, (h, c)),
    "under autocast": lambda m, x, h, c: _under_cpu_autocast(m, x, (h, c)),
}


def _subclass_of(module):
    sub = _CellSubclass(module.input_size, module.hidden_size)
    sub.load_state_dict(module.state_dict())
    return sub


def _under_cpu_autocast(module, x, hx):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return module(x, hx)


@pytest.fixture
def general_path_calls(monkeypatch):
    """Counts the calls of functional.lstm_cell, which only forward's general
    path makes."""
    calls = []
    real = fusedlstm.modules.functional.lstm_cell

    def counted(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(fusedlstm.modules.functional, "lstm_cell", counted)
    return calls


@pytest.mark.parametrize("training", [False, True])
def test_plain_cell_call_takes_the_direct_step_with_the_general_paths_bits(
        general_path_calls, training):
    # The direct step must skip the general path (it exists to save that
    # path's Python), and must give its outputs and gradients bit for bit.
    _, ours = make_cell_pair(7, 9)
    gen = torch.Generator().manual_seed(5)
    x, h, c = (torch.randn(4, n, generator=gen) for n in (7, 9, 9))

    def results(call):
        ours.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(training):
            out = call()
        if not training:
            return out
        (out[0].sum() + 2 * out[1].sum()).backward()
        return (*out, *(p.grad for p in ours.parameters()))

    direct = results(lambda: ours(x, (h, c)))
    assert general_path_calls == []
    general = results(lambda: ours(x, [h, c]))
    assert len(general_path_calls) == 1
    for a, b in zip(direct, general):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("call", list(GENERAL_PATH_CALLS))
def test_other_cell_calls_take_the_general_path(general_path_calls, call):
    _, ours = make_cell_pair(7, 9)
    x, h, c = torch.randn(4, 7), torch.randn(4, 9), torch.randn(4, 9)
    GENERAL_PATH_CALLS[call](ours, x, h, c)
    assert len(general_path_calls) == 1


def test_cell_weight_moved_out_of_parameters_takes_the_general_path(general_path_calls):
    # As weight_norm (the hook form), pruning and AWD-LSTM's weight drop
    # leave it: the tensor that the call must use is an attribute now.
    ref, ours = make_cell_pair(7, 9)
    for module in (ref, ours):
        raw = module.weight_hh.detach()
        del module._parameters["weight_hh"]
        module.weight_hh = 0.5 * raw
    x, h, c = torch.randn(4, 7), torch.randn(4, 9), torch.randn(4, 9)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, (h, c)), ref(x, (h, c)))
    assert len(general_path_calls) == 1


def test_lstm_cell_output_shapes_and_types():
    ref, ours = make_cell_pair(3, 4)
    out_ref, out = ref(torch.randn(2, 3)), ours(torch.randn(2, 3))
    assert type(out) is type(out_ref) is tuple
    assert [t.shape for t in out] == [t.shape for t in out_ref]


def test_lstm_return_structure():
    """Same container types: (Tensor, (Tensor, Tensor)) / PackedSequence."""
    ref, ours = make_lstm_pair(3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    r, o = ref(x), ours(x)
    assert type(o) is type(r) is tuple and type(o[1]) is type(r[1]) is tuple
    packed = nn.utils.rnn.pack_padded_sequence(x, [5, 2], enforce_sorted=False)
    r, o = ref(packed), ours(packed)
    assert type(o[0]) is type(r[0])
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(o[0], field), getattr(r[0], field)), field


def test_longer_sequence_and_wider_batch():
    """A longer sequence, more layers of state carried: errors do not grow
    past float32's tolerance."""
    ref, ours = make_lstm_pair(16, 64, num_layers=2, bidirectional=True)
    x = torch.randn(60, 8, 16)
    parity_check(ref, ours, x)
    parity_check(ref, ours, x, lengths=torch.tensor([60, 59, 30, 30, 17, 5, 2, 1]))


def test_batch_sizes_with_unused_hx_rows_keep_state():
    """Packed sequences that end early: h_n/c_n of each sequence are taken at
    its own last step, forward and reverse (the reverse direction starts
    late for short sequences)."""
    ref, ours = make_lstm_pair(4, 6, bidirectional=True, num_layers=2, proj_size=3)
    x = torch.randn(9, 5, 4)
    hx = (torch.randn(4, 5, 3), torch.randn(4, 5, 6))
    parity_check(ref, ours, x, hx, lengths=torch.tensor([2, 9, 1, 4, 9]), enforce_sorted=False)


def test_fusedlstm_parameters_are_nn_lstm_names():
    ref, ours = make_lstm_pair(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert ours._flat_weights_names == ref._flat_weights_names
    for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert p.shape == q.shape, n


def test_initialisation_matches_nn_lstm():
    """Under one seed the constructors draw the same initial weights."""
    for cls_ref, cls_ours, args, kwargs in [
        (nn.LSTM, fusedlstm.LSTM, (5, 7), dict(num_layers=2, bidirectional=True, proj_size=3)),
        (nn.LSTMCell, fusedlstm.LSTMCell, (5, 7), dict(bias=False)),
    ]:
        torch.manual_seed(11)
        ref = cls_ref(*args, **kwargs)
        torch.manual_seed(11)
        ours = cls_ours(*args, **kwargs)
        for (n, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)


# float32 is left out on purpose: the weight gradients here are reductions
# over T*B = 1500 rows, where float32's summation-order noise (~1e-4 for one
# plain K=1500 GEMM on random data) exceeds assert_close's float32 defaults
# for nn.LSTM itself against float64, whichever of the two is more accurate
# on a given entry. float64 keeps the default tolerance meaningful, and the
# bf16 rule compares against float64 directly.
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_multithreaded_parity(two_threads, dtype):
    """A batch wide enough that the fused cell splits its rows over threads
    (rows_per_task = 32768 / 4H = 128 rows at H = 64), padded and packed."""
    assert torch.get_num_threads() == 2
    ref, ours = make_lstm_pair(8, 64, dtype=dtype, bidirectional=True)
    B = 300
    x = torch.randn(5, B, 8, dtype=torch.float64).to(dtype)
    hx = tuple(torch.randn(2, B, 64, dtype=torch.float64).to(dtype) for _ in range(2))
    parity_check(ref, ours, x, hx)
    lengths = torch.randint(1, 6, (B,), generator=torch.Generator().manual_seed(1))
    lengths[0] = 5
    parity_check(ref, ours, x, hx, lengths=lengths, enforce_sorted=False)
