// Host stand-in for c10/cuda/CUDAGuard.h (see prelude.h): the emulated
// device is the host, so there is no current device to switch.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace c10::cuda
