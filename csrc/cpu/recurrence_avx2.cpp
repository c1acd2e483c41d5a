// The fused float32 recurrence (recurrence.h) for AVX2 with FMA.
//
// Why not a BLAS call per step: the per-step product has M = batch rows (often
// 1-64), and a general GEMM re-packs all of W_hh on every call, which costs as
// much as the multiply at these sizes. Here each worker packs its slice of
// W_hh once per sequence, and the product's tile stays in registers through
// the cell update, so the preactivations are never written to memory.
//
// Like cell_avx2.cpp, this file alone is compiled for AVX2 (avx2_target.h,
// included before every other header).
#if defined(__x86_64__) && defined(__GNUC__)
#include "cpu/avx2_target.h"  // first: see there
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/recurrence.h"
#include "cpu/recurrence_tiles.h"
#include "cpu/step_sync.h"

namespace fusedlstm::cpu {

namespace {

using namespace avx2;
constexpr int64_t kForwardRows = 3;  // rows per unit tile: 12 accumulators

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Workers for a step of `flops`: each gets at least ~0.5 MFLOP (several
// microseconds), or the meeting at the end of the step costs more than the
// split saves; at most one per thread and per block.
constexpr int64_t kMinFlopsPerWorker = int64_t{1} << 17;
int64_t choose_workers(int64_t flops, int64_t blocks) {
  const int64_t by_work = std::max<int64_t>(1, flops / kMinFlopsPerWorker);
  return std::max<int64_t>(
      1, std::min({by_work, blocks, static_cast<int64_t>(at::get_num_threads())}));
}

// The blocks of the workers in chunk [w0, w1): [begin, end).
struct Share {
  int64_t begin, end;
  Share(int64_t blocks, int64_t workers, int64_t w0, int64_t w1) {
    int64_t unused;
    split_range(blocks, workers, w0, begin, unused);
    split_range(blocks, workers, w1 - 1, unused, end);
  }
};

// dst[k * dst_stride + l] = src[l * src_stride + k] for l < 8 and k < K, and
// zero for l >= rows: eight rows of the source become eight lanes. The weights
// are packed on every call, so this runs at memory speed: 8 x 8 blocks are
// transposed in registers, where element-by-element gathers down the columns
// of a row-major matrix took a tenth of a batch-8 forward (perf).
void pack_transposed8(const float* src, int64_t src_stride, int64_t rows,
                      int64_t K, float* dst, int64_t dst_stride) {
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes) {
    __m256 r[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      r[l] = l < rows ? _mm256_loadu_ps(src + l * src_stride + k)
                      : _mm256_setzero_ps();
    }
    transpose8x8(r);
    for (int l = 0; l < kLanes; ++l) {
      _mm256_storeu_ps(dst + (k + l) * dst_stride, r[l]);
    }
  }
  for (; k < K; ++k) {
    for (int64_t l = 0; l < kLanes; ++l) {
      dst[k * dst_stride + l] = l < rows ? src[l * src_stride + k] : 0.f;
    }
  }
}

// dst[k][q*8 + l] = W_hh[q*H + 8u + l][k] for W_hh [4H, K], zero past the
// last unit.
void pack_unit_block(const float* w_hh, int64_t H, int64_t K, int64_t u,
                     float* dst) {
  const int64_t units = std::min(kLanes, H - u * kLanes);
  for (int64_t q = 0; q < 4; ++q) {
    pack_transposed8(w_hh + (q * H + u * kLanes) * K, K, units, K,
                     dst + q * kLanes, kUnitCols);
  }
}

// dst[j][l] = W_hr[16c + l][j] for W_hr [P, H], zero from row P on: the
// panel of h_t = W_hr m_t.
void pack_projection_panel(const float* w_hr, int64_t P, int64_t H, int64_t c,
                           float* dst) {
  for (int64_t g = 0; g < 2; ++g) {
    const int64_t row = c * kPanelCols + g * kLanes;
    pack_transposed8(w_hr + std::min(row, P - 1) * H, H,
                     std::clamp<int64_t>(P - row, 0, kLanes), H,
                     dst + g * kLanes, kPanelCols);
  }
}

// dst[j][l] = src[j * row_stride + col * col_stride], col = 16c + l, for
// j < depth, zero from col = cols on.
void pack_panel(const float* src, int64_t depth, int64_t cols,
                int64_t row_stride, int64_t col_stride, int64_t c, float* dst) {
  for (int64_t j = 0; j < depth; ++j) {
    for (int64_t l = 0; l < kPanelCols; ++l) {
      const int64_t col = c * kPanelCols + l;
      dst[j * kPanelCols + l] =
          col < cols ? src[j * row_stride + col * col_stride] : 0.f;
    }
  }
}

// The cache lines of n floats from p (n <= 16: one line, or two where the
// span crosses a line).
inline void prefetch_floats(const float* p, int64_t n) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + n - 1), _MM_HINT_T0);
}

// Rows [from, B) are not in this step; they keep their state.
void carry_rows(const float* src, float* dst, int64_t width, int64_t from,
                int64_t B, int64_t col, int64_t n) {
  for (int64_t b = from; b < B; ++b) {
    std::memcpy(dst + b * width + col, src + b * width + col,
                n * sizeof(float));
  }
}

// ------------------------------------------------------------------ forward

// One unit block's step: the recurrent product of its 4 gates x 8 units,
// then the cell, row tile by row tile.
struct UnitBlockStep {
  const RecurrentForward* args;
  const float* h_prev;  // [B, P]
  float* h_next;        // [B, P]
  float* hidden;        // [B, H] with a projection, else nullptr
  const float* packed;  // this block's [P][32] slice of W_hh
  float* partial;       // [B][32] sums of the earlier chunks
  int64_t unit;         // first unit of the block
  int64_t first_row;    // the step's first row in the [N, ...] buffers
  int64_t k0, k1;       // the chunk
};

template <int R>
void unit_rows(const UnitBlockStep& st, int64_t r0) {
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden, P = a.state, G = 4 * H, j = st.unit;
  const int64_t n = std::min(kLanes, H - j);
  if (st.k0 == 0) {
    // The preactivations that the cell of these rows reads when the product
    // is done: written by the input GEMM for the whole sequence, they come
    // from memory, and four gates x R rows are streams the hardware
    // prefetcher does not follow. Asked for now, they arrive during the
    // product (perf showed the cell stalled on these loads at batch 8).
    for (int r = 0; r < R; ++r) {
      for (int q = 0; q < 4; ++q) {
        prefetch_floats(a.gates + (st.first_row + r0 + r) * G + q * H + j, n);
      }
    }
  }
  __m256 acc[R][4];
  float* partial = st.partial + r0 * kUnitCols;
  start_tile<R, 4>(st.k0 == 0, partial, acc);
  tile_product<R, 4>(st.h_prev + r0 * P, P, st.packed, st.k0, st.k1, acc,
                     prefetch_ahead(r0 / kForwardRows, st.packed, st.k0, st.k1,
                                    kUnitCols));
  if (st.k1 < P) {
    park_tile<R, 4>(acc, partial);
    return;
  }
  for (int r = 0; r < R; ++r) {
    const int64_t b = r0 + r, row = st.first_row + b;
    cell_from_tile(acc[r], H, n,
                   {a.bias + j, a.gates + row * G + j, a.cells + row * H + j,
                    a.c_state + b * H + j, st.h_next + b * P + j,
                    a.output + row * P + j,
                    st.hidden ? st.hidden + b * H + j : nullptr});
  }
}

void unit_block_step(UnitBlockStep st, int64_t rows) {
  const int64_t P = st.args->state;
  for (st.k0 = 0; st.k0 < P; st.k0 = st.k1) {
    st.k1 = std::min(P, st.k0 + kChunk);
    int64_t r = 0;
    for (; r + kForwardRows <= rows; r += kForwardRows) {
      unit_rows<kForwardRows>(st, r);
    }
    if (rows - r == 2) unit_rows<2>(st, r);
    if (rows - r == 1) unit_rows<1>(st, r);
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
  const int64_t H = a.hidden, P = a.state, B = sched.batch;
  const int64_t steps = sched.steps();
  const bool proj = a.w_hr != nullptr;
  if (steps == 0 || B == 0) return;
  const int64_t unit_blocks = ceil_div(H, kLanes);
  const int64_t proj_blocks = proj ? ceil_div(P, kPanelCols) : 0;
  // Meetings per step: after the cells, and after the projection.
  const int64_t phases = proj ? 2 : 1;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor unit_panels = at::empty({unit_blocks * P * kUnitCols}, f32);
  const at::Tensor proj_panels = at::empty({proj_blocks * H * kPanelCols}, f32);
  const at::Tensor spare = at::empty({B, P}, f32);
  const at::Tensor hidden = at::empty({proj ? B : 0, H}, f32);
  float* h_buf[2] = {a.h_state, spare.data_ptr<float>()};
  const int64_t workers = choose_workers(
      8 * B * H * P + 2 * B * H * (proj ? P : 0),
      proj ? std::min(unit_blocks, proj_blocks) : unit_blocks);
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(unit_blocks, workers, w0, w1);
    const Share cols(proj_blocks, workers, w0, w1);
    float* u_panels = unit_panels.data_ptr<float>();
    float* p_panels = proj_panels.data_ptr<float>();
    // Packed by the worker that reads it, so it starts in that core's cache.
    for (int64_t u = units.begin; u < units.end; ++u) {
      pack_unit_block(a.w_hh, H, P, u, u_panels + u * P * kUnitCols);
    }
    for (int64_t c = cols.begin; c < cols.end; ++c) {
      pack_projection_panel(a.w_hr, P, H, c, p_panels + c * H * kPanelCols);
    }
    std::vector<float> partial(B * std::max(kUnitCols, kPanelCols));
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* h_prev = h_buf[s & 1];
      float* h_next = h_buf[(s + 1) & 1];
      if (s > 0) meeting.wait_for(s * phases * workers);
      for (int64_t u = units.begin; u < units.end; ++u) {
        unit_block_step({&a, h_prev, h_next,
                         proj ? hidden.data_ptr<float>() : nullptr,
                         u_panels + u * P * kUnitCols, partial.data(),
                         u * kLanes, first, 0, 0},
                        bs);
        if (!proj) {
          carry_rows(h_prev, h_next, P, bs, B, u * kLanes,
                     std::min(kLanes, H - u * kLanes));
        }
      }
      if (proj) {
        meeting.arrive(w1 - w0);
        meeting.wait_for((s * phases + 1) * workers);
        for (int64_t c = cols.begin; c < cols.end; ++c) {
          const int64_t col = c * kPanelCols;
          const int64_t n = std::min(kPanelCols, P - col);
          panel_product({hidden.data_ptr<float>(), H,
                         p_panels + c * H * kPanelCols, H, partial.data(),
                         h_next + col, P, a.output + first * P + col, P, n, 0,
                         0},
                        bs);
          carry_rows(h_prev, h_next, P, bs, B, col, n);
        }
      }
      meeting.arrive(w1 - w0);
    }
  });
  if (steps & 1) std::memcpy(a.h_state, h_buf[1], B * P * sizeof(float));
}

// ------------------------------------------------- backward with a projection
//
// Per step, with dh_t = dh_state + grad_output already in grad_h_all:
//  phase A, by blocks of 16 units: dm = dh_t W_hr for the block's units (a
//    panel tile over P), then the cell backward of those units on the tile;
//  meet;
//  phase B, by 16-column blocks of P: dh_{t-1} = dG_t W_hh into dh_state,
//    then dh of the next processed step's rows (dh_state + grad_output) into
//    grad_h_all;
//  meet.
// Phase A reads no dh_state, so phase B writes it in place: one buffer, and
// rows past the step keep their gradient without a copy.

namespace {

// One 16-unit block's phase A of a step.
struct DmBlockStep {
  const RecurrentBackward* args;
  const float* packed;  // this block's [P][16] panel of W_hr
  float* partial;       // [B][16] sums of the earlier chunks
  int64_t unit;         // first unit of the block
  int64_t first_row;    // the step's first row in the [N, ...] buffers
  int64_t k0, k1;       // the chunk of P
};

template <int R>
void dm_rows(const DmBlockStep& st, int64_t r0) {
  const RecurrentBackward& a = *st.args;
  const int64_t H = a.hidden, P = a.state, G = 4 * H;
  if (st.k0 == 0) {
    // The cell backward's operands of these rows and units: one line of each
    // gate, of c_t, of c_{t-1} and of each gate's gradient, in 10 x R streams
    // that the hardware prefetcher does not follow (they come from memory:
    // the saved gates of a long sequence do not fit in cache). Asked for
    // now, they arrive while the tile runs.
    for (int r = 0; r < R; ++r) {
      const int64_t row = st.first_row + r0 + r;
      for (int q = 0; q < 4; ++q) {
        prefetch_floats(a.gates + row * G + q * H + st.unit, kPanelCols);
        prefetch_floats(a.dgates + row * G + q * H + st.unit, kPanelCols);
      }
      prefetch_floats(a.cells + row * H + st.unit, kPanelCols);
      prefetch_floats(a.c_prev + row * H + st.unit, kPanelCols);
    }
  }
  __m256 acc[R][2];
  float* partial = st.partial + r0 * kPanelCols;
  start_tile<R, 2>(st.k0 == 0, partial, acc);
  tile_product<R, 2>(a.grad_h_all + (st.first_row + r0) * P, P, st.packed,
                     st.k0, st.k1, acc,
                     prefetch_ahead(r0 / 6, st.packed, st.k0, st.k1, kPanelCols));
  if (st.k1 < P) {
    park_tile<R, 2>(acc, partial);
    return;
  }
  for (int r = 0; r < R; ++r) {
    const int64_t b = r0 + r, row = st.first_row + b;
    for (int q = 0; q < 2; ++q) {
      const int64_t j = st.unit + q * kLanes;
      if (j >= H) break;
      cell_backward_dm(H, std::min(kLanes, H - j), V(acc[r][q]),
                       a.gates + row * G + j, a.cells + row * H + j,
                       a.c_prev + row * H + j, a.dc_state + b * H + j,
                       a.dgates + row * G + j);
    }
  }
}

// The block's phase A for `rows` rows, tiles of 6 rows (12 accumulators).
void dm_block_step(DmBlockStep st, int64_t rows) {
  const int64_t P = st.args->state;
  for (st.k0 = 0; st.k0 < P; st.k0 = st.k1) {
    st.k1 = std::min(P, st.k0 + kChunk);
    int64_t r = 0;
    for (; r + 6 <= rows; r += 6) dm_rows<6>(st, r);
    switch (rows - r) {
      case 5: dm_rows<5>(st, r); break;
      case 4: dm_rows<4>(st, r); break;
      case 3: dm_rows<3>(st, r); break;
      case 2: dm_rows<2>(st, r); break;
      case 1: dm_rows<1>(st, r); break;
      default: break;
    }
  }
}

// grad_h_all = dh_state + grad_output for the `bs` rows of the step starting
// at row `first`, columns [col, col + n).
void gradient_reaching_h(const RecurrentBackward& a, int64_t first, int64_t bs,
                         int64_t col, int64_t n) {
  const int64_t P = a.state;
  for (int64_t b = 0; b < bs; ++b) {
    const int64_t row = first + b;
    for (int64_t k = col; k < col + n; k += kLanes) {
      const int64_t m = std::min(kLanes, col + n - k);
      store(load(a.dh_state + b * P + k, m) + load(a.grad_output + row * P + k, m),
            a.grad_h_all + row * P + k, m);
    }
  }
}

void backward_projected(const RecurrentBackward& a) {
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, P = a.state, G = 4 * H, B = sched.batch;
  const int64_t steps = sched.steps();
  if (steps == 0 || B == 0) return;
  const int64_t dm_blocks = ceil_div(H, kPanelCols);
  const int64_t dh_blocks = ceil_div(P, kPanelCols);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor dm_panels = at::empty({dm_blocks * P * kPanelCols}, f32);
  const at::Tensor dh_panels = at::empty({dh_blocks * G * kPanelCols}, f32);
  const int64_t workers =
      choose_workers(10 * B * H * P, std::min(dm_blocks, dh_blocks));
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(dm_blocks, workers, w0, w1);
    const Share cols(dh_blocks, workers, w0, w1);
    float* m_panels = dm_panels.data_ptr<float>();
    float* h_panels = dh_panels.data_ptr<float>();
    for (int64_t u = units.begin; u < units.end; ++u) {
      // W_hr is [P, H]: row p of the panel is units [16u, 16u + 16) of row p.
      pack_panel(a.w_hr, P, H, H, 1, u, m_panels + u * P * kPanelCols);
    }
    for (int64_t c = cols.begin; c < cols.end; ++c) {
      pack_panel(a.w_hh, G, P, P, 1, c, h_panels + c * G * kPanelCols);
    }
    std::vector<float> partial(B * kPanelCols);
    // The first processed step's dh_t, before anyone's phase A reads it.
    const int64_t t0 = sched.step_at(0, !a.reverse);
    for (int64_t c = cols.begin; c < cols.end; ++c) {
      const int64_t col = c * kPanelCols;
      gradient_reaching_h(a, sched.offsets[t0], sched.batch_sizes[t0], col,
                          std::min(kPanelCols, P - col));
    }
    meeting.arrive(w1 - w0);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      meeting.wait_for((2 * s + 1) * workers);
      for (int64_t u = units.begin; u < units.end; ++u) {
        dm_block_step({&a, m_panels + u * P * kPanelCols, partial.data(),
                       u * kPanelCols, first, 0, 0},
                      bs);
      }
      meeting.arrive(w1 - w0);
      meeting.wait_for((2 * s + 2) * workers);
      for (int64_t c = cols.begin; c < cols.end; ++c) {
        const int64_t col = c * kPanelCols, n = std::min(kPanelCols, P - col);
        panel_product({a.dgates + first * G, G, h_panels + c * G * kPanelCols,
                       G, partial.data(), a.dh_state + col, P, nullptr, 0, n,
                       0, 0},
                      bs);
        if (s + 1 < steps) {
          const int64_t next = sched.step_at(s + 1, !a.reverse);
          gradient_reaching_h(a, sched.offsets[next], sched.batch_sizes[next],
                              col, n);
        }
      }
      meeting.arrive(w1 - w0);
    }
  });
}

}  // namespace

void recurrent_backward_avx2(const RecurrentBackward& a) {
  if (a.w_hr != nullptr) {
    backward_projected(a);
    return;
  }
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, G = 4 * H, B = sched.batch;
  const int64_t steps = sched.steps();
  if (steps == 0 || B == 0) return;
  const int64_t unit_blocks = ceil_div(H, kLanes);
  const int64_t dh_blocks = ceil_div(H, kPanelCols);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor panels = at::empty({dh_blocks * G * kPanelCols}, f32);
  const at::Tensor spare = at::empty({B, H}, f32);
  float* dh_buf[2] = {a.dh_state, spare.data_ptr<float>()};
  const int64_t workers = choose_workers(8 * B * H * H, dh_blocks);
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(unit_blocks, workers, w0, w1);
    const Share cols(dh_blocks, workers, w0, w1);
    float* w_panels = panels.data_ptr<float>();
    for (int64_t c = cols.begin; c < cols.end; ++c) {
      pack_panel(a.w_hh, G, H, H, 1, c, w_panels + c * G * kPanelCols);
    }
    std::vector<float> partial(B * kPanelCols);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* dh_cur = dh_buf[s & 1];
      float* dh_next = dh_buf[(s + 1) & 1];
      if (s > 0) meeting.wait_for(2 * s * workers);
      for (int64_t u = units.begin; u < units.end; ++u) {
        const int64_t j = u * kLanes, n = std::min(kLanes, H - j);
        for (int64_t b = 0; b < bs; ++b) {
          const int64_t row = first + b;
          cell_backward(H, n, a.gates + row * G + j, a.cells + row * H + j,
                        a.c_prev + row * H + j, dh_cur + b * H + j,
                        a.grad_output + row * H + j, a.dc_state + b * H + j,
                        a.dgates + row * G + j);
        }
      }
      meeting.arrive(w1 - w0);
      meeting.wait_for((2 * s + 1) * workers);
      for (int64_t c = cols.begin; c < cols.end; ++c) {
        const int64_t col = c * kPanelCols, n = std::min(kPanelCols, H - col);
        panel_product({a.dgates + first * G, G, w_panels + c * G * kPanelCols,
                       G, partial.data(), dh_next + col, H, nullptr, 0, n, 0,
                       0},
                      bs);
        carry_rows(dh_cur, dh_next, H, bs, B, col, n);
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
