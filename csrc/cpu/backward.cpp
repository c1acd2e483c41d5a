// Backward pass of one LSTM layer-direction on the CPU.
//
// The recurrence runs the steps in the opposite order to forward: per step,
// the fused cell backward turns the gradient reaching h_t and c_t into the
// gate gradients, and one GEMM carries them to h_{t-1} (with a projection,
// dm = dh_t W_hr comes first, and dh_t is kept per row for dW_hr). Every
// weight and input gradient is then a whole-sequence GEMM over the stored
// gate gradients, which is where most of the backward FLOPs are.
//
// Float layers run the fused recurrence of recurrence.h where the CPU has
// AVX2 and FMA, with or without a projection; the rest (double, other CPUs,
// FUSEDLSTM_CPU_RECURRENCE=blas) run run_steps_backward below, a BLAS call
// (two with a projection) and the cell kernel per step. bfloat16 layers whose
// forward took bfloat16 dot products keep their gate gradients in bfloat16
// and take every product with them in bfloat16 operands
// (bf16_sequence_gradients).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cstring>

#include "common/layer_args.h"
#include "cpu/cell_dispatch.h"
#include "cpu/fresh_buffer.h"
#include "cpu/lstm_cpu.h"
#include "cpu/mkl_bf16_gemm.h"
#include "cpu/recurrence.h"
#include "cpu/sequence_gemm.h"
#include "cpu/widen.h"

namespace fusedlstm::cpu {

namespace {

// Row r of the result is the value that row r's step started from: the same
// sequence's row of the previously processed step, or `initial` where the
// sequence starts at this step. seq: [N, D], initial: [B, D], both contiguous.
at::Tensor gather_previous(const at::Tensor& seq, const at::Tensor& initial,
                           const StepSchedule& sched, bool reverse) {
  at::Tensor out = empty_fresh(seq.sizes(), seq.options());
  const size_t row_bytes = seq.size(1) * seq.element_size();
  const char* src = static_cast<const char*>(seq.const_data_ptr());
  const char* init = static_cast<const char*>(initial.const_data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t t = 0; t < sched.steps(); ++t) {
    const int64_t carried = sched.carried_rows(t, reverse);
    const int64_t row = sched.offsets[t];
    if (carried > 0) {
      const int64_t prev = sched.offsets[sched.previous_step(t, reverse)];
      std::memcpy(dst + row * row_bytes, src + prev * row_bytes,
                  carried * row_bytes);
    }
    const int64_t fresh = sched.batch_sizes[t] - carried;
    if (fresh > 0) {
      std::memcpy(dst + (row + carried) * row_bytes,
                  init + carried * row_bytes, fresh * row_bytes);
    }
  }
  return out;
}

// dX, dh0, dc0, dW_ih, dW_hh, db, dW_hr (empty without bias or projection).
using LayerGradients = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor, at::Tensor>;

struct BackwardBuffers {
  at::Tensor grad_output;  // [N, P]
  at::Tensor gates;        // [N, 4H]
  at::Tensor cells;        // [N, H]
  at::Tensor c_prev;       // [N, H]
  at::Tensor dgates;       // [N, 4H] out (bfloat16 with bfloat16 dot products)
  at::Tensor grad_h_all;   // [N, P] out (projection only): gradient of h_t
  at::Tensor dh_state;     // [B, P]
  at::Tensor dc_state;     // [B, H]
  at::Tensor dm;           // [B, H]
};

template <typename scalar_t>
void run_steps_backward(const StepSchedule& sched, const LayerDims& d,
                        bool reverse, const at::Tensor& w_hh,
                        const at::Tensor& w_hr, BackwardBuffers& buf) {
  const int64_t H = d.hidden_size, G = 4 * H;
  for (int64_t s = 0; s < sched.steps(); ++s) {
    const int64_t t = sched.step_at(s, !reverse);
    const int64_t bs = sched.batch_sizes[t];
    const int64_t row = sched.offsets[t];
    if (bs == 0) continue;
    at::Tensor dh_active = buf.dh_state.narrow(0, 0, bs);
    const at::Tensor grad_out = buf.grad_output.narrow(0, row, bs);
    if (d.has_proj) {
      // dW_hr needs the gradient of every h_t, so it is kept per row.
      at::Tensor gh = buf.grad_h_all.narrow(0, row, bs);
      at::Tensor dm = buf.dm.narrow(0, 0, bs);
      at::add_out(gh, dh_active, grad_out);
      blas_mm_out(dm, gh, w_hr, /*accumulate=*/false);
    } else {
      at::Tensor dm = buf.dm.narrow(0, 0, bs);
      at::add_out(dm, dh_active, grad_out);
    }
    scalar_t* dgates = buf.dgates.data_ptr<scalar_t>() + row * G;
    cell_kernels<scalar_t>().backward(bs, H, buf.gates.const_data_ptr<scalar_t>() + row * G,
                            buf.cells.const_data_ptr<scalar_t>() + row * H,
                            buf.c_prev.const_data_ptr<scalar_t>() + row * H,
                            buf.dm.const_data_ptr<scalar_t>(),
                            buf.dc_state.data_ptr<scalar_t>(), dgates);
    // Only the active rows are overwritten: the others still hold the
    // gradient for a sequence that has not started yet in this order.
    blas_mm_out(dh_active, buf.dgates.narrow(0, row, bs), w_hh,
                /*accumulate=*/false);
  }
}

// The whole-sequence gradients of a bfloat16 layer whose gate gradients are
// bfloat16 (buf.dgates): products of bfloat16 operands, accumulated in float
// and rounded once (at::mm runs them in oneDNN, at twice its float32 rate).
// The h_{t-1} of dW_hh are the layer's outputs: forward multiplied them,
// rounded to bfloat16, by W_hh. Only the gradients in `want` are computed.
LayerGradients bf16_sequence_gradients(const BackwardBuffers& buf,
                                       const LayerDims& d,
                                       const StepSchedule& sched,
                                       const at::Tensor& input,
                                       const at::Tensor& h0,
                                       const at::Tensor& w_ih,
                                       const at::Tensor& output, bool reverse,
                                       at::ScalarType c_dtype,
                                       const BackwardMask& want) {
  const int64_t N = sched.rows, I = d.input_size, P = d.state_size;
  const at::ScalarType dtype = input.scalar_type();
  const auto opts = input.options();
  const at::Tensor dgates_t = buf.dgates.t();
  // ATen sums bfloat16 in float and rounds once; sum(0, kFloat) would first
  // convert all of dgates to a float copy (16 ms of a C3 backward).
  at::Tensor grad_bias = d.has_bias && want[gradient::bias]
                             ? buf.dgates.sum(0)
                             : at::empty({0}, opts);
  at::Tensor grad_input = at::empty({0}, opts), grad_w_ih = at::empty({0}, opts),
             grad_w_hh = at::empty({0}, opts);
  const at::Tensor x = input.reshape({N, I});
  at::Tensor h_prev;
  if (want[gradient::w_hh]) {
    h_prev = gather_previous(output.reshape({N, P}).contiguous(),
                             h0.contiguous(), sched, reverse);
  }
  const int64_t G = 4 * d.hidden_size;
  if (N > 0 && few_rows_backward_bf16(N, w_ih.numel(), G * P)) {
    // Products too small for a GEMM call's setup, as for float layers
    // (cpu/few_rows_products_impl.h): float sums of the bfloat16 operands,
    // dX rounded once from its float sums.
    const uint16_t* dg = bf16_bits(buf.dgates);
    if (want[gradient::input]) {
      at::Tensor dx = at::empty({N, I}, opts.dtype(at::kFloat));
      few_rows_product_bf16(dg, N, G, bf16_bits(w_ih.contiguous()), I,
                            dx.data_ptr<float>());
      grad_input = converted_fresh(dx, dtype);
    }
    if (want[gradient::w_ih]) {
      grad_w_ih = empty_fresh({G, I}, opts);
      few_rows_weight_gradient_bf16(dg, N, G, bf16_bits(x.contiguous()), I,
                                    mutable_bf16_bits(grad_w_ih));
    }
    if (want[gradient::w_hh]) {
      grad_w_hh = empty_fresh({G, P}, opts);
      few_rows_weight_gradient_bf16(dg, N, G, bf16_bits(h_prev), P,
                                    mutable_bf16_bits(grad_w_hh));
    }
  } else {
    if (want[gradient::input]) {
      grad_input = empty_fresh({N, I}, opts);
      at::mm_out(grad_input, buf.dgates, w_ih.contiguous());
    }
    // The weight gradients come from the recycled blocks too: at::mm's own
    // 8 MiB outputs (H = 1024), freed once autograd has added them to .grad,
    // let glibc trim the heap and fault the pages back in on the next call,
    // a third of a one-step training call (NOTES change 81). From
    // kMklWeightGradientMinRows rows MKL reads dG as it lies, where oneDNN
    // runs on the transposed view at under half its rate; its float sums
    // are rounded once, as oneDNN rounds its own (NOTES change 86).
    // MKL's float result is a recycled block too: the second gradient's
    // takes back the first's where their sizes share a class.
    const bool mkl = N >= kMklWeightGradientMinRows && mkl_bf16_gemm_available();
    const auto weight_gradient = [&](const at::Tensor& operand) {
      const int64_t K = operand.size(1);
      at::Tensor grad = empty_fresh({G, K}, opts);
      if (!mkl) {
        at::mm_out(grad, dgates_t, operand);
        return grad;
      }
      const at::Tensor sums = empty_fresh({G, K}, opts.dtype(at::kFloat));
      mkl_bf16_gemm_tn(bf16_bits(buf.dgates), G, bf16_bits(operand), K,
                       sums.data_ptr<float>(), K, G, K, N);
      grad.copy_(sums);
      return grad;
    };
    if (want[gradient::w_ih]) grad_w_ih = weight_gradient(x.contiguous());
    if (want[gradient::w_hh]) grad_w_hh = weight_gradient(h_prev);
  }
  return {want[gradient::input] ? grad_input.view(input.sizes()) : grad_input,
          want[gradient::h0] ? converted_fresh(buf.dh_state, dtype)
                             : at::empty({0}, opts),
          want[gradient::c0] ? converted_fresh(buf.dc_state, c_dtype)
                             : at::empty({0}, opts.dtype(c_dtype)),
          grad_w_ih,
          grad_w_hh,
          grad_bias,
          at::empty({0}, opts)};
}

}  // namespace

LayerGradients
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
  check_saved_activations("fusedlstm::lstm_layer_backward", input, d, output,
                          gates, cells, saved_activation_dtype(input, d));
  check_incoming_gradients("fusedlstm::lstm_layer_backward", input, h0, c0,
                           output, grad_output, grad_h_n, grad_c_n);
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const at::ScalarType dtype = input.scalar_type();
  const Widen w(dtype);
  const auto opts = input.options().dtype(w.compute);
  // An output nobody used has no gradient; it contributes zero.
  auto rows_or_zeros = [&](const at::Tensor& g, int64_t rows, int64_t width) {
    return g.defined() ? w(g).reshape({rows, width}).contiguous()
                       : at::zeros({rows, width}, opts);
  };
  auto state_or_zeros = [&](const at::Tensor& g, int64_t width) {
    return g.defined() ? w.owned(g) : at::zeros({B, width}, opts);
  };

  // bfloat16 layers whose forward took bfloat16 dot products run backward
  // the same way: gate gradients rounded to bfloat16 (oneDNN's bfloat16 LSTM
  // rounds them, nn.LSTM's native path computes them in bfloat16), so every
  // product with them is of bfloat16 operands with float accumulation.
  const bool bf16_dot = B > 0 && bf16_recurrent_product(dtype, d.has_proj);

  BackwardBuffers buf;
  buf.grad_output = rows_or_zeros(grad_output, N, P);
  buf.gates = w(gates).reshape({N, 4 * H}).contiguous();
  buf.cells = w(cells).reshape({N, H}).contiguous();
  buf.c_prev = gather_previous(buf.cells, w(c0).contiguous(), sched, reverse);
  buf.dgates = empty_fresh({N, 4 * H}, bf16_dot ? input.options() : opts);
  buf.dh_state = state_or_zeros(grad_h_n, P);
  buf.dc_state = state_or_zeros(grad_c_n, H);
  buf.dm = at::empty({B, H}, opts);
  if (d.has_proj) buf.grad_h_all = empty_fresh({N, P}, opts);
  // bfloat16 dot products pack W_hh from its own bfloat16 values.
  const at::Tensor w_hh_c = bf16_dot ? w_hh.contiguous() : w(w_hh).contiguous();
  const at::Tensor w_hr_c = d.has_proj ? w(*w_hr).contiguous() : at::Tensor();

  // One row (one step of one sequence): the recurrent product is a single
  // vector-matrix product, which BLAS runs from W_hh as it is, while the
  // fused recurrence would pack W_hh first (a read and a write of it more):
  // 0.75 against 1.6 ms at H = 1024 on 1 thread, caches cold; from two rows
  // on the fused recurrence is as fast or faster (NOTES change 23).
  const bool single_row = sched.rows == 1 && !bf16_dot;
  if (use_fused_recurrence(w.compute) && B > 0 && !single_row) {
    RecurrentBackward args{
        &sched, reverse, H, P,
        bf16_dot ? nullptr : w_hh_c.const_data_ptr<float>(),
        d.has_proj ? w_hr_c.const_data_ptr<float>() : nullptr,
        buf.grad_output.const_data_ptr<float>(),
        buf.gates.const_data_ptr<float>(), buf.cells.const_data_ptr<float>(),
        buf.c_prev.const_data_ptr<float>(), nullptr,
        d.has_proj ? buf.grad_h_all.data_ptr<float>() : nullptr,
        buf.dh_state.data_ptr<float>(), buf.dc_state.data_ptr<float>()};
    if (bf16_dot) {
      args.bf16_dot = true;
      args.w_hh16 = bf16_bits(w_hh_c);
      args.dgates16 =
          reinterpret_cast<uint16_t*>(buf.dgates.data_ptr<at::BFloat16>());
    } else {
      args.dgates = buf.dgates.data_ptr<float>();
    }
    recurrent_backward_fused(args);
  } else {
    AT_DISPATCH_FLOATING_TYPES(w.compute, "lstm_layer_backward_cpu", [&] {
      run_steps_backward<scalar_t>(sched, d, reverse, w_hh_c, w_hr_c, buf);
    });
  }

  if (bf16_dot) {
    return bf16_sequence_gradients(buf, d, sched, input, h0, w_ih, output,
                                   reverse, c0.scalar_type(), want);
  }
  // The input, widened (a copy for reduced dtypes): only dW_ih reads it.
  const at::Tensor x =
      want[gradient::w_ih] ? w(input).reshape({N, I}) : at::Tensor();
  const bool has_w_hr_grad = d.has_proj && want[gradient::w_hr];
  // The h_{t-1} that forward multiplied by W_hh. A reduced-precision output
  // is a rounding of it, so where forward kept float gates and cells and
  // multiplied the float h, h is rebuilt in float from them, and dW_hh sees
  // what forward used (the output's rounding would otherwise cost dW_hh
  // several ulps where columns cancel). Only dW_hh reads them.
  const bool rebuild_h = dtype != gates.scalar_type();
  // o * tanh(c): the projection's input, and h itself without a projection.
  at::Tensor hidden;
  if (has_w_hr_grad || (rebuild_h && want[gradient::w_hh])) {
    hidden = buf.gates.narrow(1, 3 * H, H).mul(buf.cells.tanh());
  }
  at::Tensor h_prev;
  if (want[gradient::w_hh]) {
    at::Tensor h_all;
    if (!rebuild_h) {
      h_all = w(output).reshape({N, P}).contiguous();
    } else {
      h_all = d.has_proj ? gemm(hidden, w(*w_hr).t()) : hidden;
    }
    h_prev = gather_previous(h_all, w(h0).contiguous(), sched, reverse);
  }
  at::Tensor grad_input = at::empty({0}, opts), grad_w_ih = at::empty({0}, opts),
             grad_w_hh = at::empty({0}, opts), grad_w_hr = at::empty({0}, opts);
  const int64_t G = 4 * H;
  if (w.compute == at::kFloat && N > 0 &&
      few_rows_backward(N, w_ih.numel(), w_hh.numel())) {
    // Products too small for a GEMM call's setup
    // (cpu/few_rows_products_impl.h).
    const float* dg = buf.dgates.const_data_ptr<float>();
    if (want[gradient::input]) {
      grad_input = empty_fresh({N, I}, opts);
      few_rows_product(dg, N, G, w(w_ih).contiguous().const_data_ptr<float>(),
                       I, grad_input.data_ptr<float>());
    }
    if (want[gradient::w_ih]) {
      grad_w_ih = empty_fresh({G, I}, opts);
      few_rows_weight_gradient(dg, N, G, x.contiguous().const_data_ptr<float>(),
                               I, grad_w_ih.data_ptr<float>());
    }
    if (want[gradient::w_hh]) {
      grad_w_hh = empty_fresh({G, P}, opts);
      few_rows_weight_gradient(dg, N, G, h_prev.const_data_ptr<float>(), P,
                               grad_w_hh.data_ptr<float>());
    }
    if (has_w_hr_grad) {
      grad_w_hr = empty_fresh({P, H}, opts);
      few_rows_weight_gradient(buf.grad_h_all.const_data_ptr<float>(), N, P,
                               hidden.contiguous().const_data_ptr<float>(), H,
                               grad_w_hr.data_ptr<float>());
    }
  } else {
    const at::Tensor dgates_t = buf.dgates.t();
    if (want[gradient::input]) {
      grad_input = empty_fresh({N, I}, opts);
      gemm_out(grad_input, buf.dgates, w(w_ih));
    }
    if (want[gradient::w_ih]) grad_w_ih = gemm(dgates_t, x);
    if (want[gradient::w_hh]) grad_w_hh = gemm(dgates_t, h_prev);
    if (has_w_hr_grad) grad_w_hr = gemm(buf.grad_h_all.t(), hidden);
  }
  if (want[gradient::input]) grad_input = grad_input.view(input.sizes());
  at::Tensor grad_bias = d.has_bias && want[gradient::bias]
                             ? buf.dgates.sum(0)
                             : at::empty({0}, opts);
  const auto skipped = [&](at::ScalarType t) {
    return at::empty({0}, input.options().dtype(t));
  };
  return {converted_fresh(grad_input, dtype),
          want[gradient::h0] ? converted_fresh(buf.dh_state, dtype) : skipped(dtype),
          want[gradient::c0] ? converted_fresh(buf.dc_state, c0.scalar_type())
                             : skipped(c0.scalar_type()),
          converted_fresh(grad_w_ih, dtype), converted_fresh(grad_w_hh, dtype),
          converted_fresh(grad_bias, dtype), converted_fresh(grad_w_hr, dtype)};
}

}  // namespace fusedlstm::cpu
