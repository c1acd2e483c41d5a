"""States of another dtype than the input, against torch.nn.LSTM
(fusedlstm/_state_dtypes.py): on the CPU nn.LSTM's native loop promotes or
refuses them, each with its own message, and its oneDNN path takes a
float32 c0 with bfloat16/float16 input and h0.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from fusedlstm import _state_dtypes
from helpers import (make_lstm_pair, outcome, parity_check, seeded_randn as _randn,
                     seeded_states as _states)


def _flat(result):
    output, (h_n, c_n) = result
    return [getattr(output, "data", output), h_n, c_n]


# States of another dtype than the input (fusedlstm/_state_dtypes.py). Where
# nn.LSTM runs ATen's native loop on the CPU (packed input of unequal
# lengths, proj_size, float64, oneDNN disabled, float16 with grad), c = f * c0
# + i * g promotes c0: a narrower c0 computes as the input's dtype, a wider one
# fails the next product, or after one step of one layer comes back wider;
# an h0 of another dtype fails the first product. Where it runs oneDNN,
# oneDNN refuses both (its messages: test_errors.py). Each: (module kwargs,
# model dtype, input ("padded", T) or ("packed", lengths), h0 dtype or None
# (the model's), c0 dtype, oneDNN enabled).
STATE_DTYPE_CASES = {
    "packed_c_bfloat16": ({}, torch.float32, ("packed", [3, 2]), None, torch.bfloat16, True),
    "packed_c_float16": ({}, torch.float32, ("packed", [3, 2]), None, torch.float16, True),
    "packed_c_int64": ({}, torch.float32, ("packed", [3, 1]), None, torch.int64, True),
    "packed_c_bool": ({}, torch.float32, ("packed", [3, 2]), None, torch.bool, True),
    "packed_c_float64": ({}, torch.float32, ("packed", [3, 2]), None, torch.float64, True),
    "packed_bidirectional_two_layers_c_bfloat16": (
        dict(num_layers=2, bidirectional=True), torch.float32, ("packed", [4, 2, 1]),
        None, torch.bfloat16, True),
    "packed_h_bfloat16": ({}, torch.float32, ("packed", [3, 2]), torch.bfloat16, torch.float64, True),
    "proj_c_float64": (dict(proj_size=2), torch.float32, ("padded", 3), None, torch.float64, True),
    "proj_c_bfloat16": (dict(proj_size=2), torch.float32, ("padded", 3), None, torch.bfloat16, True),
    "proj_packed_c_complex64": (dict(proj_size=2), torch.float32, ("packed", [3, 2]), None,
                                torch.complex64, True),
    "float64_c_float32": ({}, torch.float64, ("padded", 3), None, torch.float32, True),
    "float64_c_float16": (dict(bidirectional=True), torch.float64, ("padded", 3), None,
                          torch.float16, True),
    "bfloat16_packed_c_float32": ({}, torch.bfloat16, ("packed", [3, 2]), None, torch.float32, True),
    "bfloat16_packed_c_int64": ({}, torch.bfloat16, ("packed", [3, 2]), None, torch.int64, True),
    "float16_with_grad_c_float32": ({}, torch.float16, ("padded", 3), None, torch.float32, True),
    "no_onednn_c_bfloat16": ({}, torch.float32, ("padded", 3), None, torch.bfloat16, False),
    "no_onednn_c_float64": ({}, torch.float32, ("padded", 3), None, torch.float64, False),
    "no_onednn_one_step_c_float64": ({}, torch.float32, ("padded", 1), None, torch.float64, False),
    "no_onednn_one_step_bidirectional_c_float64": (
        dict(bidirectional=True, batch_first=True), torch.float32, ("padded", 1), None,
        torch.float64, False),
    "no_onednn_one_step_c_complex64": ({}, torch.float32, ("padded", 1), None, torch.complex64, False),
    "no_onednn_one_step_two_layers_c_float64": (
        dict(num_layers=2), torch.float32, ("padded", 1), None, torch.float64, False),
    "no_onednn_packed_one_step_c_float64": ({}, torch.float32, ("packed", [1, 1]), None,
                                            torch.float64, False),
    # Without a bias the native loop's products run mm, not addmm, whose
    # message differs: an h0 of another dtype, a wider c0 meeting the next
    # step's product and the next layer's, and (computed) one step.
    "no_onednn_no_bias_h_float64": (dict(bias=False), torch.float32, ("padded", 3),
                                    torch.float64, torch.float32, False),
    "no_onednn_no_bias_c_float64": (dict(bias=False), torch.float32, ("padded", 3), None,
                                    torch.float64, False),
    "no_onednn_no_bias_one_step_two_layers_c_float64": (
        dict(bias=False, num_layers=2), torch.float32, ("padded", 1), None, torch.float64, False),
    "no_onednn_no_bias_one_step_c_float64": (dict(bias=False), torch.float32, ("padded", 1),
                                             None, torch.float64, False),
    "no_onednn_no_bias_bfloat16_c_float32": (dict(bias=False, batch_first=True),
                                             torch.bfloat16, ("padded", 4), None,
                                             torch.float32, False),
    "no_onednn_no_bias_proj_c_float64": (dict(bias=False, proj_size=2), torch.float32,
                                         ("padded", 3), None, torch.float64, False),
}


@pytest.mark.parametrize("case", list(STATE_DTYPE_CASES), ids=list(STATE_DTYPE_CASES))
def test_states_of_another_dtype_like_nn_lstm(case):
    """The same results, dtypes and gradients as nn.LSTM, or its exception
    and message."""
    kwargs, dtype, (kind, shape), h_dtype, c_dtype, onednn = STATE_DTYPE_CASES[case]
    ref, ours = make_lstm_pair(3, 5, dtype=dtype, **kwargs)
    layers = ours.num_layers * (2 if ours.bidirectional else 1)
    state = ours.proj_size or 5
    T = max(shape) if kind == "packed" else shape
    batch = len(shape) if kind == "packed" else 2

    def call(module):
        x = _randn(T, batch, 3, dtype=dtype).requires_grad_()
        if kind == "padded" and module.batch_first:
            x = x.detach().transpose(0, 1).contiguous().requires_grad_()
        inp = pack_padded_sequence(x, shape) if kind == "packed" else x
        h0 = _randn(layers, batch, state, dtype=h_dtype or dtype, seed=1)
        c0 = _randn(layers, batch, 5, dtype=torch.float64, seed=2)
        c0 = (c0 > 0) if c_dtype == torch.bool else (c0 * 3).to(c_dtype)
        leaves = [x] + ([h0.requires_grad_()] if h0.is_floating_point() else [])
        if c0.is_floating_point() or c0.is_complex():
            leaves.append(c0.requires_grad_())
        with torch.backends.mkldnn.flags(enabled=onednn):
            out, (h_n, c_n) = module(inp, (h0, c0))
        results = [getattr(out, "data", out), h_n, c_n]
        loss = sum(r.abs().sum() if r.is_complex() else r.sum() for r in results)
        grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
        return results + list(grads)

    _assert_same_outcome(lambda: call(ref), lambda: call(ours))


def _assert_same_outcome(ref_call, our_call):
    """nn.LSTM's exception and message, or its results' dtypes and values."""
    ref_err, expected = outcome(ref_call)
    our_err, actual = outcome(our_call)
    if ref_err is not None:
        assert our_err is not None, f"torch.nn raised {ref_err!r}, fusedlstm did not"
        assert (type(our_err), str(our_err)) == (type(ref_err), str(ref_err))
        return
    assert our_err is None, f"torch.nn returned, fusedlstm raised {our_err!r}"
    for a, b in zip(actual, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **_tolerance(b.dtype))


def test_state_dtype_cases_cover_accepted_and_refused_calls():
    """The table above holds calls nn.LSTM computes and calls it refuses, with
    each of its messages (so that neither half is vacuous)."""
    outcomes = set()
    for case in STATE_DTYPE_CASES:
        kwargs, dtype, (kind, shape), h_dtype, c_dtype, onednn = STATE_DTYPE_CASES[case]
        ref, _ = make_lstm_pair(3, 5, dtype=dtype, **kwargs)
        layers = ref.num_layers * (2 if ref.bidirectional else 1)
        T = max(shape) if kind == "packed" else shape
        batch = len(shape) if kind == "packed" else 2
        x = _randn(T, batch, 3, dtype=dtype)
        if kind == "padded" and ref.batch_first:
            x = x.transpose(0, 1)
        inp = pack_padded_sequence(x, shape) if kind == "packed" else x
        hx = (_randn(layers, batch, ref.proj_size or 5, dtype=h_dtype or dtype),
              _randn(layers, batch, 5).to(c_dtype))
        with torch.backends.mkldnn.flags(enabled=onednn):
            err, _ = outcome(lambda: ref(inp, hx))
        outcomes.add("returned" if err is None else " ".join(str(err).split()[:3]))
    assert {"returned", "mat1 and mat2", "expected m1 and"} <= outcomes, outcomes


# Calls where nn.LSTM runs oneDNN with bfloat16/float16 input and h0 and a
# float32 c0: oneDNN carries c in float32 and returns c_n (and c0's gradient)
# in float32. Each: (module kwargs, dtype, (kind, shape), backward).
FLOAT32_C0_CASES = {
    "bfloat16": ({}, torch.bfloat16, ("padded", 6), True),
    "bfloat16_two_layers_bidirectional": (
        dict(num_layers=2, bidirectional=True), torch.bfloat16, ("padded", 5), True),
    "bfloat16_batch_first_no_bias": (
        dict(batch_first=True, bias=False), torch.bfloat16, ("padded", 4), True),
    "bfloat16_packed_equal_lengths": ({}, torch.bfloat16, ("packed", [5, 5, 5]), True),
    "bfloat16_one_step": ({}, torch.bfloat16, ("padded", 1), True),
    "bfloat16_one_step_bidirectional": (
        dict(bidirectional=True), torch.bfloat16, ("padded", 1), True),
    "bfloat16_long_three_layers": (dict(num_layers=3), torch.bfloat16, ("padded", 40), True),
    "float16_inference": ({}, torch.float16, ("padded", 6), False),
    "float16_inference_two_layers_packed": (
        dict(num_layers=2), torch.float16, ("packed", [4, 4]), False),
}


@pytest.mark.parametrize("case", list(FLOAT32_C0_CASES), ids=list(FLOAT32_C0_CASES))
def test_float32_c0_with_reduced_input_on_onednn_like_nn_lstm(case):
    """nn.LSTM's dtypes (c_n and c0's gradient float32, the rest in the
    input's dtype), and its values by the half-precision rule: within twice
    nn.LSTM's own error against the float64 model. Where nn.LSTM runs its
    native loop instead (a CPU without oneDNN for the dtype; torch 2.11 for
    packed input), its error, or for one step its promoted results."""
    kwargs, dtype, (kind, shape), backward = FLOAT32_C0_CASES[case]
    ref, ours = make_lstm_pair(3, 5, dtype=dtype, **kwargs)
    T = max(shape) if kind == "packed" else shape
    batch = len(shape) if kind == "packed" else 2
    x = _randn(T, batch, 3, dtype=dtype)
    if ours.batch_first:
        x = x.transpose(0, 1).contiguous()
    h0, c0 = _states(ours, batch, dtype=dtype)
    c0 = _randn(*c0.shape, seed=9)  # float32, most values not bfloat16's
    lengths = shape if kind == "packed" else None
    inp = pack_padded_sequence(x, lengths, batch_first=ours.batch_first) if lengths else x
    context = contextlib.nullcontext if backward else torch.no_grad
    with context():
        if not _state_dtypes.onednn_takes_float32_c0(
                getattr(inp, "data", inp), (h0, c0), getattr(inp, "batch_sizes", None), False):
            _assert_same_outcome(lambda: _flat(ref(inp, (h0, c0))),
                                 lambda: _flat(ours(inp, (h0, c0))))
            return
        ours_result, torch_result = parity_check(ref, ours, x, (h0, c0), lengths=lengths,
                                                 backward=backward)
    assert ours_result["c_n"].dtype == torch.float32
    assert ours_result["h_n"].dtype == ours_result["output"].dtype == dtype
    if backward:
        assert ours_result["grad_c0"].dtype == torch.float32
        assert ours_result["grad_h0"].dtype == dtype


def test_float32_c0_is_carried_unrounded():
    """The float32 c0 enters unrounded and c_n leaves unrounded: against the
    same call with c0 rounded to bfloat16, c_n moves by more than bfloat16's
    rounding of it would, and c_n is not a bfloat16 value."""
    ref, ours = make_lstm_pair(3, 5, dtype=torch.bfloat16)
    x = _randn(3, 2, 3, dtype=torch.bfloat16)
    h0 = _randn(1, 2, 5, dtype=torch.bfloat16, seed=1)
    c0 = _randn(1, 2, 5, seed=2)
    if not _state_dtypes.onednn_takes_float32_c0(x, (h0, c0), None, False):
        pytest.skip("no oneDNN bfloat16 here: nn.LSTM refuses the call")
    with torch.no_grad():
        _, (_, c_n) = ours(x, (h0, c0))
        _, (_, c_n_rounded_c0) = ours(x, (h0, c0.bfloat16().float()))
    assert c_n.dtype == c_n_rounded_c0.dtype == torch.float32
    assert not torch.equal(c_n, c_n.bfloat16().float())
    assert not torch.equal(c_n, c_n_rounded_c0)


def _tolerance(dtype):
    # Both sides compute the same operations; the fused kernels sum in
    # another order: float32 rounding of the model's dtype.
    if dtype in (torch.bfloat16, torch.float16):
        return dict(rtol=2e-2, atol=2e-2)
    return {}
