"""torch.func transforms and forward-mode AD, against nn.LSTM in float64.

Under a transform the layer runs through autograd.Functions with the same
operators (fusedlstm/ops.py); these tests hold it to nn.LSTM's numbers for
grad, jacrev, jvp, hessian, grad of grad and dual tensors, and to a loop of
plain calls for vmap (which nn.LSTM cannot do).
"""
from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, hessian, jacrev, jvp, vmap
from torch.nn.utils.rnn import pack_padded_sequence

from helpers import make_cell_pair, make_lstm_pair

F64 = torch.float64

CONFIGS = [
    pytest.param(dict(), id="plain"),
    pytest.param(dict(num_layers=2, bidirectional=True, batch_first=True), id="2layer-bidir"),
    pytest.param(dict(proj_size=2, bias=False), id="proj-nobias"),
]


def _params(module):
    return {k: v.detach() for k, v in module.named_parameters()}


def _loss(module):
    """A scalar of everything the module returns, as a function of
    (parameters, input, h0, c0)."""

    def loss(params, x, h0, c0):
        out, (h, c) = functional_call(module, params, (x, (h0, c0)))
        return (out ** 2).sum() + h.sum() + (c ** 2).sum()

    return loss


def _inputs(module, steps=4, batch=2):
    torch.manual_seed(7)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    shape = (batch, steps) if module.batch_first else (steps, batch)
    x = torch.randn(*shape, module.input_size, dtype=F64)
    h0 = torch.randn(layers, batch, module.proj_size or module.hidden_size, dtype=F64)
    c0 = torch.randn(layers, batch, module.hidden_size, dtype=F64)
    return x, h0, c0


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_grad_matches_nn_lstm(kwargs):
    ref, ours = make_lstm_pair(3, 4, dtype=F64, **kwargs)
    args = (_params(ref), *_inputs(ref))
    argnums = (0, 1, 2, 3)
    torch.testing.assert_close(grad(_loss(ours), argnums)(*args),
                               grad(_loss(ref), argnums)(*args))


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_jacrev_matches_nn_lstm(kwargs):
    ref, ours = make_lstm_pair(3, 4, dtype=F64, **kwargs)
    params = _params(ref)
    x, h0, c0 = _inputs(ref, steps=3)

    def outputs(module):
        return lambda p, x: functional_call(module, p, (x, (h0, c0)))

    torch.testing.assert_close(jacrev(outputs(ours), (0, 1))(params, x),
                               jacrev(outputs(ref), (0, 1))(params, x))


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_jvp_matches_nn_lstm(kwargs):
    ref, ours = make_lstm_pair(3, 4, dtype=F64, **kwargs)
    primals = (_params(ref), *_inputs(ref))
    torch.manual_seed(3)
    tangents = torch.utils._pytree.tree_map(torch.randn_like, primals)

    def outputs(module):
        return lambda p, x, h0, c0: functional_call(module, p, (x, (h0, c0)))

    torch.testing.assert_close(jvp(outputs(ours), primals, tangents),
                               jvp(outputs(ref), primals, tangents))


def test_dual_tensors_match_nn_lstm():
    ref, ours = make_lstm_pair(3, 4, dtype=F64, num_layers=2)
    x, h0, c0 = _inputs(ref)
    torch.manual_seed(4)
    tx, th, tc = torch.randn_like(x), torch.randn_like(h0), torch.randn_like(c0)

    def run(module):
        with fwAD.dual_level():
            out, (h, c) = module(fwAD.make_dual(x, tx),
                                 (fwAD.make_dual(h0, th), fwAD.make_dual(c0, tc)))
            return [t for r in (out, h, c) for t in fwAD.unpack_dual(r)]

    got, expected = run(ours), run(ref)
    assert all(t is not None for t in got)
    torch.testing.assert_close(got, expected)


def test_hessian_matches_nn_lstm():
    ref, ours = make_lstm_pair(2, 3, dtype=F64, proj_size=2)
    x, h0, c0 = _inputs(ref, steps=2, batch=1)

    def loss(module):
        return lambda x, h0: _loss(module)(_params(ref), x, h0, c0)

    torch.testing.assert_close(hessian(loss(ours), (0, 1))(x, h0),
                               hessian(loss(ref), (0, 1))(x, h0))


def test_grad_of_grad_matches_nn_lstm():
    ref, ours = make_lstm_pair(3, 4, dtype=F64, bidirectional=True)
    params = _params(ref)
    x, h0, c0 = _inputs(ref, steps=3)

    def input_grad_norm(module):
        return lambda p, x: grad(_loss(module), 1)(p, x, h0, c0).pow(2).sum()

    torch.testing.assert_close(grad(input_grad_norm(ours), (0, 1))(params, x),
                               grad(input_grad_norm(ref), (0, 1))(params, x))


def test_grad_with_packed_input_matches_autograd():
    # nn.LSTM fails on packed input under torch.func.grad ("Cannot access
    # data pointer of Tensor that doesn't have storage"), so the reference is
    # plain autograd through nn.LSTM.
    ref, ours = make_lstm_pair(3, 4, dtype=F64, bidirectional=True)
    torch.manual_seed(5)
    packed = pack_padded_sequence(torch.randn(5, 3, 3, dtype=F64), torch.tensor([5, 2, 4]),
                                  enforce_sorted=False)

    def loss(out, h, c):
        return (out.data ** 2).sum() + h.sum() + (c ** 2).sum()

    def ours_loss(params):
        out, (h, c) = functional_call(ours, params, (packed,))
        return loss(out, h, c)

    out, (h, c) = ref(packed)
    names, params = zip(*ref.named_parameters())
    expected = dict(zip(names, torch.autograd.grad(loss(out, h, c), params)))
    torch.testing.assert_close(grad(ours_loss)(_params(ref)), expected)


def test_cell_grad_and_jvp_match_nn_lstmcell():
    ref, ours = make_cell_pair(3, 4, dtype=F64)
    torch.manual_seed(6)
    x, h, c = torch.randn(2, 3, dtype=F64), torch.randn(2, 4, dtype=F64), torch.randn(2, 4, dtype=F64)

    def step(module):
        return lambda p, x, h, c: functional_call(module, p, (x, (h, c)))

    def loss(module):
        return lambda *a: sum((t ** 2).sum() for t in step(module)(*a))

    args = (_params(ref), x, h, c)
    torch.testing.assert_close(grad(loss(ours), (0, 1, 2, 3))(*args),
                               grad(loss(ref), (0, 1, 2, 3))(*args))
    tangents = torch.utils._pytree.tree_map(torch.randn_like, args)
    torch.testing.assert_close(jvp(step(ours), args, tangents),
                               jvp(step(ref), args, tangents))


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_vmap_equals_a_loop_of_calls(kwargs):
    # nn.LSTM has no batching rule; fusedlstm maps its operators over the
    # vmapped dimension one entry at a time, so each entry is a plain call.
    ref, ours = make_lstm_pair(3, 4, dtype=F64, **kwargs)
    torch.manual_seed(8)
    xs = torch.stack([_inputs(ref)[0] + i for i in range(3)])
    h0, c0 = _inputs(ref)[1:]
    mapped = vmap(lambda x: ours(x, (h0, c0)))(xs)
    looped = [ref(x, (h0, c0)) for x in xs]
    torch.testing.assert_close(
        mapped,
        (torch.stack([o for o, _ in looped]),
         (torch.stack([h for _, (h, _) in looped]), torch.stack([c for _, (_, c) in looped]))),
    )
