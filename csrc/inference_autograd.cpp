// The Autograd kernel of fusedlstm::lstm_layer_inference.
//
// The inference operator keeps no activations, so it has no backward. Calls
// that need no gradient (the only ones fusedlstm.ops.lstm_layer makes) go
// straight on to the backend; a call whose result could be differentiated
// gets a node that raises when backward reaches it, so a gradient never comes
// out silently as None. Here in C++ rather than through
// torch.library.register_autograd in fusedlstm/ops.py: that Python kernel
// took about 15 us of every call, most of a small LSTMCell step
// (benchmarks/NOTES.md, change 24).
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "fusedlstm/lstm.h"

namespace {

using Optional = c10::optional<at::Tensor>;
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// The backend kernel, through lstm.h's entry point with autograd excluded.
Outputs call_backend(const at::Tensor& input, const at::Tensor& h0,
                     const at::Tensor& c0, const at::Tensor& w_ih,
                     const at::Tensor& w_hh, const Optional& b_ih,
                     const Optional& b_hh, const Optional& w_hr,
                     const Optional& batch_sizes, bool reverse) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [output, h_n, c_n] = fusedlstm::lstm_layer_inference(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  return {output, h_n, c_n};
}

struct NoBackward : public torch::autograd::Function<NoBackward> {
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* /*ctx*/, const at::Tensor& input,
      const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
      const at::Tensor& w_hh, const Optional& b_ih, const Optional& b_hh,
      const Optional& w_hr, const Optional& batch_sizes, bool reverse) {
    auto [output, h_n, c_n] = call_backend(input, h0, c0, w_ih, w_hh, b_ih,
                                           b_hh, w_hr, batch_sizes, reverse);
    return {output, h_n, c_n};
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* /*ctx*/,
      torch::autograd::variable_list /*grads*/) {
    TORCH_CHECK(false,
                "fusedlstm::lstm_layer_inference keeps no activations for "
                "backward; fusedlstm.ops.lstm_layer runs lstm_layer_forward "
                "instead whenever a gradient is needed, so call that (or the "
                "modules) to differentiate");
  }
};

bool requires_grad(const Optional& t) {
  return t.has_value() && t->defined() && t->requires_grad();
}

Outputs inference_autograd(const at::Tensor& input, const at::Tensor& h0,
                           const at::Tensor& c0, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const Optional& b_ih,
                           const Optional& b_hh, const Optional& w_hr,
                           const Optional& batch_sizes, bool reverse) {
  const bool differentiable =
      at::GradMode::is_enabled() &&
      (input.requires_grad() || h0.requires_grad() || c0.requires_grad() ||
       w_ih.requires_grad() || w_hh.requires_grad() || requires_grad(b_ih) ||
       requires_grad(b_hh) || requires_grad(w_hr));
  if (!differentiable) {
    return call_backend(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                        batch_sizes, reverse);
  }
  auto outputs = NoBackward::apply(input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                   w_hr, batch_sizes, reverse);
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedlstm, Autograd, m) {
  m.impl("lstm_layer_inference", &inference_autograd);
}
