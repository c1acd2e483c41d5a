// Launches of the per-step fused cell kernels of the stepwise path
// (cell_kernels.cuh), one instantiation per floating dtype.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <atomic>
#include <cstdlib>
#include <string>

#include "cuda/cell_kernels.cuh"

namespace fusedlstm::cuda {

namespace {

// This build's GPU targets ("sm_80, sm_90"), from nvcc's __CUDA_ARCH_LIST__
// ("800,900"): what TORCH_CUDA_ARCH_LIST was when it was compiled.
std::string built_targets() {
#ifdef __CUDA_ARCH_LIST__
#define FUSEDLSTM_STRINGIFY_LIST(...) #__VA_ARGS__
#define FUSEDLSTM_LIST_STRING(...) FUSEDLSTM_STRINGIFY_LIST(__VA_ARGS__)
  const char* list = FUSEDLSTM_LIST_STRING(__CUDA_ARCH_LIST__);
  std::string out;
  for (const char* p = list; *p != '\0';) {
    char* end = nullptr;
    const long arch = std::strtol(p, &end, 10);
    if (end == p) break;
    out += (out.empty() ? "sm_" : ", sm_") + std::to_string(arch / 10);
    p = (*end == ',') ? end + 1 : end;
  }
  return out;
#else
  return "no GPU target (a host emulation build)";
#endif
}

}  // namespace

void check_kernel_image(int device) {
  // Devices already found to run this build's code; one query each.
  static std::atomic<uint64_t> checked{0};
  const uint64_t bit = uint64_t(1) << (static_cast<unsigned>(device) & 63u);
  if (checked.load(std::memory_order_acquire) & bit) return;
  cudaFuncAttributes attr;
  const cudaError_t err = cudaFuncGetAttributes(
      &attr, reinterpret_cast<const void*>(&stepwise::cell_forward_kernel<float>));
  if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction) {
    (void)cudaGetLastError();  // reported here, not by the next CUDA call
    int major = 0, minor = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    TORCH_CHECK(false, "fusedlstm: this build has no GPU code for cuda:", device,
                " (compute capability ", major, ".", minor, "): it was built for ",
                built_targets(), ". Reinstall it with that capability in "
                "TORCH_CUDA_ARCH_LIST, e.g. TORCH_CUDA_ARCH_LIST=\"", major, ".", minor,
                "\" pip install --no-build-isolation .");
  }
  C10_CUDA_CHECK(err);
  checked.fetch_or(bit, std::memory_order_release);
}

using stepwise::cell_backward_kernel;
using stepwise::cell_forward_kernel;
using stepwise::grid_for;
using stepwise::kThreads;

// A launch of kernel(args) with one thread per cell (grid-stride beyond
// grid_for's cap), on `stream`; under the host emulation
// (cpp_tests/cuda_emulation) a call on the host threads.
template <typename Args>
void launch_cells(void (*kernel)(Args), const Args& a, int64_t n, cudaStream_t stream) {
#ifdef FUSEDLSTM_CUDA_EMULATION
  emu::launch(dim3(grid_for(n)), dim3(kThreads), 0, [&] { kernel(a); });
#else
  kernel<<<grid_for(n), kThreads, 0, stream>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
}

void launch_cell_forward(at::ScalarType dtype, const CellForwardArgs& a,
                         cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "fusedlstm_cell_forward_cuda", [&] {
        launch_cells(&cell_forward_kernel<scalar_t>, a, n, stream);
      });
}

void launch_cell_backward(at::ScalarType dtype, const CellBackwardArgs& a,
                          cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "fusedlstm_cell_backward_cuda", [&] {
        launch_cells(&cell_backward_kernel<scalar_t>, a, n, stream);
      });
}

}  // namespace fusedlstm::cuda
