// Chooses between the fused recurrence (AVX-512 or AVX2) and the per-step
// BLAS loop.
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "common/env_choice.h"
#include "cpu/bf16_dot_build.h"
#include "cpu/recurrence.h"

namespace fusedlstm::cpu {

namespace {

enum class Requested { kAuto, kAvx512, kAvx2, kBlas };

Requested requested_by_environment() {
  // In the enum's order.
  return static_cast<Requested>(env_choice(
      "FUSEDLSTM_CPU_RECURRENCE", {"auto", "avx512", "avx2", "blas"}));
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

// FUSEDLSTM_CPU_AMX: auto (default), 0 (the bfloat16 dot products in
// AVX-512 BF16 even where AMX exists), 1 (raise where AMX cannot run).
enum class AmxRequest { kAuto, kOff, kOn };

AmxRequest amx_request() {
  // In the enum's order.
  return static_cast<AmxRequest>(env_choice("FUSEDLSTM_CPU_AMX", {"auto", "0", "1"}));
}

// The CPU has AMX tiles with bfloat16 products, the OS saves their state
// (XCR0 bits 17 and 18), and Linux lets this process use them (since 5.16
// a process asks once: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)).
bool amx_runs_here() {
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  const bool tile = (edx >> 24) & 1u, bf16 = (edx >> 22) & 1u;
  if (!tile || !bf16) return false;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !((ecx >> 27) & 1u)) {
    return false;  // no OSXSAVE: XCR0 cannot be read
  }
  unsigned xcr0_lo, xcr0_hi;
  asm volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if (((xcr0_lo >> 17) & 3u) != 3u) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

bool amx_tiles_available() {
  static const bool available = [] {
    const AmxRequest request = amx_request();
    if (request == AmxRequest::kOff) return false;
    const bool runs = bf16_dot_available() && amx_runs_here();
    TORCH_CHECK(runs || request == AmxRequest::kAuto,
                "FUSEDLSTM_CPU_AMX=1, but AMX bfloat16 tiles do not run here "
                "(they need a CPU with AMX-BF16, Linux 5.16+ and the bfloat16 "
                "dot-product build)");
    return runs;
  }();
  return available;
}

const char* fused_recurrence_isa() {
  static const char* isa = detect_isa();
  return isa;
}

bool fused_recurrence_supported() { return *fused_recurrence_isa() != '\0'; }

bool use_fused_recurrence(at::ScalarType compute) {
  static const bool allowed = requested_by_environment() != Requested::kBlas;
  return allowed && compute == at::kFloat && fused_recurrence_supported();
}

bool input_in_steps(int64_t steps, int64_t batch, int64_t w_ih_elements) {
  if (!use_fused_recurrence(at::kFloat)) return false;
  if (steps == 1) return batch <= kOneStepInputMaxBatch;
  return steps * batch <= kDirectMaxRows &&
         steps * w_ih_elements <= kStepsInputMaxReads;
}

bool few_rows_backward(int64_t rows, int64_t w_ih_elements, int64_t w_hh_elements) {
  return use_fused_recurrence(at::kFloat) && rows <= kFewRowsBackwardMaxRows &&
         w_ih_elements <= kFewRowsBackwardMaxWeights &&
         w_hh_elements <= kFewRowsBackwardMaxWeights;
}

bool backward_reads_w_hh_directly(int64_t rows, int64_t hidden, bool bf16_dot) {
  return rows <= kDirectBackwardMaxRows && (!bf16_dot || hidden >= kDirectBackwardBf16MinHidden);
}

bool few_rows_backward_bf16(int64_t rows, int64_t w_ih_elements, int64_t w_hh_elements) {
  return few_rows_backward(rows, w_ih_elements, w_hh_elements) &&
         rows * std::max(w_ih_elements, w_hh_elements) <= kFewRowsBf16MaxProducts;
}

bool bf16_recurrent_product(at::ScalarType dtype, bool has_proj) {
  return dtype == at::kBFloat16 && !has_proj && use_fused_recurrence(at::kFloat) &&
         bf16_dot_available();
}

#if defined(__x86_64__) && defined(__GNUC__)
namespace {

// Runs the build of a recurrence (forward or backward: Args) that the call
// asks for: the bfloat16 dot products where args.bf16_dot is set (checked to
// be available, with W_hh in bfloat16), else AVX-512 or AVX2.
template <typename Args>
void run_fused(const Args& args, void (*bf16_dot)(const Args&),
               void (*avx512_build)(const Args&), void (*avx2_build)(const Args&)) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
  if (args.bf16_dot) {
    TORCH_CHECK(bf16_dot != nullptr &&
                    bf16_recurrent_product(at::kBFloat16, args.w_hr != nullptr),
                "fusedlstm: bfloat16 dot products asked for where they do not run");
    TORCH_CHECK(args.w_hh16 != nullptr,
                "fusedlstm: bfloat16 dot products need W_hh in bfloat16");
    bf16_dot(args);
    return;
  }
  (is_avx512() ? avx512_build : avx2_build)(args);
}

}  // namespace

void recurrent_forward_fused(const RecurrentForward& args) {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
  constexpr auto bf16_dot = &avx512bf16::recurrent_forward;
#else
  constexpr void (*bf16_dot)(const RecurrentForward&) = nullptr;
#endif
  run_fused(args, bf16_dot, &avx512::recurrent_forward, &avx2::recurrent_forward);
}

void few_rows_product(const float* a, int64_t N, int64_t J, const float* w,
                      int64_t C, float* out) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
  (is_avx512() ? &avx512::few_rows_product : &avx2::few_rows_product)(a, N, J, w, C, out);
}

void few_rows_weight_gradient(const float* a, int64_t N, int64_t J,
                              const float* b, int64_t C, float* out) {
  TORCH_CHECK(fused_recurrence_supported(),
              "fusedlstm: the fused recurrence is not built for this CPU");
  (is_avx512() ? &avx512::few_rows_weight_gradient
               : &avx2::few_rows_weight_gradient)(a, N, J, b, C, out);
}

void few_rows_product_bf16(const uint16_t* a, int64_t N, int64_t J, const uint16_t* w,
                           int64_t C, float* out) {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
  TORCH_CHECK(bf16_recurrent_product(at::kBFloat16, false),
              "fusedlstm: bfloat16 dot products asked for where they do not run");
  avx512bf16::few_rows_product_bf16(a, N, J, w, C, out);
#else
  TORCH_CHECK(false, "fusedlstm: bfloat16 dot products are not built here");
#endif
}

void few_rows_weight_gradient_bf16(const uint16_t* a, int64_t N, int64_t J,
                                   const uint16_t* b, int64_t C, uint16_t* out) {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
  TORCH_CHECK(bf16_recurrent_product(at::kBFloat16, false),
              "fusedlstm: bfloat16 dot products asked for where they do not run");
  avx512bf16::few_rows_weight_gradient_bf16(a, N, J, b, C, out);
#else
  TORCH_CHECK(false, "fusedlstm: bfloat16 dot products are not built here");
#endif
}

void recurrent_backward_fused(const RecurrentBackward& args) {
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
  constexpr auto bf16_dot = &avx512bf16::recurrent_backward;
#else
  constexpr void (*bf16_dot)(const RecurrentBackward&) = nullptr;
#endif
  run_fused(args, bf16_dot, &avx512::recurrent_backward, &avx2::recurrent_backward);
}
#else
void recurrent_forward_fused(const RecurrentForward&) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}

void recurrent_backward_fused(const RecurrentBackward&) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}

void few_rows_product(const float*, int64_t, int64_t, const float*, int64_t, float*) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}

void few_rows_weight_gradient(const float*, int64_t, int64_t, const float*, int64_t,
                              float*) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}

void few_rows_product_bf16(const uint16_t*, int64_t, int64_t, const uint16_t*, int64_t,
                           float*) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}

void few_rows_weight_gradient_bf16(const uint16_t*, int64_t, int64_t, const uint16_t*,
                                   int64_t, uint16_t*) {
  TORCH_CHECK(false, "fusedlstm: the fused recurrence is not built for this CPU");
}
#endif

}  // namespace fusedlstm::cpu
