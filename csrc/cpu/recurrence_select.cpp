// Chooses between the fused recurrence and the per-step BLAS loop.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "cpu/recurrence.h"

namespace fusedlstm::cpu {

namespace {

bool fused_allowed_by_environment() {
  const char* value = std::getenv("FUSEDLSTM_CPU_RECURRENCE");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return true;
  }
  TORCH_CHECK(std::strcmp(value, "blas") == 0,
              "FUSEDLSTM_CPU_RECURRENCE must be 'auto' or 'blas', got '", value,
              "'");
  return false;
}

}  // namespace

bool use_fused_recurrence(at::ScalarType compute) {
  static const bool allowed = fused_allowed_by_environment();
  return allowed && compute == at::kFloat && fused_recurrence_supported();
}

}  // namespace fusedlstm::cpu
