// The fused float32 recurrence of one layer-direction, for x86-64 CPUs with
// AVX2 and FMA, in 8-lane registers, or AVX-512F, in 16-lane ones: written
// once (recurrence_forward_impl.h, recurrence_backward_impl.h; register tiles
// in recurrence_tiles.h) and compiled per ISA (recurrence_*_avx2.cpp,
// recurrence_*_avx512.cpp). A CPU with AVX-512F runs the latter.
//
// Per step, each worker owns a slice of hidden units with all four gates of
// each, computes h_{t-1} W_hh^T for that slice from a W_hh it packed itself
// (so its slice stays in its own cache for the whole sequence), and applies
// the cell in registers before anything is stored. The workers then meet once
// (step_sync.h); with a projection, they then split h_t = W_hr m_t by columns
// and meet again. Backward meets twice per step: the cell backward owns hidden
// units (with a projection, it first computes dm = dh_t W_hr for its units in
// registers), the product with W_hh owns columns of dh_{t-1} (with a
// projection, it also adds grad_output to them for the next step's dh_t).
//
// Every output element is computed by one worker in a fixed order, so results
// do not depend on the number of threads or on scheduling.
#pragma once

#include <ATen/core/ScalarType.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>

#include "common/layer_args.h"

namespace fusedlstm::cpu {

// Shapes: N rows (the schedule's), B sequences, H hidden units, P the state
// size (proj_size, or H); every buffer row-major and contiguous.
struct RecurrentForward {
  const StepSchedule* schedule;
  bool reverse;
  int64_t hidden;        // H
  int64_t state;         // P
  const float* w_hh;     // [4H, P]
  const float* w_hr;     // [P, H], or nullptr without a projection
  const float* bias;     // [4H]    b_ih + b_hh (zeros without bias)
  float* gates;          // [N, 4H] in: x W_ih^T; out: activated i, f, g, o
                         //   (with `project`: the chunk's rows, not N)
  float* cells;          // [N, H]  out: c_t; nullptr: neither c_t nor the
                         //   activated gates are kept (inference)
  float* output;         // [N, P]  out: h_t (unused where output16 is set)
  float* h_state;        // [B, P]  in: h0, out: h_n
  float* c_state;        // [B, H]  in: c0, out: c_n
  // Inference: the recurrence runs in chunks of `chunk_steps` steps and,
  // before each, calls project(first_row, rows) to write x W_ih^T of the
  // chunk's rows [first_row, first_row + rows) into `gates` from its row 0.
  const std::function<void(int64_t, int64_t)>* project = nullptr;
  int64_t chunk_steps = 0;
  // Steps that run the input product too (`gates` then starts at zero):
  // x_{t} W_ih^T is summed in the same registers as h_{t-1} W_hh^T, as dot
  // products over W_ih's rows as they lie, so no GEMM call and no packing
  // (input_in_steps says where). nullptr: `gates` holds x W_ih^T.
  const float* x = nullptr;     // [N, I]
  const float* w_ih = nullptr;  // [4H, I]
  int64_t input = 0;            // I
  // The same with bf16_dot, instead of x and w_ih: the layer's bfloat16
  // values as bits, multiplied in bfloat16 dot products.
  const uint16_t* x16 = nullptr;     // [N, I]
  const uint16_t* w_ih16 = nullptr;  // [4H, I]
  // Run the recurrent product in bfloat16 dot products on h_{t-1} rounded to
  // bfloat16: set by the caller to bf16_recurrent_product(layer dtype,
  // has_proj), for a bfloat16 layer whose widened values are passed here,
  // except W_hh: w_hh16 ([4H, P], the layer's bfloat16 values as bits), and
  // w_hh unused.
  bool bf16_dot = false;
  const uint16_t* w_hh16 = nullptr;
  // With bf16_dot: [N, P] bfloat16 bits, h_t rounded to bfloat16 (the value
  // the next step multiplies), written instead of `output`. A float output
  // would cost twice the fresh pages and a conversion pass afterwards.
  uint16_t* output16 = nullptr;
};

struct RecurrentBackward {
  const StepSchedule* schedule;
  bool reverse;            // the layer's direction (backward runs it the other way)
  int64_t hidden;          // H
  int64_t state;           // P
  const float* w_hh;       // [4H, P]
  const float* w_hr;       // [P, H], or nullptr without a projection
  const float* grad_output;  // [N, P]
  const float* gates;      // [N, 4H] activated gates saved by forward
  const float* cells;      // [N, H]  c_t
  const float* c_prev;     // [N, H]  c_{t-1} of each row
  float* dgates;           // [N, 4H] out: gradient of the preactivations
  float* grad_h_all;       // [N, P]  out: gradient reaching h_t, for dW_hr
                           //         (with a projection; else nullptr)
  float* dh_state;         // [B, P]  in: grad of h_n, out: grad of h0
  float* dc_state;         // [B, H]  in: grad of c_n, out: grad of c0
  // bfloat16 dot products (set as RecurrentForward::bf16_dot is): the gate
  // gradients go, rounded to bfloat16, to dgates16 ([N, 4H]) instead of
  // dgates, and dh_{t-1} = dG_t W_hh takes them in bfloat16 dot products with
  // W_hh from w_hh16 ([4H, P] bfloat16 bits; w_hh unused).
  bool bf16_dot = false;
  uint16_t* dgates16 = nullptr;
  const uint16_t* w_hh16 = nullptr;
};

// The instruction set the fused recurrence uses on this CPU: "avx512",
// "avx2", or "" where it cannot run (not x86-64, or no AVX2+FMA), and only
// AVX2 when FUSEDLSTM_CPU_RECURRENCE=avx2.
const char* fused_recurrence_isa();

// Whether a layer of `dtype` runs its forward recurrent product in bfloat16
// dot products: bfloat16, no projection, the fused AVX-512 recurrence, a CPU
// with AVX-512 BF16, and FUSEDLSTM_CPU_RECURRENCE not `avx512` (which keeps
// the float product, for comparison). h_{t-1} then enters the product rounded
// to bfloat16, so backward takes dW_hh from the rounded outputs.
bool bf16_recurrent_product(at::ScalarType dtype, bool has_proj);

// Whether those bfloat16 dot products run on AMX tiles (recurrence_amx.h):
// a CPU with AMX-BF16 that Linux lets this process use, unless
// FUSEDLSTM_CPU_AMX=0 (read once; =1 raises where AMX cannot run).
bool amx_tiles_available();

// True when this CPU runs a fused recurrence (x86-64 builds only).
bool fused_recurrence_supported();

// Whether a layer computing in `compute` runs the fused recurrence: float, a
// supported CPU, and not switched off with the environment variable
// FUSEDLSTM_CPU_RECURRENCE=blas (read once; `auto` is the default, `avx2`
// keeps AVX2 on an AVX-512 CPU; for comparisons, as every path computes the
// same function to float rounding). Every layer shape has a fused forward and
// backward, so nothing else enters.
bool use_fused_recurrence(at::ScalarType compute);

// Whether a call of `steps` steps over `batch` rows that computes in float
// (or in bfloat16 dot products), with the fused recurrence, runs its input
// product inside the recurrence (RecurrentForward::x, x16): one step of at most
// kOneStepInputMaxBatch rows does. A GEMM call's setup (oneDNN's
// primitive, W_ih's packing) cost more than the whole product there: an
// LSTMCell step at H = 128, batch 8 took 70 us with it and 41 without (one
// thread, Zen 4). Past 64 rows the GEMM's packed panels win (at 128 rows,
// 1.0-1.1x faster for H = 128-1024; NOTES change 73).
//
// A call of a few steps whose rows (steps x batch) are at most kDirectMaxRows
// takes it too where the steps read at most 16 MiB of W_ih between them
// (steps x `w_ih_elements`, W_ih being [4H, I] float): its W_hh product
// already runs direct, reading W_hh as it lies each step, and reading W_ih
// the same way costs less than a GEMM call while it comes from the caches.
// Inference, Zen 4, 1 and 2 threads (NOTES change 74): H = I = 128 at 4
// steps of batch 1 took 61 and 52 us against 106 and 99; at 512 (W_ih 4
// MiB), 8 steps took 946 and 480 against 828 and 454.
bool input_in_steps(int64_t steps, int64_t batch, int64_t w_ih_elements);
constexpr int64_t kOneStepInputMaxBatch = 64;
constexpr int64_t kStepsInputMaxReads = int64_t{1} << 22;  // elements
// The most rows (steps x batch) of a call whose W_hh product runs direct,
// without packing (plan_forward in recurrence_forward_impl.h).
constexpr int64_t kDirectMaxRows = 8;

// Whether the backward recurrence of a call of `rows` rows (N, without a
// projection) reads W_hh as it lies for dh_{t-1} = dG_t W_hh instead of
// packing it first: at most kDirectBackwardMaxRows, and with bfloat16 dot
// products only from kDirectBackwardBf16MinHidden, below which the packed
// pairs' vdpbf16ps (twice the rate of the widened FMAs) repay the packing
// even for one step. Layer backward, one thread, Zen 4, µs direct / packed
// (NOTES change 79): float32 128 x 8 rows 86 / 92, 512 x 8 1380 / 1729,
// 1024 x 2 5632 / 6416; bfloat16 128 x 8 87 / 84, 256 x 8 234 / 224,
// 512 x 4 430 / 480, 1024 x 2 3704 / 3945. Past 8 rows the panels come
// back: 32 steps of one row at H = 1024 took 26.6 against 20.5 ms direct.
bool backward_reads_w_hh_directly(int64_t rows, int64_t hidden, bool bf16_dot);
constexpr int64_t kDirectBackwardMaxRows = 8;
constexpr int64_t kDirectBackwardBf16MinHidden = 512;

// The fused recurrence in fused_recurrence_isa()'s instruction set.
void recurrent_forward_fused(const RecurrentForward& args);
void recurrent_backward_fused(const RecurrentBackward& args);

// Whether the backward of a call of `rows` rows (N) takes the products below
// instead of GEMM calls: at most kFewRowsBackwardMaxRows rows, W_ih and W_hh
// of at most kFewRowsBackwardMaxWeights elements each, and the fused
// recurrence (NOTES change 76).
bool few_rows_backward(int64_t rows, int64_t w_ih_elements, int64_t w_hh_elements);
constexpr int64_t kFewRowsBackwardMaxRows = 32;
constexpr int64_t kFewRowsBackwardMaxWeights = int64_t{1} << 20;
// A bfloat16 layer with bfloat16 dot products takes them within the same
// bounds, and only while rows x the larger weight's elements is at most
// kFewRowsBf16MaxProducts: oneDNN's bfloat16 GEMM runs at twice the float
// rate (vdpbf16ps) against these tiles' float FMAs, and wins once its setup
// is paid for (one thread, Zen 4, backward µs tiles / GEMM: 128 x 8 rows
// 87 / 130, 256 x 1 126 / 172, 128 x 16 125 / 149, 512 x 1 448 / 454,
// 256 x 8 244 / 223, 512 x 8 919 / 657; NOTES change 78).
bool few_rows_backward_bf16(int64_t rows, int64_t w_ih_elements, int64_t w_hh_elements);
constexpr int64_t kFewRowsBf16MaxProducts = int64_t{1} << 20;

// The backward's products for a call of few rows (few_rows_backward), in the
// fused recurrence's instruction set (few_rows_products_impl.h), all
// row-major and contiguous:
//   few_rows_product:         out [N, C] = a [N, J] . w [J, C]
//   few_rows_weight_gradient: out [J, C] = a [N, J]^T . b [N, C]
// (dX = dG W_ih, and dW = dG^T x, dG^T h_{t-1}, with J = 4H).
void few_rows_product(const float* a, int64_t N, int64_t J, const float* w,
                      int64_t C, float* out);
void few_rows_weight_gradient(const float* a, int64_t N, int64_t J,
                              const float* b, int64_t C, float* out);
// The same for a bfloat16 layer with bfloat16 dot products
// (bf16_recurrent_product): operands in bfloat16 (bits), float sums;
// few_rows_weight_gradient_bf16's result rounded once to bfloat16, to
// nearest even, as at::mm's is (NOTES change 78).
void few_rows_product_bf16(const uint16_t* a, int64_t N, int64_t J, const uint16_t* w,
                           int64_t C, float* out);
void few_rows_weight_gradient_bf16(const uint16_t* a, int64_t N, int64_t J,
                                   const uint16_t* b, int64_t C, uint16_t* out);

// Per ISA (defined only in x86-64 builds).
namespace avx2 {
void recurrent_forward(const RecurrentForward& args);
void recurrent_backward(const RecurrentBackward& args);
void few_rows_product(const float* a, int64_t N, int64_t J, const float* w,
                      int64_t C, float* out);
void few_rows_weight_gradient(const float* a, int64_t N, int64_t J,
                              const float* b, int64_t C, float* out);
}  // namespace avx2
namespace avx512 {
void recurrent_forward(const RecurrentForward& args);
void recurrent_backward(const RecurrentBackward& args);
void few_rows_product(const float* a, int64_t N, int64_t J, const float* w,
                      int64_t C, float* out);
void few_rows_weight_gradient(const float* a, int64_t N, int64_t J,
                              const float* b, int64_t C, float* out);
}  // namespace avx512
namespace avx512bf16 {
void recurrent_forward(const RecurrentForward& args);
void recurrent_backward(const RecurrentBackward& args);
// W_ih [4H, I] (bfloat16 bits) as bfloat16 pairs by unit block.
// Returns a workspace (cpu/workspace.h: kInputWeights) of the calling thread.
const uint32_t* pack_input_weights(const uint16_t* w_ih, int64_t H, int64_t I);
// The row stride input_projection needs for x (its columns past I zero):
// I rounded up to pairs, or to whole AMX tile steps.
int64_t input_row_stride(int64_t I);
// out[r] (row stride 4H) = x[r] . W_ih^T for r < rows, in bfloat16 dot
// products. x: bfloat16 rows of stride input_row_stride(I), zero past I;
// packed: pack_input_weights's.
void input_projection(const uint32_t* packed, const uint16_t* x,
                      int64_t rows, int64_t ldx, int64_t H, int64_t I,
                      float* out);
void few_rows_product_bf16(const uint16_t* a, int64_t N, int64_t J, const uint16_t* w,
                           int64_t C, float* out);
void few_rows_weight_gradient_bf16(const uint16_t* a, int64_t N, int64_t J,
                                   const uint16_t* b, int64_t C, uint16_t* out);
}  // namespace avx512bf16

}  // namespace fusedlstm::cpu
