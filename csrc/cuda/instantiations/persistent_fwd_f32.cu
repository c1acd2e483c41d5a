// Persistent forward kernel for float, projection=false (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<float, false>(int, int, int);
template void launch_persistent_forward<float, false>(const PersistentPlan&,
                                               const PersistentForwardParams&,
                                               cudaStream_t);
}  // namespace fusedlstm::cuda
