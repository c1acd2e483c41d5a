// Both directions of a bidirectional layer in one CPU call: the CPU kernels
// of fusedlstm::lstm_bidirectional_inference, lstm_bidirectional_forward and
// lstm_bidirectional_backward.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "fusedlstm/lstm.h"  // the Bidirectional*Outputs, BackwardMask

namespace fusedlstm::cpu {

// Whether a call made now runs the two directions at once, one thread each:
// FUSEDLSTM_CPU_DIRECTIONS = auto (default; also unset or empty): where
// PyTorch's intra-op threads are exactly two and the call is not already
// inside a parallel region | sequential: in turn, each on every thread |
// concurrent: at once (in turn where there is one thread). Read at every call;
// any other value raises (common/env_choice.h).
bool bidirectional_runs_concurrently();

// lstm_layer_inference of the forward direction (h0 ... w_hr) and of the
// reverse one (h0_reverse ... w_hr_reverse) over the same input: returns
// (output, h_n, c_n, output_reverse, h_n_reverse, c_n_reverse), each as
// lstm_layer_inference returns it: bit for bit as a call on one thread where
// they run at once, else as a call on the caller's threads. The reverse
// direction's argument errors name it ("..., reverse direction: ...").
BidirectionalInferenceOutputs lstm_bidirectional_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes);

// lstm_layer_forward of both directions, checked and run as
// lstm_bidirectional_inference's are: returns (output, h_n, c_n, gates,
// cells) of the forward direction, then of the reverse one.
BidirectionalForwardOutputs lstm_bidirectional_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes);

// lstm_layer_backward of both directions, checked and run as above: the
// forward direction's incoming gradients (grad_output ... grad_c_n), then
// the reverse one's; for each direction, its arguments, what its forward
// returned (output, gates, cells) and its mask. Returns the forward
// direction's seven gradients, then the reverse one's, each as
// lstm_layer_backward returns them (grad_input of each direction apart).
BidirectionalBackwardOutputs lstm_bidirectional_backward(
    const at::Tensor& grad_output, const at::Tensor& grad_h_n,
    const at::Tensor& grad_c_n, const at::Tensor& grad_output_reverse,
    const at::Tensor& grad_h_n_reverse, const at::Tensor& grad_c_n_reverse,
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& output,
    const at::Tensor& gates, const at::Tensor& cells,
    const at::Tensor& h0_reverse, const at::Tensor& c0_reverse,
    const at::Tensor& w_ih_reverse, const at::Tensor& w_hh_reverse,
    const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const at::Tensor& output_reverse, const at::Tensor& gates_reverse,
    const at::Tensor& cells_reverse,
    const c10::optional<at::Tensor>& batch_sizes, BackwardMask output_mask,
    BackwardMask output_mask_reverse);

}  // namespace fusedlstm::cpu
