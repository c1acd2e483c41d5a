// The operator registry: schemas of the fusedlstm operators, and the public
// C++ entry points of lstm.h, which call through the dispatcher so that C++
// callers reach the same CPU or CUDA kernel as Python does.
//
// Backend kernels are registered beside their code (cpu/register_cpu.cpp,
// cuda/register_cuda.cu); fake kernels and autograd live in fusedlstm/ops.py,
// except the Autograd kernels of the two forward operators (autograd.cpp).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "fusedlstm/lstm.h"


TORCH_LIBRARY(fusedlstm, m) {
  // One layer, one direction. See lstm.h for every argument's shape.
  // Returns (output, h_n, c_n, gates, cells).
  m.def(
      "lstm_layer_forward(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor? batch_sizes, bool reverse) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The same forward for when no gradient is needed: returns (output, h_n,
  // c_n) and keeps no activations, so it needs no [N, 4H] buffer.
  m.def(
      "lstm_layer_inference(Tensor input, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor? batch_sizes, bool reverse) -> (Tensor, Tensor, Tensor)");
  // lstm_layer_inference of both directions of a layer over the same input:
  // the forward direction's state and weights, then the reverse one's.
  // Returns (output, h_n, c_n, output_reverse, h_n_reverse, c_n_reverse). The
  // CPU kernel may run the two at once (cpu/bidirectional.h); elsewhere they
  // run in turn.
  m.def(
      "lstm_bidirectional_inference(Tensor input, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor h0_reverse, Tensor c0_reverse, Tensor w_ih_reverse, "
      "Tensor w_hh_reverse, Tensor? b_ih_reverse, Tensor? b_hh_reverse, "
      "Tensor? w_hr_reverse, Tensor? batch_sizes) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Returns (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias,
  // grad_w_hr); grad_bias and grad_w_hr are empty when absent, and so is
  // each gradient whose output_mask entry (same order) is false.
  // b_ih and b_hh are taken so that double backward can differentiate
  // through them; the kernel reads only whether they are present.
  m.def(
      "lstm_layer_backward(Tensor grad_output, Tensor grad_h_n, "
      "Tensor grad_c_n, Tensor input, Tensor h0, Tensor c0, Tensor w_ih, "
      "Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, Tensor output, "
      "Tensor gates, Tensor cells, Tensor? batch_sizes, bool reverse, "
      "bool[7] output_mask=[True, True, True, True, True, True, True]) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

namespace fusedlstm {

LayerForwardResult lstm_layer_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fusedlstm::lstm_layer_forward", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor,
                                         at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&,
                           const c10::optional<at::Tensor>&, bool)>();
  auto [output, h_n, c_n, gates, cells] = op.call(
      input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse);
  return {output, h_n, c_n, gates, cells};
}

LayerInferenceResult lstm_layer_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedlstm::lstm_layer_inference", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              bool)>();
  auto [output, h_n, c_n] = op.call(input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                    w_hr, batch_sizes, reverse);
  return {output, h_n, c_n};
}

BidirectionalInferenceResult lstm_bidirectional_inference(
    const at::Tensor& input, const DirectionArgs& forward,
    const DirectionArgs& reverse, const c10::optional<at::Tensor>& batch_sizes) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedlstm::lstm_bidirectional_inference", "")
          .typed<BidirectionalInferenceOutputs(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&)>();
  auto [output, h_n, c_n, output_r, h_n_r, c_n_r] = op.call(
      input, forward.h0, forward.c0, forward.w_ih, forward.w_hh, forward.b_ih,
      forward.b_hh, forward.w_hr, reverse.h0, reverse.c0, reverse.w_ih,
      reverse.w_hh, reverse.b_ih, reverse.b_hh, reverse.w_hr, batch_sizes);
  return {{output, h_n, c_n}, {output_r, h_n_r, c_n_r}};
}

LayerBackwardResult lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& cells,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse,
    BackwardMask output_mask) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedlstm::lstm_layer_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, bool, BackwardMask)>();
  auto [gi, gh0, gc0, gwih, gwhh, gb, gwhr] =
      op.call(grad_output, grad_h_n, grad_c_n, input, h0, c0, w_ih, w_hh,
              b_ih, b_hh, w_hr, output, gates, cells, batch_sizes, reverse,
              output_mask);
  return {gi, gh0, gc0, gwih, gwhh, gb, gwhr};
}

}  // namespace fusedlstm

namespace {

// Every backend without a kernel of its own (CUDA among them): the two
// directions in turn, through lstm_layer_inference.
fusedlstm::BidirectionalInferenceOutputs bidirectional_inference_in_turn(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes) {
  auto f = fusedlstm::lstm_layer_inference(input, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                           w_hr, batch_sizes, /*reverse=*/false);
  auto r = fusedlstm::lstm_layer_inference(
      input, h0_reverse, c0_reverse, w_ih_reverse, w_hh_reverse, b_ih_reverse,
      b_hh_reverse, w_hr_reverse, batch_sizes, /*reverse=*/true);
  return {f.output, f.h_n, f.c_n, r.output, r.h_n, r.c_n};
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedlstm, CompositeExplicitAutograd, m) {
  m.impl("lstm_bidirectional_inference", &bidirectional_inference_in_turn);
}
