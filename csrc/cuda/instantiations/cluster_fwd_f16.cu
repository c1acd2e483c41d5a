// The cluster forward kernel for Half (see cluster_fwd.cuh).
#include "cuda/persistent/cluster_fwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_cluster_forward<c10::Half>(int, int, int, int);
template void launch_cluster_forward<c10::Half>(const PersistentPlan&,
                                                const PersistentForwardParams&,
                                                bool, cudaStream_t);
}  // namespace fusedlstm::cuda
