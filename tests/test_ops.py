"""The fusedlstm operators themselves: opcheck, gradcheck, gradgradcheck.

``torch.ops.fusedlstm.lstm_layer_forward`` / ``lstm_layer_backward`` are
checked with ``torch.library.opcheck`` (schema, autograd registration, fake
kernel, AOT dispatch) on several samples, and differentiated to first,
second and third order in float64 against finite differences, through the op
and through the module, and to fourth order against nn.LSTM.
"""
from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import fusedlstm
from fusedlstm import ops, reference
from helpers import make_cell_pair, make_lstm_pair

FWD = torch.ops.fusedlstm.lstm_layer_forward
BWD = torch.ops.fusedlstm.lstm_layer_backward

# (name, T, B, I, H, P, bias, packed lengths or None, reverse)
SAMPLES = [
    ("padded", 4, 3, 5, 6, 0, True, None, False),
    ("padded_reverse", 4, 3, 5, 6, 0, True, None, True),
    ("packed", 5, 4, 3, 4, 0, True, [5, 4, 2, 1], False),
    ("packed_reverse", 5, 4, 3, 4, 0, True, [5, 3, 3, 1], True),
    ("proj", 3, 2, 4, 6, 2, True, None, False),
    ("proj_packed_reverse", 4, 3, 4, 5, 3, True, [4, 2, 1], True),
    ("no_bias", 3, 2, 4, 5, 0, False, None, False),
    ("no_bias_proj_packed", 4, 3, 2, 4, 2, False, [4, 4, 2], False),
    ("single_step", 1, 1, 2, 3, 0, True, None, False),
    ("hidden_1", 3, 2, 2, 1, 0, True, None, True),
]
IDS = [s[0] for s in SAMPLES]


def make_args(sample, dtype=torch.float64, requires_grad=True, seed=0):
    """Positional arguments of lstm_layer_forward for a sample."""
    _, T, B, I, H, P, bias, lengths, reverse = sample
    gen = torch.Generator().manual_seed(seed)
    S = P or H

    def rand(*shape, scale=0.5):
        t = (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale
        return t.to(dtype).requires_grad_(requires_grad)

    if lengths is None:
        x, batch_sizes = rand(T, B, I, scale=1.0), None
    else:
        assert max(lengths) == T and len(lengths) == B
        batch_sizes = torch.tensor([sum(l > t for l in lengths) for t in range(T)])
        x = rand(int(batch_sizes.sum()), I, scale=1.0)
    return [
        x, rand(B, S), rand(B, H), rand(4 * H, I), rand(4 * H, S),
        rand(4 * H) if bias else None, rand(4 * H) if bias else None,
        rand(S, H) if P else None, batch_sizes, reverse,
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward(sample, requires_grad):
    torch.library.opcheck(FWD, make_args(sample, torch.float32, requires_grad))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_backward(sample, requires_grad):
    """opcheck of the backward op; with grad-requiring inputs it also
    exercises the op's own (double backward) autograd formula."""
    args = make_args(sample, torch.float32, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(t.shape, generator=gen) for t in (output, h_n, c_n)]
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    bwd_args = [
        *grads, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output, gates, cells,
        batch_sizes, reverse,
    ]
    if requires_grad:
        # The cotangents and primals (the first 11 arguments) are what the
        # double backward differentiates with respect to.
        bwd_args = [
            t.clone().requires_grad_()
            if i < 11 and isinstance(t, torch.Tensor) and t.is_floating_point() else t
            for i, t in enumerate(bwd_args)
        ]
    torch.library.opcheck(BWD, bwd_args)


# Incoming gradients unlike forward's results: (which, how to make it from
# the right one, what the error names). The kernels read them as [N, P],
# [B, P] and [B, H] buffers: before they were checked, a wider or taller
# grad_h_n was read and written out of bounds (heap corruption).
MISMATCHED_GRADIENTS = [
    ("grad_h_n", lambda g: torch.randn(g.shape[0], g.shape[1] + 2), "expected grad_h_n of shape"),
    ("grad_h_n", lambda g: torch.randn(g.shape[0] - 1, g.shape[1]), "expected grad_h_n of shape"),
    ("grad_h_n", lambda g: torch.randn(2 * g.shape[0], g.shape[1]), "expected grad_h_n of shape"),
    ("grad_c_n", lambda g: g.unsqueeze(0), "expected grad_c_n of shape"),
    ("grad_output", lambda g: g.transpose(0, 1).contiguous(), "expected grad_output of shape"),
    ("grad_output", lambda g: torch.randn(*g.shape[:-1], g.shape[-1] + 1), "expected grad_output of shape"),
    ("grad_output", lambda g: g.double(), "grad_output has dtype Double but output has Float"),
    ("grad_c_n", lambda g: g.to("meta"), "grad_c_n is on meta but input is on cpu"),
]


@pytest.mark.parametrize("which,make,message", MISMATCHED_GRADIENTS,
                         ids=[f"{w}-{i}" for i, (w, _, _) in enumerate(MISMATCHED_GRADIENTS)])
@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[4]], ids=[SAMPLES[0][0], SAMPLES[4][0]])
def test_backward_op_rejects_gradients_unlike_forward_results(sample, which, make, message):
    args = make_args(sample, torch.float32, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    grads = dict(grad_output=torch.randn_like(output), grad_h_n=torch.randn_like(h_n),
                 grad_c_n=torch.randn_like(c_n))
    BWD(*grads.values(), *args[:8], output, gates, cells, *args[8:])  # the right ones pass
    grads[which] = make(grads[which])
    with pytest.raises(RuntimeError, match=message):
        BWD(*grads.values(), *args[:8], output, gates, cells, *args[8:])


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_forward_matches_reference(sample):
    """The fused forward equals the composite reference (float64)."""
    args = make_args(sample, requires_grad=False)
    output, h_n, c_n, _, _ = FWD(*args)
    ref = reference.lstm_layer(*args)
    torch.testing.assert_close((output, h_n, c_n), ref)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_backward_op_matches_autograd_of_reference(sample):
    """lstm_layer_backward equals autograd through the composite reference."""
    args = make_args(sample)
    differentiable = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    ref_out = reference.lstm_layer(*args)
    gen = torch.Generator().manual_seed(9)
    cot = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in ref_out]
    expected = torch.autograd.grad(ref_out, differentiable, cot)
    out = ops.lstm_layer(*args)
    actual = torch.autograd.grad(out, differentiable, cot)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_gradcheck_op(sample):
    args = make_args(sample)
    n = len(args)

    def fn(*tensors):
        return ops.lstm_layer(*tensors[:n])

    assert gradcheck(fn, tuple(args))


# Smaller samples for second order (gradgradcheck's cost grows with the
# square of the number of inputs).
GG_SAMPLES = [
    ("padded", 3, 2, 2, 3, 0, True, None, False),
    ("packed_reverse", 3, 3, 2, 2, 0, True, [3, 2, 1], True),
    ("proj_packed", 3, 2, 2, 3, 2, True, [3, 1], False),
    ("no_bias_proj_reverse", 2, 2, 2, 3, 1, False, None, True),
    ("hidden_1", 3, 2, 2, 1, 0, True, None, False),
]


@pytest.mark.parametrize("sample", GG_SAMPLES, ids=[s[0] for s in GG_SAMPLES])
def test_gradgradcheck_op(sample):
    args = make_args(sample)
    assert gradgradcheck(lambda *t: ops.lstm_layer(*t), tuple(args))


@pytest.mark.parametrize("sample", GG_SAMPLES[:3], ids=[s[0] for s in GG_SAMPLES[:3]])
def test_third_order_gradgradcheck_op(sample):
    """Third order: gradgradcheck of the first-order gradient (built with
    create_graph=True) checks its second derivatives against finite
    differences, i.e. the layer's third derivatives."""
    args = make_args(sample)
    positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    tensors = [args[i] for i in positions]
    weights = torch.Generator().manual_seed(1)

    def first_order(*present):
        full = list(args)
        for i, t in zip(positions, present):
            full[i] = t
        out, h_n, c_n = ops.lstm_layer(*full)
        probe = torch.rand(out.shape, generator=weights.manual_seed(1), dtype=out.dtype)
        loss = (out * probe).sum() + h_n.sin().sum() + c_n.pow(2).sum()
        return torch.autograd.grad(loss, present, create_graph=True)

    assert gradgradcheck(first_order, tuple(tensors))


MODULE_CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=2, batch_first=True),
    dict(num_layers=1, bias=False, bidirectional=True, proj_size=3),
]


def _module_fn(module, packed_lengths=None):
    names = [n for n, _ in module.named_parameters()]

    def fn(x, h0, c0, *params):
        inp = x
        if packed_lengths is not None:
            inp = torch.nn.utils.rnn.pack_padded_sequence(
                x, packed_lengths, batch_first=module.batch_first, enforce_sorted=False)
        out, (h, c) = torch.func.functional_call(
            module, dict(zip(names, params)), (inp, (h0, c0)))
        if packed_lengths is not None:
            out = out.data
        return out, h, c

    return fn, [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]


def _module_inputs(module, T=3, B=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    D = 2 if module.bidirectional else 1
    S = module.proj_size or module.hidden_size
    shape = (B, T, module.input_size) if module.batch_first else (T, B, module.input_size)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    h0 = torch.randn(module.num_layers * D, B, S, generator=gen, dtype=torch.float64)
    c0 = torch.randn(module.num_layers * D, B, module.hidden_size, generator=gen, dtype=torch.float64)
    return [t.requires_grad_() for t in (x, h0, c0)]


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=str)
@pytest.mark.parametrize("packed", [False, True])
def test_gradcheck_module(config, packed):
    _, ours = make_lstm_pair(3, 4, dtype=torch.float64, **config)
    fn, params = _module_fn(ours, [2, 3] if packed else None)
    inputs = _module_inputs(ours)
    assert gradcheck(fn, (*inputs, *params))


@pytest.mark.parametrize("config", MODULE_CONFIGS[1:3], ids=str)
def test_gradgradcheck_module(config):
    _, ours = make_lstm_pair(2, 3, dtype=torch.float64, **config)
    fn, params = _module_fn(ours)
    inputs = _module_inputs(ours, T=2)
    assert gradgradcheck(fn, (*inputs, *params))


def test_gradgradcheck_module_packed():
    _, ours = make_lstm_pair(2, 3, dtype=torch.float64, bidirectional=True, proj_size=2)
    fn, params = _module_fn(ours, [3, 1])
    assert gradgradcheck(fn, (*_module_inputs(ours), *params))


def test_gradcheck_and_gradgradcheck_cell():
    _, ours = make_cell_pair(3, 4, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    x, h, c = (torch.randn(2, n, generator=gen, dtype=torch.float64).requires_grad_()
               for n in (3, 4, 4))
    names = [n for n, _ in ours.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ours.parameters()]

    def fn(x, h, c, *ps):
        return torch.func.functional_call(ours, dict(zip(names, ps)), (x, (h, c)))

    assert gradcheck(fn, (x, h, c, *params))
    assert gradgradcheck(fn, (x, h, c, *params))


def test_double_backward_matches_nn_lstm():
    """A gradient penalty (double backward) equals nn.LSTM's on the CPU."""
    ref, ours = make_lstm_pair(3, 5, dtype=torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    results = []
    for m in (ref, ours):
        m.zero_grad()
        xi = x.clone().requires_grad_()
        out, (h, c) = m(xi)
        (g,) = torch.autograd.grad(out.sin().sum() + h.sum(), xi, create_graph=True)
        g.pow(2).sum().backward()
        results.append([xi.grad] + [p.grad for p in m.parameters()])
    torch.testing.assert_close(results[1], results[0])


def _derivatives(module, x, orders):
    """d/dx of a scalar of the previous derivative, `orders` times, each
    with create_graph=True; returns every derivative."""
    out, (h, c) = module(x)
    value = out.sin().sum() + h.sin().sum() + c.pow(2).sum()
    found = []
    for _ in range(orders):
        (value,) = torch.autograd.grad(value, x, create_graph=True)
        found.append(value)
        value = value.pow(2).sum()
    return found


@pytest.mark.parametrize("config", MODULE_CONFIGS, ids=str)
def test_third_and_fourth_order_match_nn_lstm(config):
    """Derivatives of every order are nn.LSTM's (which is differentiable to
    any order on the CPU): the second order runs on the composite rule with
    create_graph, and that rule is differentiable again."""
    ref, ours = make_lstm_pair(2, 4, dtype=torch.float64, **config)
    gen = torch.Generator().manual_seed(0)
    shape = (2, 3, 2) if config.get("batch_first") else (3, 2, 2)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    expected = _derivatives(ref, x.clone().requires_grad_(), 4)
    found = _derivatives(ours, x.clone().requires_grad_(), 4)
    for order, (a, b) in enumerate(zip(found, expected), start=1):
        assert b.abs().sum() > 0, order
        torch.testing.assert_close(a, b, msg=lambda m, o=order: f"order {o}: {m}")


def test_saved_state_is_gates_and_cells_not_a_graph():
    """Backward needs only the saved gates and cells: the forward leaves no
    per-step autograd graph (one node for the layer, whatever T is)."""
    args = make_args(SAMPLES[0])
    out = ops.lstm_layer(*args)[0]
    node = out.grad_fn
    assert node is not None
    children = [f for f, _ in node.next_functions if f is not None]
    # Only AccumulateGrad leaves: no recurrence unrolled into the graph.
    assert all(type(f).__name__ == "AccumulateGrad" for f in children), children
    _, _, _, gates, cells = FWD(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    T, B, H = 4, 3, 6
    assert gates.shape == (T, B, 4 * H) and cells.shape == (T, B, H)


def test_module_exposes_ops():
    assert fusedlstm.ops.lstm_layer is ops.lstm_layer
