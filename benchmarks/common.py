"""Shared machinery of the fusedlstm benchmarks (bench_gpu.py, bench_cpu.py).

* ``Shape``: one grid point, and its work model (FLOPs and bytes, see NOTES.md).
* ``build_impls``: every implementation side by side with identical weights:
  fusedlstm eager and CUDA-graph replay, torch.nn.LSTM (cuDNN) eager and
  graph replay, native (nn.LSTM with cuDNN disabled), FlashRNN when importable;
  on the CPU fusedlstm and nn.LSTM (oneDNN/ATen).
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

import csv
import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

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


# ------------------------------------------------------------ implementations


def make_reference(shape: Shape, dtype: torch.dtype, device, seed: int = 0) -> nn.LSTM:
    torch.manual_seed(seed)
    ref = nn.LSTM(shape.I, shape.H, num_layers=shape.layers,
                  bidirectional=shape.bidirectional, proj_size=shape.proj_size)
    return ref.to(device=device, dtype=dtype)


def make_inputs(shape: Shape, dtype, device, n_sets: int, seed: int = 1):
    """n_sets different inputs of the shape ([T, B, I], or PackedSequence)."""
    g = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(n_sets):
        x = torch.randn(shape.T, shape.B, shape.I, generator=g).to(device=device, dtype=dtype)
        if shape.packed:
            lengths = torch.tensor(shape.lengths)
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        sets.append(x)
    return sets


def _data(x):
    return x.data if isinstance(x, PackedSequence) else x


def _with_data(x, data):
    if isinstance(x, PackedSequence):
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return data


def make_cotangent(out_like: torch.Tensor, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_like.shape, generator=g).to(out_like)


class Impl:
    """A callable ``run(i)`` over input set i, plus what it needs for parity checks."""

    def __init__(self, name: str):
        self.name = name

    def setup(self, mode: str, inputs: list) -> None:  # may raise; caller records
        raise NotImplementedError

    def run(self, i: int):
        raise NotImplementedError

    def output(self, i: int) -> torch.Tensor:
        """The output (and in training the input gradient) for set i, for parity."""
        raise NotImplementedError

    def teardown(self) -> None:
        pass


class EagerModule(Impl):
    """Calls a module; ``context`` wraps every call (e.g. cuDNN disabled)."""

    def __init__(self, name, module, context: Optional[Callable] = None):
        super().__init__(name)
        self.module = module
        self.context = context or _null_context

    def setup(self, mode, inputs):
        self.mode = mode
        self.params = [p for p in self.module.parameters()]
        if mode == "training":
            self.inputs = [_with_data(x, _data(x).detach().clone().requires_grad_()) for x in inputs]
            with torch.no_grad(), self.context():
                out = self.module(inputs[0])[0]
            self.cot = make_cotangent(_data(out))
        else:
            self.inputs = inputs

    def run(self, i):
        x = self.inputs[i]
        with self.context():
            if self.mode == "inference":
                with torch.no_grad():
                    return self.module(x)
            out = _data(self.module(x)[0])
            grads = torch.autograd.grad(out, [_data(x), *self.params], self.cot)
            return out.detach(), grads

    def output(self, i):
        return parity_vector(self.mode, self.run(i))

    def teardown(self):
        self.inputs = None


def parity_vector(mode: str, result) -> torch.Tensor:
    """Flattened output (inference), or output and input gradient (training),
    of an Impl.run result, for max-error comparison between impls."""
    if mode == "inference":
        out = result[0]
        return _data(out).float().flatten()
    out, grads = result
    return torch.cat([out.float().flatten(), grads[0].float().flatten()])


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cudnn_off():
    return torch.backends.cudnn.flags(enabled=False)


class GraphReplay(Impl):
    """CUDA-graph replay of an EagerModule: one graph per input set (so that
    the input sets still rotate), captured after a warm-up on a side stream."""

    def __init__(self, name, eager: EagerModule):
        super().__init__(name)
        self.eager = eager

    def setup(self, mode, inputs):
        self.eager.setup(mode, inputs)
        n = len(inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i in range(3):
                self.eager.run(i % n)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.graphs, self.results = [], []
        for i in range(n):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self.results.append(self.eager.run(i))
            self.graphs.append(g)
        torch.cuda.synchronize()

    def run(self, i):
        self.graphs[i].replay()

    def output(self, i):
        self.graphs[i].replay()
        torch.cuda.synchronize()
        return parity_vector(self.eager.mode, self.results[i])

    def teardown(self):
        self.graphs, self.results = [], []
        self.eager.teardown()


class FlashRNNImpl(Impl):
    """FlashRNN ``cuda_fused`` LSTM (only 1 layer, one direction, no packing or
    projection). The input projection x @ W_ihᵀ is included, so it does the
    same work as nn.LSTM. Weights come from the same nn.LSTM (gate order
    i, f, g, o is the same in both)."""

    def __init__(self, ref: nn.LSTM, shape: Shape, dtype: torch.dtype, device_info: dict):
        super().__init__("flashrnn")
        if shape.layers != 1 or shape.bidirectional or shape.proj_size or shape.packed:
            raise NotImplementedError("FlashRNN: 1 layer, unidirectional, unpacked, no projection only")
        import flashrnn  # noqa: F401
        self.fr = _flashrnn_with_device_info(device_info)
        H = shape.H
        self.H = H
        self.dtype_name = {torch.bfloat16: "bfloat16", torch.float16: "float16",
                           torch.float32: "float32"}[dtype]
        self.w_ih = ref.weight_ih_l0.detach().clone()
        self.R = ref.weight_hh_l0.detach().clone().view(4, 1, H, H)      # GHDP
        self.b = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().clone().view(4, 1, H)  # GHD

    def setup(self, mode, inputs):
        self.mode = mode
        # batch-first [B, T, I] as FlashRNN takes its input
        self.inputs = [x.transpose(0, 1).contiguous() for x in inputs]
        if mode == "training":
            for t in (self.w_ih, self.R, self.b):
                t.requires_grad_(True)
            self.inputs = [x.requires_grad_(True) for x in self.inputs]
            out = self._forward(self.inputs[0])
            # the same cotangent as the time-major impls get, laid out batch-first
            self.cot = make_cotangent(out.detach().transpose(0, 1)).transpose(0, 1).contiguous()

    def _forward(self, x):
        B, T, _ = x.shape
        wx = (x @ self.w_ih.t()).view(B, T, 4, 1, self.H)  # BTGHD
        h, _last = self.fr.flashrnn(wx, self.R, self.b, function="lstm",
                                    backend="cuda_fused", dtype=self.dtype_name)
        h = h[0]  # states[0] = h: [B, T, NH, D]
        if h.shape[1] == T + 1:  # some versions keep the initial state
            h = h[:, 1:]
        return h.reshape(B, T, self.H)

    def run(self, i):
        x = self.inputs[i]
        if self.mode == "inference":
            with torch.no_grad():
                return self._forward(x)
        out = self._forward(x)
        grads = torch.autograd.grad(out, [x, self.w_ih, self.R, self.b], self.cot)
        return out.detach(), grads

    def output(self, i):
        r = self.run(i)
        # back to time-major, as nn.LSTM's output and input gradient are
        if self.mode == "inference":
            return r.transpose(0, 1).float().flatten()
        out, grads = r
        return torch.cat([out.transpose(0, 1).float().flatten(),
                          grads[0].transpose(0, 1).float().flatten()])


def flashrnn_device_info(overrides: Optional[dict] = None) -> dict:
    """The figures FlashRNN's device-query module would give (its C++ module
    does not build on CUDA 13), from torch's device properties; H100 values
    where torch does not expose a field. ``overrides`` wins."""
    info = {"maxThreadsPerBlock": 1024, "regsPerMultiprocessor": 65536,
            "multiProcessorCount": 132, "sharedMemPerBlockOptin": 232448}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        for key, attr in (("multiProcessorCount", "multi_processor_count"),
                          ("regsPerMultiprocessor", "regs_per_multiprocessor"),
                          ("sharedMemPerBlockOptin", "shared_memory_per_block_optin"),
                          ("maxThreadsPerBlock", "max_threads_per_block")):
            value = getattr(p, attr, None)
            if value:
                info[key] = int(value)
    info.update(overrides or {})
    return info


def _flashrnn_with_device_info(device_info: dict):
    """FlashRNN's module with its device query answered at run time: every
    loaded flashrnn module's ``get_gpu_info`` is rebound in memory (nothing on
    disk changes). Returns the module whose ``flashrnn`` function we call."""
    import importlib
    import sys
    import types

    for name in ("flashrnn.flashrnn.flashrnn", "flashrnn.flashrnn", "flashrnn"):
        try:
            importlib.import_module(name)
        except Exception:
            pass

    def get_gpu_info(device_id=0, *args, **kwargs):
        return dict(device_info)

    target = None
    for name, mod in list(sys.modules.items()):
        if not (name == "flashrnn" or name.startswith("flashrnn.")) or mod is None:
            continue
        if hasattr(mod, "get_gpu_info"):
            mod.get_gpu_info = get_gpu_info
        if (target is None and isinstance(getattr(mod, "flashrnn", None), types.FunctionType)
                and hasattr(mod, "FlashRNNConfig") and hasattr(mod, "get_gpu_info")):
            target = mod
    if target is None:
        raise ImportError("could not locate FlashRNN's flashrnn() next to get_gpu_info")
    return target


def flashrnn_available() -> bool:
    try:
        import flashrnn  # noqa: F401
        return True
    except Exception:
        return False


def build_impls(shape: Shape, dtype: torch.dtype, device, names: list[str],
                flashrnn_info: Optional[dict] = None, seed: int = 0):
    """{name: Impl or Exception} for the requested names, all with the weights
    of one seeded nn.LSTM. A construction failure is returned, not raised."""
    import fusedlstm

    ref = make_reference(shape, dtype, device, seed)
    out = {}

    def fused():
        m = fusedlstm.LSTM(shape.I, shape.H, num_layers=shape.layers,
                           bidirectional=shape.bidirectional, proj_size=shape.proj_size)
        m = m.to(device=device, dtype=dtype)
        m.load_state_dict(ref.state_dict())
        return m

    def torch_copy():
        m = make_reference(shape, dtype, device, seed)
        m.load_state_dict(ref.state_dict())
        return m

    makers = {
        "fusedlstm": lambda: EagerModule("fusedlstm", fused()),
        "fusedlstm_graph": lambda: GraphReplay("fusedlstm_graph", EagerModule("fusedlstm", fused())),
        "cudnn": lambda: EagerModule("cudnn", torch_copy()),
        "cudnn_graph": lambda: GraphReplay("cudnn_graph", EagerModule("cudnn", torch_copy())),
        "native": lambda: EagerModule("native", torch_copy(), context=_cudnn_off),
        "nn_lstm": lambda: EagerModule("nn_lstm", torch_copy()),
        "flashrnn": lambda: FlashRNNImpl(ref, shape, dtype, flashrnn_info or {}),
    }
    for name in names:
        try:
            out[name] = makers[name]()
        except Exception as e:  # recorded by the caller
            out[name] = e
    return out


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
                         min_reps: int = 5) -> dict[str, Timing]:
    """perf_counter around each call; the impls alternate call by call (and
    the order flips every round), so that load from other processes and
    frequency drift fall on all of them alike. ``budget_s`` caps the rounds
    (never fewer than ``min_reps``)."""
    names = list(runs)
    for i in range(warmup):
        for name in names:
            runs[name](i % n_sets)
    times = {name: [] for name in names}
    t_start = time.perf_counter()
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
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


def sweep(cells: list[tuple]):
    """Yields each (shape, dtype name, mode) cell of a sweep, showing progress:
    a tqdm bar where tqdm is installed, else one line per cell."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    bar = tqdm(cells, unit="cell", dynamic_ncols=True) if tqdm else cells
    for k, cell in enumerate(bar):
        shape, dtype_name, mode = cell
        label = f"{shape.id} {dtype_name} {mode}"
        if tqdm:
            bar.set_description(label)
        else:
            print(f"[{k + 1}/{len(cells)}] {label}", flush=True)
        yield cell


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


def metadata(device: str) -> dict:
    cuda = device == "cuda"
    return {
        "gpu": torch.cuda.get_device_name(0) if cuda else "cpu: " + cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "cudnn": str(torch.backends.cudnn.version() or "") if cuda else "",
        "commit": _git("rev-parse", "--short=12", "HEAD"),
        "dirty": "yes" if _git("status", "--porcelain", "--untracked-files=no") else "no",
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


def latest_csv(directory: Optional[Path] = None, prefix: Optional[str] = None) -> Optional[Path]:
    d = Path(directory) if directory else RESULTS_DIR
    files = [p for p in d.glob("*.csv") if prefix is None or p.name.startswith(prefix)]
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


def select(names: str, grid: list[Shape]) -> list[Shape]:
    if not names:
        return list(grid)
    wanted = [s.strip().upper() for s in names.split(",") if s.strip()]
    by_id = {s.id: s for s in grid}
    unknown = [w for w in wanted if w not in by_id]
    if unknown:
        raise SystemExit(f"unknown shape id(s) {unknown}; choose from {list(by_id)}")
    return [by_id[w] for w in wanted]
