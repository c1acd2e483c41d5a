// Runs the CUDA entry points themselves (csrc/cuda/forward_cuda.cpp,
// backward_cuda.cpp: buffers, the path choice, the per-step GEMMs of the
// stepwise path, the launches) on CPU tensors, with every kernel executed by
// the host emulation (cpp_tests/cuda_emulation), against fusedlstm's CPU
// implementation in float64. test_persistent_emulated.cpp checks the
// persistent kernels with host code of its own; this checks the host code
// that will run on the GPU, on each FUSEDLSTM_CUDA_PATH. Exits non-zero on
// any mismatch.
#include <torch/torch.h>

#include <fusedlstm/lstm.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "cuda/lstm_cuda.h"
#include "emulated_layers.h"

namespace {

using namespace emutest;

// Values, gradients (those of tests/cuda/test_cuda_parity.py).
std::pair<double, double> tolerances(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return {1e-10, 1e-9};
    case at::kFloat: return {2e-5, 1e-4};
    case at::kHalf: return {4e-3, 1e-2};
    default: return {3e-2, 6e-2};
  }
}

void run(const char* path, const Case& c, at::ScalarType dtype, bool reverse) {
  setenv("FUSEDLSTM_CUDA_PATH", path, 1);
  const Inputs l = make_inputs(c, dtype);
  const Inputs r = as_double(l);
  const std::string tag = std::string(path) + " " + c.name + (reverse ? " rev " : " fwd ") +
                          c10::toString(dtype);
  const auto [out, h_n, c_n, gates, cells] = fusedlstm::cuda::lstm_layer_forward(
      l.x, l.h0, l.c0, l.w_ih, l.w_hh, opt(l.b_ih), opt(l.b_hh), opt(l.w_hr),
      opt(l.batch_sizes), reverse);
  const auto ref = fusedlstm::lstm_layer_forward(
      r.x, r.h0, r.c0, r.w_ih, r.w_hh, opt(r.b_ih), opt(r.b_hh), opt(r.w_hr),
      opt(l.batch_sizes), reverse);
  const auto [vtol, gtol] = tolerances(dtype);
  expect_close(tag + " output", out, ref.output, vtol);
  expect_close(tag + " h_n", h_n, ref.h_n, vtol);
  expect_close(tag + " c_n", c_n, ref.c_n, vtol);
  expect_close(tag + " gates", gates, ref.gates, vtol);
  expect_close(tag + " cells", cells, ref.cells, vtol);

  const auto grads = fusedlstm::cuda::lstm_layer_backward(
      l.grad_out, l.grad_h_n, l.grad_c_n, l.x, l.h0, l.c0, l.w_ih, l.w_hh, opt(l.b_ih),
      opt(l.b_hh), opt(l.w_hr), out, gates, cells, opt(l.batch_sizes), reverse);
  const auto rg = fusedlstm::lstm_layer_backward(
      r.grad_out, r.grad_h_n, r.grad_c_n, r.x, r.h0, r.c0, r.w_ih, r.w_hh, opt(r.b_ih),
      opt(r.b_hh), opt(r.w_hr), ref.output, ref.gates, ref.cells,
      opt(l.batch_sizes), reverse);
  expect_close(tag + " grad_input", std::get<0>(grads), rg.grad_input, gtol);
  expect_close(tag + " grad_h0", std::get<1>(grads), rg.grad_h0, gtol);
  expect_close(tag + " grad_c0", std::get<2>(grads), rg.grad_c0, gtol);
  expect_close(tag + " grad_w_ih", std::get<3>(grads), rg.grad_w_ih, gtol);
  expect_close(tag + " grad_w_hh", std::get<4>(grads), rg.grad_w_hh, gtol);
  if (c.bias) expect_close(tag + " grad_bias", std::get<5>(grads), rg.grad_bias, gtol);
  if (c.P) expect_close(tag + " grad_w_hr", std::get<6>(grads), rg.grad_w_hr, gtol);
  std::printf("%-56s checked\n", tag.c_str());
}

}  // namespace

int main() {
  // Exact float32 products, so that float32's tolerance means something.
  at::globalContext().setAllowTF32CuDNN(false);
  emu::kSms = 4;
  // Small shapes: every CUDA thread is an OS thread here. Each (H, P, B)
  // differs, since the kernels' plans are cached per shape.
  const std::vector<Case> cases = {
      {"padded H24", 10, 24, 0, 5, 4, false, true},
      {"packed H20 no bias", 6, 20, 0, 6, 5, true, false},
      {"packed proj P5", 7, 16, 5, 4, 4, true, true},
  };
  const at::ScalarType types[] = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16};
  for (const char* path : {"stepwise", "persistent", "auto"}) {
    for (at::ScalarType dtype : types) {
      // float64 has no persistent kernel: that request raises (tested in
      // Python); auto takes the stepwise path for it.
      if (dtype == at::kDouble && std::string(path) == "persistent") continue;
      for (const Case& c : cases) {
        for (bool reverse : {false, true}) run(path, c, dtype, reverse);
      }
    }
  }
  // The cluster kernels: no projection, tensor-core types.
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (bool reverse : {false, true}) {
      run("cluster", cases[0], dtype, reverse);
      run("cluster", cases[1], dtype, reverse);
    }
  }
  std::printf("%d checks, %d mismatches\n", checks, failures);
  return failures == 0 && checks > 0 ? 0 : 1;
}
