// bfloat16 x bfloat16 -> float GEMM from the Intel MKL inside PyTorch's own
// binary, where there is one, for the input projection of bfloat16 layers.
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

}  // namespace fusedlstm::cpu
