"""float32 on TF32 tensor cores follows PyTorch's flag for its LSTM.

cuDNN's LSTM computes float32 products in TF32 while
``torch.backends.cudnn.allow_tf32`` is True (PyTorch's default; the RNN
entry of the newer ``torch.backends.cudnn.rnn.fp32_precision`` too); the
persistent kernels do the same and compute exactly (FMA) otherwise. With the
flag on, our error against float64 must stay within 2x cuDNN's own error
under the same flag, plus an atol; with it off, within the exact float32
tolerance; and the two must differ, which shows the flag is read. Skipped,
with the reason shown, where CUDA is absent.
"""
import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402

ATOL = 1e-3  # of the half-precision-style rule, relative to the scale
EXACT_TOL = 1e-4  # float32 gradients without TF32, as in test_cuda_parity.TOL


def _run(module, x, hx):
    x = x.detach().requires_grad_()
    out, (h, c) = module(x, hx)
    g = torch.Generator().manual_seed(1)
    loss = sum((t.double() * torch.randn(t.shape, generator=g, dtype=torch.float64)
                .to(t.device)).sum() for t in (out, h, c))
    loss.backward()
    res = [out, h, c, x.grad] + [p.grad for p in module.parameters()]
    return [r.detach().double().cpu() for r in res]


@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True),
                                 dict(proj_size=24)], ids=str)
def test_tf32_follows_cudnn_flag(cfg, monkeypatch):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    I, H, B, T = 48, 64, 8, 20
    torch.manual_seed(0)
    ref64 = torch.nn.LSTM(I, H, **cfg).double()
    state = {k: v.float().double() for k, v in ref64.state_dict().items()}
    ref64.load_state_dict(state)
    ours = fusedlstm.LSTM(I, H, **cfg).cuda()
    ours.load_state_dict(state)
    cudnn = torch.nn.LSTM(I, H, **cfg).cuda()
    cudnn.load_state_dict(state)
    L = cfg.get("num_layers", 1) * (2 if cfg.get("bidirectional") else 1)
    S = cfg.get("proj_size", 0) or H
    x = torch.randn(T, B, I).float()
    hx = (torch.randn(L, B, S).float(), torch.randn(L, B, H).float())
    ref = _run(ref64, x.double(), tuple(h.double() for h in hx))
    dev = (x.cuda(), tuple(h.cuda() for h in hx))

    # Set directly: torch.backends.cudnn.flags() would also disable cuDNN.
    # The autouse fixture in conftest.py restores the flag afterwards.
    torch.backends.cudnn.allow_tf32 = False
    exact = _run(ours, *dev)
    for i, (a, r) in enumerate(zip(exact, ref)):
        scale = max(1.0, r.abs().max().item())
        torch.testing.assert_close(a, r, rtol=0, atol=EXACT_TOL * scale,
                                   msg=lambda m: f"exact, tensor {i}: {m}")
    ours.zero_grad()
    torch.backends.cudnn.allow_tf32 = True
    tf32 = _run(ours, *dev)
    theirs = _run(cudnn, *dev)
    assert any(not torch.equal(a, b) for a, b in zip(tf32, exact)), (
        "allow_tf32=True gave bitwise the exact results: the flag is not read")
    for i, (a, c, r) in enumerate(zip(tf32, theirs, ref)):
        err = (a - r).abs().max().item()
        cudnn_err = (c - r).abs().max().item()
        scale = max(1.0, r.abs().max().item())
        assert err <= 2 * cudnn_err + ATOL * scale, (
            f"tensor {i}: our TF32 error {err:.3g} vs cuDNN's {cudnn_err:.3g}")
