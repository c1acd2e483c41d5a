// Backward pass of one LSTM layer-direction on CUDA: host orchestration.
//
// The recurrence runs the steps in the opposite order to forward. Per step:
// (projection only) dh = dh_state + grad_output rows and dm = dh W_hr, two
// ATen ops; one fused cell kernel turning dm (or dh_state + grad_output) and
// dc_state into the gate gradients, and gathering h_{t-1} for dW_hh on the
// way; one cuBLAS GEMM carrying the gate gradients to dh_state. Then every
// weight and input gradient is a whole-sequence GEMM or reduction over the
// stored gate gradients -- deterministic, no atomics.
//
// The recurrence always runs stepwise, whatever FUSEDLSTM_CUDA_PATH says: a
// persistent backward kernel (W_hh^T on chip) is not written yet. The
// recurrent part is a small share of the backward FLOPs; the weight
// gradients are the big GEMMs at the end.
//
// dc_state is kept in opmath (fp32 for half types); dh_state is the output
// of a cuBLAS GEMM in the input dtype (rounded once per step, fp32
// accumulation inside cuBLAS) and is added to grad_output in opmath.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/layer_args.h"
#include "cuda/lstm_cuda.h"

namespace fusedlstm::cuda {

namespace {

const char* row_ptr(const at::Tensor& t, int64_t row, int64_t width) {
  return static_cast<const char*>(t.const_data_ptr()) +
         row * width * t.element_size();
}

char* mut_row_ptr(const at::Tensor& t, int64_t row, int64_t width) {
  return static_cast<char*>(t.data_ptr()) + row * width * t.element_size();
}

at::Tensor as_rows(const at::Tensor& t, int64_t rows, int64_t width) {
  return t.reshape({rows, width}).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const c10::optional<at::Tensor>& b_ih,
                    const c10::optional<at::Tensor>& b_hh,
                    const c10::optional<at::Tensor>& w_hr,
                    const at::Tensor& output, const at::Tensor& gates,
                    const at::Tensor& cells,
                    const c10::optional<at::Tensor>& batch_sizes,
                    bool reverse) {
  const LayerDims d = check_layer_args("fusedlstm::lstm_layer_backward", input,
                                       h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                       batch_sizes);
  TORCH_CHECK(input.is_cuda(), "fusedlstm: CUDA kernel called with input on ",
              input.device());
  // Validates the variable, unused for now, so that a bad value fails in
  // backward exactly as in forward.
  (void)requested_path();
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const auto opts = input.options();
  const auto dtype = input.scalar_type();
  auto or_zeros = [&](const at::Tensor& g, at::IntArrayRef sizes) {
    return g.defined() ? g : at::zeros(sizes, opts);
  };

  const at::Tensor gout = as_rows(or_zeros(grad_output, output.sizes()), N, P);
  const at::Tensor gates_r = as_rows(gates, N, 4 * H);
  const at::Tensor cells_r = as_rows(cells, N, H);
  const at::Tensor out_r = as_rows(output, N, P);
  const at::Tensor h0_c = h0.contiguous();
  const at::Tensor c0_c = c0.contiguous();
  const at::Tensor w_hh_c = w_hh.contiguous();
  const at::Tensor w_hr_c = d.has_proj ? w_hr->contiguous() : at::Tensor();
  at::Tensor dgates = at::empty({N, 4 * H}, opts);
  at::Tensor h_prev = at::empty({N, P}, opts);
  at::Tensor dh_state = or_zeros(grad_h_n, {B, P}).contiguous().clone();
  at::Tensor dc_state = or_zeros(grad_c_n, {B, H})
                            .to(at::toOpMathType(dtype))
                            .contiguous()
                            .clone();
  // dW_hr needs the gradient of every h_t, so with a projection it is kept
  // per row; dm is the gradient reaching o * tanh(c_t).
  at::Tensor grad_h_all = d.has_proj ? at::empty({N, P}, opts) : at::Tensor();
  at::Tensor dm = d.has_proj ? at::empty({B, H}, opts) : at::Tensor();

  for (int64_t s = 0; s < sched.steps(); ++s) {
    const int64_t t = sched.step_at(s, !reverse);
    const int64_t bs = sched.batch_sizes[t], row = sched.offsets[t];
    const int64_t carried = sched.carried_rows(t, reverse);
    const int64_t prev_row =
        carried > 0 ? sched.offsets[sched.previous_step(t, reverse)] : 0;
    CellBackwardArgs a;
    a.rows = bs;
    a.carried = carried;
    a.H = H;
    a.P = P;
    a.gates = row_ptr(gates_r, row, 4 * H);
    a.cells = row_ptr(cells_r, row, H);
    a.c_prev = row_ptr(cells_r, prev_row, H);
    a.c0 = c0_c.const_data_ptr();
    a.h_prev_src = row_ptr(out_r, prev_row, P);
    a.h0 = h0_c.const_data_ptr();
    a.h_prev = mut_row_ptr(h_prev, row, P);
    a.dc_state = dc_state.data_ptr();
    a.dgates = mut_row_ptr(dgates, row, 4 * H);
    if (d.has_proj) {
      at::Tensor gh = grad_h_all.narrow(0, row, bs);
      at::add_out(gh, dh_state.narrow(0, 0, bs), gout.narrow(0, row, bs));
      at::Tensor dm_t = dm.narrow(0, 0, bs);
      at::mm_out(dm_t, gh, w_hr_c);
      a.dm = dm.const_data_ptr();
    } else {
      a.dh_state = dh_state.const_data_ptr();
      a.grad_out = row_ptr(gout, row, P);
    }
    launch_cell_backward(dtype, a, stream);
    // Only the active rows are overwritten: the others still hold the
    // gradient for a sequence that has not started yet in this order.
    at::Tensor dh_t = dh_state.narrow(0, 0, bs);
    at::mm_out(dh_t, dgates.narrow(0, row, bs), w_hh_c);
  }

  const at::Tensor x = input.reshape({N, I});
  const at::Tensor dgates_t = dgates.t();
  at::Tensor grad_input = at::mm(dgates, w_ih).view(input.sizes());
  at::Tensor grad_w_ih = at::mm(dgates_t, x);
  at::Tensor grad_w_hh = at::mm(dgates_t, h_prev);
  at::Tensor grad_bias = d.has_bias ? dgates.sum(0) : at::empty({0}, opts);
  at::Tensor grad_w_hr = at::empty({0}, opts);
  if (d.has_proj) {
    const at::Tensor hidden = gates_r.narrow(1, 3 * H, H).mul(cells_r.tanh());
    grad_w_hr = at::mm(grad_h_all.t(), hidden);
  }
  return {grad_input, dh_state, dc_state.to(dtype), grad_w_ih,
          grad_w_hh,  grad_bias, grad_w_hr};
}

}  // namespace fusedlstm::cuda
