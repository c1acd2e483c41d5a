// The input projection of a bfloat16 layer (x W_ih^T for every row) in the
// bfloat16 dot products of the bfloat16-dot build: on AMX tiles where they
// run, else AVX-512 BF16. Included after recurrence_forward_impl.h by
// recurrence_forward_avx512bf16.cpp, whose target header comes first.
#pragma once

#include "cpu/recurrence_forward_impl.h"

#if defined(FUSEDLSTM_BF16_DOT)
namespace fusedlstm::cpu::FUSEDLSTM_ISA {

// x and W_ih are bfloat16 values, so every product is exact and only the
// order of the float sums differs from the float GEMM on the widened values.

namespace {

// Task t of the input projection's (unit block, chunk of rows) pairs,
// block-major (see input_projection).
struct ProjectionTask {
  ProjectionTask(int64_t t, int64_t chunks, int64_t rows_per_chunk,
                 int64_t rows, int64_t H)
      : block(t / chunks),
        first((t % chunks) * rows_per_chunk),
        count(std::min(rows_per_chunk, rows - first)),
        unit(block * kLanes),
        units(std::min(kLanes, H - unit)) {}
  int64_t block, first, count;
  int64_t unit, units;  // the block's first unit, and how many exist
};

// Pairs of k in a block of the packed W_ih: on AMX padded to whole tile steps.
int64_t input_depth(int64_t I) {
  const int64_t pairs = (I + 1) / 2;
  return amx_tiles_available() ? amx_depth(pairs) : pairs;
}

}  // namespace

int64_t input_row_stride(int64_t I) { return 2 * input_depth(I); }

const uint32_t* pack_input_weights(const uint16_t* w_ih, int64_t H, int64_t I) {
  const int64_t blocks = ceil_div(H, kLanes), depth = input_depth(I);
  const int64_t pairs = (I + 1) / 2;
  uint32_t* dst = workspace<uint32_t>(WorkspaceRole::kInputWeights,
                                      blocks * depth * kUnitCols);
  at::parallel_for(0, blocks, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> scratch(std::max<int64_t>(I, 1) * kUnitCols);
    for (int64_t u = u0; u < u1; ++u) {
      uint32_t* block = dst + u * depth * kUnitCols;
      pack_unit_block_pairs(w_ih, H, I, u, scratch.data(), block);
      std::memset(block + pairs * kUnitCols, 0,
                  (depth - pairs) * kUnitCols * sizeof(uint32_t));
    }
  });
  return dst;
}

namespace {

// Rows [r0, r0 + R) of one unit block: out[r][q*H + j + l] for l < n.
template <int R>
void project_rows(const uint32_t* block, int64_t depth, const uint16_t* x,
                  int64_t ldx, int64_t H, int64_t j, int64_t n, float* out,
                  int64_t r0) {
  Reg acc[R][4];
  start_tile<R, 4>(true, nullptr, acc);
  tile_product_bf16<R, 4>(x + r0 * ldx, ldx, block, 0, depth, acc, nullptr);
  for (int r = 0; r < R; ++r) {
    float* row = out + (r0 + r) * 4 * H + j;
    for (int q = 0; q < 4; ++q) store(V(acc[r][q]), row + q * H, n);
  }
}

// input_projection on AMX tiles: 32 rows of x at a time (a last, partial
// tile copied into zero rows first: a tile reads 16 whole rows), the same
// block-major split of (unit block, chunk of rows) tasks.
void amx_input_projection(const uint32_t* weights, int64_t depth,
                          const uint16_t* x, int64_t rows, int64_t ldx,
                          int64_t H, float* out) {
  const int64_t blocks = ceil_div(H, kLanes);
  constexpr int64_t kRowsPerChunk = 12 * kAmxRows;
  const int64_t chunks = ceil_div(rows, kRowsPerChunk);
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<float> tile_out(2 * kAmxRows * kUnitCols);
    std::vector<uint16_t> tail;
    amx_configure();
    for (int64_t t = t0; t < t1; ++t) {
      const ProjectionTask task(t, chunks, kRowsPerChunk, rows, H);
      const int64_t first = task.first, count = task.count, j = task.unit, n = task.units;
      const uint32_t* block = weights + task.block * depth * kUnitCols;
      for (int64_t r0 = 0; r0 < count; r0 += 2 * kAmxRows) {
        const int64_t tile_rows = std::min(2 * kAmxRows, count - r0);
        const int64_t tiles = tile_rows > kAmxRows ? 2 : 1;
        const uint16_t* a = x + (first + r0) * ldx;
        if (tile_rows < tiles * kAmxRows) {
          tail.assign(tiles * kAmxRows * ldx, 0);
          std::memcpy(tail.data(), a, tile_rows * ldx * sizeof(uint16_t));
          a = tail.data();
        }
        if (tiles == 2) {
          amx_block_product_x2(a, ldx, block, depth, tile_out.data());
        } else {
          amx_block_product(a, ldx, block, depth, tile_out.data());
        }
        for (int64_t r = 0; r < tile_rows; ++r) {
          float* row = out + (first + r0 + r) * 4 * H + j;
          for (int q = 0; q < 4; ++q) {
            store(V(reg_load(tile_out.data() + r * kUnitCols + q * kLanes)),
                  row + q * H, n);
          }
        }
      }
    }
    amx_release();
  });
}

}  // namespace

void input_projection(const uint32_t* packed, const uint16_t* x,
                      int64_t rows, int64_t ldx, int64_t H, int64_t I,
                      float* out) {
  const int64_t blocks = ceil_div(H, kLanes), depth = input_depth(I);
  const uint32_t* weights = packed;
  if (amx_tiles_available()) {
    amx_input_projection(weights, depth, x, rows, ldx, H, out);
    return;
  }
  // Tasks are (unit block, chunk of rows) pairs, block-major: a thread's
  // contiguous share of them is whole blocks where the threads divide the
  // blocks, so the shares do equal work. (Chunk-major, the short last chunk
  // left the first of two threads up to half as much work again as the
  // second: perf, batch 8.) A block's packed weights stay in cache over its
  // chunks; x streams, a few GB/s at the tiles' rate.
  constexpr int64_t kRowsPerChunk = 32 * kForwardRows;
  const int64_t chunks = ceil_div(rows, kRowsPerChunk);
  at::parallel_for(0, blocks * chunks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const ProjectionTask task(t, chunks, kRowsPerChunk, rows, H);
      const int64_t first = task.first, count = task.count, j = task.unit, n = task.units;
      const uint32_t* block = weights + task.block * depth * kUnitCols;
      const uint16_t* xs = x + first * ldx;
      float* os = out + first * 4 * H;
      int64_t r = 0;
      for (; r + kForwardRows <= count; r += kForwardRows) {
        project_rows<kForwardRows>(block, depth, xs, ldx, H, j, n, os, r);
      }
      switch (count - r) {
        case 5: project_rows<5>(block, depth, xs, ldx, H, j, n, os, r); break;
        case 4: project_rows<4>(block, depth, xs, ldx, H, j, n, os, r); break;
        case 3: project_rows<3>(block, depth, xs, ldx, H, j, n, os, r); break;
        case 2: project_rows<2>(block, depth, xs, ldx, H, j, n, os, r); break;
        case 1: project_rows<1>(block, depth, xs, ldx, H, j, n, os, r); break;
        default: break;
      }
    }
  });
}

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
#endif  // FUSEDLSTM_BF16_DOT
