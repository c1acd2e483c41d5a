"""Edge cases, each against torch.nn.LSTM / LSTMCell.

T = 1; batch 0 (forward and backward); T = 0 (the same error); hidden_size
and input_size 1; packed input with all lengths equal and with every length
1; NaN and +-Inf wherever they can enter (input, h0, c0, each weight; and in
the padding of packed input, where they must not enter); very long
sequences (T = 10^5): results and gradients match and the memory saved for
backward grows exactly linearly in T; tensors made under
torch.inference_mode fed to a training call. Also the regression tests of the
bugs the fuzz sweep (tests/test_fuzz.py) found, and its known divergences.
States of another dtype than the input: tests/test_state_dtypes.py.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm
from fuzz_harness import low_precision_rule
from helpers import (assert_low_precision_parity, assert_same_outcome, make_cell_pair,
                     make_lstm_pair, outcome,
                     parity_check, run_lstm, seeded_randn as _randn, seeded_states as _states,
                     to_reference)


def assert_same_error(ref_call, our_call):
    ref_err, _ = outcome(ref_call)
    our_err, _ = outcome(our_call)
    assert ref_err is not None, "torch.nn did not raise: the case is moot"
    assert our_err is not None, f"torch.nn raised {ref_err!r}; fusedlstm did not"
    assert (type(our_err), str(our_err)) == (type(ref_err), str(ref_err))


CONFIGS = {
    "plain": dict(),
    "deep_bidir_proj": dict(num_layers=2, bidirectional=True, proj_size=2),
    "batch_first_no_bias": dict(batch_first=True, bias=False),
}


def _input(module, T, B, I, dtype=torch.float32, seed=0):
    if B is None:
        return _randn(T, I, dtype=dtype, seed=seed)
    return _randn(*((B, T, I) if module.batch_first else (T, B, I)), dtype=dtype, seed=seed)


# ---------------------------------------------------------------- T = 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", ["padded", "packed", "unbatched"])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_single_step(config, kind, dtype):
    ref, ours = make_lstm_pair(3, 5, dtype=dtype, **CONFIGS[config])
    B = None if kind == "unbatched" else 3
    x = _input(ours, 1, B, 3, dtype=dtype)
    lengths = torch.tensor([1, 1, 1]) if kind == "packed" else None
    parity_check(ref, ours, x, _states(ours, B, dtype), lengths=lengths, enforce_sorted=False)


# -------------------------------------------------------------- batch 0


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("config", list(CONFIGS), ids=list(CONFIGS))
def test_batch_zero_forward_and_backward(config, with_hx):
    """nn.LSTM returns empty outputs and states for batch 0, and its
    backward runs (zero weight gradients): the same here."""
    ref, ours = make_lstm_pair(3, 5, **CONFIGS[config])
    x = _input(ours, 4, 0, 3)
    hx = _states(ours, 0) if with_hx else None
    out, _ = parity_check(ref, ours, x, hx)
    assert out["output"].numel() == 0 and out["h_n"].shape[1] == 0


@pytest.mark.parametrize("with_hx", [False, True])
def test_cell_batch_zero_forward_and_backward(with_hx):
    ref, ours = make_cell_pair(3, 5)
    hx = (torch.zeros(0, 5), torch.zeros(0, 5)) if with_hx else None
    parity_check(ref, ours, torch.zeros(0, 3), hx)


# ---------------------------------------------------------------- T = 0

T0_CASES = {
    "padded": (dict(), lambda m: m(torch.randn(0, 2, 3))),
    "batch_first": (dict(batch_first=True), lambda m: m(torch.randn(2, 0, 3))),
    "unbatched": (dict(), lambda m: m(torch.randn(0, 3))),
    "and_batch_zero": (dict(), lambda m: m(torch.randn(0, 0, 3))),
    "with_hx_deep_bidir_proj": (
        dict(num_layers=2, bidirectional=True, proj_size=2),
        lambda m: m(torch.randn(0, 2, 3), (torch.randn(4, 2, 2), torch.randn(4, 2, 5)))),
    "bf16": (dict(dtype=torch.bfloat16), lambda m: m(torch.randn(0, 2, 3).bfloat16())),
}


@pytest.mark.parametrize("case", list(T0_CASES), ids=list(T0_CASES))
def test_zero_length_sequence_raises_like_nn_lstm(case):
    config, call = T0_CASES[case]
    ref, ours = make_lstm_pair(3, 5, **config)
    assert_same_error(lambda: call(ref), lambda: call(ours))


# ------------------------------------------- hidden_size 1, input_size 1


@pytest.mark.parametrize("sizes", [(1, 1), (1, 4), (4, 1), (1, 2)], ids=str)
@pytest.mark.parametrize("kind", ["padded", "packed"])
def test_unit_sizes(sizes, kind):
    I, H = sizes
    config = dict(num_layers=2, bidirectional=True, proj_size=1 if H == 2 else 0)
    ref, ours = make_lstm_pair(I, H, **config)
    x = _input(ours, 5, 3, I)
    lengths = torch.tensor([5, 2, 4]) if kind == "packed" else None
    parity_check(ref, ours, x, _states(ours, 3), lengths=lengths, enforce_sorted=False)


@pytest.mark.parametrize("sizes", [(1, 1), (1, 4), (4, 1)], ids=str)
def test_cell_unit_sizes(sizes):
    I, H = sizes
    ref, ours = make_cell_pair(I, H)
    parity_check(ref, ours, _randn(3, I), (_randn(3, H, seed=1), _randn(3, H, seed=2)))


# ------------------------------------------------------- packed lengths


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("lengths", [[4, 4, 4], [1, 1, 1], [1]], ids=str)
def test_packed_equal_lengths(lengths, enforce_sorted, dtype):
    """All lengths equal (nn.LSTM sends this to oneDNN as a padded batch),
    and every length 1 out of a longer padded tensor."""
    ref, ours = make_lstm_pair(3, 5, dtype=dtype, num_layers=2, bidirectional=True)
    B = len(lengths)
    x = _input(ours, 4, B, 3, dtype=dtype)
    parity_check(ref, ours, x, _states(ours, B, dtype), lengths=torch.tensor(lengths),
                 enforce_sorted=enforce_sorted)
    parity_check(ref, ours, x, lengths=torch.tensor(lengths), enforce_sorted=enforce_sorted)


# ----------------------------------------------------------- NaN and Inf

NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
LSTM_SITES = ("input", "h0", "c0", "weight_ih_l0", "weight_hh_l0_reverse", "bias_ih_l1",
              "bias_hh_l0", "weight_hr_l1_reverse")


def assert_same_nonfinite(actual: dict, expected: dict, reference=None, rule=None):
    """Same keys; per tensor NaN, +Inf and -Inf at the same positions, and
    the rest equal: under assert_close (its defaults for the dtype), or for
    bfloat16 under the low-precision rule against ``reference`` (float64)."""
    assert actual.keys() == expected.keys()
    finite = {}
    for key, e in expected.items():
        a = actual[key]
        if e is None:
            assert a is None, key
            continue
        for mask in (torch.isnan, torch.isposinf, torch.isneginf):
            assert torch.equal(mask(a), mask(e)), f"{key}: {mask.__name__} positions differ"
        if reference is None:
            torch.testing.assert_close(a, e, equal_nan=True, msg=lambda m, key=key: f"{key}: {m}")
        else:
            keep = torch.isfinite(e) & torch.isfinite(reference[key])
            finite[key] = (a[keep], e[keep], reference[key][keep])
    if reference is not None:
        assert_low_precision_parity(*({k: v[i] for k, v in finite.items()} for i in range(3)),
                                    **rule)


def _poison(module, site, value, x, hx):
    """Writes ``value`` into one entry of the input, a state or a weight."""
    if site == "input":
        x[1, 0, 2] = value
    elif site in ("h0", "c0"):
        hx[site == "c0"][1, 2, 0] = value
    else:
        with torch.no_grad():
            getattr(module, site).view(-1)[1] = value


@pytest.mark.parametrize("backward", [True, False], ids=["train", "inference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("value", list(NONFINITE))
@pytest.mark.parametrize("site", LSTM_SITES)
def test_nonfinite_values_propagate_like_nn_lstm(site, value, dtype, backward):
    """One NaN or +-Inf anywhere: every output, state and gradient has its
    non-finite entries where nn.LSTM has them (an Inf saturates a gate and
    may vanish; a NaN spreads), and the same finite values elsewhere."""
    ref, ours = make_lstm_pair(3, 4, dtype=dtype, num_layers=2, bidirectional=True, proj_size=2)
    x = _randn(4, 3, 3, dtype=dtype)
    hx = list(_states(ours, 3, dtype))
    for module in (ref, ours):
        _poison(module, site, NONFINITE[value], x, hx)
    theirs, mine = (run_lstm(m, x, tuple(hx), backward=backward) for m in (ref, ours))
    if value == "nan":
        assert not all(torch.isfinite(t).all() for t in theirs.values() if t is not None), \
            "the NaN reached no result: the case is moot"
    reference = None
    if dtype == torch.bfloat16:
        reference = run_lstm(to_reference(ours), x.double(), tuple(t.double() for t in hx),
                             backward=backward)
    assert_same_nonfinite(mine, theirs, reference, low_precision_rule(ours))


@pytest.mark.parametrize("value", list(NONFINITE))
@pytest.mark.parametrize("site", ["input", "h0", "c0", "weight_ih", "bias_hh"])
def test_cell_nonfinite_values_propagate_like_nn_lstm_cell(site, value):
    results = []
    for module in make_cell_pair(3, 4):
        x, h, c = _randn(2, 3), _randn(2, 4, seed=1), _randn(2, 4, seed=2)
        target = {"input": x, "h0": h, "c0": c}.get(site)
        if target is not None:
            target[1, 2] = NONFINITE[value]
        else:
            with torch.no_grad():
                getattr(module, site).view(-1)[5] = NONFINITE[value]
        results.append(run_lstm(module, x, (h, c)))
    assert_same_nonfinite(results[1], results[0])


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_nonfinite_padding_of_packed_input_is_never_read(enforce_sorted):
    """The padding of a packed batch is not part of the input: NaN there
    must change nothing (packing drops it; no kernel may read past a
    sequence's end)."""
    ref, ours = make_lstm_pair(3, 4, num_layers=2, bidirectional=True)
    lengths = torch.tensor([5, 3, 1]) if enforce_sorted else torch.tensor([3, 5, 1])
    x = _randn(5, 3, 3)
    for b, n in enumerate(lengths.tolist()):
        x[n:, b] = math.nan
    out, _ = parity_check(ref, ours, x, lengths=lengths, enforce_sorted=enforce_sorted)
    assert all(torch.isfinite(t).all() for t in out.values() if t is not None)


# ------------------------------------------------------ long sequences

LONG_T = 100_000


def _flat(result):
    output, (h_n, c_n) = result
    return [getattr(output, "data", output), h_n, c_n]


def test_long_sequence_matches_nn_lstm():
    """T = 10^5 (B = 2, H = 4, float32): inference, and training forward and
    backward, match nn.LSTM."""
    ref, ours = make_lstm_pair(2, 4)
    x = _randn(LONG_T, 2, 2)
    hx = _states(ours, 2)
    with torch.no_grad():
        for a, b in zip(_flat(ours(x, hx)), _flat(ref(x, hx))):
            torch.testing.assert_close(a, b)
    mine, theirs = (run_lstm(m, x, hx) for m in (ours, ref))
    for key, expected in theirs.items():
        if key.startswith(("grad_weight", "grad_bias")):
            # Sums over N = T * B rows, in another order in each: float32's
            # rounding error of such a sum grows like sqrt(N) * eps of its
            # scale (a random walk of independent roundings).
            scale = math.sqrt(LONG_T * 2) * torch.finfo(torch.float32).eps
            torch.testing.assert_close(mine[key], expected, rtol=0,
                                       atol=4 * scale * expected.abs().max().item(),
                                       msg=lambda m, key=key: f"{key}: {m}")
        else:
            torch.testing.assert_close(mine[key], expected, msg=lambda m, key=key: f"{key}: {m}")


def test_long_packed_bidirectional_sequence_matches_nn_lstm():
    """T = 10^5, packed (lengths 10^5 and 3), bidirectional:
    the reverse direction starts the short sequence at its own end."""
    ref, ours = make_lstm_pair(2, 4, bidirectional=True)
    x = pack_padded_sequence(_randn(LONG_T, 2, 2), torch.tensor([LONG_T, 3]))
    with torch.no_grad():
        for a, b in zip(_flat(ours(x)), _flat(ref(x))):
            torch.testing.assert_close(a, b)


def saved_bytes(module, x, hx=None) -> int:
    """Bytes of the tensors autograd saves for backward in one training
    forward (each saved tensor counted in full, views included)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x, hx)
    return total


@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True, proj_size=2)],
                         ids=["plain", "deep_bidir_proj"])
@pytest.mark.parametrize("kind", ["padded", "packed"])
def test_saved_memory_is_linear_in_sequence_length(config, kind):
    """The activations saved for backward grow by the same number of bytes
    per step from T = 1000 to T = 10^5: memory is affine in T (no term that
    grows faster, such as a per-step copy of the whole history)."""
    torch.manual_seed(0)
    module = fusedlstm.LSTM(2, 4, **config)
    B = 2

    def measure(T):
        x = torch.randn(T, B, 2, requires_grad=True)
        if kind == "packed":
            x = pack_padded_sequence(x, torch.tensor([T, max(T // 2, 1)]))
        return saved_bytes(module, x)

    # Three points on one line: the bytes per step from T = 1000 to 2000
    # predict T = 10^5 exactly (the packed batch keeps 1.5 T rows).
    first, second = measure(1000), measure(2000)
    per_step = (second - first) // 1000
    assert per_step > 0 and second - first == 1000 * per_step
    assert measure(LONG_T) == first + (LONG_T - 1000) * per_step


# ------------------------------------------------ found by the fuzz sweep


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("with_hx", [False, True])
def test_cell_hidden_size_zero(with_hx, batched):
    """nn.LSTMCell accepts hidden_size 0 and returns empty states (with zero
    input gradients); the fused kernels need one unit at least."""
    ref, ours = make_cell_pair(4, 0)
    x = _randn(3, 4) if batched else _randn(4)
    hx = (torch.zeros(3, 0), torch.zeros(3, 0)) if batched else (torch.zeros(0), torch.zeros(0))
    parity_check(ref, ours, x, hx if with_hx else None)


PACKED_STATE_RANK_CASES = {
    "h0_2d": ((2, 5), (1, 2, 5)),
    "c0_2d": ((1, 2, 5), (2, 5)),
    "h0_1d": ((5,), (1, 2, 5)),
    "both_1d": ((5,), (5,)),
    "c0_0d": ((1, 2, 5), ()),
}


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("case", list(PACKED_STATE_RANK_CASES), ids=list(PACKED_STATE_RANK_CASES))
def test_packed_input_with_states_of_too_few_dimensions(case, enforce_sorted):
    """nn.LSTM does not check states given with packed input; its kernel
    reads their third size first and raises IndexError."""
    ref, ours = make_lstm_pair(3, 5)
    h_shape, c_shape = PACKED_STATE_RANK_CASES[case]
    lengths = [3, 2] if enforce_sorted else [2, 3]

    def call(m):
        x = pack_padded_sequence(torch.randn(3, 2, 3), lengths, enforce_sorted=enforce_sorted)
        return m(x, (torch.randn(h_shape), torch.randn(c_shape)))

    assert_same_error(lambda: call(ref), lambda: call(ours))


HX_NOT_A_TUPLE_CASES = {
    # A 4-D tensor passes nn.LSTM's rank checks (hx[0] and hx[1] are 3-D),
    # then torch.lstm's argument parser refuses it.
    "padded_4d_tensor": (lambda x: x, lambda: torch.randn(2, 1, 2, 5)),
    "packed_tensor": (lambda x: pack_padded_sequence(x, [3, 2]), lambda: torch.randn(2, 1, 2, 5)),
    "packed_none_pair": (lambda x: pack_padded_sequence(x, [3, 2]), lambda: (None, None)),
    "packed_three": (lambda x: pack_padded_sequence(x, [3, 2]), lambda: (
        torch.randn(1, 2, 5), torch.randn(1, 2, 5), torch.randn(1, 2, 5))),
}


@pytest.mark.parametrize("case", list(HX_NOT_A_TUPLE_CASES), ids=list(HX_NOT_A_TUPLE_CASES))
def test_hx_of_the_wrong_structure(case):
    ref, ours = make_lstm_pair(3, 5)
    make_input, make_hx = HX_NOT_A_TUPLE_CASES[case]
    x = torch.randn(3, 2, 3)
    hx = make_hx()
    assert_same_error(lambda: ref(make_input(x), hx), lambda: ours(make_input(x), hx))


@pytest.mark.parametrize("hx", ["three_tuple", "tensor_of_two_rows"])
def test_cell_unbatched_hx_taken_apart_like_nn_lstm_cell(hx):
    """For 1-D input nn.LSTMCell takes hx[0] and hx[1] of whatever it is
    given: a 3-tuple loses its last entry, a [2, H] tensor gives h and c."""
    ref, ours = make_cell_pair(4, 5)
    h, c = _randn(5, seed=1), _randn(5, seed=2)
    state = (h, c, h) if hx == "three_tuple" else torch.stack([h, c])
    results = [m(_randn(4), state) for m in (ref, ours)]
    for a, b in zip(results[1], results[0]):
        torch.testing.assert_close(a, b)


INFERENCE_INPUT_CASES = {
    # nn.LSTM's input projection copies a batch-first input's transposed
    # view, and saves the copy: the one case it takes.
    "batch_first": (dict(batch_first=True), "input", (2, 3, 4)),
    "batch_first_two_layers_bidirectional_proj": (
        dict(batch_first=True, num_layers=2, bidirectional=True, proj_size=2), "input", (2, 3, 4)),
    "time_major": (dict(), "input", (3, 2, 4)),
    "batch_first_unbatched": (dict(batch_first=True), "input", (3, 4)),
    "batch_first_state": (dict(batch_first=True), "state", (2, 3, 4)),
    "packed": (dict(), "packed", (3, 2, 4)),
}


@pytest.mark.parametrize("case", list(INFERENCE_INPUT_CASES), ids=list(INFERENCE_INPUT_CASES))
def test_inference_mode_tensors_in_a_training_call(case):
    """Tensors made under torch.inference_mode (a feature extractor's, say)
    fed to a call that records autograd: taken where nn.LSTM takes them, with
    its gradients, and refused with its error elsewhere."""
    kwargs, where, shape = INFERENCE_INPUT_CASES[case]
    ref, ours = make_lstm_pair(4, 5, dtype=torch.float64, **kwargs)
    with torch.inference_mode():
        x = _randn(*shape, dtype=torch.float64)
        hx = _states(ref, 3 if kwargs.get("batch_first") else 2, dtype=torch.float64)
    if where == "packed":
        x = pack_padded_sequence(x, [3, 2])

    def call(m):
        out = m(x, hx) if where == "state" else m(x)
        y = out[0].data if where == "packed" else out[0]
        loss = y.square().sum() + out[1][1].sum()
        return (y, *torch.autograd.grad(loss, list(m.parameters())))

    ref_err = assert_same_outcome(lambda: call(ref), lambda: call(ours))
    assert (ref_err is None) == (case in ("batch_first", "batch_first_two_layers_bidirectional_proj",
                                          "packed"))
