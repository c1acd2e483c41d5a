"""Side-by-side parity and speed report: fusedlstm.LSTM against torch.nn.LSTM.

    python -m fusedlstm.report            # on CUDA if present, else on the CPU
    python -m fusedlstm.report --quick    # fewer shapes and runs
    python -m fusedlstm.report --device cpu --threads 2 --dtypes float32

For a few shapes (small enough to finish in well under two minutes on two CPU
cores) and each dtype, both modules get the same weights and inputs, then the
report prints

* parity against nn.LSTM in the same dtype: max abs error of output, h_n, c_n
  and of the gradients (input, h0, c0, every parameter);
* accuracy against a float64 reference (nn.LSTM in float64 on the same
  weights): fusedlstm's error next to nn.LSTM's own, and the verdict: in
  float32, ``torch.testing.assert_close`` defaults against nn.LSTM; in bf16/fp16,
  fusedlstm's error at most 2x nn.LSTM's own plus one unit of the dtype's
  precision at the largest reference magnitude (the forward results'; for the
  gradients, 1 + layers units at the largest gradient's), the test suite's
  rule: a result correct to its last bit can be an ulp off float64 where
  nn.LSTM happens to land on it;
* speed: median time of forward (no_grad) and forward+backward, the two run
  interleaved in one process, and the ratio fusedlstm / nn.LSTM (< 1: faster).

Your own shapes, as many as you like, beside or instead of the fixed ones:

    python -m fusedlstm.report --shape T=100,B=32,I=8,H=256
    python -m fusedlstm.report --shape T=200,B=16,I=40,H=320,layers=3,bidirectional,batch_first \
                               --shape T=80,B=8,I=64,H=128,proj=32,packed=10

(keys: T, B, I, H, layers, proj, and the flags bidirectional, batch_first,
packed; ``packed=LOW``: sequence lengths drawn from LOW to T, one of them T.)

Exit status 1 if a parity verdict fails. Needs nothing beyond torch (uses
tqdm for a progress bar when installed).
"""
from __future__ import annotations

import argparse
import os
import warnings
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence


@dataclass
class Case:
    name: str
    T: int
    B: int
    I: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    batch_first: bool = False
    packed: Optional[tuple] = None     # (low, high) lengths, unsorted
    dtypes: Optional[tuple] = None     # None: every dtype of the device
    timed: bool = True

    def describe(self) -> str:
        parts = [f"T={self.T}" if not self.packed else f"T<={self.packed[1]} packed",
                 f"B={self.B}", f"I={self.I}", f"H={self.H}"]
        if self.layers > 1:
            parts.append(f"L={self.layers}")
        if self.bidirectional:
            parts.append("bidir")
        if self.proj_size:
            parts.append(f"P={self.proj_size}")
        if self.batch_first:
            parts.append("bf")
        return " ".join(parts)


CASES = [
    Case("S1", T=50, B=8, I=128, H=128),
    Case("S2", T=20, B=8, I=64, H=96, layers=2, bidirectional=True, batch_first=True),
    Case("S3", T=40, B=8, I=96, H=96, proj_size=48),
    Case("S4", T=40, B=8, I=64, H=64, packed=(5, 40)),
    # issue 2's CPU shape C2: timed in float32 (nn.LSTM in bf16 is slow on CPUs)
    Case("S5", T=100, B=8, I=512, H=512, dtypes=("float32",)),
]
QUICK = ("S1", "S2", "S4")

_SIZE_KEYS = {"T": "T", "B": "B", "I": "I", "H": "H", "layers": "layers", "proj": "proj_size"}
_FLAG_KEYS = ("bidirectional", "batch_first", "packed")


def parse_shape(spec: str, name: str) -> Case:
    """The Case of a --shape spec: ``T=..,B=..,I=..,H=..`` with optional
    ``layers=N``, ``proj=P``, ``bidirectional``, ``batch_first`` and
    ``packed`` or ``packed=LOW``. Raises ValueError saying what is wrong."""
    sizes: dict = {}
    flags: dict = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, eq, value = (t.strip() for t in part.partition("="))
        if key in _FLAG_KEYS and not eq:
            flags[key] = True
            continue
        if key in ("bidirectional", "batch_first"):
            raise ValueError(f"{key} in --shape {spec!r} is a flag: give it without a value")
        if key not in _SIZE_KEYS and key != "packed":
            raise ValueError(f"unknown key {key!r} in --shape {spec!r}; keys: "
                             f"{', '.join(_SIZE_KEYS)}, {', '.join(_FLAG_KEYS)}")
        if key in sizes or key in flags:
            raise ValueError(f"{key!r} given twice in --shape {spec!r}")
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} in --shape {spec!r}: not an integer") from None
        (flags if key == "packed" else sizes)[key] = number
    missing = [k for k in ("T", "B", "I", "H") if k not in sizes]
    if missing:
        raise ValueError(f"--shape {spec!r} lacks {', '.join(missing)} (T, B, I and H "
                         "are needed)")
    for key in ("T", "B", "I", "H", "layers"):
        if key in sizes and sizes[key] < 1:
            raise ValueError(f"{key}={sizes[key]} in --shape {spec!r}: must be at least 1")
    proj = sizes.get("proj", 0)
    if not 0 <= proj < sizes["H"]:
        raise ValueError(f"proj={proj} in --shape {spec!r}: must be in [0, H) as "
                         "nn.LSTM's proj_size")
    packed = None
    if "packed" in flags:
        low = 1 if flags["packed"] is True else flags["packed"]
        if not 1 <= low <= sizes["T"]:
            raise ValueError(f"packed={low} in --shape {spec!r}: the shortest length must "
                             f"be in [1, T]")
        packed = (low, sizes["T"])
    return Case(name, **{_SIZE_KEYS[k]: v for k, v in sizes.items()},
                bidirectional=bool(flags.get("bidirectional")),
                batch_first=bool(flags.get("batch_first")), packed=packed)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------- building


def _modules(case: Case, dtype, device, seed=0):
    import fusedlstm

    kwargs = dict(num_layers=case.layers, bidirectional=case.bidirectional,
                  proj_size=case.proj_size, batch_first=case.batch_first)
    torch.manual_seed(seed)
    ref = nn.LSTM(case.I, case.H, **kwargs).to(device=device, dtype=dtype)
    fused = fusedlstm.LSTM(case.I, case.H, **kwargs).to(device=device, dtype=dtype)
    fused.load_state_dict(ref.state_dict())
    f64 = nn.LSTM(case.I, case.H, **kwargs).to(dtype=torch.float64)  # CPU: exact reference
    f64.load_state_dict({k: v.double().cpu() for k, v in ref.state_dict().items()})
    return fused, ref, f64


def _inputs(case: Case, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    d = 2 if case.bidirectional else 1
    p = case.proj_size or case.H
    shape = (case.B, case.T, case.I) if case.batch_first else (case.T, case.B, case.I)
    x = torch.randn(shape, generator=g)
    h0 = torch.randn(case.layers * d, case.B, p, generator=g) * 0.5
    c0 = torch.randn(case.layers * d, case.B, case.H, generator=g) * 0.5
    lengths = None
    if case.packed:
        lengths = torch.randint(case.packed[0], case.packed[1] + 1, (case.B,), generator=g)
        lengths[0] = case.T  # one full-length sequence
    return [t.to(dtype) for t in (x, h0, c0)], lengths


def _prepare(x, h0, c0, lengths, case: Case, device, requires_grad: bool):
    leaves = [t.to(device).detach().requires_grad_(requires_grad) for t in (x, h0, c0)]
    x_in = leaves[0]
    if lengths is not None:
        x_in = pack_padded_sequence(x_in, lengths, batch_first=case.batch_first,
                                    enforce_sorted=False)
    return leaves, x_in


def _data(out):
    return out.data if isinstance(out, PackedSequence) else out


def _run(module, case, tensors, lengths, device, cot=None):
    """Forward (and backward when cot is given): ({name: tensor}, cotangents)."""
    leaves, x_in = _prepare(*tensors, lengths, case, device, requires_grad=True)
    out, (h_n, c_n) = module(x_in, (leaves[1], leaves[2]))
    outs = [_data(out), h_n, c_n]
    if cot is None:
        g = torch.Generator().manual_seed(7)
        cot = [torch.randn(o.shape, generator=g).to(o) for o in outs]
    cot_here = [c.to(device=o.device, dtype=o.dtype) for c, o in zip(cot, outs)]
    names = ["input", "h0", "c0"] + [n for n, _ in module.named_parameters()]
    wrt = leaves + [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(outs, wrt, cot_here)
    result = {"output": outs[0], "h_n": h_n, "c_n": c_n}
    result.update({"grad " + n: g for n, g in zip(names, grads)})
    return {k: v.detach() for k, v in result.items()}, cot


def _max_err(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max()) if a.numel() else 0.0


# ------------------------------------------------------------------ timing


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(fns: dict, device, budget_s: float, min_reps: int, max_reps: int):
    """Median ms of each callable, alternating between them call by call."""
    for fn in fns.values():  # warm-up
        fn()
    _sync(device)
    times = {k: [] for k in fns}
    start = time.perf_counter()
    for r in range(max_reps):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            if device.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                fns[k]()
                e1.record()
                e1.synchronize()
                times[k].append(e0.elapsed_time(e1))
            else:
                t0 = time.perf_counter()
                fns[k]()
                times[k].append((time.perf_counter() - t0) * 1e3)
        if r + 1 >= min_reps and time.perf_counter() - start > budget_s:
            break
    return {k: statistics.median(v) for k, v in times.items()}, len(times[next(iter(times))])


def _speed(case, fused, ref, tensors, lengths, device, budget_s, min_reps, max_reps):
    sets = []
    for s in range(3):  # rotate input sets
        g = torch.Generator().manual_seed(100 + s)
        x = torch.randn(tensors[0].shape, generator=g).to(device=device, dtype=tensors[0].dtype)
        sets.append(x)
    h = (tensors[1].to(device), tensors[2].to(device))

    def wrap(x):
        if lengths is None:
            return x
        return pack_padded_sequence(x, lengths, batch_first=case.batch_first, enforce_sorted=False)

    def fwd(m):
        state = {"i": 0}

        def call():
            x = sets[state["i"] % 3]
            state["i"] += 1
            with torch.no_grad():
                m(wrap(x), h)
        return call

    train_sets = [x.clone().requires_grad_() for x in sets]
    params = {id(fused): list(fused.parameters()), id(ref): list(ref.parameters())}

    def train(m):
        state = {"i": 0}

        def call():
            x = train_sets[state["i"] % 3]
            state["i"] += 1
            out = _data(m(wrap(x), h)[0])
            torch.autograd.grad(out, [x, *params[id(m)]], torch.ones_like(out))
        return call

    res = {}
    for mode, make in (("fwd", fwd), ("train", train)):
        med, reps = _time_interleaved({"fused": make(fused), "torch": make(ref)}, device,
                                      budget_s, min_reps, max_reps)
        res[mode] = (med["fused"], med["torch"], reps)
    return res


# ------------------------------------------------------------------ report


@dataclass
class Row:
    case: Case
    dtype: str
    vs_torch: dict = field(default_factory=dict)
    worst_grad: tuple = ("", 0.0)
    fused_f64: tuple = (0.0, 0.0)   # (forward, gradients)
    torch_f64: tuple = (0.0, 0.0)
    ok: Optional[bool] = None
    why: str = ""
    speed: Optional[dict] = None
    error: str = ""


def _check(case: Case, dtype_name: str, device, args) -> Row:
    dtype = DTYPES[dtype_name]
    row = Row(case, dtype_name)
    fused, ref, f64 = _modules(case, dtype, device)
    tensors, lengths = _inputs(case, dtype, device, seed=1)
    res_t, cot = _run(ref, case, tensors, lengths, device)
    res_f, _ = _run(fused, case, tensors, lengths, device, cot)
    res_64, _ = _run(f64, case, [t.double() for t in tensors], lengths, torch.device("cpu"),
                     [c.double().cpu() for c in cot])
    for k in ("output", "h_n", "c_n"):
        row.vs_torch[k] = _max_err(res_f[k], res_t[k])
    grads = [k for k in res_t if k.startswith("grad ")]
    errs = {k: _max_err(res_f[k], res_t[k]) for k in grads}
    worst = max(errs, key=errs.get)
    row.worst_grad = (worst[5:], errs[worst])

    def f64_errs(res):
        fwd = max(_max_err(res[k], res_64[k]) for k in ("output", "h_n", "c_n"))
        return fwd, max(_max_err(res[k], res_64[k]) for k in grads)
    row.fused_f64, row.torch_f64 = f64_errs(res_f), f64_errs(res_t)

    # judged against float64: at most 2x nn.LSTM's own error (issue 2, section
    # 5), plus one unit at the reference's scale (the module docstring)
    def scale(keys):
        return max((float(res_64[k].abs().max()) for k in keys if res_64[k].numel()),
                   default=0.0)
    unit = torch.finfo(dtype).eps
    floors = (unit * scale(("output", "h_n", "c_n")), (1 + case.layers) * unit * scale(grads))
    bad = [n for n, f, t, floor in zip(("forward", "gradients"), row.fused_f64,
                                       row.torch_f64, floors) if f > 2 * t + floor]
    if dtype == torch.float32:
        # float32: torch.testing.assert_close defaults against nn.LSTM; where
        # a long reduction (bias and weight gradients over T*B rows) exceeds
        # them, the float64 rule decides, and the verdict says so
        try:
            for k in res_t:
                torch.testing.assert_close(res_f[k], res_t[k], msg=lambda m, k=k: f"{k}: {m}")
            row.ok = True
        except AssertionError as e:
            first = str(e).splitlines()[0].split(":")[0]
            row.ok = not bad
            row.why = (f"(assert_close fails on {first}; vs float64 within 2x nn.LSTM's own)"
                       if row.ok else f"assert_close fails on {first}; vs float64 worse than 2x "
                       "nn.LSTM's: " + ", ".join(bad))
    else:
        row.ok = not bad
        if bad:
            row.why = "error vs float64 above 2x nn.LSTM's: " + ", ".join(bad)
    if case.timed and not args.no_timing:
        if time.perf_counter() > args.deadline:
            row.speed = "skipped (--time-limit reached)"
        else:
            row.speed = _speed(case, fused, ref, tensors, lengths, device, args.budget,
                               args.min_reps, args.max_reps)
    return row


def _e(v: float) -> str:
    return f"{v:.1e}"


def _table(header, rows) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def render(rows: list[Row], device, info: str) -> str:
    out = [info, ""]
    out.append("Parity with torch.nn.LSTM, same dtype: max abs error")
    out.append(_table(
        ["shape", "", "dtype", "output", "h_n", "c_n", "grads (worst)", "verdict"],
        [[r.case.name, r.case.describe(), r.dtype] + (
            [r.error[:70], "", "", "", "ERROR"] if r.error else
            [_e(r.vs_torch["output"]), _e(r.vs_torch["h_n"]), _e(r.vs_torch["c_n"]),
             f"{_e(r.worst_grad[1])} ({r.worst_grad[0]})",
             ("ok " + r.why if r.ok else "FAIL " + r.why).strip()]) for r in rows]))
    out.append("")
    out.append("Against a float64 reference (nn.LSTM in float64, same weights): max abs error")
    out.append(_table(
        ["shape", "dtype", "fwd fusedlstm", "fwd nn.LSTM", "grad fusedlstm", "grad nn.LSTM"],
        [[r.case.name, r.dtype, _e(r.fused_f64[0]), _e(r.torch_f64[0]), _e(r.fused_f64[1]),
          _e(r.torch_f64[1])] for r in rows if not r.error]))
    skipped = [r for r in rows if isinstance(r.speed, str)]
    timed = [r for r in rows if isinstance(r.speed, dict)]
    if timed:
        out.append("")
        out.append(f"Speed on {device.type}: median ms, interleaved in one process; "
                   "ratio = fusedlstm / nn.LSTM (< 1: fusedlstm faster)")
        out.append(_table(
            ["shape", "", "dtype", "fwd fused", "fwd torch", "ratio", "fwd+bwd fused",
             "fwd+bwd torch", "ratio", "runs"],
            [[r.case.name, r.case.describe(), r.dtype,
              f"{r.speed['fwd'][0]:.2f}", f"{r.speed['fwd'][1]:.2f}",
              f"{r.speed['fwd'][0] / r.speed['fwd'][1]:.2f}",
              f"{r.speed['train'][0]:.2f}", f"{r.speed['train'][1]:.2f}",
              f"{r.speed['train'][0] / r.speed['train'][1]:.2f}",
              r.speed["fwd"][2]] for r in timed]))
    if skipped:
        out.append("not timed (time limit): " + ", ".join(f"{r.case.name} {r.dtype}" for r in skipped))
    n_bad = sum(1 for r in rows if r.error or not r.ok)
    out.append("")
    out.append("all parity checks passed" if not n_bad else f"{n_bad} check(s) FAILED")
    return "\n".join(out)


def _device_info(device) -> str:
    import fusedlstm

    if device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)}, CUDA {torch.version.cuda}"
    else:
        model = platform.processor() or platform.machine()
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        load = ""
        if hasattr(os, "getloadavg"):
            load = f", load {os.getloadavg()[0]:.2f}"
        kernels = (f"recurrence {torch.ops.fusedlstm.cpu_recurrence()}, "
                   f"GEMMs {torch.ops.fusedlstm.cpu_gemm_backend()}")
        what = f"{model}, {torch.get_num_threads()} threads{load}; {kernels}"
    return (f"fusedlstm {fusedlstm.__version__} vs torch.nn.LSTM | device {device.type} "
            f"({what}) | torch {torch.__version__}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fusedlstm.report",
                                description="fusedlstm vs torch.nn.LSTM: parity and speed")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--dtypes", default=None,
                   help="comma-separated (default: float32,bfloat16 on CPU; "
                        "float32,bfloat16,float16 on CUDA)")
    p.add_argument("--shapes", default=None, help="comma-separated from " +
                   ",".join(c.name for c in CASES))
    p.add_argument("--shape", action="append", default=[], metavar="SPEC",
                   help="a shape of your own, e.g. T=100,B=32,I=8,H=256[,layers=2][,proj=64]"
                        "[,bidirectional][,batch_first][,packed[=LOW]]; repeatable. Alone, "
                        "only these run; with --shapes or --quick, beside those")
    p.add_argument("--quick", action="store_true", help=f"shapes {','.join(QUICK)}, fewer runs")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--no-timing", action="store_true", help="parity only")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for all timing together (default 60, quick 20); spread over "
                        "the timed cases, and cases past it are left untimed")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs per case and mode (default: from --time-limit)")
    p.add_argument("--min-reps", type=int, default=3)
    p.add_argument("--max-reps", type=int, default=30)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA was asked for but is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    if args.time_limit is None:
        args.time_limit = 20.0 if args.quick else 60.0
    default_dtypes = "float32,bfloat16,float16" if device.type == "cuda" else "float32,bfloat16"
    dtypes = [d.strip() for d in (args.dtypes or default_dtypes).split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d}; choose from {', '.join(DTYPES)}")
    names = args.shapes.split(",") if args.shapes else (QUICK if args.quick else None)
    if names is None and args.shape:
        names = []
    cases = [c for c in CASES if names is None or c.name in names]
    if names is not None:
        unknown = set(names) - {c.name for c in cases}
        if unknown:
            p.error(f"unknown shape(s) {sorted(unknown)}")
    for index, spec in enumerate(args.shape, 1):
        try:
            cases.append(parse_shape(spec, f"U{index}"))
        except ValueError as e:
            p.error(str(e))

    # nn.LSTM warns that oneDNN lacks projections and falls back; that is its business
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    info = _device_info(device)
    print(info, flush=True)
    jobs = [(c, d) for c in cases for d in dtypes if c.dtypes is None or d in c.dtypes]
    try:
        from tqdm import tqdm
        it = tqdm(jobs, unit="case", leave=False, file=sys.stderr)
    except ImportError:
        it = jobs
    n_timed = sum(1 for c, _ in jobs if c.timed) or 1
    if args.budget is None:
        args.budget = args.time_limit / n_timed / 2
    rows = []
    t0 = time.perf_counter()
    # parity takes a few seconds per case; timing gets its limit on top of that
    args.deadline = t0 + args.time_limit + 4.0 * len(jobs)
    for case, d in it:
        if hasattr(it, "set_description"):
            it.set_description(f"{case.name} {d}")
        else:
            print(f"  {case.name} {d} ...", file=sys.stderr, flush=True)
        try:
            rows.append(_check(case, d, device, args))
        except Exception as e:  # one failing case must not hide the others
            rows.append(Row(case, d, ok=False, error=f"{type(e).__name__}: {e}"))
    print()
    print(render(rows, device, f"{info} | {time.perf_counter() - t0:.0f} s"))
    return 0 if all(r.ok and not r.error for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
