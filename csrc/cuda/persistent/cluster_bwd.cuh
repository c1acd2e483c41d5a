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
// transposed; the operand buffers hold BT rows of dG (4H wide).
template <typename T>
__host__ __device__ inline ClusterLayout cluster_backward_layout(int U, int H, int BT) {
  return cluster_layout_of<T>(slice_geom<T>(U, 4 * H), BT);
}

// One CTA of a cluster (no projection; tensor-core types). Arguments and
// shapes: PersistentBackwardParams.
template <typename T>
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
  const int b0 = tile.b0, u0 = tile.rank * U;
  const ClusterLayout L = cluster_backward_layout<T>(U, H, BT);
  const int ld = L.w1.stride;
  S* w1 = reinterpret_cast<S*>(smem);
  S* g_local = reinterpret_cast<S*>(smem + L.off_h);  // [2][BT][ld]
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* dh_state = p.dh_state;

  load_slice_transposed<T>(w1, L.w1, static_cast<const S*>(p.w_hh), H,
                           [&](int r) { return u0 + r < H ? u0 + r : -1; });
  // Zero past 4H (the product reads up to k_pad) and in the padding units'
  // columns, which no cell writes.
  for (size_t e = threadIdx.x; e < 2 * L.h_elems; e += kThreads) g_local[e] = S(0);
  __syncthreads();
  cluster.sync();  // every CTA of the cluster runs before any remote store

  // The tile's rows of the step visited before: their dG is in g_cur.
  int visited = 0;
  for (int s = 0; s <= T_; ++s) {
    const BackwardVisit v = backward_visit(p, s);  // cur = {0, 0} once s == T_
    const S* g_cur = g_local + (s & 1) * L.h_elems;  // dG of visit s - 1
    S* g_nxt = g_local + ((s + 1) & 1) * L.h_elems;
    const int active = tile.rows_of(v.cur.bs);  // the tile's rows of this step
    // Cell e: tile row e / U, unit u0 + e % U.
    cells_after_product(
        active * U,
        [&](int e) {
          const int uu = u0 + e % U;
          return uu < H ? load_backward_cell<T, true>(p, v.cur, v.prev, v.carried,
                                                      b0 + e / U, uu)
                        : BackwardCellInputs<T>();
        },
        [&] {
          // This CTA's columns of dh for the rows visited before. Rows past
          // them keep their dh: grad of h_n for rows that start here, grad of
          // h0 for rows that have ended.
          for (int nb0 = 0; nb0 < visited; nb0 += kChunk) {
            const int nbn = min(kChunk, visited - nb0);
            block_matmul<T, true>(w1, L.w1, g_cur + nb0 * ld, ld, nbn, part, nullptr);
            for (int e = threadIdx.x; e < nbn * U; e += kThreads) {
              const int b = e / U, r = e - b * U, c = u0 + r;
              if (c < H) dh_state[int64_t(b0 + nb0 + b) * H + c] = part[r * kPartStride + b];
            }
            __syncthreads();  // part is rewritten next; the cells read dh_state
          }
        },
        [&](int e, const BackwardCellInputs<T>& in) {
          const int bt = e / U, uu = u0 + e % U;
          if (uu >= H) return;
          const int bg = b0 + bt;
          const float dm = dh_state[int64_t(bg) * H + uu] + in.grad_out;
          const CellGrad<float> d = run_backward_cell<T, true>(p, v.cur, bg, uu, dm, in);
          // The values written to dgates, which the weight gradients read.
          const S gi = from_float<T>(d.d_i), gf = from_float<T>(d.d_f),
                  gg = from_float<T>(d.d_g), go = from_float<T>(d.d_o);
          S* row = g_nxt + bt * ld + uu;  // the other CTAs get it from broadcast_slice
          row[0] = gi;
          row[H] = gf;
          row[2 * H] = gg;
          row[3 * H] = go;
        });
    if (s == T_) break;  // the last visit's gradients go nowhere
    __syncthreads();  // g_nxt's part is written
    // This CTA's units of each gate's dG (four spans of U columns, clipped
    // to H) into the other CTAs, whole units at a time.
    broadcast_slice(cluster, g_nxt, ld, active, u0, max(0, min(U, H - u0)), 4, H);
    visited = active;
    // dG of step t complete in every CTA's next buffer; also orders this
    // visit's reads of g_cur before the next visit's remote stores into it.
    cluster.sync();
  }
#endif
}

}  // namespace fusedlstm::cuda::persistent

namespace fusedlstm::cuda {

template <typename T>
PersistentPlan plan_cluster_backward(int H, int B, int device) {
  return persistent::plan_cluster(
      reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T>), H, H, B,
      device, [](int U, int H_, int BT) {
        return persistent::cluster_backward_layout<T>(U, H_, BT).total;
      });
}

template <typename T>
void launch_cluster_backward(const PersistentPlan& plan,
                             const PersistentBackwardParams& params,
                             cudaStream_t stream) {
  persistent::launch_cluster(
      reinterpret_cast<const void*>(persistent::lstm_cluster_bwd<T>), plan,
      params, stream);
}

}  // namespace fusedlstm::cuda
