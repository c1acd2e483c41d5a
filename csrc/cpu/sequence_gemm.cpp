#include "cpu/sequence_gemm.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <dlfcn.h>
#endif

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

MkldnnMatmul find_mkldnn_matmul() {
#if defined(__linux__)
  void* torch_cpu = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
  if (torch_cpu == nullptr) return nullptr;
  void* symbol =
      dlsym(torch_cpu, "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff");
  return reinterpret_cast<MkldnnMatmul>(symbol);
#else
  return nullptr;
#endif
}

MkldnnMatmul mkldnn_matmul() {
  static const MkldnnMatmul fn = find_mkldnn_matmul();
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
  const char* value = std::getenv("FUSEDLSTM_CPU_GEMM");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "auto") == 0) {
    return Requested::kAuto;
  }
  if (std::strcmp(value, "blas") == 0) return Requested::kBlas;
  TORCH_CHECK(std::strcmp(value, "onednn") == 0,
              "FUSEDLSTM_CPU_GEMM must be 'auto', 'blas' or 'onednn', got '",
              value, "'");
  return Requested::kOneDnn;
}

GemmBackend resolve_backend() {
  switch (requested_backend()) {
    case Requested::kBlas:
      return GemmBackend::kBlas;
    case Requested::kOneDnn:
      TORCH_CHECK(mkldnn_matmul() != nullptr,
                  "FUSEDLSTM_CPU_GEMM=onednn, but this PyTorch exports no "
                  "at::native::mkldnn_matmul");
      return GemmBackend::kOneDnn;
    case Requested::kAuto:
      break;
  }
  return mkldnn_matmul() != nullptr && cpu_has_avx512f() ? GemmBackend::kOneDnn
                                                         : GemmBackend::kBlas;
}

}  // namespace

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

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor out = empty_fresh({a.size(0), b.size(1)}, a.options());
  gemm_out(out, a, b);
  return out;
}

}  // namespace fusedlstm::cpu
