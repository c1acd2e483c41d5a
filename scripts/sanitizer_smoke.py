"""Small forward+backward of fusedlstm on every CUDA path (stepwise,
persistent, and on sm_90+ the cluster kernels), for compute-sanitizer
(memcheck, racecheck). Kept tiny: sanitizers slow kernels down by 100x or
more.

    compute-sanitizer --tool memcheck python scripts/sanitizer_smoke.py
"""
import os
import sys

import torch

import fusedlstm  # noqa: F401  (registers torch.ops.fusedlstm)


def run(dtype, proj, packed, reverse, sizes=(5, 20, 3, 4)):
    torch.manual_seed(0)
    I, H, B, T = sizes
    P = 6 if proj else H
    dev = "cuda"
    k = H ** -0.5
    mk = lambda *s: ((torch.rand(*s, device=dev) * 2 - 1) * k).to(dtype)
    w_ih, w_hh, b_ih, b_hh = mk(4 * H, I), mk(4 * H, P), mk(4 * H), mk(4 * H)
    w_hr = mk(P, H) if proj else None
    h0, c0 = mk(B, P), mk(B, H)
    if packed:
        assert (B, T) == (3, 4), "the packed batch sizes below are for B = 3, T = 4"
        bs = torch.tensor([3, 2, 2, 1], dtype=torch.int64)
        x = mk(int(bs.sum()), I)
    else:
        bs, x = None, mk(T, B, I)
    ops = torch.ops.fusedlstm
    out, h_n, c_n, gates, cells = ops.lstm_layer_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, bs, reverse)
    grads = ops.lstm_layer_backward(
        torch.ones_like(out), torch.ones_like(h_n), torch.ones_like(c_n),
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, out, gates, cells, bs, reverse)
    torch.cuda.synchronize()
    assert all(torch.isfinite(t).all() for t in (out, h_n, c_n) + tuple(grads))


def main():
    clusters = torch.cuda.get_device_capability() >= (9, 0)
    paths = sys.argv[1:] or ["stepwise", "persistent"] + (["cluster"] if clusters else [])
    for path in paths:
        os.environ["FUSEDLSTM_CUDA_PATH"] = path
        if path == "cluster":
            # No projection, tensor-core types only: float32 through TF32,
            # set here rather than trusting the default. Both passes run on
            # the cluster kernels.
            torch.backends.cudnn.allow_tf32 = True
            for dtype in (torch.float32, torch.float16, torch.bfloat16):
                for packed, reverse in ((False, False), (True, True)):
                    run(dtype, False, packed, reverse)
            print(f"sanitizer_smoke: {path} ok")
            continue
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for proj, packed, reverse in ((False, False, False), (True, True, True),
                                          (False, True, True), (True, False, False)):
                run(dtype, proj, packed, reverse)
        # float32 above ran on TF32 tensor cores in the persistent kernels
        # (cudnn.allow_tf32 is True by default); the exact FMA kernels too.
        torch.backends.cudnn.allow_tf32 = False  # flags() would disable cuDNN
        for proj, packed, reverse in ((False, True, True), (True, True, False)):
            run(torch.float32, proj, packed, reverse)
        # The exact-FMA product's k-split (H = 256: the forward's depth in two
        # parts, the backward's 4H in eight), a chunk of 32 rows and one of
        # 8 (batch tiles of 8), and at H = 1024 the backward's gate gradients
        # staged a few rows a pass (NOTES, change 66).
        for H in (256, 1024):
            run(torch.float32, False, False, False, sizes=(16, H, 40, 2))
        torch.backends.cudnn.allow_tf32 = True
        # Two batch chunks (kChunk = 32 rows) and a deeper k-split (H = 64:
        # four k-tiles), so that within a step the partial sums are reduced
        # over the split and then rewritten by the second chunk: B = 3 is
        # one chunk.
        for dtype in (torch.bfloat16, torch.float32):
            run(dtype, False, False, False, sizes=(16, 64, 40, 3))
        if path == "stepwise":  # float64 has no persistent kernel
            run(torch.float64, True, True, True)
        print(f"sanitizer_smoke: {path} ok")


if __name__ == "__main__":
    main()
