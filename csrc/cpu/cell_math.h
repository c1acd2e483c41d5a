// The transcendental functions of the fused float32 cell (recurrence_tiles.h),
// for the ISA of the including file (simd_ops.h, whose exp_cell they use).
//
// Why not at::vec's exp and tanh (SLEEF, 1 ulp): they are calls into libtorch
// that cannot be inlined or interleaved, and the cell (three sigmoids and two
// tanh per unit and row) took a fifth of a batch-64 forward next to the
// recurrent product (perf). Inlined, the five evaluations of a cell overlap.
// Accuracy, checked against float64 for each ISA by
// cpp_tests/test_cell_math.cpp: exp within 1 ulp, sigmoid within 3 ulp (as
// with SLEEF's exp: the error is the division's), tanh within 3 ulp. NaN stays
// NaN, and +-inf saturate as the functions do.
#pragma once

#include "cpu/simd_ops.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

inline V sigmoid_cell(const V& x) {
  const V one(1.f);
  return one / (one + V(exp_cell(x.neg())));
}

// tanh:
//  * |x| >= 0.625: 1 - 2 / (1 + e^{2x}). Saturates to +-1 through inf and 0.
//    No cancellation here: |tanh| >= 0.55.
//  * |x| < 0.625: x + x^3 P(x^2), P of degree 4 fitted (minimax, relative
//    error, float64) on this interval for this project; the form above would
//    cancel there (1 - 2/(1 + e^{2x}) -> 0 as x -> 0).
inline V tanh_cell(const V& x) {
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

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
