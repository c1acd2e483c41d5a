#!/usr/bin/env bash
# Runs the test suite against a build of the C++ sources under
# AddressSanitizer + UndefinedBehaviorSanitizer: every CPU kernel the tests
# reach (the fused recurrences of each ISA, the few-rows products, the
# packing, the recycling allocator, the BLAS loop) with its reads and writes
# checked against the bounds of the memory it was given, and its integer
# arithmetic against overflow.
#
#   bash scripts/cpu_sanitizers.sh                        # tests/, whole
#   bash scripts/cpu_sanitizers.sh tests/test_modules_parity.py -k bfloat16
#   BUILD=/tmp/somewhere bash scripts/cpu_sanitizers.sh   # where to build
#
# The build is of a copy of this checkout's files (tracked and new ones, as
# they are in the working tree), made in place under $BUILD/src, so the
# installed fusedlstm keeps its own build; the copy's objects are kept
# between runs and only what changed is compiled again. The tests import
# the copy (PYTHONPATH, inherited by the processes they start).
#
# With the sanitizer, the memory fusedlstm's own allocators hold but no one
# may touch is poisoned (csrc/cpu/asan_annotations.h): a recycled block past
# its tensor's end, an idle block, a workspace past what the call asked for.
# PyTorch itself is not instrumented, but its memcpy and memset go through
# the sanitizer's interceptors. The GPU tests skip, as on any machine
# without CUDA (the emulated CUDA kernels have their own run:
# scripts/emulation_sanitizers.sh).
#
# About 25 minutes on 2 cores for the whole suite, the build included.
# Exits non-zero if a test fails or any report is written; the reports are
# in $BUILD/reports/, one file per process that reported.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-/tmp/fusedlstm-cpu-sanitizers}"
SRC="$BUILD/src"
REPORTS="$BUILD/reports"
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-c++}"
[ $# -gt 0 ] || set -- tests

mkdir -p "$SRC"
# Everything but the objects goes, so that a file deleted here is not built
# there; timestamps are kept, so that ninja compiles only what changed.
find "$SRC" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
  xargs -0 cp -p --parents -t "$SRC")

echo "== building under AddressSanitizer + UndefinedBehaviorSanitizer in $SRC"
(cd "$SRC" && FUSEDLSTM_SANITIZE=address,undefined FUSEDLSTM_FORCE_CPU=1 \
  MAX_JOBS="${MAX_JOBS:-2}" "$PYTHON" setup.py -q build_ext --inplace)

rm -rf "$REPORTS"
mkdir -p "$REPORTS"
# The sanitizer's runtime must be the first library loaded. libstdc++ goes
# with it: Python itself does not link it, so the runtime would otherwise
# start with no __cxa_throw to wrap and abort at the first C++ exception
# (torch raises them for every error the tests expect).
preload="$("$CXX" -print-file-name=libasan.so) $("$CXX" -print-file-name=libstdc++.so)"
sanitized() {
  (cd "$SRC" &&
    PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}" LD_PRELOAD="$preload" \
    ASAN_OPTIONS="detect_leaks=0:log_path=$REPORTS/asan" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$REPORTS/ubsan" "$@")
}
# A run that imported another fusedlstm (an installed one, ahead on the
# path) would check nothing and come out clean: make sure it is the copy.
imported="$(sanitized "$PYTHON" -c 'import fusedlstm; print(fusedlstm.__file__)')"
case "$imported" in
  "$SRC"/*) ;;
  *) echo "cpu_sanitizers: the tests would import $imported, not the build in $SRC" >&2
     exit 2 ;;
esac
status=0
sanitized "$PYTHON" -m pytest -q -p no:cacheprovider "$@" || status=$?

reports=("$REPORTS"/*)
if [ -e "${reports[0]}" ]; then
  echo "== sanitizer reports (${#reports[@]} files):"
  for r in "${reports[@]}"; do
    echo "--- $r"
    head -n 40 "$r"
  done
  exit 1
fi
echo "== no sanitizer reports; pytest exited with $status"
exit "$status"
