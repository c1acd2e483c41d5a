#include "cpu/mkl_bf16_gemm.h"

#include <c10/util/Exception.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/env_choice.h"
#include "cpu/recurrence.h"
#include "cpu/sequence_gemm.h"

namespace fusedlstm::cpu {

namespace {

// MKL's Fortran-style gemm_bf16bf16f32 with 64-bit integers (the _64 name
// takes 64-bit integers whichever integer interface the library was linked
// with, so the call cannot misread them). Column-major:
// c[m x n] = alpha * op(a) op(b) + beta * c.
using GemmBf16Bf16F32 = void (*)(const char* transa, const char* transb,
                                 const int64_t* m, const int64_t* n,
                                 const int64_t* k, const float* alpha,
                                 const uint16_t* a, const int64_t* lda,
                                 const uint16_t* b, const int64_t* ldb,
                                 const float* beta, float* c,
                                 const int64_t* ldc);

constexpr const char* kSymbol = "gemm_bf16bf16f32_64";

void call(GemmBf16Bf16F32 gemm, const uint16_t* x, int64_t ldx,
          const uint16_t* w, int64_t ldw, float* out, int64_t ldo,
          int64_t rows, int64_t cols, int64_t depth) {
  // Row-major out = x w^T is column-major out^T = w x^T: a = w read
  // transposed (column-major [depth x cols]), b = x ([depth x rows]).
  const float alpha = 1.0f, beta = 0.0f;
  gemm("T", "N", &cols, &rows, &depth, &alpha, w, &ldw, x, &ldx, &beta, out,
       &ldo);
}

uint16_t bf16_bits_of_small_integer(int v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return static_cast<uint16_t>(bits >> 16);  // exact: |v| < 256
}

// A product whose every value is an exact small integer, with padded row
// strides and a result buffer full of NaN (beta = 0 must overwrite it): a
// routine with another calling convention or layout cannot pass it.
bool passes_self_check(GemmBf16Bf16F32 gemm) {
  constexpr int64_t rows = 3, cols = 5, depth = 7;
  constexpr int64_t ldx = 9, ldw = 8, ldo = 6;
  std::vector<uint16_t> x(rows * ldx), w(cols * ldw);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < ldx; ++k) {
      x[r * ldx + k] = bf16_bits_of_small_integer(static_cast<int>((r * 3 + k) % 7) - 3);
    }
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t k = 0; k < ldw; ++k) {
      w[c * ldw + k] = bf16_bits_of_small_integer(static_cast<int>((c * 5 + k * 2) % 9) - 4);
    }
  }
  std::vector<float> out(rows * ldo, std::nanf(""));
  call(gemm, x.data(), ldx, w.data(), ldw, out.data(), ldo, rows, cols, depth);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      int expected = 0;
      for (int64_t k = 0; k < depth; ++k) {
        expected += (static_cast<int>((r * 3 + k) % 7) - 3) *
                    (static_cast<int>((c * 5 + k * 2) % 9) - 4);
      }
      if (out[r * ldo + c] != static_cast<float>(expected)) return false;
    }
  }
  return true;
}

// FUSEDLSTM_CPU_MKL_BF16: auto (default), 0 (our own tiles), 1 (raise where
// MKL's routine cannot run).
enum class MklRequest { kAuto, kOff, kOn };

MklRequest mkl_request() {
  // In the enum's order.
  return static_cast<MklRequest>(env_choice("FUSEDLSTM_CPU_MKL_BF16", {"auto", "0", "1"}));
}

GemmBf16Bf16F32 routine() {
  static const GemmBf16Bf16F32 checked = []() -> GemmBf16Bf16F32 {
    const MklRequest request = mkl_request();
    if (request == MklRequest::kOff) return nullptr;
    GemmBf16Bf16F32 found = nullptr;
    if (amx_tiles_available()) {
      found = reinterpret_cast<GemmBf16Bf16F32>(torch_cpu_symbol(kSymbol));
      if (found != nullptr && !passes_self_check(found)) found = nullptr;
    }
    TORCH_CHECK(found != nullptr || request == MklRequest::kAuto,
                "FUSEDLSTM_CPU_MKL_BF16=1, but MKL's bfloat16 GEMM does not "
                "run here (it needs AMX tiles in use and a PyTorch built with "
                "MKL that exports ", kSymbol, ")");
    return found;
  }();
  return checked;
}

}  // namespace

bool mkl_bf16_gemm_available() { return routine() != nullptr; }

void mkl_bf16_gemm_nt(const uint16_t* x, int64_t ldx, const uint16_t* w,
                      int64_t ldw, float* out, int64_t ldo, int64_t rows,
                      int64_t cols, int64_t depth) {
  const GemmBf16Bf16F32 gemm = routine();
  TORCH_INTERNAL_ASSERT(gemm != nullptr, "MKL's bfloat16 GEMM is not available");
  if (rows == 0 || cols == 0) return;
  if (depth == 0) {  // BLAS wants leading dimensions of at least 1
    for (int64_t r = 0; r < rows; ++r) std::memset(out + r * ldo, 0, cols * sizeof(float));
    return;
  }
  call(gemm, x, ldx, w, ldw, out, ldo, rows, cols, depth);
}

}  // namespace fusedlstm::cpu
