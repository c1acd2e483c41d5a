// Which recurrence a pass of one layer-direction runs: the persistent kernel
// (with its plan) or the stepwise path. Shared by forward and backward, which
// differ only in their planner.
#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <string>

#include "cuda/lstm_cuda.h"
#include "cuda/persistent/persistent.h"
#include "cuda/static_switch.h"

namespace fusedlstm::cuda {

namespace {

bool recurrent_tf32(at::ScalarType dtype, int device) {
  if (dtype != at::kFloat) return false;
  // TF32 arrived with sm_80. Before it the flag changes nothing: cuDNN
  // computes float32 exactly, and so does the exact-FMA kernel.
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return false;
  // The RNN flag itself where torch has per-operator flags: asking without
  // an operator raises once a user has set the conv and RNN precisions apart
  // (torch.backends.cudnn.{conv,rnn}.fp32_precision).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 10)
  return at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#elif TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR == 9
  return at::globalContext().allowTF32CuDNN("rnn");
#else
  return at::globalContext().allowTF32CuDNN();
#endif
}

// What stops a layer from taking a persistent kernel before any plan is made
// (dtype, schedule, sizes), or "" if nothing does; fills `table`.
std::string persistent_precondition(at::ScalarType dtype,
                                    const StepSchedule& sched, int64_t batch,
                                    int64_t hidden, ScheduleTable* table) {
  if (dtype == at::kDouble) return "float64 has no persistent kernel";
  if (std::string why_not = make_schedule_table(sched, table); !why_not.empty()) {
    return why_not;
  }
  // The kernels index rows of one step and units with int.
  if (hidden > (int64_t(1) << 24) || batch > (int64_t(1) << 24)) {
    return "sizes too large";
  }
  return "";
}

// An explicit request (FUSEDLSTM_CUDA_PATH=`path`) is never served by
// another path, so benchmarks and tests measure what they ask: raises why
// `kernel` cannot run the layer, naming the paths that can.
void check_request(const char* path, const std::string& kernel,
                   const char* alternatives, const std::string& why_not,
                   int64_t H, int64_t P, at::ScalarType dtype) {
  TORCH_CHECK(why_not.empty(), "fusedlstm: FUSEDLSTM_CUDA_PATH=", path,
              ", but this layer cannot run on the ", kernel, " kernel: ",
              why_not, " (hidden_size=", H, ", state size=", P, ", dtype=",
              dtype, "). Use FUSEDLSTM_CUDA_PATH=", alternatives, ".");
}

// Why the cluster kernels cannot run a layer that has passed
// persistent_precondition (c.tf32 and c.table already filled), or "" if
// they can: then c.use and c.cluster are set, with the plan when the batch
// is not empty.
std::string cluster_refusal(RecurrencePass pass, at::ScalarType dtype,
                            const StepSchedule& sched, const LayerDims& d,
                            int device, PersistentChoice& c) {
  std::string why_not;
  if (d.has_proj) {
    why_not = "the cluster kernel has no projection (proj_size)";
  } else if (dtype == at::kFloat && !c.tf32) {
    why_not = "the cluster kernel computes on tensor cores: float16, bfloat16, "
              "or float32 where TF32 is allowed (torch.backends.cudnn.allow_tf32) "
              "and the device has it (compute capability 8.0 and later)";
  } else if (sched.batch > 0) {  // batch 0: nothing to launch
    const int h = static_cast<int>(d.hidden_size), s = static_cast<int>(d.state_size),
              b = static_cast<int>(sched.batch);
    const bool forward = pass == RecurrencePass::kForward;
    c.plan = FUSEDLSTM_CLUSTER_TYPE_SWITCH(dtype, c.tf32, T, [&] {
      return forward ? plan_cluster_forward<T>(h, s, b, device)
                     : plan_cluster_backward<T>(h, b, device);
    });
    if (!c.plan.fits) why_not = c.plan.reason;
  }
  c.use = why_not.empty();
  c.cluster = c.use;
  return why_not;
}

// The cluster kernels for FUSEDLSTM_CUDA_PATH=cluster: an explicit request,
// so a layer they cannot run raises rather than taking another path.
PersistentChoice choose_cluster(RecurrencePass pass, at::ScalarType dtype,
                                const StepSchedule& sched, const LayerDims& d,
                                int device) {
  PersistentChoice c;
  c.tf32 = recurrent_tf32(dtype, device);
  std::string why_not =
      persistent_precondition(dtype, sched, sched.batch, d.hidden_size, &c.table);
  if (why_not.empty()) why_not = cluster_refusal(pass, dtype, sched, d, device, c);
  check_request("cluster",
                pass == RecurrencePass::kForward ? "cluster forward" : "cluster backward",
                "auto, persistent or stepwise", why_not, d.hidden_size,
                d.state_size, dtype);
  return c;
}

}  // namespace

// When the persistent kernel is expected to beat the stepwise path, per
// step, eager (benchmarks/NOTES.md, changes 65 and 66):
// * Exact float32 (FMA kernel, fma_block_matmul since change 66): one staged
//   read of h and a product with every lane busy, predicted at about
//   2.5 µs + B·H·(4P, plus P with a projection) multiply-adds at 2e13 a
//   second (G4: 2.5 µs, G1: 6 µs, G5: 56 µs). The stepwise path costs
//   about 13 µs of launches a step on a small layer plus its GEMM at
//   cuBLAS's rate, about twice the kernel's: they cross near 4e8
//   multiply-adds a step (G5's 1.1e9 goes stepwise). Not yet measured; the
//   kernel before change 66 (one element of the depth at a time, fitted to
//   the first H200 run: 2 + ceil(B/32)·P·0.078 µs) lost to the stepwise
//   path beyond ceil(B/32)·P = 128.
// * The tensor-core kernels read the whole of h (and, with a projection, m)
//   from L2 in every CTA each step: about 4.3 µs + B·H·P / 2.7 TB/s in 16-bit
//   types (fitted to the first H200 run, within 10 % at G1-G5; G5, B = 256,
//   H = P = 1024: 98 µs), twice the bytes in float storage (TF32). The
//   stepwise path is one GEMM at cuBLAS's rate plus about 13 µs of
//   launches. Eagerly the two cross near B·H·(P + H if projected) = 2.5e7
//   element reads (G1's 1.7e7 stays persistent, G8's projected 8.4e7 and
//   G5's 2.7e8 go stepwise).
// Replayed from a CUDA graph the stepwise path loses its launch cost, so
// there the crossings are lower; eager is what most callers run. Both passes
// of a layer use the same rule, so they take the same path (unless the
// cluster kernels take one of them: cluster_pays_off).
bool persistent_pays_off(at::ScalarType dtype, bool tf32, int64_t batch,
                         int64_t hidden, int64_t state, bool has_proj) {
  const double b = static_cast<double>(batch), h = static_cast<double>(hidden),
               p = static_cast<double>(state);
  if (dtype == at::kFloat && !tf32) {
    return b * h * (4.0 * p + (has_proj ? p : 0.0)) <= 4e8;
  }
  const double reads = b * h * (p + (has_proj ? h : 0.0)) * (dtype == at::kFloat ? 2.0 : 1.0);
  return reads <= 2.5e7;
}

// The cluster kernels keep h (dG in the backward) in every CTA's shared
// memory, written there through distributed shared memory, and sync a
// cluster, not the grid: none of persistent_pays_off's L2 reads and no grid
// barrier. On the H200 (0accd9a; NOTES, "The first GPU run") they were the
// fastest path wherever they ran: inference 13-33 % under the cooperative
// kernels (G1, G3, G4 in bfloat16 and float16; G1 6.9 µs a step replayed
// against 10.4), training 18-20 % (G3, G4). What they were not measured on
// is kept out: clusters in waves (a second wave reruns the whole sequence),
// and a CTA's product past 4x G1's (4U x P by BT multiply-adds), where the
// step would be bound by the CTA's own tensor cores at large batch tiles.
bool cluster_pays_off(const PersistentPlan& plan, int64_t state) {
  if (!plan.fits || plan.cluster < 1 || !plan.all_resident) return false;
  const double macs = 4.0 * plan.units * static_cast<double>(state) * plan.batch_tile;
  return macs <= kClusterMaxCtaMacs;
}

PersistentChoice choose_persistent(RecurrencePass pass, at::ScalarType dtype,
                                   const StepSchedule& sched,
                                   const LayerDims& d, int device) {
  PersistentChoice c;
  const PathMode mode = requested_path();
  if (mode == PathMode::kCluster) return choose_cluster(pass, dtype, sched, d, device);
  if (mode == PathMode::kStepwise) return c;
  c.tf32 = recurrent_tf32(dtype, device);
  const bool forward = pass == RecurrencePass::kForward;
  const int64_t H = d.hidden_size, P = d.state_size;
  std::string why_not = persistent_precondition(dtype, sched, sched.batch, H, &c.table);
  if (mode == PathMode::kAuto && why_not.empty()) {
    PersistentChoice clustered = c;  // the same precondition and table
    if (cluster_refusal(pass, dtype, sched, d, device, clustered).empty() &&
        cluster_pays_off(clustered.plan, P)) {
      return clustered;
    }
  }
  if (mode == PathMode::kAuto && why_not.empty() &&
      !persistent_pays_off(dtype, c.tf32, sched.batch, H, P, d.has_proj)) {
    return c;  // the stepwise path, expected faster: no plan needed
  }
  if (why_not.empty()) {
    c.plan = FUSEDLSTM_PERSISTENT_TYPE_SWITCH(dtype, c.tf32, T, [&] {
      return FUSEDLSTM_BOOL_SWITCH(d.has_proj, kProj, [&] {
        const int h = static_cast<int>(H), s = static_cast<int>(P);
        return forward ? plan_persistent_forward<T, kProj>(h, s, device)
                       : plan_persistent_backward<T, kProj>(h, s, device);
      });
    });
    if (!c.plan.fits) why_not = c.plan.reason;
  }
  if (mode == PathMode::kPersistent) {
    check_request("persistent",
                  std::string("persistent ") + (forward ? "forward" : "backward"),
                  "auto or stepwise", why_not, H, P, dtype);
  }
  c.use = why_not.empty();
  return c;
}

}  // namespace fusedlstm::cuda
