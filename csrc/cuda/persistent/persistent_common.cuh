// Device code shared by the persistent and cluster kernels: element storage,
// the shared-memory geometry of a weight slice, the CTA-wide product of a
// slice with rows read from global or shared memory, and the slice loader.
// The host side (plans, launches) is launch_plan.cuh. Included only by the
// kernels' headers.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/persistent/persistent.h"

namespace fusedlstm::cuda::persistent {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// Batch rows per pass over the weights: four n-tiles of an m16n8k16 MMA.
// Larger batches loop over chunks, so B is unbounded.
constexpr int kChunk = 32;
// Row stride of block_matmul's partial sums in shared memory, [r][b]. The
// cells read them with r varying fastest across a warp's lanes (cell e: unit
// e % U): at a stride of kChunk every lane hit the same bank, a U-way
// conflict on each of a cell's four gate reads (32-way in the cluster kernel
// at H = 512). One float of padding puts consecutive rows in consecutive
// banks; the tensor-core stores of a warp's 8 x 4 fragment then touch 14
// banks instead of 4.
constexpr int kPartStride = kChunk + 1;
// Exact fp32 path (fma_block_matmul): a warp's tile of the product is this
// many weight rows by 1-8 batch rows, its lanes splitting the depth.
constexpr int kFmaRowTile = 4;
// Exact fp32 path: x is staged in shared memory a pass of whole rows at a
// time (up to kChunk). The planner gives the buffer what the CTA's other
// shared memory leaves of kFmaSmemTarget bytes, or of the device's limit
// where that is lower (plan_cooperative): on sm_90 the registers allow one
// CTA an SM, so shared memory past the weights is free, and fewer passes
// mean fewer L2 round trips a step (the backward's rows are 4H deep).
constexpr size_t kFmaSmemTarget = 160 * 1024;
// Exact fp32 path: the staging buffer where the target's would leave the
// grid too large to be co-resident (16 KB, as the kernel before change 66).
constexpr int kFmaStageFallbackFloats = 4096;
// Tensor-core forward: chunks of more rows than this stage h in shared
// memory first (lstm_persistent_fwd). At 8 rows or fewer (one n-tile) the
// warps' own loads are as few round trips and the staging's barrier would
// only add to the step (NOTES, change 67).
constexpr int kStageMinRows = 8;
// Cells per thread whose inputs (gates, cells, c_{t-1}, ...) are loaded
// before the step's recurrent product, in registers; the product's result
// is all the cell then waits for. A thread runs kChunk * U / kThreads cells
// per chunk of the forward: U <= 16 needs no more than 2.
constexpr int kPreloadCells = 2;

// Runs product() and then cell(e, load(e)) for every cell e < n, this
// thread's cells being e = threadIdx.x + i * kThreads: the inputs of its
// first kPreloadCells cells are loaded before the product, so that their
// latency (they come from HBM) overlaps it instead of following it. load
// must not depend on the product's results. Its state reads (c_{t-1},
// dc) need no barrier before them only because the thread that wrote them
// last step is this one: cell e of a step always falls to thread
// e % kThreads. A mapping that moves cells between threads from step to
// step would need a __syncthreads before the loads. The split-phase cluster
// kernels call its two halves themselves, preloading during the previous
// step's barrier.
template <typename Inputs, typename Load>
__device__ __forceinline__ void preload_cells(int n, Load load, Inputs (&pre)[kPreloadCells]) {
#pragma unroll
  for (int i = 0; i < kPreloadCells; ++i) {
    const int e = threadIdx.x + i * kThreads;
    if (e < n) pre[i] = load(e);
  }
}

// The cells after the product: this thread's first kPreloadCells from
// `pre` (preload_cells of the same n and load), the rest loaded here.
template <typename Inputs, typename Load, typename Cell>
__device__ __forceinline__ void cells_from_preloaded(int n, const Inputs (&pre)[kPreloadCells],
                                                     Load load, Cell cell) {
#pragma unroll
  for (int i = 0; i < kPreloadCells; ++i) {
    const int e = threadIdx.x + i * kThreads;
    if (e < n) cell(e, pre[i]);
  }
  for (int e = threadIdx.x + kPreloadCells * kThreads; e < n; e += kThreads) {
    cell(e, load(e));
  }
}

template <typename Load, typename Product, typename Cell>
__device__ __forceinline__ void cells_after_product(int n, Load load, Product product,
                                                    Cell cell) {
  decltype(load(0)) pre[kPreloadCells];
  preload_cells(n, load, pre);
  product();
  cells_from_preloaded(n, pre, load, cell);
}

// The kernels' element types: float (exact FMA products), Tf32 (declared in
// persistent.h), c10::Half and c10::BFloat16.

// Element storage: raw 16-bit patterns for the half types (converted with
// cuda_fp16/cuda_bf16 intrinsics), float for float and Tf32.
template <typename T>
constexpr bool kFloatStorage = std::is_same_v<T, float> || std::is_same_v<T, Tf32>;
template <typename T>
using storage_t = std::conditional_t<kFloatStorage<T>, float, unsigned short>;
template <typename T>
constexpr bool kTensorCore = !std::is_same_v<T, float>;
// The oldest GPU target whose instructions a kernel of element type T
// needs, as a compute capability x 10: the half types' m16n8k16 MMA is
// sm_80's, but sm_75 (Turing) has float16's as two m16n8k8 (see mma16816);
// bfloat16 and TF32 MMAs exist from sm_80; float32 runs on plain FMA. The
// planners refuse a device whose image of the kernel is older (an image
// built for an older target, in the arch list for that target, only traps).
template <typename T>
constexpr int kMinImageArch = std::is_same_v<T, float>      ? 0
                              : std::is_same_v<T, c10::Half> ? 75
                                                             : 80;

// Contraction depth of one MMA: m16n8k16 for the half types, m16n8k8 for TF32.
template <typename T>
constexpr int kMmaK = std::is_same_v<T, Tf32> ? 8 : 16;

template <typename T>
__device__ __forceinline__ float to_float(storage_t<T> v) {
  if constexpr (kFloatStorage<T>) return v;
  else if constexpr (std::is_same_v<T, c10::Half>) return __half2float(__ushort_as_half(v));
  else return __bfloat162float(__ushort_as_bfloat16(v));
}
template <typename T>
__device__ __forceinline__ storage_t<T> from_float(float v) {
  // Round to nearest even, as c10::Half/BFloat16 do in the stepwise path.
  if constexpr (kFloatStorage<T>) return v;
  else if constexpr (std::is_same_v<T, c10::Half>) return __half_as_ushort(__float2half_rn(v));
  else return __bfloat16_as_ushort(__float2bfloat16_rn(v));
}

// Four per-gate values of one (row, unit) into their places H apart.
template <typename T>
__device__ __forceinline__ void store_gates(storage_t<T>* g, int H, float i,
                                            float f, float gg, float o) {
  g[0] = from_float<T>(i);
  g[H] = from_float<T>(f);
  g[2 * H] = from_float<T>(gg);
  g[3 * H] = from_float<T>(o);
}

// Shared-memory geometry of one CTA's weight slice ([rows, k] of W_hh or
// W_hr), as both host (plan) and device (kernel) compute it.
struct SliceGeom {
  int rows = 0, rows_pad = 0, k = 0, k_pad = 0;
  int stride = 0;  // elements between rows in shared memory
  int ksplit = 1;  // warps sharing one m-tile, each over a slice of k
  int stage_rows = 0;  // rows of x the staging buffer holds (smem_layout_of)
};

template <typename T>
__host__ __device__ inline SliceGeom slice_geom(int rows, int k) {
  SliceGeom g;
  g.rows = rows;
  g.k = k;
  if constexpr (kTensorCore<T>) {
    constexpr int kk = kMmaK<T>;
    g.rows_pad = (rows + 15) / 16 * 16;
    g.k_pad = (k + kk - 1) / kk * kk;
    // Half types: k_pad/2 + 4 words; TF32: k_pad + 4 words. Either way an
    // odd multiple of 4 mod 32, so the eight rows of an A-fragment load hit
    // eight different 4-bank groups.
    g.stride = std::is_same_v<T, Tf32> ? g.k_pad + 4 : g.k_pad + 8;
    const int mt = g.rows_pad / 16, kt = g.k_pad / kk;
    int ks = mt >= kWarps ? 1 : kWarps / mt;
    g.ksplit = ks < kt ? ks : (kt > 0 ? kt : 1);
  } else {
    // Rows in tiles of kFmaRowTile; the depth in 16-byte granules, lane j of
    // a warp reading granule j of a row (consecutive: no bank conflict at
    // any stride). The warps split the depth where the row tiles alone
    // would leave some idle, down to 32 granules (one per lane) a part.
    g.rows_pad = (rows + kFmaRowTile - 1) / kFmaRowTile * kFmaRowTile;
    g.k_pad = (k + 3) / 4 * 4;
    g.stride = g.k_pad;
    const int row_tiles = g.rows_pad / kFmaRowTile, granules = g.k_pad / 4;
    const int ks = row_tiles >= kWarps ? 1 : kWarps / (row_tiles > 0 ? row_tiles : 1);
    const int most = granules / 32 > 1 ? granules / 32 : 1;
    g.ksplit = ks < most ? ks : most;
  }
  return g;
}

// The rows of x (`row_elems` elements apart) that a staging buffer of
// `elems` holds: from 1 (exact fp32 stages at least a row) up to kChunk.
__host__ __device__ inline int stage_rows_of(size_t row_elems, size_t elems) {
  if (row_elems == 0) return 0;
  const size_t rows = elems / row_elems;
  return rows < 1 ? 1 : (rows > size_t(kChunk) ? kChunk : int(rows));
}

// A CTA's dynamic shared memory: up to two weight slices, the partial sums
// of block_matmul, and its staging buffer for x of stage_elems elements
// (PersistentPlan::x_stage_elems): exact fp32 always has one, of at least
// one row of the deeper slice (g.k_pad floats a row); the tensor-core types
// one only where stage_elems > 0, its rows w1.stride apart as load_b_tile's
// kSharedX path reads them.
struct SmemLayout {
  SliceGeom w1, w2;      // first and (projection only) second weight slice
  size_t off_w2 = 0, off_part = 0, off_xs = 0, total = 0;
};

__host__ __device__ inline size_t align16(size_t x) { return (x + 15) / 16 * 16; }

// w2 is an empty SliceGeom when there is no second slice.
template <typename T>
__host__ __device__ inline SmemLayout smem_layout_of(const SliceGeom& w1,
                                                     const SliceGeom& w2,
                                                     size_t stage_elems = 0) {
  SmemLayout L;
  L.w1 = w1;
  L.w2 = w2;
  const size_t es = sizeof(storage_t<T>);
  L.off_w2 = align16(size_t(w1.rows_pad) * w1.stride * es);
  L.off_part = L.off_w2 + align16(size_t(w2.rows_pad) * w2.stride * es);
  const int part1 = w1.ksplit * w1.rows_pad;
  const int part2 = w2.ksplit * w2.rows_pad;
  // Partial sums [ksplit][rows_pad][kPartStride]; after the k-split
  // reduction the first slice holds the result.
  L.off_xs = L.off_part + align16(size_t(part1 > part2 ? part1 : part2) * kPartStride * 4);
  size_t xs = 0;
  if constexpr (!kTensorCore<T>) {
    L.w1.stage_rows = stage_rows_of(w1.k_pad, stage_elems);
    L.w2.stage_rows = stage_rows_of(w2.k_pad, stage_elems);
    const size_t x1 = size_t(L.w1.stage_rows) * w1.k_pad;
    const size_t x2 = size_t(L.w2.stage_rows) * w2.k_pad;
    xs = (x1 > x2 ? x1 : x2) * 4;
  } else if (stage_elems > 0) {
    L.w1.stage_rows = stage_rows_of(w1.stride, stage_elems);
    L.w2.stage_rows = stage_rows_of(w2.stride, stage_elems);
    xs = align16(stage_elems * es);
  }
  L.total = L.off_xs + xs;
  return L;
}

// x: [rows >= nbn, K] row-major in global memory, written by other CTAs
// since the last grid sync: read through L2 (ld.cg), never a stale L1 line.
__device__ __forceinline__ uint32_t load_pair(const unsigned short* xr, int k,
                                              int K, bool valid) {
  const uint32_t lo = (valid && k < K) ? __ldcg(xr + k) : 0u;
  const uint32_t hi = (valid && k + 1 < K) ? __ldcg(xr + k + 1) : 0u;
  return lo | (hi << 16);
}

// The same where x and its row stride allow 32-bit loads (k even): one load
// for both elements.
__device__ __forceinline__ uint32_t load_pair_aligned(const unsigned short* xr,
                                                      int k, int K, bool valid) {
  if (valid && k + 1 < K) return __ldcg(reinterpret_cast<const unsigned int*>(xr + k));
  return (valid && k < K) ? uint32_t(__ldcg(xr + k)) : 0u;
}

#ifndef FUSEDLSTM_CUDA_EMULATION
// The CTA's dynamic shared memory (the launch's smem bytes). A function, so
// that cpp_tests/cuda_emulation can run the kernels on the host.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return smem_bytes;
}
#endif

// c += A (16x16, row) B (16x8, col), half-type inputs, fp32 accumulation.
template <typename T>
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4],
                                         const uint32_t b[2]) {
#ifdef FUSEDLSTM_CUDA_EMULATION
  // cpp_tests/cuda_emulation/prelude.h; an emulated sm_75 image takes the
  // Turing form below.
  if (std::is_same_v<T, c10::Half> && emu::kImageArch < 80) {
    emulated_mma1688_f16(c, a, b[0]);
    emulated_mma1688_f16(c, a + 2, b[1]);
  } else {
    emulated_mma16816<T>(c, a, b);
  }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  // sm_75: the k = 16 fragments are two k = 8 fragments side by side (a0,
  // a1, b0 hold k 0-7; a2, a3, b1 hold k 8-15, in the k8 shape's layout).
  // Older targets, and bfloat16 before sm_80, have no such MMA.
#if __CUDA_ARCH__ >= 750
  if constexpr (std::is_same_v<T, c10::Half>) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      asm volatile(
          "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
          "{%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[2 * half]), "r"(a[2 * half + 1]), "r"(b[half]));
    }
    return;
  }
#endif
  __trap();
#else
  if constexpr (std::is_same_v<T, c10::Half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#endif
}

// Rounds to TF32 (10 mantissa bits, to nearest, ties away from zero), the
// conversion cuDNN and cuBLAS apply to fp32 operands of TF32 tensor cores.
__device__ __forceinline__ float to_tf32(float v) {
#ifdef FUSEDLSTM_CUDA_EMULATION
  return emulated_to_tf32(v);  // cpp_tests/cuda_emulation/prelude.h
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // TF32 is sm_80's (kMinImageArch): this image never runs
  return v;
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
  return __uint_as_float(r);
#endif
}

// c += A (16x8, row) B (8x8, col), TF32 inputs, fp32 accumulation.
__device__ __forceinline__ void mma1688_tf32(float c[4], const uint32_t a[4],
                                             const uint32_t b[2]) {
#ifdef FUSEDLSTM_CUDA_EMULATION
  emulated_mma1688_tf32(c, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // as in to_tf32
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// Element of x as a TF32 B-fragment register (x in global memory, written by
// other CTAs since the last grid sync: through L2).
__device__ __forceinline__ uint32_t load_tf32(const float* xr, int k, int K,
                                              bool valid) {
  const float v = (valid && k < K) ? __ldcg(xr + k) : 0.f;
  return __float_as_uint(to_tf32(v));
}

// Value a weight takes in shared memory: TF32 products read it pre-rounded.
template <typename T>
__device__ __forceinline__ storage_t<T> to_smem(storage_t<T> v) {
  if constexpr (std::is_same_v<T, Tf32>) return to_tf32(v);
  else return v;
}

// B fragments of one k-tile (starting at k0) for n-tiles nt < NT (x rows
// nt*8 + gq; rows at or past nbn read as zeros). m16n8k16 (half types):
// b0 = k 2tq..+1, b1 = k 2tq+8..+9; m16n8k8 (TF32): b0 = k tq, b1 = k tq+4.
// `aligned`: x and ldx allow one 32-bit load per pair of 16-bit elements.
// kSharedX: x is in this CTA's shared memory, rows 4-byte aligned and zero
// from K to the slice's k_pad (plain loads; __ldcg is for global memory).
template <typename T, int NT, bool kSharedX>
__device__ __forceinline__ void load_b_tile(const storage_t<T>* __restrict__ x,
                                            int64_t ldx, int k0, int K, int nbn,
                                            int gq, int tq, bool aligned,
                                            uint32_t (&b)[NT][2]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const int n = nt * 8 + gq;
    const bool valid = n < nbn;
    const storage_t<T>* xr = x + (valid ? n : 0) * ldx;
    if constexpr (kSharedX) {
      if constexpr (std::is_same_v<T, Tf32>) {
        b[nt][0] = valid ? __float_as_uint(to_tf32(xr[k0 + tq])) : 0u;
        b[nt][1] = valid ? __float_as_uint(to_tf32(xr[k0 + tq + 4])) : 0u;
      } else {
        b[nt][0] = valid ? *reinterpret_cast<const uint32_t*>(xr + k0 + 2 * tq) : 0u;
        b[nt][1] = valid ? *reinterpret_cast<const uint32_t*>(xr + k0 + 2 * tq + 8) : 0u;
      }
    } else if constexpr (std::is_same_v<T, Tf32>) {
      b[nt][0] = load_tf32(xr, k0 + tq, K, valid);
      b[nt][1] = load_tf32(xr, k0 + tq + 4, K, valid);
    } else if (aligned) {
      b[nt][0] = load_pair_aligned(xr, k0 + 2 * tq, K, valid);
      b[nt][1] = load_pair_aligned(xr, k0 + 2 * tq + 8, K, valid);
    } else {
      b[nt][0] = load_pair(xr, k0 + 2 * tq, K, valid);
      b[nt][1] = load_pair(xr, k0 + 2 * tq + 8, K, valid);
    }
  }
}

// A fragment of m-tile rows [0, 16) of `wa` (the slice at the warp's m-tile
// row gq, column tq or 2tq) for the k-tile starting at k0.
template <typename T>
__device__ __forceinline__ void load_a_tile(const storage_t<T>* wa, int stride,
                                            int k0, uint32_t (&a)[4]) {
  if constexpr (std::is_same_v<T, Tf32>) {
    // m16n8k8: a0 (row gq, k tq), a1 (row gq+8), a2 (k tq+4), a3 (both).
    a[0] = __float_as_uint(wa[k0]);
    a[1] = __float_as_uint(wa[8 * stride + k0]);
    a[2] = __float_as_uint(wa[k0 + 4]);
    a[3] = __float_as_uint(wa[8 * stride + k0 + 4]);
  } else {
    // m16n8k16: a0 (row gq, k 2tq..+1), a1 (row gq+8), a2 (k + 8), a3 (both).
    a[0] = *reinterpret_cast<const uint32_t*>(wa + k0);
    a[1] = *reinterpret_cast<const uint32_t*>(wa + 8 * stride + k0);
    a[2] = *reinterpret_cast<const uint32_t*>(wa + k0 + 8);
    a[3] = *reinterpret_cast<const uint32_t*>(wa + 8 * stride + k0 + 8);
  }
}

template <typename T>
__device__ __forceinline__ void mma_tile(float c[4], const uint32_t a[4],
                                         const uint32_t b[2]) {
  if constexpr (std::is_same_v<T, Tf32>) mma1688_tf32(c, a, b);
  else mma16816<T>(c, a, b);
}

// Registers of B fragments a warp holds ahead of their MMAs. x was written
// by other CTAs since the last grid sync and comes from L2: loading one
// k-tile and multiplying it before asking for the next would cost an L2
// round trip per k-tile, on the critical path of every step. A warp loads a
// batch of k-tiles, then multiplies them: one round trip per batch. The
// batch is as deep as this budget allows for the chunk's n-tiles (16 k-tiles
// for up to 8 rows, 4 for 32); twice the budget spilled registers in the
// backward kernel (ptxas -v).
constexpr int kFragmentRegs = 32;

// The tensor-core part of block_matmul for NT n-tiles (nbn <= 8 NT): each
// warp's partial sums into part, not yet reduced over the k-split. With NT
// <= 2 a warp alternates its k-steps between two accumulators, added at the
// end: each MMA then waits for the one two steps back, not the one before
// (NOTES change 70); four n-tiles keep one, for registers.
template <typename T, int NT, bool kSharedX>
__device__ __forceinline__ void block_matmul_tiles(
    const storage_t<T>* __restrict__ w, const SliceGeom& g,
    const storage_t<T>* __restrict__ x, int64_t ldx, int nbn,
    float* __restrict__ part) {
  constexpr int kk = kMmaK<T>, kBatch = kFragmentRegs / (2 * NT);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gq = lane >> 2, tq = lane & 3;
  const int MT = g.rows_pad / 16, KT = g.k_pad / kk, KS = g.ksplit;
  const bool aligned = !kFloatStorage<T> && ldx % 2 == 0 &&
                       reinterpret_cast<uintptr_t>(x) % 4 == 0;
  for (int unit = warp; unit < MT * KS; unit += kWarps) {
    const int mt = unit % MT, ks = unit / MT;
    const int kt0 = ks * KT / KS, kt1 = (ks + 1) * KT / KS;
    const storage_t<T>* wa =
        w + (mt * 16 + gq) * g.stride + (kFloatStorage<T> ? tq : 2 * tq);
    constexpr int C = NT <= 2 ? 2 : 1;  // accumulator chains
    static_assert(kBatch % C == 0, "each batch of k-steps starts on chain 0");
    float acc[C][NT][4] = {};
    for (int kb = kt0; kb < kt1; kb += kBatch) {
      uint32_t b[kBatch][NT][2];
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        if (kb + i < kt1) {  // warp-uniform
          load_b_tile<T, NT, kSharedX>(x, ldx, (kb + i) * kk, g.k, nbn, gq, tq,
                                       aligned, b[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < kBatch; ++i) {
        if (kb + i < kt1) {
          uint32_t a[4];
          load_a_tile<T>(wa, g.stride, (kb + i) * kk, a);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) mma_tile<T>(acc[i % C][nt], a, b[i][nt]);
        }
      }
    }
#pragma unroll
    for (int c = 1; c < C; ++c) {
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[0][nt][j] += acc[c][nt][j];
      }
    }
    // Columns of part past 8 NT are left as they are: never read (b < nbn).
    float* pp = part + (size_t(ks) * g.rows_pad + mt * 16 + gq) * kPartStride + 2 * tq;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      pp[nt * 8] = acc[0][nt][0];
      pp[nt * 8 + 1] = acc[0][nt][1];
      pp[8 * kPartStride + nt * 8] = acc[0][nt][2];
      pp[8 * kPartStride + nt * 8 + 1] = acc[0][nt][3];
    }
  }
}

// One round of warp_reduce_scatter over the first N of a lane's values: the
// lane whose bit M is set keeps the upper half, its partner the lower, and
// each adds the other's copy of the half it keeps. (A template, so that
// every index is a constant and the values stay in registers.)
template <int N, int M, int V>
__device__ __forceinline__ void reduce_scatter_round(float (&v)[V], int lane) {
  if constexpr (N > 1) {
    const bool upper = (lane & M) != 0;
#pragma unroll
    for (int i = 0; i < N / 2; ++i) {
      const float give = upper ? v[i] : v[i + N / 2];
      const float keep = upper ? v[i + N / 2] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, give, M);
    }
    reduce_scatter_round<N / 2, M / 2>(v, lane);
  }
}

// Sums each of a warp's V = 2^v values over its 32 lanes with 31 or fewer
// shuffles in all (a reduce-scatter, then a butterfly over the lanes left):
// returns, in the lanes whose low 5 - v bits are zero, the total of value
// lane >> (5 - v). Every lane of the warp must call it. The order of the
// additions is fixed: deterministic.
template <int V>
__device__ __forceinline__ float warp_reduce_scatter(float (&v)[V]) {
  static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V: a power of 2 up to 32");
  const int lane = threadIdx.x & 31;
  reduce_scatter_round<V, 16>(v, lane);
  float s = v[0];
#pragma unroll
  for (int m = 16 / V; m >= 1; m /= 2) s += __shfl_xor_sync(0xffffffffu, s, m);
  return s;
}

// The exact-fp32 products of one staged pass: part[ks][r][c0 + b] for every
// row r < g.rows_pad, staged row b < nb (xs[b][k], g.k_pad floats a row)
// and k-split part ks. A warp's unit is kFmaRowTile weight rows by BT staged
// rows over one part of the depth, its lanes taking every 32nd 16-byte
// granule: 4 * kFmaRowTile * BT multiply-adds per kFmaRowTile + BT shared
// loads, all lanes busy even at one batch row. The warp's partial sums then
// meet in warp_reduce_scatter.
template <int BT>
__device__ __forceinline__ void fma_tiles(const float* __restrict__ w, const SliceGeom& g,
                                          const float* __restrict__ xs, int nb, int c0,
                                          float* __restrict__ part) {
  constexpr int RT = kFmaRowTile, V = RT * BT, kLanesPerValue = 32 / V;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int granules = g.k_pad / 4, KS = g.ksplit;
  const int row_tiles = g.rows_pad / RT, batch_tiles = (nb + BT - 1) / BT;
  const int units = row_tiles * batch_tiles * KS;
  const float4* w4 = reinterpret_cast<const float4*>(w);
  const float4* x4 = reinterpret_cast<const float4*>(xs);
  for (int unit = warp; unit < units; unit += kWarps) {  // warp-uniform
    const int rt = unit % row_tiles, rest = unit / row_tiles;
    const int bt = rest % batch_tiles, ks = rest / batch_tiles;
    const int j0 = ks * granules / KS, j1 = (ks + 1) * granules / KS;
    float acc[V] = {};
    for (int j = j0 + lane; j < j1; j += 32) {
      float4 wv[RT], xv[BT];
#pragma unroll
      for (int i = 0; i < RT; ++i) wv[i] = w4[(rt * RT + i) * granules + j];
#pragma unroll
      for (int b = 0; b < BT; ++b) {
        // Rows past nb were not staged (and may lie past xs): zeros.
        xv[b] = bt * BT + b < nb ? x4[(bt * BT + b) * granules + j]
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int i = 0; i < RT; ++i) {
#pragma unroll
        for (int b = 0; b < BT; ++b) {
          float& a = acc[i * BT + b];
          a = fmaf(wv[i].x, xv[b].x, a);
          a = fmaf(wv[i].y, xv[b].y, a);
          a = fmaf(wv[i].z, xv[b].z, a);
          a = fmaf(wv[i].w, xv[b].w, a);
        }
      }
    }
    const float sum = warp_reduce_scatter<V>(acc);
    if (lane % kLanesPerValue == 0) {
      const int idx = lane / kLanesPerValue, b = bt * BT + idx % BT;
      if (b < nb) {
        part[(size_t(ks) * g.rows_pad + rt * RT + idx / BT) * kPartStride + c0 + b] = sum;
      }
    }
  }
}

// Copies rows [0, n) of x ([n, K] at row stride ldx in global memory,
// written by other CTAs since the last grid sync: read through L2) into
// shared memory at row stride ld, zero from K to k_pad; k_pad and ld are
// multiples of the 16 bytes a unit moves. Each thread has
// kStageLoadsInFlight 16-byte loads in flight, so a CTA stages up to 32 KB
// in one L2 round trip; element loads where x's base or stride is not on
// the 16-byte grid, or past the last whole unit. No barrier.
constexpr int kStageLoadsInFlight = 8;
template <typename S>
__device__ __forceinline__ void stage_rows(S* __restrict__ dst, int ld,
                                           const S* __restrict__ x, int64_t ldx,
                                           int K, int k_pad, int n) {
  constexpr int E = 16 / sizeof(S);  // elements a unit
  union Unit {
    uint4 v;
    S e[E];
  };
  const int units = k_pad / E, total = n * units;
  const bool vec = ldx % E == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int e0 = threadIdx.x; e0 < total; e0 += kThreads * kStageLoadsInFlight) {
    Unit u[kStageLoadsInFlight];
#pragma unroll
    for (int i = 0; i < kStageLoadsInFlight; ++i) {
      const int e = e0 + i * kThreads;
      if (e >= total) break;
      const int b = e / units, k = E * (e - b * units);
      const S* xr = x + int64_t(b) * ldx + k;
      if (vec && k + E <= K) {
        u[i].v = __ldcg(reinterpret_cast<const uint4*>(xr));
      } else {
#pragma unroll
        for (int j = 0; j < E; ++j) u[i].e[j] = k + j < K ? __ldcg(xr + j) : S(0);
      }
    }
#pragma unroll
    for (int i = 0; i < kStageLoadsInFlight; ++i) {
      const int e = e0 + i * kThreads;
      if (e >= total) break;
      const int b = e / units, k = E * (e - b * units);
      *reinterpret_cast<uint4*>(dst + int64_t(b) * ld + k) = u[i].v;
    }
  }
}

// part[r][b] = sum_k W[r][k] * x[b][k] in exact fp32 (see block_matmul). x's
// rows are staged (stage_rows) in passes of g.stage_rows, rows g.k_pad
// floats apart: a few L2 round trips a step, not one per element of the
// depth. The caller's last barrier must follow its last use of xs (every
// kernel's does: each product is followed by one), so the first pass stages
// without waiting.
__device__ __forceinline__ void fma_block_matmul(const float* __restrict__ w,
                                                 const SliceGeom& g,
                                                 const float* __restrict__ x,
                                                 int64_t ldx, int nbn,
                                                 float* __restrict__ part,
                                                 float* __restrict__ xs) {
  const int rows = g.stage_rows;
  for (int b0 = 0; b0 < nbn; b0 += rows) {
    const int nb = min(rows, nbn - b0);
    if (b0 > 0) __syncthreads();  // the previous pass's readers are done with xs
    stage_rows<float>(xs, g.k_pad, x + int64_t(b0) * ldx, ldx, g.k, g.k_pad, nb);
    __syncthreads();
    // nb is uniform over the CTA: every warp takes the same branch.
    if (nb <= 1) fma_tiles<1>(w, g, xs, nb, b0, part);
    else if (nb <= 2) fma_tiles<2>(w, g, xs, nb, b0, part);
    else if (nb <= 4) fma_tiles<4>(w, g, xs, nb, b0, part);
    else fma_tiles<8>(w, g, xs, nb, b0, part);
  }
}

// Adds block_matmul's k-split parts into the first (part[r][b] for r <
// g.rows_pad), in a fixed order. Begins and ends with __syncthreads.
__device__ __forceinline__ void reduce_ksplit(const SliceGeom& g, float* __restrict__ part) {
  const int KS = g.ksplit;
  __syncthreads();
  if (KS > 1) {
    const int n = g.rows_pad * kPartStride;
    for (int e = threadIdx.x; e < n; e += kThreads) {
      float s = part[e];
      for (int ks = 1; ks < KS; ++ks) s += part[size_t(ks) * n + e];
      part[e] = s;
    }
    __syncthreads();
  }
}

// part[r][b] = sum_k W[r][k] * x[b][k] for r < g.rows_pad, b < nbn, computed
// by the whole CTA in a fixed order (deterministic). W in shared memory, x in
// global (or, kSharedX, tensor-core types only, in shared memory: see
// load_b_tile). xs: exact fp32's staging buffer (SmemLayout::off_xs), for
// which g must be the SmemLayout's copy (it sets stage_rows), and which no
// thread may still be reading since the caller's last barrier. Ends with
// __syncthreads; the result is part[r * kPartStride + b] for r < rows_pad.
template <typename T, bool kSharedX = false>
__device__ void block_matmul(const storage_t<T>* __restrict__ w,
                             const SliceGeom& g,
                             const storage_t<T>* __restrict__ x, int64_t ldx,
                             int nbn, float* __restrict__ part,
                             float* __restrict__ xs) {
  if constexpr (kTensorCore<T>) {
    // nbn is uniform over the CTA: every warp takes the same branch.
    if (nbn <= 8) block_matmul_tiles<T, 1, kSharedX>(w, g, x, ldx, nbn, part);
    else if (nbn <= 16) block_matmul_tiles<T, 2, kSharedX>(w, g, x, ldx, nbn, part);
    else block_matmul_tiles<T, 4, kSharedX>(w, g, x, ldx, nbn, part);
  } else {
    static_assert(!kSharedX, "the exact fp32 product stages x itself");
    fma_block_matmul(w, g, x, ldx, nbn, part, xs);
  }
  reduce_ksplit(g, part);
}

// Copies rows of a global weight matrix into a zero-padded shared slice.
// row_of(r) gives the global row of slice row r, or -1 for padding.
template <typename T, typename RowOf>
__device__ void load_slice(storage_t<T>* dst, const SliceGeom& g,
                           const storage_t<T>* __restrict__ src, int src_cols,
                           RowOf row_of) {
  const int n = g.rows_pad * g.stride;
  for (int e = threadIdx.x; e < n; e += kThreads) {
    const int r = e / g.stride, k = e - r * g.stride;
    const int gr = r < g.rows ? row_of(r) : -1;
    dst[e] = (gr >= 0 && k < src_cols) ? to_smem<T>(src[int64_t(gr) * src_cols + k])
                                       : storage_t<T>(0);
  }
}

}  // namespace fusedlstm::cuda::persistent
