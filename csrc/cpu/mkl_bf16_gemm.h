// bfloat16 x bfloat16 -> float GEMM from the Intel MKL inside PyTorch's own
// binary, where there is one, for the input projection of bfloat16 layers
// and, from kMklWeightGradientMinRows rows, their weight gradients.
//
// Why: on CPUs with AMX, MKL's routine ran the projection of a C3 chunk
// ([512 x 512] x [512 x 2048]) at ~18 ns per tile product against ~25 ns for
// our tiles (recurrence_amx.h), whose 2 x 2 blocking waits on a tile load
// for every product; oneDNN's own matmul is faster still but rounds its
// result to bfloat16, and PyTorch exports no bfloat16 -> float route to it
// (NOTES change 36). MKL sums each output over k in order, as our tiles do,
// so on AMX the two give the same bits; elsewhere only the order of the
// float additions could differ (every product is exact either way).
//
// PyTorch links MKL statically on x86-64 Linux and exports its symbols; the
// routine is looked up at run time (torch_cpu_symbol), checked once on a small product,
// and where it is missing or wrong the caller keeps its own tiles.
#pragma once

#include <cstdint>

namespace fusedlstm::cpu {

// Whether mkl_bf16_gemm_nt runs here: MKL's gemm_bf16bf16f32 found and
// correct, AMX tiles in use (amx_tiles_available: the CPUs it was measured
// on), and FUSEDLSTM_CPU_MKL_BF16 not 0 (read once; auto is the default, 1
// raises where it cannot run).
bool mkl_bf16_gemm_available();

// out[r][c] = sum over k < depth of x[r][k] * w[c][k], for r < rows and
// c < cols, in float (each product exact), overwriting out.
//   x:   [rows, depth] bfloat16 bits, rows ldx elements apart
//   w:   [cols, depth] bfloat16 bits, rows ldw elements apart (W_ih: [4H, I])
//   out: [rows, cols] floats, rows ldo apart
// Only where mkl_bf16_gemm_available().
void mkl_bf16_gemm_nt(const uint16_t* x, int64_t ldx, const uint16_t* w,
                      int64_t ldw, float* out, int64_t ldo, int64_t rows,
                      int64_t cols, int64_t depth);

// out[r][c] = sum over k < depth of a[k][r] * b[k][c], in float, overwriting
// out: a product of two operands that share their rows, such as a weight
// gradient dG^T x, with dG read as it lies (no transposed copy).
//   a:   [depth, rows] bfloat16 bits, rows lda elements apart (dG: [N, 4H])
//   b:   [depth, cols] bfloat16 bits, rows ldb elements apart (x: [N, I])
//   out: [rows, cols] floats, rows ldo apart (dW_ih: [4H, I])
// Only where mkl_bf16_gemm_available().
void mkl_bf16_gemm_tn(const uint16_t* a, int64_t lda, const uint16_t* b,
                      int64_t ldb, float* out, int64_t ldo, int64_t rows,
                      int64_t cols, int64_t depth);

// The fewest rows of an inference chunk whose projection MKL runs: MKL ran
// 25600 x 1024 by 1024 x 4096 at 706 GMAC/s in calls of 512 rows against
// 563 in calls of 256 (two threads, Xeon with AMX), and G5's bfloat16
// inference (H = 1024, where a 4 MiB gates buffer holds 256 rows) took
// 0.88-0.89 of the time with chunks of 512 (NOTES change 87).
constexpr int64_t kMklProjectionMinRows = 512;

// The fewest rows (N) from which a bfloat16 layer's weight gradients go
// through mkl_bf16_gemm_tn and one rounding pass, not oneDNN's bfloat16
// matmul on dG^T: oneDNN reads a transposed left operand at under half its
// rate. Over 4H x I of 512 x 128 to 4096 x 1024, MKL plus the rounding took
// 0.60-0.98 of oneDNN's time from 1024 rows on, but up to 2.4x at 64-256
// rows with the larger weights, whose float result and rounding outweigh
// the short sums (Xeon with AMX, one and two threads; NOTES change 86).
constexpr int64_t kMklWeightGradientMinRows = 1024;

}  // namespace fusedlstm::cpu
