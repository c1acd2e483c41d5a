"""Index arithmetic past 2**31 elements on the GPU.

The gates buffer of one layer-direction is [N, 4H]; with N * 4H > 2**31 any
32-bit offset in a kernel wraps and corrupts the last steps. Both CUDA paths
run forward and backward on such a layer, and the last steps (where the
offsets are largest) are checked against cuDNN in float32 with the
half-precision rule of the parity suite: our error at most 2x cuDNN's own
error in bfloat16, plus an atol. Needs about 30 GB of GPU memory; skipped,
with the reason shown, where CUDA or the memory is absent. A layer of more
steps than an int counts is refused by the persistent kernels (the last
test).
"""
import os

import pytest
import torch

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402,F401  (registers torch.ops.fusedlstm)

I, H, B = 8, 1024, 128
T = 2 ** 31 // (B * 4 * H) + 4  # N * 4H just past 2**31
NEEDED_BYTES = 30 * 2 ** 30
TAIL = 8  # steps checked at the end of the sequence
ATOL = 8e-3


def _enough_memory():
    free, _ = torch.cuda.mem_get_info()
    return free >= NEEDED_BYTES


@pytest.mark.parametrize("path", ["stepwise", "persistent"])
def test_gates_past_2_pow_31(path, monkeypatch):
    if not _enough_memory():
        pytest.skip(f"needs {NEEDED_BYTES / 2**30:.0f} GiB of free GPU memory")
    assert T * B * 4 * H > 2 ** 31
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", path)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(I, H).cuda()  # float32 cuDNN: the reference
    low = torch.nn.LSTM(I, H).cuda().bfloat16()
    low.load_state_dict({k: v.bfloat16() for k, v in ref.state_dict().items()})
    ref.load_state_dict({k: v.float() for k, v in low.state_dict().items()})
    x = torch.randn(T, B, I, device="cuda").bfloat16()
    w = low.state_dict()
    ops = torch.ops.fusedlstm
    h0 = torch.zeros(B, H, device="cuda", dtype=torch.bfloat16)
    layer = (x, h0, h0, w["weight_ih_l0"], w["weight_hh_l0"], w["bias_ih_l0"],
             w["bias_hh_l0"], None)
    out, h_n, c_n, gates, cells = ops.lstm_layer_forward(*layer, None, False)
    assert gates.numel() > 2 ** 31
    # Gradient only through the last steps' outputs: the backward then
    # starts at the largest offsets and must carry it through every step.
    g_out = torch.zeros_like(out)
    g_out[-TAIL:] = torch.randn(TAIL, B, H, device="cuda").bfloat16()
    zeros = torch.zeros_like(h_n)
    grads = ops.lstm_layer_backward(g_out, zeros, zeros, *layer, out, gates,
                                    cells, None, False)
    del gates, cells
    torch.cuda.empty_cache()

    def reference(module, dtype):
        xr = x.to(dtype).requires_grad_()
        o, (hn, cn) = module(xr)
        (o * g_out.to(dtype)).sum().backward()
        return [o[-TAIL:], hn[0], cn[0], xr.grad[-TAIL:], xr.grad[:TAIL],
                module.weight_hh_l0.grad]

    ours = [out[-TAIL:], h_n, c_n, grads[0][-TAIL:], grads[0][:TAIL], grads[4]]
    del out, grads
    r32 = [t.detach().float() for t in reference(ref, torch.float32)]
    r16 = [t.detach().float() for t in reference(low, torch.bfloat16)]
    names = ["output tail", "h_n", "c_n", "grad_input tail", "grad_input head",
             "grad_w_hh"]
    for name, a, r, c in zip(names, ours, r32, r16):
        err = (a.float() - r).abs().max().item()
        cudnn_err = (c - r).abs().max().item()
        scale = max(1.0, r.abs().max().item())
        assert err <= 2 * cudnn_err + ATOL * scale, (
            f"{name}: our error {err:.3g} vs cuDNN bf16's {cudnn_err:.3g}")


def test_persistent_refuses_more_steps_than_an_int_counts(monkeypatch):
    """A layer of 2**31 steps: the persistent kernels count steps in int,
    so an explicit request for them must raise, not run a wrapped count (it
    would leave the output unwritten and h_n = h0). `auto` takes the
    stepwise path there, whose counters are int64; 2**31 stepwise steps
    take hours, so only the refusal is run. input_size 0 keeps the input
    empty and the input GEMM out of cuBLAS (whose row count is an int): the
    refusal is what is tested, not the GEMM. Needs ~24 GiB of GPU memory
    (gates, output, cells at batch 1, H = 1, bfloat16) and ~40 GiB of host
    memory (the step schedule, two int64 vectors of 2**31)."""
    steps = 2 ** 31
    free, _ = torch.cuda.mem_get_info()
    host_free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    if free < 32 * 2 ** 30 or host_free < 64 * 2 ** 30:
        pytest.skip(f"needs 32 GiB of free GPU memory ({free / 2**30:.0f} free) and "
                    f"64 GiB of free host memory ({host_free / 2**30:.0f} free)")
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", "persistent")
    options = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.zeros(steps, 1, 0, **options)
    h0 = torch.zeros(1, 1, **options)
    w_ih, w_hh = torch.ones(4, 0, **options), torch.ones(4, 1, **options)
    with pytest.raises(RuntimeError, match=r"more than 2\^31 - 1 time steps"):
        torch.ops.fusedlstm.lstm_layer_forward(x, h0, h0, w_ih, w_hh, None, None, None,
                                               None, False)
