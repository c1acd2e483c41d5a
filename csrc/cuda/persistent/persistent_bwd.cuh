// The persistent backward kernel (see persistent.h for the design). Included
// only by the small instantiation files under instantiations/, one per dtype
// and projection flag, so that they compile in parallel.
//
// Precision: the recurrent gradients dh and dc stay in fp32 from step to step
// (the stepwise path rounds dh to the dtype once per step); the gate
// gradients are stored in the dtype, as the weight-gradient GEMMs read them.
#pragma once

#include <cooperative_groups.h>

#include "cuda/cell_math.cuh"
#include "cuda/persistent/launch_plan.cuh"
#include "cuda/persistent/block_matmul.cuh"

namespace fusedlstm::cuda::persistent {

// Both slices are transposed views of the weights: without a projection, the
// U columns of W_hh that produce this CTA's units of dh ([U, 4H]); with one,
// the PU columns of W_hh that produce its columns of dh ([PU, 4H]), and the U
// columns of W_hr that produce its units of dm ([U, P]).
template <typename T, bool kProj>
__host__ __device__ inline SmemLayout backward_layout(int U, int PU, int H, int P,
                                                     size_t stage_elems) {
  return kProj ? smem_layout_of<T>(slice_geom<T>(PU, 4 * H), slice_geom<T>(U, P),
                                   stage_elems)
               : smem_layout_of<T>(slice_geom<T>(U, 4 * H), SliceGeom(), stage_elems);
}

// dst row r = column col_of(r) of src ([g.k, src_cols] row-major), zero
// padded; col_of returns -1 for padding rows. r runs fastest, so neighbouring
// threads read neighbouring columns of one row of src.
template <typename T, typename ColOf>
__device__ void load_slice_transposed(storage_t<T>* dst, const SliceGeom& g,
                                      const storage_t<T>* __restrict__ src,
                                      int src_cols, ColOf col_of) {
  const int n = g.rows_pad * g.stride;
  for (int e = threadIdx.x; e < n; e += kThreads) {
    const int k = e / g.rows_pad, r = e - k * g.rows_pad;
    const int c = r < g.rows ? col_of(r) : -1;
    dst[r * g.stride + k] = (c >= 0 && k < g.k)
                                ? to_smem<T>(src[int64_t(k) * src_cols + c])
                                : storage_t<T>(0);
  }
}

// Batch size and first row of step t; {0, 0} for a step outside [0, T).
struct StepRows {
  int bs = 0;
  int64_t row0 = 0;
};
__device__ __forceinline__ StepRows step_rows(const ScheduleTable& sched, int t) {
  StepRows r;
  if (t >= 0 && t < sched.steps) sched.lookup(t, &r.bs, &r.row0);
  return r;
}

// What the cell backward of row b (of step rows `cur`) and unit uu reads
// besides dm: none of it depends on the step's product, so it can be asked
// for before the product (see kPreloadCells). prev are the rows of the step
// that came before in forward order; rows b < carried continue from it, the
// others start from h0/c0. With kGatherH (no projection, where units and
// state columns coincide) also h_{t-1} for dW_hh and the row's grad_output.
// Visit s of the backward, which visits forward's steps in the opposite
// order: forward's step t, its rows, and the rows of forward's previous step
// (where c_{t-1} and h_{t-1} live), from which rows b < carried continue; the
// others start from h0/c0. Past the last visit (s == steps), cur is {0, 0}.
struct BackwardVisit {
  int t = 0;
  StepRows cur, prev;
  int carried = 0;
};
__device__ __forceinline__ BackwardVisit backward_visit(const PersistentBackwardParams& p,
                                                        int s) {
  BackwardVisit v;
  v.t = p.reverse ? s : p.sched.steps - 1 - s;
  v.cur = step_rows(p.sched, v.t);
  v.prev = step_rows(p.sched, p.reverse ? v.t + 1 : v.t - 1);
  v.carried = min(v.cur.bs, v.prev.bs);
  return v;
}

template <typename T>
struct BackwardCellInputs {
  float gate[4] = {0.f, 0.f, 0.f, 0.f};  // activated i, f, g, o
  float c = 0.f, c_prev = 0.f;
  float dc = 0.f;        // gradient of c_t from the step visited before
  float grad_out = 0.f;  // kGatherH only
  storage_t<T> h_prev = storage_t<T>(0);  // kGatherH only
};

// The forward's activations a cell backward reads: the activated gates
// and c_t of row b, and c_{t-1} (of the previous step, or c0).
template <typename T>
__device__ __forceinline__ void load_backward_activations(const PersistentBackwardParams& p,
                                                          StepRows cur, StepRows prev,
                                                          int carried, int b, int uu,
                                                          BackwardCellInputs<T>& in) {
  using S = storage_t<T>;
  const int H = p.H;
  const S* cells = static_cast<const S*>(p.cells);
  const int64_t row = cur.row0 + b;
  const S* gp = static_cast<const S*>(p.gates) + row * 4 * H + uu;
#pragma unroll
  for (int q = 0; q < 4; ++q) in.gate[q] = to_float<T>(gp[q * H]);
  in.c = to_float<T>(cells[row * H + uu]);
  in.c_prev = b < carried ? to_float<T>(cells[(prev.row0 + b) * H + uu])
                          : to_float<T>(static_cast<const S*>(p.c0)[int64_t(b) * H + uu]);
}

// h_{t-1} of row b, state column uu: the previous step's output, or h0 for
// a row that starts at this step (no projection: units are state columns).
template <typename T>
__device__ __forceinline__ storage_t<T> h_before(const PersistentBackwardParams& p,
                                                 StepRows prev, int carried, int b, int uu) {
  using S = storage_t<T>;
  return b < carried ? static_cast<const S*>(p.output)[(prev.row0 + b) * p.P + uu]
                     : static_cast<const S*>(p.h0)[int64_t(b) * p.P + uu];
}

template <typename T, bool kGatherH>
__device__ __forceinline__ BackwardCellInputs<T> load_backward_cell(
    const PersistentBackwardParams& p, StepRows cur, StepRows prev, int carried,
    int b, int uu) {
  using S = storage_t<T>;
  BackwardCellInputs<T> in;
  load_backward_activations<T>(p, cur, prev, carried, b, uu, in);
  in.dc = p.dc_state[int64_t(b) * p.H + uu];
  if constexpr (kGatherH) {
    in.grad_out = to_float<T>(static_cast<const S*>(p.grad_out)[(cur.row0 + b) * p.P + uu]);
    in.h_prev = h_before<T>(p, prev, carried, b, uu);
  }
  return in;
}

// The cell backward of row b and unit uu from its inputs and dm, the
// gradient reaching o * tanh(c_t): writes the gate gradients, dc_{t-1} and
// (kGatherH) h_{t-1}; returns the gradients (before rounding to T).
template <typename T, bool kGatherH>
__device__ __forceinline__ CellGrad<float> run_backward_cell(const PersistentBackwardParams& p,
                                                  StepRows cur, int b, int uu,
                                                  float dm,
                                                  const BackwardCellInputs<T>& in) {
  using S = storage_t<T>;
  const int H = p.H;
  const int64_t row = cur.row0 + b;
  const CellGrad<float> d = cell_backward_math<float>(
      in.gate[0], in.gate[1], in.gate[2], in.gate[3], in.c, in.c_prev, dm, in.dc);
  store_gates<T>(static_cast<S*>(p.dgates) + row * 4 * H + uu, H, d.d_i, d.d_f,
                 d.d_g, d.d_o);
  // Only this CTA ever touches unit uu's state.
  p.dc_state[int64_t(b) * H + uu] = d.dc_prev;
  if constexpr (kGatherH) static_cast<S*>(p.h_prev)[row * p.P + uu] = in.h_prev;
  return d;
}

// One CTA: units [u0, u0 + U) (cells, and without a projection also columns
// of dh); with a projection also state columns [p0, p0 + PU) of dh. Arguments
// and shapes: PersistentBackwardParams.
template <typename T, bool kProj>
__global__ void __launch_bounds__(kThreads)
    lstm_persistent_bwd(const PersistentBackwardParams p, int U, int PU) {
  namespace cg = cooperative_groups;
  using S = storage_t<T>;
  cg::grid_group grid = cg::this_grid();
  unsigned char* smem = dynamic_smem();
  const int H = p.H, P = p.P, T_ = p.sched.steps;
  const SmemLayout L = backward_layout<T, kProj>(U, PU, H, P, p.x_stage_elems);
  S* w1 = reinterpret_cast<S*>(smem);
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* xs = reinterpret_cast<float*>(smem + L.off_xs);
  const int u0 = blockIdx.x * U, p0 = blockIdx.x * PU;
  const S* w_hh = static_cast<const S*>(p.w_hh);
  S* dgates = static_cast<S*>(p.dgates);
  const S* grad_out = static_cast<const S*>(p.grad_out);
  float* dh_state = p.dh_state;

  // The rows of visit s (backward_visit): those of visit s - 1, whose gate
  // gradients give dh_t, are visit_rows(s - 1).
  auto visit_rows = [&](int s) { return backward_visit(p, s).cur; };
  // Columns [c0, c0 + nc) of dh = dG W_hh (w1 holds them) for the rows of
  // one step. Rows beyond the step keep their dh: grad of h_n for sequences
  // not reached yet, grad of h0 for finished ones.
  auto dh_from_gate_grads = [&](StepRows rows, int c0, int nc) {
    for (int nb0 = 0; nb0 < rows.bs; nb0 += kChunk) {
      const int nbn = min(kChunk, rows.bs - nb0);
      block_matmul<T>(w1, L.w1, dgates + (rows.row0 + nb0) * 4 * H, 4 * H, nbn,
                      part, xs);
      for (int e = threadIdx.x; e < nbn * nc; e += kThreads) {
        const int b = e / nc, r = e - b * nc, c = c0 + r;
        if (c < P) dh_state[int64_t(nb0 + b) * P + c] = part[r * kPartStride + b];
      }
      __syncthreads();  // part is rewritten next; dh_state read below
    }
  };

  if constexpr (!kProj) {
    load_slice_transposed<T>(w1, L.w1, w_hh, P,
                             [&](int r) { return u0 + r < H ? u0 + r : -1; });
    __syncthreads();
    for (int s = 0; s <= T_; ++s) {
      const BackwardVisit v = backward_visit(p, s);  // cur = {0, 0} once s == T_
      const StepRows cur = v.cur, prev = v.prev;
      const int carried = v.carried;
      // Cell e of the step: row e / U, unit u0 + e % U, the same thread's
      // every step; its inputs are asked for before the product
      // (cells_after_product): dh of the rows of the step visited last, this
      // CTA's units (P == H).
      cells_after_product(
          cur.bs * U,
          [&](int e) {
            const int uu = u0 + e % U;
            return uu < H ? load_backward_cell<T, true>(p, cur, prev, carried, e / U, uu)
                          : BackwardCellInputs<T>();
          },
          [&] { if (s > 0) dh_from_gate_grads(visit_rows(s - 1), u0, U); },
          [&](int e, const BackwardCellInputs<T>& in) {
            const int b = e / U, uu = u0 + e % U;
            if (uu >= H) return;
            const float dm = dh_state[int64_t(b) * H + uu] + in.grad_out;
            run_backward_cell<T, true>(p, cur, b, uu, dm, in);
          });
      if (s == T_) break;
      grid.sync();  // every unit's gate gradients of step t are written
    }
  } else {
    S* w2 = reinterpret_cast<S*>(smem + L.off_w2);
    const S* w_hr = static_cast<const S*>(p.w_hr);
    S* grad_h_all = static_cast<S*>(p.grad_h_all);
    const S* out = static_cast<const S*>(p.output);
    const S* h0 = static_cast<const S*>(p.h0);
    S* h_prev = static_cast<S*>(p.h_prev);
    load_slice_transposed<T>(w1, L.w1, w_hh, P,
                             [&](int r) { return p0 + r < P ? p0 + r : -1; });
    load_slice_transposed<T>(w2, L.w2, w_hr, H,
                             [&](int r) { return u0 + r < H ? u0 + r : -1; });
    // The gradient reaching h_t of the rows of a step, rounded to the dtype
    // (the dm product and dW_hr read it), for this CTA's columns.
    auto write_grad_h = [&](StepRows rows) {
      for (int e = threadIdx.x; e < rows.bs * PU; e += kThreads) {
        const int b = e / PU, pp = p0 + (e - b * PU);
        if (pp >= P) continue;
        const int64_t at = (rows.row0 + b) * P + pp;
        grad_h_all[at] = from_float<T>(dh_state[int64_t(b) * P + pp] +
                                       to_float<T>(grad_out[at]));
      }
    };
    if (T_ > 0) write_grad_h(visit_rows(0));
    __syncthreads();
    grid.sync();
    for (int s = 0; s < T_; ++s) {
      const BackwardVisit v = backward_visit(p, s);
      const StepRows cur = v.cur, prev = v.prev;
      const int carried = v.carried;
      // Phase 1: dm = dh_t W_hr for this CTA's units needs every column of
      // dh_t; the cell backward follows in place.
      for (int nb0 = 0; nb0 < cur.bs; nb0 += kChunk) {
        const int nbn = min(kChunk, cur.bs - nb0);
        // Cell e of the chunk: row nb0 + e / U, unit u0 + e % U.
        cells_after_product(
            nbn * U,
            [&](int e) {
              const int uu = u0 + e % U;
              return uu < H ? load_backward_cell<T, false>(p, cur, prev, carried,
                                                           nb0 + e / U, uu)
                            : BackwardCellInputs<T>();
            },
            [&] {
              block_matmul<T>(w2, L.w2, grad_h_all + (cur.row0 + nb0) * P, P, nbn,
                              part, xs);
            },
            [&](int e, const BackwardCellInputs<T>& in) {
              const int b = e / U, u = e % U;
              if (u0 + u >= H) return;
              run_backward_cell<T, false>(p, cur, nb0 + b, u0 + u,
                                          part[u * kPartStride + b], in);
            });
        __syncthreads();
      }
      grid.sync();  // all gate gradients of step t are written
      // Phase 2: this CTA's columns of dh_{t-1} = dG_t W_hh, h_{t-1} for
      // dW_hh, and the gradient reaching h of the next step's rows.
      if (p0 < P) {
        dh_from_gate_grads(cur, p0, PU);
        for (int e = threadIdx.x; e < cur.bs * PU; e += kThreads) {
          const int b = e / PU, pp = p0 + (e - b * PU);
          if (pp >= P) continue;
          h_prev[(cur.row0 + b) * P + pp] =
              b < carried ? out[(prev.row0 + b) * P + pp] : h0[int64_t(b) * P + pp];
        }
        if (s + 1 < T_) write_grad_h(visit_rows(s + 1));
      }
      if (s + 1 < T_) grid.sync();  // the next phase 1 reads all of grad_h_all
    }
  }
}

}  // namespace fusedlstm::cuda::persistent

namespace fusedlstm::cuda {

template <typename T, bool kProj>
PersistentPlan plan_persistent_backward(int H, int P, int device) {
  return persistent::plan_cooperative<T>(
      reinterpret_cast<const void*>(persistent::lstm_persistent_bwd<T, kProj>),
      H, P, device, [](int U, int PU, int H_, int P_, size_t stage) {
        return persistent::backward_layout<T, kProj>(U, PU, H_, P_, stage);
      });
}

template <typename T, bool kProj>
void launch_persistent_backward(const PersistentPlan& plan,
                               const PersistentBackwardParams& params,
                               cudaStream_t stream) {
  persistent::launch_cooperative(
      reinterpret_cast<const void*>(persistent::lstm_persistent_bwd<T, kProj>), plan,
      params, stream);
}

}  // namespace fusedlstm::cuda
