// The fused backward recurrence with bfloat16 dot products (AVX-512 BF16) for
// bfloat16 layers without a projection (recurrence_backward_impl.h under
// FUSEDLSTM_BF16_DOT): the gate gradients are rounded to bfloat16 as they are
// stored, and dh_{t-1} = dG_t W_hh runs at twice the float rate with float
// accumulation. oneDNN's bfloat16 LSTM backward rounds its gate gradients the
// same way, and nn.LSTM's native path computes them in bfloat16.
// recurrence_select.cpp calls it only on CPUs with AVX-512 BF16.
#include "cpu/bf16_dot_build.h"  // only macros: before the target header
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
#include "cpu/avx512bf16_target.h"  // first: see there
#include "cpu/recurrence_backward_impl.h"
#endif
