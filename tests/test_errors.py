"""Every error torch.nn.LSTM / LSTMCell raises, fusedlstm raises alike.

Each case runs the same mistake against torch.nn and fusedlstm and compares
the exception's type and message. A case where torch.nn does not raise is
itself a failure (the case would test nothing), except in the edge-case
tests at the bottom, which compare whatever torch.nn does, result or error.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm
from helpers import make_cell_pair, make_lstm_pair, outcome


def assert_same_error(make_call, *, must_raise=True):
    """``make_call(cls_pair_index)`` -> zero-arg callable; 0 torch.nn, 1 ours."""
    # Same seed for both calls: cases draw their inputs inside the call.
    torch.manual_seed(0)
    ref_err, ref_res = outcome(make_call(0))
    torch.manual_seed(0)
    our_err, our_res = outcome(make_call(1))
    if must_raise:
        assert ref_err is not None, f"torch.nn did not raise (returned {type(ref_res)})"
    if ref_err is None:
        assert our_err is None, f"torch.nn returned but fusedlstm raised {our_err!r}"
        return ref_res, our_res
    assert our_err is not None, f"torch.nn raised {ref_err!r}, fusedlstm did not"
    assert type(our_err) is type(ref_err), (type(our_err), type(ref_err), str(ref_err))
    assert str(our_err) == str(ref_err)
    return None, None


# -------------------------------------------------------------- constructors

LSTM_CTOR_CASES = {
    "hidden_size_float": ((4, 2.5), {}),
    "hidden_size_zero": ((4, 0), {}),
    "hidden_size_negative": ((4, -3), {}),
    "hidden_size_str": ((4, "8"), {}),
    "num_layers_zero": ((4, 8), {"num_layers": 0}),
    "num_layers_float": ((4, 8), {"num_layers": 1.5}),
    "dropout_str": ((4, 8), {"dropout": "0.5"}),
    "dropout_bool": ((4, 8), {"dropout": True, "num_layers": 2}),
    "dropout_above_one": ((4, 8), {"dropout": 1.5}),
    "dropout_negative": ((4, 8), {"dropout": -0.1}),
    "proj_negative": ((4, 8), {"proj_size": -1}),
    "proj_equal_hidden": ((4, 8), {"proj_size": 8}),
    "proj_above_hidden": ((4, 8), {"proj_size": 9}),
    "proj_float": ((4, 8), {"proj_size": 2.0}),
    "unknown_kwarg": ((4, 8), {"nonlinearity": "tanh"}),
    "too_many_positional": ((4, 8, 1, True, False, 0.0, False, 0, None, None, 7), {}),
    "missing_hidden": ((4,), {}),
    "input_size_zero": ((0, 8), {}),
}


@pytest.mark.parametrize("case", list(LSTM_CTOR_CASES), ids=list(LSTM_CTOR_CASES))
def test_lstm_constructor_errors(case):
    args, kwargs = LSTM_CTOR_CASES[case]
    classes = (nn.LSTM, fusedlstm.LSTM)
    assert_same_error(lambda i: lambda: classes[i](*args, **kwargs))


CELL_CTOR_CASES = {
    "hidden_size_zero": ((4, 0), {}),
    "hidden_size_float": ((4, 2.5), {}),
    "input_size_negative": ((-1, 3), {}),
    "unknown_kwarg": ((4, 8), {"proj_size": 2}),
    "missing_hidden": ((4,), {}),
}


@pytest.mark.parametrize("case", list(CELL_CTOR_CASES), ids=list(CELL_CTOR_CASES))
def test_cell_constructor_errors(case):
    args, kwargs = CELL_CTOR_CASES[case]
    classes = (nn.LSTMCell, fusedlstm.LSTMCell)
    ref_res, our_res = assert_same_error(
        lambda i: lambda: classes[i](*args, **kwargs), must_raise=False)
    if ref_res is not None:  # torch accepts it (hidden_size=0): so do we
        assert type(our_res) is fusedlstm.LSTMCell
        assert repr(our_res) == repr(ref_res)


def test_dropout_with_one_layer_warns_alike():
    caught = []
    for cls in (nn.LSTM, fusedlstm.LSTM):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cls(4, 8, dropout=0.5)
        caught.append([(x.category, str(x.message)) for x in w])
    assert caught[0], "nn.LSTM no longer warns: the case is moot"
    assert caught[1] == caught[0]


# ------------------------------------------------------------- LSTM forward

def _lstm_call(mistake, **ctor):
    """A case factory: builds the pair once, returns make_call(i)."""
    pair = make_lstm_pair(4, 6, **ctor)
    return lambda i: (lambda: mistake(pair[i]))


def _packed(x, lengths, **kw):
    return pack_padded_sequence(x, lengths, enforce_sorted=False, **kw)


LSTM_FORWARD_CASES = {
    # Dimensions.
    "input_1d": (lambda m: m(torch.randn(4)), {}),
    "input_4d": (lambda m: m(torch.randn(2, 3, 3, 4)), {}),
    "input_0d": (lambda m: m(torch.tensor(1.0)), {}),
    # input_size.
    "input_size_3d": (lambda m: m(torch.randn(5, 2, 3)), {}),
    "input_size_2d_unbatched": (lambda m: m(torch.randn(5, 7)), {}),
    "input_size_batch_first": (lambda m: m(torch.randn(2, 5, 5)), {"batch_first": True}),
    # dtype: input vs weights, hx vs input.
    "input_double_weights_float": (lambda m: m(torch.randn(5, 2, 4, dtype=torch.float64)), {}),
    "input_int": (lambda m: m(torch.ones(5, 2, 4, dtype=torch.long)), {}),
    "input_bf16_weights_float": (lambda m: m(torch.randn(5, 2, 4).bfloat16()), {}),
    "input_double_packed": (
        lambda m: m(_packed(torch.randn(5, 2, 4, dtype=torch.float64), [5, 2])), {}),
    # hx dims.
    "hx_2d_for_batched": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(2, 6), torch.randn(2, 6))), {}),
    "c0_2d_for_batched": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(2, 6))), {}),
    "hx_3d_for_unbatched": (lambda m: m(torch.randn(5, 4), (
        torch.randn(1, 1, 6), torch.randn(1, 1, 6))), {}),
    "hx_1d_for_unbatched": (lambda m: m(torch.randn(5, 4), (
        torch.randn(6), torch.randn(6))), {}),
    "hx_4d": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 1, 2, 6), torch.randn(1, 1, 2, 6))), {}),
    # hx shapes.
    "h0_wrong_layers": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(2, 2, 6), torch.randn(1, 2, 6))), {}),
    "c0_wrong_layers": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(3, 2, 6))), {}),
    "h0_wrong_batch": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 3, 6), torch.randn(1, 2, 6))), {}),
    "c0_wrong_hidden": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 5))), {}),
    "h0_wrong_bidirectional": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 6))), {"bidirectional": True}),
    "h0_wrong_unbatched": (lambda m: m(torch.randn(5, 4), (
        torch.randn(1, 5), torch.randn(1, 6))), {}),
    "h0_hidden_not_proj": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 6))), {"proj_size": 3}),
    "c0_proj_not_hidden": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 3), torch.randn(1, 2, 3))), {"proj_size": 3}),
    "h0_wrong_batch_first": (lambda m: m(torch.randn(2, 5, 4), (
        torch.randn(1, 5, 6), torch.randn(1, 5, 6))), {"batch_first": True}),
    # (h0 with too many layers for packed input is left out: nn.LSTM, which
    # leaves packed hx to its C++ kernel, crashes the process on it in 2.13.)
    # hx structure.
    "hx_single_tensor": (lambda m: m(torch.randn(5, 2, 4), torch.randn(1, 2, 6)), {}),
    "hx_one_element": (lambda m: m(torch.randn(5, 2, 4), (torch.randn(1, 2, 6),)), {}),
    "hx_three_elements": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 6), torch.randn(1, 2, 6))), {}),
    "hx_none_elements": (lambda m: m(torch.randn(5, 2, 4), (None, None)), {}),
    # Input types.
    "input_list": (lambda m: m([[1.0] * 4]), {}),
    "input_none": (lambda m: m(None), {}),
}


@pytest.mark.parametrize("case", list(LSTM_FORWARD_CASES), ids=list(LSTM_FORWARD_CASES))
def test_lstm_forward_errors(case):
    mistake, ctor = LSTM_FORWARD_CASES[case]
    ref_res, _ = assert_same_error(_lstm_call(mistake, **ctor), must_raise=False)
    assert ref_res is None, f"{case}: nn.LSTM accepted it; not an error case"


# ------------------------------------------------------------ cell forward

CELL_FORWARD_CASES = {
    "input_3d": lambda m: m(torch.randn(2, 3, 4)),
    "input_0d": lambda m: m(torch.tensor(1.0)),
    "h_3d": lambda m: m(torch.randn(2, 4), (torch.randn(1, 2, 6), torch.randn(2, 6))),
    "c_3d": lambda m: m(torch.randn(2, 4), (torch.randn(2, 6), torch.randn(1, 2, 6))),
    "input_size": lambda m: m(torch.randn(2, 5)),
    "input_size_unbatched": lambda m: m(torch.randn(5)),
    "h_batch": lambda m: m(torch.randn(2, 4), (torch.randn(3, 6), torch.randn(2, 6))),
    "c_batch": lambda m: m(torch.randn(2, 4), (torch.randn(2, 6), torch.randn(3, 6))),
    "h_hidden": lambda m: m(torch.randn(2, 4), (torch.randn(2, 5), torch.randn(2, 6))),
    "c_hidden": lambda m: m(torch.randn(2, 4), (torch.randn(2, 6), torch.randn(2, 7))),
    "unbatched_input_batched_hx": lambda m: m(torch.randn(4), (
        torch.randn(2, 6), torch.randn(2, 6))),
    "batched_input_unbatched_hx": lambda m: m(torch.randn(2, 4), (
        torch.randn(6), torch.randn(6))),
    "hx_single_tensor": lambda m: m(torch.randn(2, 4), torch.randn(2, 6)),
    "hx_one_element": lambda m: m(torch.randn(2, 4), (torch.randn(2, 6),)),
    "input_none": lambda m: m(None),
}


@pytest.mark.parametrize("case", list(CELL_FORWARD_CASES), ids=list(CELL_FORWARD_CASES))
@pytest.mark.parametrize("bias", [True, False])
def test_cell_forward_errors(case, bias):
    pair = make_cell_pair(4, 6, bias=bias)
    mistake = CELL_FORWARD_CASES[case]
    ref_res, _ = assert_same_error(lambda i: lambda: mistake(pair[i]), must_raise=False)
    assert ref_res is None, f"{case}: nn.LSTMCell accepted it; not an error case"


# ------------------------------------------------------ edge cases: whatever
# torch.nn does (raise or return), fusedlstm does the same.

def _compare_results(ref_res, our_res):
    flat_ref, flat_ours = _flatten(ref_res), _flatten(our_res)
    assert len(flat_ref) == len(flat_ours)
    for a, b in zip(flat_ours, flat_ref):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape)
        torch.testing.assert_close(a, b)


def _flatten(res):
    if isinstance(res, torch.Tensor):
        return [res]
    if hasattr(res, "data") and hasattr(res, "batch_sizes"):
        return [res.data, res.batch_sizes]
    return [t for item in res for t in _flatten(item)]


EDGE_CASES = {
    "zero_length_sequence": (lambda m: m(torch.randn(0, 2, 4)), {}),
    "zero_length_sequence_hx": (lambda m: m(torch.randn(0, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 6))), {}),
    "zero_length_unbatched": (lambda m: m(torch.randn(0, 4)), {}),
    "zero_length_batch_first": (lambda m: m(torch.randn(2, 0, 4)), {"batch_first": True}),
    "zero_length_bidirectional": (lambda m: m(torch.randn(0, 2, 4)), {"bidirectional": True}),
    "batch_zero": (lambda m: m(torch.randn(5, 0, 4)), {}),
    # torch takes h0's rows through sorted_indices before any check, so a
    # wider h0 is accepted for packed input; so is it here.
    "h0_wider_packed": (lambda m: m(_packed(torch.randn(5, 2, 4), [5, 2]), (
        torch.randn(1, 3, 6), torch.randn(1, 3, 6))), {}),
    "batch_zero_hx": (lambda m: m(torch.randn(5, 0, 4), (
        torch.randn(1, 0, 6), torch.randn(1, 0, 6))), {}),
    "batch_zero_proj_bidir": (lambda m: m(torch.randn(5, 0, 4)), {
        "proj_size": 2, "bidirectional": True, "num_layers": 2}),
    "input_size_zero_features": (lambda m: m(torch.randn(5, 2, 0)), {}),
}


@pytest.mark.parametrize("case", list(EDGE_CASES), ids=list(EDGE_CASES))
def test_lstm_degenerate_shapes(case):
    mistake, ctor = EDGE_CASES[case]
    ref_res, our_res = assert_same_error(_lstm_call(mistake, **ctor), must_raise=False)
    if ref_res is not None:
        _compare_results(ref_res, our_res)


def test_packed_zero_length_is_refused_alike():
    """pack_padded_sequence itself refuses zero lengths; nothing reaches us."""
    x = torch.randn(3, 2, 4)
    with pytest.raises(RuntimeError) as e:
        pack_padded_sequence(x, [3, 0], enforce_sorted=False)
    assert "zero" in str(e.value) or "0" in str(e.value)


CELL_EDGE_CASES = {
    "batch_zero": lambda m: m(torch.randn(0, 4)),
    "batch_zero_hx": lambda m: m(torch.randn(0, 4), (torch.randn(0, 6), torch.randn(0, 6))),
}


@pytest.mark.parametrize("case", list(CELL_EDGE_CASES), ids=list(CELL_EDGE_CASES))
def test_cell_degenerate_shapes(case):
    pair = make_cell_pair(4, 6)
    mistake = CELL_EDGE_CASES[case]
    ref_res, our_res = assert_same_error(lambda i: lambda: mistake(pair[i]), must_raise=False)
    if ref_res is not None:
        _compare_results(ref_res, our_res)


# ------------------------------------------- errors whose torch message is an
# accident of torch's backend
#
# These mistakes are not caught by nn.LSTM's own checks: they surface from
# inside whichever kernel torch picks, so torch's message depends on that
# choice (oneDNN says "get_mkldnn_dtype: unsupported data type", the native
# path "mat1 and mat2 must have the same dtype ...", for the same call), or
# is misleading ("got an incorrect number of RNN parameters" for a wrong c0
# shape with packed input). There is no single message to match: fusedlstm
# raises the same exception type with a message naming the actual problem,
# and each test also pins what torch says, so a change on either side shows.

BACKEND_CASES = {
    # name: (mistake, ctor, {mkldnn enabled: torch's message})
    "h0_double": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6, dtype=torch.float64), torch.randn(1, 2, 6))), {}),
    "c0_double": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 6, dtype=torch.float64))), {}),
    "hx_both_double": (lambda m: m(torch.randn(5, 2, 4), (
        torch.randn(1, 2, 6, dtype=torch.float64),
        torch.randn(1, 2, 6, dtype=torch.float64))), {}),
    "h0_double_unbatched": (lambda m: m(torch.randn(5, 4), (
        torch.randn(1, 6, dtype=torch.float64), torch.randn(1, 6))), {}),
    "h0_double_packed": (lambda m: m(_packed(torch.randn(5, 2, 4), [5, 2]), (
        torch.randn(1, 2, 6, dtype=torch.float64), torch.randn(1, 2, 6))), {}),
    "input_size_packed": (lambda m: m(_packed(torch.randn(5, 2, 3), [5, 2])), {}),
    "c0_wrong_packed": (lambda m: m(_packed(torch.randn(5, 2, 4), [5, 2]), (
        torch.randn(1, 2, 6), torch.randn(1, 2, 5))), {}),
}


@pytest.mark.parametrize("mkldnn", [True, False])
@pytest.mark.parametrize("case", list(BACKEND_CASES), ids=list(BACKEND_CASES))
def test_lstm_backend_errors_same_type(case, mkldnn):
    mistake, ctor = BACKEND_CASES[case]
    ref, ours = make_lstm_pair(4, 6, **ctor)
    with torch.backends.mkldnn.flags(enabled=mkldnn):
        ref_err, _ = outcome(lambda: mistake(ref))
    our_err, _ = outcome(lambda: mistake(ours))
    assert ref_err is not None and our_err is not None, (ref_err, our_err)
    assert type(our_err) is type(ref_err), (our_err, ref_err)
    # Ours names the problem: a dtype or a size.
    assert any(word in str(our_err) for word in ("dtype", "scalar type", "size")), our_err


CELL_BACKEND_CASES = {
    # torch: "mat1 and mat2 must have the same dtype, ..." with bias (addmm),
    # "expected m1 and m2 to have the same dtype, ..." without (mm).
    "input_double": lambda m: m(torch.randn(2, 4, dtype=torch.float64)),
    "input_bf16": lambda m: m(torch.randn(2, 4).bfloat16()),
    "h_double": lambda m: m(torch.randn(2, 4), (
        torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6))),
    "input_and_hx_double": lambda m: m(torch.randn(2, 4, dtype=torch.float64), (
        torch.randn(2, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64))),
}


@pytest.mark.parametrize("case", list(CELL_BACKEND_CASES), ids=list(CELL_BACKEND_CASES))
def test_cell_backend_errors_same_type(case):
    mistake = CELL_BACKEND_CASES[case]
    messages = []
    for bias in (True, False):
        ref, ours = make_cell_pair(4, 6, bias=bias)
        ref_err, _ = outcome(lambda: mistake(ref))
        our_err, _ = outcome(lambda: mistake(ours))
        assert ref_err is not None and our_err is not None, (ref_err, our_err)
        assert type(our_err) is type(ref_err), (our_err, ref_err)
        assert "dtype" in str(our_err) or "scalar type" in str(our_err), our_err
        messages.append(str(ref_err))
    # torch's own message changes with bias: there is no one message to match.
    assert messages[0] != messages[1], messages


@pytest.mark.parametrize("c_dtype", [torch.float64, torch.float16, torch.bfloat16,
                                     torch.int64, torch.complex64],
                         ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_cell_c_of_another_dtype_is_promoted_like_torch(c_dtype, batched):
    """nn.LSTMCell takes a c of any dtype beside float32 input, weights and h
    and promotes in f * c + i * g: float64 (or complex) results for a
    float64 (complex) c, float32 for a lower-precision or integer one. Same
    dtypes, values and gradients (of the input, h, c and every parameter)."""
    ref, ours = make_cell_pair(4, 6)
    lead = (2,) if batched else ()
    torch.manual_seed(1)
    x = torch.randn(*lead, 4, requires_grad=True)
    h = torch.randn(*lead, 6, requires_grad=True)
    c = (torch.randn(*lead, 6) * 3).to(c_dtype)
    if c_dtype.is_floating_point or c_dtype.is_complex:
        c.requires_grad_()
    leaves = [x, h] + ([c] if c.requires_grad else [])
    results = []
    for module in (ref, ours):
        h_next, c_next = module(x, (h, c))
        loss = (h_next.abs() ** 2).sum() + (c_next.abs() ** 2).sum()
        grads = torch.autograd.grad(loss, leaves + list(module.parameters()))
        results.append((h_next, c_next, *grads))
    _compare_results(results[0], results[1])
