// What the Autograd kernels of the layer operators share (autograd.cpp,
// autograd_bidirectional.cpp): optional arguments, whether a call can be
// differentiated, and each direction's gradients in and out of a node.
#pragma once

#include <torch/autograd.h>

#include <cstddef>

#include "fusedlstm/lstm.h"

namespace fusedlstm::autograd_helpers {

using Optional = c10::optional<at::Tensor>;

inline at::Tensor or_undefined(const Optional& t) {
  return t.has_value() ? *t : at::Tensor();
}
inline Optional present(const at::Tensor& t) {
  return t.defined() ? Optional(t) : Optional();
}

inline bool requires_grad(const Optional& t) {
  return t.has_value() && t->defined() && t->requires_grad();
}

// Whether one of a direction's tensors requires grad (grad mode is the
// caller's to check).
inline bool direction_requires_grad(const at::Tensor& h0, const at::Tensor& c0,
                                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                                    const Optional& b_ih, const Optional& b_hh,
                                    const Optional& w_hr) {
  return h0.requires_grad() || c0.requires_grad() || w_ih.requires_grad() ||
         w_hh.requires_grad() || requires_grad(b_ih) || requires_grad(b_hh) ||
         requires_grad(w_hr);
}

// Whether a one-direction call's results can be differentiated: otherwise
// the Autograd kernels go straight on to the backend.
inline bool differentiable(const at::Tensor& input, const at::Tensor& h0,
                           const at::Tensor& c0, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const Optional& b_ih,
                           const Optional& b_hh, const Optional& w_hr) {
  return at::GradMode::is_enabled() &&
         (input.requires_grad() ||
          direction_requires_grad(h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr));
}

// An output that received no gradient contributes zero.
inline at::Tensor or_zeros(const at::Tensor& grad, const at::Tensor& like) {
  return grad.defined() ? grad : at::zeros_like(like);
}

// The gradients autograd asks of a node for one direction's tensors, whose
// edges start at `first_edge`: h0, c0, w_ih, w_hh, then b_ih and b_hh, then
// w_hr, where present (an absent optional has no edge). `input_wanted` is
// the layer input's. Returns the mask and moves `first_edge` past them.
inline BackwardMask wanted_gradients(torch::autograd::AutogradContext* ctx,
                                     bool input_wanted, size_t& first_edge,
                                     bool has_bias, bool has_proj) {
  BackwardMask want{};
  size_t edge = first_edge;
  want[gradient::input] = input_wanted;
  want[gradient::h0] = ctx->needs_input_grad(edge++);
  want[gradient::c0] = ctx->needs_input_grad(edge++);
  want[gradient::w_ih] = ctx->needs_input_grad(edge++);
  want[gradient::w_hh] = ctx->needs_input_grad(edge++);
  if (has_bias) {
    want[gradient::bias] = ctx->needs_input_grad(edge) || ctx->needs_input_grad(edge + 1);
    edge += 2;
  }
  if (has_proj) want[gradient::w_hr] = ctx->needs_input_grad(edge++);
  first_edge = edge;
  return want;
}

// Appends a direction's gradients for h0, c0, w_ih, w_hh, b_ih, b_hh and
// w_hr, in a node's output order; a gradient left out comes back empty from
// the kernels, and autograd takes undefined for it.
inline void append_direction_gradients(torch::autograd::variable_list& out,
                                       const LayerBackwardResult& g,
                                       const BackwardMask& want, bool has_bias,
                                       bool has_proj) {
  auto kept = [&](const at::Tensor& grad, int which) {
    return want[which] ? grad : at::Tensor();
  };
  out.push_back(kept(g.grad_h0, gradient::h0));
  out.push_back(kept(g.grad_c0, gradient::c0));
  out.push_back(kept(g.grad_w_ih, gradient::w_ih));
  out.push_back(kept(g.grad_w_hh, gradient::w_hh));
  const bool bias = has_bias && want[gradient::bias];
  out.push_back(bias ? g.grad_bias : at::Tensor());
  // b_ih and b_hh get equal gradients; each its own tensor, so that an
  // in-place update of one .grad never reaches the other.
  out.push_back(bias ? g.grad_bias.clone() : at::Tensor());
  out.push_back(has_proj ? kept(g.grad_w_hr, gradient::w_hr) : at::Tensor());
}

}  // namespace fusedlstm::autograd_helpers
