#include "cpu/recycling_allocator.h"

#include "cpu/asan_annotations.h"
#include "cpu/fresh_buffer.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <unistd.h>
#endif

namespace fusedlstm::cpu {
namespace {

// Rounds a request up to one of 8 classes per power of two (at least 4 KiB
// apart), so that requests that differ a little (a packed batch one step
// longer) share blocks, at most 12.5 % larger than asked.
std::size_t size_class(std::size_t n) {
  const int top = 63 - __builtin_clzll(static_cast<unsigned long long>(n));
  const std::size_t step = std::size_t{1} << std::max(top - 3, 12);
  return (n + step - 1) / step * step;
}

// The memory this process may use: the machine's, or its cgroup's limit
// (v2, or v1) where one is set and lower; 0 where neither can be read.
int64_t usable_memory_bytes() {
  int64_t bytes = 0;
#if defined(__linux__)
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) bytes = static_cast<int64_t>(pages) * page;
  for (const char* path : {"/sys/fs/cgroup/memory.max",
                           "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::FILE* f = std::fopen(path, "r");
    if (f == nullptr) continue;
    long long limit = 0;
    // "max" (no limit) reads as no number.
    if (std::fscanf(f, "%lld", &limit) == 1 && limit > 0 && (bytes == 0 || limit < bytes)) {
      bytes = limit;
    }
    std::fclose(f);
  }
#endif
  return bytes;
}

// Without FUSEDLSTM_CPU_RECYCLE_MIB: 1/16 of the usable memory, at least
// 256 MiB. A training call of a wide layer holds more than 256 MiB of
// per-call buffers (G5's shape: 420 MB of float gates alone), which a 256
// MiB cap let glibc unmap after every call and the kernel zero again on
// the next: 18 % of a bfloat16 training call's samples, which took 0.89 of
// nn.LSTM's time with a cap of 1/16 of 23 GiB against 1.24 with 256 MiB
// (NOTES change 88).
int64_t default_cap() {
  constexpr int64_t kMinCap = int64_t{256} << 20;
  constexpr int64_t kShareOfMemory = 16;
  return std::max(kMinCap, usable_memory_bytes() / kShareOfMemory);
}

int64_t cap_from_environment() {
  const char* name = "FUSEDLSTM_CPU_RECYCLE_MIB";
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return default_cap();
  char* end = nullptr;
  errno = 0;
  const long long mib = std::strtoll(value, &end, 10);
  TORCH_CHECK(*end == '\0' && errno == 0 && mib >= 0 && mib < (1LL << 40),
              name, " must be a whole number of MiB, 0 or more, got '", value, "'");
  return static_cast<int64_t>(mib) << 20;
}

struct Block {
  void* data;
  std::size_t bytes;      // its size class
  std::size_t requested;  // what the current tensor asked for (for the profiler)
};

class RecyclingAllocator final : public c10::Allocator {
 public:
  explicit RecyclingAllocator(int64_t cap) : cap_(cap) {}

  c10::DataPtr allocate(std::size_t n) override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return c10::DataPtr(nullptr, cpu);
    const std::size_t bytes = size_class(n);
    Block* block = take_idle(bytes);
    if (block == nullptr) block = new Block{fresh(bytes), bytes, 0};
    block->requested = n;
    asan_expose_prefix(block->data, n, bytes);
    std::size_t in_use, reserved;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ += bytes;
      in_use = in_use_;
      reserved = in_use_ + idle_;
    }
    // As c10's CPU allocator does, so that torch.profiler's memory view
    // sees these tensors.
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(block->data, static_cast<int64_t>(n),
                                       in_use, reserved, cpu);
    }
    return {block->data, block, &RecyclingAllocator::release, cpu};
  }

  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  int64_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(idle_);
  }

  int64_t cap() const { return cap_; }

  void fill_idle(unsigned char byte) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (Block* b : idle_blocks_) {
      asan_unpoison(b->data, b->bytes);
      std::memset(b->data, byte, b->bytes);
      asan_poison(b->data, b->bytes);
    }
  }

  void release_idle() {
    std::vector<Block*> drop;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      drop.swap(idle_blocks_);
      idle_ = 0;
    }
    for (Block* b : drop) destroy(b);
  }

  // Fork: the child copies the lists as they are; holding the lock across
  // the fork keeps another thread from being half-way through them.
  void lock_for_fork() { mutex_.lock(); }
  void unlock_after_fork() { mutex_.unlock(); }

 private:
  static void release(void* ctx);

  Block* take_idle(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    // The most recently released block of the class: its lines are the
    // likeliest to be in the caches still.
    for (auto it = idle_blocks_.rbegin(); it != idle_blocks_.rend(); ++it) {
      if ((*it)->bytes == bytes) {
        Block* b = *it;
        idle_blocks_.erase(std::next(it).base());
        idle_ -= bytes;
        return b;
      }
    }
    return nullptr;
  }

  void* fresh(std::size_t bytes) {
    void* data = nullptr;
    try {
      data = c10::alloc_cpu(bytes);
    } catch (const c10::Error&) {
      // Memory the idle blocks hold may be what is missing.
      release_idle();
      data = c10::alloc_cpu(bytes);
    }
    // One fault per 2 MiB instead of per 4 KiB for the first use.
    advise_huge_pages(data, static_cast<int64_t>(bytes));
    return data;
  }

  void keep_or_free(Block* block) {
    std::vector<Block*> drop;
    std::size_t in_use, reserved;
    void* const data = block->data;
    const auto requested = static_cast<int64_t>(block->requested);
    // Idle or about to be freed: either way no tensor's any more.
    asan_poison(data, block->bytes);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      in_use_ -= block->bytes;
      if (static_cast<int64_t>(block->bytes) > cap_) {
        drop.push_back(block);
      } else {
        idle_blocks_.push_back(block);
        idle_ += block->bytes;
        std::size_t oldest = 0;
        while (static_cast<int64_t>(idle_) > cap_) {
          drop.push_back(idle_blocks_[oldest]);
          idle_ -= idle_blocks_[oldest]->bytes;
          ++oldest;
        }
        idle_blocks_.erase(idle_blocks_.begin(), idle_blocks_.begin() + oldest);
      }
      in_use = in_use_;
      reserved = in_use_ + idle_;
    }
    for (Block* b : drop) destroy(b);
    if (c10::memoryProfilingEnabled()) {
      c10::reportMemoryUsageToProfiler(data, -requested, in_use, reserved,
                                       c10::Device(c10::DeviceType::CPU));
    }
  }

  static void destroy(Block* b) {
    asan_unpoison(b->data, b->bytes);
    c10::free_cpu(b->data);
    delete b;
  }

  const int64_t cap_;
  std::mutex mutex_;
  std::vector<Block*> idle_blocks_;  // oldest released first
  std::size_t idle_ = 0;
  std::size_t in_use_ = 0;
};

// Never destroyed: tensors may be freed after static destructors have run
// (the interpreter's last collection), and their blocks still come here.
RecyclingAllocator& allocator() {
  static RecyclingAllocator* const instance = [] {
    auto* a = new RecyclingAllocator(cap_from_environment());
#if defined(__linux__)
    pthread_atfork([] { allocator().lock_for_fork(); },
                   [] { allocator().unlock_after_fork(); },
                   [] { allocator().unlock_after_fork(); });
#endif
    return a;
  }();
  return *instance;
}

void RecyclingAllocator::release(void* ctx) {
  allocator().keep_or_free(static_cast<Block*>(ctx));
}

}  // namespace

at::Tensor recycle_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  TORCH_CHECK(options.device().is_cpu() && options.layout() == at::kStrided,
              "fusedlstm: recycle_empty makes strided CPU tensors only");
  const at::ScalarType dtype = c10::typeMetaToScalarType(options.dtype());
  int64_t numel = 1;
  for (int64_t s : sizes) numel *= s;
  if (numel * static_cast<int64_t>(c10::elementSize(dtype)) < kRecycleMinBytes ||
      allocator().cap() == 0) {
    return at::empty(sizes, options);
  }
  return at::detail::empty_generic(sizes, &allocator(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   dtype, c10::nullopt);
}

int64_t recycled_idle_bytes() { return allocator().idle_bytes(); }

int64_t recycle_cap_bytes() { return allocator().cap(); }

void release_recycled() { allocator().release_idle(); }

void poison_recycled() { allocator().fill_idle(0xFF); }

}  // namespace fusedlstm::cpu
