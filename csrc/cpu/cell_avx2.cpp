// The cell kernels compiled for AVX2 with FMA (x86-64 only); cell_dispatch
// calls them only on CPUs that have both. This file alone needs the flags, and
// setuptools has no per-file flags, so the pragma and the feature macros that
// -mavx2 -mfma would set come first, before every include: at::vec then uses
// its 256-bit specialisations and Sleef's vector exp and tanh (exported by
// libtorch), which sleef.h declares only under __AVX2__.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx,avx2,fma,f16c")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
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
