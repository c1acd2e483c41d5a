// Public C++ API of fusedlstm: one LSTM layer in one direction.
//
// Notation used in every shape below:
//   T  time steps,  B  batch,  I  input features,  H  hidden size,
//   P  size of the emitted hidden state (proj_size if > 0, else H),
//   N  rows of the time-major input: T*B for a padded sequence, or
//      sum(batch_sizes) for a packed one.
// Gate order along the 4H axis is PyTorch's: input, forget, cell (g), output.
//
// A padded sequence is the special case of a packed one in which every step
// has the full batch, so both layouts share one code path: rows of step t are
// [offset_t, offset_t + batch_sizes[t]) and, as in PackedSequence, the batch
// per step never grows (sequences are sorted by decreasing length).
//
// These functions are plain ATen: they can be called from C++ without Python
// (see CMakeLists.txt). The Python package reaches them through the
// TORCH_LIBRARY operators declared in csrc/ops.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <array>
#include <tuple>

namespace fusedlstm {

// Result of a forward pass over one layer and direction.
struct LayerForwardResult {
  at::Tensor output;  // [T, B, P] or [N, P]: h_t for every step
  at::Tensor h_n;     // [B, P]: h at each sequence's last processed step
  at::Tensor c_n;     // [B, H]: c at each sequence's last processed step, in
                      //   c0's dtype
  at::Tensor gates;   // [T, B, 4H] or [N, 4H]: activated gates (i, f, g, o),
                      //   kept for backward
  at::Tensor cells;   // [T, B, H] or [N, H]: c_t for every step, kept for backward
  // gates and cells are float32 for bfloat16 input on the CPU where nn.LSTM
  // would run oneDNN (padded, no projection, oneDNN bfloat16 support), else in
  // input's dtype; see saved_activation_dtype in common/layer_args.h.
};

// Forward pass of one LSTM layer in one direction.
//   input:       [T, B, I] (batch_sizes undefined) or packed [N, I]
//   h0:          [B, P]
//   c0:          [B, H]
//   w_ih:        [4H, I]
//   w_hh:        [4H, P]
//   b_ih, b_hh:  [4H] each, or both undefined (bias=False)
//   w_hr:        [P, H], or undefined (no projection)
//   batch_sizes: int64 CPU tensor [T], non-increasing, or undefined (padded)
//   reverse:     process the sequence from its last step to its first
// All floating tensors share input's dtype and device, except that on the
// CPU c0 may be float32 for bfloat16 or half input (as oneDNN's LSTM, which
// nn.LSTM runs there, takes it): c is carried in float32 within the layer in
// any case, and c_n is returned in c0's dtype.
LayerForwardResult lstm_layer_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse);

// Result of a forward pass that keeps nothing for backward.
struct LayerInferenceResult {
  at::Tensor output;  // [T, B, P] or [N, P]: h_t for every step
  at::Tensor h_n;     // [B, P]
  at::Tensor c_n;     // [B, H]
};

// The forward pass when no gradient will be taken: the same arguments and the
// same output, h_n and c_n as lstm_layer_forward, without the gates and cells
// it keeps for backward. On the CPU's fused path the input projection then runs
// in chunks of steps into one small reused buffer, so a call allocates the
// output and the states only, not the [N, 4H] gates. On CUDA the projection
// stays one GEMM into [N, 4H]; no cells are allocated and the kernels write
// no activations back.
LayerInferenceResult lstm_layer_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse);

// One direction's state and weights, shaped as for lstm_layer_forward.
struct DirectionArgs {
  at::Tensor h0;    // [B, P]
  at::Tensor c0;    // [B, H]
  at::Tensor w_ih;  // [4H, I]
  at::Tensor w_hh;  // [4H, P]
  c10::optional<at::Tensor> b_ih, b_hh;  // [4H] each, or both undefined
  c10::optional<at::Tensor> w_hr;        // [P, H], or undefined
};

// Both directions' results, each as lstm_layer_inference returns it.
struct BidirectionalInferenceResult {
  LayerInferenceResult forward;  // the direction from the first step
  LayerInferenceResult reverse;  // the direction from the last step
};
using BidirectionalInferenceOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// lstm_layer_inference of both directions of a layer over the same input
// ([T, B, I], or packed [N, I] with batch_sizes). On the CPU, with two
// intra-op threads, the two run at once, one thread each, and each gives the
// bits of a one-thread call (FUSEDLSTM_CPU_DIRECTIONS); elsewhere they run in
// turn, as two calls.
BidirectionalInferenceResult lstm_bidirectional_inference(
    const at::Tensor& input, const DirectionArgs& forward,
    const DirectionArgs& reverse, const c10::optional<at::Tensor>& batch_sizes);

// Gradients of one layer and direction.
struct LayerBackwardResult {
  at::Tensor grad_input;  // like input
  at::Tensor grad_h0;     // [B, P]
  at::Tensor grad_c0;     // [B, H], in c0's dtype
  at::Tensor grad_w_ih;   // [4H, I]
  at::Tensor grad_w_hh;   // [4H, P]
  at::Tensor grad_bias;   // [4H]: the gradient of b_ih and of b_hh alike, since
                          //   they enter the gates as a sum; empty without bias
  at::Tensor grad_w_hr;   // [P, H]; empty when there is no projection
};

// Which of LayerBackwardResult's gradients a backward call computes, in its
// order: grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias,
// grad_w_hr. One left out comes back as an empty tensor [0], and its
// whole-sequence product is not run: autograd asks only for the gradients of
// inputs that require one, so the first layer of a model fed raw features
// skips dX = dG W_ih, and a frozen layer skips dW_ih, dW_hh and dW_hr.
using BackwardMask = std::array<bool, 7>;
namespace gradient {  // positions in a BackwardMask
enum : int { input, h0, c0, w_ih, w_hh, bias, w_hr };
}  // namespace gradient
inline constexpr BackwardMask kAllGradients{true, true, true, true,
                                            true, true, true};

// Backward pass of one LSTM layer in one direction. Takes the tensors that
// lstm_layer_forward returned and saved; nothing is recomputed but tanh(c_t).
//   grad_output: like output       grad_h_n: like h_n   grad_c_n: like c_n
//                (shapes, dtypes and device checked; each may be undefined:
//                that result was not used)
//   input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse: as in
//                forward (the biases are read only for whether they exist; they
//                are arguments so that autograd can reach them at second order)
//   output, gates, cells: as returned by forward (shapes and dtypes are
//                checked; anything else raises)
//   output_mask: the gradients to compute (BackwardMask)
LayerBackwardResult lstm_layer_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& grad_c_n, const at::Tensor& input, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& cells,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse,
    BackwardMask output_mask = kAllGradients);

// Both directions' results, each as lstm_layer_forward returns it.
struct BidirectionalForwardResult {
  LayerForwardResult forward;  // the direction from the first step
  LayerForwardResult reverse;  // the direction from the last step
};
// (output, h_n, c_n, gates, cells) of the forward direction, then the same
// of the reverse one: the operator's results.
using BidirectionalForwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// lstm_layer_forward of both directions of a layer over the same input, for
// training; run as lstm_bidirectional_inference runs its two (on the CPU with
// two intra-op threads at once, each with the bits of a one-thread call).
BidirectionalForwardResult lstm_bidirectional_forward(
    const at::Tensor& input, const DirectionArgs& forward,
    const DirectionArgs& reverse, const c10::optional<at::Tensor>& batch_sizes);

// What lstm_layer_backward takes of one direction besides the layer's input
// and batch_sizes: the gradients its results received, its arguments, what
// its forward returned, and the gradients wanted.
struct DirectionBackwardArgs {
  at::Tensor grad_output;  // like output, or undefined
  at::Tensor grad_h_n;     // like h_n, or undefined
  at::Tensor grad_c_n;     // like c_n, or undefined
  DirectionArgs args;      // as given to forward
  at::Tensor output;       // [T, B, P] or [N, P], as forward returned them
  at::Tensor gates;        // [T, B, 4H] or [N, 4H]
  at::Tensor cells;        // [T, B, H] or [N, H]
  BackwardMask output_mask = kAllGradients;
};

// Both directions' gradients, each as lstm_layer_backward returns them: the
// layer input's gradient is the sum of the two grad_input.
struct BidirectionalBackwardResult {
  LayerBackwardResult forward;
  LayerBackwardResult reverse;
};
using BidirectionalBackwardOutputs =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// lstm_layer_backward of both directions of a layer, run as
// lstm_bidirectional_forward runs them.
BidirectionalBackwardResult lstm_bidirectional_backward(
    const at::Tensor& input, const DirectionBackwardArgs& forward,
    const DirectionBackwardArgs& reverse,
    const c10::optional<at::Tensor>& batch_sizes);

}  // namespace fusedlstm
