"""fusedlstm under CUDA autocast gives nn.LSTM's dtypes and values.

nn.LSTM on CUDA runs cuDNN, whose autocast wrapper casts every operand to
float16 whatever the autocast dtype (aten/src/ATen/cudnn/AutocastRNN.cpp);
with cuDNN disabled the native path's fused cell casts to the autocast
dtype; nn.LSTMCell's lstm_cell is cast to the autocast dtype. Values: our
error against a float64 CPU reference at most 2x torch's own under autocast,
plus one rounding step of the dtype computed in. Skipped, with the reason
shown, where CUDA is absent.
"""
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402

from helpers import (  # noqa: E402
    assert_backward_unchanged_by_autocast, assert_low_precision_parity,
)

CONFIGS = [dict(), dict(num_layers=2, bidirectional=True, proj_size=3)]


def _run(module, x, hx, device, autocast_dtype):
    """Outputs and gradients; the forward (only) under autocast."""
    module = module.to(device)
    module.zero_grad(set_to_none=True)
    x = x.detach().to(device).clone().requires_grad_()
    hx = None if hx is None else tuple(t.detach().to(device).clone().requires_grad_() for t in hx)
    with torch.autocast(device.split(":")[0], dtype=autocast_dtype, enabled=autocast_dtype is not None):
        out = module(x) if hx is None else module(x, hx)
    if isinstance(module, nn.LSTMCell):
        roots = list(out)
    else:
        roots = [out[0], *out[1]]
    gen = torch.Generator().manual_seed(5)
    cot = [torch.randn(r.shape, generator=gen, dtype=torch.float64).to(torch.bfloat16) for r in roots]
    torch.autograd.backward(roots, [c.to(device, r.dtype) for c, r in zip(cot, roots)])
    result = {f"out{i}": r.detach().cpu() for i, r in enumerate(roots)}
    result["grad_x"] = x.grad.cpu()
    if hx is not None:
        result["grad_h0"], result["grad_c0"] = hx[0].grad.cpu(), hx[1].grad.cpu()
    result.update({f"grad_{n}": p.grad.cpu() for n, p in module.named_parameters()})
    return result


def _twins(cls, ours_cls, *args, **kwargs):
    torch.manual_seed(0)
    ref = cls(*args, **kwargs)
    ours = ours_cls(*args, **kwargs)
    ours.load_state_dict(ref.state_dict())
    ref64 = cls(*args, **kwargs).double()
    ref64.load_state_dict({k: v.double() for k, v in ref.state_dict().items()})
    return ref, ours, ref64


def _compare(ref, ours, ref64, x, hx, autocast_dtype, computed_in):
    theirs = _run(ref, x, hx, "cuda", autocast_dtype)
    mine = _run(ours, x, hx, "cuda", autocast_dtype)
    hx64 = None if hx is None else tuple(t.double() for t in hx)
    reference = _run(ref64, x.double(), hx64, "cpu", None)
    for key in theirs:
        assert mine[key].dtype == theirs[key].dtype, (key, mine[key].dtype, theirs[key].dtype)
    assert_low_precision_parity(mine, theirs, reference, eps=torch.finfo(computed_in).eps)
    return mine


@pytest.mark.parametrize("cudnn", [True, False])
@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_lstm_cuda_autocast(config, with_hx, autocast_dtype, cudnn):
    ref, ours, ref64 = _twins(nn.LSTM, fusedlstm.LSTM, 5, 8, **config)
    x = torch.randn(7, 3, 5)
    hx = None
    if with_hx:
        layers = ref.num_layers * (2 if ref.bidirectional else 1)
        hx = (torch.randn(layers, 3, ref.proj_size or 8), torch.randn(layers, 3, 8))
    with torch.backends.cudnn.flags(enabled=cudnn):
        mine = _compare(ref, ours, ref64, x, hx, autocast_dtype,
                        torch.float16 if cudnn else autocast_dtype)
    expected = torch.float16 if cudnn else autocast_dtype
    assert mine["out0"].dtype == expected
    assert all(mine[f"grad_{n}"].dtype == torch.float32 for n, _ in ours.named_parameters())


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
def test_cell_cuda_autocast(autocast_dtype):
    ref, ours, ref64 = _twins(nn.LSTMCell, fusedlstm.LSTMCell, 5, 8)
    x, hx = torch.randn(3, 5), (torch.randn(3, 8), torch.randn(3, 8))
    mine = _compare(ref, ours, ref64, x, hx, autocast_dtype, autocast_dtype)
    assert mine["out0"].dtype == autocast_dtype


@pytest.mark.parametrize("autocast_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_backward_under_autocast_gives_the_same_gradients(config, dtype, autocast_dtype):
    """The CUDA backward's weight-gradient GEMMs and bias sum are ATen calls:
    before the operators excluded autocast, a backward called under it ran
    them in the autocast dtype."""
    assert_backward_unchanged_by_autocast("cuda", dtype, autocast_dtype, **config)
