#!/usr/bin/env python
"""Quick interleaved A/B of fusedlstm against torch.nn.LSTM on the CPU, for
checking one kernel change at a time (benchmarks/NOTES.md): the two modules
alternate call by call in one process, and the ratio of the fastest calls
(which the machine's neighbours disturb least) is printed beside the ratio
of the medians.

    python benchmarks/ab_cpu.py --shapes C2,C3 --modes inference --reps 20
    python benchmarks/ab_cpu.py --dtype bfloat16
    python benchmarks/ab_cpu.py --modes training --grads weights

``--grads`` says which leaves need a gradient in training: ``all`` (the
grid's training: input and parameters), ``weights`` (the parameters only,
as for the first layer of a model fed raw features) or ``input`` (the input
only, as for a frozen LSTM under a trained embedding).

Shapes are bench_cpu.py's C1-C4 and common.CPU_EXTRA's S1 (T=100, B=128,
H=128: the cells bound the step there), S2 and S3 (T=100, H=256, batch 2 and
3: the small register tiles), S4 and S5 (T=100, H=1024, batch 256 and 64:
wide layers); for the full grid, CSVs and plots use bench_cpu.py.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import fusedlstm  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="C1,C2,C3,C4")
    p.add_argument("--modes", default="inference,training")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grads", default="all", choices=["all", "weights", "input"],
                   help="which leaves need a gradient in training mode")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"threads {args.threads} | {args.dtype} | gradients: {args.grads} | recurrence "
          f"{torch.ops.fusedlstm.cpu_recurrence()} | GEMMs "
          f"{torch.ops.fusedlstm.cpu_gemm_backend()}")
    for shape in common.select(args.shapes, common.CPU_GRID + common.CPU_EXTRA):
        name, T, B, I, H, L = shape.id, shape.T, shape.B, shape.I, shape.H, shape.layers
        torch.manual_seed(0)
        ref = torch.nn.LSTM(I, H, L)
        ours = fusedlstm.LSTM(I, H, L)
        ours.load_state_dict(ref.state_dict())
        ref, ours = ref.to(dtype), ours.to(dtype)
        for module in (ref, ours):
            module.requires_grad_(args.grads != "input")
        x = torch.randn(T, B, I).to(dtype).requires_grad_(args.grads != "weights")
        for mode in args.modes.split(","):
            def run(module):
                common.quick_call(module, x, mode)

            times = ([], [])
            for module in (ours, ref):
                for _ in range(2):
                    run(module)
            for _ in range(args.reps):
                for i, module in enumerate((ours, ref)):
                    start = time.perf_counter()
                    run(module)
                    times[i].append(time.perf_counter() - start)
            print(f"{name} {mode}: fusedlstm {1e3 * min(times[0]):.2f} ms, nn.LSTM "
                  f"{1e3 * min(times[1]):.2f} ms (fastest calls); ratio of minima "
                  f"{min(times[0]) / min(times[1]):.3f}, of medians "
                  f"{statistics.median(times[0]) / statistics.median(times[1]):.3f}")


if __name__ == "__main__":
    main()
