// The backward's products for calls of few rows compiled for AVX2 and FMA
// (few_rows_products_impl.h); recurrence_select.cpp calls it only on CPUs
// that have it.
#if defined(__x86_64__) && defined(__GNUC__)
#include "cpu/avx2_target.h"  // first: see there
#include "cpu/few_rows_products_impl.h"
#endif
