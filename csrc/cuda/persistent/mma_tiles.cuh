// Warp-level tensor-core fragments of the persistent and cluster kernels' product:
// the mma.sync wrappers (m16n8k16 for the half types, m16n8k8 for TF32), the
// A and B fragment loads, and block_matmul_tiles, the tensor-core part of
// block_matmul (block_matmul.cuh). On the host, cpp_tests/cuda_emulation
// stands in for the instructions.
#pragma once

#include "cuda/persistent/persistent_common.cuh"

namespace fusedlstm::cuda::persistent {

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

}  // namespace fusedlstm::cuda::persistent
