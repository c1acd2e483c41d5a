// Persistent backward kernel for float, projection=true (see persistent/persistent.h).
#include "cuda/persistent/persistent_bwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_backward<float, true>(int, int, int);
template void launch_persistent_backward<float, true>(const PersistentPlan&,
                                                const PersistentBackwardParams&,
                                                cudaStream_t);
}  // namespace fusedlstm::cuda
