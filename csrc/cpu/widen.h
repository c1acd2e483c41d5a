// Widening of reduced floating types (bfloat16, half) to float for the CPU
// kernels, which compute in float or double only.
#pragma once

#include <ATen/ATen.h>

#include "cpu/fresh_buffer.h"

namespace fusedlstm::cpu {

struct Widen {
  at::ScalarType compute;

  explicit Widen(at::ScalarType dtype)
      : compute(dtype == at::kDouble ? at::kDouble : at::kFloat) {}

  // t in the compute type (t itself where no conversion is needed; a
  // conversion's buffer, often the size of a whole sequence, is advised for
  // huge pages by converted_fresh).
  at::Tensor operator()(const at::Tensor& t) const {
    return converted_fresh(t, compute);
  }

  // A contiguous copy in the compute type that the caller may overwrite.
  // empty + copy_ is what Tensor.to(copy=true) runs, without its two
  // dispatcher layers (a tenth of a one-step call at H = 64).
  at::Tensor owned(const at::Tensor& t) const {
    at::Tensor copy = at::empty(t.sizes(), t.options().dtype(compute));
    copy.copy_(t);
    return copy;
  }
};

// The bits of a contiguous bfloat16 tensor, for kernels that take them as
// uint16_t (the bfloat16 dot products).
inline const uint16_t* bf16_bits(const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous(),
              "fusedlstm: expected a contiguous bfloat16 tensor");
  return reinterpret_cast<const uint16_t*>(t.const_data_ptr<at::BFloat16>());
}

inline uint16_t* mutable_bf16_bits(at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 && t.is_contiguous(),
              "fusedlstm: expected a contiguous bfloat16 tensor");
  return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>());
}

}  // namespace fusedlstm::cpu
