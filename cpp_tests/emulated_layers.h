// What the emulated CUDA tests (cpp_tests/test_*_emulated.cpp) share: a layer
// case, its inputs in a dtype and in float64, and the comparison they count.
#pragma once

#include <torch/torch.h>

#include <cstdio>
#include <string>
#include <vector>

namespace emutest {

inline int failures = 0, checks = 0;

struct Case {
  std::string name;
  int64_t I, H, P, B, T;  // P = 0: no projection
  bool packed, bias;
  int sms = 4, max_blocks_per_sm = 8;  // the emulated device
};

struct Inputs {
  at::Tensor x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes;
  at::Tensor grad_out, grad_h_n, grad_c_n;
};

inline c10::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

inline Inputs make_inputs(const Case& c, at::ScalarType dtype) {
  torch::manual_seed(0);
  const int64_t S = c.P ? c.P : c.H;
  const double k = 1.0 / std::sqrt(double(c.H));
  auto u = [&](at::IntArrayRef shape) {
    return ((torch::rand(shape, torch::kDouble) * 2 - 1) * k).to(dtype);
  };
  Inputs in;
  in.w_ih = u({4 * c.H, c.I});
  in.w_hh = u({4 * c.H, S});
  if (c.bias) {
    in.b_ih = u({4 * c.H});
    in.b_hh = u({4 * c.H});
  }
  if (c.P) in.w_hr = u({c.P, c.H});
  in.h0 = u({c.B, S}) * 4;
  in.c0 = u({c.B, c.H}) * 4;
  int64_t N = c.T * c.B;
  if (c.packed) {
    // Lengths T, then falling to 1: several runs of equal batch size.
    std::vector<int64_t> lengths(c.B);
    for (int64_t b = 0; b < c.B; ++b) lengths[b] = std::max<int64_t>(1, c.T - (b * c.T) / c.B);
    std::vector<int64_t> bs(c.T);
    N = 0;
    for (int64_t t = 0; t < c.T; ++t) {
      bs[t] = 0;
      for (auto n : lengths) bs[t] += n > t;
      N += bs[t];
    }
    in.batch_sizes = torch::tensor(bs, torch::kLong);
    in.x = u({N, c.I}) * 4;
  } else {
    in.x = u({c.T, c.B, c.I}) * 4;
  }
  const int64_t rows_out = c.packed ? N : c.T * c.B;
  in.grad_out = torch::randn({rows_out, S}, torch::kDouble).to(dtype);
  if (!c.packed) in.grad_out = in.grad_out.view({c.T, c.B, S});
  in.grad_h_n = torch::randn({c.B, S}, torch::kDouble).to(dtype);
  in.grad_c_n = torch::randn({c.B, c.H}, torch::kDouble).to(dtype);
  return in;
}

inline Inputs as_double(const Inputs& in) {
  auto d = [](const at::Tensor& t) {
    return t.defined() && t.is_floating_point() ? t.to(torch::kDouble) : t;
  };
  return {d(in.x), d(in.h0), d(in.c0), d(in.w_ih), d(in.w_hh), d(in.b_ih),
          d(in.b_hh), d(in.w_hr), in.batch_sizes, d(in.grad_out),
          d(in.grad_h_n), d(in.grad_c_n)};
}

inline void expect_close(const std::string& what, const at::Tensor& ours,
                         const at::Tensor& ref, double tol) {
  ++checks;
  const at::Tensor a = ours.to(torch::kDouble).reshape(ref.sizes());
  const double scale = std::max(1.0, ref.numel() ? ref.abs().max().item<double>() : 1.0);
  const double err = ref.numel() ? (a - ref).abs().max().item<double>() : 0.0;
  const bool ok = ours.numel() == ref.numel() && std::isfinite(err) &&
                  err <= tol * scale;
  if (!ok) {
    ++failures;
    std::printf("  MISMATCH %-48s max abs err %.3g > %.3g\n", what.c_str(), err,
                tol * scale);
  }
}

// Prints the tally and gives the exit status: success only when something
// was checked and nothing mismatched.
inline int finish() {
  std::printf("%d checks, %d mismatches\n", checks, failures);
  return failures == 0 && checks > 0 ? 0 : 1;
}

}  // namespace emutest
