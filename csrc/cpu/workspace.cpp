#include "cpu/workspace.h"

#include "cpu/asan_annotations.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace fusedlstm::cpu {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;
constexpr std::size_t kAdviseFrom = std::size_t{4} << 20;

struct Buffer {
  void* data = nullptr;
  std::size_t capacity = 0;
};

// Plain malloc'd memory, not at::Tensors: the main thread's buffers are
// freed at exit, when torch's allocator may already be gone.
struct ThreadBuffers {
  Buffer role[static_cast<int>(WorkspaceRole::kCount)];
  ~ThreadBuffers() {
    for (Buffer& b : role) {
      asan_unpoison(b.data, b.capacity);
      std::free(b.data);
    }
  }
};

thread_local ThreadBuffers buffers;

}  // namespace

void* workspace_bytes(WorkspaceRole role, std::size_t bytes) {
  Buffer& b = buffers.role[static_cast<int>(role)];
  if (bytes <= b.capacity && b.data != nullptr) {
    // What this call asked for, and not the rest of an earlier call's
    // larger buffer.
    asan_expose_prefix(b.data, bytes, b.capacity);
    return b.data;
  }
  asan_unpoison(b.data, b.capacity);
  std::free(b.data);
  b.data = nullptr;
  b.capacity = 0;
  // Large buffers in whole huge pages, so that the advice covers them.
  const bool large = bytes >= kAdviseFrom;
  const std::size_t align = large ? kHugePage : 64;
  const std::size_t size =
      (std::max<std::size_t>(bytes, 1) + align - 1) / align * align;
  void* data = std::aligned_alloc(align, size);
  TORCH_CHECK(data != nullptr, "fusedlstm: could not allocate a ", size,
              "-byte workspace");
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Advisory: an error (an old kernel, THP compiled out) changes nothing.
  if (large) (void)madvise(data, size, MADV_HUGEPAGE);
#endif
  b.data = data;
  b.capacity = size;
  asan_expose_prefix(data, bytes, size);
  return data;
}

}  // namespace fusedlstm::cpu
