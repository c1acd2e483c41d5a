// block_matmul, the CTA-wide product of a weight slice with a chunk of batch
// rows that every persistent and cluster kernel runs each step: the
// tensor-core tiles (mma_tiles.cuh) or the exact-fp32 FMA tiles with their
// staging of x, then the reduction of the warps' partial sums in a fixed
// order.
#pragma once

#include "cuda/persistent/mma_tiles.cuh"

namespace fusedlstm::cuda::persistent {

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

}  // namespace fusedlstm::cuda::persistent
