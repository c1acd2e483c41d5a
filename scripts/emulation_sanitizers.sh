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
# (__syncthreads, the warp's mma.sync, cluster.sync, grid.sync) a mutex and a
# condition variable, which ThreadSanitizer understands as ordering. So a
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
# Takes about an hour on 2 cores, builds included (ThreadSanitizer slows the
# emulation down five- to tenfold). Exits non-zero if any test fails or any report is
# written; the reports are in $BUILD/<sanitizer>/*.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${BUILD:-/tmp/fusedlstm-emulation-sanitizers}"
JOBS="${JOBS:-2}"
SANITIZERS=("$@")
[ ${#SANITIZERS[@]} -gt 0 ] || SANITIZERS=(thread address,undefined)
PREFIX="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
TARGETS=(test_cell_kernels_emulated test_persistent_emulated test_cuda_host_emulated)
# Each test binary with its arguments: the suites and the random sweeps
# ctest runs. ThreadSanitizer makes every emulated thread's accesses costly:
# under it the host suite's 902 fixed checks would take over two hours on 2
# cores, so it runs the kernels' own suites and the sweeps of the entry
# points (which reach every path, dtype and emulated device) without them.
SWEEPS=(
  "test_cuda_host_emulated --random 24 --seed 1"
  "test_cuda_host_emulated --random 16 --seed 2 --sms 1 --blocks-per-sm 2"
  "test_cuda_host_emulated --random 12 --seed 3 --turing"
)
RUNS_ADDRESS=(
  "test_cell_kernels_emulated"
  "test_persistent_emulated"
  "test_cuda_host_emulated"
  "test_cuda_host_emulated --turing"
  "${SWEEPS[@]}"
)
# The first sweep on 2 emulated SMs, not 4: its larger grids (up to 32 CTAs
# of 128 threads) ran out of mappings under ThreadSanitizer (its per-thread
# state past vm.max_map_count = 65530, "failed to allocate ... error code
# 12").
RUNS_THREAD=(
  "test_cell_kernels_emulated"
  "test_persistent_emulated"
  "test_cuda_host_emulated --random 24 --seed 1 --sms 2"
  "${SWEEPS[@]:1}"
)

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
  if [ "$san" = thread ]; then runs=("${RUNS_THREAD[@]}"); else runs=("${RUNS_ADDRESS[@]}"); fi
  for run in "${runs[@]}"; do
    log="$dir/$(echo "$run" | tr ' ' '_' | tr -d '-').log"
    start=$SECONDS
    # Reports go to the log with the test's output; exitcode 66 marks a run
    # whose tests passed but whose sanitizer reported. The CPU reference runs
    # on one thread: torch's OpenMP pool is not instrumented.
    # detect_leaks=0: the process-lifetime plan caches are not leaks.
    status=0
    (cd "$dir" && OMP_NUM_THREADS=1 \
      TSAN_OPTIONS="halt_on_error=0 exitcode=66 history_size=4" \
      ASAN_OPTIONS="detect_leaks=0 exitcode=66" \
      UBSAN_OPTIONS="print_stacktrace=1 halt_on_error=1 exitcode=66" \
      ./$run > "$log" 2>&1) || status=$?
    reports=$(grep -c -E "^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: AddressSanitizer)|runtime error:" "$log" || true)
    printf '%-20s %-62s exit %3d, %s reports, %d s\n' "$san" "$run" "$status" "$reports" \
      $((SECONDS - start))
    if [ "$status" -ne 0 ] || [ "$reports" -ne 0 ]; then
      failed=1
      grep -m1 -A20 -E "^(WARNING: ThreadSanitizer|==[0-9]+==ERROR: AddressSanitizer)|runtime error:" "$log" || tail -5 "$log"
    fi
  done
done
exit $failed
