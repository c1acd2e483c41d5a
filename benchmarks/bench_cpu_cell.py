#!/usr/bin/env python
"""One LSTMCell step on the CPU, as a decoder takes it: fusedlstm.LSTMCell
against torch.nn.LSTMCell, float32 (or --dtype bfloat16), side by side in one
process.

    python benchmarks/bench_cpu_cell.py                 # 1 and 2 threads, every shape
    python benchmarks/bench_cpu_cell.py --threads 1 --shapes D3
    python benchmarks/bench_cpu_cell.py --dtype bfloat16
    python benchmarks/bench_cpu_cell.py --evict-mib 64   # weights from memory

The two modules alternate call by call (common.time_cpu_interleaved, the
order flipping every round) over rotating input sets; the median of the
calls is reported, with the ratio fusedlstm / nn (below 1: fusedlstm is
faster). Inference: one step under torch.no_grad. Training: one step, then
the gradients of the input, both states and every parameter under fixed
cotangents (accumulated into .grad, as an optimizer loop does). Prints a
Markdown table; --csv writes the rows. --evict-mib N writes an N MiB buffer
before every timed call, outside its time, so that each call finds the
weights in memory rather than in the caches, as a decoder does whose other
work (attention, an output layer) comes between two steps.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402
import fusedlstm  # noqa: E402

# id: (input_size = hidden_size, batch)
SHAPES = {
    "D1": (64, 1),
    "D2": (256, 1),
    "D3": (1024, 1),
    "D4": (512, 8),
    "D5": (1024, 16),
    "D6": (128, 8),
    "D7": (256, 32),
    "D8": (512, 64),
}
N_SETS = 4


def _runs(H: int, B: int, mode: str, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    ref = nn.LSTMCell(H, H).to(dtype)
    ours = fusedlstm.LSTMCell(H, H).to(dtype)
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    sets = [(randn(B, H), (randn(B, H), randn(B, H))) for _ in range(N_SETS)]
    if mode == "training":
        sets = [(x.requires_grad_(), tuple(t.requires_grad_() for t in hx)) for x, hx in sets]
    cot = (randn(B, H), randn(B, H))

    def run_of(module):
        if mode == "inference":
            def run(i):
                with torch.no_grad():
                    return module(*sets[i])
        else:
            def run(i):
                h, c = module(*sets[i])
                torch.autograd.backward((h, c), cot)
        return run

    return {"fusedlstm": run_of(ours), "nn.LSTMCell": run_of(ref)}


def main(argv=None):
    p = common.cpu_table_parser(__doc__, SHAPES, threads="1,2")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--evict-mib", type=int, default=0,
                   help="MiB written before every timed call (0: none)")
    args = p.parse_args(argv)
    if args.evict_mib < 0:
        p.error("--evict-mib must be 0 or more")
    evict = None
    if args.evict_mib:
        junk = torch.ones(args.evict_mib << 18)  # float32: 4 bytes each

        def evict():
            junk.add_(1.0)
    cells = [(SHAPES[s], s, int(t), mode) for t in args.threads.split(",")
             for s in args.shapes.split(",") for mode in ("inference", "training")]
    dtype = getattr(torch, args.dtype)
    print(f"{args.dtype} | torch {torch.__version__} | {common.cpu_model()} | "
          f"recurrence {torch.ops.fusedlstm.cpu_recurrence()} | "
          f"load {os.getloadavg()[0]:.2f} | commit {common._git('rev-parse', '--short', 'HEAD')}"
          f"{f' | {args.evict_mib} MiB written before each call' if evict else ''}\n")
    rows = []
    for (H, B), sid, threads, mode in common.progress(cells):
        torch.set_num_threads(threads)
        t = common.time_cpu_interleaved(_runs(H, B, mode, dtype), N_SETS, warmup=5,
                                        reps=args.reps, before_each=evict)
        ours, ref = t["fusedlstm"].median_ms, t["nn.LSTMCell"].median_ms
        rows.append(dict(shape=sid, hidden=H, batch=B, threads=threads, mode=mode,
                         fusedlstm_us=round(ours * 1e3, 1), nn_us=round(ref * 1e3, 1),
                         ratio=round(ours / ref, 2)))
    print("| shape | threads | mode | µs fusedlstm / nn.LSTMCell | ratio |")
    print("|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} (H={r['hidden']} B={r['batch']}) | {r['threads']} | {r['mode']} | "
              f"{r['fusedlstm_us']} / {r['nn_us']} | {r['ratio']} |")
    if args.csv:
        common.write_rows_csv(args.csv, rows)


if __name__ == "__main__":
    main()
