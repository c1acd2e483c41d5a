// The fused float32 backward recurrence (recurrence.h), written once for the
// ISA of the including file (recurrence_backward_avx2.cpp,
// recurrence_backward_avx512.cpp): without a projection, the cell backward by
// units and dh_{t-1} = dG_t W_hh by column panels; with one, dm = dh_t W_hr
// first (see below). L: the register's lanes; panels are 2L wide.
// recurrence_backward_avx512bf16.cpp builds it under FUSEDLSTM_BF16_DOT for
// bfloat16 layers without a projection: the gate gradients are rounded to
// bfloat16 as they are stored (dgates16), and dG_t W_hh runs in bfloat16 dot
// products with float accumulation, as in oneDNN's bfloat16 LSTM backward.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/few_rows_tiles.h"
#include "cpu/recurrence.h"
#include "cpu/recurrence_blocks.h"
#if defined(FUSEDLSTM_BF16_DOT)
#include "cpu/recurrence_amx.h"
#endif

namespace fusedlstm::cpu::FUSEDLSTM_ISA {



// ------------------------------------------------- backward with a projection
//
// Per step, with dh_t = dh_state + grad_output already in grad_h_all:
//  phase A, by blocks of 2L units: dm = dh_t W_hr for the block's units (a
//    panel tile over P), then the cell backward of those units on the tile;
//  meet;
//  phase B, by 2L-column blocks of P: dh_{t-1} = dG_t W_hh into dh_state,
//    then dh of the next processed step's rows (dh_state + grad_output) into
//    grad_h_all;
//  meet.
// Phase A reads no dh_state, so phase B writes it in place: one buffer, and
// rows past the step keep their gradient without a copy.

namespace {

// One 2L-unit block's phase A of a step.
struct DmBlockStep {
  const RecurrentBackward* args;
  const float* packed;  // this block's [P][2L] panel of W_hr
  float* partial;       // [B][2L] sums of the earlier chunks
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
  Reg acc[R][2];
  float* partial = st.partial + r0 * kPanelCols;
  start_tile<R, 2>(st.k0 == 0, partial, acc);
  tile_product<R, 2>(a.grad_h_all + (st.first_row + r0) * P, P, st.packed,
                     st.k0, st.k1, acc,
                     prefetch_ahead(r0 > 0, st.packed, st.k0, st.k1, kPanelCols));
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

// The block's phase A for `rows` rows, by the tiles of for_each_panel_tile.
void dm_block_step(DmBlockStep st, int64_t rows) {
  const int64_t P = st.args->state;
  for (st.k0 = 0; st.k0 < P; st.k0 = st.k1) {
    st.k1 = std::min(P, st.k0 + kChunk);
    for_each_panel_tile(rows, [&](auto tile_rows, int64_t r) {
      dm_rows<decltype(tile_rows)::value>(st, r);
    });
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
  float* const m_panels = workspace<float>(WorkspaceRole::kProjectionWeights,
                                           dm_blocks * P * kPanelCols);
  float* const h_panels = workspace<float>(WorkspaceRole::kRecurrentWeights,
                                           dh_blocks * G * kPanelCols);
  const int64_t workers =
      choose_workers(10 * B * H * P, std::min(dm_blocks, dh_blocks));
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(dm_blocks, workers, w0, w1);
    const Share cols(dh_blocks, workers, w0, w1);
    // W_hr is [P, H]: row p of panel u is units [2Lu, 2Lu + 2L) of row p.
    pack_panels(a.w_hr, P, H, H, units.begin, units.end, m_panels,
                P * kPanelCols);
    pack_panels(a.w_hh, G, P, P, cols.begin, cols.end, h_panels,
                G * kPanelCols);
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

// The cell backward of unit block u for row b of the step that starts at
// row `first` of the [N, ...] buffers; dh: the step's [B, H] gradient
// reaching h_t from later steps.
template <typename GateGrad>
inline void cell_backward_of(const RecurrentBackward& a, int64_t u,
                             int64_t first, int64_t b, const float* dh,
                             GateGrad* dgates) {
  const int64_t H = a.hidden, G = 4 * H;
  const int64_t j = u * kLanes, n = std::min(kLanes, H - j), row = first + b;
  cell_backward(H, n, a.gates + row * G + j, a.cells + row * H + j,
                a.c_prev + row * H + j, dh + b * H + j,
                a.grad_output + row * H + j, a.dc_state + b * H + j,
                dgates + row * G + j);
}

#if defined(FUSEDLSTM_BF16_DOT)
// One column panel of dh_{t-1} = dG_t W_hh on AMX tiles: out[b][0..n) for
// the step's `rows` rows, which start at row `first` of dgates16, two row
// tiles at a time. Tiles read 16 whole rows: rows past the step are read
// and dropped, up to row `readable` (rows there may be written meanwhile, or
// the buffer ends); the rows of a tile that would run past it are copied
// into `tail` ([32][G]) first. `between` runs between the tile steps.
template <typename Between = NothingBetween>
void amx_dh_panel(const uint16_t* dgates16, int64_t first, int64_t rows,
                  int64_t readable, int64_t G, const uint32_t* panel,
                  int64_t depth, float* out, int64_t ldo, int64_t n,
                  float* tile_out, uint16_t* tail, Between between = {}) {
  for (int64_t r0 = 0; r0 < rows; r0 += 2 * kAmxRows) {
    const int64_t count = std::min(2 * kAmxRows, rows - r0);
    const int64_t tiles = count > kAmxRows ? 2 : 1;
    const uint16_t* a = dgates16 + (first + r0) * G;
    if (first + r0 + tiles * kAmxRows > readable) {
      // The rows past `count` give rows of the product that are dropped:
      // whatever the tail holds there (zeros at first) does no harm.
      std::memcpy(tail, a, count * G * sizeof(uint16_t));
      a = tail;
    }
    if (tiles == 2) {
      amx_panel_product<2>(a, G, panel, depth, tile_out, between);
    } else {
      amx_panel_product<1>(a, G, panel, depth, tile_out, between);
    }
    for (int64_t r = 0; r < count; ++r) {
      const float* src = tile_out + r * kPanelCols;
      float* dst = out + (r0 + r) * ldo;
      const int64_t n0 = std::min(kLanes, n);
      store(V(reg_load(src)), dst, n0);
      if (n > n0) store(V(reg_load(src + kLanes)), dst + kLanes, n - n0);
    }
  }
}

// The cell backward of one panel's unit blocks (a panel spans two of them)
// at one step, run a share at a time between the tile steps of the next
// panel's dh product: the tile unit works through the product while the
// vector units run the cells (NOTES change 35). Items are (unit block, row)
// pairs, rows fastest.
class PendingCellBackward {
 public:
  void start(const RecurrentBackward& a, int64_t u0, int64_t u1,
             int64_t first, int64_t rows, const float* dh, uint16_t* dgates) {
    a_ = &a;
    u0_ = u0;
    first_ = first;
    rows_ = rows;
    dh_ = dh;
    dgates_ = dgates;
    count_ = (u1 - u0) * rows;
    done_ = 0;
  }
  void operator()(int64_t i, int64_t steps) {
    run_until((i + 1) * count_ / steps);
  }
  void finish() { run_until(count_); }

 private:
  void run_until(int64_t end) {
    for (; done_ < end; ++done_) {
      cell_backward_of(*a_, u0_ + done_ / rows_, first_, done_ % rows_, dh_,
                       dgates_);
    }
  }

  const RecurrentBackward* a_ = nullptr;
  int64_t u0_ = 0, first_ = 0, rows_ = 1, count_ = 0, done_ = 0;
  const float* dh_ = nullptr;
  uint16_t* dgates_ = nullptr;
};

// recurrent_backward on AMX tiles, with one meeting per step instead of two:
// a worker owns column panels of dh and the unit blocks under them, so that
// the cell backward of its units needs only the dh columns it computed
// itself. Step s: once every worker has stored dG of step s - 1, each
// worker's panels of dh = dG_{s-1} W_hh, with the cells of step s for one
// panel's units running beside the product of the next panel; then meet.
// After the last step, dh of the last dG: the gradient of h0.
void amx_recurrent_backward(const RecurrentBackward& a, float* w_panels,
                            int64_t workers, int64_t depth) {
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, G = 4 * H, B = sched.batch;
  const int64_t steps = sched.steps();
  const int64_t unit_blocks = ceil_div(H, kLanes);
  const int64_t dh_blocks = ceil_div(H, kPanelCols);
  static_assert(kPanelCols == 2 * kLanes, "a panel spans two unit blocks");
  const at::Tensor spare = at::empty({B, H}, at::TensorOptions().dtype(at::kFloat));
  float* dh_buf[2] = {a.dh_state, spare.data_ptr<float>()};
  // Over-read rows (whole tiles) must not be rows that other workers write
  // during the product: dG of the step being processed. Processing runs
  // down the buffer (time T-1 to 0, step rows earlier in memory), except
  // for a reverse layer's backward, where the next rows are the step's own.
  const bool next_rows_written = a.reverse;
  PhaseCounter meeting;
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share cols(dh_blocks, workers, w0, w1);
    pack_panels_pairs(a.w_hh16, G, H, H, cols.begin, cols.end,
                      reinterpret_cast<uint32_t*>(w_panels), depth * kPanelCols);
    std::vector<float> tile_out(2 * kAmxRows * kPanelCols);
    std::vector<uint16_t> tail(2 * kAmxRows * G);
    PendingCellBackward pending;
    amx_configure();
    // dh of the step processed before s (rows [0, bs) of that step) into
    // dh_buf[s & 1], panel by panel; cells(c) starts the cells of panel c.
    const auto dh_products = [&](int64_t s, auto&& cells) {
      const int64_t t = sched.step_at(s - 1, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const int64_t readable = next_rows_written ? first + bs : sched.rows;
      const float* dh_prev = dh_buf[(s - 1) & 1];
      float* dh = dh_buf[s & 1];
      for (int64_t c = cols.begin; c < cols.end; ++c) {
        const int64_t col = c * kPanelCols, n = std::min(kPanelCols, H - col);
        amx_dh_panel(a.dgates16, first, bs, readable, G,
                     reinterpret_cast<const uint32_t*>(w_panels) + c * depth * kPanelCols,
                     depth, dh + col, H, n, tile_out.data(), tail.data(),
                     std::ref(pending));
        carry_rows(dh_prev, dh, H, bs, B, col, n);
        pending.finish();
        cells(c);
      }
      pending.finish();
    };
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* dh = dh_buf[s & 1];
      const auto cells = [&](int64_t c) {
        pending.start(a, 2 * c, std::min(2 * c + 2, unit_blocks), first, bs,
                      dh, a.dgates16);
      };
      if (s == 0) {
        for (int64_t c = cols.begin; c < cols.end; ++c) {
          cells(c);
          pending.finish();
        }
      } else {
        meeting.wait_for(s * workers);
        dh_products(s, cells);
      }
      meeting.arrive(w1 - w0);
    }
    meeting.wait_for(steps * workers);
    dh_products(steps, [](int64_t) {});
    amx_release();
  });
  if (steps & 1) std::memcpy(a.dh_state, dh_buf[1], B * H * sizeof(float));
}
#endif  // FUSEDLSTM_BF16_DOT

}  // namespace

void recurrent_backward(const RecurrentBackward& a) {
  if (a.w_hr != nullptr) {
    TORCH_CHECK(!kBf16Dot, "fusedlstm: no bfloat16 dot products with a projection");
    backward_projected(a);
    return;
  }
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, G = 4 * H, B = sched.batch;
  const int64_t steps = sched.steps();
  if (steps == 0 || B == 0) return;
  const int64_t unit_blocks = ceil_div(H, kLanes);
  const int64_t dh_blocks = ceil_div(H, kPanelCols);
  // The contraction of dh_{t-1} = dG_t W_hh: over 4H, or its pairs.
  const int64_t depth = kBf16Dot ? G / 2 : G;
  // A call of few rows reads W_hh as it lies (few_rows_tiles.h) instead of
  // packing it into panels first: the packing, a read and a write of all of
  // W_hh, is not repaid over so few rows (NOTES change 79).
  const bool direct = backward_reads_w_hh_directly(sched.rows, H, kBf16Dot);
  float* const w_panels =
      direct ? nullptr
             : workspace<float>(WorkspaceRole::kRecurrentWeights,
                                dh_blocks * depth * kPanelCols);
  const int64_t workers = choose_workers(8 * B * H * H, dh_blocks);
#if defined(FUSEDLSTM_BF16_DOT)
  // AMX tiles take the contraction in whole steps of 32 (4H = 32k: H % 8 ==
  // 0); other hidden sizes keep the AVX-512 BF16 dot products.
  if (!direct && amx_tiles_available() && H % 8 == 0) {
    amx_recurrent_backward(a, w_panels, workers, depth);
    return;
  }
#endif
  const at::Tensor spare = at::empty({B, H}, at::TensorOptions().dtype(at::kFloat));
  float* dh_buf[2] = {a.dh_state, spare.data_ptr<float>()};
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(unit_blocks, workers, w0, w1);
    const Share cols(dh_blocks, workers, w0, w1);
#if defined(FUSEDLSTM_BF16_DOT)
    uint16_t* const gate_grads = a.dgates16;
#else
    float* const gate_grads = a.dgates;
#endif
#if defined(FUSEDLSTM_BF16_DOT)
    const uint16_t* const w_hh = a.w_hh16;
    if (!direct) {
      pack_panels_pairs(a.w_hh16, G, H, H, cols.begin, cols.end,
                        reinterpret_cast<uint32_t*>(w_panels), depth * kPanelCols);
    }
#else
    const float* const w_hh = a.w_hh;
    if (!direct) {
      pack_panels(a.w_hh, G, H, H, cols.begin, cols.end, w_panels,
                  depth * kPanelCols);
    }
#endif
    const int64_t col_begin = cols.begin * kPanelCols;
    const int64_t col_end = std::min(H, cols.end * kPanelCols);
    std::vector<float> partial(direct ? 0 : B * kPanelCols);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t t = sched.step_at(s, !a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* dh_cur = dh_buf[s & 1];
      float* dh_next = dh_buf[(s + 1) & 1];
      if (s > 0) meeting.wait_for(2 * s * workers);
      for (int64_t u = units.begin; u < units.end; ++u) {
        for (int64_t b = 0; b < bs; ++b) {
          cell_backward_of(a, u, first, b, dh_cur, gate_grads);
        }
      }
      meeting.arrive(w1 - w0);
      meeting.wait_for((2 * s + 1) * workers);
      if (direct) {
        product_columns(gate_grads + first * G, bs, G, w_hh, H, col_begin, col_end,
                        dh_next);
        if (col_end > col_begin) {
          carry_rows(dh_cur, dh_next, H, bs, B, col_begin, col_end - col_begin);
        }
        meeting.arrive(w1 - w0);
        continue;
      }
      for (int64_t c = cols.begin; c < cols.end; ++c) {
        const int64_t col = c * kPanelCols, n = std::min(kPanelCols, H - col);
        PanelStep step{kBf16Dot ? nullptr : a.dgates + first * G, G,
                       w_panels + c * depth * kPanelCols, depth, partial.data(),
                       dh_next + col, H, nullptr, 0, n, 0, 0};
#if defined(FUSEDLSTM_BF16_DOT)
        step.a16 = gate_grads + first * G;
#endif
        panel_product(step, bs);
        carry_rows(dh_cur, dh_next, H, bs, B, col, n);
      }
      meeting.arrive(w1 - w0);
    }
  });
  if (steps & 1) std::memcpy(a.dh_state, dh_buf[1], B * H * sizeof(float));
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
