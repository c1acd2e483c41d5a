#include "cpu/sequence_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <algorithm>
#include <climits>

#if defined(__linux__)
#include <dlfcn.h>
#endif

#include "common/env_choice.h"
#include "common/layer_args.h"
#include "cpu/fresh_buffer.h"

namespace fusedlstm::cpu {

namespace {

// at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha): result =
// beta * result + alpha * mat1 . mat2. Exported by libtorch_cpu but declared in
// a header the wheels do not ship, so it is looked up at run time: a PyTorch
// without it (or built without oneDNN) leaves the BLAS path, and the extension
// still loads.
using MkldnnMatmul = void (*)(const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, float, float);

// The Fortran BLAS sgemm: C = alpha op(A) op(B) + beta C, column-major,
// 32-bit sizes. libtorch_cpu exports MKL's (the x86-64 wheels link MKL in).
using Sgemm = void (*)(const char* transa, const char* transb, const int* m,
                       const int* n, const int* k, const float* alpha,
                       const float* a, const int* lda, const float* b,
                       const int* ldb, const float* beta, float* c,
                       const int* ldc);

MkldnnMatmul mkldnn_matmul() {
  static const auto fn = reinterpret_cast<MkldnnMatmul>(
      torch_cpu_symbol("_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff"));
  return fn;
}

Sgemm blas_sgemm() {
  static const auto fn = reinterpret_cast<Sgemm>(torch_cpu_symbol("sgemm_"));
  return fn;
}

bool cpu_has_avx512f() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512f");
#else
  return false;
#endif
}

enum class Requested { kAuto, kBlas, kOneDnn };

Requested requested_backend() {
  // In the enum's order.
  return static_cast<Requested>(env_choice("FUSEDLSTM_CPU_GEMM", {"auto", "blas", "onednn"}));
}

GemmBackend resolve_backend() {
  switch (requested_backend()) {
    case Requested::kBlas:
      return GemmBackend::kBlas;
    case Requested::kOneDnn:
      TORCH_CHECK(mkldnn_matmul() != nullptr,
                  "FUSEDLSTM_CPU_GEMM=onednn, but this PyTorch exports no "
                  "at::native::mkldnn_matmul");
      TORCH_CHECK(onednn_bf16_supported(),
                  "FUSEDLSTM_CPU_GEMM=onednn, but PyTorch's oneDNN matmul "
                  "refuses this CPU (it needs AVX-512 BW, VL and DQ, "
                  "AVX-NE-CONVERT or an Arm Graviton3); use "
                  "FUSEDLSTM_CPU_GEMM=blas or auto");
      return GemmBackend::kOneDnn;
    case Requested::kAuto:
      break;
  }
  return mkldnn_matmul() != nullptr && cpu_has_avx512f() && onednn_bf16_supported()
             ? GemmBackend::kOneDnn
             : GemmBackend::kBlas;
}

// Where torch.set_float32_matmul_precision("medium") (or
// torch.backends.mkldnn[.matmul].fp32_precision = "bf16"/"tf32") is in force,
// PyTorch runs every float32 CPU product it can in oneDNN with bfloat16 (or
// TF32) inputs: mkldnn_matmul reads the setting, and so does at::mm, which
// hands float32 products to oneDNN under it. nn.LSTM's oneDNN RNN ignores
// the setting and computes float32 exactly, so fusedlstm does too.
bool torch_reduces_float32_products() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  const at::Float32Precision p = at::globalContext().float32Precision(
      at::Float32Backend::MKLDNN, at::Float32Op::MATMUL);
  return p == at::Float32Precision::BF16 || p == at::Float32Precision::TF32;
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 9
  const std::string p = at::globalContext().float32Precision("mkldnn", "matmul");
  return p == "bf16" || p == "tf32";
#else
  return at::globalContext().float32MatmulPrecision() ==
         at::Float32MatmulPrecision::MEDIUM;
#endif
}

// A matrix operand as the Fortran BLAS takes it: 'N' with the leading
// dimension of a row-major [rows, cols] (whose column-major reading is its
// transpose), 'T' with that of a column-major one; any other layout is
// copied to row-major first (`owner` keeps the copy alive).
struct BlasOperand {
  char trans;
  int ld;
  const float* data;
  at::Tensor owner;
};

BlasOperand blas_operand(const at::Tensor& t) {
  const int64_t rows = t.size(0), cols = t.size(1);
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, cols) &&
      t.stride(0) <= INT_MAX) {
    return {'N', static_cast<int>(t.stride(0)), t.const_data_ptr<float>(), {}};
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, rows) &&
      t.stride(1) <= INT_MAX) {
    return {'T', static_cast<int>(t.stride(1)), t.const_data_ptr<float>(), {}};
  }
  at::Tensor copy = t.contiguous();
  return {'N', static_cast<int>(std::max<int64_t>(1, cols)),
          copy.const_data_ptr<float>(), copy};
}

// out (+)= a . b for float32, exactly, whatever PyTorch's matmul precision:
// MKL's sgemm itself (what at::mm calls when no reduced precision is set);
// without an sgemm to call (a PyTorch that exports none), or for sizes or
// layouts it cannot take, in float64 rounded once: as exact, slower.
void exact_float_gemm(const at::Tensor& out, const at::Tensor& a,
                      const at::Tensor& b, bool accumulate) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  if (M == 0 || N == 0) return;
  const bool fits = std::max({M, N, K}) <= INT_MAX && out.stride(1) == 1 &&
                    out.stride(0) >= std::max<int64_t>(1, N) &&
                    out.stride(0) <= INT_MAX;
  if (detail::sgemm_available() && fits && K > 0) {
    detail::float_gemm_by_sgemm(out, a, b, accumulate);
  } else {
    detail::float_gemm_by_double(out, a, b, accumulate);
  }
}

}  // namespace

void* torch_cpu_symbol(const char* name) {
#if defined(__linux__)
  void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  return torch_cpu == nullptr ? nullptr : dlsym(torch_cpu, name);
#else
  (void)name;
  return nullptr;
#endif
}

GemmBackend float_gemm_backend() {
  static const GemmBackend backend = resolve_backend();
  return backend;
}

bool onednn_gemm_forced() {
  static const bool forced = requested_backend() == Requested::kOneDnn;
  return forced;
}

void gemm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  TORCH_CHECK(b.size(0) == K && out.size(0) == M && out.size(1) == N &&
                  out.is_contiguous(),
              "fusedlstm: gemm_out shapes ", a.sizes(), " . ", b.sizes(),
              " -> ", out.sizes());
  // A product with a dimension of 1 (a vector-matrix product, or the
  // outer product of one row's weight gradient) is memory-bound, and BLAS
  // streams it at twice oneDNN's speed (H = 1024, 1 thread, caches cold:
  // x W_ih^T 0.7 against 1.5 ms, each weight gradient 0.5 against 0.9 ms);
  // from 2 rows on oneDNN is the faster (NOTES change 23).
  if (a.scalar_type() == at::kFloat && torch_reduces_float32_products()) {
    exact_float_gemm(out, a, b, /*accumulate=*/false);
    return;
  }
  const bool large = (M * N * K >= kOneDnnMinMacs && std::min({M, N, K}) > 1) ||
                     onednn_gemm_forced();
  if (a.scalar_type() == at::kFloat && M > 0 && N > 0 && K > 0 && large &&
      float_gemm_backend() == GemmBackend::kOneDnn) {
    mkldnn_matmul()(a, b, out, /*beta=*/0.0f, /*alpha=*/1.0f);
    return;
  }
  at::Tensor result = out;
  at::mm_out(result, a, b);
}

namespace detail {

bool sgemm_available() { return blas_sgemm() != nullptr; }

void float_gemm_by_sgemm(const at::Tensor& out, const at::Tensor& a,
                         const at::Tensor& b, bool accumulate) {
  TORCH_CHECK(sgemm_available(), "fusedlstm: this PyTorch exports no sgemm_");
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  // Row-major out = a . b is column-major out^T = b^T . a^T.
  const BlasOperand x = blas_operand(b), y = blas_operand(a);
  const int m = static_cast<int>(N), n = static_cast<int>(M),
            k = static_cast<int>(K), ldc = static_cast<int>(out.stride(0));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  blas_sgemm()(&x.trans, &y.trans, &m, &n, &k, &alpha, x.data, &x.ld, y.data,
               &y.ld, &beta, out.data_ptr<float>(), &ldc);
}

void float_gemm_by_double(const at::Tensor& out, const at::Tensor& a,
                          const at::Tensor& b, bool accumulate) {
  at::Tensor product = at::mm(a.to(at::kDouble), b.to(at::kDouble));
  if (accumulate) product.add_(out.to(at::kDouble));
  out.copy_(product);
}

}  // namespace detail

void blas_mm_out(const at::Tensor& out, const at::Tensor& a,
                 const at::Tensor& b, bool accumulate) {
  if (a.scalar_type() == at::kFloat && torch_reduces_float32_products()) {
    exact_float_gemm(out, a, b, accumulate);
    return;
  }
  at::Tensor result = out;
  if (accumulate) {
    result.addmm_(a, b);
  } else {
    at::mm_out(result, a, b);
  }
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = empty_fresh({a.size(0), b.size(1)}, a.options());
  gemm_out(out, a, b);
  return out;
}

}  // namespace fusedlstm::cpu
