// Host stand-in for <cooperative_groups.h> (see prelude.h): grid.sync() is a
// barrier over every thread of the emulated launch.
#pragma once

namespace cooperative_groups {
struct grid_group {
  void sync() const { emu::grid_barrier->wait(); }
};
inline grid_group this_grid() { return {}; }
}  // namespace cooperative_groups
