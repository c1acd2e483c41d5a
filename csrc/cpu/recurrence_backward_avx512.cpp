// The fused backward recurrence compiled for AVX-512F (recurrence_backward_impl.h);
// recurrence_select.cpp calls it only on CPUs that have it.
#if defined(__x86_64__) && defined(__GNUC__)
#include "cpu/avx512_target.h"  // first: see there
#include "cpu/recurrence_backward_impl.h"
#endif
