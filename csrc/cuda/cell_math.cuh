// Device-side cell math shared by the stepwise and persistent kernels. Math
// runs in opmath (float for half/bfloat16), as on the CPU.
#pragma once

#include <cuda_runtime.h>

namespace fusedlstm::cuda {

__device__ __forceinline__ float sigmoid_op(float x) {
  // expf(-x) overflows to inf for very negative x, giving exactly 0: no NaN.
  return 1.f / (1.f + expf(-x));
}
__device__ __forceinline__ double sigmoid_op(double x) {
  return 1.0 / (1.0 + exp(-x));
}
__device__ __forceinline__ float tanh_op(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_op(double x) { return tanh(x); }

// Activated gates and new cell from the four preactivations.
template <typename T>
struct CellOut {
  T i, f, g, o, c, m;  // m = o * tanh(c), the unprojected hidden state
};

template <typename T>
__device__ __forceinline__ CellOut<T> cell_forward_math(T pi, T pf, T pg,
                                                        T po, T c_prev) {
  CellOut<T> r;
  r.i = sigmoid_op(pi);
  r.f = sigmoid_op(pf);
  r.g = tanh_op(pg);
  r.o = sigmoid_op(po);
  r.c = r.f * c_prev + r.i * r.g;
  r.m = r.o * tanh_op(r.c);
  return r;
}

}  // namespace fusedlstm::cuda
