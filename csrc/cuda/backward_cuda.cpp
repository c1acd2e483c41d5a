// Backward pass of one LSTM layer-direction on CUDA: host orchestration.
//
// The recurrence runs the steps in the opposite order to forward, on one of
// two paths (FUSEDLSTM_CUDA_PATH, as in forward):
//   persistent: one cooperative kernel for the whole sequence, the transposed
//               weight slices on chip (persistent/persistent.h); with
//               FUSEDLSTM_CUDA_PATH=cluster the same split inside thread-block
//               clusters (persistent/cluster_bwd.cuh);
//   stepwise:   per step, (projection only) dh = dh_state + grad_output rows
//               and dm = dh W_hr, two ATen ops; one fused cell kernel turning
//               dm (or dh_state + grad_output) and dc_state into the gate
//               gradients, gathering h_{t-1} for dW_hh on the way; one cuBLAS
//               GEMM carrying the gate gradients to dh_state.
// Both keep the gate gradients of every step, so every weight and input
// gradient is then a whole-sequence GEMM or reduction -- deterministic, no
// atomics.
//
// dc_state is kept in opmath (fp32 for half types) on both paths; dh_state
// is the output of a cuBLAS GEMM in the input dtype on the stepwise path
// (rounded once per step, fp32 accumulation inside cuBLAS) and fp32 on the
// persistent one.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/layer_args.h"
#include "cuda/lstm_cuda.h"
#include "cuda/persistent/persistent.h"
#include "cuda/static_switch.h"

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

// What the recurrence leaves for the whole-sequence gradients.
struct RecurrentGrads {
  at::Tensor dgates;      // [N, 4H] gradients of the preactivations
  at::Tensor h_prev;      // [N, P]  h_{t-1} of every row
  at::Tensor grad_h_all;  // [N, P]  gradient of h_t (projection only)
  at::Tensor dh0, dc0;    // [B, P], [B, H] in the input dtype
};

// The inputs of the recurrence, as contiguous rows.
struct RecurrentInputs {
  const StepSchedule* sched;
  const LayerDims* dims;
  bool reverse;
  at::Tensor gout, gates, cells, output;  // [N, P], [N, 4H], [N, H], [N, P]
  at::Tensor h0, c0;                       // [B, P], [B, H]
  at::Tensor w_hh, w_hr;                   // [4H, P], [P, H] or undefined
  at::Tensor grad_h_n, grad_c_n;           // [B, P], [B, H] (defined)
};

RecurrentGrads run_stepwise(const RecurrentInputs& in, cudaStream_t stream) {
  const StepSchedule& sched = *in.sched;
  const LayerDims& d = *in.dims;
  const bool reverse = in.reverse;
  const int64_t N = sched.rows, H = d.hidden_size, P = d.state_size;
  const auto opts = in.gout.options();
  const auto dtype = opts.dtype().toScalarType();
  RecurrentGrads r;
  at::Tensor dgates = at::empty({N, 4 * H}, opts);
  at::Tensor h_prev = at::empty({N, P}, opts);
  at::Tensor dh_state = in.grad_h_n.contiguous().clone();
  at::Tensor dc_state =
      in.grad_c_n.to(at::toOpMathType(dtype)).contiguous().clone();
  // dW_hr needs the gradient of every h_t, so with a projection it is kept
  // per row; dm is the gradient reaching o * tanh(c_t).
  at::Tensor grad_h_all = d.has_proj ? at::empty({N, P}, opts) : at::Tensor();
  at::Tensor dm = d.has_proj ? at::empty({sched.batch, H}, opts) : at::Tensor();

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
    a.gates = row_ptr(in.gates, row, 4 * H);
    a.cells = row_ptr(in.cells, row, H);
    a.c_prev = row_ptr(in.cells, prev_row, H);
    a.c0 = in.c0.const_data_ptr();
    a.h_prev_src = row_ptr(in.output, prev_row, P);
    a.h0 = in.h0.const_data_ptr();
    a.h_prev = mut_row_ptr(h_prev, row, P);
    a.dc_state = dc_state.data_ptr();
    a.dgates = mut_row_ptr(dgates, row, 4 * H);
    if (d.has_proj) {
      at::Tensor gh = grad_h_all.narrow(0, row, bs);
      at::add_out(gh, dh_state.narrow(0, 0, bs), in.gout.narrow(0, row, bs));
      at::Tensor dm_t = dm.narrow(0, 0, bs);
      at::mm_out(dm_t, gh, in.w_hr);
      a.dm = dm.const_data_ptr();
    } else {
      a.dh_state = dh_state.const_data_ptr();
      a.grad_out = row_ptr(in.gout, row, P);
    }
    launch_cell_backward(dtype, a, stream);
    // Only the active rows are overwritten: the others still hold the
    // gradient for a sequence that has not started yet in this order.
    at::Tensor dh_t = dh_state.narrow(0, 0, bs);
    at::mm_out(dh_t, dgates.narrow(0, row, bs), in.w_hh);
  }

  r.dgates = dgates;
  r.h_prev = h_prev;
  r.grad_h_all = grad_h_all;
  r.dh0 = dh_state;
  r.dc0 = dc_state.to(dtype);
  return r;
}

RecurrentGrads run_persistent(const RecurrentInputs& in,
                              const PersistentChoice& choice,
                              cudaStream_t stream) {
  const StepSchedule& sched = *in.sched;
  const LayerDims& d = *in.dims;
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size;
  const auto opts = in.gout.options();
  const auto dtype = opts.dtype().toScalarType();
  RecurrentGrads r;
  r.dgates = at::empty({N, 4 * H}, opts);
  r.h_prev = at::empty({N, P}, opts);
  r.grad_h_all = d.has_proj ? at::empty({N, P}, opts) : at::Tensor();
  at::Tensor dh_state = in.grad_h_n.to(at::kFloat).contiguous().clone();
  at::Tensor dc_state = in.grad_c_n.to(at::kFloat).contiguous().clone();

  PersistentBackwardParams p;
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.P = static_cast<int>(P);
  p.reverse = in.reverse;
  p.sched = choice.table;
  p.w_hh = in.w_hh.data_ptr();
  p.w_hr = d.has_proj ? in.w_hr.data_ptr() : nullptr;
  p.gates = in.gates.data_ptr();
  p.cells = in.cells.data_ptr();
  p.output = in.output.data_ptr();
  p.h0 = in.h0.data_ptr();
  p.c0 = in.c0.data_ptr();
  p.grad_out = in.gout.data_ptr();
  p.dgates = r.dgates.data_ptr();
  p.h_prev = r.h_prev.data_ptr();
  p.grad_h_all = d.has_proj ? r.grad_h_all.data_ptr() : nullptr;
  p.dh_state = dh_state.data_ptr<float>();
  p.dc_state = dc_state.data_ptr<float>();
  if (choice.table.steps > 0 && B > 0 && choice.cluster) {
    const bool split_sync = cluster_split_sync();
    FUSEDLSTM_CLUSTER_TYPE_SWITCH(dtype, choice.tf32, T, [&] {
      launch_cluster_backward<T>(choice.plan, p, split_sync, stream);
    });
  } else if (choice.table.steps > 0 && B > 0) {
    FUSEDLSTM_PERSISTENT_TYPE_SWITCH(dtype, choice.tf32, T, [&] {
      FUSEDLSTM_BOOL_SWITCH(d.has_proj, kProj, [&] {
        launch_persistent_backward<T, kProj>(choice.plan, p, stream);
      });
    });
  }
  r.dh0 = dh_state.to(dtype);
  r.dc0 = dc_state.to(dtype);
  return r;
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
                    bool reverse, BackwardMask want) {
  const NoAutocastInside no_autocast;
  const LayerDims d = check_layer_args("fusedlstm::lstm_layer_backward", input,
                                       h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                       batch_sizes);
  TORCH_CHECK(on_kernel_device(input), "fusedlstm: CUDA kernel called with input on ",
              input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  check_kernel_image(input.get_device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // The CUDA kernels keep the gates and cells in the input's dtype.
  check_saved_activations("fusedlstm::lstm_layer_backward", input, d, output,
                          gates, cells, input.scalar_type());
  check_incoming_gradients("fusedlstm::lstm_layer_backward", input, h0, c0,
                           output, grad_output, grad_h_n, grad_c_n);
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const auto opts = input.options();
  const auto dtype = input.scalar_type();
  auto or_zeros = [&](const at::Tensor& g, at::IntArrayRef sizes) {
    return g.defined() ? g : at::zeros(sizes, opts);
  };

  RecurrentInputs in;
  in.sched = &sched;
  in.dims = &d;
  in.reverse = reverse;
  in.gout = as_rows(or_zeros(grad_output, output.sizes()), N, P);
  in.gates = as_rows(gates, N, 4 * H);
  in.cells = as_rows(cells, N, H);
  in.output = as_rows(output, N, P);
  in.h0 = h0.contiguous();
  in.c0 = c0.contiguous();
  in.w_hh = w_hh.contiguous();
  in.w_hr = d.has_proj ? w_hr->contiguous() : at::Tensor();
  in.grad_h_n = or_zeros(grad_h_n, {B, P});
  in.grad_c_n = or_zeros(grad_c_n, {B, H});

  const PersistentChoice choice = choose_persistent(
      RecurrencePass::kBackward, dtype, sched, d, input.get_device());
  const RecurrentGrads rg = choice.use ? run_persistent(in, choice, stream)
                                       : run_stepwise(in, stream);

  // Each whole-sequence product runs only for a gradient that is wanted
  // (autograd asks for those of inputs that require one).
  const at::Tensor x = input.reshape({N, I});
  const at::Tensor& dgates = rg.dgates;
  const at::Tensor dgates_t = dgates.t();
  // A tensor of its own for each result left out: an operator's outputs
  // must not alias one another.
  const auto skipped = [&](at::ScalarType t) { return at::empty({0}, opts.dtype(t)); };
  at::Tensor grad_input = want[gradient::input]
                              ? at::mm(dgates, w_ih).view(input.sizes())
                              : skipped(dtype);
  at::Tensor grad_w_ih =
      want[gradient::w_ih] ? at::mm(dgates_t, x) : skipped(dtype);
  at::Tensor grad_w_hh =
      want[gradient::w_hh] ? at::mm(dgates_t, rg.h_prev) : skipped(dtype);
  at::Tensor grad_bias =
      d.has_bias && want[gradient::bias] ? dgates.sum(0) : skipped(dtype);
  at::Tensor grad_w_hr = skipped(dtype);
  if (d.has_proj && want[gradient::w_hr]) {
    // m_t = o_t * tanh(c_t) in the compute type (float for float16 and
    // bfloat16), rounded once, as forward rounded it: in the input's dtype the
    // tanh and the product would round twice more.
    const at::ScalarType math = at::toOpMathType(dtype);
    const at::Tensor hidden = in.gates.narrow(1, 3 * H, H)
                                  .to(math)
                                  .mul(in.cells.to(math).tanh())
                                  .to(dtype);
    grad_w_hr = at::mm(rg.grad_h_all.t(), hidden);
  }
  return {grad_input,
          want[gradient::h0] ? rg.dh0 : skipped(dtype),
          want[gradient::c0] ? rg.dc0 : skipped(c0.scalar_type()),
          grad_w_ih, grad_w_hh, grad_bias, grad_w_hr};
}

}  // namespace fusedlstm::cuda
