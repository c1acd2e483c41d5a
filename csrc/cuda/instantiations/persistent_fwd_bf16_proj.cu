// Persistent forward kernel for c10::BFloat16, projection=true (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<c10::BFloat16, true>(int, int, int);
template void launch_persistent_forward<c10::BFloat16, true>(const PersistentPlan&,
                                               const PersistentForwardParams&,
                                               cudaStream_t);
}  // namespace fusedlstm::cuda
