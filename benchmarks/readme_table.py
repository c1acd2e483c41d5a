#!/usr/bin/env python
"""Prints a Markdown table (for the README) from a benchmark CSV.

    python benchmarks/readme_table.py                  # latest GPU CSV, else latest CSV
    python benchmarks/readme_table.py benchmarks/results/cpu-2025-01-01.csv
    python benchmarks/readme_table.py --cpu            # latest cpu-*.csv

One row per (shape, dtype, mode): the median in ms of each impl present and
the speed-up of fusedlstm over each baseline (baseline / fusedlstm; > 1 means
fusedlstm is faster; cudnn_graph is compared with fusedlstm_graph).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from plot import PAIRS, _order, speedups  # noqa: E402

IMPL_ORDER = ["fusedlstm", "fusedlstm_graph", "fusedlstm_cluster", "fusedlstm_cluster_graph",
              "cudnn", "cudnn_graph", "native", "flashrnn", "nn_lstm"]
NAMES = {"fusedlstm": "fusedlstm", "fusedlstm_graph": "fusedlstm graph",
         "fusedlstm_cluster": "fusedlstm cluster",
         "fusedlstm_cluster_graph": "fusedlstm cluster graph", "cudnn": "cuDNN",
         "cudnn_graph": "cuDNN graph", "native": "native", "flashrnn": "FlashRNN",
         "nn_lstm": "nn.LSTM"}


def _ms(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def table(rows) -> str:
    shapes = {s.id: s for s in common.GPU_GRID + common.CPU_GRID}
    impls = [i for i in IMPL_ORDER if any(r["impl"] == i for r in rows)]
    med = {}
    for r in rows:
        v = "err" if r.get("error") else (_ms(float(r["median_ms"])) if r.get("median_ms") else "")
        med[(r["shape_id"], r["dtype"], r["mode"], r["impl"])] = v
    sp = speedups(rows)
    baselines = [b for b in PAIRS if b in impls]
    # issue 2 states the CPU target as a time ratio fusedlstm / nn.LSTM (<= 1.0)
    cpu_ratio = "nn_lstm" in impls
    head = (["shape", "dtype", "mode"] + [f"{NAMES[i]} ms" for i in impls]
            + [f"x {NAMES[b]}" for b in baselines]
            + (["time ratio fusedlstm / nn.LSTM"] if cpu_ratio else []))
    lines = ["| " + " | ".join(head) + " |",
             "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    keys = sorted({(r["shape_id"], r["dtype"], r["mode"]) for r in rows},
                  key=lambda k: (_order((k[0], k[1])), k[2]))
    for sid, dt, mode in keys:
        desc = f"{sid} ({shapes[sid].describe()})" if sid in shapes else sid
        cells = [desc, dt, mode] + [med.get((sid, dt, mode, i), "") for i in impls]
        s = sp.get(mode, {}).get((sid, dt), {})
        cells += [f"{s[b]:.2f}" if b in s else "" for b in baselines]
        if cpu_ratio:
            cells.append(f"{1 / s['nn_lstm']:.2f}" if "nn_lstm" in s else "")
        lines.append("| " + " | ".join(cells) + " |")
    meta = rows[0] if rows else {}
    lines.append("")
    lines.append(f"_{meta.get('gpu', '')}, torch {meta.get('torch', '')}"
                 + (f", CUDA {meta['cuda']}, cuDNN {meta['cudnn']}" if meta.get("cuda") else "")
                 + f", commit {meta.get('commit', '')}, {meta.get('date', '')[:10]}; "
                 "median ms; x = baseline time / fusedlstm time._")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="?")
    p.add_argument("--cpu", action="store_true", help="the latest cpu-*.csv")
    args = p.parse_args(argv)
    if args.csv:
        path = Path(args.csv)
    elif args.cpu:
        path = common.latest_csv(prefix="cpu-")
    else:
        gpu = [x for x in common.RESULTS_DIR.glob("*.csv") if not x.name.startswith("cpu-")]
        path = max(gpu, key=lambda x: x.stat().st_mtime) if gpu else common.latest_csv()
    if path is None:
        raise SystemExit("no CSV in benchmarks/results")
    print(table(common.read_csv(path)))


if __name__ == "__main__":
    main()
