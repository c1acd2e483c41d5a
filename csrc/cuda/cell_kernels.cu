// Launches of the per-step fused cell kernels of the stepwise path
// (cell_kernels.cuh), one instantiation per floating dtype.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "cuda/cell_kernels.cuh"

namespace fusedlstm::cuda {

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
