#!/usr/bin/env python
"""CPU benchmark of fusedlstm against torch.nn.LSTM (oneDNN / ATen), the grid
of issue 2 section 9, with 2 threads; both impls run interleaved in one process.

    python benchmarks/bench_cpu.py                       # C1-C4, float32 + bfloat16, both modes
    python benchmarks/bench_cpu.py --subset C2 --dtypes float32 --reps 30

Shapes (I = H): C1 T=100 B=1 H=256; C2 T=100 B=8 H=512; C3 T=100 B=64 H=512;
C4 T=50 B=32 H=256 2 layers. Modes: inference = forward under no_grad;
training = forward + backward (input and all weight gradients).
Writes benchmarks/results/cpu-<date>.csv (the GPU benchmark's columns) and
prints a table of ratios fusedlstm time / nn.LSTM time (< 1: fusedlstm faster).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import implementations  # noqa: E402

IMPLS = ["fusedlstm", "nn_lstm"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subset", default="", help="comma-separated shape ids, e.g. C1,C3")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--modes", default="inference,training")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=20, help="interleaved rounds per cell (median)")
    p.add_argument("--min-reps", type=int, default=7, help="rounds kept even past --budget")
    p.add_argument("--budget", type=float, default=40.0,
                   help="seconds of timed rounds per cell before stopping early (>= --min-reps)")
    p.add_argument("--extra-reps", type=int, default=5,
                   help="rounds for the extra (non-float32) dtypes, whose nn.LSTM runs are slow")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--input-sets", type=int, default=3)
    p.add_argument("--out", default=None, help="directory for the CSV and PNG")
    p.add_argument("--csv", default=None, help="exact CSV path")
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shapes = common.select(args.subset, common.CPU_GRID)
    dtypes, modes = _split(args.dtypes), _split(args.modes)
    meta = common.metadata("cpu")
    path = Path(args.csv) if args.csv else common.default_csv(
        "cpu", Path(args.out) if args.out else None)
    writer = common.CsvWriter(path)
    print(f"{meta['gpu']} | {os.cpu_count()} cores visible | threads {torch.get_num_threads()} | "
          f"torch {meta['torch']} ({torch.backends.cpu.get_cpu_capability()}) | commit "
          f"{meta['commit']}{' (dirty)' if meta['dirty'] == 'yes' else ''} | "
          f"load {common.load_avg()}")
    import fusedlstm  # noqa: F401  (registers torch.ops.fusedlstm)
    print(f"fusedlstm CPU kernels: recurrence {torch.ops.fusedlstm.cpu_recurrence()}, "
          f"whole-sequence GEMMs {torch.ops.fusedlstm.cpu_gemm_backend()}")
    print(f"writing {path}")

    cells = [(s, d, m) for s in shapes for d in dtypes for m in modes]
    t_all = time.time()
    for shape, dtype_name, mode in common.sweep(cells):
        dtype = common.DTYPES[dtype_name]
        base = dict(meta, shape_id=shape.id, dtype=dtype_name, mode=mode,
                    gflop=shape.flops(mode) / 1e9, input_sets=args.input_sets,
                    load_avg=common.load_avg(), **common.shape_columns(shape))
        rows = {n: dict(base, impl=n) for n in IMPLS}
        try:
            inputs = implementations.make_inputs(shape, dtype, "cpu", args.input_sets)
            impls = implementations.build_impls(shape, dtype, "cpu", IMPLS)
            runs = {}
            vecs = {}
            for n, impl in impls.items():
                if isinstance(impl, Exception):
                    rows[n]["error"] = f"{type(impl).__name__}: {impl}"[:300]
                    continue
                try:
                    impl.setup(mode, inputs)
                    vecs[n] = impl.output(0)
                    runs[n] = impl.run
                except Exception as e:
                    rows[n]["error"] = f"{type(e).__name__}: {e}"[:300]
            if "nn_lstm" in vecs and "fusedlstm" in vecs:
                rows["fusedlstm"]["max_abs_err"] = common.max_abs_err(vecs["fusedlstm"], vecs["nn_lstm"])
            extra = dtype_name != "float32"
            reps = min(args.reps, args.extra_reps) if extra else args.reps
            min_reps = min(args.min_reps, 3) if extra else args.min_reps
            timings = common.time_cpu_interleaved(
                runs, args.input_sets, warmup=1 if extra else args.warmup, reps=reps,
                budget_s=args.budget, min_reps=min_reps) if runs else {}
            for n, t in timings.items():
                rows[n].update(median_ms=t.median_ms, q1_ms=t.q1_ms, q3_ms=t.q3_ms,
                               min_ms=t.min_ms, reps=t.reps,
                               us_per_step=t.median_ms * 1e3 / shape.T,
                               achieved_gflops=shape.flops(mode) / 1e9 / (t.median_ms / 1e3))
        except Exception as e:
            for n in IMPLS:
                rows[n].setdefault("error", f"{type(e).__name__}: {e}"[:300])
        load_end = common.load_avg()
        for n in IMPLS:
            rows[n]["load_avg"] = f"{base['load_avg']}->{load_end}"
            writer.write(rows[n])
    writer.close()
    print(f"{len(writer.rows)} rows in {time.time() - t_all:.0f} s -> {path}")
    print()
    print(ratio_table(writer.rows))
    if not args.no_plot:
        try:
            import plot
            print("plot:", plot.plot_csv(path))
        except Exception as e:
            print(f"plot skipped: {type(e).__name__}: {e}")
    return 0


def ratio_table(rows) -> str:
    """Markdown: per shape, dtype and mode, both medians and fusedlstm / nn.LSTM."""
    by = {}
    for r in rows:
        by.setdefault((r["shape_id"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    shapes = {s.id: s for s in common.CPU_GRID}
    lines = ["| shape | dtype | mode | fusedlstm ms | nn.LSTM ms | ratio | max abs err |",
             "|---|---|---|---:|---:|---:|---:|"]
    for (sid, dt, mode), d in by.items():
        f, t = d.get("fusedlstm", {}), d.get("nn_lstm", {})
        fm, tm = f.get("median_ms") or "", t.get("median_ms") or ""
        ratio = f"{float(fm) / float(tm):.2f}" if fm and tm else (f.get("error") or t.get("error") or "")[:40]
        desc = f"{sid} ({shapes[sid].describe()})" if sid in shapes else sid
        lines.append(f"| {desc} | {dt} | {mode} | {_ms(fm)} | {_ms(tm)} | {ratio} | "
                     f"{f.get('max_abs_err', '')} |")
    return "\n".join(lines)


def _ms(v):
    return f"{float(v):.2f}" if v not in ("", None) else ""


if __name__ == "__main__":
    sys.exit(main())
