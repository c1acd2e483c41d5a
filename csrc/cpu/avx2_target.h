// Compiles the rest of the including file for AVX2 with FMA and F16C.
// setuptools has no per-file flags, so the pragma and the feature macros that
// -mavx2 -mfma would set take their place; include this first, before every
// other header, so that at::vec picks its 256-bit specialisations and sleef.h
// declares its AVX2 functions (which it does only under __AVX2__). Only for
// files that run on CPUs checked to have these features.
#pragma once

#include "cpu/isa_prelude.h"  // before the pragma: see there

#pragma GCC target("avx,avx2,fma,f16c")
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
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
// The namespace of the ISA-generic recurrence headers (simd_ops.h).
#define FUSEDLSTM_ISA avx2
