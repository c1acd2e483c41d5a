// Broadcast-FMA register tiles over operands as they lie in memory, for
// products with few rows on one side: lanes along the output's contiguous
// columns, a tile of kTileRows output rows x kTileRegs registers, each
// output element summed by one worker in a fixed order (so the bits do not
// depend on the thread count). Written once for the ISA of the including
// file, with float operands or (the bfloat16 dot-product build) bfloat16
// ones widened as they are loaded. Used by the backward's products of few
// rows (few_rows_products_impl.h) and by the backward recurrence's
// dh_{t-1} = dG_t W_hh where a call has few rows (recurrence_backward_impl.h).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/recurrence.h"
#include "cpu/recurrence_blocks.h"
#include "cpu/recurrence_tiles.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {
namespace {

constexpr int kTileRows = 4;
constexpr int kTileRegs = 4;
constexpr int64_t kTileCols = kTileRegs * kLanes;

// The operands are float, or (the bfloat16 dot-product build) bfloat16 bits
// widened to float as they are loaded: a bfloat16 value is the top half of
// its float, so the products and sums are the float ones of the same values.
inline Reg operand_reg(const float* p) { return reg_load(p); }
inline Reg operand_broadcast(const float* p) { return reg_broadcast(p); }
inline V operand_load(const float* p, int64_t n) { return load(p, n); }
inline void result_store(float* p, Reg v) { reg_store(p, v); }
#if defined(FUSEDLSTM_BF16_DOT)
inline Reg widen_bf16(__m256i bits) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
inline Reg operand_reg(const uint16_t* p) {
  return widen_bf16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Reg operand_broadcast(const uint16_t* p) {
  return _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<int>(uint32_t{*p} << 16)));
}
inline V operand_load(const uint16_t* p, int64_t n) {
  asan_check_lanes(p, n * sizeof(uint16_t), false);
  return V(widen_bf16(_mm256_maskz_loadu_epi16(static_cast<__mmask16>((1u << n) - 1u), p)));
}
// Rounded to nearest even, as at::mm's bfloat16 result is.
inline void result_store(uint16_t* p, Reg v) { store_as(V(v), p, kLanes); }
#endif

// out[r][c0 + c] = sum over s < S of coef(r, s) * rows[s][c0 + c], for r < R
// and the columns of NV registers from c0, the last of `last` lanes:
// coef(r, s) = coef[r * coef_r + s * coef_s]; added to out's values with
// `accumulate`. R and NV are template constants so that the accumulators
// stay in registers.
// The most rows S of a tile: kProductChunk, or the 64 rows of a few-rows call.
constexpr int64_t kTailRows = 128;

// Coef and Row are the operands' element types (float, or bfloat16 bits in
// the bfloat16 dot-product build), Out the result's: a bfloat16 result is
// rounded once, from the whole sum, so it takes no `accumulate`.
template <int R, int NV, typename Coef, typename Row, typename Out>
inline void broadcast_tile(const Coef* coef, int64_t coef_r, int64_t coef_s,
                           const Row* rows, int64_t ld_rows, int64_t S,
                           int64_t c0, int64_t last, Out* out, int64_t ld_out,
                           bool accumulate) {
  constexpr bool kFloatOut = std::is_same_v<Out, float>;
  const bool full = last == kLanes;
  // A partial last register: its columns of every row copied first, zero
  // past `last` (S <= kProductChunk rows, or the few rows of b).
  alignas(64) float tail[kTailRows * kLanes];
  if (!full) {
    for (int64_t s = 0; s < S; ++s) {
      store(operand_load(rows + s * ld_rows + c0 + (NV - 1) * kLanes, last), tail + s * kLanes,
            kLanes);
    }
  }
  Reg acc[R][NV];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = reg_zero();
    if constexpr (kFloatOut) {
      if (accumulate) {
        const float* o = out + r * ld_out + c0;
        for (int v = 0; v + 1 < NV; ++v) acc[r][v] = reg_load(o + v * kLanes);
        acc[r][NV - 1] = full ? reg_load(o + (NV - 1) * kLanes)
                              : Reg(load(o + (NV - 1) * kLanes, last));
      }
    }
  }
  // The last register's columns are loaded masked only where it is partial:
  // a partial load inside the loop kept the accumulators in memory.
  const Row* last_rows = rows + c0 + (NV - 1) * kLanes;
  for (int64_t s = 0; s < S; ++s) {
    const Row* row = rows + s * ld_rows + c0;
    Reg w[NV];
#pragma GCC unroll 4
    for (int v = 0; v + 1 < NV; ++v) w[v] = operand_reg(row + v * kLanes);
    w[NV - 1] = full ? operand_reg(last_rows + s * ld_rows) : reg_load(tail + s * kLanes);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const Reg a = operand_broadcast(coef + r * coef_r + s * coef_s);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = reg_fma(a, w[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; ++r) {
    Out* o = out + r * ld_out + c0;
    for (int v = 0; v + 1 < NV; ++v) result_store(o + v * kLanes, acc[r][v]);
    store_as(V(acc[r][NV - 1]), o + (NV - 1) * kLanes, last);
  }
}

template <int R, typename Coef, typename Row, typename Out>
inline void broadcast_tile_cols(const Coef* coef, int64_t coef_r, int64_t coef_s,
                                const Row* rows, int64_t ld_rows, int64_t S,
                                int64_t c0, int64_t cols, Out* out, int64_t ld_out,
                                bool accumulate) {
  const int64_t regs = ceil_div(cols, kLanes);
  const int64_t last = cols - (regs - 1) * kLanes;
  static_assert(kTileRegs == 4, "up to 4 registers a tile");
  switch (regs) {
#define FUSEDLSTM_TILE(NV)                                                        \
  broadcast_tile<R, NV, Coef, Row, Out>(coef, coef_r, coef_s, rows, ld_rows, S, c0, last, out, \
                        ld_out, accumulate)
    case 4: FUSEDLSTM_TILE(4); break;
    case 3: FUSEDLSTM_TILE(3); break;
    case 2: FUSEDLSTM_TILE(2); break;
    default: FUSEDLSTM_TILE(1); break;
#undef FUSEDLSTM_TILE
  }
}

// Output rows [r0, r1) of columns [c0, c0 + cols) in row tiles.
template <typename Coef, typename Row, typename Out>
inline void broadcast_rows(const Coef* coef, int64_t coef_r, int64_t coef_s,
                           const Row* rows, int64_t ld_rows, int64_t S,
                           int64_t c0, int64_t cols, Out* out, int64_t ld_out,
                           int64_t r0, int64_t r1, bool accumulate) {
  int64_t r = r0;
  for (; r + kTileRows <= r1; r += kTileRows) {
    broadcast_tile_cols<kTileRows>(coef + r * coef_r, coef_r, coef_s, rows, ld_rows,
                                   S, c0, cols, out + r * ld_out, ld_out, accumulate);
  }
  const Coef* c = coef + r * coef_r;
  Out* o = out + r * ld_out;
  switch (r1 - r) {
    case 3: broadcast_tile_cols<3>(c, coef_r, coef_s, rows, ld_rows, S, c0, cols, o, ld_out, accumulate); break;
    case 2: broadcast_tile_cols<2>(c, coef_r, coef_s, rows, ld_rows, S, c0, cols, o, ld_out, accumulate); break;
    case 1: broadcast_tile_cols<1>(c, coef_r, coef_s, rows, ld_rows, S, c0, cols, o, ld_out, accumulate); break;
    default: break;
  }
}

// Blocks [0, blocks) split over workers, each with at least kMinFlopsPerWorker.
template <typename Run>
void over_blocks(int64_t blocks, int64_t flops, Run&& run) {
  const int64_t workers = choose_workers(flops, blocks);
  at::parallel_for(0, workers, 1, [&](int64_t w0, int64_t w1) {
    const Share share(blocks, workers, w0, w1);
    run(share.begin, share.end);
  });
}

// Rows of w a column strip takes at a time: the strip's chunk (32 KiB at
// 64 columns) stays in L1 while the output's row tiles pass over it, and a
// pass touches few pages (w's rows may be 4 KiB apart).
constexpr int64_t kProductChunk = 128;
static_assert(kProductChunk <= kTailRows, "a chunk's rows must fit the tail copy");

// out [N, C] = a [N, J] . w [J, C] for the columns [c_begin, c_end) (w and
// out rows ld apart): w walked a chunk of rows at a time across all of the
// columns' strips, so that a chunk's rows are read together (strip by strip
// down all of w, every row a page apart at ld = 1024).
template <typename Coef, typename Row>
inline void product_columns(const Coef* a, int64_t N, int64_t J, const Row* w, int64_t ld,
                            int64_t c_begin, int64_t c_end, float* out) {
  for (int64_t s0 = 0; s0 < J; s0 += kProductChunk) {
    const int64_t S = std::min(kProductChunk, J - s0);
    for (int64_t c = c_begin; c < c_end; c += kTileCols) {
      broadcast_rows(a + s0, J, 1, w + s0 * ld, ld, S, c, std::min(kTileCols, c_end - c),
                     out, ld, 0, N, /*accumulate=*/s0 > 0);
    }
  }
}

}  // namespace
}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
