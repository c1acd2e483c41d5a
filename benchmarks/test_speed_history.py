"""fusedlstm's CPU speed from one commit to the next, as a pytest-benchmark
suite: the grid's cells (common.CPU_GRID, C1-C4; float32 and bfloat16;
inference and training), fusedlstm and nn.LSTM side by side in one group per
cell.

    # before a change: time every cell and save the run under .benchmarks/
    pytest benchmarks/test_speed_history.py --benchmark-autosave
    # after it: time again, compare against the last saved run, and fail
    # where a cell's median is more than 10 % slower
    pytest benchmarks/test_speed_history.py --benchmark-compare --benchmark-compare-fail=median:10%
    pytest benchmarks/test_speed_history.py -k "C2 and float32"        # a subset

Beside bench_cpu.py, which interleaves the two sides call by call in one
process (the fairer ratio on a noisy machine, and the CSV behind the README's
tables): pytest-benchmark keeps each saved run with its machine, commit and
settings, and compares a new run against it, so a commit that slows
fusedlstm down shows up, and fails under --benchmark-compare-fail, without a
second build (for two builds side by side: ab_builds.py). Compare runs of one
machine at one thread count (torch's default; set OMP_NUM_THREADS, and see
each run's extra_info "threads").

Before a cell is timed, fusedlstm's result there (the output, and in training
the input gradient) is held against nn.LSTM in float64 on the same values:
no worse than twice nn.LSTM's own error at the dtype, plus one unit of the
dtype's precision at the result's largest magnitude, the parity suite's rule.
A build that computes something else is not timed. The timed call rotates
over three input sets, after two untimed warm-up calls.

Where nn.LSTM has no fast bfloat16 path (CPUs without AVX-512 BF16), its
bfloat16 training cells take tens of seconds a call: `-k float32` times the
float32 cells alone. With --benchmark-disable every cell runs once, parity
check included (32 cells in 475 s on a 2-core AVX2 machine, busy with
another job on the other core).
"""
from __future__ import annotations

import copy
import functools
import itertools
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import implementations  # noqa: E402

INPUT_SETS = 3
WARMUP_CALLS = 2
CELLS = [(shape, dtype, mode) for shape in common.CPU_GRID
         for dtype in ("float32", "bfloat16") for mode in common.MODES]


@functools.lru_cache(maxsize=1)
def _cell(shape_id: str, dtype: str, mode: str):
    """Both sides of one cell, set up on the same weights and inputs; kept
    for the cell's two tests (the grid's order puts them together)."""
    shape = next(s for s in common.CPU_GRID if s.id == shape_id)
    inputs = implementations.make_inputs(shape, common.DTYPES[dtype], "cpu", INPUT_SETS)
    impls = implementations.build_impls(shape, common.DTYPES[dtype], "cpu",
                                        ["fusedlstm", "nn_lstm"])
    for impl in impls.values():
        if isinstance(impl, Exception):
            raise impl
        impl.setup(mode, inputs)
    return impls, inputs


def _float64_twin(impl: implementations.EagerModule, inputs: list, mode: str):
    """nn.LSTM in float64 on exactly the values `impl` computes on (weights,
    inputs and the training cotangent upcast, not drawn again)."""
    twin = implementations.EagerModule("float64", copy.deepcopy(impl.module).double())
    twin.setup(mode, [x.double() for x in inputs])
    if mode == "training":
        twin.cot = impl.cot.double()
    return twin


def parity_failures(mode: str, ours, theirs, exact, dtype: torch.dtype) -> list[str]:
    """The rule above, for each compared tensor of an Impl.run result: the
    output, and in training the input gradient. Empty where it holds."""
    unit = torch.finfo(dtype).eps
    ours = implementations.compared_tensors(mode, ours)
    theirs = implementations.compared_tensors(mode, theirs)
    failures = []
    for key, ref in implementations.compared_tensors(mode, exact).items():
        ref = ref.double()
        err_ours = (ours[key].double() - ref).abs().max().item()
        err_theirs = (theirs[key].double() - ref).abs().max().item()
        floor = unit * ref.abs().max().item()
        if not err_ours <= 2 * err_theirs + floor:
            failures.append(f"{key}: fusedlstm {err_ours:.3g} > 2 x nn.LSTM {err_theirs:.3g}"
                            f" + {floor:.3g}")
    return failures


@pytest.mark.parametrize("impl_name", ["fusedlstm", "nn_lstm"])
@pytest.mark.parametrize("shape,dtype,mode", [(s.id, d, m) for s, d, m in CELLS],
                         ids=[f"{s.id}-{d}-{m}" for s, d, m in CELLS])
def test_cell(benchmark, shape, dtype, mode, impl_name):
    impls, inputs = _cell(shape, dtype, mode)
    if impl_name == "fusedlstm":
        exact = _float64_twin(impls["nn_lstm"], inputs, mode).run(0)
        failures = parity_failures(mode, impls["fusedlstm"].run(0), impls["nn_lstm"].run(0),
                                   exact, common.DTYPES[dtype])
        assert not failures, f"{shape} {dtype} {mode}: " + "; ".join(failures)

    impl = impls[impl_name]
    rotation = itertools.cycle(range(INPUT_SETS))
    for _ in range(WARMUP_CALLS):
        impl.run(next(rotation))
    benchmark.group = f"{shape} {dtype} {mode}"
    benchmark.extra_info.update(threads=torch.get_num_threads(), torch=torch.__version__)
    benchmark(lambda: impl.run(next(rotation)))
