// The per-step fused cell kernels of the stepwise path (launched by
// cell_kernels.cu; cpp_tests/test_cell_kernels_emulated.cpp runs them on the
// host). One thread per (row, hidden unit): it reads the four gate
// preactivations of its unit, so the cell update needs no communication and
// the loads stay coalesced along the hidden axis.
#pragma once

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>

#include "cuda/cell_math.cuh"
#include "cuda/lstm_cuda.h"

namespace fusedlstm::cuda::stepwise {

inline constexpr int kThreads = 256;

// Enough blocks to fill an H100 several times over; the loops are
// grid-stride, so this only caps the launch size.
inline unsigned grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8));
}

template <typename scalar_t>
__global__ void cell_forward_kernel(CellForwardArgs a) {
  using op_t = at::opmath_type<scalar_t>;
  const int64_t H = a.H, n = a.rows * H;
  const scalar_t* __restrict__ rec = static_cast<const scalar_t*>(a.rec);
  scalar_t* __restrict__ gates = static_cast<scalar_t*>(a.gates);
  const op_t* __restrict__ bias = static_cast<const op_t*>(a.bias);
  op_t* __restrict__ c_state = static_cast<op_t*>(a.c_state);
  scalar_t* __restrict__ cells = static_cast<scalar_t*>(a.cells);
  scalar_t* __restrict__ hidden = static_cast<scalar_t*>(a.hidden);
  scalar_t* __restrict__ hidden2 = static_cast<scalar_t*>(a.hidden2);
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx - r * H;
    const int64_t g0 = r * 4 * H + j;
    // x W_ih^T and h W_hh^T are each rounded once to scalar_t by their
    // GEMMs; their sum with b_ih + b_hh (summed in opmath) is formed here
    // in opmath, never rounded.
    op_t pi = op_t(gates[g0]) + op_t(rec[g0]);
    op_t pf = op_t(gates[g0 + H]) + op_t(rec[g0 + H]);
    op_t pg = op_t(gates[g0 + 2 * H]) + op_t(rec[g0 + 2 * H]);
    op_t po = op_t(gates[g0 + 3 * H]) + op_t(rec[g0 + 3 * H]);
    if (bias != nullptr) {
      pi += bias[j];
      pf += bias[j + H];
      pg += bias[j + 2 * H];
      po += bias[j + 3 * H];
    }
    const CellOut<op_t> o = cell_forward_math<op_t>(pi, pf, pg, po, c_state[idx]);
    if (cells != nullptr) {  // kept for backward; inference keeps nothing
      gates[g0] = scalar_t(o.i);
      gates[g0 + H] = scalar_t(o.f);
      gates[g0 + 2 * H] = scalar_t(o.g);
      gates[g0 + 3 * H] = scalar_t(o.o);
      cells[idx] = scalar_t(o.c);
    }
    c_state[idx] = o.c;
    hidden[idx] = scalar_t(o.m);
    if (hidden2 != nullptr) hidden2[idx] = scalar_t(o.m);
  }
}

template <typename scalar_t>
__global__ void cell_backward_kernel(CellBackwardArgs a) {
  using op_t = at::opmath_type<scalar_t>;
  const int64_t H = a.H, P = a.P, n = a.rows * H;
  const scalar_t* gates = static_cast<const scalar_t*>(a.gates);
  const scalar_t* cells = static_cast<const scalar_t*>(a.cells);
  const scalar_t* c_prev = static_cast<const scalar_t*>(a.c_prev);
  const scalar_t* c0 = static_cast<const scalar_t*>(a.c0);
  const scalar_t* h_src = static_cast<const scalar_t*>(a.h_prev_src);
  const scalar_t* h0 = static_cast<const scalar_t*>(a.h0);
  scalar_t* h_prev = static_cast<scalar_t*>(a.h_prev);
  const scalar_t* dh_state = static_cast<const scalar_t*>(a.dh_state);
  const scalar_t* gout = static_cast<const scalar_t*>(a.grad_out);
  const scalar_t* dm_in = static_cast<const scalar_t*>(a.dm);
  op_t* dc_state = static_cast<op_t*>(a.dc_state);
  scalar_t* dgates = static_cast<scalar_t*>(a.dgates);
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < n;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / H, j = idx - r * H;
    const bool carried = r < a.carried;
    // The h_{t-1} gather for dW_hh rides along: P <= H, so the threads of
    // the first P units of a row cover it.
    if (j < P) {
      h_prev[r * P + j] = carried ? h_src[r * P + j] : h0[r * P + j];
    }
    const int64_t g0 = r * 4 * H + j;
    const op_t i = op_t(gates[g0]);
    const op_t f = op_t(gates[g0 + H]);
    const op_t g = op_t(gates[g0 + 2 * H]);
    const op_t o = op_t(gates[g0 + 3 * H]);
    const op_t cp = op_t(carried ? c_prev[idx] : c0[idx]);
    const op_t dm = dm_in != nullptr
                        ? op_t(dm_in[idx])
                        : op_t(dh_state[idx]) + op_t(gout[idx]);  // P == H here
    const CellGrad<op_t> d = cell_backward_math<op_t>(
        i, f, g, o, op_t(cells[idx]), cp, dm, dc_state[idx]);
    dgates[g0] = scalar_t(d.d_i);
    dgates[g0 + H] = scalar_t(d.d_f);
    dgates[g0 + 2 * H] = scalar_t(d.d_g);
    dgates[g0 + 3 * H] = scalar_t(d.d_o);
    dc_state[idx] = d.dc_prev;
  }
}

}  // namespace fusedlstm::cuda::stepwise
