// The cell kernels compiled for AVX2 with FMA (x86-64 only); cell_dispatch
// calls them only on CPUs that have both. avx2_target.h comes before every
// include, so at::vec uses its 256-bit specialisations and Sleef's vector exp
// and tanh (exported by libtorch).
#if defined(__x86_64__) && defined(__GNUC__)
#include "cpu/avx2_target.h"  // first: see there
#include "cpu/cell_kernels.h"
#include "cpu/cell_dispatch.h"

namespace fusedlstm::cpu {

template <typename scalar_t>
CellKernels<scalar_t> cell_kernels_avx2() {
  return {&AVX2::cell_forward<scalar_t>, &AVX2::cell_backward<scalar_t>};
}
template CellKernels<float> cell_kernels_avx2<float>();
template CellKernels<double> cell_kernels_avx2<double>();

}  // namespace fusedlstm::cpu
#endif
