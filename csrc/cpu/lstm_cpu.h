// CPU kernels of the fusedlstm operators; shapes as in fusedlstm/lstm.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <tuple>

#include "fusedlstm/lstm.h"  // BackwardMask

namespace fusedlstm::cpu {

// Returns (output, h_n, c_n, gates, cells).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                   const c10::optional<at::Tensor>& b_hh,
                   const c10::optional<at::Tensor>& w_hr,
                   const c10::optional<at::Tensor>& batch_sizes, bool reverse);

// The forward without the activations kept for backward: (output, h_n, c_n).
std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_layer_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr,
    const c10::optional<at::Tensor>& batch_sizes, bool reverse);

// Returns (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias,
// grad_w_hr); each one that output_mask leaves out is empty, and not computed.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
           at::Tensor, at::Tensor>
lstm_layer_backward(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                    const at::Tensor& grad_c_n, const at::Tensor& input,
                    const at::Tensor& h0, const at::Tensor& c0,
                    const at::Tensor& w_ih, const at::Tensor& w_hh,
                    const c10::optional<at::Tensor>& b_ih,
                    const c10::optional<at::Tensor>& b_hh,
                    const c10::optional<at::Tensor>& w_hr,
                    const at::Tensor& output, const at::Tensor& gates,
                    const at::Tensor& cells,
                    const c10::optional<at::Tensor>& batch_sizes, bool reverse,
                    BackwardMask output_mask = kAllGradients);

}  // namespace fusedlstm::cpu
