#include "common/layer_args.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>

namespace fusedlstm {

namespace {

void check_same_kind(const char* op, const char* name, const at::Tensor& t,
                     const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name,
              " has dtype ", t.scalar_type(), " but input has ",
              like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ",
              t.device(), " but input is on ", like.device());
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, op, ": expected ", name, " of shape ",
              expected, ", got ", t.sizes());
}

}  // namespace

bool float32_c0_allowed(const at::Tensor& input, const at::Tensor& c0) {
  const at::ScalarType dtype = input.scalar_type();
  return (dtype == at::kBFloat16 || dtype == at::kHalf) &&
         c0.scalar_type() == at::kFloat && input.device().is_cpu();
}

LayerDims check_layer_args(const char* op, const at::Tensor& input,
                           const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const c10::optional<at::Tensor>& b_ih,
                           const c10::optional<at::Tensor>& b_hh,
                           const c10::optional<at::Tensor>& w_hr,
                           const c10::optional<at::Tensor>& batch_sizes) {
  TORCH_CHECK(at::isFloatingType(input.scalar_type()), op,
              ": input must be a floating-point tensor, got ",
              input.scalar_type());
  const bool packed = batch_sizes.has_value() && batch_sizes->defined();
  TORCH_CHECK(input.dim() == (packed ? 2 : 3), op, ": expected a ",
              packed ? "packed 2-D [N, I]" : "3-D [T, B, I]",
              " input, got ", input.dim(), "-D");
  // nn.LSTM's own message: modules skip their copy of this check while
  // torch.jit.trace records them, so a traced module still rejects T = 0.
  TORCH_CHECK(packed || input.size(0) > 0,
              "Expected sequence length to be larger than 0 in RNN");
  TORCH_CHECK(w_ih.dim() == 2 && w_hh.dim() == 2, op,
              ": w_ih and w_hh must be 2-D");
  TORCH_CHECK(w_ih.size(0) % 4 == 0 && w_ih.size(0) > 0, op,
              ": w_ih must have 4*hidden_size rows, got ", w_ih.size(0));

  LayerDims d;
  d.hidden_size = w_ih.size(0) / 4;
  d.input_size = input.size(-1);
  d.has_proj = w_hr.has_value() && w_hr->defined();
  d.state_size = d.has_proj ? w_hr->size(0) : d.hidden_size;
  const bool has_b_ih = b_ih.has_value() && b_ih->defined();
  const bool has_b_hh = b_hh.has_value() && b_hh->defined();
  TORCH_CHECK(has_b_ih == has_b_hh, op,
              ": b_ih and b_hh must be given together or not at all");
  d.has_bias = has_b_ih;
  d.packed = packed;
  d.float32_c0 = float32_c0_allowed(input, c0);

  const int64_t H = d.hidden_size, P = d.state_size;
  const int64_t batch = packed ? h0.size(-2) : input.size(1);
  check_shape(op, "w_ih", w_ih, {4 * H, d.input_size});
  check_shape(op, "w_hh", w_hh, {4 * H, P});
  check_shape(op, "h0", h0, {batch, P});
  check_shape(op, "c0", c0, {batch, H});
  check_same_kind(op, "w_ih", w_ih, input);
  check_same_kind(op, "w_hh", w_hh, input);
  check_same_kind(op, "h0", h0, input);
  if (d.float32_c0) {
    TORCH_CHECK(c0.device() == input.device(), op, ": c0 is on ", c0.device(),
                " but input is on ", input.device());
  } else {
    check_same_kind(op, "c0", c0, input);
  }
  if (d.has_bias) {
    check_shape(op, "b_ih", *b_ih, {4 * H});
    check_shape(op, "b_hh", *b_hh, {4 * H});
    check_same_kind(op, "b_ih", *b_ih, input);
    check_same_kind(op, "b_hh", *b_hh, input);
  }
  if (d.has_proj) {
    TORCH_CHECK(w_hr->dim() == 2 && P > 0 && P < H, op,
                ": w_hr must be [proj_size, hidden_size] with 0 < proj_size < "
                "hidden_size, got ", w_hr->sizes());
    check_shape(op, "w_hr", *w_hr, {P, H});
    check_same_kind(op, "w_hr", *w_hr, input);
  }
  return d;
}

bool onednn_bf16_supported() {
  static const bool supported = [] {
    const auto handle = c10::Dispatcher::singleton().findSchema(
        {"mkldnn::_is_mkldnn_bf16_supported", ""});
    return handle.has_value() && handle->typed<bool()>().call();
  }();
  return supported;
}

at::ScalarType saved_activation_dtype(const at::Tensor& input,
                                      const LayerDims& d) {
  const at::ScalarType dtype = input.scalar_type();
  const bool float_like_onednn =
      dtype == at::kBFloat16 && input.device().is_cpu() &&
      ((!d.packed && !d.has_proj && onednn_bf16_supported()) || d.float32_c0);
  return float_like_onednn ? at::kFloat : dtype;
}

void check_saved_activations(const char* op, const at::Tensor& input,
                             const LayerDims& d, const at::Tensor& output,
                             const at::Tensor& gates, const at::Tensor& cells,
                             at::ScalarType saved) {
  auto check = [&](const char* name, const at::Tensor& t, int64_t width,
                   at::ScalarType dtype) {
    std::vector<int64_t> expected(input.sizes().begin(), input.sizes().end() - 1);
    expected.push_back(width);
    check_shape(op, name, t, expected);
    TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " has dtype ",
                t.scalar_type(), " but forward returns it as ", dtype,
                " for ", input.scalar_type(), " input on ", input.device(),
                "; pass the tensors that lstm_layer_forward returned");
    TORCH_CHECK(t.device() == input.device(), op, ": ", name, " is on ",
                t.device(), " but input is on ", input.device());
  };
  check("output", output, d.state_size, input.scalar_type());
  check("gates", gates, 4 * d.hidden_size, saved);
  check("cells", cells, d.hidden_size, saved);
}

void check_incoming_gradients(const char* op, const at::Tensor& input,
                              const at::Tensor& h0, const at::Tensor& c0,
                              const at::Tensor& output,
                              const at::Tensor& grad_output,
                              const at::Tensor& grad_h_n,
                              const at::Tensor& grad_c_n) {
  auto check = [&](const char* name, const at::Tensor& grad, const char* result,
                   const at::Tensor& like) {
    if (!grad.defined()) return;
    check_shape(op, name, grad, like.sizes());
    TORCH_CHECK(grad.scalar_type() == like.scalar_type(), op, ": ", name,
                " has dtype ", grad.scalar_type(), " but ", result, " has ",
                like.scalar_type());
    TORCH_CHECK(grad.device() == input.device(), op, ": ", name, " is on ",
                grad.device(), " but input is on ", input.device());
  };
  check("grad_output", grad_output, "output", output);
  check("grad_h_n", grad_h_n, "h_n", h0);
  check("grad_c_n", grad_c_n, "c_n", c0);
}

StepSchedule make_schedule(const at::Tensor& input, int64_t batch,
                           const c10::optional<at::Tensor>& batch_sizes) {
  StepSchedule s;
  s.batch = batch;
  if (batch_sizes.has_value() && batch_sizes->defined()) {
    const at::Tensor& bs = *batch_sizes;
    TORCH_CHECK(bs.dim() == 1 && bs.scalar_type() == at::kLong &&
                    bs.device().is_cpu(),
                "fusedlstm: batch_sizes must be a 1-D int64 CPU tensor");
    const at::Tensor contiguous = bs.contiguous();
    const int64_t* p = contiguous.const_data_ptr<int64_t>();
    int64_t row = 0;
    for (int64_t t = 0; t < bs.numel(); ++t) {
      TORCH_CHECK(p[t] >= 1 && p[t] <= batch &&
                      (t == 0 || p[t] <= p[t - 1]),
                  "fusedlstm: batch_sizes must be non-increasing with entries "
                  "in [1, ", batch, "], got ", p[t], " at step ", t);
      s.batch_sizes.push_back(p[t]);
      s.offsets.push_back(row);
      row += p[t];
    }
    TORCH_CHECK(row == input.size(0), "fusedlstm: batch_sizes sum to ", row,
                " but the packed input has ", input.size(0), " rows");
    s.rows = row;
  } else {
    const int64_t T = input.size(0);
    s.batch_sizes.assign(T, batch);
    for (int64_t t = 0; t < T; ++t) s.offsets.push_back(t * batch);
    s.rows = T * batch;
  }
  return s;
}

}  // namespace fusedlstm
