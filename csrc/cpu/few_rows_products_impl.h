// The backward's products for a call of few rows (few_rows_backward in
// recurrence.h: at most 32 rows, W_ih and W_hh of at most 4 MiB each) on
// the tiles of few_rows_tiles.h, written once for the ISA of the including
// file (few_rows_products_avx2.cpp, few_rows_products_avx512.cpp, which
// include their target header first), and for bfloat16 operands in the
// bfloat16 dot-product build (few_rows_products_avx512bf16.cpp).
//
// Why not the GEMM: at these sizes a oneDNN call's primitive setup,
// scratchpad and packing of W cost more than the arithmetic (an LSTMCell
// backward at H = 128, batch 8: 136 us with the three GEMM calls, 89
// without; NOTES change 76).
#pragma once

#include "cpu/few_rows_tiles.h"

namespace fusedlstm::cpu::FUSEDLSTM_ISA {
namespace {

template <typename Coef, typename Row>
void product(const Coef* a, int64_t N, int64_t J, const Row* w, int64_t C, float* out) {
  // Workers take column strips.
  over_blocks(ceil_div(C, kTileCols), 2 * N * J * C, [&](int64_t b0, int64_t b1) {
    product_columns(a, N, J, w, C, b0 * kTileCols, std::min(C, b1 * kTileCols), out);
  });
}

template <typename Coef, typename Row, typename Out>
void weight_gradient(const Coef* a, int64_t N, int64_t J, const Row* b, int64_t C,
                     Out* out) {
  // Workers take row tiles, each written whole, row after row: b (N <= 64
  // rows) stays in the caches.
  over_blocks(ceil_div(J, kTileRows), 2 * N * J * C, [&](int64_t t0, int64_t t1) {
    const int64_t r0 = t0 * kTileRows, r1 = std::min(J, t1 * kTileRows);
    for (int64_t r = r0; r < r1; r += kTileRows) {
      const int64_t r_end = std::min(r1, r + kTileRows);
      for (int64_t c0 = 0; c0 < C; c0 += kTileCols) {
        broadcast_rows(a, 1, J, b, C, N, c0, std::min(kTileCols, C - c0), out, C,
                       r, r_end, /*accumulate=*/false);
      }
    }
  });
}

}  // namespace

#if defined(FUSEDLSTM_BF16_DOT)
void few_rows_product_bf16(const uint16_t* a, int64_t N, int64_t J, const uint16_t* w,
                           int64_t C, float* out) {
  product(a, N, J, w, C, out);
}

void few_rows_weight_gradient_bf16(const uint16_t* a, int64_t N, int64_t J,
                                   const uint16_t* b, int64_t C, uint16_t* out) {
  weight_gradient(a, N, J, b, C, out);
}
#else
void few_rows_product(const float* a, int64_t N, int64_t J, const float* w,
                      int64_t C, float* out) {
  product(a, N, J, w, C, out);
}

void few_rows_weight_gradient(const float* a, int64_t N, int64_t J,
                              const float* b, int64_t C, float* out) {
  weight_gradient(a, N, J, b, C, out);
}
#endif

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
