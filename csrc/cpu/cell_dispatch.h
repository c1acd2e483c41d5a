// Entry points of the elementwise cell kernels (cell_kernels.h), dispatched
// once per process to the widest vector unit the CPU has: the per-step cell
// evaluates five transcendentals per hidden unit, and without AVX2 those run
// one lane at a time.
#pragma once

#include <cstdint>

namespace fusedlstm::cpu {

// Shapes as documented in cell_kernels.h.
template <typename scalar_t>
struct CellKernels {
  void (*forward)(int64_t rows, int64_t H, const scalar_t* pre,
                  scalar_t* gates, scalar_t* c_state, scalar_t* cells,
                  scalar_t* hidden, scalar_t* hidden2);
  void (*backward)(int64_t rows, int64_t H, const scalar_t* gates,
                   const scalar_t* cells, const scalar_t* c_prev,
                   const scalar_t* dm, scalar_t* dc, scalar_t* dgates);
};

// The kernels for this CPU; float and double only.
template <typename scalar_t>
const CellKernels<scalar_t>& cell_kernels();

// Name of the instruction set the kernels were chosen for ("avx2" or
// "default"), for diagnostics.
const char* cell_kernels_capability();

}  // namespace fusedlstm::cpu
