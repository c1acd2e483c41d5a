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

void launch_cell_forward(at::ScalarType dtype, const CellForwardArgs& a,
                         cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "fusedlstm_cell_forward_cuda", [&] {
        using op_t = at::opmath_type<scalar_t>;
        cell_forward_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(
            a.rows, a.H, static_cast<const scalar_t*>(a.rec),
            static_cast<scalar_t*>(a.gates), static_cast<op_t*>(a.c_state),
            static_cast<scalar_t*>(a.cells), static_cast<scalar_t*>(a.hidden),
            static_cast<scalar_t*>(a.hidden2));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

void launch_cell_backward(at::ScalarType dtype, const CellBackwardArgs& a,
                          cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "fusedlstm_cell_backward_cuda", [&] {
        cell_backward_kernel<scalar_t><<<grid_for(n), kThreads, 0, stream>>>(a);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace fusedlstm::cuda
