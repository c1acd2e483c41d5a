#!/usr/bin/env python
"""GPU benchmark of fusedlstm against cuDNN (eager and CUDA-graph replay),
PyTorch's native CUDA LSTM and FlashRNN, on the fixed grid G1-G9 of issue 4.

    python benchmarks/bench_gpu.py                      # whole grid, all dtypes and modes
    python benchmarks/bench_gpu.py --subset G1,G3 --dtypes bfloat16
    python benchmarks/bench_gpu.py --quick --out OUTDIR # a few cells (scripts/gpu_check.sh)

Writes one CSV row per (shape, dtype, mode, impl) to
benchmarks/results/<gpu>-<date>.csv (or OUTDIR), flushed row by row; a cell
that fails records its error in the ``error`` column and the sweep goes on.
Then draws the speed-up plot beside the CSV (benchmarks/plot.py).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
import implementations  # noqa: E402

DEFAULT_IMPLS = ["fusedlstm", "fusedlstm_graph", "cudnn", "cudnn_graph", "native", "flashrnn"]
# Opt-in: fusedlstm with FUSEDLSTM_CUDA_PATH=cluster (the cluster kernels,
# forward and backward, where a layer fits them; error rows elsewhere), eager
# and graph-replayed; and the same with FUSEDLSTM_CLUSTER_SYNC=whole (the
# forward's step barrier in one piece, as before NOTES change 71).
# Opt-in: fusedlstm with FUSEDLSTM_CUDA_DIRECTIONS=concurrent (a
# bidirectional layer's directions on two streams; the same as fusedlstm on
# one direction), eager and graph-replayed.
# Opt-in: fusedlstm with FUSEDLSTM_CUDA_PATH=persistent and =stepwise (a
# cuBLAS GEMM and a fused cell kernel per step), eager and graph-replayed:
# the data behind `auto`'s choice between them (persistent_pays_off).
ALL_IMPLS = DEFAULT_IMPLS + ["fusedlstm_cluster", "fusedlstm_cluster_graph",
                             "fusedlstm_cluster_whole", "fusedlstm_cluster_whole_graph",
                             "fusedlstm_concurrent", "fusedlstm_concurrent_graph",
                             "fusedlstm_persistent", "fusedlstm_persistent_graph",
                             "fusedlstm_stepwise", "fusedlstm_stepwise_graph"]
QUICK_SHAPES = "G1,G4,G7"
QUICK_DTYPES = "float32,bfloat16"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Shapes: " + "; ".join(
                                    f"{s.id}: {s.describe()}" for s in common.GPU_GRID))
    p.add_argument("--subset", default="", help="comma-separated shape ids, e.g. G1,G3 (default: all)")
    p.add_argument("--dtypes", default="float32,bfloat16,float16",
                   help="comma-separated from float32,bfloat16,float16")
    p.add_argument("--modes", default="inference,training", help="inference,training")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS),
                   help="comma-separated from " + ",".join(ALL_IMPLS))
    p.add_argument("--reps", type=int, default=20, help="timed runs per cell (median; >= 20 for reports)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--input-sets", type=int, default=3, help="input sets rotated between runs")
    p.add_argument("--quick", action="store_true",
                   help=f"shapes {QUICK_SHAPES}, dtypes {QUICK_DTYPES}, 5 reps, no FlashRNN: a smoke run")
    p.add_argument("--out", default=None, help="directory for the CSV and PNG (default benchmarks/results)")
    p.add_argument("--csv", default=None, help="exact CSV path (overrides --out naming)")
    p.add_argument("--flashrnn-dtypes", default="bfloat16",
                   help="dtypes FlashRNN runs in (it JIT-compiles 40-70 s per shape and dtype)")
    p.add_argument("--flashrnn-info", default="",
                   help="device figures for FlashRNN, key=value,... (maxThreadsPerBlock, "
                        "regsPerMultiprocessor, multiProcessorCount, sharedMemPerBlockOptin); "
                        "default: from torch's device properties")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-parity", action="store_true", help="skip the max_abs_err column")
    args = p.parse_args(argv)
    if args.quick:
        args.subset = args.subset or QUICK_SHAPES
        if args.dtypes == p.get_default("dtypes"):
            args.dtypes = QUICK_DTYPES
        if args.reps == p.get_default("reps"):
            args.reps = 5
        args.warmup = min(args.warmup, 2)
        if args.impls == p.get_default("impls"):
            args.impls = ",".join(i for i in DEFAULT_IMPLS if i != "flashrnn")
    return args


def _split(s):
    return [x.strip() for x in s.split(",") if x.strip()]


def _parse_info(s):
    info = {}
    for item in _split(s):
        key, _, value = item.partition("=")
        info[key.strip()] = int(value)
    return info


def _err_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".replace("\n", " ").replace("\r", " ")
    return text[:300]


def run_cell(shape, dtype_name, mode, impl_names, args, meta, writer, flash_info, device="cuda"):
    """Times every impl on one (shape, dtype, mode); writes one row per impl."""
    dtype = common.DTYPES[dtype_name]
    base = dict(meta, shape_id=shape.id, dtype=dtype_name, mode=mode,
                gflop=shape.flops(mode) / 1e9, input_sets=args.input_sets,
                **common.shape_columns(shape))
    names = [n for n in impl_names
             if n != "flashrnn" or dtype_name in _split(args.flashrnn_dtypes)]
    try:
        inputs = implementations.make_inputs(shape, dtype, device, args.input_sets)
        impls = implementations.build_impls(shape, dtype, device, names, flashrnn_info=flash_info)
    except Exception as e:
        for n in names:
            writer.write(dict(base, impl=n, error=_err_text(e)))
        return

    reference = None
    # cudnn first: it is the parity reference of the cell
    order = sorted(names, key=lambda n: (n != "cudnn", ALL_IMPLS.index(n) if n in ALL_IMPLS else 99))
    for name in order:
        impl = impls[name]
        row = dict(base, impl=name)
        if isinstance(impl, Exception):
            row["error"] = _err_text(impl)
            writer.write(row)
            continue
        try:
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            impl.setup(mode, inputs)
            if name.endswith("_graph"):
                # replay allocates nothing: report the peak of warm-up and
                # capture above what was allocated before (>= the graph pools)
                torch.cuda.synchronize()
                row["peak_mib"] = (torch.cuda.max_memory_allocated() - before) / 2**20
            else:
                row["peak_mib"] = common.peak_cuda_mib(lambda: impl.run(0))
            if not args.no_parity:
                vec = impl.output(0)
                if reference is None and name == "cudnn":
                    reference = vec
                elif reference is not None:
                    row["max_abs_err"] = common.max_abs_err(vec, reference)
                del vec
            t = common.time_cuda(impl.run, args.input_sets, warmup=args.warmup, reps=args.reps)
            row.update(median_ms=t.median_ms, q1_ms=t.q1_ms, q3_ms=t.q3_ms, min_ms=t.min_ms,
                       reps=t.reps, us_per_step=t.median_ms * 1e3 / shape.T,
                       achieved_gflops=shape.flops(mode) / 1e9 / (t.median_ms / 1e3))
        except Exception as e:
            row["error"] = _err_text(e)
            if os.environ.get("BENCH_TRACEBACK"):
                traceback.print_exc()
            try:
                torch.cuda.synchronize()
            except Exception as e2:  # a sticky CUDA error poisons the rest of the process
                row["error"] += f" | CUDA context lost: {_err_text(e2)}"
                writer.write(row)
                raise SystemExit(f"CUDA context lost in {shape.id}/{dtype_name}/{mode}/{name}; "
                                 f"rows so far are in {writer.path}")
        finally:
            try:
                impl.teardown()
            except Exception:
                pass
        writer.write(row)
    del impls, inputs, reference
    gc.collect()
    torch.cuda.empty_cache()


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu.py: no CUDA device is available (torch %s, torch.version.cuda=%s); "
              "nothing to do. Run benchmarks/bench_cpu.py for the CPU grid."
              % (torch.__version__, torch.version.cuda), file=sys.stderr)
        return 2
    try:
        import fusedlstm  # noqa: F401
        has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key(
            "fusedlstm::lstm_layer_forward", "CUDA")
    except Exception as e:
        print(f"bench_gpu.py: cannot import fusedlstm: {e}", file=sys.stderr)
        return 2
    if not has_cuda_kernel:
        print("bench_gpu.py: warning: fusedlstm has no CUDA kernel registered (built without "
              "CUDA?); its rows will record the error.", file=sys.stderr)

    shapes = common.select(args.subset, common.GPU_GRID)
    dtypes = _split(args.dtypes)
    modes = _split(args.modes)
    impls = _split(args.impls)
    for d in dtypes:
        if d not in common.DTYPES:
            raise SystemExit(f"unknown dtype {d}")
    for m in modes:
        if m not in common.MODES:
            raise SystemExit(f"unknown mode {m}")
    for i in impls:
        if i not in ALL_IMPLS:
            raise SystemExit(f"unknown impl {i}; choose from {ALL_IMPLS}")
    if "flashrnn" in impls and not implementations.flashrnn_available():
        print("bench_gpu.py: FlashRNN is not installed; its rows are left out.", file=sys.stderr)
        impls.remove("flashrnn")
    flash_info = implementations.flashrnn_device_info(_parse_info(args.flashrnn_info))

    torch.backends.cuda.matmul.allow_tf32 = False  # same fp32 math for every impl
    torch.backends.cudnn.allow_tf32 = False
    meta = common.metadata("cuda")
    if args.csv:
        path = Path(args.csv)
    else:
        path = common.default_csv(common.gpu_slug(meta["gpu"]), Path(args.out) if args.out else None)
    writer = common.CsvWriter(path)
    print(f"{meta['gpu']} | torch {meta['torch']} cuda {meta['cuda']} cudnn {meta['cudnn']} | "
          f"commit {meta['commit']}{' (dirty)' if meta['dirty'] == 'yes' else ''}")
    print(f"writing {path}")

    cells = [(s, d, m) for s in shapes for d in dtypes for m in modes]
    t0 = time.time()
    for shape, dtype_name, mode in common.sweep(cells):
        run_cell(shape, dtype_name, mode, impls, args, meta, writer, flash_info)
    writer.close()
    print(f"{len(writer.rows)} rows in {time.time() - t0:.0f} s -> {path}")
    errors = [r for r in writer.rows if r.get("error")]
    if errors:
        print(f"{len(errors)} cell(s) recorded an error, e.g. "
              f"{errors[0]['shape_id']}/{errors[0]['dtype']}/{errors[0]['mode']}/"
              f"{errors[0]['impl']}: {errors[0]['error'][:160]}")
    _summary(writer.rows)
    if not args.no_plot:
        try:
            import plot
            print("plot:", plot.plot_csv(path))
        except Exception as e:
            print(f"plot skipped: {_err_text(e)}")
    return 0


def _summary(rows):
    """us/step per impl, one line per cell."""
    cells = {}
    for r in rows:
        cells.setdefault((r["shape_id"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    present = [n for n in ALL_IMPLS if any(n in by_impl for by_impl in cells.values())]
    width = max([16] + [len(n) + 2 for n in present])
    print(f"{'cell':<26}" + "".join(f"{n:>{width}}" for n in present) + "   (us/step)")
    for key, by_impl in cells.items():
        line = f"{' '.join(key):<26}"
        for n in present:
            r = by_impl.get(n)
            v = "" if r is None else ("err" if r.get("error") else r.get("us_per_step", ""))
            line += f"{v:>{width}}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
