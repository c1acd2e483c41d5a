// Path selection and the device-side copy of the schedule.
#include <ATen/Context.h>
#include <torch/version.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda/lstm_cuda.h"
#include "cuda/persistent/persistent.h"

namespace fusedlstm::cuda {

PathMode requested_path() {
  // Read on every call, never cached: tests flip it between calls.
  const char* v = std::getenv("FUSEDLSTM_CUDA_PATH");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "auto") == 0) {
    return PathMode::kAuto;
  }
  if (std::strcmp(v, "stepwise") == 0) return PathMode::kStepwise;
  if (std::strcmp(v, "persistent") == 0) return PathMode::kPersistent;
  TORCH_CHECK(false, "fusedlstm: FUSEDLSTM_CUDA_PATH must be auto, stepwise "
              "or persistent, got '", v, "'");
}

bool make_schedule_table(const StepSchedule& sched, ScheduleTable* table) {
  table->runs = 0;
  table->steps = static_cast<int>(sched.steps());
  for (int64_t t = 0; t < sched.steps(); ++t) {
    const int n = table->runs;
    if (n > 0 && table->batch[n - 1] == sched.batch_sizes[t]) continue;
    if (n == ScheduleTable::kMaxRuns) return false;
    table->t_start[n] = static_cast<int>(t);
    table->batch[n] = static_cast<int>(sched.batch_sizes[t]);
    table->offset[n] = sched.offsets[t];
    table->runs = n + 1;
  }
  return true;
}

bool recurrent_tf32(at::ScalarType dtype) {
  if (dtype != at::kFloat) return false;
  // The RNN flag itself where torch has per-operator flags: asking without
  // an operator raises once a user has set the conv and RNN precisions apart
  // (torch.backends.cudnn.{conv,rnn}.fp32_precision).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 9
  return at::globalContext().allowTF32CuDNN("rnn");
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

std::string persistent_precondition(at::ScalarType dtype,
                                    const StepSchedule& sched, int64_t batch,
                                    int64_t hidden, ScheduleTable* table) {
  if (dtype == at::kDouble) return "float64 has no persistent kernel";
  if (!make_schedule_table(sched, table)) {
    return "batch_sizes has more than " +
           std::to_string(ScheduleTable::kMaxRuns) + " distinct values";
  }
  // The kernels index rows of one step and units with int.
  if (hidden > (int64_t(1) << 24) || batch > (int64_t(1) << 24)) {
    return "sizes too large";
  }
  return "";
}

void check_persistent_request(PathMode mode, const std::string& why_not,
                              const char* pass, int64_t H, int64_t P,
                              at::ScalarType dtype) {
  TORCH_CHECK(mode != PathMode::kPersistent || why_not.empty(),
              "fusedlstm: FUSEDLSTM_CUDA_PATH=persistent, but this layer "
              "cannot run on the persistent ", pass, " kernel: ", why_not,
              " (hidden_size=", H, ", state size=", P, ", dtype=", dtype,
              "). Use FUSEDLSTM_CUDA_PATH=auto or stepwise.");
}

}  // namespace fusedlstm::cuda
