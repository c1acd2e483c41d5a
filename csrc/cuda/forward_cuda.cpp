// Forward pass of one LSTM layer-direction on CUDA: host orchestration.
//
// As on the CPU, the input projection of all steps is one GEMM into the
// gates buffer; b_ih + b_hh, summed in the compute type, is added where the
// cells read it. The recurrence then runs on the persistent
// kernel when it fits, or step by step: per step one cuBLAS GEMM for
// h_{t-1} W_hh^T into a scratch buffer and one fused cell kernel. Rows beyond
// a step's batch size are never touched, so h_state/c_state end as h_n/c_n
// for padded, packed, forward and reverse alike.
//
// Everything runs on the current stream under a device guard; all buffers
// are allocated (caching allocator) before the step loop, batch_sizes stays
// on the host and nothing synchronises, so the op is CUDA-graph capturable.
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

char* row_ptr(const at::Tensor& t, int64_t row, int64_t width) {
  return static_cast<char*>(t.data_ptr()) + row * width * t.element_size();
}

struct ForwardState {
  // [N, 4H], [N, P], [N, H]. Inference allocates no cells, and its gates
  // hold only the input projection (the kernels write neither back).
  at::Tensor gates, output, cells;
  at::Tensor h_n, c_n;  // [B, P], [B, H] in the input dtype
};

void run_stepwise(const StepSchedule& sched, const LayerDims& d, bool reverse,
                  const at::Tensor& h0, const at::Tensor& c0,
                  const at::Tensor& w_hh, const at::Tensor& w_hr,
                  const at::Tensor& bias, cudaStream_t stream, ForwardState& st) {
  const int64_t B = sched.batch, H = d.hidden_size, P = d.state_size;
  const auto opts = st.gates.options();
  const auto dtype = opts.dtype().toScalarType();
  at::Tensor h_state = h0.contiguous().clone();
  at::Tensor c_state =
      c0.to(at::toOpMathType(dtype)).contiguous().clone();
  at::Tensor rec = at::empty({B, 4 * H}, opts);
  at::Tensor hidden = d.has_proj ? at::empty({B, H}, opts) : at::Tensor();
  const at::Tensor w_hh_t = w_hh.t();
  const at::Tensor w_hr_t = d.has_proj ? w_hr.t() : at::Tensor();

  for (int64_t s = 0; s < sched.steps(); ++s) {
    const int64_t t = sched.step_at(s, reverse);
    const int64_t bs = sched.batch_sizes[t], row = sched.offsets[t];
    at::Tensor rec_t = rec.narrow(0, 0, bs);
    at::mm_out(rec_t, h_state.narrow(0, 0, bs), w_hh_t);
    CellForwardArgs a;
    a.rows = bs;
    a.H = H;
    a.rec = rec.data_ptr();
    a.gates = row_ptr(st.gates, row, 4 * H);
    a.bias = bias.defined() ? bias.data_ptr() : nullptr;
    a.c_state = c_state.data_ptr();
    a.cells = st.cells.defined() ? row_ptr(st.cells, row, H) : nullptr;
    if (d.has_proj) {
      a.hidden = hidden.data_ptr();
      launch_cell_forward(dtype, a, stream);
      at::Tensor out_t = st.output.narrow(0, row, bs);
      at::mm_out(out_t, hidden.narrow(0, 0, bs), w_hr_t);
      h_state.narrow(0, 0, bs).copy_(out_t);
    } else {
      a.hidden = h_state.data_ptr();
      a.hidden2 = row_ptr(st.output, row, P);
      launch_cell_forward(dtype, a, stream);
    }
  }
  st.h_n = h_state;
  st.c_n = c_state.to(dtype);
}

void run_persistent(const PersistentChoice& choice, const LayerDims& d,
                    int64_t B, bool reverse,
                    const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_hh, const at::Tensor& w_hr,
                    const at::Tensor& bias, cudaStream_t stream, ForwardState& st) {
  const int64_t H = d.hidden_size, P = d.state_size;
  const auto opts = st.gates.options();
  at::Tensor h_buf = at::empty({2, B, P}, opts);
  h_buf[0].copy_(h0);
  h_buf[1].copy_(h0);
  at::Tensor c_state = c0.to(at::kFloat).contiguous().clone();
  at::Tensor m_buf = d.has_proj ? at::empty({B, H}, opts) : at::Tensor();
  // Rows that never run keep h0; the kernel overwrites the others at their
  // last step.
  at::Tensor h_n = h0.contiguous().clone();

  PersistentForwardParams p;
  p.B = static_cast<int>(B);
  p.H = static_cast<int>(H);
  p.P = static_cast<int>(P);
  p.reverse = reverse;
  p.sched = choice.table;
  p.w_hh = w_hh.data_ptr();
  p.w_hr = d.has_proj ? w_hr.data_ptr() : nullptr;
  p.gates = st.gates.data_ptr();
  p.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
  p.output = st.output.data_ptr();
  p.cells = st.cells.defined() ? st.cells.data_ptr() : nullptr;
  p.h_buf = h_buf.data_ptr();
  p.m_buf = d.has_proj ? m_buf.data_ptr() : nullptr;
  p.c_state = c_state.data_ptr<float>();
  p.h_n = h_n.data_ptr();
  const at::ScalarType dtype = opts.dtype().toScalarType();
  if (choice.table.steps > 0 && B > 0 && choice.cluster) {
    const bool split_sync = cluster_split_sync();
    FUSEDLSTM_CLUSTER_TYPE_SWITCH(dtype, choice.tf32, T, [&] {
      launch_cluster_forward<T>(choice.plan, p, split_sync, stream);
    });
  } else if (choice.table.steps > 0 && B > 0) {
    FUSEDLSTM_PERSISTENT_TYPE_SWITCH(dtype, choice.tf32, T, [&] {
      FUSEDLSTM_BOOL_SWITCH(d.has_proj, kProj, [&] {
        launch_persistent_forward<T, kProj>(choice.plan, p, stream);
      });
    });
  }
  st.h_n = h_n;
  st.c_n = c_state.to(opts.dtype());
}

// The layer-direction's forward; with keep_activations, the gates and cells
// that backward needs too.
ForwardState run_layer(const at::Tensor& input, const at::Tensor& h0,
                       const at::Tensor& c0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                       const c10::optional<at::Tensor>& b_hh,
                       const c10::optional<at::Tensor>& w_hr,
                       const c10::optional<at::Tensor>& batch_sizes, bool reverse,
                       bool keep_activations) {
  const NoAutocastInside no_autocast;
  const LayerDims d = check_layer_args("fusedlstm::lstm_layer_forward", input,
                                       h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                       batch_sizes);
  TORCH_CHECK(on_kernel_device(input), "fusedlstm: CUDA kernel called with input on ",
              input.device());
  const c10::cuda::CUDAGuard guard(input.device());
  check_kernel_image(input.get_device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const auto opts = input.options();
  const auto dtype = input.scalar_type();

  ForwardState st;
  st.gates = at::empty({N, 4 * H}, opts);
  const at::Tensor x = input.reshape({N, I});
  at::mm_out(st.gates, x, w_ih.t());
  // b_ih + b_hh in the compute type (float for float16 and bfloat16): in the
  // input's dtype the sum would round, and the GEMM's output with it.
  const at::ScalarType math = at::toOpMathType(dtype);
  // (b_hh joins through type promotion: one kernel fewer.)
  const at::Tensor bias = d.has_bias ? at::add(b_ih->to(math), *b_hh) : at::Tensor();
  st.output = at::empty({N, P}, opts);
  if (keep_activations) st.cells = at::empty({N, H}, opts);
  const at::Tensor w_hh_c = w_hh.contiguous();
  const at::Tensor w_hr_c = d.has_proj ? w_hr->contiguous() : at::Tensor();

  const PersistentChoice choice = choose_persistent(
      RecurrencePass::kForward, dtype, sched, d, input.get_device());
  if (choice.use) {
    run_persistent(choice, d, B, reverse, h0, c0, w_hh_c, w_hr_c, bias, stream, st);
  } else {
    run_stepwise(sched, d, reverse, h0, c0, w_hh_c, w_hr_c, bias, stream, st);
  }
  return st;
}

// t [N, width] viewed as input's leading sizes by width.
at::Tensor shaped_like(const at::Tensor& t, const at::Tensor& input) {
  std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end() - 1);
  sizes.push_back(t.size(1));
  return t.view(sizes);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                   const c10::optional<at::Tensor>& b_hh,
                   const c10::optional<at::Tensor>& w_hr,
                   const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  ForwardState st = run_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                              reverse, /*keep_activations=*/true);
  return {shaped_like(st.output, input), st.h_n, st.c_n, shaped_like(st.gates, input),
          shaped_like(st.cells, input)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_layer_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  ForwardState st = run_layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                              reverse, /*keep_activations=*/false);
  return {shaped_like(st.output, input), st.h_n, st.c_n};
}

}  // namespace fusedlstm::cuda
