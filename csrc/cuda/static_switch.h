// Turns runtime flags into template constants, so each kernel variant is
// compiled once ahead of time (in its own small .cu under instantiations/)
// and picked at run time. Modelled on flash-attention's static_switch.h.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>

// BOOL_SWITCH(cond, kName, [&] { ... kName is constexpr here ... });
#define FUSEDLSTM_BOOL_SWITCH(COND, CONST_NAME, ...) \
  [&] {                                              \
    if (COND) {                                      \
      constexpr static bool CONST_NAME = true;       \
      return __VA_ARGS__();                          \
    } else {                                         \
      constexpr static bool CONST_NAME = false;      \
      return __VA_ARGS__();                          \
    }                                                \
  }()

// The element types the persistent kernels are built for. float64 has no
// tensor-core path worth having and always runs the stepwise path; float32
// runs as Tf32 (TF32 tensor cores) when USE_TF32, else as float (exact FMA).
#define FUSEDLSTM_PERSISTENT_TYPE_SWITCH(DTYPE, USE_TF32, TYPE_NAME, ...)     \
  [&] {                                                                      \
    switch (DTYPE) {                                                         \
      case at::kFloat: {                                                     \
        if (USE_TF32) {                                                      \
          using TYPE_NAME = ::fusedlstm::cuda::persistent::Tf32;             \
          return __VA_ARGS__();                                              \
        } else {                                                             \
          using TYPE_NAME = float;                                           \
          return __VA_ARGS__();                                              \
        }                                                                    \
      }                                                                      \
      case at::kHalf: {                                                      \
        using TYPE_NAME = c10::Half;                                         \
        return __VA_ARGS__();                                                \
      }                                                                      \
      case at::kBFloat16: {                                                  \
        using TYPE_NAME = c10::BFloat16;                                     \
        return __VA_ARGS__();                                                \
      }                                                                      \
      default:                                                               \
        TORCH_CHECK(false, "fusedlstm: no persistent kernel for dtype ",     \
                    DTYPE);                                                  \
    }                                                                        \
  }()

// The element types of the cluster kernel, which computes on tensor cores
// only: float32 as Tf32 (choose_cluster refuses float32 without USE_TF32),
// c10::Half, c10::BFloat16.
#define FUSEDLSTM_CLUSTER_TYPE_SWITCH(DTYPE, USE_TF32, TYPE_NAME, ...)       \
  [&] {                                                                      \
    if ((DTYPE) == at::kFloat && (USE_TF32)) {                               \
      using TYPE_NAME = ::fusedlstm::cuda::persistent::Tf32;                 \
      return __VA_ARGS__();                                                  \
    } else if ((DTYPE) == at::kHalf) {                                       \
      using TYPE_NAME = c10::Half;                                           \
      return __VA_ARGS__();                                                  \
    } else {                                                                 \
      TORCH_CHECK((DTYPE) == at::kBFloat16,                                  \
                  "fusedlstm: no cluster kernel for dtype ", DTYPE);         \
      using TYPE_NAME = c10::BFloat16;                                       \
      return __VA_ARGS__();                                                  \
    }                                                                        \
  }()
