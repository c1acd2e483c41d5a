// Persistent forward kernel for float32 on TF32 tensor cores, projection=false (see persistent/persistent.h).
#include "cuda/persistent/persistent_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_persistent_forward<persistent::Tf32, false>(int, int, int);
template void launch_persistent_forward<persistent::Tf32, false>(const PersistentPlan&,
                                                     const PersistentForwardParams&,
                                                     cudaStream_t);
}  // namespace fusedlstm::cuda
