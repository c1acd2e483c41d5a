// The persistent forward kernel (see persistent.h for the design). Included
// only by the small instantiation files under instantiations/, one per dtype
// and projection flag, so that they compile in parallel.
#pragma once

#include <cooperative_groups.h>

#include "cuda/cell_math.cuh"
#include "cuda/persistent/launch_plan.cuh"
#include "cuda/persistent/block_matmul.cuh"

namespace fusedlstm::cuda::persistent {

// Slices: 4U rows of W_hh (the four gates of U units) and PU rows of W_hr.
template <typename T, bool kProj>
__host__ __device__ inline SmemLayout forward_layout(int U, int PU, int H, int P,
                                                    size_t stage_elems) {
  return smem_layout_of<T>(slice_geom<T>(4 * U, P),
                           kProj ? slice_geom<T>(PU, H) : SliceGeom(), stage_elems);
}

// What the cell of one (row, unit) reads besides the recurrent product: the
// four preactivations' input parts (x W_ih^T + b_ih + b_hh, the biases
// summed in float: in the storage type their sum would round) and c_{t-1}.
struct CellInputs {
  float x[4] = {0.f, 0.f, 0.f, 0.f};
  float c = 0.f;
};

// The input parts of cell e of the chunk at nb0 (see lstm_persistent_fwd):
// x W_ih^T + b_ih + b_hh; zeros for a unit past H.
template <typename T>
__device__ __forceinline__ CellInputs load_cell_x(const PersistentForwardParams& p,
                                                 const storage_t<T>* gates, int e, int nb0,
                                                 int U, int u0, int64_t row0) {
  CellInputs in;
  const int b = e / U, uu = u0 + (e - b * U), H = p.H;
  if (uu >= H) return in;
  const storage_t<T>* gp = gates + (row0 + nb0 + b) * 4 * H + uu;
#pragma unroll
  for (int q = 0; q < 4; ++q) in.x[q] = to_float<T>(gp[q * H]);
  if (p.bias != nullptr) {
#pragma unroll
    for (int q = 0; q < 4; ++q) in.x[q] += p.bias[q * H + uu];
  }
  return in;
}

// load_cell_x with c_{t-1}, from p.c_state.
template <typename T>
__device__ __forceinline__ CellInputs load_cell_inputs(
    const PersistentForwardParams& p, const storage_t<T>* gates, int e, int nb0,
    int U, int u0, int64_t row0) {
  CellInputs in = load_cell_x<T>(p, gates, e, nb0, U, u0, row0);
  const int b = e / U, uu = u0 + (e - b * U);
  if (uu < p.H) in.c = p.c_state[int64_t(nb0 + b) * p.H + uu];
  return in;
}

// The step visited s-th (in the layer's direction): its batch size and
// first row, and the batch size of the step visited next (0 after the
// last): rows at or past it end here.
struct ForwardStep {
  int bs = 0, bs_next = 0;
  int64_t row0 = 0;
};
__device__ __forceinline__ ForwardStep forward_step(const PersistentForwardParams& p,
                                                    int s) {
  const int T_ = p.sched.steps, t = p.reverse ? T_ - 1 - s : s;
  ForwardStep st;
  int64_t unused;
  p.sched.lookup(t, &st.bs, &st.row0);
  if (s + 1 < T_) p.sched.lookup(p.reverse ? t - 1 : t + 1, &st.bs_next, &unused);
  return st;
}

// The cell of unit uu from its recurrent products (gate q at
// rec[q * gate_stride]), its input parts x and c_{t-1}.
__device__ __forceinline__ CellOut<float> forward_cell_math(const float* rec, int gate_stride,
                                                            const float (&x)[4], float c_prev) {
  return cell_forward_math<float>(rec[0] + x[0], rec[gate_stride] + x[1],
                                  rec[2 * gate_stride] + x[2], rec[3 * gate_stride] + x[3],
                                  c_prev);
}

// What backward reads of a cell at output row `row`, unit uu: the activated
// gates over the preactivations, and c_t.
template <typename T>
__device__ __forceinline__ void store_activations(const PersistentForwardParams& p,
                                                  int64_t row, int uu, float i, float f,
                                                  float g, float o, float c) {
  using S = storage_t<T>;
  const int H = p.H;
  store_gates<T>(static_cast<S*>(p.gates) + row * 4 * H + uu, H, i, f, g, o);
  static_cast<S*>(p.cells)[row * H + uu] = from_float<T>(c);
}

// The cell of batch row bg (output row `row`) and unit uu with c in
// p.c_state: writes c_t there, the activations unless p.cells is nullptr
// (inference keeps nothing), and returns m = o * tanh(c_t) in the storage
// type (h_t without a projection).
template <typename T>
__device__ __forceinline__ storage_t<T> forward_cell(const PersistentForwardParams& p,
                                                     int64_t row, int bg, int uu,
                                                     const float* rec, int gate_stride,
                                                     const CellInputs& in) {
  const CellOut<float> o = forward_cell_math(rec, gate_stride, in.x, in.c);
  if (p.cells != nullptr) store_activations<T>(p, row, uu, o.i, o.f, o.g, o.o, o.c);
  // Only the CTA that owns unit uu ever touches its state.
  p.c_state[int64_t(bg) * p.H + uu] = o.c;
  return from_float<T>(o.m);
}

// One CTA: hidden units [u0, u0 + U) with their four gates; with projection
// also rows [p0, p0 + PU) of W_hr. Arguments and shapes: PersistentForwardParams.
template <typename T, bool kProj>
__global__ void __launch_bounds__(kThreads)
    lstm_persistent_fwd(const PersistentForwardParams p, int U, int PU) {
  namespace cg = cooperative_groups;
  using S = storage_t<T>;
  cg::grid_group grid = cg::this_grid();
  unsigned char* smem = dynamic_smem();
  const int H = p.H, P = p.P, B = p.B, T_ = p.sched.steps;
  const SmemLayout L = forward_layout<T, kProj>(U, PU, H, P, p.x_stage_elems);
  S* w1 = reinterpret_cast<S*>(smem);
  S* w2 = reinterpret_cast<S*>(smem + L.off_w2);
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* xs = reinterpret_cast<float*>(smem + L.off_xs);  // exact fp32's staging
  S* hs = reinterpret_cast<S*>(smem + L.off_xs);          // tensor cores' staging
  const int u0 = blockIdx.x * U, p0 = blockIdx.x * PU;

  S* gates = static_cast<S*>(p.gates);
  S* output = static_cast<S*>(p.output);
  S* h_buf = static_cast<S*>(p.h_buf);
  S* m_buf = static_cast<S*>(p.m_buf);
  S* h_n = static_cast<S*>(p.h_n);

  // Slice row r = q * U + u holds gate q of unit u0 + u, so the four gates of
  // a unit sit U rows apart in the result.
  load_slice<T>(w1, L.w1, static_cast<const S*>(p.w_hh), P, [&](int r) {
    const int q = r / U, u = r - q * U;
    return u0 + u < H ? q * H + u0 + u : -1;
  });
  if constexpr (kProj) {
    load_slice<T>(w2, L.w2, static_cast<const S*>(p.w_hr), H,
                  [&](int r) { return p0 + r < P ? p0 + r : -1; });
  }
  __syncthreads();

  for (int s = 0; s < T_; ++s) {
    const ForwardStep st = forward_step(p, s);
    const int bs = st.bs, bs_next = st.bs_next;
    const int64_t row0 = st.row0;
    const S* h_cur = h_buf + int64_t(s & 1) * B * P;
    S* h_nxt = h_buf + int64_t((s + 1) & 1) * B * P;

    for (int nb0 = 0; nb0 < bs; nb0 += kChunk) {
      const int nbn = min(kChunk, bs - nb0);
      // Cell e of the chunk: row nb0 + e / U, unit u0 + e % U; this thread
      // runs the same cells every step. Their input parts (x W_ih^T + b) and
      // c_{t-1} do not depend on h_{t-1} (cells_after_product).
      cells_after_product(
          nbn * U,
          [&](int e) { return load_cell_inputs<T>(p, gates, e, nb0, U, u0, row0); },
          [&] {
            const S* h_chunk = h_cur + int64_t(nb0) * P;
            if constexpr (kTensorCore<T>) {
              if (L.w1.stage_rows == kChunk && nbn > kStageMinRows) {
                // A wide chunk: h staged once for the CTA (whole 32-byte
                // sectors, once per CTA) rather than read by every warp
                // (half sectors, once per m-tile); the same values reach
                // the same MMAs, so the same results bit for bit.
                stage_rows<S>(hs, L.w1.stride, h_chunk, P, P, L.w1.k_pad, nbn);
                __syncthreads();
                block_matmul<T, true>(w1, L.w1, hs, L.w1.stride, nbn, part, nullptr);
                return;
              }
            }
            block_matmul<T>(w1, L.w1, h_chunk, P, nbn, part, xs);
          },
          [&](int e, const CellInputs& in) {
            const int b = e / U, u = e - b * U, uu = u0 + u;
            if (uu >= H) return;
            const int bg = nb0 + b;
            const float* rec = part + u * kPartStride + b;  // gate q at rec[q * U * kPartStride]
            const S m = forward_cell<T>(p, row0 + bg, bg, uu, rec, U * kPartStride, in);
            if constexpr (kProj) {
              m_buf[int64_t(bg) * H + uu] = m;
            } else {
              h_nxt[int64_t(bg) * P + uu] = m;
              output[(row0 + bg) * P + uu] = m;
              if (bg >= bs_next) h_n[int64_t(bg) * P + uu] = m;  // row's last step
            }
          });
      __syncthreads();  // part is rewritten by the next chunk
    }
    grid.sync();  // h_t (or m_t) complete everywhere

    if constexpr (kProj) {
      // Second phase: h_t = W_hr m_t needs every unit's m_t, hence the second
      // grid sync per step.
      if (p0 < P) {
        for (int nb0 = 0; nb0 < bs; nb0 += kChunk) {
          const int nbn = min(kChunk, bs - nb0);
          block_matmul<T>(w2, L.w2, m_buf + int64_t(nb0) * H, H, nbn, part, xs);
          for (int e = threadIdx.x; e < nbn * PU; e += kThreads) {
            const int b = e / PU, r = e - b * PU, pp = p0 + r;
            if (pp >= P) continue;
            const int bg = nb0 + b;
            const S h = from_float<T>(part[r * kPartStride + b]);
            h_nxt[int64_t(bg) * P + pp] = h;
            output[(row0 + bg) * P + pp] = h;
            if (bg >= bs_next) h_n[int64_t(bg) * P + pp] = h;
          }
          __syncthreads();
        }
      }
      grid.sync();
    }
  }
}

}  // namespace fusedlstm::cuda::persistent

namespace fusedlstm::cuda {

template <typename T, bool kProj>
PersistentPlan plan_persistent_forward(int H, int P, int device) {
  return persistent::plan_cooperative<T>(
      reinterpret_cast<const void*>(persistent::lstm_persistent_fwd<T, kProj>),
      H, P, device,
      [](int U, int PU, int H_, int P_, size_t stage) {
        return persistent::forward_layout<T, kProj>(U, PU, H_, P_, stage);
      },
      /*stage_chunks=*/true);
}

template <typename T, bool kProj>
void launch_persistent_forward(const PersistentPlan& plan,
                               const PersistentForwardParams& params,
                               cudaStream_t stream) {
  persistent::launch_cooperative(
      reinterpret_cast<const void*>(persistent::lstm_persistent_fwd<T, kProj>), plan,
      params, stream);
}

}  // namespace fusedlstm::cuda
