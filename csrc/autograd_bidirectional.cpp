// The Autograd kernels of the bidirectional operators.
//
// lstm_bidirectional_forward's node keeps what both directions' forwards
// return and, in backward, runs lstm_bidirectional_backward: one node, so
// that the two directions' backward passes can run at once as their forward
// passes did (the autograd engine runs the nodes of one CPU graph one after
// another, on one thread). Its gradients are those of two lstm_layer_forward
// nodes, bit for bit where the kernels run on the same threads: the layer
// input's gradient is the sum of the two directions', as autograd would add
// them (one rounding, in either order the same).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/library.h>

#include <cstddef>

#include "autograd_helpers.h"
#include "fusedlstm/lstm.h"

namespace {

using namespace fusedlstm::autograd_helpers;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A direction's arguments as saved, from index `at`: h0, c0, w_ih, w_hh,
// b_ih, b_hh, w_hr (undefined where absent).
fusedlstm::DirectionArgs saved_direction(const variable_list& s, size_t at) {
  return {s[at],           s[at + 1],           s[at + 2],          s[at + 3],
          present(s[at + 4]), present(s[at + 5]), present(s[at + 6])};
}

void save_direction(variable_list& list, const fusedlstm::DirectionArgs& a) {
  list.insert(list.end(), {a.h0, a.c0, a.w_ih, a.w_hh, or_undefined(a.b_ih),
                           or_undefined(a.b_hh), or_undefined(a.w_hr)});
}

}  // namespace

namespace fusedlstm::nodes {

// Saved: input; the forward direction's arguments (7), output, gates and
// cells; the same of the reverse direction; batch_sizes.
struct LstmBidirectionalLayer
    : public torch::autograd::Function<LstmBidirectionalLayer> {
  static constexpr size_t kForward = 1, kReverse = 11, kBatchSizes = 21;

  static variable_list forward(
      AutogradContext* ctx, const at::Tensor& input, const at::Tensor& h0,
      const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
      const Optional& b_ih, const Optional& b_hh, const Optional& w_hr,
      const at::Tensor& h0_reverse, const at::Tensor& c0_reverse,
      const at::Tensor& w_ih_reverse, const at::Tensor& w_hh_reverse,
      const Optional& b_ih_reverse, const Optional& b_hh_reverse,
      const Optional& w_hr_reverse, const Optional& batch_sizes) {
    const DirectionArgs f{h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr};
    const DirectionArgs r{h0_reverse,   c0_reverse,   w_ih_reverse, w_hh_reverse,
                          b_ih_reverse, b_hh_reverse, w_hr_reverse};
    BidirectionalForwardResult res;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      res = lstm_bidirectional_forward(input, f, r, batch_sizes);
    }
    const LayerForwardResult &rf = res.forward, &rr = res.reverse;
    variable_list saved{input};
    save_direction(saved, f);
    saved.insert(saved.end(), {rf.output, rf.gates, rf.cells});
    save_direction(saved, r);
    saved.insert(saved.end(), {rr.output, rr.gates, rr.cells});
    saved.push_back(or_undefined(batch_sizes));
    ctx->save_for_backward(saved);
    ctx->mark_non_differentiable({rf.gates, rf.cells, rr.gates, rr.cells});
    // As in LstmLayer (autograd.cpp): no zero gradients made for the gates
    // and cells, nor for results nobody used.
    ctx->set_materialize_grads(false);
    return {rf.output, rf.h_n, rf.c_n, rf.gates, rf.cells,
            rr.output, rr.h_n, rr.c_n, rr.gates, rr.cells};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    const at::Tensor& input = s[0];
    const Optional batch_sizes = present(s[kBatchSizes]);
    const bool input_wanted = ctx->needs_input_grad(0);
    size_t edge = 1;
    auto direction = [&](size_t at, size_t first_grad) {
      DirectionBackwardArgs d;
      d.args = saved_direction(s, at);
      d.output = s[at + 7];
      d.gates = s[at + 8];
      d.cells = s[at + 9];
      d.grad_output = or_zeros(grads[first_grad], d.output);
      d.grad_h_n = or_zeros(grads[first_grad + 1], d.args.h0);
      d.grad_c_n = or_zeros(grads[first_grad + 2], d.args.c0);
      d.output_mask = wanted_gradients(ctx, input_wanted, edge,
                                       d.args.b_ih.has_value(),
                                       d.args.w_hr.has_value());
      return d;
    };
    const DirectionBackwardArgs f = direction(kForward, 0);
    const DirectionBackwardArgs r = direction(kReverse, 5);
    BidirectionalBackwardResult g;
    if (at::GradMode::is_enabled()) {
      // create_graph: each direction through lstm_layer_backward's autograd
      // (fusedlstm/ops.py), which differentiates it again.
      auto one = [&](const DirectionBackwardArgs& d, bool reverse) {
        const DirectionArgs& a = d.args;
        return lstm_layer_backward(d.grad_output, d.grad_h_n, d.grad_c_n, input,
                                   a.h0, a.c0, a.w_ih, a.w_hh, a.b_ih, a.b_hh,
                                   a.w_hr, d.output, d.gates, d.cells,
                                   batch_sizes, reverse, d.output_mask);
      };
      g = {one(f, false), one(r, true)};
    } else {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      g = lstm_bidirectional_backward(input, f, r, batch_sizes);
    }
    variable_list out{input_wanted ? g.forward.grad_input + g.reverse.grad_input
                                   : at::Tensor()};
    append_direction_gradients(out, g.forward, f.output_mask,
                               f.args.b_ih.has_value(), f.args.w_hr.has_value());
    append_direction_gradients(out, g.reverse, r.output_mask,
                               r.args.b_ih.has_value(), r.args.w_hr.has_value());
    out.push_back(at::Tensor());  // batch_sizes
    return out;
  }
};

}  // namespace fusedlstm::nodes

namespace {

fusedlstm::BidirectionalForwardOutputs forward_autograd(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const Optional& b_ih,
    const Optional& b_hh, const Optional& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const Optional& b_ih_reverse,
    const Optional& b_hh_reverse, const Optional& w_hr_reverse,
    const Optional& batch_sizes) {
  // Differentiable when either direction's one-direction call would be.
  if (!differentiable(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) &&
      !differentiable(input, h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse,
                      b_ih_reverse, b_hh_reverse, w_hr_reverse)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    const auto res = fusedlstm::lstm_bidirectional_forward(
        input, {h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr},
        {h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse, b_ih_reverse,
         b_hh_reverse, w_hr_reverse},
        batch_sizes);
    const auto &f = res.forward, &r = res.reverse;
    return {f.output, f.h_n, f.c_n, f.gates, f.cells,
            r.output, r.h_n, r.c_n, r.gates, r.cells};
  }
  const auto o = fusedlstm::nodes::LstmBidirectionalLayer::apply(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, h0_reverse, c0_reverse,
      w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
      batch_sizes);
  return {o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7], o[8], o[9]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedlstm, Autograd, m) {
  m.impl("lstm_bidirectional_forward", &forward_autograd);
  // The other two keep nothing for backward (the inference operator) or are
  // reached only with grad mode off (the backward one, from the node above;
  // with create_graph the node runs the differentiable lstm_layer_backward
  // of each direction instead): PyTorch's fallback raises if backward
  // reaches one of their results, so no gradient comes out silently as None.
  m.impl("lstm_bidirectional_inference",
         torch::autograd::autogradNotImplementedFallback());
  m.impl("lstm_bidirectional_backward",
         torch::autograd::autogradNotImplementedFallback());
}
