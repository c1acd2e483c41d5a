#!/usr/bin/env python
"""Speed-up of fusedlstm over each baseline, per shape and dtype, log scale:
a PNG beside the CSV (same name, .png).

    python benchmarks/plot.py [CSV]      # default: the latest CSV in benchmarks/results

Speed-up = baseline median / fusedlstm median (> 1: fusedlstm faster). Eager
baselines are compared with fusedlstm eager; graph-replay baselines
(cudnn_graph) with fusedlstm_graph, so that like is compared with like.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# baseline -> the fusedlstm variant it is compared with
PAIRS = {
    "cudnn": "fusedlstm",
    "cudnn_graph": "fusedlstm_graph",
    "native": "fusedlstm",
    "flashrnn": "fusedlstm",
    "nn_lstm": "fusedlstm",
}
LABELS = {
    "cudnn": "vs cuDNN eager",
    "cudnn_graph": "graph vs cuDNN graph",
    "native": "vs native CUDA",
    "flashrnn": "vs FlashRNN",
    "nn_lstm": "vs nn.LSTM (CPU)",
}


def speedups(rows):
    """{mode: {(shape, dtype): {baseline: speed-up}}} from CSV rows."""
    med = {}
    for r in rows:
        if r.get("error") or not r.get("median_ms"):
            continue
        med[(r["mode"], r["shape_id"], r["dtype"], r["impl"])] = float(r["median_ms"])
    out = {}
    for (mode, sid, dt, impl), ms in med.items():
        fused = PAIRS.get(impl)
        if fused is None:
            continue
        f = med.get((mode, sid, dt, fused))
        if f:
            out.setdefault(mode, {}).setdefault((sid, dt), {})[impl] = ms / f
    return out


def _order(key):
    sid, dt = key
    num = int("".join(c for c in sid if c.isdigit()) or 0)
    return (sid.rstrip("0123456789"), num, list(common.DTYPES).index(dt) if dt in common.DTYPES else 9)


def plot_csv(csv_path, png_path=None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    csv_path = Path(csv_path)
    rows = common.read_csv(csv_path)
    data = speedups(rows)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    modes = [m for m in common.MODES if m in data] or ["inference"]
    fig, axes = plt.subplots(len(modes), 1, figsize=(max(8, 0.55 * max(
        (len(data.get(m, {})) for m in modes), default=4) + 3), 4.2 * len(modes)), squeeze=False)
    meta = rows[0] if rows else {}
    for ax, mode in zip(axes[:, 0], modes):
        cells = sorted(data.get(mode, {}), key=_order)
        baselines = [b for b in PAIRS if any(b in data[mode][c] for c in cells)]
        width = 0.8 / max(1, len(baselines))
        all_y = []
        for k, b in enumerate(baselines):
            xs, ys = [], []
            for i, c in enumerate(cells):
                if b in data[mode][c]:
                    xs.append(i - 0.4 + width * (k + 0.5))
                    ys.append(data[mode][c][b])
            # bars grow from 1x: up when fusedlstm is faster, down when slower
            ax.bar(xs, [y - 1 for y in ys], width, bottom=1, label=LABELS.get(b, b))
            for x, y in zip(xs, ys):
                ax.text(x, y, f"{y:.2g}", ha="center", va="bottom" if y >= 1 else "top",
                        fontsize=7)
            all_y.extend(ys)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        if all_y:
            lo, hi = min(all_y + [1.0]), max(all_y + [1.0])
            ax.set_ylim(lo / 1.6, hi * 1.6)
        fmt = ticker.FuncFormatter(lambda v, _: f"{v:g}x")
        ax.yaxis.set_major_formatter(fmt)
        ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
            lambda v, _: f"{v:g}x" if f"{v:g}"[0] in "25" else ""))
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([f"{s}\n{_short(d)}" for s, d in cells], fontsize=8)
        ax.set_ylabel("speed-up of fusedlstm (x)")
        ax.set_title(f"{mode}: baseline time / fusedlstm time (> 1: fusedlstm faster)", fontsize=10)
        ax.grid(axis="y", which="both", alpha=0.3)
        if baselines:
            ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"fusedlstm speed-up on {meta.get('gpu', '?')} | torch {meta.get('torch', '?')}"
                 f" | commit {meta.get('commit', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def _short(dtype):
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(dtype, dtype)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else common.latest_csv()
    if path is None:
        raise SystemExit("no CSV given and none in benchmarks/results")
    print(plot_csv(path))


if __name__ == "__main__":
    main()
