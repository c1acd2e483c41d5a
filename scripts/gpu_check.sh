#!/usr/bin/env bash
# One-command GPU verification of fusedlstm on a CUDA machine:
#   scripts/gpu_check.sh OUTDIR
# builds the extension for sm_90, runs the whole test suite (GPU tests
# included), compute-sanitizer memcheck and racecheck on a small smoke run of
# both CUDA paths, and the quick benchmark when benchmarks/bench_gpu.py
# exists. Every log lands in OUTDIR; the exit status is non-zero if any step
# failed (later steps still run, so one call gives the whole picture).
set -uo pipefail

OUT="${1:?usage: scripts/gpu_check.sh OUTDIR}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$ROOT"
STATUS=0
step() {  # step NAME CMD...: runs CMD, tees to OUT/NAME.log, records failure
  local name="$1"; shift
  echo "=== $name: $*" | tee "$OUT/$name.log"
  local t0=$SECONDS
  "$@" 2>&1 | tee -a "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
  echo "$name $rc" >> "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || STATUS=1
  return "$rc"
}
: > "$OUT/summary.txt"

{
  date -u
  nvidia-smi || true
  nvcc --version || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(0))"
  git rev-parse HEAD 2>/dev/null || true
  git status --short 2>/dev/null || true
} > "$OUT/environment.txt" 2>&1

export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
if ! step build pip install --no-build-isolation -v -e .; then
  echo "build failed; see $OUT/build.log" >&2
  exit 1
fi
python -c "import torch, fusedlstm; assert hasattr(torch.ops.fusedlstm, 'lstm_layer_forward'); print('CUDA kernel registered:', torch._C._dispatch_has_kernel_for_dispatch_key('fusedlstm::lstm_layer_forward', 'CUDA'))" \
  2>&1 | tee -a "$OUT/build.log"

step compile_check bash scripts/compile_check_cuda.sh
step pytest_cuda python -m pytest tests/cuda -q -rs --junitxml="$OUT/pytest_cuda.xml"
step pytest_all python -m pytest tests -x -q -rs --junitxml="$OUT/pytest_all.xml"

SAN="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
if [ -n "$SAN" ]; then
  step memcheck "$SAN" --tool memcheck --error-exitcode 1 python scripts/sanitizer_smoke.py
  step racecheck "$SAN" --tool racecheck --error-exitcode 1 python scripts/sanitizer_smoke.py
  step synccheck "$SAN" --tool synccheck --error-exitcode 1 python scripts/sanitizer_smoke.py persistent
else
  echo "compute-sanitizer not found" | tee "$OUT/memcheck.log"
  echo "memcheck missing" >> "$OUT/summary.txt"
  STATUS=1
fi

if [ -f benchmarks/bench_gpu.py ]; then
  step bench python benchmarks/bench_gpu.py --quick --out "$OUT"
fi

echo "--- summary (step exit-code) ---"
cat "$OUT/summary.txt"
exit "$STATUS"
