// The thread-block-cluster backward kernel (see persistent.h): the backward
// of the cluster forward, for layers whose W_hh fits in the shared memory of
// one cluster. Included only by the small instantiation files under
// instantiations/.
//
// The cooperative backward's ownership (persistent_bwd.cuh) inside one
// cluster: CTA rank r owns hidden units [r*U, r*U + U) as columns of
// dh = dG W_hh (the columns of W_hh of its units, [U, 4H], on chip) and as
// cells. Each visit needs all 4H gate gradients of the step visited before,
// so every CTA keeps the tile's whole dG of that step in its own shared
// memory (double-buffered): the cell backward writes each gate gradient into
// every CTA of the cluster (distributed shared memory), and the cluster
// synchronises once per visit. Cluster c takes batch rows [c*BT, c*BT + BT);
// clusters never wait for one another.
#pragma once

#include <cooperative_groups.h>

#include "cuda/persistent/cluster_fwd.cuh"
#include "cuda/persistent/persistent_bwd.cuh"

namespace fusedlstm::cuda::persistent {

// The backward's slice: the U columns of W_hh of the CTA's units,
// transposed; the operand buffers hold BT rows of dG (4H wide); then dh and
// dc of the tile's rows and the CTA's units, [BT][U] floats each, which the
// split-phase kernel keeps on chip (the other reserves them too: the same
// plans for both).
template <typename T>
__host__ __device__ inline ClusterLayout cluster_backward_layout(int U, int H, int BT) {
  return cluster_layout_of<T>(slice_geom<T>(U, 4 * H), BT, 2 * size_t(BT) * U);
}

// What the split-phase kernel's cell of batch row b (of the visit's rows)
// and unit uu reads from global memory: the activations of both steps and
// the output gradient; dc is in shared memory there, and h_{t-1} is
// gathered after the arrive.
template <typename T>
__device__ __forceinline__ BackwardCellInputs<T> load_cluster_backward_cell(
    const PersistentBackwardParams& p, const BackwardVisit& v, int b, int uu) {
  BackwardCellInputs<T> in;
  if (uu >= p.H) return in;
  load_backward_activations<T>(p, v.cur, v.prev, v.carried, b, uu, in);
  in.grad_out =
      to_float<T>(static_cast<const storage_t<T>*>(p.grad_out)[(v.cur.row0 + b) * p.H + uu]);
  return in;
}

// One CTA of a cluster (no projection; tensor-core types). Arguments and
// shapes: PersistentBackwardParams.
//
// kSplitSync (the default, as in lstm_cluster_fwd; FUSEDLSTM_CLUSTER_SYNC=
// whole runs the other): the visit's barrier in two phases. dh and dc of the
// tile's rows and the CTA's units stay in shared memory for the whole
// sequence (written back to dh_state and dc_state after the last visit),
// the cells write their gate gradients into the CTA's dG buffer only, and
// between the arrive and the wait the CTA copies its slice of them to
// dgates, gathers h_{t-1} into h_prev for the weight gradients, and loads
// the next visit's first cell inputs: no global store before the arrive
// (NOTES, change 72).
template <typename T, bool kSplitSync>
__global__ void __launch_bounds__(kThreads)
    lstm_cluster_bwd(const PersistentBackwardParams p, int U, int BT) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  // As in lstm_cluster_fwd: built for older targets, never launched there.
  __trap();
#else
  namespace cg = cooperative_groups;
  using S = storage_t<T>;
  cg::cluster_group cluster = cg::this_cluster();
  unsigned char* smem = dynamic_smem();
  const int H = p.H, T_ = p.sched.steps;
  const ClusterTile tile = cluster_tile(cluster, BT, p.B);
  const int b0 = tile.b0, rows = tile.rows, u0 = tile.rank * U;
  const int own_units = max(0, min(U, H - u0));  // clipped to H
  const ClusterLayout L = cluster_backward_layout<T>(U, H, BT);
  const int ld = L.w1.stride;
  S* w1 = reinterpret_cast<S*>(smem);
  S* g_local = reinterpret_cast<S*>(smem + L.off_h);  // [2][BT][ld]
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* dh_local = reinterpret_cast<float*>(smem + L.off_extra);  // [BT][U] (kSplitSync)
  float* dc_local = dh_local + size_t(BT) * U;                      // [BT][U] (kSplitSync)
  float* dh_state = p.dh_state;

  load_slice_transposed<T>(w1, L.w1, static_cast<const S*>(p.w_hh), H,
                           [&](int r) { return u0 + r < H ? u0 + r : -1; });
  // Zero past 4H (the product reads up to k_pad) and in the padding units'
  // columns, which no cell writes.
  for (size_t e = threadIdx.x; e < 2 * L.h_elems; e += kThreads) g_local[e] = S(0);
  // The inputs of a visit's first cells (each thread's first kPreloadCells),
  // loaded ahead: kSplitSync, during the previous visit's barrier.
  BackwardCellInputs<T> pre[kPreloadCells];
  auto preload = [&](int s) {
    const BackwardVisit v = backward_visit(p, s);
    preload_cells(tile.rows_of(v.cur.bs) * U,
                  [&](int e) {
                    return load_cluster_backward_cell<T>(p, v, b0 + e / U, u0 + e % U);
                  },
                  pre);
  };
  if constexpr (kSplitSync) {
    for (int e = threadIdx.x; e < BT * U; e += kThreads) {
      const int b = e / U, uu = u0 + e % U;
      const bool mine = b < rows && uu < H;
      dh_local[e] = mine ? dh_state[int64_t(b0 + b) * H + uu] : 0.f;
      dc_local[e] = mine ? p.dc_state[int64_t(b0 + b) * H + uu] : 0.f;
    }
    preload(0);
  }
  __syncthreads();
  cluster.sync();  // every CTA of the cluster runs before any remote store

  // The tile's rows of the step visited before: their dG is in g_cur.
  int visited = 0;
  for (int s = 0; s <= T_; ++s) {
    const BackwardVisit v = backward_visit(p, s);  // cur = {0, 0} once s == T_
    const S* g_cur = g_local + (s & 1) * L.h_elems;  // dG of visit s - 1
    S* g_nxt = g_local + ((s + 1) & 1) * L.h_elems;
    const int active = tile.rows_of(v.cur.bs);  // the tile's rows of this step
    // This CTA's columns of dh for the rows visited before. Rows past them
    // keep their dh: grad of h_n for rows that start here, grad of h0 for
    // rows that have ended.
    auto product = [&] {
      for (int nb0 = 0; nb0 < visited; nb0 += kChunk) {
        const int nbn = min(kChunk, visited - nb0);
        block_matmul<T, true>(w1, L.w1, g_cur + nb0 * ld, ld, nbn, part, nullptr);
        for (int e = threadIdx.x; e < nbn * U; e += kThreads) {
          const int b = e / U, r = e - b * U, c = u0 + r;
          if (c >= H) continue;
          if constexpr (kSplitSync) dh_local[(nb0 + b) * U + r] = part[r * kPartStride + b];
          else dh_state[int64_t(b0 + nb0 + b) * H + c] = part[r * kPartStride + b];
        }
        __syncthreads();  // part is rewritten next; the cells read dh
      }
    };
    // Cell e: tile row e / U, unit u0 + e % U.
    auto cell = [&](int e, const BackwardCellInputs<T>& in) {
      const int bt = e / U, u = e % U, uu = u0 + u;
      if (uu >= H) return;
      const int bg = b0 + bt;
      CellGrad<float> d;
      if constexpr (kSplitSync) {
        float& dc = dc_local[bt * U + u];
        d = cell_backward_math<float>(in.gate[0], in.gate[1], in.gate[2], in.gate[3], in.c,
                                      in.c_prev, dh_local[bt * U + u] + in.grad_out, dc);
        dc = d.dc_prev;
      } else {
        const float dm = dh_state[int64_t(bg) * H + uu] + in.grad_out;
        d = run_backward_cell<T, true>(p, v.cur, bg, uu, dm, in);
      }
      // The values dgates holds, which the weight gradients read; the
      // other CTAs get them from broadcast_slice.
      S* row = g_nxt + bt * ld + uu;
      row[0] = from_float<T>(d.d_i);
      row[H] = from_float<T>(d.d_f);
      row[2 * H] = from_float<T>(d.d_g);
      row[3 * H] = from_float<T>(d.d_o);
    };
    if constexpr (kSplitSync) {  // preloaded during the last barrier
      product();
      cells_from_preloaded(
          active * U, pre,
          [&](int e) { return load_cluster_backward_cell<T>(p, v, b0 + e / U, u0 + e % U); },
          cell);
    } else {
      cells_after_product(
          active * U,
          [&](int e) {
            const int uu = u0 + e % U;
            return uu < H ? load_backward_cell<T, true>(p, v.cur, v.prev, v.carried,
                                                        b0 + e / U, uu)
                          : BackwardCellInputs<T>();
          },
          product, cell);
    }
    if (s == T_) break;  // the last visit's gradients go nowhere
    __syncthreads();  // g_nxt's part is written
    // This CTA's units of each gate's dG (four spans of U columns, clipped
    // to H) into the other CTAs, whole units at a time.
    broadcast_slice(cluster, g_nxt, ld, active, u0, own_units, 4, H);
    visited = active;
    if constexpr (kSplitSync) {
      // Released: dG of this visit in every CTA's next buffer, and this
      // visit's reads of g_cur done before the next visit's remote stores.
      auto arrived = cluster.barrier_arrive();
      copy_rows_to_global(static_cast<S*>(p.dgates) + (v.cur.row0 + b0) * 4 * H, 4 * H,
                          g_nxt, ld, active, u0, own_units, 4, H);
      // h_{t-1} of the visit's rows, for dW_hh.
      for (int e = threadIdx.x; e < active * U; e += kThreads) {
        const int bg = b0 + e / U, uu = u0 + e % U;
        if (uu >= H) continue;
        static_cast<S*>(p.h_prev)[(v.cur.row0 + bg) * H + uu] =
            h_before<T>(p, v.prev, v.carried, bg, uu);
      }
      preload(s + 1);
      cluster.barrier_wait(std::move(arrived));
    } else {
      // dG of step t complete in every CTA's next buffer; also orders this
      // visit's reads of g_cur before the next visit's remote stores into it.
      cluster.sync();
    }
  }
  if constexpr (kSplitSync) {
    __syncthreads();  // the last product's dh and every cell's dc written
    for (int e = threadIdx.x; e < BT * U; e += kThreads) {
      const int b = e / U, uu = u0 + e % U;
      if (b >= rows || uu >= H) continue;
      dh_state[int64_t(b0 + b) * H + uu] = dh_local[e];
      p.dc_state[int64_t(b0 + b) * H + uu] = dc_local[e];
    }
  }
#endif
}

}  // namespace fusedlstm::cuda::persistent

namespace fusedlstm::cuda {

// Planned for the split-phase kernel, as the forward; the other gets the
// same attributes.
template <typename T>
PersistentPlan plan_cluster_backward(int H, int B, int device) {
  return persistent::plan_cluster(
      reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T, true>), H, H, B,
      device, [](int U, int H_, int BT) {
        return persistent::cluster_backward_layout<T>(U, H_, BT).total;
      },
      reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T, false>));
}

template <typename T>
void launch_cluster_backward(const PersistentPlan& plan,
                             const PersistentBackwardParams& params,
                             bool split_sync, cudaStream_t stream) {
  persistent::launch_cluster(
      split_sync ? reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T, true>)
                 : reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T, false>),
      plan, params, stream);
}

}  // namespace fusedlstm::cuda
