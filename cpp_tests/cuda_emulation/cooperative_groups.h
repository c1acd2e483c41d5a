// Host stand-in for <cooperative_groups.h> (see prelude.h): grid.sync() is a
// barrier over every thread of the emulated launch, cluster.sync() one over
// the threads of the CTA's cluster, and map_shared_rank() the same offset in
// another CTA's shared memory (distributed shared memory);
// barrier_arrive()/barrier_wait() split cluster.sync() in two.
#pragma once

namespace cooperative_groups {
struct grid_group {
  void sync() const { emu::grid_barrier->wait(); }
};
inline grid_group this_grid() { return {}; }

struct arrival_token {
  long generation;
};

struct cluster_group {
  void sync() const { emu::cluster->bar.wait(); }
  arrival_token barrier_arrive() const { return {emu::cluster->bar.arrive()}; }
  void barrier_wait(arrival_token&& token) const {
    emu::cluster->bar.wait_for(token.generation);
  }
  unsigned block_rank() const { return static_cast<unsigned>(emu::cluster_rank); }
  unsigned num_blocks() const {
    return static_cast<unsigned>(emu::cluster->ctas.size());
  }
  template <typename T>
  T* map_shared_rank(T* addr, unsigned rank) const {
    const auto* own = emu::cta->smem.data();
    const auto offset = reinterpret_cast<const unsigned char*>(addr) - own;
    return reinterpret_cast<T*>(emu::cluster->ctas[rank]->smem.data() + offset);
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups
