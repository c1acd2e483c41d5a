// Whether this build has the bfloat16 dot-product recurrence
// (recurrence_forward_avx512bf16.cpp): x86-64 with a compiler that knows
// AVX-512 BF16 (GCC 10+, Clang). Without it, bfloat16 layers run the float
// recurrence everywhere.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && \
    (defined(__clang__) || __GNUC__ >= 10)
#define FUSEDLSTM_BUILD_BF16_DOT 1
#endif
