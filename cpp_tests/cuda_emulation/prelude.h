// Runs fusedlstm's CUDA kernels, and the host code that launches them, on the
// host, for tests on machines without a GPU (cpp_tests/test_*_emulated.cpp;
// device memory is host memory, CPU tensors stand for CUDA ones). Force-included
// (-include) before every other header, with this directory first on the
// include path so that its stand-ins for the CUDA headers win.
//
// Every CUDA thread of a launch becomes an OS thread. __syncthreads is a
// barrier over the CTA's threads, grid.sync() one over all of them; shared
// memory is one buffer per CTA; mma.sync m16n8k16 is computed from the
// fragments of all 32 lanes of the warp, laid out as the PTX ISA specifies.
// Every write before a barrier is visible after it (acquire and release):
// the emulation checks indexing, ownership, step order and the placement of
// the barriers (a missing one shows up as a wrong result often enough), not
// the memory model or the timing of a real GPU.
#pragma once

#define FUSEDLSTM_CUDA_EMULATION 1

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

using std::max;
using std::min;

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {

// A barrier over n emulated threads. Every barrier of a launch runs through
// here (each mma.sync and warp shuffle takes two), with far more threads than
// cores, so its cost is most of the emulated tests' running time: an arrival
// is one atomic add, and the last arrival wakes every sleeper with one futex
// call. (A mutex and a condition variable, before, woke each waiter only to
// queue for the mutex again: twice the time; benchmarks/NOTES.md, "CI's
// running time".) Elsewhere than on Linux the waiters only yield.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait() { wait_for(arrive()); }
  // The two halves of wait(), for a split-phase barrier: arrive() counts
  // the thread in and returns the generation it arrived in; wait_for(gen)
  // returns once every thread has arrived in it. Writes before a thread's
  // arrive are visible after every thread's wait (each arrival releases, the
  // last acquires them all and releases the new generation, which the
  // waiters acquire); writes between its arrive and its wait are not
  // ordered by this barrier at all.
  long arrive() {
    // No thread can move the generation on before this one has arrived.
    const uint32_t gen = gen_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
      // Reset before the new generation is published: no thread arrives in
      // it before seeing it.
      arrived_.store(0, std::memory_order_relaxed);
      gen_.store(gen + 1, std::memory_order_release);
      wake_all();
    }
    return gen;
  }
  void wait_for(long gen) {
    const auto g = static_cast<uint32_t>(gen);
    // A few yields first: where the last arrivals are runnable already they
    // often finish before a sleep would have begun.
    for (int i = 0; i < kYieldsBeforeSleep; ++i) {
      if (gen_.load(std::memory_order_acquire) != g) return;
      std::this_thread::yield();
    }
    while (gen_.load(std::memory_order_acquire) == g) sleep_while(g);
  }

 private:
#if defined(__linux__)
  int* futex_word() { return reinterpret_cast<int*>(&gen_); }
  void sleep_while(uint32_t g) {
    // Returns at once if the generation has already moved (EAGAIN).
    syscall(SYS_futex, futex_word(), FUTEX_WAIT_PRIVATE, static_cast<int>(g),
            nullptr, nullptr, 0);
  }
  void wake_all() {
    syscall(SYS_futex, futex_word(), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
  }
#else
  void sleep_while(uint32_t) { std::this_thread::yield(); }
  void wake_all() {}
#endif
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(int),
                "the futex word is the generation itself");
  static constexpr int kYieldsBeforeSleep = 4;
  const int n_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> gen_{0};
};

struct Warp {
  Warp() : bar(32) {}
  Barrier bar;
  uint32_t a[32][4], b[32][2];
  float lanes[32];  // __shfl_xor_sync's exchange
};

struct Cta {
  Cta(int threads, size_t smem_bytes)
      : bar(threads), smem(smem_bytes + 16), warps(threads / 32) {}
  Barrier bar;
  std::vector<unsigned char> smem;
  std::vector<Warp> warps;
};

inline thread_local Cta* cta = nullptr;
inline Barrier* grid_barrier = nullptr;

// A thread-block cluster: its CTAs (consecutive in x) and a barrier over all
// of their threads.
struct Cluster {
  Cluster(int threads, std::vector<Cta*> members)
      : bar(threads), ctas(std::move(members)) {}
  Barrier bar;
  std::vector<Cta*> ctas;
};
inline thread_local Cluster* cluster = nullptr;
inline thread_local int cluster_rank = 0;

// Runs body() as every thread of a grid x block launch with `smem` bytes of
// dynamic shared memory per CTA, in clusters of `cluster_size` CTAs (grid.x
// a multiple of it); returns when all threads have finished.
inline void launch(dim3 grid, dim3 block, size_t smem,
                   const std::function<void()>& body, int cluster_size = 1) {
  const int per_cta = static_cast<int>(block.x);
  Barrier all(static_cast<int>(grid.x) * per_cta);
  grid_barrier = &all;
  std::vector<std::unique_ptr<Cta>> ctas;
  for (unsigned b = 0; b < grid.x; ++b) {
    ctas.push_back(std::make_unique<Cta>(per_cta, smem));
    // Uninitialised shared memory on a GPU: garbage, not zeros.
    std::memset(ctas.back()->smem.data(), 0x7f, ctas.back()->smem.size());
  }
  std::vector<std::unique_ptr<Cluster>> clusters;
  for (unsigned b = 0; b < grid.x; b += cluster_size) {
    std::vector<Cta*> members;
    for (int r = 0; r < cluster_size; ++r) members.push_back(ctas[b + r].get());
    clusters.push_back(std::make_unique<Cluster>(cluster_size * per_cta, members));
  }
  std::vector<std::thread> threads;
  for (unsigned b = 0; b < grid.x; ++b) {
    for (int t = 0; t < per_cta; ++t) {
      threads.emplace_back([&, b, t] {
        threadIdx = dim3(t);
        blockIdx = dim3(b);
        blockDim = block;
        gridDim = grid;
        cta = ctas[b].get();
        cluster = clusters[b / cluster_size].get();
        cluster_rank = static_cast<int>(b % cluster_size);
        body();
      });
    }
  }
  for (auto& th : threads) th.join();
  grid_barrier = nullptr;
}

}  // namespace emu

inline void __syncthreads() { emu::cta->bar.wait(); }

inline unsigned char* dynamic_smem() {
  // 16-byte aligned, like the kernels' extern __shared__ declaration.
  auto p = reinterpret_cast<uintptr_t>(emu::cta->smem.data());
  return reinterpret_cast<unsigned char*>((p + 15) / 16 * 16);
}

template <typename T>
inline T __ldcg(const T* p) { return *p; }

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// Every lane of the warp must call it (the kernels pass a full mask): each
// publishes its value, then reads its partner's.
inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  const int lane = threadIdx.x & 31;
  emu::Warp& w = emu::cta->warps[threadIdx.x >> 5];
  w.lanes[lane] = v;
  w.bar.wait();
  const float other = w.lanes[lane ^ lane_mask];
  w.bar.wait();  // the values are overwritten by the next call
  return other;
}

inline uint32_t __float_as_uint(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float __uint_as_float(uint32_t u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away from
// zero (on the magnitude); Inf and NaN pass through.
inline float emulated_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  const uint32_t u = (__float_as_uint(v) + 0x1000u) & 0xffffe000u;
  return __uint_as_float(u);
}

// 16-bit element of a fragment register: the lower half holds the element
// with the lower index.
inline uint16_t emu_half_of(uint32_t reg, int which) {
  return static_cast<uint16_t>(which ? reg >> 16 : reg & 0xffffu);
}

inline float emu_bits_to_float_f16(uint16_t bits) {
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}
inline float emu_bits_to_float_bf16(uint16_t bits) {
  return static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
}

// The warp-collective part of both emulated MMAs: every lane publishes its
// fragments, then sums its four outputs (rows g, g+8; columns 2tig, 2tig+1)
// over K from all 32 lanes' fragments, read through A(warp, row, k) and
// B(warp, k, col).
template <int K, typename AOf, typename BOf>
void emulated_mma(float c[4], const uint32_t a[4], const uint32_t b[2], AOf A,
                  BOf B) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  emu::Warp& w = emu::cta->warps[warp];
  for (int i = 0; i < 4; ++i) w.a[lane][i] = a[i];
  for (int i = 0; i < 2; ++i) w.b[lane][i] = b[i];
  w.bar.wait();
  const int g = lane / 4, tig = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * tig + (i % 2);
    float s = 0.f;
    for (int k = 0; k < K; ++k) s += A(w, row, k) * B(w, k, col);
    c[i] += s;
  }
  w.bar.wait();  // the fragments are overwritten by the next call
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: D = A (16x16) B (16x8)
// + C. groupID = lane / 4, tig = lane % 4. A: a0 (row g, k 2tig..+1), a1
// (row g+8), a2 (k + 8), a3 (row g+8, k + 8). B: b0 (k 2tig..+1, col g), b1
// (k + 8). C: c0, c1 (row g, col 2tig..+1), c2, c3 (row g+8).
template <typename T>
void emulated_mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  auto cvt = [](uint16_t bits) {
    return std::is_same_v<T, c10::Half> ? emu_bits_to_float_f16(bits)
                                        : emu_bits_to_float_bf16(bits);
  };
  emulated_mma<16>(
      c, a, b,
      [&](const emu::Warp& w, int row, int k) {
        const int src = (row % 8) * 4 + (k % 8) / 2;
        const int reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        return cvt(emu_half_of(w.a[src][reg], k % 2));
      },
      [&](const emu::Warp& w, int k, int col) {
        const int src = col * 4 + (k % 8) / 2;
        return cvt(emu_half_of(w.b[src][k >= 8 ? 1 : 0], k % 2));
      });
}

// mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 (sm_75's float16 MMA):
// two 16-bit elements per register, A in a[0..1], B in b. A: a0 (row g, k
// 2tig..+1), a1 (row g+8). B: b (k 2tig..+1, col g). C as in m16n8k16.
inline void emulated_mma1688_f16(float c[4], const uint32_t a[2], uint32_t b) {
  const uint32_t a4[4] = {a[0], a[1], 0u, 0u};
  const uint32_t b2[2] = {b, 0u};
  emulated_mma<8>(
      c, a4, b2,
      [](const emu::Warp& w, int row, int k) {
        const int src = (row % 8) * 4 + k / 2;
        return emu_bits_to_float_f16(emu_half_of(w.a[src][row >= 8 ? 1 : 0], k % 2));
      },
      [](const emu::Warp& w, int k, int col) {
        return emu_bits_to_float_f16(emu_half_of(w.b[col * 4 + k / 2][0], k % 2));
      });
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: one 32-bit element
// per register. A: a0 (row g, k tig), a1 (row g+8), a2 (k tig+4), a3 (row
// g+8, k tig+4). B: b0 (k tig, col g), b1 (k tig+4). C as in m16n8k16.
inline void emulated_mma1688_tf32(float c[4], const uint32_t a[4],
                                  const uint32_t b[2]) {
  emulated_mma<8>(
      c, a, b,
      [](const emu::Warp& w, int row, int k) {
        const int src = (row % 8) * 4 + k % 4;
        return __uint_as_float(w.a[src][(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]);
      },
      [](const emu::Warp& w, int k, int col) {
        return __uint_as_float(w.b[col * 4 + k % 4][k >= 4 ? 1 : 0]);
      });
}
