// Host stand-in for <c10/cuda/CUDAException.h> (see prelude.h).
#pragma once

#include <c10/util/Exception.h>

#define C10_CUDA_CHECK(expr)                                            \
  do {                                                                  \
    const cudaError_t emu_err_ = (expr);                                \
    TORCH_CHECK(emu_err_ == cudaSuccess, "emulated CUDA call failed: ", \
                #expr);                                                 \
  } while (0)
