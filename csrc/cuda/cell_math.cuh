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

// Gradients of one cell, given the activated gates, c_t and c_{t-1} saved by
// forward, the gradient dm reaching m = o * tanh(c_t) and dc_next reaching
// c_t from the later step.
template <typename T>
struct CellGrad {
  T d_i, d_f, d_g, d_o;  // gradients of the four preactivations
  T dc_prev;             // gradient reaching c_{t-1}
};

template <typename T>
__device__ __forceinline__ CellGrad<T> cell_backward_math(T i, T f, T g, T o,
                                                          T c, T c_prev, T dm,
                                                          T dc_next) {
  const T one(1);
  const T tc = tanh_op(c);
  const T dc = dc_next + dm * o * (one - tc * tc);
  CellGrad<T> r;
  r.d_i = dc * g * i * (one - i);
  r.d_f = dc * c_prev * f * (one - f);
  r.d_g = dc * i * (one - g * g);
  r.d_o = dm * tc * o * (one - o);
  r.dc_prev = dc * f;
  return r;
}

}  // namespace fusedlstm::cuda
