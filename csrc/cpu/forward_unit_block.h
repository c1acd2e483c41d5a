// The forward recurrence's step of one unit block (recurrence_forward_impl.h,
// which includes this for the ISA of its including file): the recurrent
// product of 4 gates x L units for a step's rows and the cell on it, in
// register tiles (float32 FMA, or bfloat16 pairs), read directly for calls of
// few rows, or on AMX tiles with the cells pipelined beside the products.
// The workers, the packing and the plan stay in recurrence_forward_impl.h.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <functional>

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

// `tile`: the row tile's place in the step, which says what part of the
// next chunk of weights it prefetches (prefetch_ahead); kNoPrefetch: none.
constexpr int64_t kNoPrefetch = -1;

template <int R>
void unit_rows(const UnitBlockStep& st, int64_t r0, int64_t tile,
               bool two_chains = true) {
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
      prefetch_ahead(tile, st.packed, st.k0, st.k1, kUnitCols);
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

// The direct product, for calls of few rows (plan_forward says when): read
// from the weights as they lie, with no packing. A register tile holds
// kLanes sums, kLanes / U batch rows x U weight rows, with lanes along k
// (along pairs of k in bfloat16 dot products), each lane-summed once at the
// end: a weight load feeds kLanes / U FMAs and an activation load U.
// A row's sums are the same bits whatever U: each accumulator is one (row,
// unit) summed over k in one order.

// What a direct tile multiplies, per build: float lanes and FMAs, or
// bfloat16 pairs (exact products, float sums, pair by pair as the packed
// tiles sum them) and vdpbf16ps. kDirectStep values of k per register; the
// rest loads n < kDirectStep values and zeros after them, reading none past
// n (so no Inf or NaN of the next row enters as Inf * 0).
#if defined(FUSEDLSTM_BF16_DOT)
using DirectValue = uint16_t;
using DirectOperand = __m512bh;
constexpr int64_t kDirectStep = 2 * kLanes;
inline DirectOperand direct_load(const uint16_t* p) {
  return (__m512bh)_mm512_loadu_si512(p);
}
inline DirectOperand direct_load(const uint16_t* p, int64_t n) {
  asan_check_lanes(p, n * sizeof(uint16_t), false);
  return (__m512bh)_mm512_maskz_loadu_epi16(
      static_cast<__mmask32>((uint32_t{1} << n) - 1u), p);
}
inline Reg direct_fma(DirectOperand w, DirectOperand x, Reg acc) {
  return _mm512_dpbf16_ps(acc, w, x);
}
#else
using DirectValue = float;
using DirectOperand = Reg;
constexpr int64_t kDirectStep = kLanes;
inline DirectOperand direct_load(const float* p) { return reg_load(p); }
inline DirectOperand direct_load(const float* p, int64_t n) { return load(p, n); }
inline Reg direct_fma(DirectOperand w, DirectOperand x, Reg acc) {
  return reg_fma(w, x, acc);
}
#endif  // FUSEDLSTM_BF16_DOT

// acc[r * U + u] += v_r . w_u, over k < K, for R rows of v (ldv apart; R <=
// kLanes / U) and U rows of weights; with ahead_bytes != 0, asks for the
// same k ahead_bytes past each row into L2 as it goes (an address, not a
// pointer into the weights: it may lie past their end, and prefetches do
// not fault). Always inlined, with its lambdas: out of line, acc would live
// in memory through the product.
template <int U, int R>
[[gnu::always_inline]] inline void direct_tile(
    const DirectValue* const (&w)[U], const DirectValue* v, int64_t ldv,
    int64_t K, Reg (&acc)[kLanes], int64_t ahead_bytes) {
  // One register of k from k0: every one whole but a last rest of `rest`.
  const auto at_k = [&](int64_t k0, int64_t rest) __attribute__((always_inline)) {
    const auto operand = [&](const DirectValue* p) __attribute__((always_inline)) {
      return rest == kDirectStep ? direct_load(p) : direct_load(p, rest);
    };
    DirectOperand xs[R];
    for (int r = 0; r < R; ++r) xs[r] = operand(v + r * ldv + k0);
    for (int u = 0; u < U; ++u) {
      const DirectOperand wu = operand(w[u] + k0);
      for (int r = 0; r < R; ++r) acc[r * U + u] = direct_fma(wu, xs[r], acc[r * U + u]);
    }
  };
  int64_t k = 0;
  if (ahead_bytes != 0) {
    for (; k + kDirectStep <= K; k += kDirectStep) {
      for (int u = 0; u < U; ++u) {
        _mm_prefetch(reinterpret_cast<const char*>(
                         reinterpret_cast<uintptr_t>(w[u] + k) + ahead_bytes),
                     _MM_HINT_T1);
      }
      at_k(k, kDirectStep);
    }
  }
  for (; k + kDirectStep <= K; k += kDirectStep) at_k(k, kDirectStep);
  if (k < K) at_k(k, K - k);
}

// The most rows of a direct step.
constexpr int64_t kDirectStepMaxRows = std::max(kDirectMaxRows, kOneStepInputMaxBatch);

// Where a group of units' sums go, and which weight rows come next.
struct DirectGroup {
  int64_t q, u0, m;   // gate, first unit in the block, units kept (<= U)
  int64_t row;        // the group's first weight row
  int64_t next_row;   // the next group's, or -1
};

// The preactivation sums of rows [b0, b0 + R) for the group's units: the
// input product where the call takes it (RecurrentForward::x), then the
// recurrent one, in the same registers, into pre[b][q][u0 + u]. With
// `prefetch`, asks for the next group's weight rows as it goes. Always
// inlined like direct_tile: left out of line, the 8 x 2 tile kept its sums
// in memory (NOTES change 80).
template <int U, int R>
[[gnu::always_inline]] inline void direct_sums(const UnitBlockStep& st,
                                               const DirectGroup& g, int64_t b0,
                                               bool prefetch,
                                               float (*pre)[4][kLanes]) {
  const RecurrentForward& a = *st.args;
  const int64_t P = a.state, I = a.input;
#if defined(FUSEDLSTM_BF16_DOT)
  // bfloat16 values: x and the weights as the layer holds them, and h_{t-1}
  // rounded (st.h16).
  const DirectValue *x = a.x16, *w_ih = a.w_ih16, *w_hh = a.w_hh16;
  const DirectValue* h = st.h16 + b0 * st.ld16;
  const int64_t ldh = st.ld16;
#else
  const DirectValue *x = a.x, *w_ih = a.w_ih, *w_hh = a.w_hh;
  const DirectValue* h = st.h_prev + b0 * P;
  const int64_t ldh = P;
#endif
  Reg acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = reg_zero();
  // A group of fewer than U units reads its last row again for the rest,
  // whose sums are not kept. The next group's rows lie the same distance
  // from each of this group's.
  const DirectValue* w[U];
  const auto rows_of = [&](const DirectValue* weights, int64_t K) {
    for (int u = 0; u < U; ++u) w[u] = weights + (g.row + std::min<int64_t>(u, g.m - 1)) * K;
    return prefetch ? (g.next_row - g.row) * K * int64_t{sizeof(DirectValue)} : 0;
  };
  if (x != nullptr) {
    const int64_t ahead = rows_of(w_ih, I);
    direct_tile<U, R>(w, x + (st.first_row + b0) * I, I, I, acc, ahead);
  }
  const int64_t ahead = rows_of(w_hh, P);
  direct_tile<U, R>(w, h, ldh, P, acc, ahead);
  alignas(64) float sums[kLanes];
  reg_store(sums, reg_lane_sums(acc));
  for (int r = 0; r < R; ++r) {
    for (int64_t u = 0; u < g.m; ++u) pre[b0 + r][g.q][g.u0 + u] = sums[r * U + u];
  }
}

// The sums of every row for the unit block's 4 gates x n units, group of U
// units by group, each group's row tiles in turn; the first row tile asks
// for the next group's weights where `prefetch`: a decoder's step finds
// W_ih and W_hh in memory, not in L3, where its other work came between two
// steps, and the hardware prefetcher kept too few of a group's row streams
// in flight.
template <int U>
void direct_block_sums(const UnitBlockStep& st, int64_t rows, int64_t n,
                       bool prefetch, float (*pre)[4][kLanes]) {
  constexpr int kRows = static_cast<int>(kLanes) / U;
  const int64_t H = st.args->hidden;
  for (int64_t q = 0; q < 4; ++q) {
    for (int64_t u0 = 0; u0 < n; u0 += U) {
      DirectGroup g{q, u0, std::min<int64_t>(U, n - u0), q * H + st.unit + u0, -1};
      g.next_row = u0 + U < n ? g.row + U : q < 3 ? (q + 1) * H + st.unit : -1;
      // Only the first row tile asks.
      const bool ask = prefetch && g.next_row >= 0;
      int64_t b0 = 0;
      for (; b0 + kRows <= rows; b0 += kRows) {
        direct_sums<U, kRows>(st, g, b0, ask && b0 == 0, pre);
      }
      switch (rows - b0) {
        case 3: if constexpr (kRows > 3) direct_sums<U, 3>(st, g, b0, ask && b0 == 0, pre); break;
        case 2: if constexpr (kRows > 2) direct_sums<U, 2>(st, g, b0, ask && b0 == 0, pre); break;
        case 1: direct_sums<U, 1>(st, g, b0, ask && b0 == 0, pre); break;
        default: break;
      }
    }
  }
}

// The most rows for tiles of 8 units: at 1-2 rows a tile of 4 units keeps
// only 4-8 chains of FMAs, where 8 units keep 8-16 and load each row once
// for 8 weight rows. Past 2 rows, 4 units of 4 (or 2) rows (NOTES change 80).
constexpr int64_t kDirectWideMaxRows = 2;
// The least weight bytes of a direct step (W_ih where it takes the input
// product, and W_hh) that it prefetches (plan_forward decides): more than a
// core's L2 (2 MiB on the Zen 4 and Sapphire Rapids cores), which weights
// that small stay in between steps, and where a prefetch would only take a
// load slot. With the weights in memory, 1-4 rows at H = 512-1024 took
// 25-50 % less time; with them in L3 (a step repeated with nothing
// between), level at H = 512 (NOTES change 80).
constexpr int64_t kDirectPrefetchMinBytes = int64_t{2} << 20;

// unit_block_step with the direct product: the sums of every row, then the
// cells. A row's sums do not depend on the other rows of its batch. With
// `prefetch`, each group of weight rows asks for the next.
void direct_unit_block_step(const UnitBlockStep& st, int64_t rows, bool prefetch) {
  const int64_t H = st.args->hidden;
  const int64_t n = std::min(kLanes, H - st.unit);
  TORCH_CHECK(rows <= kDirectStepMaxRows, "fusedlstm: direct step of ", rows, " rows");
  alignas(64) float pre[kDirectStepMaxRows][4][kLanes];
  if (n < kLanes) std::memset(pre, 0, sizeof pre);  // lanes past n: computed, not stored
  if (rows <= kDirectWideMaxRows) {
    direct_block_sums<8>(st, rows, n, prefetch, pre);
  } else {
    direct_block_sums<4>(st, rows, n, prefetch, pre);
  }
  for (int64_t b = 0; b < rows; ++b) {
    Reg acc[4];
    for (int q = 0; q < 4; ++q) acc[q] = reg_load(pre[b][q]);
    cell_from_tile(acc, H, n, cell_row(st, b));
  }
}

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
// st.row0, in as few row tiles as hold them, of sizes that differ by at most
// one (8 rows as 4 + 4, not 6 + 2): a tile of few rows spends a weight load
// on few products, and running it after a full tile over the same chunk of
// weights took it to L2's bandwidth (batch 8, H = 512: 6 + 2 rows 4-6 %
// slower, float32 and bfloat16; NOTES change 51). A row is summed in one
// order in every tile shape but a lone row's, which splits its sums in two
// chains for speed. Where the workers split the units, a step of 6k + 1 rows
// (3k + 1 on AVX2) leaves its last row alone, and only then; so where they
// split the rows, that row is summed alone by whichever worker holds it, and
// no other row is (a worker's share of one row is one tile of one chain). A
// row's result is then the same whichever split ran it, and at any number of
// threads (NOTES change 49).
void unit_block_step(UnitBlockStep st, int64_t rows, int64_t step_batch) {
  const int64_t depth = product_depth(st.args->state);
  // kChunk pairs of bfloat16 span the bytes of kChunk floats (64 KiB of a
  // unit block's panel). Half that, so that the chunk stayed in the 32 KiB
  // L1, parked and reloaded every tile's sums once more per step and was
  // 2-4 % slower at H >= 512 on Zen 4 (NOTES change 62).
  const int64_t chunk = kChunk;
  const bool lone_last = step_batch % kForwardRows == 1 && rows > 0 &&
                         st.row0 + rows == step_batch;
  const int64_t tiled = lone_last ? rows - 1 : rows;
  const int64_t tiles = (tiled + kForwardRows - 1) / kForwardRows;
  // Rows that fit one tile read each block's panel once per step, in order:
  // the hardware prefetcher follows that stream, and asking for a quarter
  // of the next chunk's lines, one per step of the product, only took load
  // slots from a loop bound by its loads (batch 1-2: 9-12 % faster without,
  // bfloat16; 4-7 % float32; from two tiles on the prefetch pays: NOTES
  // change 52).
  const bool one_tile = tiles + (lone_last ? 1 : 0) == 1;
  for (st.k0 = 0; st.k0 < depth; st.k0 = st.k1) {
    st.k1 = std::min(depth, st.k0 + chunk);
    int64_t r = 0;
    for (int64_t i = 0; i < tiles; ++i) {
      const int64_t size = tiled / tiles + (i < tiled % tiles ? 1 : 0);
      const int64_t tile = one_tile ? kNoPrefetch : i;
      // Sizes above kForwardRows never occur; the clamps only keep the
      // AVX2 build's templates within its register file.
      switch (size) {
        case 6: unit_rows<std::min<int64_t>(6, kForwardRows)>(st, r, tile); break;
        case 5: unit_rows<std::min<int64_t>(5, kForwardRows)>(st, r, tile); break;
        case 4: unit_rows<std::min<int64_t>(4, kForwardRows)>(st, r, tile); break;
        case 3: unit_rows<3>(st, r, tile); break;
        case 2: unit_rows<2>(st, r, tile); break;
        case 1: unit_rows<1>(st, r, tile, /*two_chains=*/false); break;
        default: break;
      }
      r += size;
    }
    if (lone_last) {
      unit_rows<1>(st, tiled, one_tile ? kNoPrefetch : tiles, /*two_chains=*/true);
    }
  }
}

}  // namespace
}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
