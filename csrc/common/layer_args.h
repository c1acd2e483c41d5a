// Argument checking and the step schedule shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Optional.h>

#include <cstdint>
#include <vector>

namespace fusedlstm {

// Held for the whole of each layer operator's kernel: the operators compute
// in the dtypes they are given. Autocast acts in the modules, before the
// call; a kernel's own ATen calls (the CUDA backward's weight-gradient
// GEMMs) would otherwise run in float16 where backward is called under
// autocast, as the autograd engine keeps the caller's autocast state.
struct NoAutocastInside {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autocast_dispatch_keyset};
};

// Which rows of the time-major input belong to each step. A padded [T, B, I]
// input is scheduled as T steps of B rows, so one kernel serves both layouts.
struct StepSchedule {
  std::vector<int64_t> batch_sizes;  // [T]: active sequences at step t
  std::vector<int64_t> offsets;      // [T]: first row of step t
  int64_t batch = 0;                 // B: sequences (rows of h0)
  int64_t rows = 0;                  // N: rows of the input

  int64_t steps() const { return static_cast<int64_t>(batch_sizes.size()); }
  // The step processed in position `i` of the recurrence.
  int64_t step_at(int64_t i, bool reverse) const {
    return reverse ? steps() - 1 - i : i;
  }
  // Active rows of the step processed just before step t, or 0 if none.
  // Rows below it continue a sequence; rows from it up to batch_sizes[t]
  // start one (only possible in reverse, where sequences join as t falls).
  int64_t carried_rows(int64_t t, bool reverse) const {
    if (reverse) return t + 1 < steps() ? batch_sizes[t + 1] : 0;
    return t > 0 ? batch_sizes[t] : 0;
  }
  int64_t previous_step(int64_t t, bool reverse) const {
    return reverse ? t + 1 : t - 1;
  }
};

// Sizes of one layer-direction, read off the weights.
struct LayerDims {
  int64_t input_size = 0;   // I
  int64_t hidden_size = 0;  // H
  int64_t state_size = 0;   // P (proj_size, or H)
  bool has_bias = false;
  bool has_proj = false;
  bool packed = false;      // batch_sizes given: input is packed [N, I]
  bool float32_c0 = false;  // a float32 c0 with reduced input (float32_c0_allowed)
};

// Whether c0 may be float32 while input is bfloat16 or half: on the CPU,
// whose kernels carry c in float32 within a layer whatever the dtypes, a
// float32 c0 is taken as it is and c_n returned in float32 (c0's dtype), as
// oneDNN's reduced-precision LSTM, which nn.LSTM runs there, does. The CUDA
// operators take c0 in the input's dtype only (what cuDNN's nn.LSTM takes
// there is not yet checked on a GPU).
bool float32_c0_allowed(const at::Tensor& input, const at::Tensor& c0);

// Whether PyTorch's oneDNN takes bfloat16 on this CPU, as PyTorch itself
// reports it (mkldnn::_is_mkldnn_bf16_supported: AVX-512 BW/VL/DQ,
// AVX-NE-CONVERT or Arm Graviton3). nn.LSTM runs bfloat16 on oneDNN only
// where it holds, and at::native::mkldnn_matmul refuses every dtype, float32
// included, where it does not. Read once.
bool onednn_bf16_supported();

// Validates the forward arguments of one layer-direction (see lstm.h) and
// returns its sizes. Raises c10::Error with a message naming the argument.
LayerDims check_layer_args(const char* op, const at::Tensor& input,
                           const at::Tensor& h0, const at::Tensor& c0,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const c10::optional<at::Tensor>& b_ih,
                           const c10::optional<at::Tensor>& b_hh,
                           const c10::optional<at::Tensor>& w_hr,
                           const c10::optional<at::Tensor>& batch_sizes);

// The dtype in which forward keeps the activated gates and the cells for
// backward: what nn.LSTM's own kernel for the same call keeps, so that both
// its accuracy and its memory are the bar. That is float32 for bfloat16 on
// the CPU where nn.LSTM runs oneDNN (padded input, no projection, a CPU with
// oneDNN bfloat16 support), and for bfloat16 with a float32 c0 on the CPU,
// which nn.LSTM takes only on oneDNN (packed input too): oneDNN keeps float
// activations, and a bfloat16 rounding of every saved gate left our weight
// gradients several ulps behind its ~0.1 ulp (and a float32 c0's gradient,
// multiplied by a rounded forget gate, 5x behind). Everywhere else the
// input's dtype (nn.LSTM's native path keeps bfloat16/half, and the CUDA
// kernels keep the input's dtype). The CPU computes reduced types in float
// either way. Ignores torch.backends.mkldnn.enabled, so that the rule is
// fixed for a process (traced graphs rely on it); mirrored by
// fusedlstm.ops.saved_activation_dtype.
at::ScalarType saved_activation_dtype(const at::Tensor& input,
                                      const LayerDims& d);

// Validates the forward results that backward takes back (see lstm.h):
// output [..., P] in the input's dtype, gates [..., 4H] and cells [..., H] in
// `saved` (the CPU: saved_activation_dtype; the CUDA kernels: the input's
// dtype), all with input's leading sizes and device.
void check_saved_activations(const char* op, const at::Tensor& input,
                             const LayerDims& d, const at::Tensor& output,
                             const at::Tensor& gates, const at::Tensor& cells,
                             at::ScalarType saved);

// Validates the gradients that backward receives for forward's results
// (each may be undefined: that result was not used): grad_output like
// output, grad_h_n like h_n ([B, P], h0's dtype), grad_c_n like c_n ([B, H],
// c0's dtype), all on input's device. The kernels read them as such, so a
// mismatch raises here instead of reading out of bounds.
void check_incoming_gradients(const char* op, const at::Tensor& input,
                              const at::Tensor& h0, const at::Tensor& c0,
                              const at::Tensor& output,
                              const at::Tensor& grad_output,
                              const at::Tensor& grad_h_n,
                              const at::Tensor& grad_c_n);

// Builds the schedule for `input` ([T, B, I], or packed [N, I] with
// batch_sizes). batch_sizes must be a CPU int64 tensor, non-increasing, with
// entries in [1, B] summing to N; checked here.
StepSchedule make_schedule(const at::Tensor& input, int64_t batch,
                           const c10::optional<at::Tensor>& batch_sizes);

}  // namespace fusedlstm
