// Persistent forward kernel for c10::BFloat16, projection=false (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<c10::BFloat16, false>(int, int, int);
template void launch_persistent_forward<c10::BFloat16, false>(const PersistentPlan&,
                                               const PersistentForwardParams&,
                                               cudaStream_t);
}  // namespace fusedlstm::cuda
