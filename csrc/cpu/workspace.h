// Per-thread buffers for the weights that the CPU recurrence packs, and for
// inference's chunk of projected rows.
//
// Why: the recurrence packs W_hh (and W_hr, and a bfloat16 layer's W_ih) into
// its own layout on every call, a buffer as large as the weight. Allocated
// per call, glibc gives it back to the kernel when it is freed at the top of
// the heap, and the next call faults it in again page by page: a batch-1
// backward at H = 1024 took 9-14 ms instead of 2.5 ms, with 4,300 faults a
// call (benchmarks/NOTES.md, change 22). So, like oneDNN's scratchpad, each
// calling thread keeps one buffer per role between calls, grown to the
// largest layer it has run and freed when the thread exits. Inference's
// gates chunk (4-16 MiB) had the same fate by chance: whether glibc trimmed
// it depended on the other buffers of the call, and in a 2-layer bfloat16
// model it faulted in again on every call in most processes (C4: 7 against
// 4 ms, 2,200 faults a call; NOTES change 37). Buffers from
// 4 MiB are advised for transparent huge pages: the packed W_hh is read
// every step.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fusedlstm::cpu {

// The roles that can be in use at the same time within one call.
enum class WorkspaceRole : int {
  kRecurrentWeights = 0,   // W_hh packed (forward unit panels, backward panels)
  kProjectionWeights = 1,  // W_hr packed
  kInputWeights = 2,       // a bfloat16 layer's W_ih packed into pairs
  kInferenceGates = 3,     // inference's chunk of x W_ih^T rows (forward.cpp)
  kCount = 4,
};

// At least `bytes`, 64-byte aligned, contents unspecified. Owned by the
// calling thread and valid until that thread asks for the same role again,
// so one user per role at a time: the operator call that asked.
// (No typed template here: the ISA-specific files compile everything they
// include for their ISA, and the linker would keep one of the copies.)
void* workspace_bytes(WorkspaceRole role, std::size_t bytes);

}  // namespace fusedlstm::cpu
