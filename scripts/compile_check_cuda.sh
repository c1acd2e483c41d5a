#!/usr/bin/env bash
# Compile-checks every .cu and .cpp under csrc/cuda (and, for sm_90 on, the
# GPU probes under benchmarks/probes) for sm_90 without a GPU (objects are
# thrown away). Exits non-zero if any file fails.
#
#   scripts/compile_check_cuda.sh            # all files, 2 at a time
#   JOBS=4 scripts/compile_check_cuda.sh     # more parallel jobs
#   PTXAS_VERBOSE=1 scripts/compile_check_cuda.sh   # register/smem/spill report
#   scripts/compile_check_cuda.sh persistent_fwd     # only paths matching a regex
#
# Needs nvcc (CUDA 12+) and torch (a CPU wheel is enough: it ships the
# ATen/c10 CUDA headers). CPU wheels lack c10/cuda/impl/cuda_cmake_macros.h,
# generated at torch build time; a one-line stand-in is provided here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
NVCC="${NVCC:-nvcc}"
CXX="${CXX:-g++}"
JOBS="${JOBS:-2}"
ARCH="${ARCH:-sm_90}"

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "compile_check_cuda: nvcc not found; nothing checked" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/shim/c10/cuda/impl" "$WORK/obj"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' \
  > "$WORK/shim/c10/cuda/impl/cuda_cmake_macros.h"

TORCH_INC="$(python3 -c "import torch.utils.cpp_extension as c; print(' '.join('-I' + p for p in c.include_paths()))")"
ABI="$(python3 -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")"
CUDA_INC=""
for d in "${CUDA_HOME:-}" "$(dirname "$(dirname "$(readlink -f "$(command -v "$NVCC")")")")" /usr/local/cuda; do
  if [ -n "$d" ] && [ -f "$d/include/cuda_runtime.h" ]; then CUDA_INC="$d/include"; break; fi
done
[ -n "$CUDA_INC" ] || { echo "compile_check_cuda: cuda_runtime.h not found (set CUDA_HOME)" >&2; exit 1; }
# The shim goes last: a real cuda_cmake_macros.h (CUDA wheels) wins.
COMMON="-std=c++17 -DFUSEDLSTM_WITH_CUDA -D_GLIBCXX_USE_CXX11_ABI=$ABI -I csrc -I csrc/include $TORCH_INC -I$CUDA_INC -I$WORK/shim"
NVCC_FLAGS="-arch=$ARCH -O3 -lineinfo --expt-relaxed-constexpr -diag-suppress 3306 -Xcompiler -Wno-c++20-extensions"
[ "${PTXAS_VERBOSE:-0}" = "1" ] && NVCC_FLAGS="$NVCC_FLAGS -Xptxas -v"
CXX_FLAGS="-O1 -fPIC -fsyntax-only -Wall -Wno-c++20-extensions -Wno-unused-function"

export NVCC CXX COMMON NVCC_FLAGS CXX_FLAGS WORK
compile_one() {
  f="$1"
  obj="$WORK/obj/$(echo "$f" | tr '/' '_').o"
  case "$f" in
    *.cu)  cmd="$NVCC -c $COMMON $NVCC_FLAGS -o $obj $f" ;;
    *.cpp) cmd="$CXX $COMMON $CXX_FLAGS $f" ;;
  esac
  if out="$($cmd 2>&1)"; then
    echo "ok    $f"
    [ "${PTXAS_VERBOSE:-0}" = "1" ] && echo "$out" | grep -E "ptxas info *: (Compiling|Used)|spill" | sed 's/^/      /'
    return 0
  else
    echo "FAIL  $f"
    echo "$out" | grep -v "^$" | head -60
    return 1
  fi
}
export -f compile_one

# The GPU probes (benchmarks/probes) use thread-block clusters: sm_90 on.
DIRS="csrc/cuda"
[ "$(echo "$ARCH" | tr -dc 0-9)" -ge 90 ] && DIRS="$DIRS benchmarks/probes"
FILES="$(find $DIRS -name '*.cu' -o -name '*.cpp' | sort | grep -E -- "${1:-.}" || true)"
[ -n "$FILES" ] || { echo "compile_check_cuda: no files under csrc/cuda" >&2; exit 1; }
echo "compile_check_cuda: $(echo "$FILES" | wc -l) files, arch $ARCH, $JOBS jobs"
if echo "$FILES" | xargs -P "$JOBS" -I{} bash -c 'compile_one "$@"' _ {}; then
  echo "compile_check_cuda: all files compile"
else
  echo "compile_check_cuda: FAILED" >&2
  exit 1
fi
