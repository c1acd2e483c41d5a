// The thread-block-cluster forward kernel (see persistent.h): for layers
// whose W_hh fits in the shared memory of one cluster. Included only by the
// small instantiation files under instantiations/.
//
// Cluster c runs batch rows [c*BT, c*BT + BT) of every step with all of W_hh;
// its CTA of rank r owns hidden units [r*U, r*U + U) with their four gates,
// as the cooperative kernel's CTAs do. Every CTA keeps the tile's whole
// h_{t-1} in its own shared memory (double-buffered); the cell writes each
// h_t value into the next buffer of every CTA of the cluster (distributed
// shared memory), and the cluster synchronises once per step. Clusters never
// wait for one another: no grid-wide barrier, and nothing to co-schedule
// beyond one cluster.
#pragma once

#include <cooperative_groups.h>

#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda::persistent {

// Shared memory of one CTA of a cluster kernel: the weight slice w1, then
// two buffers of BT rows of the product's right operand (stride w1.stride,
// zero past w1.k: h_{t-1} in the forward, the gate gradients in the
// backward), then the partial sums, then `extra_floats` floats of the
// kernel's own (the forward's c).
struct ClusterLayout {
  SliceGeom w1;
  size_t off_h = 0, h_elems = 0, off_part = 0, off_extra = 0, total = 0;
};

template <typename T>
__host__ __device__ inline ClusterLayout cluster_layout_of(const SliceGeom& w1, int BT,
                                                           size_t extra_floats = 0) {
  ClusterLayout L;
  L.w1 = w1;
  const size_t es = sizeof(storage_t<T>);
  L.off_h = align16(size_t(L.w1.rows_pad) * L.w1.stride * es);
  L.h_elems = size_t(BT) * L.w1.stride;
  L.off_part = L.off_h + align16(2 * L.h_elems * es);
  L.off_extra = L.off_part + align16(size_t(L.w1.ksplit) * L.w1.rows_pad * kPartStride * 4);
  L.total = L.off_extra + align16(extra_floats * 4);
  return L;
}

// The forward's slice: the 4U rows of W_hh of the CTA's units; and c of the
// tile's rows and the CTA's units, [BT][U] floats, which the split-phase
// kernel keeps on chip (the other reserves it too, so that both run the
// same plans).
template <typename T>
__host__ __device__ inline ClusterLayout cluster_forward_layout(int U, int P, int BT) {
  return cluster_layout_of<T>(slice_geom<T>(4 * U, P), BT, size_t(BT) * U);
}

// A CTA's place in the grid of clusters: its rank in the cluster (which
// owns units [rank*U, rank*U + U)), the cluster's size, and the cluster's
// batch rows [b0, b0 + rows) of a batch of B (every step has <= B rows).
struct ClusterTile {
  int size = 0, rank = 0, b0 = 0, rows = 0;
  // The cluster's rows among a step's first bs rows.
  __device__ __forceinline__ int rows_of(int bs) const {
    return max(0, min(rows, bs - b0));
  }
};

// (A template: cooperative_groups has no cluster_group before sm_90, where
// the kernels' bodies only trap.)
template <typename ClusterGroup>
__device__ __forceinline__ ClusterTile cluster_tile(const ClusterGroup& cluster,
                                                    int BT, int B) {
  ClusterTile c;
  c.size = static_cast<int>(cluster.num_blocks());
  c.rank = static_cast<int>(cluster.block_rank());
  c.b0 = static_cast<int>(blockIdx.x) / c.size * BT;
  c.rows = min(BT, B - c.b0);
  return c;
}

// The widest unit, in bytes (16, 8, 4, or one element of es bytes), on
// which every offset and length of a broadcast_slice falls: a power of two
// that divides each of the values given (in bytes).
__host__ __device__ constexpr int broadcast_unit_bytes(int es, int a, int b, int c) {
  int w = 16;
  while (w > es && ((a | b | c) & (w - 1)) != 0) w /= 2;
  return w;
}

// Copies this CTA's part of buf (row stride ld, in its shared memory) into
// the same place in every other CTA of the cluster: rows [0, rows), and in
// each row the spans [q * span_stride + c0, q * span_stride + c0 + n) for
// q < spans. One distributed-shared-memory store carries a whole unit
// (Unit: 16, 8, 4 or 2 bytes; offsets and lengths fall on it), where one
// store per element would cost a remote transaction each (NOTES change 69).
// The caller's barrier must follow the writes of the part; no barrier here.
template <typename Unit, typename S, typename ClusterGroup>
__device__ __forceinline__ void broadcast_units(const ClusterGroup& cluster, S* buf,
                                                int ld, int rows, int c0, int n,
                                                int spans, int span_stride) {
  constexpr int per_unit = int(sizeof(Unit) / sizeof(S));
  const int cs = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int units = n / per_unit, per_dest = rows * spans * units;
  for (int e = threadIdx.x; e < (cs - 1) * per_dest; e += kThreads) {
    const int d = e / per_dest, rest = e - d * per_dest;
    const int row = rest / (spans * units), in_row = rest - row * (spans * units);
    const int q = in_row / units, unit = in_row - q * units;
    const int at = row * ld + q * span_stride + c0 + unit * per_unit;
    const Unit v = *reinterpret_cast<const Unit*>(buf + at);
    *reinterpret_cast<Unit*>(cluster.map_shared_rank(buf + at, unsigned(d < rank ? d : d + 1))) = v;
  }
}

template <typename S, typename ClusterGroup>
__device__ __forceinline__ void broadcast_slice(const ClusterGroup& cluster, S* buf, int ld,
                                                int rows, int c0, int n, int spans,
                                                int span_stride) {
  if (rows <= 0 || n <= 0) return;
  constexpr int es = int(sizeof(S));
  // c0, n and span_stride are multiples of the unit, and so is ld: then
  // every unit's offset is (the buffer is 16-byte aligned).
  const int w = broadcast_unit_bytes(es, es * ld, es * c0 | es * n,
                                     spans > 1 ? es * span_stride : 0);
  if (w == 16) broadcast_units<uint4>(cluster, buf, ld, rows, c0, n, spans, span_stride);
  else if (w == 8) broadcast_units<uint2>(cluster, buf, ld, rows, c0, n, spans, span_stride);
  else if (w == 4) broadcast_units<unsigned>(cluster, buf, ld, rows, c0, n, spans, span_stride);
  else broadcast_units<S>(cluster, buf, ld, rows, c0, n, spans, span_stride);
}

// Copies rows [0, rows) of src (shared memory, row stride ld) to the same
// places of dst (global memory, row stride ldd): in each row the spans
// [q * span_stride + c0, q * span_stride + c0 + n) for q < spans, whole
// units at a time. Where every cell would store its own value, the CTA
// writes full 16-byte pieces of each row.
template <typename Unit, typename S>
__device__ __forceinline__ void copy_rows_units(S* dst, int ldd, const S* src, int ld,
                                                int rows, int c0, int n, int spans,
                                                int span_stride) {
  constexpr int per_unit = int(sizeof(Unit) / sizeof(S));
  const int units = n / per_unit, per_row = spans * units;
  for (int e = threadIdx.x; e < rows * per_row; e += kThreads) {
    const int row = e / per_row, in_row = e - row * per_row;
    const int q = in_row / units, unit = in_row - q * units;
    const int col = q * span_stride + c0 + unit * per_unit;
    *reinterpret_cast<Unit*>(dst + int64_t(row) * ldd + col) =
        *reinterpret_cast<const Unit*>(src + row * ld + col);
  }
}

template <typename S>
__device__ __forceinline__ void copy_rows_to_global(S* dst, int ldd, const S* src, int ld,
                                                    int rows, int c0, int n, int spans = 1,
                                                    int span_stride = 0) {
  if (rows <= 0 || n <= 0) return;
  constexpr int es = int(sizeof(S));
  const int misaligned = int(reinterpret_cast<uintptr_t>(dst) & 15);
  const int w = broadcast_unit_bytes(es, es * ld | es * ldd, es * c0 | es * n,
                                     misaligned | (spans > 1 ? es * span_stride : 0));
  if (w == 16) copy_rows_units<uint4>(dst, ldd, src, ld, rows, c0, n, spans, span_stride);
  else if (w == 8) copy_rows_units<uint2>(dst, ldd, src, ld, rows, c0, n, spans, span_stride);
  else if (w == 4) copy_rows_units<unsigned>(dst, ldd, src, ld, rows, c0, n, spans, span_stride);
  else copy_rows_units<S>(dst, ldd, src, ld, rows, c0, n, spans, span_stride);
}

// One CTA of a cluster (no projection; tensor-core types). Arguments and
// shapes: PersistentForwardParams (h_buf[0] holds h0; nothing writes it).
//
// kSplitSync (the default; FUSEDLSTM_CLUSTER_SYNC=whole runs the other):
// the step's barrier in two phases. The arrive follows the broadcast of
// h_t; the output rows go out from the CTA's buffer and the next step's
// first cell inputs are loaded between the arrive and the wait. The arrive
// releases every memory operation the thread issued before it, so global
// stores before it would hold it for their L2 round trip, although nothing
// in the cluster reads them during the sequence; c stays in shared memory
// for the same reason (NOTES, change 71). In training the activated gates
// and c_t go out after the arrive too, from part and the c buffer, where the
// tile's rows of a step fit one chunk (else from the cell, before it).
template <typename T, bool kSplitSync>
__global__ void __launch_bounds__(kThreads)
    lstm_cluster_fwd(const PersistentForwardParams p, int U, int BT) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  // Clusters need sm_90; plan_cluster refuses devices without them and any
  // device that would run this image (built for the older targets in the
  // arch list), so it is never launched.
  __trap();
#else
  namespace cg = cooperative_groups;
  using S = storage_t<T>;
  cg::cluster_group cluster = cg::this_cluster();
  unsigned char* smem = dynamic_smem();
  const int H = p.H, P = p.P, T_ = p.sched.steps;
  const ClusterTile tile = cluster_tile(cluster, BT, p.B);
  const int b0 = tile.b0, rows = tile.rows, u0 = tile.rank * U;
  const int own_units = max(0, min(U, H - u0));  // this CTA's columns of h, clipped to H
  const ClusterLayout L = cluster_forward_layout<T>(U, P, BT);
  const int ld = L.w1.stride;
  S* w1 = reinterpret_cast<S*>(smem);
  S* h_local = reinterpret_cast<S*>(smem + L.off_h);  // [2][BT][ld]
  float* part = reinterpret_cast<float*>(smem + L.off_part);
  float* c_local = reinterpret_cast<float*>(smem + L.off_extra);  // [BT][U] (kSplitSync)

  S* output = static_cast<S*>(p.output);
  S* h_n = static_cast<S*>(p.h_n);
  const S* h0 = static_cast<const S*>(p.h_buf);
  const S* gates = static_cast<const S*>(p.gates);

  load_slice<T>(w1, L.w1, static_cast<const S*>(p.w_hh), P, [&](int r) {
    const int q = r / U, u = r - q * U;
    return u0 + u < H ? q * H + u0 + u : -1;
  });
  // Both buffers start as h0: rows that join late (a reverse packed batch)
  // read h0 from whichever buffer their first step reads. Zero past P, which
  // the product reads up to k_pad.
  for (size_t e = threadIdx.x; e < 2 * L.h_elems; e += kThreads) {
    const int b = int((e % L.h_elems) / ld), k = int(e % ld);
    h_local[e] = b < rows && k < P ? h0[int64_t(b0 + b) * P + k] : S(0);
  }
  // The cells' inputs of a step's first chunk, loaded ahead (kSplitSync:
  // during the previous step's barrier); the thread's cells are the same
  // every step (cells_after_product).
  CellInputs pre[kPreloadCells];
  auto preload = [&](int s) {
    const ForwardStep st = forward_step(p, s);
    preload_cells(min(kChunk, tile.rows_of(st.bs)) * U,
                  [&](int e) { return load_cell_x<T>(p, gates, e, b0, U, u0, st.row0); },
                  pre);
  };
  if constexpr (kSplitSync) {
    for (int e = threadIdx.x; e < BT * U; e += kThreads) {
      const int b = e / U, u = e - b * U;
      c_local[e] = b < rows && u0 + u < H ? p.c_state[int64_t(b0 + b) * H + u0 + u] : 0.f;
    }
    if (T_ > 0) preload(0);
  }
  __syncthreads();
  cluster.sync();  // every CTA of the cluster runs before any remote store

  for (int s = 0; s < T_; ++s) {
    const ForwardStep st = forward_step(p, s);
    const int bs = st.bs, bs_next = st.bs_next;
    const int64_t row0 = st.row0;
    const S* h_cur = h_local + (s & 1) * L.h_elems;
    S* h_nxt = h_local + ((s + 1) & 1) * L.h_elems;
    const int active = tile.rows_of(bs);
    // One chunk a step: part keeps the step's activated gates (over the
    // products each cell has read) until the next step's product, so that
    // training stores them after the arrive too.
    const bool one_chunk = active <= kChunk;

    for (int nb0 = 0; nb0 < active; nb0 += kChunk) {
      const int nbn = min(kChunk, active - nb0);
      auto product = [&] {
        block_matmul<T, true>(w1, L.w1, h_cur + nb0 * ld, ld, nbn, part, nullptr);
      };
      // Cell e of the chunk: tile row nb0 + e / U, unit u0 + e % U.
      auto cell = [&](int e, const CellInputs& in) {
        const int b = e / U, u = e - b * U, uu = u0 + u;
        if (uu >= H) return;
        const int bt = nb0 + b, bg = b0 + bt;
        const float* rec = part + u * kPartStride + b;
        S m;
        if constexpr (kSplitSync) {
          float& c = c_local[bt * U + u];
          const CellOut<float> o = forward_cell_math(rec, U * kPartStride, in.x, c);
          c = o.c;
          m = from_float<T>(o.m);
          if (p.cells != nullptr) {
            if (one_chunk) {  // stored after the arrive, from part and c_local
              float* keep = part + u * kPartStride + b;
              keep[0] = o.i;
              keep[U * kPartStride] = o.f;
              keep[2 * U * kPartStride] = o.g;
              keep[3 * U * kPartStride] = o.o;
            } else {
              store_activations<T>(p, row0 + bg, uu, o.i, o.f, o.g, o.o, o.c);
            }
          }
          if (bg >= bs_next) {  // the row's last step: its h_n and c_n
            h_n[int64_t(bg) * P + uu] = m;
            p.c_state[int64_t(bg) * H + uu] = o.c;
          }
        } else {
          m = forward_cell<T>(p, row0 + bg, bg, uu, rec, U * kPartStride, in);
          output[(row0 + bg) * P + uu] = m;
          if (bg >= bs_next) h_n[int64_t(bg) * P + uu] = m;  // row's last step
        }
        h_nxt[bt * ld + uu] = m;  // the other CTAs get it from broadcast_slice
      };
      if constexpr (kSplitSync) {
        auto load = [&](int e) { return load_cell_x<T>(p, gates, e, b0 + nb0, U, u0, row0); };
        if (nb0 == 0) {  // preloaded during the last barrier
          product();
          cells_from_preloaded(nbn * U, pre, load, cell);
        } else {
          cells_after_product(nbn * U, load, product, cell);
        }
      } else {
        cells_after_product(
            nbn * U,
            [&](int e) { return load_cell_inputs<T>(p, gates, e, b0 + nb0, U, u0, row0); },
            product, cell);
      }
      __syncthreads();  // part is rewritten by the next chunk; h_nxt's part is written
    }
    // This CTA's units of h_t (columns [u0, u0 + U), clipped to H) into the
    // other CTAs, whole units at a time.
    broadcast_slice(cluster, h_nxt, ld, active, u0, own_units, 1, 0);
    if constexpr (kSplitSync) {
      // Released: h_t in every CTA's next buffer, and this step's reads of
      // h_cur done before the next step's remote stores into it.
      auto arrived = cluster.barrier_arrive();
      copy_rows_to_global(output + (row0 + b0) * P, P, h_nxt, ld, active, u0, own_units);
      if (p.cells != nullptr && one_chunk) {
        for (int e = threadIdx.x; e < active * U; e += kThreads) {
          const int b = e / U, u = e - b * U;
          if (u0 + u >= H) continue;
          const float* keep = part + u * kPartStride + b;
          store_activations<T>(p, row0 + b0 + b, u0 + u, keep[0], keep[U * kPartStride],
                               keep[2 * U * kPartStride], keep[3 * U * kPartStride],
                               c_local[b * U + u]);
        }
      }
      if (s + 1 < T_) preload(s + 1);
      cluster.barrier_wait(std::move(arrived));
      // The wait lets a thread past it once every thread has arrived, not
      // once every thread has read what it reads after arriving: part's
      // activations must be read before the next product rewrites them.
      if (p.cells != nullptr && one_chunk) __syncthreads();
    } else {
      // h_t complete in every CTA's next buffer; also orders this step's reads
      // of h_cur before the next step's remote stores into it.
      cluster.sync();
    }
  }
#endif
}

}  // namespace fusedlstm::cuda::persistent

namespace fusedlstm::cuda {

// Planned for the split-phase kernel; the other (FUSEDLSTM_CLUSTER_SYNC=whole)
// has the same launch bounds and shared memory, and gets the same
// attributes.
template <typename T>
PersistentPlan plan_cluster_forward(int H, int P, int B, int device) {
  return persistent::plan_cluster(
      reinterpret_cast<const void*>(persistent::lstm_cluster_fwd<T, true>), H, P, B,
      device, [](int U, int P_, int BT) {
        return persistent::cluster_forward_layout<T>(U, P_, BT).total;
      },
      reinterpret_cast<const void*>(persistent::lstm_cluster_fwd<T, false>));
}

template <typename T>
void launch_cluster_forward(const PersistentPlan& plan,
                            const PersistentForwardParams& params,
                            bool split_sync, cudaStream_t stream) {
  persistent::launch_cluster(
      split_sync ? reinterpret_cast<const void*>(persistent::lstm_cluster_fwd<T, true>)
                 : reinterpret_cast<const void*>(persistent::lstm_cluster_fwd<T, false>),
      plan, params, stream);
}

}  // namespace fusedlstm::cuda
