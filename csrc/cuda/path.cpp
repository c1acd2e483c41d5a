// FUSEDLSTM_CUDA_PATH and the kernel-argument copy of the schedule.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <limits>
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
  if (std::strcmp(v, "cluster") == 0) return PathMode::kCluster;
  TORCH_CHECK(false, "fusedlstm: FUSEDLSTM_CUDA_PATH must be auto, stepwise, "
              "persistent or cluster, got '", v, "'");
}

bool cluster_split_sync() {
  const char* v = std::getenv("FUSEDLSTM_CLUSTER_SYNC");
  if (v == nullptr || *v == '\0' || std::strcmp(v, "split") == 0) return true;
  if (std::strcmp(v, "whole") == 0) return false;
  TORCH_CHECK(false, "fusedlstm: FUSEDLSTM_CLUSTER_SYNC must be split or whole, got '",
              v, "'");
}

std::string make_schedule_table(const StepSchedule& sched, ScheduleTable* table) {
  table->runs = 0;
  // The kernels' step counter and the table's step indices are int; the
  // stepwise path counts steps in int64.
  if (sched.steps() > std::numeric_limits<int>::max()) return "more than 2^31 - 1 time steps";
  table->steps = static_cast<int>(sched.steps());
  for (int64_t t = 0; t < sched.steps(); ++t) {
    const int n = table->runs;
    if (n > 0 && table->batch[n - 1] == sched.batch_sizes[t]) continue;
    if (n == ScheduleTable::kMaxRuns) {
      return "batch_sizes has more than " + std::to_string(ScheduleTable::kMaxRuns) +
             " distinct values";
    }
    table->t_start[n] = static_cast<int>(t);
    table->batch[n] = static_cast<int>(sched.batch_sizes[t]);
    table->offset[n] = sched.offsets[t];
    table->runs = n + 1;
  }
  return "";
}

}  // namespace fusedlstm::cuda
