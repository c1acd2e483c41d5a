// Host stand-in for c10/cuda/CUDAStream.h (see prelude.h): emulated launches
// run to completion in order, as on one stream.
#pragma once

#include <c10/core/Device.h>

#include "cuda_runtime_api.h"

namespace c10::cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
}  // namespace c10::cuda
