#!/usr/bin/env bash
# One-command GPU verification of fusedlstm on a CUDA machine:
#   scripts/gpu_check.sh OUTDIR [DEADLINE_SECONDS]
# builds the extension for sm_90 and runs, most telling first: the
# operators' error paths (each in its own process), the GPU tests, the fuzz
# sweeps against cuDNN, a probe of the cluster barrier's cost
# (benchmarks/probes), `auto` against the cluster, persistent and stepwise
# paths on the grid, the benchmark grid (issue 4) in bfloat16,
# compute-sanitizer memcheck and racecheck on a small smoke run of the CUDA
# paths, what is alive at a training step's peak, Nsight Compute on three
# cells' recurrent kernels, the grid in float32 and float16, torch.compile
# on CUDA, synccheck, bidirectional layers with their directions in turn
# and at once, and FlashRNN where its wheels came along
# (scripts/device_wheels.sh; carry .device_wheels). Later steps still run
# when one fails, so one call gives the whole picture; the exit status is
# non-zero if any step failed or was skipped for lack of time.
#
# GPU_CHECK_STEPS, an extended regular expression, runs only the steps whose
# whole name it matches (the build always runs), for a lease too short for
# everything: e.g. GPU_CHECK_STEPS='error_paths|pytest_cuda.*|memcheck|racecheck'
# in one call and 'bench_.*|peak_memory|ncu_step' in the next. Step names
# are the first column of summary.txt.
#
# Made for a lent machine with a few minutes of device time (the whole call,
# build included, should end inside DEADLINE_SECONDS, default 540):
#  * the most informative steps come first, each with its own time limit, so
#    a hung cooperative kernel costs one step, not the call;
#  * the CPU suite is not rerun here: CI runs it, on the GPU machines' torch
#    too (scripts/check_torch_version.sh), and it has no GPU test;
#  * the grid's CSVs are written row by row: whatever was measured before
#    the deadline comes back; `--subset` of bench_gpu.py runs the rest later;
#  * OUTDIR holds few files (a lending tool may return only eight):
#    summary.txt, environment.txt, paths.csv, the grid's grid.csv
#    (bfloat16), grid_f32_f16.csv and flashrnn.csv, ncu's step.ncu-rep
#    (where under 15 MiB), and logs.tar.gz with every step's log and JUnit
#    XML, ncu's text exports and the smaller comparison's CSV
#    (directions.csv), refreshed after each step so that whatever ran is
#    there even if the call is cut short.
set -uo pipefail

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR [DEADLINE_SECONDS]}"
DEADLINE="${2:-540}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOGS="$(mktemp -d)"
cd "$ROOT"
STATUS=0
START=$SECONDS
# The interpreter that holds torch (a venv's python3 may have no `python`).
PY="${PYTHON:-$(command -v python3 || command -v python)}"

# The lending tool returns files of at most 16 MiB: ncu's report travels on
# its own (ncu_step), and an archive past 15 MiB drops ncu's per-instruction
# export rather than every log.
pack_logs() {
  tar -czf "$OUT/logs.tar.gz" --exclude='*.ncu-rep' -C "$LOGS" . 2>/dev/null || true
  if [ "$(stat -c %s "$OUT/logs.tar.gz" 2>/dev/null || echo 0)" -gt $((15 * 1024 * 1024)) ]; then
    tar -czf "$OUT/logs.tar.gz" --exclude='*.ncu-rep' --exclude='./ncu/sass.csv' \
      -C "$LOGS" . 2>/dev/null || true
  fi
}

# step NAME LIMIT CMD...: runs CMD for at most LIMIT seconds (and never past
# the deadline), logs to LOGS/NAME.log, records "NAME exit-code seconds".
step() {
  local name="$1" limit="$2"; shift 2
  if [ "$name" != build ] && [ -n "${GPU_CHECK_STEPS:-}" ] &&
     ! [[ "$name" =~ ^(${GPU_CHECK_STEPS})$ ]]; then
    echo "$name not selected (GPU_CHECK_STEPS)" >> "$OUT/summary.txt"
    return 0
  fi
  local left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 30 ]; then
    echo "$name skipped: ${left}s left of the ${DEADLINE}s deadline" | tee -a "$OUT/summary.txt"
    STATUS=1
    return 1
  fi
  [ "$limit" -le "$left" ] || limit="$left"
  echo "=== $name (limit ${limit}s): $*" | tee "$LOGS/$name.log"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n 15 "$LOGS/$name.log"
  [ "$rc" -ne 124 ] || echo "=== $name: timed out after ${limit}s" | tee -a "$LOGS/$name.log"
  echo "=== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$LOGS/$name.log"
  echo "$name $rc $((SECONDS - t0))s" >> "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || STATUS=1
  pack_logs
  return "$rc"
}
: > "$OUT/summary.txt"

{
  date -u
  nvidia-smi || true
  nvcc --version || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
  git rev-parse HEAD 2>/dev/null || echo "commit (FUSEDLSTM_COMMIT) ${FUSEDLSTM_COMMIT:-unknown}"
  git status --short 2>/dev/null || true
} > "$OUT/environment.txt" 2>&1

# torch finds CUDA through `which nvcc`, which a wrapper script can hide.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONUNBUFFERED=1
# setup.py needs setuptools 77 or newer; an older one on the machine is
# upgraded from the carried wheels where there are some (else the build step
# fails with setup.py's message saying so).
if ! "$PY" -c 'import re, setuptools, sys; sys.exit(int(re.match(r"\d+", setuptools.__version__).group()) < 77)' &&
   [ -d .device_wheels ]; then
  "$PY" -m pip install --no-index --no-deps --find-links .device_wheels "setuptools>=77" \
    2>&1 | tail -n 2 | tee -a "$LOGS/build.log"
fi
if ! step build 420 "$PY" -m pip install --no-build-isolation -v -e .; then
  echo "build failed; see build.log in $OUT/logs.tar.gz" >&2
  exit 1
fi
# FlashRNN for issue 4's `flashrnn` rows, from wheels carried to a machine
# without a package index (scripts/device_wheels.sh fills .device_wheels/),
# without dependencies: torch and triton stay the machine's own.
if [ -d .device_wheels ] && ! "$PY" -c "import flashrnn" 2>/dev/null; then
  "$PY" -m pip install --no-index --no-deps --find-links .device_wheels flashrnn einops \
    2>&1 | tail -n 2 | tee -a "$LOGS/build.log"
  command -v ninja >/dev/null 2>&1 || "$PY" -c "import ninja" 2>/dev/null ||
    "$PY" -m pip install --no-index --no-deps --find-links .device_wheels ninja 2>&1 |
    tail -n 2 | tee -a "$LOGS/build.log"
fi
"$PY" -c "import torch, fusedlstm; print('CUDA kernel registered:', torch._C._dispatch_has_kernel_for_dispatch_key('fusedlstm::lstm_layer_forward', 'CUDA'))" \
  2>&1 | tee -a "$LOGS/build.log"

# Every kind of RuntimeError the operators throw, one child process each; a
# case that dies by a signal is rerun for its native backtrace, with
# scripts/native_backtrace.c preloaded and under cuda-gdb (the first H200
# run died at such an error: NOTES, change 64).
step error_paths 180 "$PY" scripts/error_paths_smoke.py

# pytest-timeout, where installed, names the test that hangs; pytest-xdist,
# where installed, replaces a worker that crashes and reports its test as
# failed, so one crash does not end the suite. -v writes each test's outcome
# as it ends: a step cut short by its limit still shows what passed.
PER_TEST=()
"$PY" -c "import pytest_timeout" 2>/dev/null && PER_TEST+=(--timeout 90)
"$PY" -c "import xdist" 2>/dev/null && PER_TEST+=(-n 2)
step pytest_cuda 200 "$PY" -m pytest tests/cuda -v -rs "${PER_TEST[@]}" \
  --ignore=tests/cuda/test_cuda_fuzz.py --ignore=tests/cuda/test_cuda_compile.py \
  --junitxml="$LOGS/pytest_cuda.xml"

# The fuzz sweeps against cuDNN, each in a process and a step of its own: a
# torch.nn call that faults on the device would end every later test of its
# process, and a sweep that outlasts its limit leaves the others their time
# (the first run's cell sweep got none). Without shrinking, a sweep ends at
# its first failure and prints that example as drawn: the first run's sweeps
# failed and spent the step's limit looking for smaller examples, so none
# was printed. Verbose hypothesis prints each example as it is tried, so a
# sweep cut short by its limit still shows how far it got.
for sweep in valid_calls malformed_calls lstm_cell; do
  step "pytest_cuda_fuzz_$sweep" 35 env FUSEDLSTM_FUZZ_NO_SHRINK=1 "$PY" -m pytest \
    tests/cuda/test_cuda_fuzz.py -k "$sweep" -v -s --tb=short --hypothesis-verbosity=verbose \
    --hypothesis-show-statistics --junitxml="$LOGS/pytest_cuda_fuzz_$sweep.xml"
done

# What a cluster barrier costs by itself, with the stores and loads a step
# of the cluster kernels makes around it (before the arrive, between arrive
# and wait, after the wait): the floor under their step, and the premise of
# NOTES changes 71-72. A few seconds; its CSV travels in logs.tar.gz.
step cluster_sync_probe 60 bash -c "set -o pipefail; nvcc -O3 -arch=sm_90 -o '$LOGS/cluster_sync_probe' \
  benchmarks/probes/cluster_sync_probe.cu && '$LOGS/cluster_sync_probe' | tee '$LOGS/cluster_sync_probe.csv'"

# `auto` against the three paths it chooses between, the cluster kernels,
# the cooperative persistent kernels and the stepwise path (a cuBLAS GEMM and
# a cell kernel per step), on the whole grid, eager and graph-replayed: the
# check of its rules (cluster_pays_off, persistent_pays_off; NOTES, changes
# 65 and 68), and the data to refit them; the cluster forward with its
# split-phase barrier (the default) and with one whole cluster.sync() a step
# (fusedlstm_cluster_whole: NOTES, change 71). The cluster kernels record an
# error row where they cannot run a layer (projection, exact float32, W_hh
# past one cluster).
step bench_paths 200 "$PY" benchmarks/bench_gpu.py --dtypes bfloat16,float32 --no-plot \
  --csv "$OUT/paths.csv" \
  --impls fusedlstm,fusedlstm_graph,fusedlstm_cluster,fusedlstm_cluster_graph,fusedlstm_cluster_whole,fusedlstm_cluster_whole_graph,fusedlstm_persistent,fusedlstm_persistent_graph,fusedlstm_stepwise,fusedlstm_stepwise_graph,cudnn,cudnn_graph

# The grid (issue 4), bfloat16 first so that a short lease still measures
# every shape in one dtype; then float32 and float16. GRID_IMPLS narrows the
# implementations (the default is bench_gpu.py's: every default impl).
GRID_IMPLS_ARGS=()
[ -n "${GRID_IMPLS:-}" ] && GRID_IMPLS_ARGS=(--impls "$GRID_IMPLS")
step bench_grid_bf16 150 "$PY" benchmarks/bench_gpu.py --dtypes bfloat16 --no-plot \
  --csv "$OUT/grid.csv" "${GRID_IMPLS_ARGS[@]}"

SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$SAN" ]; then
  step memcheck 90 "$SAN" --tool memcheck --error-exitcode 1 "$PY" scripts/sanitizer_smoke.py
  step racecheck 90 "$SAN" --tool racecheck --error-exitcode 1 "$PY" scripts/sanitizer_smoke.py
else
  echo "memcheck missing: compute-sanitizer not found" >> "$OUT/summary.txt"
  STATUS=1
fi

# What is alive at the peak of a training step, fusedlstm and cuDNN (issue 5's
# memory target; the grid's peak_mib says how much, this says what).
step peak_memory 60 "$PY" benchmarks/peak_memory.py --subset G7,G1 --dtype bfloat16 \
  --out "$LOGS"

# Nsight Compute on the recurrent kernels of three cells (G3 bfloat16
# inference: the latency-bound step; G1 bfloat16 training; G4 exact float32):
# stall reasons per instruction, for issue 5's profiler evidence. The text
# exports travel in logs.tar.gz, the report beside it where under 15 MiB.
step ncu_step 120 bash scripts/ncu_step.sh "$LOGS/ncu"
REP="$LOGS/ncu/step.ncu-rep"
if [ -f "$REP" ] && [ "$(stat -c %s "$REP")" -le $((15 * 1024 * 1024)) ]; then
  cp "$REP" "$OUT/step.ncu-rep"
fi

step bench_grid_f32_f16 200 "$PY" benchmarks/bench_gpu.py --dtypes float32,float16 --no-plot \
  --csv "$OUT/grid_f32_f16.csv" "${GRID_IMPLS_ARGS[@]}"

# opcheck on CUDA samples and torch.compile (aot_eager, inductor, dynamic
# shapes, reduce-overhead's CUDA graphs): Triton compilation is most of it.
step pytest_cuda_compile 150 "$PY" -m pytest tests/cuda/test_cuda_compile.py -v -rs \
  --junitxml="$LOGS/pytest_cuda_compile.xml"

[ -n "$SAN" ] && step synccheck 90 "$SAN" --tool synccheck --error-exitcode 1 \
  "$PY" scripts/sanitizer_smoke.py persistent

# A bidirectional layer's directions in turn and on two streams
# (FUSEDLSTM_CUDA_DIRECTIONS=concurrent, opt-in; NOTES, change 59) on G6.
step bench_directions 60 "$PY" benchmarks/bench_gpu.py --subset G6 \
  --dtypes bfloat16 --modes inference,training --no-plot --csv "$LOGS/directions.csv" \
  --impls fusedlstm,fusedlstm_graph,fusedlstm_concurrent,fusedlstm_concurrent_graph,cudnn,cudnn_graph

# FlashRNN (where installed) beside fusedlstm and cuDNN replayed, on the two
# shapes of issue 5's training target, in bfloat16: it compiles 40-70 s per
# shape on its first call, so it comes last and writes its own CSV.
if "$PY" -c "import flashrnn" 2>/dev/null; then
  step bench_flashrnn 300 "$PY" benchmarks/bench_gpu.py --subset G2,G3 --dtypes bfloat16 \
    --no-plot --csv "$OUT/flashrnn.csv" \
    --impls flashrnn,fusedlstm,fusedlstm_graph,cudnn,cudnn_graph
else
  echo "bench_flashrnn skipped: flashrnn not installed (scripts/device_wheels.sh)" \
    >> "$OUT/summary.txt"
fi

pack_logs
echo "--- summary (step exit-code seconds) ---"
cat "$OUT/summary.txt"
exit "$STATUS"
