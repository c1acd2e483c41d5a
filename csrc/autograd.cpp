// The Autograd kernels of fusedlstm::lstm_layer_forward and
// fusedlstm::lstm_layer_inference (the bidirectional operators' are in
// autograd_bidirectional.cpp).
//
// Here in C++ rather than through torch.library.register_autograd in
// fusedlstm/ops.py: that Python kernel took about 15 us of every no-grad
// call and, as an autograd.Function, about 27 us of every training step,
// most of a small LSTMCell step (benchmarks/NOTES.md, changes 24 and 26).
// lstm_layer_backward keeps its autograd in ops.py: the second order is a
// composite of PyTorch ops, for which Python costs nothing that matters.
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

#include "autograd_helpers.h"
#include "fusedlstm/lstm.h"

namespace {

using namespace fusedlstm::autograd_helpers;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ------------------------------------------------------------ training forward

using ForwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

fusedlstm::LayerForwardResult forward_backend(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const Optional& b_ih,
    const Optional& b_hh, const Optional& w_hr, const Optional& batch_sizes,
    bool reverse) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return fusedlstm::lstm_layer_forward(input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                       w_hr, batch_sizes, reverse);
}

}  // namespace

// The autograd Functions live in a named namespace: their nodes are named
// after them (grad_fn, anomaly-mode messages), and an anonymous namespace
// read "CppNode<(anonymous namespace)::Layer>", which says nothing of where
// the node came from.
namespace fusedlstm::nodes {

// The layer's first-order formulas: backward is lstm_layer_backward on what
// forward saved (its inputs, and its output, gates and cells).
struct LstmLayer : public torch::autograd::Function<LstmLayer> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& h0, const at::Tensor& c0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const Optional& b_ih, const Optional& b_hh,
                               const Optional& w_hr, const Optional& batch_sizes,
                               bool reverse) {
    const auto r = forward_backend(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                   batch_sizes, reverse);
    ctx->save_for_backward({input, h0, c0, w_ih, w_hh, or_undefined(b_ih),
                            or_undefined(b_hh), or_undefined(w_hr), r.output,
                            r.gates, r.cells, or_undefined(batch_sizes)});
    ctx->saved_data["reverse"] = reverse;
    ctx->mark_non_differentiable({r.gates, r.cells});
    // Autograd would otherwise fill zero gradients for gates and cells
    // ([N, 4H] and [N, H], never read): a tenth of a batch-64 backward.
    ctx->set_materialize_grads(false);
    return {r.output, r.h_n, r.c_n, r.gates, r.cells};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor &input = s[0], &h0 = s[1], &c0 = s[2], &w_ih = s[3],
                     &w_hh = s[4], &b_ih = s[5], &b_hh = s[6], &w_hr = s[7],
                     &output = s[8], &gates = s[9], &cells = s[10];
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const at::Tensor grad_output = or_zeros(grads[0], output);
    const at::Tensor grad_h_n = or_zeros(grads[1], h0);
    const at::Tensor grad_c_n = or_zeros(grads[2], c0);
    size_t edge = 1;
    const fusedlstm::BackwardMask want = wanted_gradients(
        ctx, ctx->needs_input_grad(0), edge, b_ih.defined(), w_hr.defined());
    auto run = [&] {
      return fusedlstm::lstm_layer_backward(
          grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
          present(b_ih), present(b_hh), present(w_hr), output, gates, cells,
          present(s[11]), reverse, want);
    };
    fusedlstm::LayerBackwardResult g;
    if (at::GradMode::is_enabled()) {
      // create_graph: through the operator's autograd (fusedlstm/ops.py),
      // which differentiates it again.
      g = run();
    } else {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      g = run();
    }
    variable_list out{want[fusedlstm::gradient::input] ? g.grad_input : at::Tensor()};
    append_direction_gradients(out, g, want, b_ih.defined(), w_hr.defined());
    out.push_back(at::Tensor());  // batch_sizes
    out.push_back(at::Tensor());  // reverse
    return out;
  }
};

}  // namespace fusedlstm::nodes

namespace {

ForwardOutputs forward_autograd(const at::Tensor& input, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& w_ih,
                                const at::Tensor& w_hh, const Optional& b_ih,
                                const Optional& b_hh, const Optional& w_hr,
                                const Optional& batch_sizes, bool reverse) {
  if (!differentiable(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)) {
    const auto r = forward_backend(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                   batch_sizes, reverse);
    return {r.output, r.h_n, r.c_n, r.gates, r.cells};
  }
  const auto o = fusedlstm::nodes::LstmLayer::apply(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  return {o[0], o[1], o[2], o[3], o[4]};
}

// ----------------------------------------------------------- inference forward
//
// The inference operator keeps no activations, so it has no backward. Calls
// that need no gradient (the only ones fusedlstm.ops.lstm_layer makes) go
// straight on to the backend; a call whose result could be differentiated
// gets a node that raises when backward reaches it, so a gradient never comes
// out silently as None.

using InferenceOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

InferenceOutputs inference_backend(const at::Tensor& input, const at::Tensor& h0,
                                   const at::Tensor& c0, const at::Tensor& w_ih,
                                   const at::Tensor& w_hh, const Optional& b_ih,
                                   const Optional& b_hh, const Optional& w_hr,
                                   const Optional& batch_sizes, bool reverse) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  auto [output, h_n, c_n] = fusedlstm::lstm_layer_inference(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  return {output, h_n, c_n};
}

}  // namespace

namespace fusedlstm::nodes {

struct LstmLayerInference : public torch::autograd::Function<LstmLayerInference> {
  static variable_list forward(AutogradContext* /*ctx*/, const at::Tensor& input,
                               const at::Tensor& h0, const at::Tensor& c0,
                               const at::Tensor& w_ih, const at::Tensor& w_hh,
                               const Optional& b_ih, const Optional& b_hh,
                               const Optional& w_hr, const Optional& batch_sizes,
                               bool reverse) {
    auto [output, h_n, c_n] = inference_backend(input, h0, c0, w_ih, w_hh, b_ih,
                                                b_hh, w_hr, batch_sizes, reverse);
    return {output, h_n, c_n};
  }

  static variable_list backward(AutogradContext* /*ctx*/, variable_list /*grads*/) {
    TORCH_CHECK(false,
                "fusedlstm::lstm_layer_inference keeps no activations for "
                "backward; fusedlstm.ops.lstm_layer runs lstm_layer_forward "
                "instead whenever a gradient is needed, so call that (or the "
                "modules) to differentiate");
  }
};

}  // namespace fusedlstm::nodes

namespace {

InferenceOutputs inference_autograd(const at::Tensor& input, const at::Tensor& h0,
                                    const at::Tensor& c0, const at::Tensor& w_ih,
                                    const at::Tensor& w_hh, const Optional& b_ih,
                                    const Optional& b_hh, const Optional& w_hr,
                                    const Optional& batch_sizes, bool reverse) {
  if (!differentiable(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)) {
    return inference_backend(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                             batch_sizes, reverse);
  }
  auto outputs = fusedlstm::nodes::LstmLayerInference::apply(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  return {outputs[0], outputs[1], outputs[2]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedlstm, Autograd, m) {
  m.impl("lstm_layer_forward", &forward_autograd);
  m.impl("lstm_layer_inference", &inference_autograd);
}
