// The fused forward recurrence with bfloat16 dot products (AVX-512 BF16) for
// bfloat16 layers without a projection (recurrence_forward_impl.h under
// FUSEDLSTM_BF16_DOT): W_hh and h_{t-1} in bfloat16, float accumulation, so
// the per-step product runs at twice the float rate. h_{t-1} enters rounded
// to bfloat16, the value the layer outputs, as in oneDNN's bfloat16 LSTM and
// nn.LSTM's native path. recurrence_select.cpp calls it only on CPUs with
// AVX-512 BF16.
#include "cpu/bf16_dot_build.h"  // only macros: before the target header
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
#include "cpu/avx512bf16_target.h"  // first: see there
#include "cpu/recurrence_forward_impl.h"
#include "cpu/input_projection_bf16_impl.h"
#endif
