#!/usr/bin/env python
"""A decoder's training loop on the CPU, as a user's script runs it:
fusedlstm.LSTMCell against torch.nn.LSTMCell, each alone in its own process.

    python benchmarks/bench_cpu_decoder.py                    # D1-D8, 2 threads
    python benchmarks/bench_cpu_decoder.py --dtype bfloat16 --shapes D3,D5
    python benchmarks/bench_cpu_decoder.py --threads 1,2 --steps 16

One iteration: --steps LSTMCell steps from zero states (each step's input a
slice of a fixed sequence), a loss on every h, backward through all of them,
an SGD step and zero_grad(), the loop of a sequence-to-sequence decoder
trained with teacher forcing. Why separate processes: bench_cpu_cell.py
alternates the two cells call by call in one process, where nn's
allocations between two of our calls change what glibc's heap does with our
freed buffers; a loop that runs only one of them is what a user meets, and
that is where NOTES change 81's page faults showed (1.7x) while the
interleaved bench did not. The processes alternate fusedlstm, nn, fusedlstm,
... (--rounds each); each reports the median of its iterations after
warm-up and its minor page faults per iteration (getrusage), and the table
gives each side's median over its processes, the ratio fusedlstm / nn
(below 1: fusedlstm is faster) and the faults. --csv writes the rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import fusedlstm  # noqa: E402
from bench_cpu_cell import SHAPES  # noqa: E402

IMPLS = ("fusedlstm", "nn.LSTMCell")


def run_loop(impl: str, hidden: int, batch: int, threads: int, dtype_name: str,
             steps: int, iters: int, warmup: int) -> dict:
    """Runs the loop in this process; returns its median ms and faults."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dtype = getattr(torch, dtype_name)
    cls = fusedlstm.LSTMCell if impl == "fusedlstm" else torch.nn.LSTMCell
    cell = cls(hidden, hidden, dtype=dtype)
    optimizer = torch.optim.SGD(cell.parameters(), lr=1e-3)
    inputs = torch.randn(steps, batch, hidden, generator=torch.Generator().manual_seed(1)).to(dtype)

    def iteration():
        h = torch.zeros(batch, hidden, dtype=dtype)
        c = torch.zeros(batch, hidden, dtype=dtype)
        loss = 0.0
        for t in range(steps):
            h, c = cell(inputs[t], (h, c))
            loss = loss + h.float().square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    for _ in range(warmup):
        iteration()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        iteration()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    return {"ms": statistics.median(times) * 1e3, "faults": faults / iters}


def _child(args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", args[0],
           *[str(a) for a in args[1:]]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = common.cpu_table_parser(__doc__, SHAPES, threads="2")
    p.add_argument("--steps", type=int, default=8, help="LSTMCell steps per iteration")
    p.add_argument("--iters", type=int, default=20, help="timed iterations per process")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="processes per implementation")
    p.add_argument("--child", nargs=7, metavar=("IMPL", "H", "B", "THREADS", "DTYPE",
                                                "STEPS", "ITERS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        impl, H, B, threads, dtype_name, steps, iters = args.child
        print(json.dumps(run_loop(impl, int(H), int(B), int(threads), dtype_name,
                                  int(steps), int(iters), args.warmup)))
        return
    unknown = [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    for name in ("steps", "iters", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be 1 or more")

    print(f"{args.dtype} | torch {torch.__version__} | {common.cpu_model()} | "
          f"load {os.getloadavg()[0]:.2f} | commit {common._git('rev-parse', '--short', 'HEAD')} | "
          f"{args.steps} steps an iteration, {args.rounds} processes a side\n")
    cells = [(s, int(t)) for t in args.threads.split(",") for s in args.shapes.split(",")]
    rows = []
    for sid, threads in common.progress(cells):
        H, B = SHAPES[sid]
        results = {impl: [] for impl in IMPLS}
        for _ in range(args.rounds):
            for impl in IMPLS:
                results[impl].append(_child([impl, H, B, threads, args.dtype, args.steps,
                                             args.iters]))
        ms = {impl: statistics.median(r["ms"] for r in results[impl]) for impl in IMPLS}
        faults = {impl: statistics.median(r["faults"] for r in results[impl]) for impl in IMPLS}
        rows.append(dict(shape=sid, hidden=H, batch=B, threads=threads, dtype=args.dtype,
                         steps=args.steps, fusedlstm_ms=round(ms["fusedlstm"], 3),
                         nn_ms=round(ms["nn.LSTMCell"], 3),
                         ratio=round(ms["fusedlstm"] / ms["nn.LSTMCell"], 2),
                         fusedlstm_faults=round(faults["fusedlstm"], 1),
                         nn_faults=round(faults["nn.LSTMCell"], 1)))
    print("| shape | threads | ms an iteration, fusedlstm / nn.LSTMCell | ratio | "
          "page faults an iteration, fusedlstm / nn |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape']} (H={r['hidden']} B={r['batch']}) | {r['threads']} | "
              f"{r['fusedlstm_ms']} / {r['nn_ms']} | {r['ratio']} | "
              f"{r['fusedlstm_faults']} / {r['nn_faults']} |")
    if args.csv:
        common.write_rows_csv(args.csv, rows)


if __name__ == "__main__":
    main()
