// Forward pass of one LSTM layer-direction on the CPU.
//
// The input projection of every step is one GEMM into the gates buffer; each
// step then adds h_{t-1} W_hh^T in place and runs the fused cell over the
// active rows. The activated gates overwrite their preactivations, so the
// buffer that held the projection is what backward keeps.
//
// Float layers run the fused recurrence of recurrence.h where the CPU has
// AVX2 and FMA; the rest (double, other CPUs) run the loop below, a BLAS call
// and the cell kernel per step.
//
// bfloat16 and half run in float: the widened weights are small next to the
// activations, and it keeps every step's rounding at float's level, as
// cuDNN and oneDNN do for reduced types. The gates and cells kept for backward
// stay in float where nn.LSTM's kernel keeps float (saved_activation_dtype).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <optional>
#include <tuple>
#include <utility>

#include "common/layer_args.h"
#include "cpu/bf16_dot_build.h"
#include "cpu/cell_dispatch.h"
#include "cpu/fresh_buffer.h"
#include "cpu/lstm_cpu.h"
#include "cpu/mkl_bf16_gemm.h"
#include "cpu/recurrence.h"
#include "cpu/sequence_gemm.h"
#include "cpu/widen.h"
#include "cpu/workspace.h"

namespace fusedlstm::cpu {

namespace {

struct ForwardBuffers {
  at::Tensor gates;    // [N, 4H] projection in, activated gates out
  at::Tensor output;   // [N, P]
  at::Tensor cells;    // [N, H]
  at::Tensor h_state;  // [B, P] h of each sequence's latest step
  at::Tensor c_state;  // [B, H] c of each sequence's latest step
  at::Tensor hidden;   // [B, H] o * tanh(c) ahead of the projection
};

template <typename scalar_t>
void run_steps(const StepSchedule& sched, const LayerDims& d, bool reverse,
               const at::Tensor& w_hh_t, const at::Tensor& w_hr_t,
               ForwardBuffers& buf) {
  const int64_t H = d.hidden_size, P = d.state_size;
  for (int64_t s = 0; s < sched.steps(); ++s) {
    const int64_t t = sched.step_at(s, reverse);
    const int64_t bs = sched.batch_sizes[t];
    const int64_t row = sched.offsets[t];
    if (bs == 0) continue;
    at::Tensor pre = buf.gates.narrow(0, row, bs);
    blas_mm_out(pre, buf.h_state.narrow(0, 0, bs), w_hh_t, /*accumulate=*/true);
    scalar_t* g = pre.data_ptr<scalar_t>();
    scalar_t* cells = buf.cells.data_ptr<scalar_t>() + row * H;
    scalar_t* c_state = buf.c_state.data_ptr<scalar_t>();
    if (d.has_proj) {
      cell_kernels<scalar_t>().forward(bs, H, g, g, c_state, cells,
                             buf.hidden.data_ptr<scalar_t>(), nullptr);
      at::Tensor h_rows = buf.output.narrow(0, row, bs);
      blas_mm_out(h_rows, buf.hidden.narrow(0, 0, bs), w_hr_t, /*accumulate=*/false);
      buf.h_state.narrow(0, 0, bs).copy_(h_rows);
    } else {
      cell_kernels<scalar_t>().forward(bs, H, g, g, c_state, cells,
                             buf.h_state.data_ptr<scalar_t>(),
                             buf.output.data_ptr<scalar_t>() + row * P);
    }
  }
}

// x W_ih^T of a bfloat16 layer in bfloat16 dot products (where
// bf16_recurrent_product holds): exact products, float sums. On AMX, MKL's
// bfloat16 GEMM where PyTorch carries one (cpu/mkl_bf16_gemm.h: the same sums
// in the same order, faster); else our own tiles, twice the float GEMM's rate
// (AMX tiles, where they run: many times that), which take x zero-padded to
// input_row_stride (pairs of k, or whole tile steps of 32).
class Bf16InputProjection {
 public:
  Bf16InputProjection(const at::Tensor& input, const at::Tensor& w_ih,
                      int64_t N, int64_t H, int64_t I)
      : H_(H), I_(I), mkl_(mkl_bf16_gemm_available()),
        ldx_(mkl_ ? I : row_stride(I)) {
    const at::Tensor rows = input.reshape({N, I});
    if (ldx_ == I) {
      x_ = rows.contiguous();
    } else {
      x_ = at::zeros({N, ldx_}, input.options());
      x_.narrow(1, 0, I).copy_(rows);
    }
    if (mkl_) {
      w_ih_ = w_ih.contiguous();
      return;
    }
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
    packed_ = avx512bf16::pack_input_weights(bf16_bits(w_ih.contiguous()), H, I);
#endif
  }

  // Rows [first, first + rows) into out ([rows, 4H]).
  void operator()(int64_t first, int64_t rows, float* out) const {
    const uint16_t* x = bf16_bits(x_) + first * ldx_;
    if (mkl_) {
      mkl_bf16_gemm_nt(x, ldx_, bf16_bits(w_ih_), I_, out, 4 * H_, rows,
                       4 * H_, I_);
      return;
    }
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
    avx512bf16::input_projection(packed_, x, rows, ldx_, H_, I_, out);
#else
    TORCH_CHECK(false, "fusedlstm: bfloat16 dot products are x86-64 only");
#endif
  }

 private:
  static int64_t row_stride(int64_t I) {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
    return avx512bf16::input_row_stride(I);
#else
    return I + (I & 1);
#endif
  }

  int64_t H_, I_;
  bool mkl_;
  int64_t ldx_;
  at::Tensor x_, w_ih_;
  const uint32_t* packed_ = nullptr;  // this thread's kInputWeights workspace
};

// The input product of a call of few rows, run inside the recurrence
// (input_in_steps): x [N, I] and W_ih [4H, I], contiguous, float, or
// bfloat16 for bfloat16 dot products (args.bf16_dot, set first).
void set_step_input(RecurrentForward& args, const at::Tensor& x,
                    const at::Tensor& w_ih, int64_t I) {
  if (args.bf16_dot) {
    args.x16 = bf16_bits(x);
    args.w_ih16 = bf16_bits(w_ih);
  } else {
    args.x = x.const_data_ptr<float>();
    args.w_ih = w_ih.const_data_ptr<float>();
  }
  args.input = I;
}

// x and W_ih as the input product in the steps takes them: the layer's own
// values for bfloat16 dot products, else in float.
std::pair<at::Tensor, at::Tensor> step_input_operands(const at::Tensor& input,
                                                      const at::Tensor& w_ih,
                                                      int64_t N, int64_t I,
                                                      bool bf16_dot) {
  if (bf16_dot) return {input.reshape({N, I}).contiguous(), w_ih.contiguous()};
  const Widen w(input.scalar_type());
  return {w(input).reshape({N, I}).contiguous(), w(w_ih).contiguous()};
}

// b_ih + b_hh (zeros without a bias), in the compute type. Two contiguous float32 biases are summed here, element by element as
// at::add sums them: at::add's dispatch costs more than the sum at small H.
at::Tensor summed_bias(const c10::optional<at::Tensor>& b_ih,
                       const c10::optional<at::Tensor>& b_hh, const LayerDims& d,
                       const at::TensorOptions& opts) {
  const int64_t G = 4 * d.hidden_size;
  if (!d.has_bias) return at::zeros({G}, opts);
  const at::Tensor& a = *b_ih;
  const at::Tensor& b = *b_hh;
  if (a.scalar_type() != at::kFloat || b.scalar_type() != at::kFloat ||
      !a.is_contiguous() || !b.is_contiguous() ||
      opts.dtype() != caffe2::TypeMeta::Make<float>()) {
    const Widen w(a.scalar_type());
    return at::add(w(a), w(b));
  }
  at::Tensor sum = at::empty({G}, opts);
  const float* pa = a.const_data_ptr<float>();
  const float* pb = b.const_data_ptr<float>();
  float* out = sum.data_ptr<float>();
  for (int64_t j = 0; j < G; ++j) out[j] = pa[j] + pb[j];
  return sum;
}

// The op's outputs in the input's layout: output and h_n in its dtype, c_n in
// c0's (float32 c0 with reduced input, common/layer_args.h), the
// gates and cells kept for backward in saved_activation_dtype (float: the
// compute type, no conversion; else rounded to the input's dtype).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> finish(
    const at::Tensor& input, const ForwardBuffers& buf, const LayerDims& d,
    at::ScalarType c_dtype) {
  const int64_t P = d.state_size, H = d.hidden_size;
  const at::ScalarType dtype = input.scalar_type();
  const at::ScalarType saved = saved_activation_dtype(input, d);
  auto shaped = [&](const at::Tensor& t, int64_t width, at::ScalarType as) {
    std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end() - 1);
    sizes.push_back(width);
    return converted_fresh(t, as).view(sizes);
  };
  return {shaped(buf.output, P, dtype), converted_fresh(buf.h_state, dtype),
          converted_fresh(buf.c_state, c_dtype), shaped(buf.gates, 4 * H, saved),
          shaped(buf.cells, H, saved)};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                   const c10::optional<at::Tensor>& b_hh,
                   const c10::optional<at::Tensor>& w_hr,
                   const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  const NoAutocastInside no_autocast;
  const LayerDims d = check_layer_args("fusedlstm::lstm_layer_forward", input,
                                       h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                       batch_sizes);
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const at::ScalarType dtype = input.scalar_type();
  const Widen w(dtype);
  const auto opts = input.options().dtype(w.compute);

  ForwardBuffers buf;
  buf.gates = empty_fresh({N, 4 * H}, opts);
  const bool fused = use_fused_recurrence(w.compute);
  const bool bf16_dot = bf16_recurrent_product(dtype, d.has_proj);
  // The fused cell adds the bias itself: addmm_out would first broadcast it
  // into every row of the [N, 4H] buffer, a whole extra pass over the largest
  // buffer of the forward.
  const bool input_in_step =
      fused && input_in_steps(sched.steps(), sched.batch, w_ih.numel());
  at::Tensor x, w_ih_c;  // with input_in_step
  if (input_in_step) {
    std::tie(x, w_ih_c) = step_input_operands(input, w_ih, N, I, bf16_dot);
    buf.gates.zero_();
  } else if (bf16_dot) {
    Bf16InputProjection(input, w_ih, N, H, I)(0, N, buf.gates.data_ptr<float>());
  } else if (d.has_bias && !fused) {
    buf.gates.copy_(summed_bias(b_ih, b_hh, d, opts).expand({N, 4 * H}));
    blas_mm_out(buf.gates, w(input).reshape({N, I}), w(w_ih).t(),
                /*accumulate=*/true);
  } else {
    gemm_out(buf.gates, w(input).reshape({N, I}), w(w_ih).t());
  }
  // bfloat16 dot products write the output rounded, in the layer's dtype.
  buf.output = empty_fresh({N, P}, bf16_dot ? input.options() : opts);
  buf.cells = empty_fresh({N, H}, opts);
  buf.h_state = w.owned(h0);
  buf.c_state = w.owned(c0);
  if (fused) {
    const at::Tensor bias = summed_bias(b_ih, b_hh, d, opts);
    // bfloat16 dot products pack W_hh from its own bfloat16 values.
    const at::Tensor w_hh_c = bf16_dot ? w_hh.contiguous() : w(w_hh).contiguous();
    const at::Tensor w_hr_c = d.has_proj ? w(*w_hr).contiguous() : at::Tensor();
    RecurrentForward args{&sched, reverse, H, P,
                          bf16_dot ? nullptr : w_hh_c.const_data_ptr<float>(),
                          d.has_proj ? w_hr_c.const_data_ptr<float>() : nullptr,
                          bias.const_data_ptr<float>(),
                          buf.gates.data_ptr<float>(),
                          buf.cells.data_ptr<float>(),
                          bf16_dot ? nullptr : buf.output.data_ptr<float>(),
                          buf.h_state.data_ptr<float>(),
                          buf.c_state.data_ptr<float>()};
    args.bf16_dot = bf16_dot;
    if (bf16_dot) {
      args.w_hh16 = bf16_bits(w_hh_c);
      args.output16 = mutable_bf16_bits(buf.output);
    }
    if (input_in_step) set_step_input(args, x, w_ih_c, I);
    recurrent_forward_fused(args);
    return finish(input, buf, d, c0.scalar_type());
  }
  // The BLAS loop from here on.
  // W_hh^T (and W_hr^T) as transposed views, which BLAS takes as they are,
  // except for long runs of small batches. On Zen 5 with MKL a row-major
  // copy made the per-step product 1.1-1.7x faster at batch 1 and no faster
  // from batch 8, while the copy itself (a strided transpose) cost as much
  // as 5-18 products at batch 1 (H = 256-1024; 2.9 ms float32, 17 ms
  // float64 at H = 1024): it pays from about 64 steps, at batches below 8.
  const bool materialise = sched.batch < 8 && sched.steps() >= 64;
  auto transposed = [&](const at::Tensor& weight) {
    return materialise ? w(weight).t().contiguous() : w(weight).t();
  };
  at::Tensor w_hr_t;
  if (d.has_proj) {
    buf.hidden = at::empty({h0.size(0), H}, opts);
    w_hr_t = transposed(*w_hr);
  }
  const at::Tensor w_hh_t = transposed(w_hh);

  AT_DISPATCH_FLOATING_TYPES(w.compute, "lstm_layer_forward_cpu", [&] {
    run_steps<scalar_t>(sched, d, reverse, w_hh_t, w_hr_t, buf);
  });
  return finish(input, buf, d, c0.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_layer_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  const NoAutocastInside no_autocast;
  const Widen w(input.scalar_type());
  if (!use_fused_recurrence(w.compute)) {
    // The BLAS loop keeps its activations in the gates buffer as it goes;
    // the same numbers, without the memory saving.
    auto [output, h_n, c_n, gates, cells] = lstm_layer_forward(
        input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
    return {output, h_n, c_n};
  }
  const LayerDims d = check_layer_args("fusedlstm::lstm_layer_inference",
                                       input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                       w_hr, batch_sizes);
  const StepSchedule sched = make_schedule(input, h0.size(0), batch_sizes);
  const int64_t N = sched.rows, B = sched.batch;
  const int64_t H = d.hidden_size, P = d.state_size, I = d.input_size;
  const auto opts = input.options().dtype(w.compute);

  const bool bf16_dot = bf16_recurrent_product(input.scalar_type(), d.has_proj);
  const bool input_in_step = input_in_steps(sched.steps(), B, w_ih.numel());
  // Steps per chunk: ~2048 rows, and a gates buffer of at most 16 MiB (4 MiB
  // with bfloat16 dot products). The float32 GEMM re-packs W_ih on every
  // call, and below ~2048 rows that cost shows: 2 threads, I = 512, 4H =
  // 2048, 6400 rows in chunks of 1024 took 98 ms against 83 ms in chunks of
  // 2048 and 81 ms in one call. Our bfloat16 projection packs W_ih once per
  // call, and a smaller buffer, which the next steps read back from the
  // caches, saves 1-3 % (NOTES change 28). Reused from chunk to chunk, the
  // buffer costs fresh pages once per call, not once per row.
  // MKL's bfloat16 projection (on AMX) runs calls of fewer rows at a lower
  // rate, so there a chunk has at least kMklProjectionMinRows.
  const int64_t row_bytes = 4 * H * static_cast<int64_t>(sizeof(float));
  const int64_t buffer_bytes = (bf16_dot ? int64_t{4} : int64_t{16}) << 20;
  const int64_t min_rows =
      bf16_dot && mkl_bf16_gemm_available() ? kMklProjectionMinRows : 256;
  const int64_t rows_target = std::max<int64_t>(
      min_rows, std::min<int64_t>(2048, buffer_bytes / row_bytes));
  const int64_t chunk_steps =
      std::max<int64_t>(1, rows_target / std::max<int64_t>(B, 1));
  // No step has more than B rows.
  const int64_t chunk_rows = std::min(N, chunk_steps * B);

  // Kept by this thread between calls (cpu/workspace.h): fresh, it faulted
  // in again on many calls.
  at::Tensor gates = at::from_blob(
      workspace_bytes(WorkspaceRole::kInferenceGates,
                      static_cast<std::size_t>(chunk_rows * row_bytes)),
      {chunk_rows, 4 * H}, opts);
  std::function<void(int64_t, int64_t)> project;
  std::optional<Bf16InputProjection> bf16_projection;
  at::Tensor x, w_ih_t;
  if (input_in_step) {
    std::tie(x, w_ih_t) = step_input_operands(input, w_ih, N, I, bf16_dot);
    gates.zero_();
  } else if (bf16_dot) {
    bf16_projection.emplace(input, w_ih, N, H, I);
    project = [&](int64_t first_row, int64_t rows) {
      (*bf16_projection)(first_row, rows, gates.data_ptr<float>());
    };
  } else {
    x = w(input).reshape({N, I});
    w_ih_t = w(w_ih).t();
    project = [&](int64_t first_row, int64_t rows) {
      // A call in one chunk (every short one) takes the tensors as they
      // are: two narrows cost a tenth of a one-step call at H = 64.
      if (rows == N) {
        gemm_out(gates, x, w_ih_t);
        return;
      }
      at::Tensor out = gates.narrow(0, 0, rows);
      gemm_out(out, x.narrow(0, first_row, rows), w_ih_t);
    };
  }
  const at::Tensor bias = summed_bias(b_ih, b_hh, d, opts);
  const at::Tensor w_hh_c = bf16_dot ? w_hh.contiguous() : w(w_hh).contiguous();
  const at::Tensor w_hr_c = d.has_proj ? w(*w_hr).contiguous() : at::Tensor();
  // bfloat16 dot products write the output rounded, in the layer's dtype.
  at::Tensor output = empty_fresh({N, P}, bf16_dot ? input.options() : opts);
  at::Tensor h_state = w.owned(h0);
  at::Tensor c_state = w.owned(c0);
  RecurrentForward args{&sched, reverse, H, P,
                        bf16_dot ? nullptr : w_hh_c.const_data_ptr<float>(),
                        d.has_proj ? w_hr_c.const_data_ptr<float>() : nullptr,
                        bias.const_data_ptr<float>(),
                        gates.data_ptr<float>(), /*cells=*/nullptr,
                        bf16_dot ? nullptr : output.data_ptr<float>(),
                        h_state.data_ptr<float>(), c_state.data_ptr<float>()};
  args.bf16_dot = bf16_dot;
  if (bf16_dot) {
    args.w_hh16 = bf16_bits(w_hh_c);
    args.output16 = mutable_bf16_bits(output);
  }
  if (input_in_step) {
    set_step_input(args, x, w_ih_t, I);
  } else {
    args.project = &project;
    args.chunk_steps = chunk_steps;
  }
  recurrent_forward_fused(args);

  const at::ScalarType dtype = input.scalar_type();
  std::vector<int64_t> sizes(input.sizes().begin(), input.sizes().end() - 1);
  sizes.push_back(P);
  return {converted_fresh(output, dtype).view(sizes),
          converted_fresh(h_state, dtype),
          converted_fresh(c_state, c0.scalar_type())};
}

}  // namespace fusedlstm::cpu
