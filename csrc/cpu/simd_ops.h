// The register operations of the fused CPU recurrence for the ISA of the
// including file: AVX2 (8 float lanes) or AVX-512 (16), chosen by the target
// header included first (avx2_target.h or avx512_target.h), which also names
// the namespace (FUSEDLSTM_ISA). The tiles, the packing and the workers above
// are written once against these, and compiled once per ISA.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cmath>
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
// Contraction per chunk. A unit block's chunk of W_hh is 64 KiB here, past
// Zen 5's 48 KiB L1, yet chunks of 64 (16 KiB, in L1) were no faster: ratio
// minima to nn.LSTM over two alternating builds each, 64 against 256, C2
// inference 1.15/1.15 vs 1.02/1.18, C3 1.02/0.99 vs 1.05/0.97, C4 1.05/1.03
// vs 1.01/1.00 (NOTES change 10). Zen 5's L2 keeps up with the tile.
constexpr int64_t kChunk = 256;

inline Reg reg_zero() { return _mm512_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm512_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm512_add_ps(a, b); }

// e^x: the method and constants of the AVX2 version below, in 16 lanes.
inline Reg exp_cell(Reg x) {
  const Reg n = _mm512_roundscale_ps(
      _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Reg r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  Reg q = _mm512_set1_ps(1.381461276e-03f);
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(8.368710056e-03f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.166838899e-02f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.666652113e-01f));
  q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(4.999999404e-01f));
  const Reg one = _mm512_set1_ps(1.f);
  const Reg p = _mm512_fmadd_ps(r, _mm512_fmadd_ps(r, q, one), one);
  const __m512i biased =
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
  Reg y = _mm512_mul_ps(p, _mm512_castsi512_ps(_mm512_slli_epi32(biased, 23)));
  y = _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.3762626647949f), _CMP_GT_OQ), y,
      _mm512_set1_ps(INFINITY));
  y = _mm512_mask_blend_ps(
      _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365447504f), _CMP_LT_OQ), y,
      _mm512_setzero_ps());
  return y;
}

#else  // AVX2

using Reg = __m256;
constexpr int64_t kLanes = 8;
// Rows of the forward's unit tile: 3 x 4 accumulators of the 16 registers.
constexpr int64_t kForwardRows = 3;
// Contraction per chunk: a unit block's chunk of W_hh (8 KiB) and the rows'
// chunk of h (16 KiB at 64 rows) fit in L1 together.
constexpr int64_t kChunk = 256;

inline Reg reg_zero() { return _mm256_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm256_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm256_add_ps(a, b); }

// e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]
// (ln 2 in two parts, the first exact in 9 bits, so n ln2_hi is exact), and
// e^r = 1 + r + r^2 q(r), q of degree 4 fitted (minimax, relative error,
// float64: 3e-9) for this project. 2^n is built in the exponent field, which
// holds n in [-126, 127]: beyond, the result is set to 0 or inf outright.
inline Reg exp_cell(Reg x) {
  const Reg n = _mm256_round_ps(
      _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  Reg r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  Reg q = _mm256_set1_ps(1.381461276e-03f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.368710056e-03f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.166838899e-02f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.666652113e-01f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.999999404e-01f));
  const Reg one = _mm256_set1_ps(1.f);
  const Reg p = _mm256_fmadd_ps(r, _mm256_fmadd_ps(r, q, one), one);
  const __m256i biased =
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  Reg y = _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
  // Ordered comparisons are false for NaN, which keeps the NaN of p.
  // 127.5 ln 2: n would reach 128. -126 ln 2: n would fall below -126 (the
  // results there are below the smallest normal float; flushed to 0).
  y = _mm256_blendv_ps(
      y, _mm256_set1_ps(INFINITY),
      _mm256_cmp_ps(x, _mm256_set1_ps(88.3762626647949f), _CMP_GT_OQ));
  y = _mm256_blendv_ps(
      y, _mm256_setzero_ps(),
      _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365447504f), _CMP_LT_OQ));
  return y;
}

#endif

static_assert(V::size() == kLanes, "at::vec width differs from the target's");

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
