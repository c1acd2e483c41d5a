// The cluster backward kernel for Half (see cluster_bwd.cuh).
#include "cuda/persistent/cluster_bwd.cuh"

namespace fusedlstm::cuda {
template PersistentPlan plan_cluster_backward<c10::Half>(int, int, int);
template void launch_cluster_backward<c10::Half>(const PersistentPlan&,
                                          const PersistentBackwardParams&,
                                          bool, cudaStream_t);
}  // namespace fusedlstm::cuda
