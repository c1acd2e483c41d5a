// CUDA kernels of the fusedlstm operators; shapes as in fusedlstm/lstm.h.
//
// Two paths run the recurrence of one layer-direction:
//   stepwise:   per step one cuBLAS GEMM (through ATen) and one fused
//               elementwise cell kernel. Every dtype; the baseline.
//   persistent: one cooperative kernel for the whole sequence, W_hh kept on
//               chip (persistent/persistent.h). float32/float16/bfloat16.
// FUSEDLSTM_CUDA_PATH=auto|stepwise|persistent picks one; it is read on every
// call so that tests can switch it with monkeypatch.setenv.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/Optional.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <tuple>

#include "fusedlstm/lstm.h"  // BackwardMask

namespace fusedlstm::cuda {

enum class PathMode { kAuto, kStepwise, kPersistent, kCluster };

// Whether a CUDA entry point's tensor is where its kernels run: on a GPU, or
// in host memory under the host emulation that runs this host code and the
// kernels on the CPU (cpp_tests/cuda_emulation).
inline bool on_kernel_device(const at::Tensor& t) {
#ifdef FUSEDLSTM_CUDA_EMULATION
  return t.is_cpu();
#else
  return t.is_cuda();
#endif
}

// Reads FUSEDLSTM_CUDA_PATH now (not cached); raises on an unknown value.
PathMode requested_path();

// Reads FUSEDLSTM_CLUSTER_SYNC now (not cached): true for "split" or unset
// (the cluster forward's split-phase barrier), false for "whole"; raises on
// another value.
bool cluster_split_sync();

// Raises a RuntimeError naming this build's GPU targets and the device's
// compute capability where the build holds no code the (current) device
// `device` can run, instead of a first launch failing with "no kernel image
// is available". Queries once per device that passes.
void check_kernel_image(int device);

// Returns (output, h_n, c_n, gates, cells).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
lstm_layer_forward(const at::Tensor& input, const at::Tensor& h0,
                   const at::Tensor& c0, const at::Tensor& w_ih,
                   const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
                   const c10::optional<at::Tensor>& b_hh,
                   const c10::optional<at::Tensor>& w_hr,
                   const c10::optional<at::Tensor>& batch_sizes, bool reverse);

// The forward with nothing kept for backward: (output, h_n, c_n). The input
// projection is still one whole-sequence GEMM into an [N, 4H] buffer, which
// the kernels only read: they write back no activated gates, and no cells
// buffer is allocated.
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

// ---------------------------------------------------------------------------
// Stepwise cell kernels (cell_kernels.cu). Pointers are raw so that the host
// loop builds no tensors per step beyond the GEMM views; `opmath` below means
// float for half/bfloat16 and the dtype itself otherwise.

// Forward cell over the `rows` active rows of one step.
struct CellForwardArgs {
  int64_t rows = 0;          // bs_t
  int64_t H = 0;
  const void* rec = nullptr; // [rows, 4H] h_{t-1} W_hh^T
  void* gates = nullptr;     // [rows, 4H] in: x W_ih^T; out: activated
                             // (not written where cells is nullptr)
  const void* bias = nullptr;// [4H] opmath: b_ih + b_hh, or nullptr
  void* c_state = nullptr;   // [B, H] opmath; rows [0, rows): c_{t-1} -> c_t
  void* cells = nullptr;     // [rows, H] out: c_t; nullptr in inference, which
                             // keeps neither cells nor activated gates
  void* hidden = nullptr;    // [rows, H] out: o * tanh(c_t)
  void* hidden2 = nullptr;   // [rows, H] out: second copy, or nullptr
};
void launch_cell_forward(at::ScalarType dtype, const CellForwardArgs& a,
                         cudaStream_t stream);

// Backward cell over the `rows` active rows of one step. Row r < carried
// continues a sequence from the previously processed step; the others start
// at this step from c0/h0.
struct CellBackwardArgs {
  int64_t rows = 0, carried = 0, H = 0, P = 0;
  const void* gates = nullptr;     // [rows, 4H] activated gates of step t
  const void* cells = nullptr;     // [rows, H] c_t
  const void* c_prev = nullptr;    // [carried, H] c of the previous step's rows
  const void* c0 = nullptr;        // [B, H]
  const void* h_prev_src = nullptr;// [carried, P] output rows of previous step
  const void* h0 = nullptr;        // [B, P]
  void* h_prev = nullptr;          // [rows, P] out: h_{t-1} per row (for dW_hh)
  // Gradient reaching o * tanh(c_t): without projection it is
  // dh_state[r] + grad_out[r] (both [.., P=H]); with projection it is dm.
  const void* dh_state = nullptr;  // [B, P] or nullptr
  const void* grad_out = nullptr;  // [rows, P] or nullptr
  const void* dm = nullptr;        // [B, H] or nullptr
  void* dc_state = nullptr;        // [B, H] opmath: dc_t in, dc_{t-1} out
  void* dgates = nullptr;          // [rows, 4H] out: d preactivations
};
void launch_cell_backward(at::ScalarType dtype, const CellBackwardArgs& a,
                          cudaStream_t stream);

}  // namespace fusedlstm::cuda
