#include <torch/library.h>

#include <string>

#include "cpu/bidirectional.h"
#include "cpu/lstm_cpu.h"
#include "cpu/mkl_bf16_gemm.h"
#include "cpu/recurrence.h"
#include "cpu/recycling_allocator.h"
#include "cpu/sequence_gemm.h"

TORCH_LIBRARY_IMPL(fusedlstm, CPU, m) {
  m.impl("lstm_layer_forward", &fusedlstm::cpu::lstm_layer_forward);
  m.impl("lstm_layer_inference", &fusedlstm::cpu::lstm_layer_inference);
  m.impl("lstm_layer_backward", &fusedlstm::cpu::lstm_layer_backward);
  m.impl("lstm_bidirectional_inference",
         &fusedlstm::cpu::lstm_bidirectional_inference);
  m.impl("lstm_bidirectional_forward",
         &fusedlstm::cpu::lstm_bidirectional_forward);
  m.impl("lstm_bidirectional_backward",
         &fusedlstm::cpu::lstm_bidirectional_backward);
}

namespace {

// "onednn" or "blas": which library runs the float32 whole-sequence GEMMs of
// the CPU layers in this process (see cpu/sequence_gemm.h), for reports and
// tests. Reading it resolves FUSEDLSTM_CPU_GEMM, so a bad value raises here.
std::string cpu_gemm_backend() {
  return fusedlstm::cpu::float_gemm_backend() ==
                 fusedlstm::cpu::GemmBackend::kOneDnn
             ? "onednn"
             : "blas";
}

// "avx512", "avx2" or "blas": how float32 layers run their recurrence on this
// CPU in this process (see cpu/recurrence.h; FUSEDLSTM_CPU_RECURRENCE).
std::string cpu_recurrence() {
  return fusedlstm::cpu::use_fused_recurrence(at::kFloat)
             ? fusedlstm::cpu::fused_recurrence_isa()
             : "blas";
}

// Whether bfloat16 layers without a projection run their recurrent product in
// bfloat16 dot products here (h_{t-1} rounded to bfloat16; see
// cpu/recurrence.h, bf16_recurrent_product).
bool cpu_bfloat16_dot() {
  return fusedlstm::cpu::bf16_recurrent_product(at::kBFloat16, false);
}

// Whether those bfloat16 dot products run on AMX tiles here
// (cpu/recurrence_amx.h; FUSEDLSTM_CPU_AMX).
bool cpu_amx() {
  // Asked first: it checks FUSEDLSTM_CPU_AMX whatever else runs.
  return fusedlstm::cpu::amx_tiles_available() && cpu_bfloat16_dot();
}

// Whether the input projection of those bfloat16 layers runs in MKL's
// bfloat16 GEMM here (cpu/mkl_bf16_gemm.h; FUSEDLSTM_CPU_MKL_BF16).
bool cpu_mkl_bf16() {
  return fusedlstm::cpu::mkl_bf16_gemm_available() && cpu_bfloat16_dot();
}

// Whether a bidirectional call made now would run its two
// directions at once (cpu/bidirectional.h; FUSEDLSTM_CPU_DIRECTIONS).
bool cpu_directions_concurrent() {
  return fusedlstm::cpu::bidirectional_runs_concurrently();
}

// Bytes of the recycled blocks (cpu/recycling_allocator.h) idle now, and the
// cap on them (FUSEDLSTM_CPU_RECYCLE_MIB).
int64_t cpu_recycled_idle_bytes() { return fusedlstm::cpu::recycled_idle_bytes(); }
int64_t cpu_recycle_cap_bytes() { return fusedlstm::cpu::recycle_cap_bytes(); }

// Gives the idle recycled blocks back to the system allocator, as
// torch.cuda.empty_cache does for CUDA's cached blocks.
void cpu_release_recycled() { fusedlstm::cpu::release_recycled(); }

// Fills the idle recycled blocks with NaN bytes (for tests).
void cpu_poison_recycled() { fusedlstm::cpu::poison_recycled(); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(fusedlstm, m) {
  m.def("cpu_amx() -> bool", &cpu_amx);
  m.def("cpu_mkl_bf16() -> bool", &cpu_mkl_bf16);
  m.def("cpu_bfloat16_dot() -> bool", &cpu_bfloat16_dot);
  m.def("cpu_directions_concurrent() -> bool", &cpu_directions_concurrent);
  m.def("cpu_gemm_backend() -> str", &cpu_gemm_backend);
  m.def("cpu_recurrence() -> str", &cpu_recurrence);
  m.def("cpu_recycled_idle_bytes() -> int", &cpu_recycled_idle_bytes);
  m.def("cpu_recycle_cap_bytes() -> int", &cpu_recycle_cap_bytes);
  m.def("cpu_release_recycled() -> ()", &cpu_release_recycled);
  m.def("cpu_poison_recycled() -> ()", &cpu_poison_recycled);
}
