// Persistent backward kernel for c10::BFloat16, projection=true (see persistent/persistent.h).
#include "cuda/persistent/persistent_bwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_backward<c10::BFloat16, true>(int, int, int);
template void launch_persistent_backward<c10::BFloat16, true>(const PersistentPlan&,
                                                const PersistentBackwardParams&,
                                                cudaStream_t);
}  // namespace fusedlstm::cuda
