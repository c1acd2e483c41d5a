// The per-step elementwise LSTM cell, forward and backward, on a block of
// rows, in float or double (reduced types are widened before they get here),
// vectorised with at::vec; rows are spread over threads with at::parallel_for.
//
// Included only by the cell_*.cpp files, each compiling it for one CPU
// capability: like ATen, the code lives in an inline namespace named after the
// capability, so the copies never collide at link time. Call the kernels
// through cell_dispatch.h.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace fusedlstm::cpu {
inline namespace CPU_CAPABILITY {

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
inline Vec<T> sigmoid(const Vec<T>& x) {
  const Vec<T> one(T(1));
  return one / (one + x.neg().exp());
}

// Rows per task: enough elements that a thread's share outweighs waking it.
inline int64_t rows_per_task(int64_t width) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(width, 1));
}

// Forward cell over rows [0, rows). Per row r:
//   pre:     [4H] preactivations, x W_ih^T + b + h W_hh^T
//   gates:   [4H] out, activated (i, f, g, o); may alias pre
//   c_state: [H]  in: c_{t-1}, out: c_t
//   cells:   [H]  out: c_t
//   hidden:  [H]  out: o * tanh(c_t) (h_t, or its input to the projection)
//   hidden2: [H]  optional second copy of hidden (nullptr for none)
template <typename scalar_t>
void cell_forward(int64_t rows, int64_t H, const scalar_t* pre,
                  scalar_t* gates, scalar_t* c_state, scalar_t* cells,
                  scalar_t* hidden, scalar_t* hidden2) {
  using V = Vec<scalar_t>;
  constexpr int64_t W = V::size();
  at::parallel_for(0, rows, rows_per_task(4 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const scalar_t* p = pre + r * 4 * H;
      scalar_t* g_out = gates + r * 4 * H;
      scalar_t* c = c_state + r * H;
      for (int64_t j = 0; j < H; j += W) {
        const int64_t n = std::min(W, H - j);
        const V i = sigmoid(V::loadu(p + j, n));
        const V f = sigmoid(V::loadu(p + H + j, n));
        const V g = V::loadu(p + 2 * H + j, n).tanh();
        const V o = sigmoid(V::loadu(p + 3 * H + j, n));
        const V c_new = f * V::loadu(c + j, n) + i * g;
        const V h = o * c_new.tanh();
        i.store(g_out + j, n);
        f.store(g_out + H + j, n);
        g.store(g_out + 2 * H + j, n);
        o.store(g_out + 3 * H + j, n);
        c_new.store(c + j, n);
        c_new.store(cells + r * H + j, n);
        h.store(hidden + r * H + j, n);
        if (hidden2 != nullptr) h.store(hidden2 + r * H + j, n);
      }
    }
  });
}

// Backward cell over rows [0, rows). Per row r:
//   gates:   [4H] activated gates of the step     cells: [H] c_t
//   c_prev:  [H]  c_{t-1}
//   dm:      [H]  gradient reaching o * tanh(c_t)
//   dc:      [H]  in: gradient reaching c_t from step t+1, out: to c_{t-1}
//   dgates:  [4H] out: gradient of the preactivations (i, f, g, o)
template <typename scalar_t>
void cell_backward(int64_t rows, int64_t H, const scalar_t* gates,
                   const scalar_t* cells, const scalar_t* c_prev,
                   const scalar_t* dm, scalar_t* dc, scalar_t* dgates) {
  using V = Vec<scalar_t>;
  constexpr int64_t W = V::size();
  const V one(scalar_t(1));
  at::parallel_for(0, rows, rows_per_task(4 * H), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const scalar_t* g_in = gates + r * 4 * H;
      scalar_t* dg_out = dgates + r * 4 * H;
      for (int64_t j = 0; j < H; j += W) {
        const int64_t n = std::min(W, H - j);
        const V i = V::loadu(g_in + j, n);
        const V f = V::loadu(g_in + H + j, n);
        const V g = V::loadu(g_in + 2 * H + j, n);
        const V o = V::loadu(g_in + 3 * H + j, n);
        const V tc = V::loadu(cells + r * H + j, n).tanh();
        const V dmv = V::loadu(dm + r * H + j, n);
        const V dcv = V::loadu(dc + r * H + j, n) + dmv * o * (one - tc * tc);
        const V cp = V::loadu(c_prev + r * H + j, n);
        (dcv * g * i * (one - i)).store(dg_out + j, n);
        (dcv * cp * f * (one - f)).store(dg_out + H + j, n);
        (dcv * i * (one - g * g)).store(dg_out + 2 * H + j, n);
        (dmv * tc * o * (one - o)).store(dg_out + 3 * H + j, n);
        (dcv * f).store(dc + r * H + j, n);
      }
    }
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace fusedlstm::cpu
