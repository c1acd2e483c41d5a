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

// Column-major c[m x n] = op(a) op(b), overwriting c (beta = 0).
void column_major(GemmBf16Bf16F32 gemm, const char* transa, const char* transb,
                  int64_t m, int64_t n, int64_t k, const uint16_t* a, int64_t lda,
                  const uint16_t* b, int64_t ldb, float* c, int64_t ldc) {
  const float alpha = 1.0f, beta = 0.0f;
  gemm(transa, transb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

// Row-major out = x w^T is column-major out^T = w x^T: a = w read
// transposed (column-major [depth x cols]), b = x ([depth x rows]).
void call_nt(GemmBf16Bf16F32 gemm, const uint16_t* x, int64_t ldx,
             const uint16_t* w, int64_t ldw, float* out, int64_t ldo,
             int64_t rows, int64_t cols, int64_t depth) {
  column_major(gemm, "T", "N", cols, rows, depth, w, ldw, x, ldx, out, ldo);
}

// Row-major out = a^T b, a [depth x rows], b [depth x cols]: column-major
// out^T = b^T a, b's rows read as the columns of b^T ("N") and a read
// transposed ("T").
void call_tn(GemmBf16Bf16F32 gemm, const uint16_t* a, int64_t lda,
             const uint16_t* b, int64_t ldb, float* out, int64_t ldo,
             int64_t rows, int64_t cols, int64_t depth) {
  column_major(gemm, "N", "T", cols, rows, depth, b, ldb, a, lda, out, ldo);
}

uint16_t bf16_bits_of_small_integer(int v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  return static_cast<uint16_t>(bits >> 16);  // exact: |v| < 256
}

// Products whose every value is an exact small integer, with padded row
// strides and a result buffer full of NaN (beta = 0 must overwrite it), once
// in each form the callers use: a routine with another calling convention or
// layout cannot pass them.
bool passes_self_check(GemmBf16Bf16F32 gemm) {
  constexpr int64_t rows = 3, cols = 5, depth = 7;
  const auto x_value = [](int64_t r, int64_t k) { return static_cast<int>((r * 3 + k) % 7) - 3; };
  const auto w_value = [](int64_t c, int64_t k) { return static_cast<int>((c * 5 + k * 2) % 9) - 4; };
  const auto matches = [&](const std::vector<float>& out, int64_t ldo) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        int expected = 0;
        for (int64_t k = 0; k < depth; ++k) expected += x_value(r, k) * w_value(c, k);
        if (out[r * ldo + c] != static_cast<float>(expected)) return false;
      }
    }
    return true;
  };
  // out = x w^T: x [rows x depth], w [cols x depth].
  constexpr int64_t ldx = 9, ldw = 8, ldo = 6;
  std::vector<uint16_t> x(rows * ldx), w(cols * ldw);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < ldx; ++k) x[r * ldx + k] = bf16_bits_of_small_integer(x_value(r, k));
  }
  for (int64_t c = 0; c < cols; ++c) {
    for (int64_t k = 0; k < ldw; ++k) w[c * ldw + k] = bf16_bits_of_small_integer(w_value(c, k));
  }
  std::vector<float> out(rows * ldo, std::nanf(""));
  call_nt(gemm, x.data(), ldx, w.data(), ldw, out.data(), ldo, rows, cols, depth);
  if (!matches(out, ldo)) return false;
  // out = a^T b: a [depth x rows] (x transposed), b [depth x cols].
  constexpr int64_t lda = 4, ldb = 7, ldo_tn = 8;
  std::vector<uint16_t> a(depth * lda), b(depth * ldb);
  for (int64_t k = 0; k < depth; ++k) {
    for (int64_t r = 0; r < lda; ++r) a[k * lda + r] = bf16_bits_of_small_integer(x_value(r, k));
    for (int64_t c = 0; c < ldb; ++c) b[k * ldb + c] = bf16_bits_of_small_integer(w_value(c, k));
  }
  std::vector<float> out_tn(rows * ldo_tn, std::nanf(""));
  call_tn(gemm, a.data(), lda, b.data(), ldb, out_tn.data(), ldo_tn, rows, cols, depth);
  return matches(out_tn, ldo_tn);
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

// Runs `product` with the checked routine, once the degenerate sizes are
// done: nothing to write, or a zero depth (BLAS wants leading dimensions of
// at least 1), whose result is zero.
template <typename Product>
void checked_product(float* out, int64_t ldo, int64_t rows, int64_t cols,
                     int64_t depth, const Product& product) {
  const GemmBf16Bf16F32 gemm = routine();
  TORCH_INTERNAL_ASSERT(gemm != nullptr, "MKL's bfloat16 GEMM is not available");
  if (rows == 0 || cols == 0) return;
  if (depth == 0) {
    for (int64_t r = 0; r < rows; ++r) std::memset(out + r * ldo, 0, cols * sizeof(float));
    return;
  }
  product(gemm);
}

}  // namespace

bool mkl_bf16_gemm_available() { return routine() != nullptr; }

void mkl_bf16_gemm_nt(const uint16_t* x, int64_t ldx, const uint16_t* w,
                      int64_t ldw, float* out, int64_t ldo, int64_t rows,
                      int64_t cols, int64_t depth) {
  checked_product(out, ldo, rows, cols, depth, [&](GemmBf16Bf16F32 gemm) {
    call_nt(gemm, x, ldx, w, ldw, out, ldo, rows, cols, depth);
  });
}

void mkl_bf16_gemm_tn(const uint16_t* a, int64_t lda, const uint16_t* b,
                      int64_t ldb, float* out, int64_t ldo, int64_t rows,
                      int64_t cols, int64_t depth) {
  checked_product(out, ldo, rows, cols, depth, [&](GemmBf16Bf16F32 gemm) {
    call_tn(gemm, a, lda, b, ldb, out, ldo, rows, cols, depth);
  });
}

}  // namespace fusedlstm::cpu
