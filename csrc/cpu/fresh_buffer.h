// Large buffers that a kernel fills right after allocating them.
//
// Why: glibc serves large allocations with fresh mappings (every one above
// 32 MiB, and smaller ones whenever its dynamic threshold has not risen to
// them), so the first write of each 4 KiB page faults and gets a zeroed page,
// and a forward or backward over a long sequence allocates several such
// buffers per call. A GEMM of 6400 x 512 by 512 x 2048 on 2 threads took
// 122 ms into a fresh output, 98 ms into a fresh output advised for
// transparent huge pages (one fault per 2 MiB), and 96 ms into a reused one;
// buffers of 4-32 MiB (a bfloat16 [N, 4H], the float [N, H] ones) still took
// 31 K faults per C3 training call before they were advised too (NOTES
// change 13). The advice only changes how the kernel backs the mapping:
// contents, alignment and lifetime are at::empty's, and the mapping goes away
// with the tensor. Smaller buffers are left alone; where the kernel does not
// honour the advice, nothing changes.
//
// From 256 KiB these buffers come from the recycled blocks of
// cpu/recycling_allocator.h, which the advice covers too, unless
// FUSEDLSTM_CPU_RECYCLE_MIB=0 turned recycling off.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "cpu/recycling_allocator.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedlstm::cpu {

// Advises the whole huge pages inside [data, data + bytes) for transparent
// huge pages, where bytes is at least two of them. Advisory: an error (an
// old kernel, THP compiled out) leaves the buffer as it was.
inline void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  constexpr int64_t kMinBytes = int64_t{4} << 20;  // two huge pages
  if (bytes < kMinBytes) return;
  const auto begin = reinterpret_cast<uintptr_t>(data);
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t last = (begin + static_cast<uintptr_t>(bytes)) & ~(kHuge - 1);
  if (last > first) {
    (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#else
  (void)data;
  (void)bytes;
#endif
}

inline at::Tensor empty_fresh(at::IntArrayRef sizes,
                              const at::TensorOptions& options) {
  if (options.device().is_cpu() && options.layout() == at::kStrided &&
      recycle_cap_bytes() > 0) {
    return recycle_empty(sizes, options);
  }
  at::Tensor t = at::empty(sizes, options);
  if (t.device().is_cpu()) {
    advise_huge_pages(t.data_ptr(), t.numel() * static_cast<int64_t>(t.element_size()));
  }
  return t;
}

// t in `dtype`: t itself where it already is, else a conversion written
// into an empty_fresh (contiguous) buffer: Tensor.to's own buffer would fault
// page by page.
inline at::Tensor converted_fresh(const at::Tensor& t, at::ScalarType dtype) {
  if (t.scalar_type() == dtype) return t;
  at::Tensor out = empty_fresh(t.sizes(), t.options().dtype(dtype));
  out.copy_(t);
  return out;
}

}  // namespace fusedlstm::cpu
