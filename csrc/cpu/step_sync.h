// Synchronisation of the CPU recurrence's workers between time steps.
//
// A step's h_t must be complete before any worker starts step t+1, so the
// workers meet once per phase of a step. at::parallel_for hands each OpenMP
// thread one contiguous chunk of the workers (or, nested in another parallel
// region, runs every worker in one chunk), and all chunks run at once. So the
// meeting counts workers, not threads: a chunk announces how many workers it
// carried through a phase, and waits until every worker has. It never needs to
// know how many threads it got, and cannot wait for a chunk that is not running.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace fusedlstm::cpu {

class alignas(64) PhaseCounter {
 public:
  // This chunk's `workers` have finished their current phase.
  void arrive(int64_t workers) {
    done_.fetch_add(workers, std::memory_order_release);
  }

  // Blocks until `total` worker-phases have been announced in all. Spins
  // first (a step takes microseconds), then yields, so a descheduled peer on
  // an oversubscribed machine gets the core back.
  void wait_for(int64_t total) const {
    int spins = 0;
    while (done_.load(std::memory_order_acquire) < total) {
      if (++spins < 4096) {
#if defined(__x86_64__) || defined(_M_X64)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }

 private:
  std::atomic<int64_t> done_{0};
};

// [begin, end) of `items` split over `parts`, part `index`: shares differ by
// at most one item.
inline void split_range(int64_t items, int64_t parts, int64_t index,
                        int64_t& begin, int64_t& end) {
  begin = items * index / parts;
  end = items * (index + 1) / parts;
}

}  // namespace fusedlstm::cpu
