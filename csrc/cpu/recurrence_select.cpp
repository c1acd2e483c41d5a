// Chooses between the fused recurrence (AVX-512 or AVX2) and the per-step
// BLAS loop.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "cpu/recurrence.h"

namespace fusedlstm::cpu {

namespace {

enum class Requested { kAuto, kAvx2, kBlas };

Requested requested_by_environment() {
  const char* value = std::getenv("FUSEDLSTM_CPU_RECURRENCE");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return Requested::kAuto;
  }
  if (std::strcmp(value, "avx2") == 0) return Requested::kAvx2;
  TORCH_CHECK(std::strcmp(value, "blas") == 0,
              "FUSEDLSTM_CPU_RECURRENCE must be 'auto', 'avx2' or 'blas', got '",
              value, "'");
  return Requested::kBlas;
}

const char* detect_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  const Requested requested = requested_by_environment();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    return "";
  }
  if (requested == Requested::kAuto && __builtin_cpu_supports("avx512f")) {
    return "avx512";
  }
  return "avx2";
#else
  return "";
#endif
}

bool is_avx512() { return std::strcmp(fused_recurrence_isa(), "avx512") == 0; }

}  // namespace

const char* fused_recurrence_isa() {
  static const char* isa = detect_isa();
  return isa;
}

bool fused_recurrence_supported() { return *fused_recurrence_isa() != '\0'; }

bool use_fused_recurrence(at::ScalarType compute) {
  static const bool allowed = requested_by_environment() != Requested::kBlas;
  return allowed && compute == at::kFloat && fused_recurrence_supported();
}

void recurrent_forward_fused(const RecurrentForward& args) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
#if defined(__x86_64__) && defined(__GNUC__)
  if (is_avx512()) {
    avx512::recurrent_forward(args);
  } else {
    avx2::recurrent_forward(args);
  }
#endif
}

void recurrent_backward_fused(const RecurrentBackward& args) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
#if defined(__x86_64__) && defined(__GNUC__)
  if (is_avx512()) {
    avx512::recurrent_backward(args);
  } else {
    avx2::recurrent_backward(args);
  }
#endif
}

}  // namespace fusedlstm::cpu
