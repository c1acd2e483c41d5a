#!/usr/bin/env python
"""A/B of two builds of fusedlstm on the CPU, for checking one kernel change
(benchmarks/NOTES.md): separate processes, alternating between the builds,
each timing the grid's cells and counting its page faults.

    python benchmarks/ab_builds.py --baseline /tmp/base            # this tree as the candidate
    python benchmarks/ab_builds.py --baseline /tmp/base --candidate /tmp/new \\
        --shapes C3,C4 --modes inference --dtype bfloat16 --processes 5

A build is a directory holding a `fusedlstm` package with its extension built
in place (`git worktree add /tmp/base <commit>` then, there,
`python setup.py build_ext --inplace`). Why processes, and alternating: on a
shared machine a process's timings drift with its neighbours, and with what
glibc happened to do with its large buffers (NOTES change 37: the same build
ran one cell at 4 or 7 ms depending on the process); one process per build
per round, the rounds alternating, and the median over the processes' medians
lets neither build have all the good rounds. Page faults (minor, per call)
are reported beside the times because fresh pages were this project's most
frequent hidden cost.

Shapes are bench_cpu.py's C1-C4 and common.CPU_EXTRA's S1-S5; ab_cpu.py is the
A/B against nn.LSTM in one process.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def child(args) -> None:
    """One process of one build: time every cell, print one JSON line."""
    import resource
    import time

    sys.path.insert(0, str(HERE))
    import torch

    import common
    import fusedlstm

    torch.set_num_threads(args.threads)
    # A directory without the package's __init__ imports as an empty namespace.
    where = Path(fusedlstm.__file__).resolve() if getattr(fusedlstm, "__file__", None) else None
    results = {"fusedlstm": str(where), "cells": {}}
    if where is None or args.build.resolve() not in where.parents:
        print(json.dumps(results))  # the parent names the mismatch
        return
    dtype = getattr(torch, args.dtype)
    for shape in common.select(args.shapes, common.CPU_GRID + common.CPU_EXTRA):
        torch.manual_seed(0)
        module = fusedlstm.LSTM(shape.I, shape.H, shape.layers).to(dtype)
        x = torch.randn(shape.T, shape.B, shape.I).to(dtype).requires_grad_()
        for mode in args.modes.split(","):
            def run():
                common.quick_call(module, x, mode)

            for _ in range(3):
                run()
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
            results["cells"][f"{shape.id} {mode}"] = {
                "median_ms": 1e3 * statistics.median(times),
                "min_ms": 1e3 * min(times),
                "faults_per_call": faults / args.reps,
            }
    print(json.dumps(results))


def run_process(build: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(build))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--build", str(build),
               "--shapes", args.shapes, "--modes", args.modes, "--dtype", args.dtype,
               "--reps", str(args.reps), "--threads", str(args.threads)]
    # From a neutral directory, so that the build on PYTHONPATH is the one imported.
    done = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the process for {build} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    imported = Path(result["fusedlstm"])
    if build.resolve() not in imported.parents:
        raise SystemExit(f"{build}: imported {imported}, not this build "
                         "(is fusedlstm/ there, with its extension built in place?)")
    return result["cells"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, help="directory of the baseline build")
    p.add_argument("--candidate", type=Path, default=ROOT,
                   help="directory of the candidate build (default: this tree)")
    p.add_argument("--shapes", default="C1,C2,C3,C4")
    p.add_argument("--modes", default="inference,training")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--processes", type=int, default=3, help="rounds (one process per build each)")
    p.add_argument("--reps", type=int, default=20, help="timed calls per cell and process")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return
    if args.baseline is None:
        p.error("--baseline is required")
    if args.processes < 1 or args.reps < 1:
        p.error("--processes and --reps must be at least 1")
    builds = {"baseline": args.baseline, "candidate": args.candidate}
    for name, build in builds.items():
        if not (build / "fusedlstm").is_dir():
            p.error(f"--{name} {build}: no fusedlstm package there")

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    rounds = [(k, name) for k in range(args.processes) for name in builds]
    bar = tqdm(rounds, unit="process", dynamic_ncols=True, file=sys.stderr) if tqdm else rounds
    runs = {name: [] for name in builds}
    for k, name in bar:
        if tqdm:
            bar.set_description(f"round {k + 1} {name}")
        else:
            print(f"round {k + 1}/{args.processes}: {name}", file=sys.stderr, flush=True)
        runs[name].append(run_process(builds[name], args))

    print(f"{args.dtype}, {args.threads} threads, {args.processes} processes per build "
          f"x {args.reps} calls; per process: median ms (faults per call)")
    for cell in runs["baseline"][0]:
        line = [f"{cell:>14}:"]
        medians = {}
        for name in builds:
            per_process = [r[cell] for r in runs[name]]
            medians[name] = statistics.median(c["median_ms"] for c in per_process)
            shown = " ".join(f"{c['median_ms']:.3g} ({c['faults_per_call']:.0f})"
                             for c in per_process)
            line.append(f"{name} {shown}")
        ratio = medians["candidate"] / medians["baseline"]
        line.append(f"-> candidate / baseline {ratio:.3f}")
        print("  ".join(line))


if __name__ == "__main__":
    main()
