// One step's products on AMX tiles with the weights as they lie, for a
// bfloat16 call of one step that takes its input product into the step
// (input_in_steps: an LSTMCell, a decoder's step), on CPUs where AMX runs.
// Included by recurrence_forward_impl.h where FUSEDLSTM_BF16_DOT is defined.
//
// Why: such a call reads each weight once, so packing W_ih and W_hh into
// tiles' pair panels first (the sequence path's way) would cost more than the
// product, and the direct dot products (vdpbf16ps, one port on these cores)
// ran a batch-64 step at H = 512 at 2.3x nn.LSTMCell's time, whose oneDNN
// matmuls run on the tiles (NOTES, "one LSTMCell step on the Xeon with AMX").
// Turned around, the product needs no packing of the weights: gates^T =
// W . [x; h]^T takes 16 rows of W_ih or W_hh, 32 bfloat16 of each, as an A
// tile loaded straight from the weight matrix, and the batch's rows, pairs
// of k by 16 rows, as B tiles. Only those B tiles (x and h, a few KiB per
// batch tile) and the [16 units x 16 rows] float results are transposed.
//
// Numerics are the dot-product build's: exact products of bfloat16 pairs,
// summed in float (TDPBF16PS sums pair by pair as vdpbf16ps does; only the
// order of the float additions differs). A row's sums do not depend on the
// batch's other rows: C[u][n] reads only row u of W and row n of x and h.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/asan_annotations.h"
#include "cpu/forward_unit_block.h"
#include "cpu/recurrence_amx.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {
namespace {

// bfloat16 values of k per tile step, and the most batch tiles of a step
// (kOneStepInputMaxBatch rows).
constexpr int64_t kAmxStepK = 2 * kAmxPairs;
constexpr int64_t kAmxStepMaxBatchTiles = 4;
static_assert(kOneStepInputMaxBatch <= kAmxStepMaxBatchTiles * kAmxRows,
              "a one-step call's rows fit the batch tiles");
// The fewest rows of a step that runs here (plan_forward's rule); fewer take
// the direct dot products, which read each weight once too and skip the
// transposes. Xeon with AMX, 1 / 2 threads, bfloat16 LSTMCell(H, H) under
// no_grad, µs direct dot products -> here: 3 rows, H = 512 333-336 -> 356
// (2 threads 227-244 -> 244-251); 4 rows, H = 256 109-115 -> 91-94 (73-81
// -> 67), H = 512 363-365 -> 359-360 (244-252 -> 239-242), H = 1024
// 1320-1595 -> 1027-1154 (741-831 -> 678-700); 8 rows, H = 512 608-615 ->
// 365-373 (360-401 -> 255-258) (NOTES change 85).
constexpr int64_t kAmxDirectMinRows = 4;
static_assert(kLanes == kAmxRows, "a unit block is one tile's rows");
constexpr int64_t kTileWords = kAmxPairs * kAmxRows;  // 32-bit words of a B tile

// r[i] = column i of the 16 x 16 matrix whose rows were r[0..15] (32-bit
// elements), in four rounds of shuffles: pairs within 128-bit lanes, then
// quads, then the lanes themselves in two rounds.
[[gnu::always_inline]] inline void transpose_16x16(__m512 (&r)[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // Lane k of r[4i + j] now holds column 4k + j of rows 4i..4i+3.
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 even0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);
    const __m512 odd0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);
    const __m512 even1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
    const __m512 odd1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
    t[j] = _mm512_shuffle_f32x4(even0, even1, 0x88);
    t[8 + j] = _mm512_shuffle_f32x4(even0, even1, 0xDD);
    t[4 + j] = _mm512_shuffle_f32x4(odd0, odd1, 0x88);
    t[12 + j] = _mm512_shuffle_f32x4(odd0, odd1, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Tile steps of a contraction over K values.
inline int64_t amx_steps(int64_t K) { return (K + kAmxStepK - 1) / kAmxStepK; }

// rows x K bfloat16 values (row stride ld) as B tiles: out [batch tile]
// [tile step][16 pairs][16 rows] words, a row's pair p of step s being
// values 32s + 2p and 32s + 2p + 1; zeros past K and past `rows`, reading
// none there (so no Inf or NaN enters a product as Inf * 0).
inline void pack_rows_as_b_tiles(const uint16_t* src, int64_t ld, int64_t rows,
                                 int64_t K, uint32_t* out) {
  const int64_t steps = amx_steps(K), tiles = (rows + kAmxRows - 1) / kAmxRows;
  for (int64_t bt = 0; bt < tiles; ++bt) {
    const int64_t n = std::min(kAmxRows, rows - bt * kAmxRows);
    for (int64_t s = 0; s < steps; ++s) {
      const int64_t k = s * kAmxStepK, count = std::min(kAmxStepK, K - k);
      const auto mask = static_cast<__mmask32>(
          count == kAmxStepK ? ~uint32_t{0} : (uint32_t{1} << count) - 1u);
      __m512 r[16];
      for (int64_t i = 0; i < kAmxRows; ++i) {
        const uint16_t* values = src + (bt * kAmxRows + i) * ld + k;
        if (i < n) asan_check_lanes(values, count * sizeof(uint16_t), false);
        r[i] = i < n ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mask, values))
                     : _mm512_setzero_ps();
      }
      transpose_16x16(r);
      float* tile = reinterpret_cast<float*>(out + (bt * steps + s) * kTileWords);
      for (int64_t p = 0; p < kAmxPairs; ++p) _mm512_storeu_ps(tile + p * kAmxRows, r[p]);
    }
  }
}

// One weight's part of a gate's product: its rows from `row` on, [*, K]
// bfloat16 (row stride K), against `b_tiles` (pack_rows_as_b_tiles's, of
// amx_steps(K) steps per batch tile).
struct AmxWeightPart {
  const uint16_t* w;
  int64_t K;
  const uint32_t* b_tiles;
};

// Tiles: 0-3 a batch tile's float sums each, 4 and 5 the weight rows (one
// step's while the other loads), 6 and 7 the batch rows. GCC's tile
// intrinsics name their registers by the macro argument's spelling, so the
// step is a macro, not a template.
#define FUSEDLSTM_AMX_WEIGHT_STEP(A_TILE)                               \
  do {                                                                  \
    _tile_loadd(A_TILE, a, a_bytes);                                    \
    _tile_loadd(6, b, kB);                                              \
    _tile_dpbf16ps(0, A_TILE, 6);                                       \
    if constexpr (NB > 1) {                                             \
      _tile_loadd(7, b + b_next, kB);                                   \
      _tile_dpbf16ps(1, A_TILE, 7);                                     \
    }                                                                   \
    if constexpr (NB > 2) {                                             \
      _tile_loadd(6, b + 2 * b_next, kB);                               \
      _tile_dpbf16ps(2, A_TILE, 6);                                     \
    }                                                                   \
    if constexpr (NB > 3) {                                             \
      _tile_loadd(7, b + 3 * b_next, kB);                               \
      _tile_dpbf16ps(3, A_TILE, 7);                                     \
    }                                                                   \
  } while (0)

// out[bt][u][n] = sum over the parts of W[row + u] . rows[bt * 16 + n], for
// u, n < 16 and NB batch tiles. A part whose K is not a whole number of tile
// steps reads its last step's 16 x (K mod 32) values from a zero-padded
// copy (`tail`, [16][32]), so no tile load reads past a weight row.
template <int NB>
__attribute__((noinline, target("amx-tile,amx-bf16"))) void amx_weight_rows_product(
    const AmxWeightPart (&parts)[2], int64_t row, uint16_t* tail, float* out) {
  constexpr int64_t kB = kAmxRows * sizeof(uint32_t);
  tile_memory_barrier();
  _tile_zero(0);
  if constexpr (NB > 1) _tile_zero(1);
  if constexpr (NB > 2) _tile_zero(2);
  if constexpr (NB > 3) _tile_zero(3);
  for (const AmxWeightPart& part : parts) {
    const int64_t K = part.K, steps = amx_steps(K), whole = K / kAmxStepK;
    const int64_t b_next = steps * kTileWords;
    const uint16_t* rows = part.w + row * K;
    int64_t a_bytes = K * static_cast<int64_t>(sizeof(uint16_t));
    // Tile loads are inline assembly, which the sanitizer does not see: the
    // whole steps' bytes of each row, checked here instead.
    for (int64_t u = 0; u < kAmxRows; ++u) {
      asan_check_lanes(rows + u * K, whole * kAmxStepK * sizeof(uint16_t), false);
    }
    int64_t s = 0;
    for (; s + 1 < whole; s += 2) {
      const uint16_t* a = rows + s * kAmxStepK;
      const uint32_t* b = part.b_tiles + s * kTileWords;
      FUSEDLSTM_AMX_WEIGHT_STEP(4);
      a += kAmxStepK;
      b += kTileWords;
      FUSEDLSTM_AMX_WEIGHT_STEP(5);
    }
    if (s < whole) {
      const uint16_t* a = rows + s * kAmxStepK;
      const uint32_t* b = part.b_tiles + s * kTileWords;
      FUSEDLSTM_AMX_WEIGHT_STEP(4);
      ++s;
    }
    if (s < steps) {
      const int64_t k = s * kAmxStepK, count = K - k;
      std::memset(tail, 0, kAmxRows * kAmxStepK * sizeof(uint16_t));
      for (int64_t u = 0; u < kAmxRows; ++u) {
        std::memcpy(tail + u * kAmxStepK, rows + u * K + k, count * sizeof(uint16_t));
      }
      tile_memory_barrier();
      const uint16_t* a = tail;
      const uint32_t* b = part.b_tiles + s * kTileWords;
      a_bytes = kAmxStepK * sizeof(uint16_t);
      FUSEDLSTM_AMX_WEIGHT_STEP(5);
    }
  }
  _tile_stored(0, out, kB);
  if constexpr (NB > 1) _tile_stored(1, out + kTileWords, kB);
  if constexpr (NB > 2) _tile_stored(2, out + 2 * kTileWords, kB);
  if constexpr (NB > 3) _tile_stored(3, out + 3 * kTileWords, kB);
  tile_memory_barrier();
}
#undef FUSEDLSTM_AMX_WEIGHT_STEP

// A worker's operands of the step: x and h_{t-1} as B tiles, and room for
// the products and their transposes.
struct AmxStepOperands {
  int64_t batch_tiles = 0;
  std::vector<uint32_t> x_tiles, h_tiles;
  std::vector<float> products;    // [4 gates][batch tiles][16 units][16 rows]
  std::vector<float> transposed;  // [16 rows][kUnitCols]
  std::vector<uint16_t> tail;     // [16][32]

  // x's rows of the step (such a step always takes the input product:
  // plan_forward's rule) and h_{t-1} rounded to bfloat16 (ld16 apart),
  // `rows` of each.
  void pack(const uint16_t* x, int64_t I, const uint16_t* h16, int64_t ld16,
            int64_t P, int64_t rows) {
    batch_tiles = (rows + kAmxRows - 1) / kAmxRows;
    TORCH_CHECK(batch_tiles <= kAmxStepMaxBatchTiles,
                "fusedlstm: an AMX step of ", rows, " rows");
    x_tiles.resize(batch_tiles * amx_steps(I) * kTileWords);
    pack_rows_as_b_tiles(x, I, rows, I, x_tiles.data());
    h_tiles.resize(batch_tiles * amx_steps(P) * kTileWords);
    pack_rows_as_b_tiles(h16, ld16, rows, P, h_tiles.data());
    products.resize(4 * batch_tiles * kTileWords);
    transposed.resize(kAmxRows * kUnitCols);
    tail.resize(kAmxRows * kAmxStepK);
  }
};

// The unit block's step on AMX from the weights as they lie: the four
// gates' products for every batch tile, then the cells, batch tile by batch
// tile. The last block of an H that is not a whole number of tiles takes the
// tile of rows ending at H (H >= 16: plan_forward's rule) and keeps its own
// units from it, so no tile load reads rows of the next gate or past W.
void amx_direct_unit_block_step(const UnitBlockStep& st, int64_t rows,
                                AmxStepOperands& ops) {
  const RecurrentForward& a = *st.args;
  const int64_t H = a.hidden;
  const int64_t first = std::min(st.unit, H - kLanes), shift = st.unit - first;
  const int64_t nb = ops.batch_tiles;
  const AmxWeightPart parts[2] = {{a.w_ih16, a.input, ops.x_tiles.data()},
                                  {a.w_hh16, a.state, ops.h_tiles.data()}};
  for (int64_t q = 0; q < 4; ++q) {
    float* out = ops.products.data() + q * nb * kTileWords;
    const int64_t row = q * H + first;
    switch (nb) {
      case 1: amx_weight_rows_product<1>(parts, row, ops.tail.data(), out); break;
      case 2: amx_weight_rows_product<2>(parts, row, ops.tail.data(), out); break;
      case 3: amx_weight_rows_product<3>(parts, row, ops.tail.data(), out); break;
      default: amx_weight_rows_product<4>(parts, row, ops.tail.data(), out); break;
    }
  }
  // Lane l of a transposed row takes unit first + shift + l (lanes past
  // the block's units repeat the last, and are not stored).
  const __m512i lanes = _mm512_min_epi32(
      _mm512_add_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                       _mm512_set1_epi32(static_cast<int32_t>(shift))),
      _mm512_set1_epi32(15));
  float* transposed = ops.transposed.data();
  for (int64_t bt = 0; bt < nb; ++bt) {
    for (int64_t q = 0; q < 4; ++q) {
      const float* tile = ops.products.data() + (q * nb + bt) * kTileWords;
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(tile + i * kAmxRows);
      transpose_16x16(r);
      for (int i = 0; i < 16; ++i) {
        const __m512 units = shift == 0 ? r[i] : _mm512_permutexvar_ps(lanes, r[i]);
        _mm512_storeu_ps(transposed + i * kUnitCols + q * kLanes, units);
      }
    }
    const int64_t r0 = bt * kAmxRows;
    cells_from_tiles(st, r0, transposed, 0, std::min(kAmxRows, rows - r0));
  }
}

}  // namespace
}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
