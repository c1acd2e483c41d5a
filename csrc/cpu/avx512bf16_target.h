// Compiles the rest of the including file for AVX-512 with AVX-512 BF16, in
// namespace avx512bf16, with the recurrence headers' bfloat16 dot products
// on (FUSEDLSTM_BF16_DOT). Included first, and only where bf16_dot_build.h
// defines FUSEDLSTM_BUILD_BF16_DOT (a compiler that knows the instructions);
// for files that run on CPUs checked to have them (recurrence_select.cpp).
#pragma once

#include "cpu/avx512_target.h"
#pragma GCC target("avx512bf16")
#undef FUSEDLSTM_ISA
#define FUSEDLSTM_ISA avx512bf16
#define FUSEDLSTM_BF16_DOT 1
