// Device code shared by the persistent and cluster kernels: their constants,
// the cells' input preloading, element storage and conversions, the
// shared-memory geometry of a weight slice and of a CTA, and the slice
// loader. The products are in mma_tiles.cuh (tensor-core fragments) and
// block_matmul.cuh (the CTA-wide product, and exact fp32's); the host side
// (plans, launches) is launch_plan.cuh. Included only by the kernels' headers
// and the planner.
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

#ifndef FUSEDLSTM_CUDA_EMULATION
// The CTA's dynamic shared memory (the launch's smem bytes). A function, so
// that cpp_tests/cuda_emulation can run the kernels on the host.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  return smem_bytes;
}
#endif

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

// Value a weight takes in shared memory: TF32 products read it pre-rounded.
template <typename T>
__device__ __forceinline__ storage_t<T> to_smem(storage_t<T> v) {
  if constexpr (std::is_same_v<T, Tf32>) return to_tf32(v);
  else return v;
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
