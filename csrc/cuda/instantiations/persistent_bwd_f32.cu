// Persistent backward kernel for float, projection=false (see persistent/persistent.h).
#include "cuda/persistent/persistent_bwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_backward<float, false>(int, int, int);
template void launch_persistent_backward<float, false>(const PersistentPlan&,
                                                const PersistentBackwardParams&,
                                                cudaStream_t);
}  // namespace fusedlstm::cuda
