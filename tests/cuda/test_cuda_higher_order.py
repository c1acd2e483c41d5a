"""Gradients beyond the first order on CUDA, which cuDNN's LSTM cannot give
(`_cudnn_rnn_backward` has no derivative). The first-order gradient comes
from the fused CUDA backward (either recurrence path); differentiating it
again runs the composite reference on the GPU. Checked against torch.nn.LSTM
in float64 on the CPU, which is differentiable to any order. Skipped, with
the reason shown, where CUDA is absent."""
import pytest
import torch
from torch.autograd import gradgradcheck

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402  (registers torch.ops.fusedlstm)
from fusedlstm import ops  # noqa: E402

CONFIG = dict(num_layers=2, bidirectional=True, proj_size=3)


@pytest.fixture(params=["stepwise", "persistent"])
def path(request, monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", request.param)
    return request.param


def _pair(dtype, device):
    torch.manual_seed(0)
    ref = torch.nn.LSTM(4, 6, **CONFIG, dtype=torch.float64)
    ours = fusedlstm.LSTM(4, 6, **CONFIG, device=device, dtype=dtype)
    ours.load_state_dict(ref.state_dict())  # copied into `dtype`
    # The reference takes the weights the GPU layer holds (rounded to dtype).
    ref.load_state_dict({k: v.double().cpu() for k, v in ours.state_dict().items()})
    return ref, ours


def _penalty_gradients(module, x):
    """A gradient penalty: d/d(x, params) of |d loss / dx|^2."""
    x = x.clone().requires_grad_()
    out, (h, c) = module(x)
    loss = out.sin().sum() + h.sum() + c.pow(2).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    return torch.autograd.grad(g.pow(2).sum(), [x, *module.parameters()])


def test_gradient_penalty_float32_matches_float64(path):
    ref, ours = _pair(torch.float32, "cuda")
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    expected = _penalty_gradients(ref, x)
    found = _penalty_gradients(ours, x.float().cuda())
    assert len(found) == len(expected)
    for i, (a, b) in enumerate(zip(found, expected)):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m, i=i: f"gradient {i}: {m}")


def test_third_order_float64_matches_nn_lstm():
    # float64 runs the stepwise path (the persistent one has no float64).
    ref, ours = _pair(torch.float64, "cuda")
    x = torch.randn(4, 2, 4, dtype=torch.float64)

    def derivatives(module, x):
        x = x.clone().requires_grad_()
        out, (h, c) = module(x)
        value, found = out.sin().sum() + h.sin().sum() + c.pow(2).sum(), []
        for _ in range(3):
            (value,) = torch.autograd.grad(value, x, create_graph=True)
            found.append(value)
            value = value.pow(2).sum()
        return found

    for order, (a, b) in enumerate(zip(derivatives(ours, x.cuda()), derivatives(ref, x)), 1):
        torch.testing.assert_close(a.cpu(), b, msg=lambda m, o=order: f"order {o}: {m}")


def test_gradgradcheck_layer_float64():
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return (torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5).cuda().requires_grad_()

    T, B, I, H, P = 3, 2, 3, 4, 2
    args = (rand(T, B, I), rand(B, P), rand(B, H), rand(4 * H, I), rand(4 * H, P),
            rand(4 * H), rand(4 * H), rand(P, H))
    assert gradgradcheck(lambda *t: ops.lstm_layer(*t), args)
