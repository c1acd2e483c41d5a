// Register tiles of the fused CPU recurrence (recurrence_forward_impl.h,
// recurrence_backward_impl.h), for the ISA of the including file: L is the
// register's lanes (kLanes: 8 for AVX2, 16 for AVX-512).
//
// Two shapes of tile serve every per-step product:
//  * the unit tile: R rows x (4 gates x L hidden units), so the cell of those
//    units can run on the tile while it is still in registers;
//  * the panel tile: R rows x 2L columns, stored (dh_{t-1}, and h_t = W_hr m_t
//    with a projection) or, for dm = dh_t W_hr in the backward with a
//    projection, consumed in place by the cell backward of 2 x L units.
// Both walk the contraction in chunks of kChunk, so a block's slice of the
// packed weights stays in L1 while every row tile of the step passes over it;
// between chunks the sums wait in a per-worker `partial` buffer.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/asan_annotations.h"
#include "cpu/cell_math.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

constexpr int64_t kUnitCols = 4 * kLanes;   // packed columns of a unit block
constexpr int64_t kPanelCols = 2 * kLanes;  // columns of a panel block

// n lanes at p: all kLanes of them where kFull (every unit block but a last,
// partial one), which leaves the cell without a branch at each load and
// store (perf: those compares were among the cell's hottest instructions).
template <bool kFull>
inline V load_lanes(const float* p, int64_t n) {
  if (kFull) return V::loadu(p);
  asan_check_lanes(p, n * sizeof(float), false);
  return V::loadu(p, n);
}
template <bool kFull>
inline void store_lanes(const V& v, float* p, int64_t n) {
  if (kFull) {
    v.store(p);
  } else {
    asan_check_lanes(p, n * sizeof(float), true);
    v.store(p, n);
  }
}

// The same, with full or partial decided at run time.
inline V load(const float* p, int64_t n) {
  return n == kLanes ? load_lanes<true>(p, n) : load_lanes<false>(p, n);
}
inline void store(const V& v, float* p, int64_t n) {
  if (n == kLanes) {
    store_lanes<true>(v, p, n);
  } else {
    store_lanes<false>(v, p, n);
  }
}

// Loads R x C accumulators from `partial` (row stride C*L), or zeros for the
// first chunk.
template <int R, int C>
inline void start_tile(bool first_chunk, const float* partial,
                       Reg (&acc)[R][C]) {
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q)
      acc[r][q] = first_chunk
          ? reg_zero()
          : reg_load(partial + (r * C + q) * kLanes);
}

template <int R, int C>
inline void park_tile(const Reg (&acc)[R][C], float* partial) {
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < C; ++q)
      reg_store(partial + (r * C + q) * kLanes, acc[r][q]);
}

// r[k][l] = r[l][k] for an 8 x 8 block of floats held in eight registers.
inline void transpose8x8(__m256 (&r)[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    const int b = 4 * i;
    u[b] = _mm256_shuffle_ps(t[b], t[b + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[b + 1] = _mm256_shuffle_ps(t[b], t[b + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[b + 2] = _mm256_shuffle_ps(t[b + 1], t[b + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[b + 3] = _mm256_shuffle_ps(t[b + 1], t[b + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

// Keeps a weight vector of an R x C tile in a register for all of the tile's
// rows, where the tile's accumulators, its C weights and a broadcast fit the
// register file. GCC 12 otherwise reloads the weights for every row of the
// small tiles (one load per FMA, as a memory operand: half the FMA rate on a
// Zen 4, where the larger tiles run at it; benchmarks/cpu_tile_rate.cpp, NOTES
// change 61). The empty asm makes the value opaque, so it cannot be re-read
// from memory; it emits nothing.
#if defined(FUSEDLSTM_ISA_AVX512)
constexpr int kVectorRegisters = 32;
#else
constexpr int kVectorRegisters = 16;
#endif
template <int R, int C, typename T>
inline void hold_in_register([[maybe_unused]] T& v) {
  if constexpr (R * C + C + 1 <= kVectorRegisters) asm("" : "+v"(v));
}

// The accumulators of a tile are named locals (c<row><column>), never an
// array. GCC 12 replaces a local register array by registers only when its
// heuristics allow, and they did not hold across builds: the 3 x 4 unit tile
// was kept in registers in one build and stored to the stack on every k in the
// next (perf annotate: 12 stores per 12 FMAs, under half the FMA rate), and
// the 2 x 4 tile of the same build reloaded one accumulator through memory.
// Scalars always get registers. The macros below spell out the 6 x 4 names;
// `if constexpr` keeps the R x C of them that a tile uses.
#define FUSEDLSTM_TILE_ROW(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define FUSEDLSTM_HOLD_WEIGHTS                  \
  hold_in_register<R, C>(b0);                   \
  if constexpr (C > 1) hold_in_register<R, C>(b1); \
  if constexpr (C > 2) hold_in_register<R, C>(b2); \
  if constexpr (C > 3) hold_in_register<R, C>(b3);
#define FUSEDLSTM_TILE_DECLARE(r)                            \
  [[maybe_unused]] Reg c##r##0 = tile_start<R, C, r, 0>(acc), \
      c##r##1 = tile_start<R, C, r, 1>(acc),                     \
      c##r##2 = tile_start<R, C, r, 2>(acc),                     \
      c##r##3 = tile_start<R, C, r, 3>(acc);
#define FUSEDLSTM_TILE_FMA(r)                                            \
  if constexpr (r < R) {                                                 \
    const Reg x = reg_broadcast(a + r * lda + k);               \
    c##r##0 = reg_fma(x, b0, c##r##0);                           \
    if constexpr (C > 1) c##r##1 = reg_fma(x, b1, c##r##1);      \
    if constexpr (C > 2) c##r##2 = reg_fma(x, b2, c##r##2);      \
    if constexpr (C > 3) c##r##3 = reg_fma(x, b3, c##r##3);      \
  }
#define FUSEDLSTM_TILE_STORE(r)                                   \
  if constexpr (r < R) {                                          \
    acc[r][0] = c##r##0;                                          \
    if constexpr (C > 1) acc[r][1 % C] = c##r##1;                 \
    if constexpr (C > 2) acc[r][2 % C] = c##r##2;                 \
    if constexpr (C > 3) acc[r][3 % C] = c##r##3;                 \
  }

// acc[r][q] of the tile, or zero for a name the R x C tile does not use.
template <int R, int C, int r, int q>
inline Reg tile_start(const Reg (&acc)[R][C]) {
  if constexpr (r < R && q < C) {
    return acc[r][q];
  } else {
    return reg_zero();
  }
}

// acc[r][q] += sum_{k in [k0, k1)} a[r][k] * packed[k][q*L .. q*L+L) for R
// rows of `a` (row stride lda) and C column vectors. With `ahead` set, also
// asks for one cache line from there per k (see prefetch_ahead).
//
// Never inlined, so each instance is a small leaf function whose tile the
// register allocator sees alone (inlined into the recurrence's worker lambda,
// it competed with everything live there); the call costs a few cycles per
// chunk of kChunk steps of k. Hidden, so calls bind locally.
template <int R, int C>
__attribute__((noinline, visibility("hidden"))) void tile_product(
    const float* a, int64_t lda, const float* packed, int64_t k0, int64_t k1,
    Reg (&acc)[R][C], const float* ahead, bool two_chains = true) {
  static_assert(R >= 1 && R <= 6 && C >= 1 && C <= 4, "tile shape");
  FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_DECLARE)
  int64_t k = k0;
  if constexpr (R == 1) {
    // One row has only C accumulators, each a chain of dependent FMAs: at 4
    // cycles per FMA that is a quarter of the core's FMA rate (batch 1, and
    // the last tile of a step). Even and odd k go to two sets of chains (the
    // second set in the names of row 1), added at the end. Not where the
    // caller needs the row summed in the order of the other tile shapes
    // (`two_chains` false).
    for (; two_chains && k + 1 < k1; k += 2) {
      if (ahead != nullptr) {
        _mm_prefetch(reinterpret_cast<const char*>(ahead + (k - k0) * 16),
                     _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(ahead + (k - k0 + 1) * 16),
                     _MM_HINT_T0);
      }
      const float* even = packed + k * C * kLanes;
      const float* odd = even + C * kLanes;
      const Reg x0 = reg_broadcast(a + k);
      const Reg x1 = reg_broadcast(a + k + 1);
      c00 = reg_fma(x0, reg_load(even), c00);
      c10 = reg_fma(x1, reg_load(odd), c10);
      if constexpr (C > 1) {
        c01 = reg_fma(x0, reg_load(even + kLanes), c01);
        c11 = reg_fma(x1, reg_load(odd + kLanes), c11);
      }
      if constexpr (C > 2) {
        c02 = reg_fma(x0, reg_load(even + 2 * kLanes), c02);
        c12 = reg_fma(x1, reg_load(odd + 2 * kLanes), c12);
      }
      if constexpr (C > 3) {
        c03 = reg_fma(x0, reg_load(even + 3 * kLanes), c03);
        c13 = reg_fma(x1, reg_load(odd + 3 * kLanes), c13);
      }
    }
  }
  for (; k < k1; ++k) {
    if (ahead != nullptr) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + (k - k0) * 16),
                   _MM_HINT_T0);
    }
    const float* row = packed + k * C * kLanes;
    Reg b0 = reg_load(row);
    Reg b1 = C > 1 ? reg_load(row + kLanes) : b0;
    Reg b2 = C > 2 ? reg_load(row + 2 * kLanes) : b0;
    Reg b3 = C > 3 ? reg_load(row + 3 * kLanes) : b0;
    FUSEDLSTM_HOLD_WEIGHTS
    FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_FMA)
  }
  if constexpr (R == 1) {
    if (two_chains) {
      c00 = reg_add(c00, c10);
      c01 = reg_add(c01, c11);
      c02 = reg_add(c02, c12);
      c03 = reg_add(c03, c13);
    }
  }
  FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_STORE)
}
#if defined(FUSEDLSTM_BF16_DOT)
#define FUSEDLSTM_TILE_DOT(r)                                                \
  if constexpr (r < R) {                                                     \
    const __m512bh x = (__m512bh)_mm512_set1_epi32(                          \
        *reinterpret_cast<const int32_t*>(a + r * lda + 2 * p));             \
    c##r##0 = _mm512_dpbf16_ps(c##r##0, x, b0);                              \
    if constexpr (C > 1) c##r##1 = _mm512_dpbf16_ps(c##r##1, x, b1);         \
    if constexpr (C > 2) c##r##2 = _mm512_dpbf16_ps(c##r##2, x, b2);         \
    if constexpr (C > 3) c##r##3 = _mm512_dpbf16_ps(c##r##3, x, b3);         \
  }

// The tile_product of bfloat16 operands with float accumulation, by pairs of
// k: acc[r][q] += sum_{p in [p0, p1)} a[r][2p] * W[2p][q, l] + a[r][2p + 1] *
// W[2p + 1][q, l], where `a` holds R rows of bfloat16 (row stride lda, even)
// and `packed` the weights as pairs, [p][q*L + l] = (W[2p][.], W[2p + 1][.])
// in one 32-bit word. Products of bfloat16 values are exact in float, so only
// the order of the float additions differs from tile_product on the widened
// values. `ahead` as in tile_product, one line per pair.
template <int R, int C>
__attribute__((noinline, visibility("hidden"))) void tile_product_bf16(
    const uint16_t* a, int64_t lda, const uint32_t* packed, int64_t p0,
    int64_t p1, Reg (&acc)[R][C], const float* ahead) {
  static_assert(R >= 1 && R <= 6 && C >= 1 && C <= 4, "tile shape");
  FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_DECLARE)
  for (int64_t p = p0; p < p1; ++p) {
    if (ahead != nullptr) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + (p - p0) * 16),
                   _MM_HINT_T0);
    }
    const uint32_t* row = packed + p * C * kLanes;
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(row);
    __m512bh b1 = C > 1 ? (__m512bh)_mm512_loadu_si512(row + kLanes) : b0;
    __m512bh b2 = C > 2 ? (__m512bh)_mm512_loadu_si512(row + 2 * kLanes) : b0;
    __m512bh b3 = C > 3 ? (__m512bh)_mm512_loadu_si512(row + 3 * kLanes) : b0;
    FUSEDLSTM_HOLD_WEIGHTS
    FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_DOT)
  }
  FUSEDLSTM_TILE_ROW(FUSEDLSTM_TILE_STORE)
}
#undef FUSEDLSTM_TILE_DOT
#endif  // FUSEDLSTM_BF16_DOT

#undef FUSEDLSTM_TILE_ROW
#undef FUSEDLSTM_HOLD_WEIGHTS
#undef FUSEDLSTM_TILE_DECLARE
#undef FUSEDLSTM_TILE_FMA
#undef FUSEDLSTM_TILE_STORE

// Where a row tile prefetches: its share of the next chunk of packed
// weights, which starts at row k1 of this block's panel (past the block's last
// chunk, the next block's panel follows in memory). A worker's per-step
// weights (up to its half of W_hh) outgrow L2 and stream from L3 on every
// step. Each tile asks for one line per k, so the next chunk's C/2 lines per k
// are spread over the chunk's first C/2 row tiles instead of arriving in a
// burst as the first tile of the next chunk needs them; later tiles find their
// chunk in cache and ask for nothing. A negative `tile` asks for nothing
// either (the forward's steps of one row tile: kNoPrefetch).
inline const float* prefetch_ahead(int64_t tile, const float* packed,
                                   int64_t k0, int64_t k1, int64_t cols) {
  constexpr int64_t kLineFloats = 16;
  if (tile < 0 || tile >= cols / kLineFloats) return nullptr;
  return packed + k1 * cols + tile * (k1 - k0) * kLineFloats;
}

// Where one row's cell writes, each pointer at the block's first unit. With a
// projection, `hidden` receives o * tanh(c_t) and h_next/output are unused.
struct CellRow {
  const float* bias;  // [4H] b_ih + b_hh
  float* gates;       // [4H] x W_ih^T in; the activated gates out if kept
  float* cells;       // [H] c_t, or nullptr: nothing is kept for backward
  float* c_state;     // [H] c of the sequence: c_{t-1} in, c_t out
  float* h_next;      // [P] h_t for the next step
  float* output;      // [P] h_t in the output
  float* hidden;      // [H] o * tanh(c_t) ahead of the projection, or nullptr
  uint16_t* output16 = nullptr;  // [P] h_t rounded to bfloat16 in the output,
                                 //   instead of `output` (bfloat16 dot build)
};

// Stores n lanes in the destination's type: float, or (bfloat16 dot
// products) rounded to bfloat16, to nearest even as Tensor.to(torch.bfloat16)
// and oneDNN's bfloat16 LSTM round theirs.
inline void store_as(const V& v, float* p, int64_t n) { store(v, p, n); }
#if defined(FUSEDLSTM_BF16_DOT)
inline void store_as(const V& v, uint16_t* p, int64_t n) {
  const __m256i rounded = (__m256i)_mm512_cvtneps_pbh(__m512(v));
  if (n == kLanes) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), rounded);
  } else {
    asan_check_lanes(p, n * sizeof(uint16_t), true);
    _mm256_mask_storeu_epi16(p, static_cast<__mmask16>((1u << n) - 1u), rounded);
  }
}
#endif

// The cell of one row and unit block from its recurrent product in
// registers; the same arithmetic as cell_kernels.h.
template <bool kFull>
inline void cell_of_row(const Reg (&acc)[4], int64_t H, int64_t n,
                        const CellRow& row) {
  // The gate's preactivation: recurrent part + (input part + bias).
  const auto pre = [&](int q) {
    return V(acc[q]) + (load_lanes<kFull>(row.gates + q * H, n) +
                        load_lanes<kFull>(row.bias + q * H, n));
  };
  const V i = sigmoid_cell(pre(0));
  const V f = sigmoid_cell(pre(1));
  const V g = tanh_cell(pre(2));
  const V o = sigmoid_cell(pre(3));
  // One explicit FMA: written as f * c + i * g, the compiler may fuse
  // either product, and chose differently in different tile shapes' copies
  // of this cell (NOTES change 49), so a row's c depended on its tile.
  const V c_new = at::vec::fmadd(f, load_lanes<kFull>(row.c_state, n), i * g);
  const V h = o * tanh_cell(c_new);
  if (row.cells != nullptr) {
    store_lanes<kFull>(i, row.gates, n);
    store_lanes<kFull>(f, row.gates + H, n);
    store_lanes<kFull>(g, row.gates + 2 * H, n);
    store_lanes<kFull>(o, row.gates + 3 * H, n);
    store_lanes<kFull>(c_new, row.cells, n);
  }
  store_lanes<kFull>(c_new, row.c_state, n);
  if (row.hidden != nullptr) {
    store_lanes<kFull>(h, row.hidden, n);
  } else {
    store_lanes<kFull>(h, row.h_next, n);
#if defined(FUSEDLSTM_BF16_DOT)
    if (row.output16 != nullptr) {
      store_as(h, row.output16, n);
      return;
    }
#endif
    store_lanes<kFull>(h, row.output, n);
  }
}

inline void cell_from_tile(const Reg (&acc)[4], int64_t H, int64_t n,
                           const CellRow& row) {
  if (n == kLanes) {
    cell_of_row<true>(acc, H, n, row);
  } else {
    cell_of_row<false>(acc, H, n, row);
  }
}

// The cell backward of one row and unit block from dm, the gradient reaching
// o * tanh(c_t) (dh_t + grad_output without a projection, dh_t W_hr with
// one); the arithmetic of cell_kernels.h. Pointers at the block's first unit;
// GateGrad: float, or uint16_t for gate gradients rounded to bfloat16 (dc
// stays float either way).
template <typename GateGrad>
inline void cell_backward_dm(int64_t H, int64_t n, const V& dm,
                             const float* gates, const float* cells,
                             const float* c_prev, float* dc, GateGrad* dgates) {
  const V one(1.f);
  const V i = load(gates, n), f = load(gates + H, n);
  const V g = load(gates + 2 * H, n), o = load(gates + 3 * H, n);
  const V tc = tanh_cell(load(cells, n));
  const V dcv = load(dc, n) + dm * o * (one - tc * tc);
  const V cp = load(c_prev, n);
  store_as(dcv * g * i * (one - i), dgates, n);
  store_as(dcv * cp * f * (one - f), dgates + H, n);
  store_as(dcv * i * (one - g * g), dgates + 2 * H, n);
  store_as(dm * tc * o * (one - o), dgates + 3 * H, n);
  store(dcv * f, dc, n);
}

// The same without a projection: dm = dh + grad_output.
template <typename GateGrad>
inline void cell_backward(int64_t H, int64_t n, const float* gates,
                          const float* cells, const float* c_prev,
                          const float* dh, const float* grad_output,
                          float* dc, GateGrad* dgates) {
  cell_backward_dm(H, n, load(dh, n) + load(grad_output, n), gates, cells,
                   c_prev, dc, dgates);
}

// Calls run(std::integral_constant<int, R>{}, r0) for the row tiles of a
// panel product over `rows` rows: 6-row tiles (12 accumulators), and where
// that would leave a tile of 1 or 2 rows after at least one full tile, the
// last 7 or 8 rows as 4 + 3 or 4 + 4 instead. A 2 x 2 tile has 4 chains of
// dependent FMAs (latency 4 cycles): half the core's FMA rate, on the last
// quarter of every batch-8 step.
template <typename Run>
inline void for_each_panel_tile(int64_t rows, Run&& run) {
  using std::integral_constant;
  int64_t full = rows / 6, rest = rows % 6;
  if ((rest == 1 || rest == 2) && full > 0) {
    --full;
    rest += 6;
  }
  int64_t r = 0;
  for (int64_t i = 0; i < full; ++i, r += 6) run(integral_constant<int, 6>{}, r);
  switch (rest) {
    case 8: run(integral_constant<int, 4>{}, r); run(integral_constant<int, 4>{}, r + 4); break;
    case 7: run(integral_constant<int, 4>{}, r); run(integral_constant<int, 3>{}, r + 4); break;
    case 5: run(integral_constant<int, 5>{}, r); break;
    case 4: run(integral_constant<int, 4>{}, r); break;
    case 3: run(integral_constant<int, 3>{}, r); break;
    case 2: run(integral_constant<int, 2>{}, r); break;
    case 1: run(integral_constant<int, 1>{}, r); break;
    default: break;
  }
}

// One chunk of a panel product over rows [r0, r0 + R): out[r][0..n) =
// sum_j a[r][j] * packed[j][0..2L), stored (to out and, if set, out2) after
// the last chunk. With a16 set (bfloat16 dot products), the left operand is
// a16 (bfloat16, row stride lda) instead of a, the panel holds pairs
// ([J][2L] words, see tile_product_bf16) and depth, j0 and j1 count pairs.
struct PanelStep {
  const float* a;       // the step's first row of the left operand
  int64_t lda;
  const float* packed;  // this block's [J][16] panel
  int64_t depth;        // J
  float* partial;       // [B][16]
  float* out;           // at the block's first column
  int64_t ldo;
  float* out2;          // a second destination, or nullptr
  int64_t ldo2;
  int64_t n;            // valid columns of the block
  int64_t j0, j1;       // the chunk
  const uint16_t* a16 = nullptr;
};

template <int R>
void panel_rows(const PanelStep& st, int64_t r0) {
  Reg acc[R][2];
  float* partial = st.partial + r0 * kPanelCols;
  start_tile<R, 2>(st.j0 == 0, partial, acc);
  const float* ahead =
      prefetch_ahead(r0 > 0, st.packed, st.j0, st.j1, kPanelCols);
#if defined(FUSEDLSTM_BF16_DOT)
  if (st.a16 != nullptr) {
    tile_product_bf16<R, 2>(st.a16 + r0 * st.lda, st.lda,
                            reinterpret_cast<const uint32_t*>(st.packed),
                            st.j0, st.j1, acc, ahead);
  } else
#endif
  {
    tile_product<R, 2>(st.a + r0 * st.lda, st.lda, st.packed, st.j0, st.j1,
                       acc, ahead);
  }
  if (st.j1 < st.depth) {
    park_tile<R, 2>(acc, partial);
    return;
  }
  const int64_t n0 = std::min(kLanes, st.n), n1 = st.n - n0;
  for (int r = 0; r < R; ++r) {
    float* outs[2] = {st.out + (r0 + r) * st.ldo,
                      st.out2 ? st.out2 + (r0 + r) * st.ldo2 : nullptr};
    for (float* out : outs) {
      if (out == nullptr) continue;
      store(V(acc[r][0]), out, n0);
      if (n1 > 0) store(V(acc[r][1]), out + kLanes, n1);
    }
  }
}

// The whole product for `rows` rows, by the tiles of for_each_panel_tile.
inline void panel_product(PanelStep st, int64_t rows) {
  // kChunk pairs, as in unit_block_step: the bytes of a float chunk.
  const int64_t chunk = kChunk;
  for (st.j0 = 0; st.j0 < st.depth; st.j0 = st.j1) {
    st.j1 = std::min(st.depth, st.j0 + chunk);
    for_each_panel_tile(rows, [&](auto tile_rows, int64_t r) {
      panel_rows<decltype(tile_rows)::value>(st, r);
    });
  }
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
