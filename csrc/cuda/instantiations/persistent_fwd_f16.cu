// Persistent forward kernel for c10::Half, projection=false (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<c10::Half, false>(int, int, int);
template void launch_persistent_forward<c10::Half, false>(const PersistentPlan&,
                                               const PersistentForwardParams&,
                                               cudaStream_t);
}  // namespace fusedlstm::cuda
