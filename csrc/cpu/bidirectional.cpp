// Both directions of a bidirectional layer on the CPU: for inference, and
// the forward and backward passes of training.
//
// Each direction's recurrence is a chain of steps, and splitting one step
// over the threads costs a meeting per step (cpu/step_sync.h) plus each
// worker's share of the loop overhead: at small batches that is a fifth of
// the step. The two directions depend on nothing but the input, so with two
// threads each can run on its own thread, whole, with no meeting at all (the
// GEMMs inside then run single-threaded too, on the two cores at once).
//
// Run at once, each direction computes exactly as a call on one thread does;
// in turn, as a call on every thread does. The recurrence's results do not
// depend on the thread count, but PyTorch's GEMMs choose their kernels by it,
// so a small product's last bit can differ between the two, as nn.LSTM's own
// results do between one thread and two (tests/test_bidirectional.py).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <array>
#include <string>
#include <tuple>

#include "common/env_choice.h"
#include "common/layer_args.h"
#include "cpu/bidirectional.h"
#include "cpu/lstm_cpu.h"

namespace fusedlstm::cpu {

namespace {

bool concurrent_by_rule() {
  // With more threads, one thread per direction would leave the rest idle
  // where the directions in turn use them all (the GEMMs especially);
  // splitting the threads into two teams needs per-team workspaces and
  // meetings, not built. Nested in a parallel region, every at::parallel_for
  // runs inline anyway.
  return at::get_num_threads() == 2 && !at::in_parallel_region();
}

// Runs direction(0) and direction(1): at once, one OpenMP thread each, where
// bidirectional_runs_concurrently() says so, else in turn on this thread.
template <typename Direction>
void run_directions(const Direction& direction) {
  if (!bidirectional_runs_concurrently()) {
    direction(0);
    direction(1);
    return;
  }
  // The worker thread calls ATen: it takes the caller's grad mode, inference
  // mode and dispatch-key state, so that its tensors are what the caller's
  // would be (inference tensors under torch.inference_mode).
  const at::ThreadLocalState caller_state;
  at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(caller_state);
    for (int64_t d = begin; d < end; ++d) direction(d);
  });
}

// The arguments of the direction's one-direction operator are checked here,
// in the calling thread and in order, so that a bad call raises the same
// error however the directions then run (from a worker thread, whichever
// failed first); the reverse direction's errors name it.
std::string op_name(const char* op, bool reverse) {
  return reverse ? std::string(op) + ", reverse direction" : std::string(op);
}

LayerDims check_direction(const char* op, bool reverse, const at::Tensor& input,
                          const at::Tensor& h0, const at::Tensor& c0,
                          const at::Tensor& w_ih, const at::Tensor& w_hh,
                          const c10::optional<at::Tensor>& b_ih,
                          const c10::optional<at::Tensor>& b_hh,
                          const c10::optional<at::Tensor>& w_hr,
                          const c10::optional<at::Tensor>& batch_sizes) {
  return check_layer_args(op_name(op, reverse).c_str(), input, h0, c0, w_ih,
                          w_hh, b_ih, b_hh, w_hr, batch_sizes);
}

}  // namespace

bool bidirectional_runs_concurrently() {
  // Read at every call, unlike the other FUSEDLSTM_CPU_* switches: which way
  // runs changes no more than the GEMMs' last bits, as the thread count does.
  switch (env_choice("FUSEDLSTM_CPU_DIRECTIONS", {"auto", "sequential", "concurrent"})) {
    case 1:
      return false;
    case 2:
      return true;
    default:
      return concurrent_by_rule();
  }
}

namespace {

// The kernels of lstm_bidirectional_inference and _forward: `one` is the
// one-direction kernel they run twice, lstm_layer_inference or
// lstm_layer_forward, which take the same arguments.
template <typename OneDirection>
auto both_directions(
    const char* op, OneDirection one, const at::Tensor& input, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes) {
  check_direction(op, false, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes);
  check_direction(op, true, input, h0_reverse, c0_reverse, w_ih_reverse,
                  w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
                  batch_sizes);
  std::array<decltype(one(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, false)), 2> r;
  run_directions([&](int64_t direction) {
    r[direction] = direction == 0
                       ? one(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                             batch_sizes, /*reverse=*/false)
                       : one(input, h0_reverse, c0_reverse, w_ih_reverse,
                             w_hh_reverse, b_ih_reverse, b_hh_reverse,
                             w_hr_reverse, batch_sizes, /*reverse=*/true);
  });
  return std::tuple_cat(std::move(r[0]), std::move(r[1]));
}

}  // namespace

BidirectionalInferenceOutputs lstm_bidirectional_inference(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes) {
  return both_directions("fusedlstm::lstm_bidirectional_inference",
                         &lstm_layer_inference, input, h0, c0, w_ih, w_hh, b_ih,
                         b_hh, w_hr, h0_reverse, c0_reverse, w_ih_reverse,
                         w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
                         batch_sizes);
}

BidirectionalForwardOutputs lstm_bidirectional_forward(
    const at::Tensor& input, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh,
    const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh,
    const c10::optional<at::Tensor>& w_hr, const at::Tensor& h0_reverse,
    const at::Tensor& c0_reverse, const at::Tensor& w_ih_reverse,
    const at::Tensor& w_hh_reverse, const c10::optional<at::Tensor>& b_ih_reverse,
    const c10::optional<at::Tensor>& b_hh_reverse,
    const c10::optional<at::Tensor>& w_hr_reverse,
    const c10::optional<at::Tensor>& batch_sizes) {
  return both_directions("fusedlstm::lstm_bidirectional_forward", &lstm_layer_forward,
                         input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, h0_reverse,
                         c0_reverse, w_ih_reverse, w_hh_reverse, b_ih_reverse,
                         b_hh_reverse, w_hr_reverse, batch_sizes);
}

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
    BackwardMask output_mask_reverse) {
  constexpr const char* op = "fusedlstm::lstm_bidirectional_backward";
  // Each direction's checks in the order lstm_layer_backward makes them.
  const LayerDims d = check_direction(op, false, input, h0, c0, w_ih, w_hh, b_ih,
                                      b_hh, w_hr, batch_sizes);
  check_saved_activations(op, input, d, output, gates, cells,
                          saved_activation_dtype(input, d));
  check_incoming_gradients(op, input, h0, c0, output, grad_output, grad_h_n,
                           grad_c_n);
  const LayerDims d_r = check_direction(op, true, input, h0_reverse, c0_reverse,
                                        w_ih_reverse, w_hh_reverse, b_ih_reverse,
                                        b_hh_reverse, w_hr_reverse, batch_sizes);
  const std::string op_r = op_name(op, true);
  check_saved_activations(op_r.c_str(), input, d_r, output_reverse,
                          gates_reverse, cells_reverse,
                          saved_activation_dtype(input, d_r));
  check_incoming_gradients(op_r.c_str(), input, h0_reverse, c0_reverse,
                           output_reverse, grad_output_reverse,
                           grad_h_n_reverse, grad_c_n_reverse);
  using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                            at::Tensor, at::Tensor, at::Tensor>;
  std::array<Result, 2> r;
  run_directions([&](int64_t direction) {
    r[direction] =
        direction == 0
            ? lstm_layer_backward(grad_output, grad_h_n, grad_c_n, input, h0, c0,
                                  w_ih, w_hh, b_ih, b_hh, w_hr, output, gates,
                                  cells, batch_sizes, /*reverse=*/false,
                                  output_mask)
            : lstm_layer_backward(grad_output_reverse, grad_h_n_reverse,
                                  grad_c_n_reverse, input, h0_reverse,
                                  c0_reverse, w_ih_reverse, w_hh_reverse,
                                  b_ih_reverse, b_hh_reverse, w_hr_reverse,
                                  output_reverse, gates_reverse, cells_reverse,
                                  batch_sizes, /*reverse=*/true,
                                  output_mask_reverse);
  });
  return std::tuple_cat(std::move(r[0]), std::move(r[1]));
}

}  // namespace fusedlstm::cpu
