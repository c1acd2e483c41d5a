// Runs the stepwise CUDA path's fused cell kernels (csrc/cuda/cell_kernels.cuh)
// on the host through cpp_tests/cuda_emulation, against the LSTM cell written
// with ATen ops in float64, for every dtype the path takes. Checks the
// indexing of the gates ([rows, 4H], gate-major within a row), the opmath
// state, the rows that start from c0/h0 rather than continue (`carried`),
// the h_{t-1} gather for dW_hh, both sources of the gradient reaching
// o * tanh(c) (dh + grad_output without a projection, dm with one), and the
// grid-stride loop (a launch of fewer threads than cells). Exits non-zero on
// any mismatch.
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "cuda/cell_kernels.cuh"
#include "emulated_layers.h"

namespace {

using namespace fusedlstm::cuda;
using namespace emutest;

// One rounding of the dtype on values of magnitude ~1, with room for the
// opmath arithmetic (float for the half types).
double tolerance(at::ScalarType t) {
  switch (t) {
    case at::kDouble: return 1e-12;
    case at::kFloat: return 1e-5;
    case at::kHalf: return 2e-3;
    default: return 1.6e-2;
  }
}

// `threads`: the launch's threads, a multiple of the block (0: grid_for(rows
// * H) blocks, one thread per cell).
void launch(int64_t rows, int64_t H, int64_t threads, const std::function<void()>& body) {
  const unsigned grid = threads > 0
                            ? static_cast<unsigned>((threads + stepwise::kThreads - 1) /
                                                    stepwise::kThreads)
                            : stepwise::grid_for(rows * H);
  emu::launch(dim3(grid), dim3(stepwise::kThreads), 0, body);
}

template <typename scalar_t>
void check_forward(at::ScalarType dtype, int64_t B, int64_t rows, int64_t H,
                   int64_t threads, bool second_copy) {
  using op_t = at::opmath_type<scalar_t>;
  const auto opts = at::TensorOptions().dtype(dtype);
  const auto op = at::TensorOptions().dtype(c10::CppTypeToScalarType<op_t>::value);
  const at::Tensor rec = at::randn({rows, 4 * H}, at::kDouble).to(dtype);
  const at::Tensor pre_in = at::randn({rows, 4 * H}, at::kDouble).to(dtype);
  at::Tensor gates = pre_in.clone();
  const at::Tensor c0 = at::randn({B, H}, at::kDouble).to(op);
  at::Tensor c_state = c0.clone();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor cells = at::full({rows, H}, nan, opts);
  at::Tensor hidden = at::full({rows, H}, nan, opts);
  at::Tensor hidden2 = at::full({rows, H}, nan, opts);
  CellForwardArgs a;
  a.rows = rows;
  a.H = H;
  a.rec = rec.data_ptr();
  a.gates = gates.data_ptr();
  a.c_state = c_state.data_ptr();
  a.cells = cells.data_ptr();
  a.hidden = hidden.data_ptr();
  a.hidden2 = second_copy ? hidden2.data_ptr() : nullptr;
  launch(rows, H, threads, [&] { stepwise::cell_forward_kernel<scalar_t>(a); });
  // float64 reference on the same rounded inputs.
  const at::Tensor pre = pre_in.to(at::kDouble) + rec.to(at::kDouble);
  const auto q = pre.chunk(4, 1);
  const at::Tensor i = q[0].sigmoid(), f = q[1].sigmoid(), g = q[2].tanh(),
                   o = q[3].sigmoid();
  const at::Tensor c = f * c0.narrow(0, 0, rows).to(at::kDouble) + i * g;
  const at::Tensor m = o * c.tanh();
  const std::string tag = std::string("forward ") + c10::toString(dtype) + " B" +
                          std::to_string(B) + " rows" + std::to_string(rows) + " H" +
                          std::to_string(H) + (threads ? " grid-stride" : "");
  const double tol = tolerance(dtype);
  expect_close(tag + " gates", gates, at::cat({i, f, g, o}, 1), tol);
  expect_close(tag + " c_state", c_state.narrow(0, 0, rows), c, tol);
  expect_close(tag + " rows past the step", c_state.narrow(0, rows, B - rows),
               c0.narrow(0, rows, B - rows).to(at::kDouble), 0.0);
  expect_close(tag + " cells", cells, c, tol);
  expect_close(tag + " hidden", hidden, m, tol);
  if (second_copy) expect_close(tag + " hidden2", hidden2, m, tol);
  std::printf("%-50s checked\n", tag.c_str());
}

template <typename scalar_t>
void check_backward(at::ScalarType dtype, int64_t B, int64_t rows, int64_t carried,
                    int64_t H, int64_t P, bool with_dm, int64_t threads) {
  using op_t = at::opmath_type<scalar_t>;
  const auto opts = at::TensorOptions().dtype(dtype);
  const auto op = at::TensorOptions().dtype(c10::CppTypeToScalarType<op_t>::value);
  auto rnd = [&](at::IntArrayRef s) { return at::randn(s, at::kDouble).to(dtype); };
  // Activated gates: i, f, o in (0, 1), g in (-1, 1).
  const at::Tensor pre = at::randn({rows, 4 * H}, at::kDouble);
  const auto pq = pre.chunk(4, 1);
  const at::Tensor gates =
      at::cat({pq[0].sigmoid(), pq[1].sigmoid(), pq[2].tanh(), pq[3].sigmoid()}, 1)
          .to(dtype);
  const at::Tensor cells = rnd({rows, H}), c_prev = rnd({carried, H}), c0 = rnd({B, H});
  const at::Tensor h_src = rnd({carried, P}), h0 = rnd({B, P});
  const at::Tensor dh_state = rnd({B, P}), grad_out = rnd({rows, P}), dm = rnd({B, H});
  const at::Tensor dc_in = at::randn({B, H}, at::kDouble).to(op);
  at::Tensor dc_state = dc_in.clone();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  at::Tensor h_prev = at::full({rows, P}, nan, opts);
  at::Tensor dgates = at::full({rows, 4 * H}, nan, opts);
  CellBackwardArgs a;
  a.rows = rows;
  a.carried = carried;
  a.H = H;
  a.P = P;
  a.gates = gates.data_ptr();
  a.cells = cells.data_ptr();
  a.c_prev = c_prev.data_ptr();
  a.c0 = c0.data_ptr();
  a.h_prev_src = h_src.data_ptr();
  a.h0 = h0.data_ptr();
  a.h_prev = h_prev.data_ptr();
  a.dh_state = with_dm ? nullptr : dh_state.data_ptr();
  a.grad_out = with_dm ? nullptr : grad_out.data_ptr();
  a.dm = with_dm ? dm.data_ptr() : nullptr;
  a.dc_state = dc_state.data_ptr();
  a.dgates = dgates.data_ptr();
  launch(rows, H, threads, [&] { stepwise::cell_backward_kernel<scalar_t>(a); });

  auto d = [](const at::Tensor& t) { return t.to(at::kDouble); };
  const auto gq = d(gates).chunk(4, 1);
  const at::Tensor &i = gq[0], &f = gq[1], &g = gq[2], &o = gq[3];
  const at::Tensor cp = at::cat({d(c_prev), d(c0).narrow(0, carried, rows - carried)});
  const at::Tensor dmv = with_dm ? d(dm).narrow(0, 0, rows)
                                 : d(dh_state).narrow(0, 0, rows) + d(grad_out);
  const at::Tensor tc = d(cells).tanh();
  const at::Tensor dc = d(dc_in).narrow(0, 0, rows) + dmv * o * (1 - tc * tc);
  const at::Tensor ref_dgates = at::cat(
      {dc * g * i * (1 - i), dc * cp * f * (1 - f), dc * i * (1 - g * g),
       dmv * tc * o * (1 - o)}, 1);
  const at::Tensor ref_hprev = at::cat({d(h_src), d(h0).narrow(0, carried, rows - carried)});
  const std::string tag = std::string("backward ") + c10::toString(dtype) + " rows" +
                          std::to_string(rows) + " carried" + std::to_string(carried) +
                          " H" + std::to_string(H) + " P" + std::to_string(P) +
                          (with_dm ? " dm" : " dh+grad_out") + (threads ? " grid-stride" : "");
  const double tol = tolerance(dtype);
  expect_close(tag + " dgates", dgates, ref_dgates, tol);
  expect_close(tag + " dc_state", dc_state.narrow(0, 0, rows), dc * f, tol);
  expect_close(tag + " rows past the step", dc_state.narrow(0, rows, B - rows),
               d(dc_in).narrow(0, rows, B - rows), 0.0);
  expect_close(tag + " h_prev gather", h_prev, ref_hprev, 0.0);
  std::printf("%-50s checked\n", tag.c_str());
}

template <typename scalar_t>
void check_all(at::ScalarType dtype) {
  torch::manual_seed(0);
  // Sizes that do not divide the 256-thread blocks; rows < B (a packed step).
  check_forward<scalar_t>(dtype, 7, 5, 37, 0, true);
  // 900 cells on two blocks of 256 threads: each thread takes two cells.
  check_forward<scalar_t>(dtype, 3, 3, 300, 512, false);
  // Without a projection (P == H): dh + grad_output; with one: dm, P < H.
  check_backward<scalar_t>(dtype, 7, 5, 3, 37, 37, false, 0);
  check_backward<scalar_t>(dtype, 6, 6, 6, 20, 7, true, 0);
  check_backward<scalar_t>(dtype, 4, 4, 0, 300, 300, false, 512);  // all rows start here
}

}  // namespace

int main() {
  check_all<double>(at::kDouble);
  check_all<float>(at::kFloat);
  check_all<c10::Half>(at::kHalf);
  check_all<c10::BFloat16>(at::kBFloat16);
  return finish();
}
