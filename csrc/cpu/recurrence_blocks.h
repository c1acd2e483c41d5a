// Work split, weight packing and small helpers shared by the forward and
// backward fused recurrences (recurrence_forward_impl.h,
// recurrence_backward_impl.h), for the ISA of the including file.
#pragma once

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu/recurrence_tiles.h"
#include "cpu/step_sync.h"
#include "cpu/workspace.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// `count` elements of T in the calling thread's workspace for `role`.
template <typename T>
T* workspace(WorkspaceRole role, int64_t count) {
  return static_cast<T*>(
      workspace_bytes(role, static_cast<std::size_t>(count) * sizeof(T)));
}

#if defined(FUSEDLSTM_BF16_DOT)
// The per-step products run over pairs of k in bfloat16 dot products (see
// tile_product_bf16): forward on h_{t-1} rounded to bfloat16 as the layer
// outputs it, backward on the gate gradients rounded to bfloat16.
constexpr bool kBf16Dot = true;
#else
constexpr bool kBf16Dot = false;
#endif

// Workers for a step of `flops`: each gets at least ~0.5 MFLOP (several
// microseconds), or the meeting at the end of the step costs more than the
// split saves; at most one per thread and per block. Inside a parallel region
// (both directions at once: cpu/bidirectional.cpp) at::parallel_for runs its
// chunks inline, on one thread, so one worker: more would only split its
// loops.
constexpr int64_t kMinFlopsPerWorker = int64_t{1} << 17;
inline int64_t choose_workers(int64_t flops, int64_t blocks) {
  if (at::in_parallel_region()) return 1;
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

// Weights are packed from float, or for the bfloat16-dot builds straight
// from the layer's bfloat16 values (their bits as uint16_t): widening them to
// a float copy first cost a seventh of a batch-8 bfloat16 inference call
// (profiler: two 4 MB conversions of fresh memory per call).
inline float weight_value(float v) { return v; }
inline float weight_value(uint16_t bits) {
  uint32_t wide = uint32_t{bits} << 16;
  float v;
  std::memcpy(&v, &wide, sizeof v);
  return v;
}
inline __m256 load8_weights(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8_weights(const uint16_t* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

// dst[k * dst_stride + l] = src[l * src_stride + k] for l < 8 and k < K, and
// zero for l >= rows: eight rows of the source become eight lanes. The weights
// are packed on every call, so this runs at memory speed: 8 x 8 blocks are
// transposed in registers, where element-by-element gathers down the columns
// of a row-major matrix took a tenth of a batch-8 forward (perf).
template <typename T>
inline void pack_transposed8(const T* src, int64_t src_stride, int64_t rows,
                      int64_t K, float* dst, int64_t dst_stride) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) {
      r[l] = l < rows ? load8_weights(src + l * src_stride + k)
                      : _mm256_setzero_ps();
    }
    transpose8x8(r);
    for (int l = 0; l < 8; ++l) {
      _mm256_storeu_ps(dst + (k + l) * dst_stride, r[l]);
    }
  }
  for (; k < K; ++k) {
    for (int64_t l = 0; l < 8; ++l) {
      dst[k * dst_stride + l] =
          l < rows ? weight_value(src[l * src_stride + k]) : 0.f;
    }
  }
}

// The same for `lanes` (a multiple of 8) rows becoming lanes, eight at a time.
template <typename T>
inline void pack_transposed(const T* src, int64_t src_stride, int64_t rows,
                            int64_t lanes, int64_t K, float* dst,
                            int64_t dst_stride) {
  for (int64_t g = 0; g < lanes; g += 8) {
    const int64_t live = std::clamp<int64_t>(rows - g, 0, 8);
    pack_transposed8(live > 0 ? src + g * src_stride : src, src_stride, live, K,
                     dst + g, dst_stride);
  }
}

// dst[k][q*L + l] = W_hh[q*H + L*u + l][k] for W_hh [4H, K], zero past the
// last unit.
template <typename T>
inline void pack_unit_block(const T* w_hh, int64_t H, int64_t K, int64_t u,
                     float* dst) {
  const int64_t units = std::min(kLanes, H - u * kLanes);
  for (int64_t q = 0; q < 4; ++q) {
    pack_transposed(w_hh + (q * H + u * kLanes) * K, K, units, kLanes, K,
                    dst + q * kLanes, kUnitCols);
  }
}

#if defined(FUSEDLSTM_BF16_DOT)
// dst[p][c] = (src[2p][c], src[2p + 1][c]) for p < ceil(K / 2), c < cols:
// rows of a float panel (row stride cols, a multiple of L) as bfloat16 pairs,
// low half first, zero past row K. The weights of a bfloat16 layer are
// bfloat16 values, so keeping the upper 16 bits of each float is exact.
inline void rows_to_pairs(const float* src, int64_t K, int64_t cols,
                          uint32_t* dst) {
  const __m512i high = _mm512_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t p = 0; 2 * p < K; ++p) {
    for (int64_t c = 0; c < cols; c += kLanes) {
      const __m512i even = _mm512_loadu_si512(src + (2 * p) * cols + c);
      const __m512i odd = 2 * p + 1 < K
          ? _mm512_loadu_si512(src + (2 * p + 1) * cols + c)
          : zero;
      _mm512_storeu_si512(dst + p * cols + c,
                          _mm512_or_si512(_mm512_and_si512(odd, high),
                                          _mm512_srli_epi32(even, 16)));
    }
  }
}

// dst[p][l] = 32-bit word p of row l (row stride K elements) for l < 8 and
// p < K / 2, zero for l >= rows; K even. A word of a bfloat16 row is the
// pair (2p, 2p + 1), low half first, so this is the pair panel of eight rows
// in one pass: 8 x 8 blocks of words transposed in registers, bits moved and
// never computed with.
inline void pack_word_lanes8(const uint16_t* src, int64_t rows, int64_t K,
                             uint32_t* dst, int64_t dst_stride) {
  const int64_t words = K / 2;
  int64_t p = 0;
  for (; p + 8 <= words; p += 8) {
    __m256 r[8];
    for (int l = 0; l < 8; ++l) {
      r[l] = l < rows ? _mm256_castsi256_ps(_mm256_loadu_si256(
                            reinterpret_cast<const __m256i*>(src + l * K + 2 * p)))
                      : _mm256_setzero_ps();
    }
    transpose8x8(r);
    for (int l = 0; l < 8; ++l) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (p + l) * dst_stride),
                          _mm256_castps_si256(r[l]));
    }
  }
  for (; p < words; ++p) {
    for (int64_t l = 0; l < 8; ++l) {
      uint32_t word = 0;
      if (l < rows) std::memcpy(&word, src + l * K + 2 * p, sizeof word);
      dst[p * dst_stride + l] = word;
    }
  }
}

// pack_unit_block's panel as bfloat16 pairs, zero past K: for even K straight
// from the rows' words (pack_word_lanes8); for odd K, whose rows do not start
// on word boundaries, through a float panel (rows_to_pairs; scratch: [K][4L]
// floats).
inline void pack_unit_block_pairs(const uint16_t* w_hh, int64_t H, int64_t K,
                                  int64_t u, float* scratch, uint32_t* dst) {
  if (K % 2 == 0) {
    const int64_t units = std::min(kLanes, H - u * kLanes);
    for (int64_t q = 0; q < 4; ++q) {
      for (int64_t g = 0; g < kLanes; g += 8) {
        const int64_t live = std::clamp<int64_t>(units - g, 0, 8);
        const uint16_t* rows = w_hh + (q * H + u * kLanes + (live > 0 ? g : 0)) * K;
        pack_word_lanes8(rows, live, K, dst + q * kLanes + g, kUnitCols);
      }
    }
    return;
  }
  pack_unit_block(w_hh, H, K, u, scratch);
  rows_to_pairs(scratch, K, kUnitCols, dst);
}

// dst[b][0..K) = h[b][0..K) rounded to bfloat16 (to nearest even, as
// Tensor.to(torch.bfloat16) rounds), dst[b][K] = 0 where K is odd, for
// `rows` rows (row strides K and ld).
inline void round_rows_to_bf16(const float* h, int64_t rows, int64_t K,
                               uint16_t* dst, int64_t ld) {
  for (int64_t b = 0; b < rows; ++b) {
    const float* src = h + b * K;
    uint16_t* out = dst + b * ld;
    for (int64_t k = 0; k < K; k += kLanes) {
      const int64_t n = std::min(kLanes, K - k);
      store_as(load(src + k, n), out + k, n);
    }
    if (K & 1) out[K] = 0;
  }
}
#endif  // FUSEDLSTM_BF16_DOT

// dst[j][l] = W_hr[2Lc + l][j] for W_hr [P, H], zero from row P on: the
// panel of h_t = W_hr m_t.
inline void pack_projection_panel(const float* w_hr, int64_t P, int64_t H, int64_t c,
                           float* dst) {
  const int64_t row = c * kPanelCols;
  pack_transposed(w_hr + row * H, H, std::min(kPanelCols, P - row), kPanelCols,
                  H, dst, kPanelCols);
}

// Panels [c_begin, c_end) of src (depth rows of row_stride floats, cols
// columns), panel c at dst + c * panel_stride: panel[j][l] = src[j][2Lc + l],
// zero from column cols on. Row by row, each row's columns of these panels
// read front to back: panel by panel, the 4H rows 4H apart took a new page
// every 128 bytes, and the packing took most of the recurrence's time in a
// batch-1 backward at H = 1024 (NOTES change 22).
inline void pack_panels(const float* src, int64_t depth, int64_t cols,
                        int64_t row_stride, int64_t c_begin, int64_t c_end,
                        float* dst, int64_t panel_stride) {
  for (int64_t j = 0; j < depth; ++j) {
    const float* row = src + j * row_stride;
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t col0 = c * kPanelCols;
      const int64_t n = std::clamp<int64_t>(cols - col0, 0, kPanelCols);
      float* out = dst + c * panel_stride + j * kPanelCols;
      if (n == kPanelCols) {
        std::memcpy(out, row + col0, kPanelCols * sizeof(float));
      } else {
        std::memcpy(out, row + col0, n * sizeof(float));
        std::fill(out + n, out + kPanelCols, 0.f);
      }
    }
  }
}

#if defined(FUSEDLSTM_BF16_DOT)
// pack_panels for bfloat16 values, as pairs of rows, in one pass:
// panel[p][l] = (src[2p][col], src[2p + 1][col]) for col = c * 2L + l < cols,
// low half first; zero past the last column and, for odd depth, in the high
// half of the last pair. Two rows' 32 columns are interleaved by 16-bit
// permutes; bits are moved, never computed with. Row pair by row pair, for
// the reason pack_panels gives.
inline void pack_panels_pairs(const uint16_t* src, int64_t depth, int64_t cols,
                              int64_t row_stride, int64_t c_begin,
                              int64_t c_end, uint32_t* dst,
                              int64_t panel_stride) {
  static_assert(kPanelCols == 32, "one 512-bit row of 16-bit columns per panel");
  // Output 16-bit element 2m takes column m of the even row, 2m + 1 column m
  // of the odd row (index bit 5 picks the second source); `high` does the
  // same for columns 16-31.
  alignas(64) uint16_t low_idx[32], high_idx[32];
  for (int m = 0; m < 16; ++m) {
    low_idx[2 * m] = static_cast<uint16_t>(m);
    low_idx[2 * m + 1] = static_cast<uint16_t>(32 + m);
    high_idx[2 * m] = static_cast<uint16_t>(16 + m);
    high_idx[2 * m + 1] = static_cast<uint16_t>(48 + m);
  }
  const __m512i low = _mm512_load_si512(low_idx), high = _mm512_load_si512(high_idx);
  for (int64_t p = 0; 2 * p < depth; ++p) {
    const uint16_t* even_row = src + 2 * p * row_stride;
    const bool has_odd = 2 * p + 1 < depth;
    for (int64_t c = c_begin; c < c_end; ++c) {
      const int64_t col0 = c * kPanelCols;
      const int64_t n = std::clamp<int64_t>(cols - col0, 0, kPanelCols);
      const __mmask32 live =
          n == kPanelCols ? ~__mmask32{0} : (__mmask32{1} << n) - 1;
      asan_check_lanes(even_row + col0, n * sizeof(uint16_t), false);
      if (has_odd) {
        asan_check_lanes(even_row + row_stride + col0, n * sizeof(uint16_t), false);
      }
      const __m512i even = _mm512_maskz_loadu_epi16(live, even_row + col0);
      const __m512i odd =
          has_odd ? _mm512_maskz_loadu_epi16(live, even_row + row_stride + col0)
                  : _mm512_setzero_si512();
      uint32_t* out = dst + c * panel_stride + p * kPanelCols;
      _mm512_storeu_si512(out, _mm512_permutex2var_epi16(even, low, odd));
      _mm512_storeu_si512(out + kLanes, _mm512_permutex2var_epi16(even, high, odd));
    }
  }
}
#endif  // FUSEDLSTM_BF16_DOT

// The cache lines of n floats from p.
inline void prefetch_floats(const float* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i), _MM_HINT_T0);
  }
  _mm_prefetch(reinterpret_cast<const char*>(p + n - 1), _MM_HINT_T0);
}

// Rows [from, B) are not in this step; they keep their state.
inline void carry_rows(const float* src, float* dst, int64_t width, int64_t from,
                int64_t B, int64_t col, int64_t n) {
  for (int64_t b = from; b < B; ++b) {
    std::memcpy(dst + b * width + col, src + b * width + col,
                n * sizeof(float));
  }
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
