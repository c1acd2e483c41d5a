// Large buffers that a kernel fills right after allocating them.
//
// Why: glibc serves every allocation above its largest mmap threshold (32 MiB)
// with a fresh mapping, so the first write of each 4 KiB page faults, and a
// forward or backward over a long sequence allocates several such [N, 4H]
// buffers per call. A GEMM of 6400 x 512 by 512 x 2048 on 2 threads took
// 122 ms into a fresh output, 98 ms into a fresh output advised for
// transparent huge pages (one fault per 2 MiB), and 96 ms into a reused one.
// The advice only changes how the kernel backs the mapping: contents,
// alignment and lifetime are at::empty's, and the mapping goes away with the
// tensor. Smaller buffers come from the heap, already touched, and are left
// alone; where the kernel does not honour the advice, nothing changes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedlstm::cpu {

inline at::Tensor empty_fresh(at::IntArrayRef sizes,
                              const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  constexpr int64_t kMinBytes = int64_t{32} << 20;
  const int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
  if (t.device().is_cpu() && bytes >= kMinBytes) {
    const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
    const uintptr_t last = (begin + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
    if (last > first) {
      // Advisory: an error (an old kernel, THP compiled out) leaves the
      // buffer as it was.
      (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
    }
  }
#endif
  return t;
}

}  // namespace fusedlstm::cpu
