"""The calls Nsight Compute profiles in gpu_check.sh's `ncu_step`: one
warm call of fusedlstm per grid cell, inside an NVTX range named
``profile``, after an unprofiled call that plans the kernels, warms cuBLAS
and fills the caches. ncu's NVTX filter then sees only the warm call's
kernels, whichever path ``auto`` (or FUSEDLSTM_CUDA_PATH) takes.

    ncu --nvtx --nvtx-include "profile/" -k regex:"lstm_(cluster|persistent)_" \\
        --set full -o OUT/step python benchmarks/profile_step.py G3:bfloat16:inference

Each argument is SHAPE:DTYPE:MODE with a shape of the GPU grid (common.py),
a dtype name, and inference (the forward under no_grad) or training (the
forward and the backward of a fixed cotangent, as bench_gpu.py times them).
Without ncu it runs the same calls and prints each one's time; `--device
cpu` runs them on the CPU operators (no NVTX range), which is how CI checks
the script without a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import GPU_GRID  # noqa: E402
from implementations import EagerModule, build_impls, make_inputs  # noqa: E402

SHAPES = {s.id: s for s in GPU_GRID}
MODES = ("inference", "training")


def parse_cell(text: str):
    try:
        shape_id, dtype_name, mode = text.split(":")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SHAPE:DTYPE:MODE") from None
    if shape_id not in SHAPES:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown shape (one of {', '.join(SHAPES)})")
    dtype = getattr(torch, dtype_name, None)
    if not isinstance(dtype, torch.dtype):
        raise argparse.ArgumentTypeError(f"{text!r}: {dtype_name!r} is not a torch dtype")
    if mode not in MODES:
        raise argparse.ArgumentTypeError(f"{text!r}: mode must be one of {MODES}")
    return SHAPES[shape_id], dtype, mode


def profile_cell(shape, dtype, mode, device: str = "cuda") -> float:
    """Runs one unprofiled call, then one inside the NVTX range `profile`
    (on CUDA); returns the profiled call's wall time in ms."""
    cuda = device == "cuda"
    impl: EagerModule = build_impls(shape, dtype, device, ["fusedlstm"])["fusedlstm"]
    if isinstance(impl, Exception):
        raise impl
    inputs = make_inputs(shape, dtype, device, n_sets=1)
    impl.setup(mode, inputs)
    impl.run(0)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.cuda.nvtx.range("profile") if cuda else contextlib.nullcontext():
        impl.run(0)
        if cuda:
            torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) * 1e3
    impl.teardown()
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cells", nargs="+", type=parse_cell, metavar="SHAPE:DTYPE:MODE")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device: ncu profiles CUDA calls (--device cpu runs them "
                     "on the CPU operators)")
    for shape, dtype, mode in args.cells:
        ms = profile_cell(shape, dtype, mode, args.device)
        print(f"{shape.id} {str(dtype).removeprefix('torch.')} {mode}: {ms:.2f} ms "
              f"(wall, with ncu's replays when profiled)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
