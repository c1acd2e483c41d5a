#!/usr/bin/env python
"""Bidirectional LSTMs on the CPU: fusedlstm with the two directions of each
layer at once (FUSEDLSTM_CPU_DIRECTIONS=auto, what a call gets by default)
and in turn (=sequential), against torch.nn.LSTM, side by side in one
process, for inference or for a training step.

    python benchmarks/bench_cpu_bidirectional.py                 # every shape, 2 threads
    python benchmarks/bench_cpu_bidirectional.py --shapes E1,E3 --dtype bfloat16
    python benchmarks/bench_cpu_bidirectional.py --mode training --threads 1,2 --csv out.csv

The three sides alternate call by call (common.time_cpu_interleaved, the
order flipping every round) over rotating input sets. ``inference`` times a
forward under torch.no_grad; ``training`` a forward and the backward of
out.sum() + h_n.sum() + c_n.sum() into the weights (the input is data and
needs no gradient; the weights' gradients are reset to None before each
call). The median of the calls is reported with the ratios at once / in turn (below
1: running the directions at once is faster) and at once / nn.LSTM. With
two intra-op threads ``auto`` runs each direction on its own thread; with
any other count it runs them in turn, so both fusedlstm columns are then the
same code (cpu/bidirectional.h; the CSV's ``concurrent`` column says which).
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

# id: (T, B, I, H, layers): taggers and speech encoders served at small
# batches, then larger batches where the GEMMs take over.
SHAPES = {
    "E1": (100, 1, 256, 256, 1),
    "E2": (200, 4, 128, 128, 2),
    "E3": (100, 8, 256, 256, 2),
    "E4": (300, 1, 80, 320, 2),
    "E5": (100, 8, 512, 512, 1),
    "E6": (100, 32, 256, 256, 2),
    "E7": (50, 64, 512, 512, 1),
}
N_SETS = 3
VARIABLE = "FUSEDLSTM_CPU_DIRECTIONS"


def _runs(shape, dtype, mode):
    T, B, I, H, layers = shape
    torch.manual_seed(0)
    ref = nn.LSTM(I, H, layers, bidirectional=True).to(dtype)
    ours = fusedlstm.LSTM(I, H, layers, bidirectional=True).to(dtype)
    ours.load_state_dict(ref.state_dict())
    gen = torch.Generator().manual_seed(1)
    sets = [torch.randn(T, B, I, generator=gen).to(dtype) for _ in range(N_SETS)]

    def call(model, x):
        if mode == "inference":
            with torch.no_grad():
                return model(x)
        model.zero_grad(set_to_none=True)
        out, (h, c) = model(x)
        (out.sum() + h.sum() + c.sum()).backward()
        return out

    def with_directions(value):
        def run(i):
            os.environ[VARIABLE] = value
            return call(ours, sets[i])
        return run

    return {"at once": with_directions("auto"), "in turn": with_directions("sequential"),
            "nn.LSTM": lambda i: call(ref, sets[i])}


def main(argv=None):
    p = common.cpu_table_parser(__doc__, SHAPES, threads="2")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--mode", choices=["inference", "training"], default="inference")
    args = p.parse_args(argv)
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        p.error(f"unknown shapes {unknown}; choose from {','.join(SHAPES)}")
    dtype = getattr(torch, args.dtype)
    print(f"{args.mode} | {args.dtype} | torch {torch.__version__} | {common.cpu_model()} | "
          f"recurrence {torch.ops.fusedlstm.cpu_recurrence()} | "
          f"load {os.getloadavg()[0]:.2f} | commit {common._git('rev-parse', '--short', 'HEAD')}\n")
    cells = [(s, int(t)) for t in args.threads.split(",") for s in args.shapes.split(",")]
    saved = os.environ.get(VARIABLE)
    rows = []
    try:
        for sid, threads in common.progress(cells):
            torch.set_num_threads(threads)
            os.environ[VARIABLE] = "auto"
            concurrent = torch.ops.fusedlstm.cpu_directions_concurrent()
            t = common.time_cpu_interleaved(_runs(SHAPES[sid], dtype, args.mode), N_SETS, warmup=3,
                                            reps=args.reps)
            at_once, in_turn, ref = (t[k].median_ms for k in ("at once", "in turn", "nn.LSTM"))
            T, B, I, H, layers = SHAPES[sid]
            rows.append(dict(mode=args.mode, dtype=args.dtype, shape=sid, T=T, batch=B, input=I, hidden=H, layers=layers,
                             threads=threads, concurrent=concurrent,
                             at_once_ms=round(at_once, 3),
                             in_turn_ms=round(in_turn, 3), nn_ms=round(ref, 3),
                             at_once_over_in_turn=round(at_once / in_turn, 3),
                             at_once_over_nn=round(at_once / ref, 3)))
    finally:
        if saved is None:
            os.environ.pop(VARIABLE, None)
        else:
            os.environ[VARIABLE] = saved
    print("| shape (T, B, I=H or I/H, layers) | threads | ms at once / in turn / nn.LSTM "
          "| at once / in turn | at once / nn |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        size = f"{r['hidden']}" if r["input"] == r["hidden"] else f"{r['input']}/{r['hidden']}"
        print(f"| {r['shape']} ({r['T']}, {r['batch']}, {size}, {r['layers']}) | {r['threads']} | "
              f"{r['at_once_ms']} / {r['in_turn_ms']} / {r['nn_ms']} | "
              f"{r['at_once_over_in_turn']} | {r['at_once_over_nn']} |")
    if args.csv:
        common.write_rows_csv(args.csv, rows)


if __name__ == "__main__":
    main()
