// MKL's bfloat16 GEMM as the bfloat16 input projection (x W_ih^T) and the
// weight gradients (dG^T x) call it (csrc/cpu/mkl_bf16_gemm.h): the shapes
// the layers pass (rows of one chunk, odd and tiny depths, rows of wider
// buffers on every operand, degenerate sizes), against the float64 product
// of the same bfloat16 values, within
// the float32 error bound of a depth-term dot product. The result buffer
// starts full of NaN, which the call must overwrite (and must not touch
// past `cols` in a row). Exits non-zero on the first failure; 77 (skipped)
// where the routine does not run (no AMX, or a PyTorch without it).
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>

#include "cpu/mkl_bf16_gemm.h"

namespace {

int failures = 0;
int checks = 0;

// [rows, cols] bfloat16 values as the rows of a buffer `pad` columns wider.
at::Tensor operand(int64_t rows, int64_t cols, int64_t pad) {
  return torch::randn({rows, cols + pad}).to(at::kBFloat16).narrow(1, 0, cols);
}

const uint16_t* bits(const at::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}

// transposed: out = a^T b (mkl_bf16_gemm_tn, a [depth, rows], b [depth,
// cols]); else out = x w^T (mkl_bf16_gemm_nt, x [rows, depth], w [cols, depth]).
void check_case(bool transposed, int64_t rows, int64_t cols, int64_t depth, int64_t pad) {
  const at::Tensor a = transposed ? operand(depth, rows, pad) : operand(rows, depth, pad);
  const at::Tensor b = transposed ? operand(depth, cols, pad + 1) : operand(cols, depth, pad + 1);
  const int64_t ldo = cols + pad;
  at::Tensor out = torch::full({rows, ldo}, NAN, torch::kFloat);
  if (transposed) {
    fusedlstm::cpu::mkl_bf16_gemm_tn(bits(a), a.stride(0), bits(b), b.stride(0),
                                     out.data_ptr<float>(), ldo, rows, cols, depth);
  } else {
    fusedlstm::cpu::mkl_bf16_gemm_nt(bits(a), a.stride(0), bits(b), b.stride(0),
                                     out.data_ptr<float>(), ldo, rows, cols, depth);
  }
  // As [rows, depth] and [depth, cols].
  const at::Tensor left = (transposed ? a.t() : a).to(at::kDouble);
  const at::Tensor right = (transposed ? b : b.t()).to(at::kDouble);
  const at::Tensor expected = at::mm(left, right);
  // |error| <= depth u sum_k |left_rk right_kc| (the products are exact).
  const at::Tensor bound = at::mm(left.abs(), right.abs()) *
                           (static_cast<double>(depth) + 1.0) * std::ldexp(1.0, -24);
  const at::Tensor got = out.narrow(1, 0, cols).to(at::kDouble);
  const bool within = (got - expected).abs().le(bound).all().item<bool>();
  // Past cols, each row keeps its NaN.
  const bool untouched = pad == 0 || out.narrow(1, cols, pad).isnan().all().item<bool>();
  ++checks;
  if (!within || !untouched) {
    ++failures;
    const double err = rows * cols > 0 ? (got - expected).abs().max().item<double>() : 0.0;
    std::printf("FAILED %s rows=%lld cols=%lld depth=%lld pad=%lld: %s (max abs diff %.3g)\n",
                transposed ? "a^T b" : "x w^T", static_cast<long long>(rows),
                static_cast<long long>(cols), static_cast<long long>(depth),
                static_cast<long long>(pad),
                within ? "wrote past cols" : "outside the float32 bound", err);
  }
}

}  // namespace

int main() {
  if (!fusedlstm::cpu::mkl_bf16_gemm_available()) {
    std::printf("skipped: MKL's bfloat16 GEMM does not run here\n");
    return 77;
  }
  torch::manual_seed(0);
  // A C3 chunk, a C4 chunk, odd depths (a layer's input size), one row, and
  // degenerate sizes (an empty batch, a zero-width input).
  const int64_t shapes[][3] = {{512, 2048, 512}, {1024, 1024, 256}, {37, 200, 77},
                               {1, 64, 3},       {5, 4, 1},          {0, 16, 8},
                               {7, 12, 0},       {3, 0, 5}};
  for (const auto& s : shapes) {
    for (int64_t pad : {0, 3}) check_case(false, s[0], s[1], s[2], pad);
  }
  // Weight gradients: 4H x I over N rows (C3's dW_hh, an odd input size
  // over 1040 rows), and the same small and degenerate sizes.
  const int64_t gradient_shapes[][3] = {{2048, 512, 1024}, {96, 17, 1040}, {64, 3, 1},
                                        {5, 4, 1},         {0, 16, 8},     {7, 12, 0},
                                        {3, 0, 5}};
  for (const auto& s : gradient_shapes) {
    for (int64_t pad : {0, 3}) check_case(true, s[0], s[1], s[2], pad);
  }
  std::printf("%d checks, %d failures\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
