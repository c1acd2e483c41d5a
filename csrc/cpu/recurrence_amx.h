// AMX tile products for the bfloat16 dot-product build (included by the
// recurrence headers where FUSEDLSTM_BF16_DOT is defined).
//
// Why: on Intel CPUs with AMX, vdpbf16ps issues on one port and runs at the
// float32 FMA rate, so the bfloat16 recurrence gained nothing there (C3
// inference took 124 ms against 77 ms in float32), while oneDNN's LSTM runs
// its bfloat16 products on the tiles (20 ms). One TDPBF16PS multiplies a
// [16 x 32] bfloat16 tile by a [32 x 16] one into [16 x 16] floats: the
// products are exact and summed in float, pair by pair, as vdpbf16ps sums
// them, so the numerical model of the bfloat16 dot products is unchanged
// (only the order of the float additions differs).
//
// The operands are the dot-product build's own: a unit block's panel of
// weight pairs, [depth][4 gates x 16 units] 32-bit words, is four B tiles
// per 16 pairs (one per gate, rows 256 bytes apart), and 16 rows of
// bfloat16 h (or x) are an A tile. Tiles read whole 16-pair steps and 16
// rows, so panels, h and x are padded with zeros to amx_depth() pairs and
// whole row tiles (amx_depth, kAmxRows).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

constexpr int64_t kAmxRows = 16;   // rows of an A and C tile
constexpr int64_t kAmxPairs = 16;  // k pairs of one tile step (32 bfloat16)

// A product depth (in pairs) rounded up to whole tile steps.
inline int64_t amx_depth(int64_t pairs) {
  return (pairs + kAmxPairs - 1) / kAmxPairs * kAmxPairs;
}

// Every tile register as [16 rows x 64 bytes]. amx_block_product: 0-3 the
// four gates' float accumulators, 4 the rows, 5 and 6 a gate's [16 pairs x
// 16 units] weights (two, so that a load need not wait for the product
// reading the other); amx_panel_product: 0-3 the accumulators of two row
// tiles by two column halves, 4 and 7 the rows, 5 and 6 the weights.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// GCC's AMX intrinsics are asm statements that name no memory: the barrier
// keeps the compiler from moving loads and stores of tile memory across them.
inline void tile_memory_barrier() { asm volatile("" ::: "memory"); }

// Configures this thread's tiles (every thread that runs amx_block_product
// calls it first; it zeroes the tiles, and oneDNN reconfigures them for
// itself whenever it runs).
__attribute__((target("amx-tile,amx-bf16"))) inline void amx_configure() {
  AmxTileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  tile_memory_barrier();
  _tile_loadconfig(&config);
}

__attribute__((target("amx-tile"))) inline void amx_release() { _tile_release(); }

// The work that amx_block_product and amx_block_product_x2 run between
// their tile steps: `between(i, steps)` after step i of `steps` (none by
// default). Why: TDPBF16PS runs on the tile unit while the core's vector
// units stay free, so the cells of the previous product, spread over the
// steps, run in the time the tiles take anyway (NOTES change 34).
struct NothingBetween {
  void operator()(int64_t, int64_t) const {}
};

// out[r][q*16 + l] = sum over pairs p < depth of a[r][2p] * W[2p][q, l] +
// a[r][2p + 1] * W[2p + 1][q, l], for 16 rows r of a (bfloat16, row stride
// lda elements, depth * 2 columns, zero-padded) and `panel` ([depth][64]
// words of pairs, see tile_product_bf16); depth a multiple of kAmxPairs;
// out [16][64] floats; `between` as above, after each of depth / kAmxPairs
// steps.
template <typename Between = NothingBetween>
__attribute__((noinline, target("amx-tile,amx-bf16"))) void amx_block_product(
    const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t depth,
    float* out, Between between = {}) {
  constexpr int64_t kPanelBytes = 64 * sizeof(uint32_t);
  const int64_t a_bytes = lda * static_cast<int64_t>(sizeof(uint16_t));
  tile_memory_barrier();
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  const int64_t steps = depth / kAmxPairs;
  for (int64_t p = 0; p < depth; p += kAmxPairs) {
    const uint32_t* w = panel + p * 64;
    _tile_loadd(4, a + 2 * p, a_bytes);
    _tile_loadd(5, w, kPanelBytes);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, w + 16, kPanelBytes);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(5, w + 32, kPanelBytes);
    _tile_dpbf16ps(2, 4, 5);
    _tile_loadd(6, w + 48, kPanelBytes);
    _tile_dpbf16ps(3, 4, 6);
    between(p / kAmxPairs, steps);
  }
  _tile_stored(0, out, kPanelBytes);
  _tile_stored(1, out + 16, kPanelBytes);
  _tile_stored(2, out + 32, kPanelBytes);
  _tile_stored(3, out + 48, kPanelBytes);
  tile_memory_barrier();
}

// amx_block_product for 32 rows (two row tiles, out [32][64]), in two
// passes of two gates: each weight tile then serves both row tiles, which
// halves the weight loads that bound the tiles (a standalone loop over 16
// panels in L2: 23.9 against 27.7 ns per product; NOTES change 32).
// `between` after each of 2 * depth / kAmxPairs steps.
template <typename Between = NothingBetween>
__attribute__((noinline, target("amx-tile,amx-bf16"))) void
amx_block_product_x2(const uint16_t* a, int64_t lda, const uint32_t* panel,
                     int64_t depth, float* out, Between between = {}) {
  constexpr int64_t kPanelBytes = 64 * sizeof(uint32_t);
  const int64_t a_bytes = lda * static_cast<int64_t>(sizeof(uint16_t));
  const uint16_t* a1 = a + kAmxRows * lda;
  const int64_t half = depth / kAmxPairs;
  tile_memory_barrier();
  for (int64_t gate = 0; gate < 4; gate += 2) {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t p = 0; p < depth; p += kAmxPairs) {
      const uint32_t* w = panel + p * 64 + gate * 16;
      _tile_loadd(4, a + 2 * p, a_bytes);
      _tile_loadd(5, w, kPanelBytes);
      _tile_dpbf16ps(0, 4, 5);
      _tile_loadd(7, a1 + 2 * p, a_bytes);
      _tile_dpbf16ps(2, 7, 5);
      _tile_loadd(6, w + 16, kPanelBytes);
      _tile_dpbf16ps(1, 4, 6);
      _tile_dpbf16ps(3, 7, 6);
      between(gate / 2 * half + p / kAmxPairs, 2 * half);
    }
    float* o = out + gate * 16;
    _tile_stored(0, o, kPanelBytes);
    _tile_stored(1, o + 16, kPanelBytes);
    _tile_stored(2, o + kAmxRows * 64, kPanelBytes);
    _tile_stored(3, o + kAmxRows * 64 + 16, kPanelBytes);
  }
  tile_memory_barrier();
}

// out[r][0..32) = the same pairwise dot products for 16 * T rows of a
// (bfloat16, row stride lda, 2 * depth columns) and a [depth][32]-word
// panel of pairs (pack_panels_pairs's; backward's dG_t W_hh); depth a
// multiple of kAmxPairs; out [16 * T][32] floats. With two row tiles each
// weight tile serves both, halving the weight loads, which bound the tiles.
// `between` as above, after each of depth / kAmxPairs steps.
template <int T, typename Between = NothingBetween>
__attribute__((noinline, target("amx-tile,amx-bf16"))) void amx_panel_product(
    const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t depth,
    float* out, Between between = {}) {
  static_assert(T == 1 || T == 2, "one or two row tiles");
  constexpr int64_t kPanelBytes = 32 * sizeof(uint32_t);
  const int64_t a_bytes = lda * static_cast<int64_t>(sizeof(uint16_t));
  tile_memory_barrier();
  _tile_zero(0);
  _tile_zero(1);
  if constexpr (T == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  for (int64_t p = 0; p < depth; p += kAmxPairs) {
    const uint32_t* w = panel + p * 32;
    _tile_loadd(4, a + 2 * p, a_bytes);
    _tile_loadd(5, w, kPanelBytes);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, w + 16, kPanelBytes);
    _tile_dpbf16ps(1, 4, 6);
    if constexpr (T == 2) {
      _tile_loadd(7, a + kAmxRows * lda + 2 * p, a_bytes);
      _tile_dpbf16ps(2, 7, 5);
      _tile_dpbf16ps(3, 7, 6);
    }
    between(p / kAmxPairs, depth / kAmxPairs);
  }
  _tile_stored(0, out, kPanelBytes);
  _tile_stored(1, out + 16, kPanelBytes);
  if constexpr (T == 2) {
    _tile_stored(2, out + kAmxRows * 32, kPanelBytes);
    _tile_stored(3, out + kAmxRows * 32 + 16, kPanelBytes);
  }
  tile_memory_barrier();
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
