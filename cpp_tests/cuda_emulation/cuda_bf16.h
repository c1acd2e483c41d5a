// Host stand-in for <cuda_bf16.h> (see prelude.h): the conversions the
// persistent kernels use, through c10::BFloat16 (round to nearest even).
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

struct __nv_bfloat16 {
  uint16_t bits;
};
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short v) { return {v}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline float __bfloat162float(__nv_bfloat16 h) {
  return static_cast<float>(c10::BFloat16(h.bits, c10::BFloat16::from_bits()));
}
inline __nv_bfloat16 __float2bfloat16_rn(float v) { return {c10::BFloat16(v).x}; }
