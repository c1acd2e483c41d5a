#!/usr/bin/env python
"""Training time (forward + backward) of one LSTM layer with proj_size on the
CPU, float32: fusedlstm against torch.nn.LSTM, median of torch.utils.benchmark.

    python benchmarks/bench_cpu_proj.py                   # fusedlstm (fused recurrence) and nn.LSTM
    FUSEDLSTM_CPU_RECURRENCE=blas python benchmarks/bench_cpu_proj.py --impls fusedlstm

FUSEDLSTM_CPU_RECURRENCE is read once per process, so the BLAS loop needs its
own process; the label of the fusedlstm rows says which recurrence ran
(``fusedlstm[auto]`` or ``fusedlstm[blas]``). Training is what bench_cpu.py
times: forward, then the gradients of the input and every parameter under one
fixed cotangent of the output. Prints one line per shape and impl: median ms,
interquartile range, timed runs, GFLOP/s (train FLOPs = 3 x forward GEMM FLOPs).
"""
from __future__ import annotations

import argparse
import os

import torch
from torch.utils import benchmark

import fusedlstm

# id: (input_size, hidden_size, proj_size, T, B)
SHAPES = {
    "P1": (256, 512, 128, 100, 16),
    "P2": (256, 512, 128, 200, 64),
    "P3": (1024, 1024, 256, 100, 16),
    "P4": (1024, 1024, 256, 100, 32),
}


def train_gflop(I, H, P, T, B):
    n = T * B
    return 3 * (2 * n * 4 * H * (I + P) + 2 * n * H * P) / 1e9


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--impls", default="fusedlstm,nn_lstm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-run-time", type=float, default=6.0,
                   help="seconds of timed runs per shape and impl")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recurrence = os.environ.get("FUSEDLSTM_CPU_RECURRENCE") or "auto"
    print(f"threads {torch.get_num_threads()} | torch {torch.__version__} | "
          f"fusedlstm {os.path.dirname(fusedlstm.__file__)} | "
          f"FUSEDLSTM_CPU_RECURRENCE={recurrence} | load {os.getloadavg()[0]:.2f}")
    for sid in args.shapes.split(","):
        I, H, P, T, B = SHAPES[sid]
        torch.manual_seed(0)
        ref = torch.nn.LSTM(I, H, proj_size=P)
        modules = {"nn_lstm": ref}
        ours = fusedlstm.LSTM(I, H, proj_size=P)
        ours.load_state_dict(ref.state_dict())
        modules["fusedlstm"] = ours
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(T, B, I, generator=gen).requires_grad_()
        cot = torch.randn(T, B, P, generator=gen)
        for name in args.impls.split(","):
            m = modules[name]
            params = list(m.parameters())

            def step(m=m, params=params):
                out = m(x)[0]
                return torch.autograd.grad(out, [x, *params], cot)

            step()  # warm-up
            t = benchmark.Timer("step()", globals={"step": step},
                                num_threads=args.threads).blocked_autorange(
                                    min_run_time=args.min_run_time)
            label = f"fusedlstm[{recurrence}]" if name == "fusedlstm" else name
            gf = train_gflop(I, H, P, T, B)
            print(f"{sid} I={I} H={H} P={P} T={T} B={B} {label:16s} "
                  f"median {t.median * 1e3:8.1f} ms  IQR {t.iqr * 1e3:6.1f} ms  "
                  f"runs {len(t.times) * t.number_per_run:3d}  "
                  f"{gf / t.median:5.1f} GFLOP/s  load {os.getloadavg()[0]:.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
