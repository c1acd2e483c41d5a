"""Both directions of a bidirectional layer in one call, for inference:
``torch.ops.fusedlstm.lstm_bidirectional_inference`` (csrc/cpu/bidirectional.h).

Where no gradient can flow, ``fusedlstm.functional.lstm`` runs each
bidirectional layer through it; on the CPU with two intra-op threads its two
directions run at once, one thread each (``FUSEDLSTM_CPU_DIRECTIONS``). The
results must be those of two ``lstm_layer_inference`` calls, bit for bit: in
turn, those of the two calls at the same thread count; at once, those of the
two calls at one thread, which is how each direction then runs. (PyTorch's
GEMMs, nn.LSTM's included, choose their kernels by the thread count, so a
small product's last bit can differ between one thread and two.)
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm
from helpers import assert_bitwise, make_lstm_pair, parity_check
from test_inference_op import _OpLog
from test_ops import IDS, SAMPLES, make_args

BI = torch.ops.fusedlstm.lstm_bidirectional_inference
INF = torch.ops.fusedlstm.lstm_layer_inference
VARIABLE = "FUSEDLSTM_CPU_DIRECTIONS"


def pair_args(sample, dtype, requires_grad=False):
    """lstm_bidirectional_inference's arguments for a sample of test_ops: its
    forward direction, and a reverse one with weights of another seed."""
    forward = make_args(sample, dtype, requires_grad=requires_grad, seed=0)
    reverse = make_args(sample, dtype, requires_grad=requires_grad, seed=1)
    return [forward[0], *forward[1:8], *reverse[1:8], forward[8]]


def in_two_calls(args, threads):
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        input, batch_sizes = args[0], args[15]
        forward = INF(input, *args[1:8], batch_sizes, False)
        reverse = INF(input, *args[8:15], batch_sizes, True)
    finally:
        torch.set_num_threads(old)
    return (*forward, *reverse)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(sample, dtype):
    torch.library.opcheck(BI, pair_args(sample, dtype))


@pytest.mark.parametrize("mode", ["auto", "sequential", "concurrent"])
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_same_bits_as_two_calls(monkeypatch, two_threads, sample, dtype, mode):
    monkeypatch.setenv(VARIABLE, mode)
    args = pair_args(sample, dtype)
    expected = in_two_calls(args, threads=2 if mode == "sequential" else 1)
    for got, want, name in zip(BI(*args), expected, ["output", "h_n", "c_n"] * 2):
        assert_bitwise(got, want, name)


def test_runs_at_once_with_two_threads_only(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    old = torch.get_num_threads()
    try:
        for threads, expected in ((1, False), (2, True), (3, False)):
            torch.set_num_threads(threads)
            assert torch.ops.fusedlstm.cpu_directions_concurrent() is expected, threads
            monkeypatch.setenv(VARIABLE, "")
            assert torch.ops.fusedlstm.cpu_directions_concurrent() is expected, threads
            monkeypatch.delenv(VARIABLE)
        for value, expected in (("sequential", False), ("concurrent", True), ("auto", False)):
            monkeypatch.setenv(VARIABLE, value)
            assert torch.ops.fusedlstm.cpu_directions_concurrent() is expected, value
    finally:
        torch.set_num_threads(old)


def test_unknown_value_raises(monkeypatch):
    monkeypatch.setenv(VARIABLE, "parallel")
    ref, ours = make_lstm_pair(3, 4, bidirectional=True)
    with pytest.raises(RuntimeError, match=r"FUSEDLSTM_CPU_DIRECTIONS must be 'auto', "
                                           r"'sequential' or 'concurrent', got 'parallel'"):
        with torch.no_grad():
            ours(torch.randn(5, 2, 3))


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 6),
    batch=st.integers(1, 5),
    input_size=st.integers(1, 9),
    hidden=st.integers(1, 20),
    proj=st.booleans(),
    bias=st.booleans(),
    layers=st.integers(1, 2),
    packed=st.booleans(),
    batch_first=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_module_at_once_same_bits_as_one_thread_and_close_to_nn(
        steps, batch, input_size, hidden, proj, bias, layers, packed, batch_first, dtype, seed):
    # At once on two threads, each direction computes as on one thread.
    proj_size = max(1, hidden // 2) if proj and hidden > 1 else 0
    ref, ours = make_lstm_pair(input_size, hidden, dtype=dtype, seed=seed, num_layers=layers,
                               bidirectional=True, bias=bias, proj_size=proj_size,
                               batch_first=batch_first)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, batch, input_size, generator=gen).to(dtype)
    if batch_first:
        x = x.transpose(0, 1).contiguous()
    if packed:
        lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
        x = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    results = {}
    old = torch.get_num_threads()
    try:
        for mode, threads in (("concurrent", 2), ("sequential", 1)):
            torch.set_num_threads(threads)
            with pytest.MonkeyPatch.context() as mp, torch.no_grad():
                mp.setenv(VARIABLE, mode)
                out, (h, c) = ours(x)
            results[mode] = (out.data if packed else out, h, c)
    finally:
        torch.set_num_threads(old)
    for got, want, name in zip(results["concurrent"], results["sequential"],
                               ("output", "h_n", "c_n")):
        assert_bitwise(got, want, name)
    with torch.no_grad():
        out, (h, c) = ref(x)
    tol = dict(atol=2e-2, rtol=2e-2) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(results["concurrent"][0], out.data if packed else out, **tol)
    torch.testing.assert_close(results["concurrent"][1], h, **tol)
    torch.testing.assert_close(results["concurrent"][2], c, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2),
    dict(proj_size=3, bias=False),
    dict(num_layers=3, batch_first=True, proj_size=2),
], ids=["2layer", "proj_nobias", "3layer_batch_first_proj"])
def test_no_grad_module_matches_nn_lstm_at_two_threads(two_threads, dtype, kwargs):
    ref, ours = make_lstm_pair(5, 7, dtype=dtype, bidirectional=True, **kwargs)
    x = torch.randn(6, 4, 5, dtype=dtype)
    parity_check(ref, ours, x, backward=False, forward_context=torch.no_grad)


def test_which_operator_runs():
    model = fusedlstm.LSTM(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 2, 3)

    def called(grad_mode, x=x):
        with torch.set_grad_enabled(grad_mode), _OpLog() as log:
            model(x)
        return [n for n in log.names if n.startswith("fusedlstm.")]

    pair = "fusedlstm.lstm_bidirectional_inference.default"
    training = "fusedlstm.lstm_bidirectional_forward.default"  # test_bidirectional_training.py
    assert called(False) == [pair, pair]  # one call per layer
    assert called(True) == [training, training]
    model.requires_grad_(False)
    assert called(True) == [pair, pair]
    assert called(True, x.clone().requires_grad_()) == [training, training]


def test_inference_mode_returns_inference_tensors_like_nn(two_threads):
    ref, ours = make_lstm_pair(3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    with torch.inference_mode():
        expected = ref(x)
        got = ours(x)
    for g, e in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(expected)):
        assert g.is_inference() and e.is_inference()
        torch.testing.assert_close(g, e)


def test_backward_through_the_operator_raises():
    args = pair_args(SAMPLES[0], torch.float32, requires_grad=True)
    output = BI(*args)[0]
    with pytest.raises(RuntimeError, match="lstm_bidirectional_inference"):
        output.sum().backward()


@pytest.mark.parametrize("mode", ["sequential", "concurrent"])
def test_bad_reverse_weights_raise_before_either_direction_runs(monkeypatch, two_threads, mode):
    monkeypatch.setenv(VARIABLE, mode)
    args = pair_args(SAMPLES[0], torch.float32)
    args[11] = args[11][:, :-1]  # w_hh_reverse [4H, H - 1]
    with pytest.raises(RuntimeError, match=r"^fusedlstm::lstm_bidirectional_inference, reverse "
                                           r"direction: expected w_hh of shape \[24, 6\], "
                                           r"got \[24, 5\]"):
        BI(*args)


def test_compiled_no_grad_matches_eager(two_threads):
    model = fusedlstm.LSTM(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 4)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        eager = model(x)
        got = compiled(x)
    torch.testing.assert_close(got, eager, rtol=0, atol=0)


def test_meta_tensors_give_shapes_and_dtypes():
    args = pair_args(SAMPLES[5], torch.float32)  # projection, packed, reverse
    real = BI(*args)
    meta = BI(*[a.to("meta") if isinstance(a, torch.Tensor) and a is not args[15] else a
                for a in args])
    for m, r in zip(meta, real):
        assert m.device.type == "meta" and m.shape == r.shape and m.dtype == r.dtype


def test_exported_frozen_model_holds_the_operator_and_matches(two_threads):
    # Parameters that need no gradient: export records the inference
    # operator, one call per layer, and the program runs at other shapes.
    model = fusedlstm.LSTM(4, 6, num_layers=2, bidirectional=True).requires_grad_(False)
    x = torch.randn(7, 3, 4)
    dims = ({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},)
    program = torch.export.export(model, (x,), dynamic_shapes=dims)
    targets = [str(n.target) for n in program.graph.nodes if "fusedlstm" in str(n.target)]
    assert targets == ["fusedlstm.lstm_bidirectional_inference.default"] * 2
    other = torch.randn(9, 5, 4)
    torch.testing.assert_close(program.module()(other), model(other), rtol=0, atol=0)


def test_kernel_for_other_backends_runs_the_directions_in_turn(monkeypatch):
    """The CompositeExplicitAutograd kernel (csrc/bidirectional_in_turn.cpp), which CUDA runs,
    called here on CPU tensors: two lstm_layer_inference calls. It never reads
    FUSEDLSTM_CPU_DIRECTIONS, whose bad value makes the CPU kernel raise: so
    it is that kernel that ran."""
    args = pair_args(SAMPLES[5], torch.float32)
    monkeypatch.setenv(VARIABLE, "bogus")
    with pytest.raises(RuntimeError, match="FUSEDLSTM_CPU_DIRECTIONS must be"):
        BI(*args)
    got = BI.default._op_dk(torch._C.DispatchKey.CompositeExplicitAutograd, *args)
    monkeypatch.delenv(VARIABLE)
    for g, e, name in zip(got, in_two_calls(args, torch.get_num_threads()),
                          ["output", "h_n", "c_n"] * 2):
        assert_bitwise(g, e, name)
