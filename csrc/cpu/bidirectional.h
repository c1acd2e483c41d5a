// Both directions of a bidirectional layer in one CPU call (inference):
// fusedlstm::lstm_bidirectional_inference's CPU kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

namespace fusedlstm::cpu {

// Whether this call runs the two directions at once, one thread each:
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
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_bidirectional_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes);

}  // namespace fusedlstm::cpu
