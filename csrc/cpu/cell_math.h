// The transcendental functions of the fused float32 cell (recurrence_tiles.h),
// in at::vec operations, so one definition serves the ISA of the including
// file (simd_ops.h): 8 lanes for AVX2, 16 for AVX-512.
//
// Why not at::vec's exp and tanh (SLEEF, 1 ulp): they are calls into libtorch
// that cannot be inlined or interleaved, and the cell (three sigmoids and two
// tanh per unit and row) took a fifth of a batch-64 forward next to the
// recurrent product (perf). Inlined, the five evaluations of a cell overlap.
// Accuracy, checked against float64 for each ISA by
// cpp_tests/test_cell_math.cpp: exp within 1 ulp, sigmoid within 3 ulp (as
// with SLEEF's exp: the error is the division's), tanh within 3 ulp (2.5 for
// AVX-512). NaN stays NaN, and +-inf saturate as the functions do.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/simd_ops.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

// e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2]
// (ln 2 in two parts, the first exact in 9 bits, so n ln2_hi is exact), and
// e^r = 1 + r + r^2 q(r), q of degree 4 fitted (minimax, relative error,
// float64: 3e-9) for this project. Returns q(r); n and r through the
// references.
inline V exp_reduction(const V& x, V& n, V& r) {
  n = (x * V(1.44269504088896341f)).round();  // to nearest, even
  r = at::vec::fnmadd(n, V(0.693359375f), x);
  r = at::vec::fnmadd(n, V(-2.12194440e-4f), r);
  V q(1.381461276e-03f);
  q = at::vec::fmadd(q, r, V(8.368710056e-03f));
  q = at::vec::fmadd(q, r, V(4.166838899e-02f));
  q = at::vec::fmadd(q, r, V(1.666652113e-01f));
  return at::vec::fmadd(q, r, V(4.999999404e-01f));
}

// e^r of the reduction above; n through `n`.
inline V exp_reduced(const V& x, V& n) {
  V r;
  const V q = exp_reduction(x, n, r);
  const V one(1.f);
  return at::vec::fmadd(r, at::vec::fmadd(r, q, one), one);
}

#if defined(FUSEDLSTM_ISA_AVX512)

// e^x with x first clamped to [lowest, 89]. vscalefps multiplies by 2^n in
// one instruction, exactly (rounding like a multiplication where the result
// is subnormal), and saturates to inf past the largest float and to 0 below
// the smallest subnormal by itself: 13 operations where building 2^n in the
// exponent field and blending in inf and 0 took 18, five times per cell
// (NOTES change 45). The clamp only keeps +-inf out of the reduction
// (inf - inf would be NaN); vmaxps and vminps return their second operand
// when one is NaN, so NaN passes through.
inline V exp_clamped(const V& x, float lowest) {
  const __m512 clamped = _mm512_min_ps(
      _mm512_set1_ps(89.f), _mm512_max_ps(_mm512_set1_ps(lowest), __m512(x)));
  V n;
  const V p = exp_reduced(V(clamped), n);
  return V(_mm512_scalef_ps(__m512(p), __m512(n)));
}

// e^x, subnormal results included, 0 below them (-103.9) and inf above the
// largest float (88.72).
inline V exp_cell(const V& x) { return exp_clamped(x, -110.f); }

// For the cells, which only ever use 1 + e^x: below -87.34 (the smallest
// normal's exponent) e^-87.34 stands in for e^x, and 1 + e^x rounds to 1 as
// before, so sigmoid and tanh never make a subnormal on the way (a subnormal
// result can cost a microcode assist on Intel cores).
inline V exp_for_cell(const V& x) { return exp_clamped(x, -87.3365447504f); }

#else  // AVX2: no vscalefps

// 2^n is built in the exponent field, which holds n in [-126, 127]: beyond,
// the result is set to 0 or inf outright.
inline V exp_cell(const V& x) {
  using VI = at::vec::Vectorized<int32_t>;
  V n;
  const V p = exp_reduced(x, n);
  const VI biased = at::vec::convert_to_int_of_same_size(n) + VI(127);
  V y = p * at::vec::cast<float>(biased << VI(23));
  // Ordered comparisons are false for NaN, which keeps the NaN of p.
  // 127.5 ln 2: n would reach 128. -126 ln 2: n would fall below -126 (the
  // results there are below the smallest normal float; flushed to 0).
  y = select_past<true>(x, 88.3762626647949f, V(INFINITY), y);
  return select_past<false>(x, -87.3365447504f, V(0.f), y);
}

inline V exp_for_cell(const V& x) { return exp_cell(x); }

#endif

inline V sigmoid_cell(const V& x) {
  const V one(1.f);
  return one / (one + exp_for_cell(x.neg()));
}

#if defined(FUSEDLSTM_ISA_AVX512)

// tanh(x) = -e / (2 + e) with the sign of x, e = e^{-2|x|} - 1 (expm1):
// accurate from 0 to saturation in one form, where 1 - 2 / (1 + e^{2x})
// cancels near 0 and needed a polynomial and a blend beside it (21
// operations here against 27; NOTES change 46). expm1 from the reduction of
// exp: e^y - 1 = 2^n (e^r - 1) + (2^n - 1), both terms exact in their
// scaling and e^r - 1 = r + r^2 q(r) free of cancellation, so at n = 0 (|x|
// < 0.17) e stays relatively accurate however small, and tanh(x) = x for
// tiny x. -2|x| is clamped at -60 (tanh(30) rounds to 1) so that no
// subnormal is made; vmaxps returns its second operand, the NaN, when one
// is NaN. Over every float (checked exhaustively against float64 when this
// was written): within 2.50 ulp, against 3.00 for the two-branch form.
inline V tanh_cell(const V& x) {
  const __m512 y = _mm512_max_ps(
      _mm512_set1_ps(-60.f),
      _mm512_mul_ps(_mm512_abs_ps(__m512(x)), _mm512_set1_ps(-2.f)));
  V n, r;
  const V q = exp_reduction(V(y), n, r);
  const __m512 em1_r = __m512(at::vec::fmadd(r * r, q, r));
  const __m512 two_n = _mm512_scalef_ps(_mm512_set1_ps(1.f), __m512(n));
  const __m512 e = _mm512_add_ps(_mm512_scalef_ps(em1_r, __m512(n)),
                                 _mm512_sub_ps(two_n, _mm512_set1_ps(1.f)));
  const __m512 magnitude = _mm512_div_ps(e, _mm512_sub_ps(_mm512_set1_ps(-2.f), e));
  // The sign bit from x, the other bits from the magnitude (>= 0):
  // bitwise select, 0xCA = a ? b : c.
  return V(_mm512_castsi512_ps(_mm512_ternarylogic_epi32(
      _mm512_set1_epi32(INT32_MIN), _mm512_castps_si512(__m512(x)),
      _mm512_castps_si512(magnitude), 0xCA)));
}

#else  // AVX2

// tanh:
//  * |x| >= 0.625: 1 - 2 / (1 + e^{2x}). Saturates to +-1 through inf and 0.
//    No cancellation here: |tanh| >= 0.55.
//  * |x| < 0.625: x + x^3 P(x^2), P of degree 4 fitted (minimax, relative
//    error, float64) on this interval for this project; the form above would
//    cancel there (1 - 2/(1 + e^{2x}) -> 0 as x -> 0).
inline V tanh_cell(const V& x) {
  const V one(1.f);
  const V saturating = one - V(2.f) / (one + exp_for_cell(x + x));
  const V z = x * x;
  V p(-5.704987328e-03f);
  p = at::vec::fmadd(p, z, V(2.063908800e-02f));
  p = at::vec::fmadd(p, z, V(-5.373971537e-02f));
  p = at::vec::fmadd(p, z, V(1.333144158e-01f));
  p = at::vec::fmadd(p, z, V(-3.333328068e-01f));
  const V near_zero = at::vec::fmadd(p * z, x, x);
  return select_past<false>(x.abs(), 0.625f, near_zero, saturating);
}

#endif

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
