// The allocator behind the large tensors that the CPU operators allocate and
// fill on every call: their outputs, the activations training saves, and
// the gradients the backward returns.
//
// Why: such a tensor lives for one step of the caller's loop. autograd adds
// a weight gradient into .grad and frees it; glibc then hands the memory
// back to the kernel (a freed mmap, or the top of its heap past its trim
// threshold), and the next call faults every page in again, zeroed. A
// backward of one LSTMCell step at H = 256 (two 1 MiB weight gradients)
// took 900-1070 us a call that way against 150-160 us with glibc told to
// keep its memory (benchmarks/NOTES.md, change 77). glibc's settings belong
// to the process, so the operators keep their own: a block that its last
// tensor frees goes to an idle list, and the next request of its size class
// takes it back with its pages still mapped. The idle blocks are capped,
// the oldest released first; a block larger than the cap is never kept.
//
// FUSEDLSTM_CPU_RECYCLE_MIB: the cap in MiB (default 1/16 of the memory the
// process may use, the machine's or its cgroup's limit, and at least 256;
// 0 keeps nothing, so every tensor is at::empty's as before). Read once;
// anything but a non-negative integer raises.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fusedlstm::cpu {

// The smallest tensor that recycle_empty takes from the recycled blocks:
// glibc's heap reuses smaller ones by itself.
constexpr int64_t kRecycleMinBytes = int64_t{256} << 10;

// A contiguous CPU tensor like at::empty(sizes, options), contents
// unspecified, whose storage comes from the recycled blocks when it is at
// least kRecycleMinBytes and recycling is on (from at::empty otherwise).
// The storage is resizable and behaves as any CPU storage; freeing it
// returns the block to the idle list.
at::Tensor recycle_empty(at::IntArrayRef sizes, const at::TensorOptions& options);

// Bytes held in idle blocks now, and the cap (both for tests and reports).
int64_t recycled_idle_bytes();
int64_t recycle_cap_bytes();

// Frees every idle block (blocks still in use return to the list later).
void release_recycled();

// Fills every idle block with 0xFF bytes, a NaN in each floating dtype, so
// that a test can show that no operator reads what it did not write.
void poison_recycled();

}  // namespace fusedlstm::cpu
