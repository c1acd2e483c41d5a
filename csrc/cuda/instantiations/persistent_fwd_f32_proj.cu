// Persistent forward kernel for float, projection=true (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<float, true>(int, int, int);
template void launch_persistent_forward<float, true>(const PersistentPlan&,
                                               const PersistentForwardParams&,
                                               cudaStream_t);
}  // namespace fusedlstm::cuda
