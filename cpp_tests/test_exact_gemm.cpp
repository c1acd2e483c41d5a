// The exact float32 products that the CPU layers take where PyTorch's matmul
// precision is reduced (csrc/cpu/sequence_gemm.h, detail::): every operand
// layout the layers pass (row-major, transposed views, rows of a wider
// buffer), degenerate sizes, and accumulation, against the float64 product.
// The sgemm path is held to the float32 error bound of a K-term dot
// product; the float64 path must equal the float64 product rounded once.
// Exits non-zero on the first failure; 77 (skipped) if no sgemm is exported.
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <string>

#include "cpu/sequence_gemm.h"

namespace {

using fusedlstm::cpu::detail::float_gemm_by_double;
using fusedlstm::cpu::detail::float_gemm_by_sgemm;
using fusedlstm::cpu::detail::sgemm_available;

int failures = 0;
int checks = 0;

// A [rows, cols] float32 operand with the given layout.
at::Tensor operand(int64_t rows, int64_t cols, const std::string& layout) {
  auto opts = torch::TensorOptions().dtype(torch::kFloat);
  if (layout == "row") return torch::randn({rows, cols}, opts);
  if (layout == "col") return torch::randn({cols, rows}, opts).t();
  // Rows of a wider buffer: leading dimension cols + 3.
  return torch::randn({rows, cols + 3}, opts).narrow(1, 1, cols);
}

void report(const std::string& what, bool ok, double err) {
  ++checks;
  if (!ok) {
    ++failures;
    std::printf("FAILED %s (max abs diff %.3g)\n", what.c_str(), err);
  }
}

void check_case(int64_t M, int64_t K, int64_t N, const std::string& la,
                const std::string& lb, bool accumulate) {
  const at::Tensor a = operand(M, K, la), b = operand(K, N, lb);
  // out: rows of a wider buffer, as the layers' per-step rows are.
  const at::Tensor buffer = torch::randn({M + 2, N}, torch::kFloat);
  const at::Tensor initial = buffer.narrow(0, 1, M).clone();
  at::Tensor expected = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  if (accumulate) expected += initial.to(at::kDouble);
  // |error| <= K u sum_k |a_ik b_kj| (+ the accumulated term's rounding).
  const at::Tensor bound =
      (at::mm(a.abs().to(at::kDouble), b.abs().to(at::kDouble)) *
           (static_cast<double>(K) + 2.0) * std::ldexp(1.0, -24) +
       (accumulate ? initial.abs().to(at::kDouble) * std::ldexp(1.0, -23)
                   : at::zeros_like(expected)));
  const std::string name = "M=" + std::to_string(M) + " K=" + std::to_string(K) +
                           " N=" + std::to_string(N) + " a:" + la + " b:" + lb +
                           (accumulate ? " +=" : " =");

  at::Tensor out_buffer = buffer.clone();
  at::Tensor out = out_buffer.narrow(0, 1, M);
  float_gemm_by_double(out, a, b, accumulate);
  const bool rounded_once = torch::equal(out, expected.to(at::kFloat));
  report("float64 path " + name, rounded_once,
         (out.to(at::kDouble) - expected).abs().max().item<double>());

  // The layers send K = 0 to the float64 path.
  if (K == 0 || !sgemm_available()) return;
  out_buffer = buffer.clone();
  out = out_buffer.narrow(0, 1, M);
  float_gemm_by_sgemm(out, a, b, accumulate);
  const at::Tensor err = (out.to(at::kDouble) - expected).abs();
  report("sgemm path " + name, (err <= bound).all().item<bool>(),
         err.max().item<double>());
  // Rows outside out are untouched.
  report("sgemm path leaves other rows " + name,
         torch::equal(out_buffer.narrow(0, 0, 1), buffer.narrow(0, 0, 1)) &&
             torch::equal(out_buffer.narrow(0, M + 1, 1),
                          buffer.narrow(0, M + 1, 1)),
         0.0);
}

}  // namespace

int main() {
  torch::manual_seed(0);
  at::set_num_threads(2);
  if (!sgemm_available()) {
    std::printf("this libtorch exports no sgemm_: the float64 path serves\n");
  }
  const int64_t sizes[][3] = {{1, 1, 1}, {1, 37, 64}, {5, 40, 256},
                              {64, 512, 2048}, {7, 1, 9}, {3, 0, 4}, {33, 129, 1}};
  for (const auto& s : sizes) {
    for (const char* la : {"row", "col", "wide"}) {
      for (const char* lb : {"row", "col", "wide"}) {
        for (bool accumulate : {false, true}) {
          check_case(s[0], s[1], s[2], la, lb, accumulate);
        }
      }
    }
  }
  std::printf("%d checks, %d failed\n", checks, failures);
  if (failures != 0) return 1;
  return sgemm_available() ? 0 : 77;
}
