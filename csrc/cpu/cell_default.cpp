// The cell kernels compiled for the baseline instruction set of the build.
#define CPU_CAPABILITY DEFAULT
#include "cpu/cell_kernels.h"
#include "cpu/cell_dispatch.h"

namespace fusedlstm::cpu {

template <typename scalar_t>
CellKernels<scalar_t> cell_kernels_default() {
  return {&DEFAULT::cell_forward<scalar_t>, &DEFAULT::cell_backward<scalar_t>};
}
template CellKernels<float> cell_kernels_default<float>();
template CellKernels<double> cell_kernels_default<double>();

}  // namespace fusedlstm::cpu
