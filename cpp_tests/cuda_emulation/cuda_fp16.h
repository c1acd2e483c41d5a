// Host stand-in for <cuda_fp16.h> (see prelude.h): the conversions the
// persistent kernels use, through c10::Half (round to nearest even).
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

struct __half {
  uint16_t bits;
};
inline __half __ushort_as_half(unsigned short v) { return {v}; }
inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline float __half2float(__half h) {
  return static_cast<float>(c10::Half(h.bits, c10::Half::from_bits()));
}
inline __half __float2half_rn(float v) { return {c10::Half(v).x}; }
