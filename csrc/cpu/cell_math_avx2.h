// The transcendental functions of the fused float32 cell (recurrence_tiles.h),
// for AVX2 with FMA: included only after avx2_target.h.
//
// Why not at::vec's exp and tanh (SLEEF, 1 ulp): they are calls into libtorch
// that cannot be inlined or interleaved, and the cell (three sigmoids and two
// tanh per unit and row) took a fifth of a batch-64 forward next to the
// recurrent product (perf). Inlined, the five evaluations of a cell overlap.
// Accuracy, checked against float64 by cpp_tests/test_cell_math_avx2.cpp:
// exp within 1 ulp, sigmoid within 3 ulp (as with SLEEF's exp: the error is
// the division's), tanh within 3 ulp. NaN stays NaN, and +-inf saturate as the
// functions do.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cmath>

namespace fusedlstm::cpu::avx2 {

// e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]
// (ln 2 in two parts, the first exact in 9 bits, so n ln2_hi is exact), and
// e^r = 1 + r + r^2 q(r), q of degree 4 fitted (minimax, relative error,
// float64: 3e-9) for this project. 2^n is built in the exponent field, which
// holds n in [-126, 127]: beyond, the result is set to 0 or inf outright.
inline __m256 exp_cell(__m256 x) {
  const __m256 n = _mm256_round_ps(
      _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 q = _mm256_set1_ps(1.381461276e-03f);
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(8.368710056e-03f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.166838899e-02f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.666652113e-01f));
  q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(4.999999404e-01f));
  const __m256 one = _mm256_set1_ps(1.f);
  const __m256 p = _mm256_fmadd_ps(r, _mm256_fmadd_ps(r, q, one), one);
  const __m256i biased =
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
  __m256 y = _mm256_mul_ps(
      p, _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23)));
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

inline at::vec::Vectorized<float> sigmoid_cell(
    const at::vec::Vectorized<float>& x) {
  using V = at::vec::Vectorized<float>;
  const V one(1.f);
  return one / (one + V(exp_cell(x.neg())));
}

// tanh:
//  * |x| >= 0.625: 1 - 2 / (1 + e^{2x}). Saturates to +-1 through inf and 0.
//    No cancellation here: |tanh| >= 0.55.
//  * |x| < 0.625: x + x^3 P(x^2), P of degree 4 fitted (minimax, relative
//    error, float64) on this interval for this project; the form above would
//    cancel there (1 - 2/(1 + e^{2x}) -> 0 as x -> 0).
inline at::vec::Vectorized<float> tanh_cell(
    const at::vec::Vectorized<float>& x) {
  using V = at::vec::Vectorized<float>;
  const V one(1.f);
  const V saturating = one - V(2.f) / (one + V(exp_cell(x + x)));
  const V z = x * x;
  V p(-5.704987328e-03f);
  p = at::vec::fmadd(p, z, V(2.063908800e-02f));
  p = at::vec::fmadd(p, z, V(-5.373971537e-02f));
  p = at::vec::fmadd(p, z, V(1.333144158e-01f));
  p = at::vec::fmadd(p, z, V(-3.333328068e-01f));
  const V near_zero = at::vec::fmadd(p * z, x, x);
  return V::blendv(saturating, near_zero, x.abs() < V(0.625f));
}

}  // namespace fusedlstm::cpu::avx2
