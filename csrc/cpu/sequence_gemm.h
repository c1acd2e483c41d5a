// The whole-sequence GEMMs of the CPU layers: the input projection and the
// backward's dX, dW_ih, dW_hh and dW_hr.
//
// Why not always at::mm: PyTorch's CPU wheels run float32 at::mm in MKL, which
// takes its AVX2 path on AMD CPUs, while the same wheel's oneDNN (the library
// behind nn.LSTM on the CPU) runs AVX-512 there. On a Zen 5 core that is half
// the float32 rate: 6400 x 512 by 512 x 2048 on 2 threads took 78 ms in MKL and
// 42 ms in oneDNN, and the transposed products of the weight gradients 65 ms
// against 33 ms. Both compute the float32 product exactly in float32 (only the
// summation order differs), so the choice changes rounding, not the function.
#pragma once

#include <ATen/core/Tensor.h>

namespace fusedlstm::cpu {

enum class GemmBackend { kBlas, kOneDnn };

// The backend for float32 products of at least kOneDnnMinMacs multiply-adds
// (below that oneDNN's ~10 us per call costs more than it saves):
// FUSEDLSTM_CPU_GEMM=auto (default: oneDNN where the CPU has AVX-512F and
// PyTorch's oneDNN matmul can be found and takes this CPU, else BLAS), blas,
// or onednn (raises where it is unavailable; with it every float32 product,
// however small, takes oneDNN, which is how the tests reach it on small
// shapes).
GemmBackend float_gemm_backend();
bool onednn_gemm_forced();
constexpr int64_t kOneDnnMinMacs = int64_t{1} << 18;

// Every product here is exact in the operands' dtype: float32 ones stay
// float32 where torch.set_float32_matmul_precision("medium") (or oneDNN's
// fp32_precision = "bf16"/"tf32") lets PyTorch round float32 CPU products to
// bfloat16 or TF32, as nn.LSTM's oneDNN RNN does.

// out = a . b. a: [M, K], b: [K, N], any strides (transposed views included);
// out: [M, N], contiguous, float or double like a and b. Overwrites out.
void gemm_out(const at::Tensor& out, const at::Tensor& a, const at::Tensor& b);

// The per-step products of the BLAS loops: out = a . b, or out += a . b
// with `accumulate`, always in BLAS (at::mm_out / addmm_). out: [M, N] rows
// of a contiguous buffer (stride(1) == 1).
void blas_mm_out(const at::Tensor& out, const at::Tensor& a,
                 const at::Tensor& b, bool accumulate);

namespace detail {
// The two exact float32 products the above take where PyTorch's matmul
// precision is reduced (exposed for cpp_tests/test_exact_gemm.cpp):
// out (+)= a . b through the BLAS sgemm libtorch exports (a and b any 2-D
// layout; out rows with stride(1) == 1, stride(0) >= N; sizes below 2^31),
// or in float64 rounded once into out.
bool sgemm_available();
void float_gemm_by_sgemm(const at::Tensor& out, const at::Tensor& a,
                         const at::Tensor& b, bool accumulate);
void float_gemm_by_double(const at::Tensor& out, const at::Tensor& a,
                          const at::Tensor& b, bool accumulate);
}  // namespace detail

// a . b into a new contiguous tensor (large ones advised for huge pages).
at::Tensor gemm(const at::Tensor& a, const at::Tensor& b);

// A routine that libtorch_cpu exports but whose header the wheels do not ship
// (oneDNN's matmul, MKL's BLAS), by its symbol name; nullptr where this
// PyTorch lacks it (or off Linux), so the extension still loads and the
// caller keeps its own path.
void* torch_cpu_symbol(const char* name);

}  // namespace fusedlstm::cpu
