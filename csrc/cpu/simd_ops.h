// The register operations of the fused CPU recurrence for the ISA of the
// including file: AVX2 (8 float lanes) or AVX-512 (16), chosen by the target
// header included first (avx2_target.h or avx512_target.h), which also names
// the namespace (FUSEDLSTM_ISA). The tiles, the packing and the workers above
// are written once against these (and the cell's math against at::vec, whose
// width follows the same target), and compiled once per ISA.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cstdint>

#ifndef FUSEDLSTM_ISA
#error "include avx2_target.h or avx512_target.h first"
#endif

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

using V = at::vec::Vectorized<float>;

#if defined(FUSEDLSTM_ISA_AVX512)

using Reg = __m512;
constexpr int64_t kLanes = 16;
// Rows of the forward's unit tile: 6 x 4 accumulators of the 32 registers.
constexpr int64_t kForwardRows = 6;
inline Reg reg_zero() { return _mm512_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm512_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm512_add_ps(a, b); }

#else  // AVX2

using Reg = __m256;
constexpr int64_t kLanes = 8;
// Rows of the forward's unit tile: 3 x 4 accumulators of the 16 registers.
constexpr int64_t kForwardRows = 3;
inline Reg reg_zero() { return _mm256_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm256_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm256_add_ps(a, b); }

#endif

// Contraction per chunk of the tiles. AVX2: a unit block's chunk of W_hh
// (8 KiB) and the rows' chunk of h (16 KiB at 64 rows) fit in L1 together.
// AVX-512: the block's chunk is 64 KiB, past Zen 5's 48 KiB L1, yet chunks of
// 64 (16 KiB, in L1) were no faster: ratio minima to nn.LSTM over two
// alternating builds each, 64 against 256, C2 inference 1.15/1.15 vs
// 1.02/1.18, C3 1.02/0.99 vs 1.05/0.97, C4 1.05/1.03 vs 1.01/1.00 (NOTES
// change 10). Zen 5's L2 keeps up with the tile. bfloat16 tiles walk kChunk
// pairs, the same 64 KiB (128 pairs were 2-4 % slower on Zen 4: change 62).
constexpr int64_t kChunk = 256;

static_assert(V::size() == kLanes, "at::vec width differs from the target's");

// Lanes of `if_true` where x < bound (less) or x > bound (greater), else of
// `otherwise`; false for NaN. at::vec's blendv on a comparison turns the
// AVX-512 mask register into a vector and back, three dependent operations
// more than this in each of the cell's exp and tanh evaluations.
template <bool kGreater>
inline V select_past(const V& x, float bound, const V& if_true,
                     const V& otherwise) {
  constexpr int kPredicate = kGreater ? _CMP_GT_OQ : _CMP_LT_OQ;
#if defined(FUSEDLSTM_ISA_AVX512)
  return _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(__m512(x), _mm512_set1_ps(bound), kPredicate),
      __m512(otherwise), __m512(if_true));
#else
  return _mm256_blendv_ps(
      __m256(otherwise), __m256(if_true),
      _mm256_cmp_ps(__m256(x), _mm256_set1_ps(bound), kPredicate));
#endif
}

// The sums of eight 8-lane registers: lane l of the result is the sum of the
// lanes of a[l]. (hadd pairs neighbours within each 128-bit half; the last
// step adds the two halves.)
inline __m256 sums_of_eight(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  // u0 = [sums over lanes 0-3 of a0..a3 | over lanes 4-7], u1 for a4..a7.
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                       _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Lane l of the result: the sum of the lanes of a[l]. Always inlined: out
// of line, the caller's sums go through memory (a 64-row direct step at H =
// 64 took half as long again).
[[gnu::always_inline]] inline Reg reg_lane_sums(const Reg (&a)[kLanes]) {
#if defined(FUSEDLSTM_ISA_AVX512)
  __m256 halves[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    halves[l] = _mm256_add_ps(_mm512_castps512_ps256(a[l]),
                              _mm512_extractf32x8_ps(a[l], 1));
  }
  return _mm512_insertf32x8(_mm512_castps256_ps512(sums_of_eight(halves)),
                            sums_of_eight(halves + 8), 1);
#else
  return sums_of_eight(a);
#endif
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
