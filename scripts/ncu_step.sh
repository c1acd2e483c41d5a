#!/usr/bin/env bash
# Nsight Compute on the recurrent kernels of a few grid cells (gpu_check.sh's
# `ncu_step`): where a step's time goes, for issue 5's "profiler evidence".
#   scripts/ncu_step.sh OUTDIR [SHAPE:DTYPE:MODE ...]
# Profiles, in the warm call of each cell (benchmarks/profile_step.py, NVTX
# range `profile`), every launch of lstm_cluster_* and lstm_persistent_*
# with the full section set, the clocks left alone (METHOD.md), and writes
# to OUTDIR:
#   step.ncu-rep   the report (ncu --import reads it; the Nsight Compute UI too)
#   details.txt    every section of every profiled launch: speed of light,
#                  occupancy, warp states (stall reasons), memory workload
#   sass.csv       per-instruction counters of each launch, with the sampled
#                  warp stalls: which instruction of the step the warps wait at
# Exits non-zero if ncu is missing or fails; the exports are tried anyway.
set -uo pipefail

OUT="${1:?usage: scripts/ncu_step.sh OUTDIR [SHAPE:DTYPE:MODE ...]}"
shift
CELLS=("$@")
[ "${#CELLS[@]}" -gt 0 ] || CELLS=(G3:bfloat16:inference G1:bfloat16:training G4:float32:inference)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
NCU="$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)"
if [ -z "$NCU" ]; then
  echo "ncu not found (PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute)" >&2
  exit 1
fi
mkdir -p "$OUT"
"$NCU" --version

"$NCU" --clock-control none --nvtx --nvtx-include "profile/" \
  -k regex:"lstm_(cluster|persistent)_" --set full -f -o "$OUT/step" \
  "$PY" "$ROOT/benchmarks/profile_step.py" "${CELLS[@]}"
rc=$?

if [ -f "$OUT/step.ncu-rep" ]; then
  "$NCU" --import "$OUT/step.ncu-rep" --page details > "$OUT/details.txt" 2>&1 || rc=1
  "$NCU" --import "$OUT/step.ncu-rep" --page source --print-source sass --csv \
    > "$OUT/sass.csv" 2>&1 || rc=1
  # The headline of each launch, for the step's log.
  grep -E "lstm_(cluster|persistent)_|Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput" \
    "$OUT/details.txt" | head -n 60
else
  echo "ncu wrote no report" >&2
  rc=1
fi
exit "$rc"
