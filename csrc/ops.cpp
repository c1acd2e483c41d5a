// The operator registry: schemas of the fusedlstm operators, and the public
// C++ entry points of lstm.h, which call through the dispatcher so that C++
// callers reach the same CPU or CUDA kernel as Python does.
//
// Backend kernels are registered beside their code (cpu/register_cpu.cpp,
// cuda/register_cuda.cu, bidirectional_in_turn.cpp); fake kernels and
// autograd live in fusedlstm/ops.py, except the Autograd kernels of the
// forward operators (autograd.cpp, autograd_bidirectional.cpp).
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
  // lstm_layer_forward of both directions, for training, run as
  // lstm_bidirectional_inference runs them. Returns (output, h_n, c_n, gates,
  // cells) of the forward direction, then of the reverse one.
  m.def(
      "lstm_bidirectional_forward(Tensor input, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor h0_reverse, Tensor c0_reverse, Tensor w_ih_reverse, "
      "Tensor w_hh_reverse, Tensor? b_ih_reverse, Tensor? b_hh_reverse, "
      "Tensor? w_hr_reverse, Tensor? batch_sizes) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor)");
  // lstm_layer_backward of both directions: the forward direction's incoming
  // gradients, then the reverse one's; the layer's input; each direction's
  // arguments and forward results; batch_sizes; each direction's mask.
  // Returns the forward direction's seven gradients, then the reverse one's.
  m.def(
      "lstm_bidirectional_backward(Tensor grad_output, Tensor grad_h_n, "
      "Tensor grad_c_n, Tensor grad_output_reverse, Tensor grad_h_n_reverse, "
      "Tensor grad_c_n_reverse, Tensor input, Tensor h0, Tensor c0, "
      "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, "
      "Tensor output, Tensor gates, Tensor cells, Tensor h0_reverse, "
      "Tensor c0_reverse, Tensor w_ih_reverse, Tensor w_hh_reverse, "
      "Tensor? b_ih_reverse, Tensor? b_hh_reverse, Tensor? w_hr_reverse, "
      "Tensor output_reverse, Tensor gates_reverse, Tensor cells_reverse, "
      "Tensor? batch_sizes, "
      "bool[7] output_mask=[True, True, True, True, True, True, True], "
      "bool[7] output_mask_reverse=[True, True, True, True, True, True, True]) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
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

BidirectionalForwardResult lstm_bidirectional_forward(
    const at::Tensor& input, const DirectionArgs& forward,
    const DirectionArgs& reverse, const c10::optional<at::Tensor>& batch_sizes) {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedlstm::lstm_bidirectional_forward", "")
          .typed<BidirectionalForwardOutputs(
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const at::Tensor&,
              const at::Tensor&, const at::Tensor&, const at::Tensor&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&,
              const c10::optional<at::Tensor>&, const c10::optional<at::Tensor>&)>();
  auto [o, h, c, g, cl, o_r, h_r, c_r, g_r, cl_r] = op.call(
      input, forward.h0, forward.c0, forward.w_ih, forward.w_hh, forward.b_ih,
      forward.b_hh, forward.w_hr, reverse.h0, reverse.c0, reverse.w_ih,
      reverse.w_hh, reverse.b_ih, reverse.b_hh, reverse.w_hr, batch_sizes);
  return {{o, h, c, g, cl}, {o_r, h_r, c_r, g_r, cl_r}};
}

BidirectionalBackwardResult lstm_bidirectional_backward(
    const at::Tensor& input, const DirectionBackwardArgs& forward,
    const DirectionBackwardArgs& reverse,
    const c10::optional<at::Tensor>& batch_sizes) {
  using T = const at::Tensor&;
  using O = const c10::optional<at::Tensor>&;
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fusedlstm::lstm_bidirectional_backward", "")
          .typed<BidirectionalBackwardOutputs(
              T, T, T, T, T, T, T, T, T, T, T, O, O, O, T, T, T, T, T, T, T,
              O, O, O, T, T, T, O, BackwardMask, BackwardMask)>();
  const DirectionArgs &f = forward.args, &r = reverse.args;
  auto [gi, gh0, gc0, gwih, gwhh, gb, gwhr, gi_r, gh0_r, gc0_r, gwih_r, gwhh_r,
        gb_r, gwhr_r] =
      op.call(forward.grad_output, forward.grad_h_n, forward.grad_c_n,
              reverse.grad_output, reverse.grad_h_n, reverse.grad_c_n, input,
              f.h0, f.c0, f.w_ih, f.w_hh, f.b_ih, f.b_hh, f.w_hr, forward.output,
              forward.gates, forward.cells, r.h0, r.c0, r.w_ih, r.w_hh, r.b_ih,
              r.b_hh, r.w_hr, reverse.output, reverse.gates, reverse.cells,
              batch_sizes, forward.output_mask, reverse.output_mask);
  return {{gi, gh0, gc0, gwih, gwhh, gb, gwhr},
          {gi_r, gh0_r, gc0_r, gwih_r, gwhh_r, gb_r, gwhr_r}};
}

}  // namespace fusedlstm
