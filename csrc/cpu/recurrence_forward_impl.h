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

#include "cpu/forward_unit_block.h"
#if defined(FUSEDLSTM_BF16_DOT)
#include "cpu/amx_step_product.h"
#endif
#include "cpu/recurrence.h"
#include "cpu/recurrence_blocks.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {
namespace {

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
  bool direct_prefetch;  // direct: each step asks for the next weight rows
                         //   ahead (kDirectPrefetchMinBytes)
  bool pack_in_step;   // one step: each worker packs a unit block's panel
                       //   into its own slot of unit_panels just before the
                       //   block's product, instead of all of W_hh up front
  bool amx;            // bfloat16 dot products on AMX tiles
  bool amx_direct;     // direct, one step, on AMX tiles from the weights as
                       //   they lie (amx_step_product.h)
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
      8 * B * H * (P + a.input) + 2 * B * H * (proj ? P : 0),
      proj ? std::min(plan.unit_blocks, plan.proj_blocks) : plan.unit_blocks);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  // Packing W_hh reads and writes it once more than the steps read it, which
  // pays only over enough rows: with caches cold (a 64 MiB pass between
  // calls), the direct product was faster where steps x batch <= 8 (H =
  // 1024, 1 thread: batch 1, T = 1 2.15 against 3.24 ms, T = 8 4.63 against
  // 5.30; batch 8, T = 1 even; batch 16, T = 1 5.90 against 4.55), and level
  // at H = 256 (NOTES change 23).
  // bfloat16 dot products run direct only with the input product: their
  // packed panels are pairs, and the W_hh-only rule was measured in float.
  const bool takes_input = kBf16Dot ? a.x16 != nullptr : a.x != nullptr;
  plan.direct = takes_input ||
                (!kBf16Dot && a.schedule->steps() * B <= kDirectMaxRows);
  // The weights a direct step reads: W_ih where it takes the input product,
  // and W_hh.
  const int64_t direct_weight_bytes =
      4 * H * ((takes_input ? a.input : 0) + P) * int64_t{sizeof(DirectValue)};
  plan.direct_prefetch = plan.direct && direct_weight_bytes > kDirectPrefetchMinBytes;
  TORCH_CHECK((a.x == nullptr && a.x16 == nullptr) ||
                  (takes_input && a.project == nullptr &&
                   input_in_steps(a.schedule->steps(), B, 4 * H * a.input)),
              "fusedlstm: the input product runs in the recurrence only for "
              "calls of few rows (input_in_steps), with x in the build's type");
  // A call of one step (an LSTMCell, a decoder's step) of more rows than
  // take the input product into the step reads each panel once:
  // packing all of W_hh first writes it out (to memory, past L3's share at
  // H = 1024) and reads it back for nothing. Packed block by block into a
  // slot that stays in L2, W_hh is read once. The panel is the same, and so
  // are the sums.
  plan.pack_in_step = !kBf16Dot && !plan.direct && a.schedule->steps() == 1;
#if defined(FUSEDLSTM_BF16_DOT)
  plan.amx = !plan.direct && amx_tiles_available();
  plan.amx_direct = plan.direct && takes_input && a.schedule->steps() == 1 &&
                    B >= kAmxDirectMinRows && H >= kLanes && amx_tiles_available();
  plan.depth = plan.amx ? amx_depth(product_depth(P)) : product_depth(P);
#else
  plan.amx = false;
  plan.amx_direct = false;
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
    // The register tiles (float32 FMA, or bfloat16 pairs where there is no
    // AMX) take any number of rows; below 16 a worker's share would read all
    // of W_hh per step for too few rows (NOTES changes 49 and 50).
    plan.split_rows = !proj && !plan.direct && !plan.pack_in_step &&
                      plan.workers > 1 &&
                      B % plan.workers == 0 &&
                      B / plan.workers >= kSplitRowsMinRows && panels_fit;
  }
  plan.unit_panels = plan.direct ? nullptr : workspace<float>(
      WorkspaceRole::kRecurrentWeights,
      plan.pack_in_step ? plan.workers * plan.depth * kUnitCols : panel_floats);
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
    if (!plan.direct) {
      std::vector<float> scratch(P * kUnitCols);
      const int64_t pairs = product_depth(P);
      for (int64_t u = units.begin; u < units.end; ++u) {
        float* panel = u_panels + u * depth * kUnitCols;
        pack_unit_block_pairs(a.w_hh16, H, P, u, scratch.data(),
                              reinterpret_cast<uint32_t*>(panel));
        std::memset(panel + pairs * kUnitCols, 0,
                    (depth - pairs) * kUnitCols * sizeof(float));
      }
    }
#else
    if (!plan.direct && !plan.pack_in_step) {
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

// Steps [s0, s1) of a worker that holds batch rows [row0, row_end)
// (plan.split_rows): run(h_prev, h_next, rows, batch, first) for its rows
// of each step that has any, with no meeting, since a step reads only rows
// of h_{t-1} that this worker wrote (or that the call began with); its rows
// past a packed step's batch size carry their h.
template <typename RunRows>
void row_share_steps(const ForwardPlan& plan, int64_t s0, int64_t s1,
                     int64_t row0, int64_t row_end, RunRows&& run) {
  const RecurrentForward& a = *plan.args;
  const StepSchedule& sched = *a.schedule;
  const int64_t P = a.state;
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t t = sched.step_at(s, a.reverse);
    const int64_t bs = sched.batch_sizes[t];
    const float* h_prev = plan.h_buf[s & 1];
    float* h_next = plan.h_buf[(s + 1) & 1];
    const int64_t rows = std::clamp<int64_t>(bs - row0, 0, row_end - row0);
    if (rows > 0) run(h_prev, h_next, rows, bs, sched.offsets[t]);
    carry_rows(h_prev, h_next, P, std::max(bs, row0), row_end, 0, P);
  }
}

#if defined(FUSEDLSTM_BF16_DOT)
// The row share of workers [w0, w1) on AMX: whole 16-row tiles each.
void run_amx_row_share(const ForwardPlan& plan, int64_t s0, int64_t s1,
                       int64_t gate_base, int64_t w0, int64_t w1) {
  const RecurrentForward& a = *plan.args;
  const int64_t P = a.state, B = a.schedule->batch, depth = plan.depth;
  const Share tiles(ceil_div(B, kAmxRows), plan.workers, w0, w1);
  const int64_t row0 = tiles.begin * kAmxRows;
  const int64_t row_end = std::min(B, tiles.end * kAmxRows);
  const int64_t ld16 = 2 * depth;
  std::vector<uint16_t> h16((tiles.end - tiles.begin) * kAmxRows * ld16);
  std::vector<float> tile_out(4 * kAmxRows * kUnitCols);
  PendingCells pending;
  int64_t flip = 0;
  amx_configure();
  row_share_steps(plan, s0, s1, row0, row_end,
                  [&](const float* h_prev, float* h_next, int64_t rows,
                      int64_t, int64_t first) {
    round_rows_to_bf16(h_prev + row0 * P, rows, P, h16.data(), ld16);
    for (int64_t u = 0; u < plan.unit_blocks; ++u) {
      const UnitBlockStep step{&a, h_prev, h_next, nullptr,
                               plan.unit_panels + u * depth * kUnitCols,
                               h16.data(), ld16, nullptr, u * kLanes, first,
                               first - gate_base, 0, 0, row0};
      amx_unit_block_step(step, rows, depth, tile_out.data(), flip, pending);
    }
    pending.finish();
  });
  amx_release();
}
#endif

// The row share of workers [w0, w1) on the register tiles: B / workers rows
// each. With bfloat16 pairs, each worker rounds only its own rows of h.
void run_tile_row_share(const ForwardPlan& plan, int64_t s0, int64_t s1,
                        int64_t gate_base, int64_t w0, int64_t w1) {
  const RecurrentForward& a = *plan.args;
  const int64_t P = a.state, depth = plan.depth, ld16 = 2 * depth;
  const Share share(a.schedule->batch, plan.workers, w0, w1);
  const int64_t row0 = share.begin;
  std::vector<float> partial((share.end - row0) * kUnitCols);
  std::vector<uint16_t> h16(kBf16Dot ? (share.end - row0) * ld16 : 0);
  row_share_steps(plan, s0, s1, row0, share.end,
                  [&](const float* h_prev, float* h_next, int64_t rows,
                      int64_t batch, int64_t first) {
#if defined(FUSEDLSTM_BF16_DOT)
    round_rows_to_bf16(h_prev + row0 * P, rows, P, h16.data(), ld16);
#endif
    for (int64_t u = 0; u < plan.unit_blocks; ++u) {
      const UnitBlockStep step{&a, h_prev + row0 * P, h_next, nullptr,
                               plan.unit_panels + u * depth * kUnitCols,
                               h16.data(), ld16, partial.data(), u * kLanes,
                               first, first - gate_base, 0, 0, row0};
      unit_block_step(step, rows, batch);
    }
  });
}

// Steps [s0, s1) in processing order; the gates and cells of the step at
// output row r are at row r - gate_base of their buffers.
void run_steps(const ForwardPlan& plan, int64_t s0, int64_t s1,
               int64_t gate_base) {
  const RecurrentForward& a = *plan.args;
  const StepSchedule& sched = *a.schedule;
  const int64_t H = a.hidden, P = a.state, B = sched.batch;
  const int64_t workers = plan.workers, phases = plan.phases;
  const bool proj = a.w_hr != nullptr;
  float* u_panels = plan.unit_panels;
  const float* p_panels = plan.proj_panels;
  float* hidden = proj ? plan.hidden.data_ptr<float>() : nullptr;
  PhaseCounter meeting;

  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    if (plan.split_rows) {
#if defined(FUSEDLSTM_BF16_DOT)
      if (plan.amx) {
        run_amx_row_share(plan, s0, s1, gate_base, w0, w1);
        return;
      }
#endif
      run_tile_row_share(plan, s0, s1, gate_base, w0, w1);
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
    AmxStepOperands amx_step;
    if (plan.amx || plan.amx_direct) amx_configure();
#endif
    for (int64_t s = s0; s < s1; ++s) {
      const int64_t t = sched.step_at(s, a.reverse);
      const int64_t bs = sched.batch_sizes[t], first = sched.offsets[t];
      const float* h_prev = plan.h_buf[s & 1];
      float* h_next = plan.h_buf[(s + 1) & 1];
      if (s > s0) meeting.wait_for((s - s0) * phases * workers);
#if defined(FUSEDLSTM_BF16_DOT)
      round_rows_to_bf16(h_prev, bs, P, h16.data(), ld16);
      if (plan.amx_direct) {
        amx_step.pack(a.x16 + first * a.input, a.input, h16.data(), ld16, P, bs);
      }
#endif
      for (int64_t u = units.begin; u < units.end; ++u) {
        float* panel = nullptr;
#if !defined(FUSEDLSTM_BF16_DOT)
        if (plan.pack_in_step) {
          panel = u_panels + w0 * depth * kUnitCols;
          pack_unit_block(a.w_hh, H, P, u, panel);
        } else if (!plan.direct) {
          panel = u_panels + u * depth * kUnitCols;
        }
#else
        if (!plan.direct) panel = u_panels + u * depth * kUnitCols;
#endif
        const UnitBlockStep step{
            &a, h_prev, h_next, hidden, panel,
            h16.data(), ld16, partial.data(), u * kLanes, first,
            first - gate_base, 0, 0};
#if defined(FUSEDLSTM_BF16_DOT)
        if (plan.amx_direct) {
          amx_direct_unit_block_step(step, bs, amx_step);
        } else if (plan.direct) {
          direct_unit_block_step(step, bs, plan.direct_prefetch);
        } else if (plan.amx) {
          amx_unit_block_step(step, bs, depth, tile_out.data(), flip, pending);
        } else {
          unit_block_step(step, bs, bs);
        }
#else
        if (plan.direct) {
          direct_unit_block_step(step, bs, plan.direct_prefetch);
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
    if (plan.amx || plan.amx_direct) amx_release();
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
