// The fused float32 forward recurrence (recurrence.h), written once for the
// ISA of the including file (recurrence_forward_avx2.cpp,
// recurrence_forward_avx512.cpp, which include their target header first).
//
// Why not a BLAS call per step: the per-step product has M = batch rows (often
// 1-64), and a general GEMM re-packs all of W_hh on every call, which costs as
// much as the multiply at these sizes. Here each worker packs its slice of
// W_hh once per sequence, and the product's tile stays in registers through
// the cell update, so the preactivations are never written to memory.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <vector>

#include "cpu/recurrence.h"
#include "cpu/recurrence_blocks.h"
#if defined(FUSEDLSTM_BF16_DOT)
#include "cpu/recurrence_amx.h"
#endif

namespace fusedlstm::cpu::FUSEDLSTM_ISA {


namespace {

#if !defined(FUSEDLSTM_BF16_DOT)
constexpr int64_t kAmxRows = 16;  // no tiles in this build: plan.amx is false
#endif

// Steps of the contraction over P: k, or pairs of k with bfloat16 operands.
inline int64_t product_depth(int64_t P) { return kBf16Dot ? (P + 1) / 2 : P; }

// One unit block's step: the recurrent product of its 4 gates x L units,
// then the cell, row tile by row tile.
struct UnitBlockStep {
  const RecurrentForward* args;
  const float* h_prev;  // [B, P]
  float* h_next;        // [B, P]
  float* hidden;        // [B, H] with a projection, else nullptr
  const float* packed;  // this block's [P][4L] slice of W_hh (bfloat16 dot:
                        //   [P/2][4L] words of pairs, zero rows up to
                        //   amx_depth on AMX)
  const uint16_t* h16;  // bfloat16 dot: h_prev rounded, [B][ld16]
  int64_t ld16;
  float* partial;       // [B][4L] sums of the earlier chunks
  int64_t unit;         // first unit of the block
  int64_t first_row;    // the step's first row of the output
  int64_t gate_row;     // the step's first row of the gates and cells buffers
  int64_t k0, k1;       // the chunk
  int64_t row0 = 0;     // batch row of the step's row 0 (rows split over
                        //   workers: ForwardPlan::split_rows)
};

// Where the cell of the step's row b writes, for the block's units.
inline CellRow cell_row(const UnitBlockStep& st, int64_t b) {
  b += st.row0;
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden, P = a.state, G = 4 * H, j = st.unit;
  const int64_t row = st.first_row + b, gate_row = st.gate_row + b;
  return {a.bias + j, a.gates + gate_row * G + j,
          a.cells ? a.cells + gate_row * H + j : nullptr,
          a.c_state + b * H + j, st.h_next + b * P + j,
          a.output16 ? nullptr : a.output + row * P + j,
          st.hidden ? st.hidden + b * H + j : nullptr,
          a.output16 ? a.output16 + row * P + j : nullptr};
}

template <int R>
void unit_rows(const UnitBlockStep& st, int64_t r0, bool two_chains = true) {
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden, P = a.state, G = 4 * H, j = st.unit;
  const int64_t n = std::min(kLanes, H - j);
  if (st.k0 == 0) {
    // The preactivations that the cell of these rows reads when the product
    // is done: written by the input GEMM, they come from memory or L3, and
    // four gates x R rows are streams the hardware prefetcher does not
    // follow. Asked for now, they arrive during the product (perf showed the
    // cell stalled on these loads at batch 8).
    for (int r = 0; r < R; ++r) {
      for (int q = 0; q < 4; ++q) {
        prefetch_floats(a.gates + (st.gate_row + st.row0 + r0 + r) * G + q * H + j, n);
      }
    }
  }
  Reg acc[R][4];
  float* partial = st.partial + r0 * kUnitCols;
  start_tile<R, 4>(st.k0 == 0, partial, acc);
  const float* ahead =
      prefetch_ahead(r0 / kForwardRows, st.packed, st.k0, st.k1, kUnitCols);
#if defined(FUSEDLSTM_BF16_DOT)
  tile_product_bf16<R, 4>(st.h16 + r0 * st.ld16, st.ld16,
                          reinterpret_cast<const uint32_t*>(st.packed), st.k0,
                          st.k1, acc, ahead);
#else
  tile_product<R, 4>(st.h_prev + r0 * P, P, st.packed, st.k0, st.k1, acc,
                     ahead, two_chains);
#endif
  if (st.k1 < product_depth(P)) {
    park_tile<R, 4>(acc, partial);
    return;
  }
  for (int r = 0; r < R; ++r) cell_from_tile(acc[r], H, n, cell_row(st, r0 + r));
}

#if !defined(FUSEDLSTM_BF16_DOT)
// The direct product, for calls of few steps (plan_forward says when): one
// gate of a unit block for one row, h_{t-1} . W_hh[q*H + j + l] for each unit
// l, read from W_hh as it is ([4H, P], rows P apart) with no packing. Lanes
// run along k; each unit's lanes are summed at the end. kFull: all kLanes
// units exist (every block but a last, partial one).
template <bool kFull>
inline Reg direct_gate(const float* w, int64_t P, int64_t n, const float* h) {
  Reg acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = reg_zero();
  const int64_t units = kFull ? kLanes : n;
  int64_t k = 0;
  for (; k + kLanes <= P; k += kLanes) {
    const Reg x = reg_load(h + k);
    for (int64_t l = 0; l < units; ++l) {
      acc[l] = reg_fma(reg_load(w + l * P + k), x, acc[l]);
    }
  }
  if (k < P) {
    const int64_t rest = P - k;
    const Reg x = load(h + k, rest);
    for (int64_t l = 0; l < units; ++l) {
      acc[l] = reg_fma(load(w + l * P + k, rest), x, acc[l]);
    }
  }
  return reg_lane_sums(acc);
}

// unit_block_step with the direct product: row by row, the four gates, then
// the cell.
void direct_unit_block_step(const UnitBlockStep& st, int64_t rows) {
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden, P = a.state, j = st.unit;
  const int64_t n = std::min(kLanes, H - j);
  for (int64_t b = 0; b < rows; ++b) {
    const float* h = st.h_prev + b * P;
    Reg acc[4];
    for (int64_t q = 0; q < 4; ++q) {
      const float* w = a.w_hh + (q * H + j) * P;
      acc[q] = n == kLanes ? direct_gate<true>(w, P, n, h)
                           : direct_gate<false>(w, P, n, h);
    }
    cell_from_tile(acc, H, n, cell_row(st, b));
  }
}
#endif  // !FUSEDLSTM_BF16_DOT

#if defined(FUSEDLSTM_BF16_DOT)
// The cells of rows [from, to) of a tile product that starts at row r0 of
// the step, from its stored tiles ([rows][kUnitCols] floats).
inline void cells_from_tiles(const UnitBlockStep& st, int64_t r0,
                             const float* tiles, int64_t from, int64_t to) {
  const int64_t H = st.args->hidden, n = std::min(kLanes, H - st.unit);
  for (int64_t r = from; r < to; ++r) {
    Reg acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = reg_load(tiles + r * kUnitCols + q * kLanes);
    cell_from_tile(acc, H, n, cell_row(st, r0 + r));
  }
}

// The cells of one tile product's rows (up to two row tiles of a unit block),
// run a share at a time between the tile steps of the next product: the tile
// unit works through its products while the vector units evaluate the cells,
// which took a third of a step when they ran after the products (NOTES
// change 34). `tiles` holds the product, [rows][kUnitCols] floats.
class PendingCells {
 public:
  void start(const UnitBlockStep& st, int64_t r0, int64_t count,
             const float* tiles) {
    step_ = st;
    r0_ = r0;
    count_ = count;
    done_ = 0;
    tiles_ = tiles;
  }
  // The rows due by the end of step i of `steps`: an even share of them.
  void operator()(int64_t i, int64_t steps) {
    run_until((i + 1) * count_ / steps);
  }
  void finish() { run_until(count_); }

 private:
  void run_until(int64_t end) {
    if (done_ >= end) return;
    cells_from_tiles(step_, r0_, tiles_, done_, end);
    done_ = end;
  }

  UnitBlockStep step_{};
  int64_t r0_ = 0, count_ = 0, done_ = 0;
  const float* tiles_ = nullptr;
};

// Products of fewer rows run their cells at once: at batch 1-4 the pipeline
// was slower by up to a fifth (C1, H = 256, batch 1: 0.61 against 0.53 ms;
// batch 8 even; batch 16 4 % faster pipelined; NOTES change 34).
constexpr int64_t kPipelinedRows = 8;
// Nor do products of at most six tile steps (fewer than 112 pairs of depth,
// P < 224): they leave too little to hide a row tile's cells behind.
// bfloat16 inference, T = 100, unpipelined / pipelined: H = I = 160, B = 64
// 0.93 (fastest calls); H = 192, B = 64 0.91; H = 128, B = 32-128 level;
// H = 224, B = 64 1.01-1.03, pipelined from there (NOTES change 47).
constexpr int64_t kPipelinedPairs = 112;

// unit_block_step on AMX tiles: 32 (or, last, 16) rows at a time over the
// whole depth (the tiles hold the gates' sums, so nothing is parked between
// chunks). From kPipelinedRows rows and kPipelinedPairs of depth, the cells
// of the previous product run between the tile steps, and this product's
// cells are left pending in turn.
// h16 has whole row tiles (zero or stale rows past `rows`, whose results are
// not used). tile_out: two [2 * kAmxRows][kUnitCols] buffers, used in turn
// (`flip`).
void amx_unit_block_step(const UnitBlockStep& st, int64_t rows, int64_t depth,
                         float* tile_out, int64_t& flip,
                         PendingCells& pending) {
  const auto* panel = reinterpret_cast<const uint32_t*>(st.packed);
  for (int64_t r0 = 0; r0 < rows; r0 += 2 * kAmxRows) {
    const int64_t count = std::min(2 * kAmxRows, rows - r0);
    float* out = tile_out + flip * 2 * kAmxRows * kUnitCols;
    flip ^= 1;
    const uint16_t* a = st.h16 + r0 * st.ld16;
    if (count < kPipelinedRows || depth < kPipelinedPairs) {
      pending.finish();
      if (count > kAmxRows) {
        amx_block_product_x2(a, st.ld16, panel, depth, out);
      } else {
        amx_block_product(a, st.ld16, panel, depth, out);
      }
      cells_from_tiles(st, r0, out, 0, count);
      continue;
    }
    if (count > kAmxRows) {
      amx_block_product_x2(a, st.ld16, panel, depth, out, std::ref(pending));
    } else {
      amx_block_product(a, st.ld16, panel, depth, out, std::ref(pending));
    }
    pending.finish();
    pending.start(st, r0, count, out);
  }
}
#endif  // FUSEDLSTM_BF16_DOT

// `rows` rows of a step whose batch is `step_batch`, from batch row
// st.row0. A row is summed in one order in every tile shape but a lone
// row's, which splits its sums in two chains for speed. Where the workers
// split the units, a step of 6k + 1 rows (3k + 1 on AVX2) leaves its last
// row alone, and only then; so where they split the rows, that row is summed
// alone by whichever worker holds it, and no other row is (a remainder of
// one row after full tiles goes as two tiles of the last kForwardRows + 1,
// a share of one row in one chain). A row's result is then the same
// whichever split ran it, and at any number of threads (NOTES change 49).
void unit_block_step(UnitBlockStep st, int64_t rows, int64_t step_batch) {
  const int64_t depth = product_depth(st.args->state);
  // A chunk of pairs spans as many weight bytes as kChunk / 2 of floats.
  const int64_t chunk = kBf16Dot ? kChunk / 2 : kChunk;
  const bool lone_last = step_batch % kForwardRows == 1 && rows > 0 &&
                         st.row0 + rows == step_batch;
  const int64_t tiled = lone_last ? rows - 1 : rows;
  const int64_t full = tiled % kForwardRows == 1 && tiled > kForwardRows
                           ? tiled / kForwardRows - 1
                           : tiled / kForwardRows;
  for (st.k0 = 0; st.k0 < depth; st.k0 = st.k1) {
    st.k1 = std::min(depth, st.k0 + chunk);
    int64_t r = 0;
    for (int64_t i = 0; i < full; ++i, r += kForwardRows) {
      unit_rows<kForwardRows>(st, r);
    }
    int64_t left = tiled - r;
    if (left > kForwardRows) {  // kForwardRows + 1: in two tiles
      const int64_t first = (left + 1) / 2;
      if (first == 4) unit_rows<4>(st, r); else unit_rows<2>(st, r);
      r += first;
      left -= first;
    }
    switch (left) {
      case 5: unit_rows<5>(st, r); break;
      case 4: unit_rows<4>(st, r); break;
      case 3: unit_rows<3>(st, r); break;
      case 2: unit_rows<2>(st, r); break;
      case 1: unit_rows<1>(st, r, /*two_chains=*/false); break;
      default: break;
    }
    if (lone_last) unit_rows<1>(st, tiled, /*two_chains=*/true);
  }
}

// The most rows (steps x batch) of a call that runs the direct product.
constexpr int64_t kDirectMaxRows = 8;

// The largest packed W_hh (bytes) whose panels every worker reads each step
// when the workers split the rows (ForwardPlan::split_rows): 1 MiB, half of
// the L2 of the Xeon it was measured on (H = P = 256: 512 KiB).
constexpr int64_t kSplitRowsMaxPanelBytes = int64_t{1} << 20;
// The fewest rows per worker of a float32 (FMA tile) row split.
constexpr int64_t kSplitRowsMinRows = 16;

// What every chunk of steps shares: the packed weights, the work split and the
// state buffers. h alternates between two buffers step by step.
struct ForwardPlan {
  const RecurrentForward* args;
  int64_t unit_blocks, proj_blocks, workers, phases;
  bool direct;         // W_hh read as it is, not packed (direct_unit_block_step)
  bool amx;            // bfloat16 dot products on AMX tiles
  bool split_rows;     // workers split the batch's rows (whole row tiles on
                       //   AMX), not the unit blocks: no meeting between
                       //   steps
  int64_t depth;       // rows of a unit block's panel: product_depth(P),
                       //   padded to whole tile steps on AMX
  float* unit_panels;  // [unit_blocks][depth][4L] (a workspace)
  float* proj_panels;  // [proj_blocks][H][2L] (a workspace)
  at::Tensor spare;    // [B, P]: the second h buffer
  at::Tensor hidden;   // [B, H] o * tanh(c_t) with a projection
  float* h_buf[2];
};

ForwardPlan plan_forward(const RecurrentForward& a) {
  const int64_t H = a.hidden, P = a.state, B = a.schedule->batch;
  const bool proj = a.w_hr != nullptr;
  ForwardPlan plan;
  plan.args = &a;
  plan.unit_blocks = ceil_div(H, kLanes);
  plan.proj_blocks = proj ? ceil_div(P, kPanelCols) : 0;
  // Meetings per step: after the cells, and after the projection.
  plan.phases = proj ? 2 : 1;
  plan.workers = choose_workers(
      8 * B * H * P + 2 * B * H * (proj ? P : 0),
      proj ? std::min(plan.unit_blocks, plan.proj_blocks) : plan.unit_blocks);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // Packing W_hh reads and writes it once more than the steps read it, which
  // pays only over enough rows: with caches cold (a 64 MiB pass between
  // calls), the direct product was faster where steps x batch <= 8 (H =
  // 1024, 1 thread: batch 1, T = 1 2.15 against 3.24 ms, T = 8 4.63 against
  // 5.30; batch 8, T = 1 even; batch 16, T = 1 5.90 against 4.55), and level
  // at H = 256 (NOTES change 23).
  plan.direct = !kBf16Dot && a.schedule->steps() * B <= kDirectMaxRows;
#if defined(FUSEDLSTM_BF16_DOT)
  plan.amx = amx_tiles_available();
  plan.depth = plan.amx ? amx_depth(product_depth(P)) : product_depth(P);
#else
  plan.amx = false;
  plan.depth = product_depth(P);
#endif
  // Split by rows where it needs no more workers than the unit split would
  // use and gives each the same number of row tiles: a worker then reads
  // only the rows of h it wrote, and the workers never meet within a chunk
  // of steps. Each reads every unit block's panel per step, so only where
  // W_hh's panels fit in a core's L2 with room to spare (NOTES change 43).
  const int64_t row_tiles = ceil_div(B, kAmxRows);
  const int64_t panel_floats = plan.unit_blocks * plan.depth * kUnitCols;
  const bool panels_fit =
      panel_floats * int64_t{sizeof(float)} <= kSplitRowsMaxPanelBytes;
  if (plan.amx) {
    plan.split_rows = !proj && plan.workers > 1 &&
                      row_tiles % plan.workers == 0 && panels_fit;
  } else {
    // The FMA tiles take any number of rows; below 16 a worker's share
    // would read all of W_hh per step for too few rows (NOTES change 49).
    plan.split_rows = !kBf16Dot && !proj && !plan.direct && plan.workers > 1 &&
                      B % plan.workers == 0 &&
                      B / plan.workers >= kSplitRowsMinRows && panels_fit;
  }
  plan.unit_panels = plan.direct ? nullptr : workspace<float>(
      WorkspaceRole::kRecurrentWeights, panel_floats);
  plan.proj_panels = workspace<float>(WorkspaceRole::kProjectionWeights,
                                      plan.proj_blocks * H * kPanelCols);
  plan.spare = at::empty({B, P}, f32);
  plan.hidden = at::empty({proj ? B : 0, H}, f32);
  plan.h_buf[0] = a.h_state;
  plan.h_buf[1] = plan.spare.data_ptr<float>();
  return plan;
}

// Packed by the worker that reads it (the same chunk of workers goes to the
// same OpenMP thread in every region), so it starts in that core's cache.
void pack_weights(const ForwardPlan& plan) {
  const RecurrentForward& a = *plan.args;
  const int64_t H = a.hidden, P = a.state, workers = plan.workers;
  float* u_panels = plan.unit_panels;
  float* p_panels = plan.proj_panels;
  const int64_t depth = plan.depth;
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share units(plan.unit_blocks, workers, w0, w1);
    const Share cols(plan.proj_blocks, workers, w0, w1);
#if defined(FUSEDLSTM_BF16_DOT)
    std::vector<float> scratch(P * kUnitCols);
    const int64_t pairs = product_depth(P);
    for (int64_t u = units.begin; u < units.end; ++u) {
      float* panel = u_panels + u * depth * kUnitCols;
      pack_unit_block_pairs(a.w_hh16, H, P, u, scratch.data(),
                            reinterpret_cast<uint32_t*>(panel));
      std::memset(panel + pairs * kUnitCols, 0,
                  (depth - pairs) * kUnitCols * sizeof(float));
    }
#else
    if (!plan.direct) {
      for (int64_t u = units.begin; u < units.end; ++u) {
        pack_unit_block(a.w_hh, H, P, u, u_panels + u * depth * kUnitCols);
      }
    }
#endif
    for (int64_t c = cols.begin; c < cols.end; ++c) {
      pack_projection_panel(a.w_hr, P, H, c, p_panels + c * H * kPanelCols);
    }
  });
}

#if defined(FUSEDLSTM_BF16_DOT)
// Steps [s0, s1) for the row tiles of workers [w0, w1) (plan.split_rows): every
// unit block of those rows, step after step, with no meeting, since each
// step reads only rows of h_{t-1} that this worker wrote (or that the call
// began with). Rows past a packed step's batch size carry their h.
void run_row_share(const ForwardPlan& plan, int64_t s0, int64_t s1,
                   int64_t gate_base, int64_t w0, int64_t w1) {
  const RecurrentForward& a = *plan.args;
  const StepSchedule& sched = *a.schedule;
  const int64_t P = a.state, B = sched.batch, depth = plan.depth;
  const Share tiles(ceil_div(B, kAmxRows), plan.workers, w0, w1);
  const int64_t row0 = tiles.begin * kAmxRows;
  const int64_t row_end = std::min(B, tiles.end * kAmxRows);
  const int64_t ld16 = 2 * depth;
  std::vector<uint16_t> h16((tiles.end - tiles.begin) * kAmxRows * ld16);
  std::vector<float> tile_out(4 * kAmxRows * kUnitCols);
  PendingCells pending;
  int64_t flip = 0;
  amx_configure();
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t t = sched.step_at(s, a.reverse);
    const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
    const float* h_prev = plan.h_buf[s & 1];
    float* h_next = plan.h_buf[(s + 1) & 1];
    const int64_t rows = std::clamp<int64_t>(bs - row0, 0, row_end - row0);
    if (rows > 0) {
      round_rows_to_bf16(h_prev + row0 * P, rows, P, h16.data(), ld16);
      for (int64_t u = 0; u < plan.unit_blocks; ++u) {
        const UnitBlockStep step{&a, h_prev, h_next, nullptr,
                                 plan.unit_panels + u * depth * kUnitCols,
                                 h16.data(), ld16, nullptr, u * kLanes, first,
                                 first - gate_base, 0, 0, row0};
        amx_unit_block_step(step, rows, depth, tile_out.data(), flip, pending);
      }
      pending.finish();
    }
    carry_rows(h_prev, h_next, P, std::max(bs, row0), row_end, 0, P);
  }
  amx_release();
}
#endif

#if !defined(FUSEDLSTM_BF16_DOT)
// run_row_share for the float32 tiles: each worker's B / workers rows.
void run_row_share(const ForwardPlan& plan, int64_t s0, int64_t s1,
                   int64_t gate_base, int64_t w0, int64_t w1) {
  const RecurrentForward& a = *plan.args;
  const StepSchedule& sched = *a.schedule;
  const int64_t P = a.state, B = sched.batch, depth = plan.depth;
  const Share share(B, plan.workers, w0, w1);
  const int64_t row0 = share.begin, row_end = share.end;
  std::vector<float> partial((row_end - row0) * kUnitCols);
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t t = sched.step_at(s, a.reverse);
    const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
    const float* h_prev = plan.h_buf[s & 1];
    float* h_next = plan.h_buf[(s + 1) & 1];
    const int64_t rows = std::clamp<int64_t>(bs - row0, 0, row_end - row0);
    if (rows > 0) {
      for (int64_t u = 0; u < plan.unit_blocks; ++u) {
        const UnitBlockStep step{&a, h_prev + row0 * P, h_next, nullptr,
                                 plan.unit_panels + u * depth * kUnitCols,
                                 nullptr, 0, partial.data(), u * kLanes, first,
                                 first - gate_base, 0, 0, row0};
        unit_block_step(step, rows, bs);
      }
    }
    carry_rows(h_prev, h_next, P, std::max(bs, row0), row_end, 0, P);
  }
}
#endif

// Steps [s0, s1) in processing order; the gates and cells of the step at
// output row r are at row r - gate_base of their buffers.
void run_steps(const ForwardPlan& plan, int64_t s0, int64_t s1,
               int64_t gate_base) {
  const RecurrentForward& a = *plan.args;
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, P = a.state, B = sched.batch;
  const int64_t workers = plan.workers, phases = plan.phases;
  const bool proj = a.w_hr != nullptr;
  const float* u_panels = plan.unit_panels;
  const float* p_panels = plan.proj_panels;
  float* hidden = proj ? plan.hidden.data_ptr<float>() : nullptr;
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    if (plan.split_rows) {
      run_row_share(plan, s0, s1, gate_base, w0, w1);
      return;
    }
    const Share units(plan.unit_blocks, workers, w0, w1);
    const Share cols(plan.proj_blocks, workers, w0, w1);
    std::vector<float> partial(B * std::max(kUnitCols, kPanelCols));
    const int64_t depth = plan.depth, ld16 = 2 * depth;
    // bfloat16 dot: this worker's bfloat16 copy of the step's h_{t-1}, in
    // whole row tiles on AMX (zeros past P and, until a step writes them,
    // past B).
    const int64_t h16_rows = plan.amx ? ceil_div(B, kAmxRows) * kAmxRows : B;
    std::vector<uint16_t> h16(kBf16Dot ? h16_rows * ld16 : 0);
    std::vector<float> tile_out(plan.amx ? 4 * kAmxRows * kUnitCols : 0);
#if defined(FUSEDLSTM_BF16_DOT)
    PendingCells pending;
    int64_t flip = 0;
    if (plan.amx) amx_configure();
#endif
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t t = sched.step_at(s, a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* h_prev = plan.h_buf[s & 1];
      float* h_next = plan.h_buf[(s + 1) & 1];
      if (s > s0) meeting.wait_for((s - s0) * phases * workers);
#if defined(FUSEDLSTM_BF16_DOT)
      round_rows_to_bf16(h_prev, bs, P, h16.data(), ld16);
#endif
      for (int64_t u = units.begin; u < units.end; ++u) {
        const UnitBlockStep step{
            &a, h_prev, h_next, hidden,
            plan.direct ? nullptr : u_panels + u * depth * kUnitCols,
            h16.data(), ld16, partial.data(), u * kLanes, first,
            first - gate_base, 0, 0};
#if defined(FUSEDLSTM_BF16_DOT)
        if (plan.amx) {
          amx_unit_block_step(step, bs, depth, tile_out.data(), flip, pending);
        } else {
          unit_block_step(step, bs, bs);
        }
#else
        if (plan.direct) {
          direct_unit_block_step(step, bs);
        } else {
          unit_block_step(step, bs, bs);
        }
#endif
        if (!proj) {
          carry_rows(h_prev, h_next, P, bs, B, u * kLanes,
                     std::min(kLanes, H - u * kLanes));
        }
      }
#if defined(FUSEDLSTM_BF16_DOT)
      pending.finish();  // the last product's cells, before the meeting
#endif
      if (proj) {
        meeting.arrive(w1 - w0);
        meeting.wait_for(((s - s0) * phases + 1) * workers);
        for (int64_t c = cols.begin; c < cols.end; ++c) {
          const int64_t col = c * kPanelCols;
          const int64_t n = std::min(kPanelCols, P - col);
          panel_product({hidden, H, p_panels + c * H * kPanelCols, H,
                         partial.data(), h_next + col, P,
                         a.output + first * P + col, P, n, 0, 0},
                        bs);
          carry_rows(h_prev, h_next, P, bs, B, col, n);
        }
      }
      meeting.arrive(w1 - w0);
    }
#if defined(FUSEDLSTM_BF16_DOT)
    if (plan.amx) amx_release();
#endif
  });
}

}  // namespace

void recurrent_forward(const RecurrentForward& a) {
  const StepSchedule& sched = *a.schedule;
  const int64_t steps = sched.steps(), B = sched.batch;
  if (steps == 0 || B == 0) return;
  const ForwardPlan plan = plan_forward(a);
  pack_weights(plan);
  if (a.project == nullptr) {
    run_steps(plan, 0, steps, 0);
  } else {
    // Chunks of steps, each projected just before it runs: the rows of steps
    // [s0, s1) are contiguous in either direction.
    const int64_t chunk = std::max<int64_t>(1, a.chunk_steps);
    for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
      const int64_t s1 = std::min(steps, s0 + chunk);
      const int64_t t_lo = std::min(sched.step_at(s0, a.reverse),
                                    sched.step_at(s1 - 1, a.reverse));
      const int64_t t_hi = std::max(sched.step_at(s0, a.reverse),
                                    sched.step_at(s1 - 1, a.reverse));
      const int64_t row0 = sched.offsets[t_lo];
      const int64_t rows = sched.offsets[t_hi] + sched.batch_sizes[t_hi] - row0;
      (*a.project)(row0, rows);
      run_steps(plan, s0, s1, row0);
    }
  }
  if (steps & 1) {
    std::memcpy(a.h_state, plan.h_buf[1], B * a.state * sizeof(float));
  }
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
