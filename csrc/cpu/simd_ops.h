// The register operations of the fused CPU recurrence for the ISA of the
// including file: AVX2 (8 float lanes) or AVX-512 (16), chosen by the target
// header included first (avx2_target.h or avx512_target.h), which also names
// the namespace (FUSEDLSTM_ISA). The tiles, the packing and the workers above
// are written once against these (and the cell's math against at::vec, whose
// width follows the same target), and compiled once per ISA.
#pragma once

#include <ATen/cpu/vec/vec.h>
#include <immintrin.h>

#include <cstdint>

#ifndef FUSEDLSTM_ISA
#error "include avx2_target.h or avx512_target.h first"
#endif

namespace fusedlstm::cpu::FUSEDLSTM_ISA {

using V = at::vec::Vectorized<float>;

#if defined(FUSEDLSTM_ISA_AVX512)

using Reg = __m512;
constexpr int64_t kLanes = 16;
// Rows of the forward's unit tile: 6 x 4 accumulators of the 32 registers.
constexpr int64_t kForwardRows = 6;
inline Reg reg_zero() { return _mm512_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm512_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm512_add_ps(a, b); }

#else  // AVX2

using Reg = __m256;
constexpr int64_t kLanes = 8;
// Rows of the forward's unit tile: 3 x 4 accumulators of the 16 registers.
constexpr int64_t kForwardRows = 3;
inline Reg reg_zero() { return _mm256_setzero_ps(); }
inline Reg reg_load(const float* p) { return _mm256_loadu_ps(p); }
inline void reg_store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
inline Reg reg_broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Reg reg_fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
inline Reg reg_add(Reg a, Reg b) { return _mm256_add_ps(a, b); }

#endif

// Contraction per chunk of the tiles. AVX2: a unit block's chunk of W_hh
// (8 KiB) and the rows' chunk of h (16 KiB at 64 rows) fit in L1 together.
// AVX-512: the block's chunk is 64 KiB, past Zen 5's 48 KiB L1, yet chunks of
// 64 (16 KiB, in L1) were no faster: ratio minima to nn.LSTM over two
// alternating builds each, 64 against 256, C2 inference 1.15/1.15 vs
// 1.02/1.18, C3 1.02/0.99 vs 1.05/0.97, C4 1.05/1.03 vs 1.01/1.00 (NOTES
// change 10). Zen 5's L2 keeps up with the tile.
constexpr int64_t kChunk = 256;

static_assert(V::size() == kLanes, "at::vec width differs from the target's");

}  // namespace fusedlstm::cpu::FUSEDLSTM_ISA
