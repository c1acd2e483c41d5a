#!/usr/bin/env bash
# Runs the emulated CUDA tests (cpp_tests/test_*_emulated.cpp) under
# ThreadSanitizer and under AddressSanitizer + UndefinedBehaviorSanitizer:
# the nearest this repository gets, without a GPU, to compute-sanitizer's
# racecheck and memcheck.
#
#   scripts/emulation_sanitizers.sh                 # both sanitizers, every test
#   scripts/emulation_sanitizers.sh thread          # one of them
#   BUILD=/tmp/emu_san scripts/emulation_sanitizers.sh   # where to build
#
# Under the emulation every CUDA thread is an OS thread and every barrier
# (__syncthreads, the warp's mma.sync, cluster.sync, grid.sync) atomics with
# acquire and release order, which ThreadSanitizer understands as ordering. So a
# shared- or global-memory access that no barrier orders against another
# emulated thread's write to the same bytes is reported, whatever the timing
# of the run: a missing or misplaced barrier shows up even where the results
# happen to come out right. What it cannot see is the GPU's memory model
# (fences, L1 against L2, the weak ordering of a real grid sync's stores):
# there the GPU's own sanitizers are needed (scripts/gpu_check.sh).
#
# AddressSanitizer sees out-of-bounds accesses to global memory (tensors from
# torch's CPU allocator stand for device memory) and past the end of a CTA's
# emulated shared memory, and UndefinedBehaviorSanitizer signed overflow in
# the index arithmetic. Only the emulated tests are instrumented: the CPU
# library's OpenMP threads would be false alarms for ThreadSanitizer.
#
# The runs are CMakeLists.txt's tests labelled "emulated" (ctest -L emulated),
# so this script and CI run the same list; under ThreadSanitizer CMakeLists.txt
# leaves out the fixed host suites and narrows the first sweep's device (see
# there why). Arguments after "--" go to ctest, e.g. "-- -R cell_kernels".
#
# Takes about an hour and a half on 2 cores, builds included: ThreadSanitizer
# alone about an hour (its tests took 51 minutes at f6b24a6, twice as long as
# with the old mutex barriers: benchmarks/NOTES.md, forty-third session).
# Exits non-zero if any test fails or any report is written; the reports are
# in $BUILD/<sanitizer>/reports/, one file per process that reported, and
# ctest's output in $BUILD/<sanitizer>.ctest.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-/tmp/fusedlstm-emulation-sanitizers}"
JOBS="${JOBS:-2}"
SANITIZERS=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do SANITIZERS+=("$1"); shift; done
[ $# -gt 0 ] && shift
CTEST_ARGS=("$@")
[ ${#SANITIZERS[@]} -gt 0 ] || SANITIZERS=(thread address,undefined)
PREFIX="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
# Every emulated test program (cpp_tests/test_*_emulated.cpp), so that a new
# one is built here as soon as CMakeLists.txt runs it.
mapfile -t TARGETS < <(cd "$ROOT/cpp_tests" && ls test_*_emulated.cpp | sed 's/\.cpp$//')

failed=0
for san in "${SANITIZERS[@]}"; do
  case "$san" in
    thread | address,undefined | address | undefined) ;;
    *) echo "emulation_sanitizers: unknown sanitizer '$san'" >&2; exit 2 ;;
  esac
  dir="$BUILD/${san//,/+}"
  mkdir -p "$dir"
  echo "== $san: building in $dir"
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$PREFIX" \
    -DFUSEDLSTM_EMULATION_SANITIZER="$san" > "$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j "$JOBS" --target "${TARGETS[@]}" > "$dir.build.log" 2>&1 ||
    { tail -40 "$dir.build.log"; exit 1; }
  reports="$dir/reports"
  rm -rf "$reports" && mkdir -p "$reports"
  # Each sanitizer writes its reports to $reports/<name>.<pid>, so a run that
  # reported is found even where its tests passed (exitcode 66 fails it in
  # ctest too). The CPU reference runs on one thread: torch's OpenMP pool is
  # not instrumented. detect_leaks=0: the process-lifetime plan caches are not
  # leaks. Tests run one at a time: ThreadSanitizer's state per emulated
  # thread is large, and the timings stay comparable.
  status=0
  OMP_NUM_THREADS=1 \
    TSAN_OPTIONS="halt_on_error=0 exitcode=66 history_size=4 log_path=$reports/tsan" \
    ASAN_OPTIONS="detect_leaks=0 exitcode=66 log_path=$reports/asan" \
    UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 exitcode=66 log_path=$reports/ubsan" \
    ctest --test-dir "$dir" -L emulated --timeout 7200 --output-on-failure \
      ${CTEST_ARGS[@]+"${CTEST_ARGS[@]}"} 2>&1 | tee "$dir.ctest.log" || status=$?
  count=$(find "$reports" -type f | wc -l)
  echo "== $san: ctest exit $status, $count report file(s) in $reports"
  if [ "$status" -ne 0 ] || [ "$count" -ne 0 ]; then
    failed=1
    find "$reports" -type f | head -3 | while read -r f; do echo "-- $f"; head -25 "$f"; done
  fi
done
exit $failed
