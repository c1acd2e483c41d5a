// Both directions of a bidirectional layer, for inference, on the CPU.
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

#include "common/env_choice.h"
#include "common/layer_args.h"
#include "cpu/bidirectional.h"
#include "cpu/lstm_cpu.h"

namespace fusedlstm::cpu {

namespace {

constexpr const char* kOp = "fusedlstm::lstm_bidirectional_inference";
constexpr const char* kOpReverse =
    "fusedlstm::lstm_bidirectional_inference, reverse direction";

bool concurrent_by_rule() {
  // With more threads, one thread per direction would leave the rest idle
  // where the directions in turn use them all (the GEMMs especially);
  // splitting the threads into two teams needs per-team workspaces and
  // meetings, not built. Nested in a parallel region, every at::parallel_for
  // runs inline anyway.
  return at::get_num_threads() == 2 && !at::in_parallel_region();
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
    const c10::optional<at::Tensor>& batch_sizes) {
  // Checked here, in order, so that a bad call raises the same error however
  // the directions then run (from a worker thread, whichever failed first).
  check_layer_args(kOp, input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes);
  check_layer_args(kOpReverse, input, h0_reverse, c0_reverse, w_ih_reverse,
                   w_hh_reverse, b_ih_reverse, b_hh_reverse, w_hr_reverse,
                   batch_sizes);
  using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor>;
  std::array<Result, 2> results;
  auto run = [&](int64_t direction) {
    results[direction] =
        direction == 0
            ? lstm_layer_inference(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                   batch_sizes, /*reverse=*/false)
            : lstm_layer_inference(input, h0_reverse, c0_reverse, w_ih_reverse,
                                   w_hh_reverse, b_ih_reverse, b_hh_reverse,
                                   w_hr_reverse, batch_sizes, /*reverse=*/true);
  };
  if (bidirectional_runs_concurrently()) {
    // The worker thread calls ATen: it takes the caller's grad mode,
    // inference mode and dispatch-key state, so that its tensors are what
    // the caller's would be (inference tensors under torch.inference_mode).
    const at::ThreadLocalState caller_state;
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      const at::ThreadLocalStateGuard guard(caller_state);
      for (int64_t direction = begin; direction < end; ++direction) run(direction);
    });
  } else {
    run(0);
    run(1);
  }
  auto& [output, h_n, c_n] = results[0];
  auto& [output_r, h_n_r, c_n_r] = results[1];
  return {output, h_n, c_n, output_r, h_n_r, c_n_r};
}

}  // namespace fusedlstm::cpu
