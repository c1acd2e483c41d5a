// Compiles the rest of the including file for AVX-512 (F, BW, DQ, VL, the set
// that at::vec's 512-bit specialisations use) with FMA; the counterpart of
// avx2_target.h, included first for the same reasons. Only for files that
// run on CPUs checked to have AVX-512F (recurrence_select.cpp).
#pragma once

#include "cpu/isa_prelude.h"  // before the pragma: see there

#pragma GCC target("avx,avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl")
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
// The namespace of the ISA-generic recurrence headers (simd_ops.h).
#define FUSEDLSTM_ISA avx512
#define FUSEDLSTM_ISA_AVX512 1
