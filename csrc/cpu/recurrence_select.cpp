// Chooses between the fused recurrence (AVX-512 or AVX2) and the per-step
// BLAS loop.
#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#include "cpu/bf16_dot_build.h"
#include "cpu/recurrence.h"

namespace fusedlstm::cpu {

namespace {

enum class Requested { kAuto, kAvx512, kAvx2, kBlas };

Requested requested_by_environment() {
  const char* value = std::getenv("FUSEDLSTM_CPU_RECURRENCE");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return Requested::kAuto;
  }
  if (std::strcmp(value, "avx512") == 0) return Requested::kAvx512;
  if (std::strcmp(value, "avx2") == 0) return Requested::kAvx2;
  TORCH_CHECK(std::strcmp(value, "blas") == 0,
              "FUSEDLSTM_CPU_RECURRENCE must be 'auto', 'avx512', 'avx2' or "
              "'blas', got '", value, "'");
  return Requested::kBlas;
}

const char* detect_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  const Requested requested = requested_by_environment();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    return "";
  }
  if ((requested == Requested::kAuto || requested == Requested::kAvx512) &&
      __builtin_cpu_supports("avx512f")) {
    return "avx512";
  }
  return "avx2";
#else
  return "";
#endif
}

bool is_avx512() { return std::strcmp(fused_recurrence_isa(), "avx512") == 0; }

bool bf16_dot_available() {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
  static const bool available = is_avx512() &&
                                requested_by_environment() == Requested::kAuto &&
                                __builtin_cpu_supports("avx512bf16");
  return available;
#else
  return false;
#endif
}

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

bool bf16_recurrent_product(at::ScalarType dtype, bool has_proj) {
  return dtype == at::kBFloat16 && !has_proj && use_fused_recurrence(at::kFloat) &&
         bf16_dot_available();
}

void recurrent_forward_fused(const RecurrentForward& args) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
#if defined(__x86_64__) && defined(__GNUC__)
  if (args.bf16_dot) {
    TORCH_CHECK(bf16_recurrent_product(at::kBFloat16, args.w_hr != nullptr),
                "fusedlstm: bfloat16 dot products asked for where they do not run");
    TORCH_CHECK(args.w_hh16 != nullptr,
                "fusedlstm: bfloat16 dot products need W_hh in bfloat16");
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
    avx512bf16::recurrent_forward(args);
#endif
    return;
  }
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
  if (args.bf16_dot) {
    TORCH_CHECK(bf16_recurrent_product(at::kBFloat16, args.w_hr != nullptr),
                "fusedlstm: bfloat16 dot products asked for where they do not run");
    TORCH_CHECK(args.w_hh16 != nullptr,
                "fusedlstm: bfloat16 dot products need W_hh in bfloat16");
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
    avx512bf16::recurrent_backward(args);
#endif
    return;
  }
  if (is_avx512()) {
    avx512::recurrent_backward(args);
  } else {
    avx2::recurrent_backward(args);
  }
#endif
}

}  // namespace fusedlstm::cpu
