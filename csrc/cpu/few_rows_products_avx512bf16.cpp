// The backward's products for calls of few rows of a bfloat16 layer with
// bfloat16 dot products (few_rows_products_impl.h under FUSEDLSTM_BF16_DOT):
// bfloat16 operands widened to float as they are loaded, float sums, a
// bfloat16 result rounded once. recurrence_select.cpp calls it only on CPUs
// with AVX-512 BF16.
#include "cpu/bf16_dot_build.h"  // only macros: before the target header
#if defined(FUSEDLSTM_BUILD_BF16_DOT)
#include "cpu/avx512bf16_target.h"  // first: see there
#include "cpu/few_rows_products_impl.h"
#endif
