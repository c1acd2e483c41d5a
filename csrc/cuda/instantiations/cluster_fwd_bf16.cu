// The cluster forward kernel for BFloat16 (see cluster_fwd.cuh).
#include "cuda/persistent/cluster_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_cluster_forward<c10::BFloat16>(int, int, int, int);
template void launch_cluster_forward<c10::BFloat16>(const PersistentPlan&,
                                                const PersistentForwardParams&,
                                                bool, cudaStream_t);
}  // namespace fusedlstm::cuda
