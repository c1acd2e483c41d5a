"""Both directions of a bidirectional layer in one call, for training:
``torch.ops.fusedlstm.lstm_bidirectional_forward`` and
``lstm_bidirectional_backward`` (csrc/cpu/bidirectional.h), and the autograd
node that joins them (csrc/autograd_bidirectional.cpp).

Where a gradient can flow, ``fusedlstm.functional.lstm`` runs each
bidirectional CPU layer through the forward operator; the node's backward
runs the backward operator. On the CPU with two intra-op threads each runs
its two directions at once, one thread each (``FUSEDLSTM_CPU_DIRECTIONS``).
Its results must be those of the one-direction operators, bit for bit: in
turn, at the same thread count; at once, at one thread (as in
test_bidirectional.py, PyTorch's GEMMs choose their kernels by the thread
count). Gradients must be those of ``nn.LSTM``, to every order.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm
from helpers import assert_bitwise, make_lstm_pair, parity_check, run_lstm
from test_bidirectional import VARIABLE, pair_args
from test_inference_op import _OpLog
from test_ops import IDS, SAMPLES

FWD2 = torch.ops.fusedlstm.lstm_bidirectional_forward
BWD2 = torch.ops.fusedlstm.lstm_bidirectional_backward
FWD = torch.ops.fusedlstm.lstm_layer_forward
BWD = torch.ops.fusedlstm.lstm_layer_backward
FORWARD_NAMES = ["output", "h_n", "c_n", "gates", "cells"] * 2
GRADIENT_NAMES = ["grad_input", "grad_h0", "grad_c0", "grad_w_ih", "grad_w_hh",
                  "grad_bias", "grad_w_hr"] * 2


def at_threads(threads, fn):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


def forward_in_two_calls(args, threads):
    input, batch_sizes = args[0], args[15]
    return at_threads(threads, lambda: (*FWD(input, *args[1:8], batch_sizes, False),
                                        *FWD(input, *args[8:15], batch_sizes, True)))


def backward_args(args, masks=None, seed=2):
    """lstm_bidirectional_backward's arguments for the forward arguments
    ``args`` (pair_args): seeded incoming gradients, and each direction's
    forward results from the one-direction operator."""
    input, batch_sizes = args[0], args[15]
    with torch.no_grad():
        f = FWD(input, *args[1:8], batch_sizes, False)
        r = FWD(input, *args[8:15], batch_sizes, True)
    gen = torch.Generator().manual_seed(seed)

    def incoming(results):
        return [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)
                for t in results[:3]]

    out = [*incoming(f), *incoming(r), input, *args[1:8], f[0], f[3], f[4],
           *args[8:15], r[0], r[3], r[4], batch_sizes]
    if masks is not None:
        out += [list(masks[0]), list(masks[1])]
    return out


def backward_in_two_calls(bargs, threads, masks=((True,) * 7, (True,) * 7)):
    g, g_r, input = bargs[0:3], bargs[3:6], bargs[6]
    forward, reverse, batch_sizes = bargs[7:17], bargs[17:27], bargs[27]
    return at_threads(threads, lambda: (
        *BWD(*g, input, *forward, batch_sizes, False, list(masks[0])),
        *BWD(*g_r, input, *reverse, batch_sizes, True, list(masks[1]))))


# ------------------------------------------------------------------ operators


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward(sample, requires_grad):
    # With requires_grad, opcheck also runs the Autograd kernel's backward
    # (the node) under AOT dispatch against eager.
    torch.library.opcheck(FWD2, pair_args(sample, torch.float32, requires_grad=requires_grad))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_backward(sample, dtype):
    torch.library.opcheck(BWD2, backward_args(pair_args(sample, dtype)))


@pytest.mark.parametrize("mode", ["auto", "sequential", "concurrent"])
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_forward_same_bits_as_two_calls(monkeypatch, two_threads, sample, dtype, mode):
    monkeypatch.setenv(VARIABLE, mode)
    args = pair_args(sample, dtype)
    expected = forward_in_two_calls(args, threads=2 if mode == "sequential" else 1)
    assert_bitwise(FWD2(*args), expected, "forward result")


@pytest.mark.parametrize("mode", ["auto", "sequential", "concurrent"])
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_backward_same_bits_as_two_calls(monkeypatch, two_threads, sample, dtype, mode):
    monkeypatch.setenv(VARIABLE, mode)
    bargs = backward_args(pair_args(sample, dtype))
    expected = backward_in_two_calls(bargs, threads=2 if mode == "sequential" else 1)
    assert_bitwise(BWD2(*bargs), expected, "gradient")


@settings(max_examples=25, deadline=None)
@given(sample=st.sampled_from(SAMPLES),
       masks=st.tuples(*[st.tuples(*[st.booleans()] * 7)] * 2))
def test_backward_masks_leave_out_each_direction_s_own(sample, masks):
    # Each direction's mask reaches its own backward: a gradient left out is
    # empty, one asked for has the bits of the one-direction call (at two
    # threads, the directions at once: each computes as at one thread).
    bargs = backward_args(pair_args(sample, torch.float32), masks)
    got = at_threads(2, lambda: BWD2(*bargs))
    expected = backward_in_two_calls(bargs[:28], threads=1, masks=masks)
    for g, e, wanted, name in zip(got, expected, (*masks[0], *masks[1]), GRADIENT_NAMES):
        if wanted:
            assert_bitwise([g], [e], name)
        else:
            assert g.numel() == 0, name


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
def test_bad_reverse_arguments_raise_naming_the_direction(monkeypatch, two_threads, mode):
    monkeypatch.setenv(VARIABLE, mode)
    args = pair_args(SAMPLES[0], torch.float32)  # T=4, B=3, I=5, H=6
    bad = list(args)
    bad[11] = bad[11][:, :-1]  # w_hh_reverse [4H, H - 1]
    with pytest.raises(RuntimeError, match=r"^fusedlstm::lstm_bidirectional_forward, reverse "
                                           r"direction: expected w_hh of shape \[24, 6\], "
                                           r"got \[24, 5\]"):
        FWD2(*bad)
    bargs = backward_args(args)
    bargs[25] = bargs[25][..., :-1]  # gates_reverse [T, B, 4H - 1]
    with pytest.raises(RuntimeError, match=r"^fusedlstm::lstm_bidirectional_backward, reverse "
                                           r"direction: "):
        BWD2(*bargs)
    bargs = backward_args(args)
    bargs[3] = bargs[3][:-1]  # grad_output_reverse one step short
    with pytest.raises(RuntimeError, match=r"^fusedlstm::lstm_bidirectional_backward, reverse "
                                           r"direction: "):
        BWD2(*bargs)


def test_backward_through_the_backward_operator_raises():
    # Its Autograd kernel is PyTorch's not-implemented fallback: the node
    # runs it only with grad mode off (create_graph runs lstm_layer_backward).
    bargs = backward_args(pair_args(SAMPLES[0], torch.float32, requires_grad=True))
    grad_input = BWD2(*bargs)[0]
    with pytest.raises(RuntimeError, match="lstm_bidirectional_backward"):
        grad_input.sum().backward()


def test_meta_tensors_give_shapes_and_dtypes():
    args = pair_args(SAMPLES[5], torch.float32)  # projection, packed, reverse
    bargs = backward_args(args, masks=((True,) * 7, (False, True) * 3 + (True,)))

    def to_meta(values, batch_sizes_at):
        return [v.to("meta") if isinstance(v, torch.Tensor) and i != batch_sizes_at else v
                for i, v in enumerate(values)]

    for op, values, at in ((FWD2, args, 15), (BWD2, bargs, 27)):
        for m, r in zip(op(*to_meta(values, at)), op(*values)):
            assert m.device.type == "meta" and m.shape == r.shape and m.dtype == r.dtype


def test_kernels_for_other_backends_run_the_directions_in_turn(monkeypatch):
    """The CompositeExplicitAutograd kernels (csrc/bidirectional_in_turn.cpp),
    which CUDA runs, called on CPU tensors: two one-direction calls. They
    never read FUSEDLSTM_CPU_DIRECTIONS, whose bad value makes the CPU kernels
    raise: so it is those kernels that ran."""
    args = pair_args(SAMPLES[5], torch.float32)
    bargs = backward_args(args)
    monkeypatch.setenv(VARIABLE, "bogus")
    for op, values in ((FWD2, args), (BWD2, bargs)):
        with pytest.raises(RuntimeError, match="FUSEDLSTM_CPU_DIRECTIONS must be"):
            op(*values)
    key = torch._C.DispatchKey.CompositeExplicitAutograd
    got_forward = FWD2.default._op_dk(key, *args)
    got_backward = BWD2.default._op_dk(key, *bargs)
    monkeypatch.delenv(VARIABLE)
    threads = torch.get_num_threads()
    assert_bitwise(got_forward, forward_in_two_calls(args, threads), "forward result")
    assert_bitwise(got_backward, backward_in_two_calls(bargs, threads), "gradient")


# --------------------------------------------------------------------- module


def _gradients(module, x, create_graph=False):
    out, (h, c) = module(x)
    data = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
    loss = data.square().sum() + h.sum() + c.square().sum()
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, params, create_graph=create_graph)


@settings(max_examples=30, deadline=None)
@given(
    steps=st.integers(1, 6),
    batch=st.integers(1, 5),
    input_size=st.integers(1, 9),
    hidden=st.integers(1, 20),
    proj=st.booleans(),
    bias=st.booleans(),
    layers=st.integers(1, 2),
    packed=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_module_gradients_at_once_same_bits_as_one_thread_and_close_to_nn(
        steps, batch, input_size, hidden, proj, bias, layers, packed, dtype, seed):
    proj_size = max(1, hidden // 2) if proj and hidden > 1 else 0
    ref, ours = make_lstm_pair(input_size, hidden, dtype=dtype, seed=seed, num_layers=layers,
                               bidirectional=True, bias=bias, proj_size=proj_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, input_size, generator=gen).to(dtype)
    if packed:
        lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
        x = pack_padded_sequence(x, lengths, enforce_sorted=False)
    results = {}
    for mode, threads in (("concurrent", 2), ("sequential", 1)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(VARIABLE, mode)
            results[mode] = at_threads(threads, lambda: _gradients(ours, x))
    assert_bitwise(results["concurrent"], results["sequential"], "gradient")
    tol = dict(atol=5e-2, rtol=5e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(results["concurrent"], _gradients(ref, x), **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2),
    dict(proj_size=3, bias=False),
    dict(num_layers=3, batch_first=True, proj_size=2),
    dict(num_layers=2, dropout=0.4),
], ids=["2layer", "proj_nobias", "3layer_batch_first_proj", "2layer_dropout"])
def test_training_module_matches_nn_lstm_at_two_threads(two_threads, dtype, kwargs):
    # Outputs, states and every gradient (input, h0, c0 and the weights), in
    # train mode: dropout draws nn.LSTM's masks.
    ref, ours = make_lstm_pair(5, 7, dtype=dtype, bidirectional=True, **kwargs)
    x = torch.randn(6, 4, 5, dtype=dtype)  # T = 6, B = 4
    if kwargs.get("batch_first"):
        x = x.transpose(0, 1).contiguous()
    layers = kwargs.get("num_layers", 1)
    hx = (torch.randn(2 * layers, 4, kwargs.get("proj_size", 0) or 7, dtype=dtype),
          torch.randn(2 * layers, 4, 7, dtype=dtype))
    parity_check(ref, ours, x, hx)
    parity_check(ref, ours, x, hx, lengths=[6, 5, 3, 1])


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
@pytest.mark.parametrize("kwargs", [dict(), dict(proj_size=2, bias=False)], ids=["plain", "proj"])
def test_gradcheck_and_gradgradcheck(monkeypatch, two_threads, mode, kwargs):
    monkeypatch.setenv(VARIABLE, mode)
    model = fusedlstm.LSTM(3, 4, num_layers=2, bidirectional=True, **kwargs).double()
    names = [n for n, _ in model.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, kwargs.get("proj_size", 0) or 4, dtype=torch.float64,
                     requires_grad=True)
    c0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    params = [p.detach().requires_grad_() for p in model.parameters()]

    def fn(x, h0, c0, *weights):
        out, (h, c) = torch.func.functional_call(model, dict(zip(names, weights)), (x, (h0, c0)))
        return out, h, c

    inputs = (x, h0, c0, *params)
    assert torch.autograd.gradcheck(fn, inputs)
    # Second order in fast mode (a random projection of the Jacobian of the
    # gradient, not all of it): the full check over 15-19 inputs took 15-30 s
    # a case, and the second order runs each direction's lstm_layer_backward,
    # whose own full gradgradcheck is in test_ops.py.
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_which_operators_run(two_threads):
    model = fusedlstm.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)
    prefix = "fusedlstm.lstm_"

    def called(create_graph=False):
        with _OpLog() as log:
            _gradients(model, x, create_graph=create_graph)
        return [n for n in log.names if n.startswith(prefix)]

    forward, backward = f"{prefix}bidirectional_forward.default", f"{prefix}bidirectional_backward.default"
    # One call per layer each way.
    assert called() == [forward, forward, backward, backward]
    # create_graph: each direction's backward through its differentiable
    # operator.
    assert called(create_graph=True) == [forward, forward] + [f"{prefix}layer_backward.default"] * 4


def test_one_node_per_layer_named_after_it():
    model = fusedlstm.LSTM(3, 4, bidirectional=True)
    out, _ = model(torch.randn(5, 2, 3))
    node = out.grad_fn.next_functions[0][0]  # cat's inputs: the layer's two outputs
    assert node.name() == "torch::autograd::CppNode<fusedlstm::nodes::LstmBidirectionalLayer>"
    assert [n for n, _ in out.grad_fn.next_functions] == [node, node]


@pytest.mark.parametrize("frozen", ["reverse", "forward", "input_only"])
def test_frozen_weights_get_no_gradient_and_the_rest_match(two_threads, frozen):
    # The node asks each direction for the gradients its edges need
    # (BackwardMask): a frozen direction's weights get none, and the others
    # are nn.LSTM's.
    ref, ours = make_lstm_pair(4, 5, bidirectional=True, num_layers=2)
    for model in (ref, ours):
        for name, p in model.named_parameters():
            if frozen == "input_only" or name.endswith("_reverse") == (frozen == "reverse"):
                p.requires_grad_(False)
    x = torch.randn(6, 3, 4, requires_grad=frozen == "input_only")
    got, expected = run_lstm(ours, x), run_lstm(ref, x)
    assert got.keys() == expected.keys()
    for key in expected:
        if expected[key] is None:
            assert got[key] is None, key
        else:
            torch.testing.assert_close(got[key], expected[key], msg=key)


def test_retain_graph_backward_twice_accumulates(two_threads):
    ref, ours = make_lstm_pair(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    for model in (ref, ours):
        out, (h, c) = model(x)
        loss = out.sum() + c.sum()
        loss.backward(retain_graph=True)
        loss.backward()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_compiled_training_matches_eager(two_threads):
    model = fusedlstm.LSTM(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 4, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")

    def step(m):
        out, (h, c) = m(x)
        return (out, h, c, *torch.autograd.grad(out.square().sum() + c.sum(),
                                                [x, *model.parameters()]))

    assert_bitwise(step(compiled), step(model), "result")
