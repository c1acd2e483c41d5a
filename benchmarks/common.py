"""Shared machinery of the fusedlstm benchmarks (bench_gpu.py, bench_cpu.py).

* ``Shape``: one grid point, and its work model (FLOPs and bytes, see NOTES.md).
* the implementations compared are in implementations.py (``build_impls``).
* ``time_cuda`` / ``time_cpu_interleaved``: medians over rotating input sets.
* ``peak_cuda_mib``: peak memory of one call above what was allocated before.
* ``metadata`` and ``CsvWriter``: one row per (shape, dtype, mode, impl),
  flushed as it is written so that a sweep cut short still leaves its rows.

Timing conventions (the same in every run, so results compare across commits):
  inference = forward under ``torch.no_grad()``;
  training  = forward, then ``torch.autograd.grad`` of the output with a fixed
              random cotangent w.r.t. the input and every parameter (no
              ``.grad`` accumulation, so no impl pays for an extra add).
  us_per_step = median_ms * 1000 / T, T the sequence length (for packed input,
              the longest sequence); all layers and directions are included.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MODES = ("inference", "training")

# The first twelve are the columns issue 4 asks for, in its order.
COLUMNS = [
    "shape_id", "dtype", "mode", "impl", "median_ms", "us_per_step", "peak_mib",
    "gpu", "torch", "cuda", "cudnn", "commit",
    "q1_ms", "q3_ms", "min_ms", "reps", "input_sets",
    "T", "B", "I", "H", "layers", "bidirectional", "proj_size", "packed",
    "gflop", "achieved_gflops", "max_abs_err", "error",
    "device", "threads", "load_avg", "dirty", "date",
]


# ------------------------------------------------------------------- shapes


@dataclass
class Shape:
    id: str
    T: int
    B: int
    H: int
    I: Optional[int] = None          # None: I = H
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    packed: Optional[tuple] = None   # (low, high) of lengths, drawn once, fixed seed
    note: str = ""
    lengths: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.I is None:
            self.I = self.H
        if self.packed is not None and not self.lengths:
            g = torch.Generator().manual_seed(1234)
            low, high = self.packed
            self.lengths = torch.randint(low, high + 1, (self.B,), generator=g).tolist()
            self.T = max(self.lengths)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def out_width(self) -> int:
        return self.proj_size or self.H

    def describe(self) -> str:
        parts = [f"T={self.T}" if not self.packed else f"T<={self.T} packed",
                 f"B={self.B}", f"I={self.I}", f"H={self.H}"]
        if self.layers > 1:
            parts.append(f"L={self.layers}")
        if self.bidirectional:
            parts.append("bidir")
        if self.proj_size:
            parts.append(f"P={self.proj_size}")
        return " ".join(parts)

    # ---- work model (see NOTES.md) ----
    def _token_steps(self) -> int:
        # rows actually processed: sum of lengths when packed, else T*B
        return sum(self.lengths) if self.packed else self.T * self.B

    def flops(self, mode: str) -> float:
        """GEMM FLOPs of one call (elementwise work is O(1/H) of this and left out).

        forward per layer-direction: 2*N*4H*(I_l + P) (+ 2*N*H*P with a projection),
        N = rows (T*B, or the sum of lengths). Training adds the backward: the
        data gradients (dx, dh) and the weight gradients, twice the forward GEMMs.
        """
        n = self._token_steps()
        p = self.out_width
        total = 0.0
        for layer in range(self.layers):
            i_l = self.I if layer == 0 else p * self.directions
            per = 2.0 * n * 4 * self.H * (i_l + p)
            if self.proj_size:
                per += 2.0 * n * self.H * p
            total += per * self.directions
        return total * (3.0 if mode == "training" else 1.0)

    def bytes(self, dtype: torch.dtype, mode: str) -> tuple[float, float]:
        """(compulsory, weight_stream) bytes of one call.

        compulsory: every tensor touched once: input, weights, output, and in
        training the saved gates/cells (written, then read), the gradients of
        input and weights. weight_stream: W_hh (and W_hr) read once per step,
        what a kernel that cannot keep them on-chip pays (forward; x2 training).
        """
        s = torch.finfo(dtype).bits // 8
        n = self._token_steps()
        p, h, d = self.out_width, self.H, self.directions
        weights = 0
        for layer in range(self.layers):
            i_l = self.I if layer == 0 else p * d
            weights += d * (4 * h * (i_l + p) + 8 * h + (h * p if self.proj_size else 0))
        acts = n * self.I + self.layers * n * p * d  # input + every layer's output
        comp = (weights + acts) * s
        rec = d * self.layers * (4 * h * p + (h * p if self.proj_size else 0)) * s
        stream = rec * self.T
        if mode == "training":
            saved = self.layers * d * n * 5 * h * s  # gates (4H) + cells (H)
            comp = comp * 2 + 2 * saved              # grads of everything + save/reload
            stream *= 2
        return float(comp), float(stream)


GPU_GRID = [
    Shape("G1", T=100, B=64, H=512, note="PyTorch fastrnns default"),
    Shape("G2", T=1024, B=16, H=768, note="FlashRNN paper shape"),
    Shape("G3", T=1024, B=8, H=256),
    Shape("G4", T=1024, B=1, H=512, note="single-stream inference"),
    Shape("G5", T=100, B=256, H=1024, note="large batch"),
    Shape("G6", T=100, B=32, H=512, layers=2, bidirectional=True),
    Shape("G7", T=0, B=64, H=512, packed=(20, 200), note="PackedSequence, lengths U[20,200] seed 1234"),
    Shape("G8", T=100, B=64, H=1024, proj_size=256),
    Shape("G9", T=25, B=64, H=2048, note="DeepBench-like"),
]

CPU_GRID = [
    Shape("C1", T=100, B=1, H=256),
    Shape("C2", T=100, B=8, H=512),
    Shape("C3", T=100, B=64, H=512),
    Shape("C4", T=50, B=32, H=256, layers=2),
]

# Not in the default grid; named for the A/B tools (`--shapes S1`). S1: where
# the cells, not the products, bound the step (NOTES changes 43-46). S2, S3:
# steps of 2 and 3 rows, which run the 2- and 3-row register tiles (change 61).
# S4 (G5's shape) and S5: wide layers, whose whole-sequence GEMMs and
# projection chunks weigh most (changes 86-87).
CPU_EXTRA = [
    Shape("S1", T=100, B=128, H=128, note="small H, large batch"),
    Shape("S2", T=100, B=2, H=256, note="2-row tiles"),
    Shape("S3", T=100, B=3, H=256, note="3-row tiles"),
    Shape("S4", T=100, B=256, H=1024, note="large batch, wide (G5)"),
    Shape("S5", T=100, B=64, H=1024, note="wide"),
]


# ------------------------------------------------------------------- timing


@dataclass
class Timing:
    median_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    reps: int

    @classmethod
    def of(cls, times_ms: list[float]) -> "Timing":
        t = sorted(times_ms)
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0]] * 3
        return cls(statistics.median(t), q[0], q[2], t[0], len(t))


def time_cuda(run: Callable[[int], object], n_sets: int, warmup: int = 5, reps: int = 20) -> Timing:
    """CUDA events around each call (synchronised after each, so launch
    overhead is counted as a user sees it); input set i % n_sets."""
    for i in range(warmup):
        run(i % n_sets)
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    times = []
    for r in range(reps):
        start.record()
        run(r % n_sets)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return Timing.of(times)


def time_cpu_interleaved(runs: dict[str, Callable[[int], object]], n_sets: int,
                         warmup: int = 2, reps: int = 20, budget_s: Optional[float] = None,
                         min_reps: int = 5,
                         before_each: Optional[Callable[[], object]] = None) -> dict[str, Timing]:
    """perf_counter around each call; the impls alternate call by call (and
    the order flips every round), so that load from other processes and
    frequency drift fall on all of them alike. ``budget_s`` caps the rounds
    (never fewer than ``min_reps``). ``before_each`` runs before every timed
    call, outside its time (to evict the caches, say)."""
    names = list(runs)
    for i in range(warmup):
        for name in names:
            runs[name](i % n_sets)
    times = {name: [] for name in names}
    t_start = time.perf_counter()
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if before_each is not None:
                before_each()
            t0 = time.perf_counter()
            runs[name](r % n_sets)
            times[name].append((time.perf_counter() - t0) * 1e3)
        if budget_s is not None and r + 1 >= min_reps and time.perf_counter() - t_start > budget_s:
            break
    return {name: Timing.of(t) for name, t in times.items()}


def peak_cuda_mib(run: Callable[[], object]) -> float:
    """Peak allocated memory during ``run()`` above what was allocated before
    it (weights and inputs excluded; activations, saved state, gradients and
    workspaces included)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = run()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del result
    return peak / 2**20


def progress(items: list, unit: str = "cell"):
    """items behind a tqdm bar on stderr where tqdm is installed, else as
    they are."""
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, unit=unit, dynamic_ncols=True, file=sys.stderr)


def sweep(cells: list[tuple]):
    """Yields each (shape, dtype name, mode) cell of a sweep, showing progress:
    a tqdm bar where tqdm is installed, else one line per cell."""
    bar = progress(cells)
    for k, cell in enumerate(bar):
        shape, dtype_name, mode = cell
        label = f"{shape.id} {dtype_name} {mode}"
        if bar is not cells:
            bar.set_description(label)
        else:
            print(f"[{k + 1}/{len(cells)}] {label}", flush=True)
        yield cell


def quick_call(module, x: torch.Tensor, mode: str) -> None:
    """One call as the quick A/B tools (ab_cpu.py, ab_builds.py) time it:
    the forward under no_grad (inference), or the forward and the backward
    of the output's float sum (training; the sweeps use ``autograd.grad``
    with a fixed cotangent instead, see the module docstring)."""
    if mode == "inference":
        with torch.no_grad():
            module(x)
    else:
        y, _ = module(x)
        y.float().sum().backward()


def max_abs_err(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("nan")
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0


# ----------------------------------------------------------------- metadata


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return ""


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_avg() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return ""


def _commit_and_dirty() -> tuple[str, str]:
    """From FUSEDLSTM_COMMIT where the caller sets it (a lent GPU machine gets
    a copy of the working tree whose .git may name an older commit), with
    "unknown" for whether the tree was clean; else from git."""
    sent = os.environ.get("FUSEDLSTM_COMMIT", "")
    if sent:
        return sent[:12], "unknown"
    commit = _git("rev-parse", "--short=12", "HEAD")
    return commit, "yes" if commit and _git("status", "--porcelain", "--untracked-files=no") else "no"


def metadata(device: str) -> dict:
    cuda = device == "cuda"
    commit, dirty = _commit_and_dirty()
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu: " + cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "commit": commit,
        "dirty": dirty,
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": device,
        "threads": torch.get_num_threads(),
    }


def gpu_slug(name: str) -> str:
    n = name.lower()
    for key in ("h200", "h100", "a100", "l40s", "l4", "a10g", "v100", "t4", "b200", "rtx"):
        if key in n:
            return key
    return "".join(c if c.isalnum() else "-" for c in n).strip("-") or "gpu"


def default_csv(prefix: str, out_dir: Optional[Path] = None) -> Path:
    out_dir = Path(out_dir) if out_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir / f"{prefix}-{_dt.date.today().isoformat()}.csv"


class CsvWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=COLUMNS, extrasaction="ignore")
        self._w.writeheader()
        self._f.flush()
        self.rows = []

    def write(self, row: dict) -> None:
        clean = {k: _fmt(v) for k, v in row.items()}
        self._w.writerow(clean)
        self._f.flush()
        self.rows.append(clean)

    def close(self):
        self._f.close()


def _fmt(v):
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.6g}"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return v


def shape_columns(shape: Shape) -> dict:
    return {"T": shape.T, "B": shape.B, "I": shape.I, "H": shape.H, "layers": shape.layers,
            "bidirectional": shape.bidirectional, "proj_size": shape.proj_size,
            "packed": bool(shape.packed)}


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows_csv(path, rows: list[dict]) -> None:
    """Writes a table's rows (dicts with the same keys, in column order)."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def latest_csv(directory: Optional[Path] = None, prefix: Optional[str] = None) -> Optional[Path]:
    d = Path(directory) if directory else RESULTS_DIR
    files = [p for p in d.glob("*.csv") if prefix is None or p.name.startswith(prefix)]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def cpu_table_parser(doc: str, shapes, threads: str) -> argparse.ArgumentParser:
    """The arguments the CPU table benches (bench_cpu_cell, bench_cpu_decoder,
    bench_cpu_bidirectional) share: --shapes (default: all of ``shapes``),
    --threads (comma-separated), --dtype and --csv; each adds its own."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(shapes))
    p.add_argument("--threads", default=threads)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--csv", type=Path)
    return p


def select(names: str, grid: list[Shape]) -> list[Shape]:
    if not names:
        return list(grid)
    wanted = [s.strip().upper() for s in names.split(",") if s.strip()]
    by_id = {s.id: s for s in grid}
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        raise SystemExit(f"unknown shape id(s) {unknown}; choose from {list(by_id)}")
    return [by_id[w] for w in wanted]
