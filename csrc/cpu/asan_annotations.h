// Tells AddressSanitizer which bytes of fusedlstm's own allocations no one
// may touch, in a build with FUSEDLSTM_SANITIZE=address
// (scripts/cpu_sanitizers.sh); in any other build these do nothing.
//
// Why: the recycling allocator hands out blocks rounded up to a size class
// and keeps freed ones for the next call, and each thread's workspace keeps
// the largest buffer it has needed. To the sanitizer all of that is one live
// malloc'd region, so a kernel reading past the end of its tensor into the
// rest of the block, or using a tensor's memory after it was freed and its
// block went idle, would go unseen. Poisoning the tail and the idle blocks
// makes those accesses reports, as they would be with plain malloc.
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define FUSEDLSTM_WITH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FUSEDLSTM_WITH_ASAN 1
#endif
#endif

#if defined(FUSEDLSTM_WITH_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace fusedlstm::cpu {

// [p, p + n) may not be read or written until unpoisoned. The sanitizer
// tracks 8-byte granules: a region may start inside one (its bytes before p
// stay addressable), but a granule it ends inside stays addressable.
inline void asan_poison(const void* p, std::size_t n) {
#if defined(FUSEDLSTM_WITH_ASAN)
  ASAN_POISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}

inline void asan_unpoison(const void* p, std::size_t n) {
#if defined(FUSEDLSTM_WITH_ASAN)
  ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
  (void)p;
  (void)n;
#endif
}

// The sanitizer checks plain loads and stores, but not the masked vector
// ones: to it AVX-512's maskz_loadu and mask_storeu are calls, not memory
// references. The kernels' partial rows and blocks check their live lanes'
// `bytes` from p through this, as a read or a write, and a sanitized build
// reports an access past its tensor or buffer there as for any other.
inline void asan_check_lanes(const void* p, std::size_t bytes, bool is_write) {
#if defined(FUSEDLSTM_WITH_ASAN)
  if (bytes == 0) return;
  void* const bad = __asan_region_is_poisoned(const_cast<void*>(p), bytes);
  if (bad != nullptr) {
    __asan_report_error(__builtin_return_address(0), __builtin_frame_address(0),
                        __builtin_frame_address(0), bad, is_write ? 1 : 0, bytes);
  }
#else
  (void)p;
  (void)bytes;
  (void)is_write;
#endif
}

// Of a region of `capacity` bytes, the first `used` are for the caller and
// the rest for no one.
inline void asan_expose_prefix(void* p, std::size_t used, std::size_t capacity) {
  asan_unpoison(p, used);
  asan_poison(static_cast<char*>(p) + used, capacity - used);
}

}  // namespace fusedlstm::cpu
