#include "cpu/cell_dispatch.h"

namespace fusedlstm::cpu {

template <typename scalar_t>
CellKernels<scalar_t> cell_kernels_default();
#if defined(__x86_64__) && defined(__GNUC__)
template <typename scalar_t>
CellKernels<scalar_t> cell_kernels_avx2();
#endif

namespace {

bool has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

template <typename scalar_t>
CellKernels<scalar_t> select() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (has_avx2()) return cell_kernels_avx2<scalar_t>();
#endif
  return cell_kernels_default<scalar_t>();
}

}  // namespace

template <typename scalar_t>
const CellKernels<scalar_t>& cell_kernels() {
  static const CellKernels<scalar_t> kernels = select<scalar_t>();
  return kernels;
}
template const CellKernels<float>& cell_kernels<float>();
template const CellKernels<double>& cell_kernels<double>();

const char* cell_kernels_capability() { return has_avx2() ? "avx2" : "default"; }

}  // namespace fusedlstm::cpu
