// The bidirectional operators' kernels for every backend without one of its
// own (CUDA among them): the two directions in turn, each through its
// one-direction operator, so each gives exactly the bits of that operator.
// (On CUDA, fusedlstm.functional overlaps the directions on two streams
// instead: fusedlstm/_directions.py.)
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "fusedlstm/lstm.h"

namespace {

using Optional = c10::optional<at::Tensor>;

// Runs the one-direction operator `layer` over the forward direction, then
// the reverse one, and returns both results' tensors, as `flatten` lists
// them, in the bidirectional schema's order. The forward direction runs first
// so that its errors come first, as from two one-direction calls.
template <class Layer, class Flatten>
auto both_in_turn(Layer layer, Flatten flatten, const at::Tensor& input,
                  const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& w_ih,
                  const at::Tensor& w_hh, const Optional& b_ih, const Optional& b_hh,
                  const Optional& w_hr, const at::Tensor& h0_reverse,
                  const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
                  const at::Tensor& w_hh_reverse, const Optional& b_ih_reverse,
                  const Optional& b_hh_reverse, const Optional& w_hr_reverse,
                  const Optional& batch_sizes) {
  auto f = flatten(layer(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes,
                         /*reverse=*/false));
  auto r = flatten(layer(input, h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse,
                         b_ih_reverse, b_hh_reverse, w_hr_reverse, batch_sizes,
                         /*reverse=*/true));
  return std::tuple_cat(std::move(f), std::move(r));
}

fusedlstm::BidirectionalInferenceOutputs inference_in_turn(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const Optional& b_ih,
    const Optional& b_hh, const Optional& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const Optional& b_ih_reverse,
    const Optional& b_hh_reverse, const Optional& w_hr_reverse,
    const Optional& batch_sizes) {
  return both_in_turn(
      &fusedlstm::lstm_layer_inference,
      [](const fusedlstm::LayerInferenceResult& d) {
        return std::make_tuple(d.output, d.h_n, d.c_n);
      },
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, h0_reverse, c0_reverse,
      w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
      batch_sizes);
}

fusedlstm::BidirectionalForwardOutputs forward_in_turn(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const Optional& b_ih,
    const Optional& b_hh, const Optional& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const Optional& b_ih_reverse,
    const Optional& b_hh_reverse, const Optional& w_hr_reverse,
    const Optional& batch_sizes) {
  return both_in_turn(
      &fusedlstm::lstm_layer_forward,
      [](const fusedlstm::LayerForwardResult& d) {
        return std::make_tuple(d.output, d.h_n, d.c_n, d.gates, d.cells);
      },
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, h0_reverse, c0_reverse,
      w_ih_reverse, w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
      batch_sizes);
}

fusedlstm::BidirectionalBackwardOutputs backward_in_turn(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& grad_c_n, const at::Tensor& grad_output_reverse,
    const at::Tensor& grad_h_n_reverse, const at::Tensor& grad_c_n_reverse,
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const Optional& b_ih,
    const Optional& b_hh, const Optional& w_hr, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& cells,
    const at::Tensor& h0_reverse, const at::Tensor& c0_reverse,
    const at::Tensor& w_ih_reverse, const at::Tensor& w_hh_reverse,
    const Optional& b_ih_reverse, const Optional& b_hh_reverse,
    const Optional& w_hr_reverse, const at::Tensor& output_reverse,
    const at::Tensor& gates_reverse, const at::Tensor& cells_reverse,
    const Optional& batch_sizes, fusedlstm::BackwardMask output_mask,
    fusedlstm::BackwardMask output_mask_reverse) {
  auto f = fusedlstm::lstm_layer_backward(
      grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh, b_ih, b_hh,
      w_hr, output, gates, cells, batch_sizes, /*reverse=*/false, output_mask);
  auto r = fusedlstm::lstm_layer_backward(
      grad_output_reverse, grad_h_n_reverse, grad_c_n_reverse, input,
      h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse, b_ih_reverse,
      b_hh_reverse, w_hr_reverse, output_reverse, gates_reverse, cells_reverse,
      batch_sizes, /*reverse=*/true, output_mask_reverse);
  return {f.grad_input, f.grad_h0,    f.grad_c0,   f.grad_w_ih, f.grad_w_hh,
          f.grad_bias,  f.grad_w_hr,  r.grad_input, r.grad_h0,  r.grad_c0,
          r.grad_w_ih,  r.grad_w_hh,  r.grad_bias, r.grad_w_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedlstm, CompositeExplicitAutograd, m) {
  m.impl("lstm_bidirectional_inference", &inference_in_turn);
  m.impl("lstm_bidirectional_forward", &forward_in_turn);
  m.impl("lstm_bidirectional_backward", &backward_in_turn);
}
