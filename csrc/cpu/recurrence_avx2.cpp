// The fused float32 recurrence (recurrence.h) for AVX2 with FMA.
//
// Why not a BLAS call per step: the per-step product has M = batch rows (often
// 1-64), and a general GEMM re-packs all of W_hh on every call, which costs as
// much as the multiply at these sizes. Here each worker packs its slice of
// W_hh once per sequence, and the product's tile stays in registers through
// the cell update, so the preactivations are never written to memory.
//
// Like cell_avx2.cpp, this file alone is compiled for AVX2: the pragma and the
// feature macros come before every include, and at::vec then uses its 256-bit
// specialisations with Sleef's vector exp and tanh.
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("avx,avx2,fma,f16c")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/recurrence.h"
#include "cpu/step_sync.h"

namespace fusedlstm::cpu {

namespace {

using V = at::vec::Vectorized<float>;
constexpr int64_t kLanes = 8;               // hidden units per block: one ymm
constexpr int64_t kUnitCols = 4 * kLanes;   // packed columns of a unit block
constexpr int64_t kDhCols = 2 * kLanes;     // dh columns per backward block
constexpr int64_t kForwardRows = 3;         // rows per forward register tile
constexpr int64_t kBackwardRows = 6;        // rows per backward register tile
// K per chunk: a unit block's chunk of W_hh (8 KiB) and the rows' chunk of h
// (16 KiB at 64 rows) fit in L1 together.
constexpr int64_t kChunk = 64;

inline V load(const float* p, int64_t n) {
  return n == kLanes ? V::loadu(p) : V::loadu(p, n);
}
inline void store(const V& v, float* p, int64_t n) {
  if (n == kLanes) v.store(p); else v.store(p, n);
}
inline V sigmoid(const V& x) {
  const V one(1.f);
  return one / (one + x.neg().exp());
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Workers for a step of `flops`: each gets at least ~0.5 MFLOP (several
// microseconds), or the meeting at the end of the step costs more than the
// split saves; at most one per thread and per block.
constexpr int64_t kMinFlopsPerWorker = int64_t{1} << 19;
int64_t choose_workers(int64_t flops, int64_t blocks) {
  const int64_t by_work = std::max<int64_t>(1, flops / kMinFlopsPerWorker);
  return std::max<int64_t>(
      1, std::min({by_work, blocks, static_cast<int64_t>(at::get_num_threads())}));
}

// ------------------------------------------------------------------ forward

// dst[k][q*8 + l] = W_hh[q*H + 8u + l][k], zero past the last unit.
void pack_unit_block(const float* w_hh, int64_t H, int64_t u, float* dst) {
  for (int64_t k = 0; k < H; ++k) {
    for (int64_t q = 0; q < 4; ++q) {
      for (int64_t l = 0; l < kLanes; ++l) {
        const int64_t j = u * kLanes + l;
        dst[k * kUnitCols + q * kLanes + l] =
            j < H ? w_hh[(q * H + j) * H + k] : 0.f;
      }
    }
  }
}

// acc[r][q] += sum_{k in [k0, k1)} h[r][k] * packed[k][q*8 .. q*8+8), for R
// rows of h (row stride ldh).
template <int R>
inline void unit_tile(const float* h, int64_t ldh, const float* packed,
                      int64_t k0, int64_t k1, __m256 (&acc)[R][4]) {
  // A local copy: `acc` escapes to the cell afterwards, and GCC would keep an
  // escaping array in memory, storing all of it on every k.
  __m256 c[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) c[r][q] = acc[r][q];
  for (int64_t k = k0; k < k1; ++k) {
    const float* w = packed + k * kUnitCols;
    const __m256 b0 = _mm256_loadu_ps(w);
    const __m256 b1 = _mm256_loadu_ps(w + kLanes);
    const __m256 b2 = _mm256_loadu_ps(w + 2 * kLanes);
    const __m256 b3 = _mm256_loadu_ps(w + 3 * kLanes);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(h + r * ldh + k);
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
      c[r][2] = _mm256_fmadd_ps(a, b2, c[r][2]);
      c[r][3] = _mm256_fmadd_ps(a, b3, c[r][3]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) acc[r][q] = c[r][q];
}

struct ForwardRow {
  float* gates;    // this row's [4H] gates, at the block's first unit
  float* cells;    // [H] row of c_t, at the block's first unit
  float* output;   // [H] row of h_t, likewise
  float* c_state;  // [H] c of the sequence, likewise
  float* h_next;   // [H] h for the next step, likewise
};

// The cell of one row and unit block, from its recurrent product in registers;
// the same arithmetic as cell_kernels.h.
inline void cell_from_tile(const __m256 (&acc)[4], int64_t H, int64_t n,
                           const ForwardRow& row) {
  const V i = sigmoid(V(acc[0]) + load(row.gates, n));
  const V f = sigmoid(V(acc[1]) + load(row.gates + H, n));
  const V g = (V(acc[2]) + load(row.gates + 2 * H, n)).tanh();
  const V o = sigmoid(V(acc[3]) + load(row.gates + 3 * H, n));
  const V c_new = f * load(row.c_state, n) + i * g;
  const V h = o * c_new.tanh();
  store(i, row.gates, n);
  store(f, row.gates + H, n);
  store(g, row.gates + 2 * H, n);
  store(o, row.gates + 3 * H, n);
  store(c_new, row.c_state, n);
  store(c_new, row.cells, n);
  store(h, row.h_next, n);
  store(h, row.output, n);
}

// What one worker needs to run a K-chunk of a unit block over a step's rows.
struct UnitBlockStep {
  const RecurrentForward* args;
  const float* h_prev;  // [B, H]
  float* h_next;        // [B, H]
  const float* packed;  // this block's [H][32] slice of W_hh
  float* partial;       // [B][32] sums of the earlier K-chunks
  int64_t unit;         // first unit of the block
  int64_t first_row;    // the step's first row in the [N, ...] buffers
  int64_t k0, k1;       // the K-chunk
};

// Rows [r0, r0 + R): adds the chunk to the partial sums, or, on the last
// chunk, finishes the product in registers and applies the cell.
template <int R>
void forward_rows(const UnitBlockStep& st, int64_t r0) {
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden, G = 4 * H, j = st.unit;
  const int64_t n = std::min(kLanes, H - j);
  __m256 acc[R][4];
  for (int r = 0; r < R; ++r) {
    for (int q = 0; q < 4; ++q) {
      acc[r][q] = st.k0 == 0
          ? _mm256_setzero_ps()
          : _mm256_loadu_ps(st.partial + (r0 + r) * kUnitCols + q * kLanes);
    }
  }
  unit_tile<R>(st.h_prev + r0 * H, H, st.packed, st.k0, st.k1, acc);
  if (st.k1 < H) {
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 4; ++q)
        _mm256_storeu_ps(st.partial + (r0 + r) * kUnitCols + q * kLanes,
                         acc[r][q]);
    return;
  }
  for (int r = 0; r < R; ++r) {
    const int64_t b = r0 + r, row = st.first_row + b;
    cell_from_tile(acc[r], H, n,
                   {a.gates + row * G + j, a.cells + row * H + j,
                    a.output + row * H + j, a.c_state + b * H + j,
                    st.h_next + b * H + j});
  }
}

// One step of one unit block: K in chunks that keep the block's slice of
// W_hh in L1 while every row tile passes over it.
void forward_unit_block(UnitBlockStep st, int64_t rows) {
  const int64_t H = st.args->hidden;
  for (st.k0 = 0; st.k0 < H; st.k0 = st.k1) {
    st.k1 = std::min(H, st.k0 + kChunk);
    int64_t r = 0;
    for (; r + kForwardRows <= rows; r += kForwardRows) {
      forward_rows<kForwardRows>(st, r);
    }
    if (rows - r == 2) forward_rows<2>(st, r);
    if (rows - r == 1) forward_rows<1>(st, r);
  }
}

// ----------------------------------------------------------------- backward

// dst[j][l] = W_hh[j][16c + l] for all 4H rows j, zero past the last column.
void pack_dh_block(const float* w_hh, int64_t H, int64_t c, float* dst) {
  for (int64_t j = 0; j < 4 * H; ++j) {
    for (int64_t l = 0; l < kDhCols; ++l) {
      const int64_t col = c * kDhCols + l;
      dst[j * kDhCols + l] = col < H ? w_hh[j * H + col] : 0.f;
    }
  }
}

// A chunk [j0, j1) of dh[r][0..16) = sum_j dgates[r][j] * packed[j][0..16)
// for rows [r0, r0 + R): partial sums go to `partial` ([B][16]) until the
// last chunk, which stores the n valid columns to `out` (row stride H).
struct DhBlockStep {
  const float* dgates;  // the step's first row of dgates, [rows][4H]
  const float* packed;  // this block's [4H][16] slice of W_hh
  float* partial;
  float* out;           // the step's dh_{t-1} at the block's first column
  int64_t hidden;       // H
  int64_t n;            // valid columns of the block
  int64_t j0, j1;
};

template <int R>
void dh_rows(const DhBlockStep& st, int64_t r0) {
  const int64_t H = st.hidden, G = 4 * H;
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) {
    for (int q = 0; q < 2; ++q) {
      acc[r][q] = st.j0 == 0
          ? _mm256_setzero_ps()
          : _mm256_loadu_ps(st.partial + (r0 + r) * kDhCols + q * kLanes);
    }
  }
  const float* dg = st.dgates + r0 * G;
  for (int64_t j = st.j0; j < st.j1; ++j) {
    const __m256 b0 = _mm256_loadu_ps(st.packed + j * kDhCols);
    const __m256 b1 = _mm256_loadu_ps(st.packed + j * kDhCols + kLanes);
    for (int r = 0; r < R; ++r) {
      const __m256 x = _mm256_broadcast_ss(dg + r * G + j);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    }
  }
  if (st.j1 < G) {
    for (int r = 0; r < R; ++r)
      for (int q = 0; q < 2; ++q)
        _mm256_storeu_ps(st.partial + (r0 + r) * kDhCols + q * kLanes,
                         acc[r][q]);
    return;
  }
  const int64_t n0 = std::min(kLanes, st.n), n1 = st.n - n0;
  for (int r = 0; r < R; ++r) {
    float* out = st.out + (r0 + r) * H;
    store(V(acc[r][0]), out, n0);
    if (n1 > 0) store(V(acc[r][1]), out + kLanes, n1);
  }
}

void dh_block(DhBlockStep st, int64_t rows) {
  const int64_t G = 4 * st.hidden;
  for (st.j0 = 0; st.j0 < G; st.j0 = st.j1) {
    st.j1 = std::min(G, st.j0 + kChunk);
    int64_t r = 0;
    for (; r + kBackwardRows <= rows; r += kBackwardRows) {
      dh_rows<kBackwardRows>(st, r);
    }
    switch (rows - r) {
      case 5: dh_rows<5>(st, r); break;
      case 4: dh_rows<4>(st, r); break;
      case 3: dh_rows<3>(st, r); break;
      case 2: dh_rows<2>(st, r); break;
      case 1: dh_rows<1>(st, r); break;
      default: break;
    }
  }
}

// The cell backward of one row and unit block; the arithmetic of
// cell_kernels.h. dh: gradient reaching h_t from step t+1.
inline void cell_backward_block(const RecurrentBackward& a, int64_t row,
                                int64_t b, int64_t j, int64_t n,
                                const float* dh) {
  const int64_t H = a.hidden, G = 4 * H;
  const V one(1.f);
  const float* g_in = a.gates + row * G + j;
  float* dg = a.dgates + row * G + j;
  float* dc = a.dc_state + b * H + j;
  const V i = load(g_in, n), f = load(g_in + H, n);
  const V g = load(g_in + 2 * H, n), o = load(g_in + 3 * H, n);
  const V tc = load(a.cells + row * H + j, n).tanh();
  const V dm = load(dh + b * H + j, n) + load(a.grad_output + row * H + j, n);
  const V dcv = load(dc, n) + dm * o * (one - tc * tc);
  const V cp = load(a.c_prev + row * H + j, n);
  store(dcv * g * i * (one - i), dg, n);
  store(dcv * cp * f * (one - f), dg + H, n);
  store(dcv * i * (one - g * g), dg + 2 * H, n);
  store(dm * tc * o * (one - o), dg + 3 * H, n);
  store(dcv * f, dc, n);
}

// Rows [from, B) are not in this step; they keep their state.
void carry_rows(const float* src, float* dst, int64_t H, int64_t from,
                int64_t B, int64_t j, int64_t n) {
  for (int64_t b = from; b < B; ++b) {
    std::memcpy(dst + b * H + j, src + b * H + j, n * sizeof(float));
  }
}

}  // namespace

bool fused_recurrence_supported() {
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
}

void recurrent_forward_avx2(const RecurrentForward& a) {
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, B = sched.batch, steps = sched.steps();
  const int64_t blocks = ceil_div(H, kLanes);
  if (steps == 0 || B == 0) return;
  const at::Tensor packed = at::empty({blocks * H * kUnitCols}, at::kFloat);
  const at::Tensor spare = at::empty({B, H}, at::kFloat);
  float* h_buf[2] = {a.h_state, spare.data_ptr<float>()};
  float* packed_w = packed.data_ptr<float>();
  const int64_t workers = choose_workers(8 * B * H * H, blocks);
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    int64_t u0, u1, unused;
    split_range(blocks, workers, w0, u0, unused);
    split_range(blocks, workers, w1 - 1, unused, u1);
    // Packed by the worker that reads it, so it starts in that core's cache.
    for (int64_t u = u0; u < u1; ++u) {
      pack_unit_block(a.w_hh, H, u, packed_w + u * H * kUnitCols);
    }
    std::vector<float> partial(H > kChunk ? B * kUnitCols : 0);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* h_prev = h_buf[s & 1];
      float* h_next = h_buf[(s + 1) & 1];
      if (s > 0) meeting.wait_for(s * workers);
      for (int64_t u = u0; u < u1; ++u) {
        forward_unit_block({&a, h_prev, h_next, packed_w + u * H * kUnitCols,
                            partial.data(), u * kLanes, first, 0, 0},
                           bs);
        carry_rows(h_prev, h_next, H, bs, B, u * kLanes,
                   std::min(kLanes, H - u * kLanes));
      }
      meeting.arrive(w1 - w0);
    }
  });
  if (steps & 1) std::memcpy(a.h_state, h_buf[1], B * H * sizeof(float));
}

void recurrent_backward_avx2(const RecurrentBackward& a) {
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, G = 4 * H, B = sched.batch;
  const int64_t steps = sched.steps();
  const int64_t unit_blocks = ceil_div(H, kLanes);
  const int64_t dh_blocks = ceil_div(H, kDhCols);
  if (steps == 0 || B == 0) return;
  const at::Tensor packed = at::empty({dh_blocks * G * kDhCols}, at::kFloat);
  const at::Tensor spare = at::empty({B, H}, at::kFloat);
  float* dh_buf[2] = {a.dh_state, spare.data_ptr<float>()};
  float* packed_w = packed.data_ptr<float>();
  const int64_t workers = choose_workers(8 * B * H * H, dh_blocks);
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    int64_t u0, u1, c0, c1, unused;
    split_range(unit_blocks, workers, w0, u0, unused);
    split_range(unit_blocks, workers, w1 - 1, unused, u1);
    split_range(dh_blocks, workers, w0, c0, unused);
    split_range(dh_blocks, workers, w1 - 1, unused, c1);
    for (int64_t c = c0; c < c1; ++c) {
      pack_dh_block(a.w_hh, H, c, packed_w + c * G * kDhCols);
    }
    std::vector<float> partial(G > kChunk ? B * kDhCols : 0);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* dh_cur = dh_buf[s & 1];
      float* dh_next = dh_buf[(s + 1) & 1];
      if (s > 0) meeting.wait_for(2 * s * workers);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t j = u * kLanes, n = std::min(kLanes, H - j);
        for (int64_t b = 0; b < bs; ++b) {
          cell_backward_block(a, first + b, b, j, n, dh_cur);
        }
      }
      meeting.arrive(w1 - w0);
      meeting.wait_for((2 * s + 1) * workers);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t j = c * kDhCols, n = std::min(kDhCols, H - j);
        dh_block({a.dgates + first * G, packed_w + c * G * kDhCols,
                  partial.data(), dh_next + j, H, n, 0, 0},
                 bs);
        carry_rows(dh_cur, dh_next, H, bs, B, j, n);
      }
      meeting.arrive(w1 - w0);
    }
  });
  if (steps & 1) std::memcpy(a.dh_state, dh_buf[1], B * H * sizeof(float));
}

}  // namespace fusedlstm::cpu

#else  // not x86-64 with GCC/Clang: the BLAS path in forward.cpp serves

#include <c10/util/Exception.h>

#include "cpu/recurrence.h"

namespace fusedlstm::cpu {
bool fused_recurrence_supported() { return false; }
void recurrent_forward_avx2(const RecurrentForward&) {
  TORCH_CHECK(false, "fusedlstm: the AVX2 recurrence is not built for this CPU");
}
void recurrent_backward_avx2(const RecurrentBackward&) {
  TORCH_CHECK(false, "fusedlstm: the AVX2 recurrence is not built for this CPU");
}
}  // namespace fusedlstm::cpu
#endif
