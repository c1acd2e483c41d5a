// The persistent forward kernel of one layer-direction: host-side interface.
//
// One cooperative launch runs the whole recurrence. CTA k owns hidden units
// [k*U, k*U + U) with all four gates of each, so the cell update is local;
// its rows of W_hh ([4U, P]) stay in shared memory for the whole sequence.
// Each step it reads h_{t-1} (all of it, from global/L2; a wide chunk of
// rows is first staged in shared memory, whole sectors once a CTA), adds the
// precomputed x W_ih^T row and b_ih + b_hh (in float), updates c, writes
// h_t, and the grid syncs once. With a projection, h_t = W_hr m_t needs all
// of m_t, so a step has two phases and two grid syncs: cell (writes m),
// sync, projection (CTA k owns rows [k*PU, k*PU + PU) of W_hr, on chip too,
// and writes h), sync.
//
// The backward kernel runs the steps in the opposite order with the same
// ownership, on transposed slices of the weights. Without a projection, CTA
// k owns units [k*U, k*U + U) as columns of dh and as cells: each step it
// computes its columns of dh = dG_{t+1} W_hh from all of the gate gradients
// of the step processed before (W_hh[:, units] on chip, [U, 4H]), runs the
// cell backward of its units, writes their gate gradients, and the grid
// syncs once. With a projection, dm = dh W_hr (its units' columns of W_hr
// on chip) feeds the cell backward, sync, then its PU columns of
// dh = dG W_hh (W_hh[:, columns] on chip, [PU, 4H]), sync. The gate
// gradients of every step are kept, so the weight gradients are whole-
// sequence GEMMs afterwards, as on the stepwise path.
//
// Gates are computed with mma.sync m16n8k16 (fp32 accumulate) for float16 and
// bfloat16 (on sm_75, float16 as two m16n8k8), with m16n8k8 TF32 for float32
// where PyTorch allows TF32 for its cuDNN LSTM and the device has it, and
// with exact fp32 FFMA otherwise (each warp's lanes splitting the depth, so
// that one batch row keeps them all busy). The planners refuse a device whose image
// of the kernel lacks those instructions (persistent_common.cuh,
// kMinImageArch).
#pragma once

#include <c10/core/ScalarType.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>

#include "common/layer_args.h"

#if defined(__CUDACC__)
#define FUSEDLSTM_HD __host__ __device__
#else
#define FUSEDLSTM_HD
#endif

namespace fusedlstm::cuda {

namespace persistent {
// float32 tensors whose recurrent products run on TF32 tensor cores; the
// kernels' element type where PyTorch's cuDNN LSTM would use TF32
// (torch.backends.cudnn.allow_tf32). Plain float means exact FMA products.
struct Tf32 {};
}  // namespace persistent

// The step schedule as runs of equal batch size, small enough to travel as a
// kernel argument: the schedule stays on the host, nothing is copied to the
// device, and a CUDA graph captures it by value.
struct ScheduleTable {
  static constexpr int kMaxRuns = 96;
  int runs = 0;              // number of runs used
  int steps = 0;             // T
  int t_start[kMaxRuns];     // first step of each run (ascending)
  int batch[kMaxRuns];       // batch size of each run
  int64_t offset[kMaxRuns];  // first row of the run's first step

  // Batch size and first row of step t (0 <= t < steps).
  FUSEDLSTM_HD void lookup(int t, int* bs, int64_t* row) const {
    int lo = 0, hi = runs - 1;
    while (lo < hi) {  // last run with t_start <= t
      const int mid = (lo + hi + 1) >> 1;
      if (t_start[mid] <= t) lo = mid; else hi = mid - 1;
    }
    *bs = batch[lo];
    *row = offset[lo] + int64_t(t - t_start[lo]) * batch[lo];
  }
};

// Fills `table` from the host schedule; returns "" or why the schedule does
// not fit a table (more steps than an int counts, or too many runs).
std::string make_schedule_table(const StepSchedule& sched, ScheduleTable* table);

// Arguments of the persistent forward kernel (element type T of the layer).
struct PersistentForwardParams {
  int B = 0, H = 0, P = 0;     // batch, hidden, state (proj or H)
  bool reverse = false;
  ScheduleTable sched;
  const void* w_hh = nullptr;  // W_hh: [4H, P]
  const void* w_hr = nullptr;  // W_hr: [P, H], projection only
  void* gates = nullptr;       // [N, 4H]: in x W_ih^T, out activated gates
                               // (left as they were where cells is nullptr)
  const float* bias = nullptr; // [4H] fp32: b_ih + b_hh, added to the input
                               // parts in float; nullptr without bias
  void* output = nullptr;      // [N, P]: h_t
  void* cells = nullptr;       // [N, H]: c_t; nullptr in inference, which keeps
                               // neither cells nor activated gates
  void* h_buf = nullptr;       // [2, B, P]: h ping-pong, both halves = h0 in
  void* m_buf = nullptr;       // [B, H]: o * tanh(c_t), projection only
  float* c_state = nullptr;    // [B, H] fp32: c0 in, c_n out
  void* h_n = nullptr;         // [B, P]: h0 in; each row's last h_t out
  int x_stage_elems = 0;       // elements of the CTA's staging buffer for the
                               // product's x (PersistentPlan); set by the launch
};

// Arguments of the persistent backward kernel (element type T of the layer).
// Rows follow the forward's schedule; the kernel visits steps in reverse.
struct PersistentBackwardParams {
  int B = 0, H = 0, P = 0;      // batch, hidden, state (proj or H)
  bool reverse = false;         // the layer's direction
  ScheduleTable sched;
  const void* w_hh = nullptr;   // W_hh: [4H, P]
  const void* w_hr = nullptr;   // W_hr: [P, H], projection only
  const void* gates = nullptr;  // [N, 4H] activated gates saved by forward
  const void* cells = nullptr;  // [N, H]  c_t saved by forward
  const void* output = nullptr; // [N, P]  h_t saved by forward
  const void* h0 = nullptr;     // [B, P]
  const void* c0 = nullptr;     // [B, H]
  const void* grad_out = nullptr;  // [N, P] gradient of output
  void* dgates = nullptr;       // [N, 4H] out: gradients of the preactivations
  void* h_prev = nullptr;       // [N, P]  out: h_{t-1} of every row (for dW_hh)
  void* grad_h_all = nullptr;   // [N, P]  out, projection only: gradient of h_t
  float* dh_state = nullptr;    // [B, P] fp32: grad of h_n in, grad of h0 out
  float* dc_state = nullptr;    // [B, H] fp32: grad of c_n in, grad of c0 out
  int x_stage_elems = 0;        // as in PersistentForwardParams
};

// Launch geometry, or why the layer does not fit.
struct PersistentPlan {
  bool fits = false;
  std::string reason;          // set when !fits
  int grid = 0, block = 0;
  int units = 0;               // U: hidden units per CTA
  int proj_units = 0;          // PU: projection rows per CTA
  size_t smem = 0;             // dynamic shared memory per CTA, bytes
  int cluster = 0;             // cluster kernel: CTAs per cluster (else 0)
  int batch_tile = 0;          // cluster kernel: batch rows per cluster
  // Cluster kernel: every cluster of the grid resident at once (one wave);
  // otherwise the later clusters run the whole sequence after the first.
  bool all_resident = false;
  // Elements (of the storage type) of the CTA's shared-memory buffer for the
  // rows of x its products read: exact fp32 stages x through it in passes
  // (fma_block_matmul); the tensor-core forward stages each wide chunk of h
  // in it where it holds kChunk rows (lstm_persistent_fwd). 0: none.
  int x_stage_elems = 0;
};

// Picks U and the grid for the current device: the smallest U (a multiple of
// 4) whose CTAs all fit co-resident (occupancy API) within the opt-in
// shared-memory limit. Host-only; no device sync. T is float,
// persistent::Tf32, c10::Half or c10::BFloat16; instantiated in
// instantiations/persistent_fwd_*.cu.
template <typename T, bool kProj>
PersistentPlan plan_persistent_forward(int H, int P, int device);

// Cooperative launch on `stream`; raises on a launch error.
template <typename T, bool kProj>
void launch_persistent_forward(const PersistentPlan& plan,
                               const PersistentForwardParams& params,
                               cudaStream_t stream);

// The same for the backward kernel (instantiations/persistent_bwd_*.cu). Its
// plan differs from the forward's: the slices are transposed and, with a
// projection, W_hh is split by the P columns rather than by units.
template <typename T, bool kProj>
PersistentPlan plan_persistent_backward(int H, int P, int device);

template <typename T, bool kProj>
void launch_persistent_backward(const PersistentPlan& plan,
                                const PersistentBackwardParams& params,
                                cudaStream_t stream);

// The thread-block-cluster forward (no projection; T is persistent::Tf32,
// c10::Half or c10::BFloat16; instantiations/cluster_fwd_*.cu): W_hh is split
// over the CTAs of one cluster, which exchange h through distributed shared
// memory and synchronise as a cluster once per step; clusters take separate
// batch rows. Fits where one cluster's shared memory holds W_hh (H <= 512 or
// so in 16-bit types on an H100). Host-only plan, cached per shape.
template <typename T>
PersistentPlan plan_cluster_forward(int H, int P, int B, int device);

// split_sync: the kernel whose step barrier arrives before its global
// stores and loads the next step's inputs while it waits (the default);
// false: one whole cluster.sync() a step (FUSEDLSTM_CLUSTER_SYNC=whole, kept
// to measure the two side by side; NOTES, changes 71 and 72).
template <typename T>
void launch_cluster_forward(const PersistentPlan& plan,
                            const PersistentForwardParams& params,
                            bool split_sync, cudaStream_t stream);

// Its backward (instantiations/cluster_bwd_*.cu): the cooperative backward's
// split of W_hh ([U, 4H] columns per CTA) inside one cluster, the gate
// gradients of the step visited before exchanged through distributed shared
// memory, one cluster synchronisation per step; clusters take separate batch
// rows. No projection (P == H); the same types.
template <typename T>
PersistentPlan plan_cluster_backward(int H, int B, int device);

// split_sync as in launch_cluster_forward (NOTES, change 72).
template <typename T>
void launch_cluster_backward(const PersistentPlan& plan,
                             const PersistentBackwardParams& params,
                             bool split_sync, cudaStream_t stream);

// Which recurrence a pass runs, and for the persistent kernel its plan.
enum class RecurrencePass { kForward, kBackward };
struct PersistentChoice {
  bool use = false;     // the persistent kernel; otherwise the stepwise path
  bool cluster = false; // with use: the cluster kernel (plan.cluster > 0)
  bool tf32 = false;    // float32 products on TF32 tensor cores (plan's type)
  PersistentPlan plan;  // valid when use
  ScheduleTable table;  // valid when use
};

// Whether `auto` expects the persistent kernel to beat the stepwise path on
// a layer that both can run: batch B, hidden H, state P (proj_size or H),
// tf32 for float32 products on tensor cores. From cost models fitted to the
// first H200 run, and for exact float32 predicted for its kernel since
// (persistent_choice.cpp; benchmarks/NOTES.md, changes 65 and 66).
bool persistent_pays_off(at::ScalarType dtype, bool tf32, int64_t batch,
                         int64_t hidden, int64_t state, bool has_proj);

// Whether `auto` takes the cluster kernels' plan: every cluster resident at
// once, and a CTA's product per step (4U x P by BT rows) at most
// kClusterMaxCtaMacs multiply-adds, 4x the largest measured on the H200
// (G1: U = 32, P = 512, BT = 8), so that the step stays bound by latency,
// not by the CTA's tensor cores (persistent_choice.cpp; NOTES change 68).
constexpr double kClusterMaxCtaMacs = double(1 << 21);
bool cluster_pays_off(const PersistentPlan& plan, int64_t state);

// Reads FUSEDLSTM_CUDA_PATH (raising on an unknown value) and, for float32,
// PyTorch's TF32 flag for its cuDNN LSTM (torch.backends.cudnn.allow_tf32, or
// cudnn.rnn.fp32_precision), both now. `auto` takes the cluster kernel
// where its plan fits and cluster_pays_off, else the persistent kernel
// when the layer fits it and persistent_pays_off; `persistent` raises a
// RuntimeError saying why when it does not fit, never falling back
// (persistent_choice.cpp).
PersistentChoice choose_persistent(RecurrencePass pass, at::ScalarType dtype,
                                   const StepSchedule& sched,
                                   const LayerDims& d, int device);

}  // namespace fusedlstm::cuda
