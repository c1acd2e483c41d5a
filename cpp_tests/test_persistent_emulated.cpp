// Runs the persistent CUDA kernels (csrc/cuda/persistent) on the host through
// cpp_tests/cuda_emulation, so that their indexing, step order, ownership and
// barrier placement are checked on machines without a GPU (CI has none).
// Every element type (float32 on FMA and on TF32 tensor cores, float16 and
// bfloat16; tensor cores through an emulated mma.sync), with
// and without projection, padded and packed, both directions, forward and
// backward, against fusedlstm's CPU implementation in float64 on the same
// rounded inputs. The launch plans come from the real planner, answering for
// an emulated device whose SM count the cases vary.
//
// The host code around the launches mirrors run_persistent in
// csrc/cuda/forward_cuda.cpp and backward_cuda.cpp (those files need the
// CUDA runtime and are not built here). Exits non-zero on any mismatch.
#include <torch/torch.h>

#include <fusedlstm/lstm.h>

#include <cstdio>
#include <limits>
#include <string>

#include "common/layer_args.h"
#include "cuda/persistent/cluster_bwd.cuh"
#include "cuda/persistent/cluster_fwd.cuh"
#include "cuda/persistent/persistent_bwd.cuh"
#include "cuda/persistent/persistent_fwd.cuh"
#include "emulated_layers.h"

namespace {

using fusedlstm::StepSchedule;
using namespace fusedlstm::cuda;

using namespace emutest;

using persistent::Tf32;

template <typename T>
constexpr at::ScalarType scalar_type_of() {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, Tf32>) return at::kFloat;
  else if constexpr (std::is_same_v<T, c10::Half>) return at::kHalf;
  else return at::kBFloat16;
}

// Tolerances relative to the largest reference magnitude: values, gradients
// (those of tests/cuda/test_cuda_parity.py).
template <typename T>
std::pair<double, double> tolerances() {
  if constexpr (std::is_same_v<T, float>) return {2e-5, 1e-4};
  // TF32 keeps 10 mantissa bits, as float16 does, in the products only.
  else if constexpr (std::is_same_v<T, c10::Half> || std::is_same_v<T, Tf32>) return {4e-3, 1e-2};
  else return {3e-2, 6e-2};
}

// The case's schedule table and row count, the emulated device set to the
// case's, and the case's name for the report.
template <typename T>
std::string begin_case(const Case& c, const Inputs& in, bool reverse,
                       ScheduleTable* table, int64_t* N) {
  const StepSchedule sched = fusedlstm::make_schedule(in.x, c.B, opt(in.batch_sizes));
  const std::string why_not = make_schedule_table(sched, table);
  TORCH_CHECK(why_not.empty(), "schedule table: ", why_not);
  *N = sched.rows;
  emu::kSms = c.sms;
  emu::kMaxBlocksPerSm = c.max_blocks_per_sm;
  return c.name + (reverse ? " rev " : " fwd ") +
         (std::is_same_v<T, Tf32> ? std::string("TF32")
                                  : std::string(c10::toString(scalar_type_of<T>())));
}

// The arguments both kernels' parameter structs share.
template <typename Params>
void set_layer_params(Params& p, const Case& c, const Inputs& in,
                      const ScheduleTable& table, bool reverse, bool proj) {
  p.B = int(c.B);
  p.H = int(c.H);
  p.P = int(c.P ? c.P : c.H);
  p.reverse = reverse;
  p.sched = table;
  p.w_hh = in.w_hh.data_ptr();
  p.w_hr = proj ? in.w_hr.data_ptr() : nullptr;
}

// The forward kernels' buffers and arguments (run_persistent of
// forward_cuda.cpp): unwritten outputs are NaN.
struct ForwardRun {
  at::Tensor gates, output, cells, h_buf, c_state, m_buf, h_n;
  PersistentForwardParams fp;
};

ForwardRun prepare_forward(const Case& c, const Inputs& in,
                           const ScheduleTable& table, int64_t N, bool reverse,
                           bool proj) {
  const int64_t H = c.H, P = c.P ? c.P : c.H, B = c.B;
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  const at::Tensor x = in.x.reshape({N, c.I});
  ForwardRun r;
  r.gates = c.bias ? at::addmm(in.b_ih + in.b_hh, x, in.w_ih.t())
                   : at::mm(x, in.w_ih.t());
  r.output = at::full({N, P}, nan, in.x.options());
  r.cells = at::full({N, H}, nan, in.x.options());
  r.h_buf = at::stack({in.h0, in.h0}).contiguous();
  r.c_state = in.c0.to(at::kFloat).contiguous().clone();
  r.m_buf = at::full({B, H}, nan, in.x.options());
  r.h_n = in.h0.clone();
  PersistentForwardParams& fp = r.fp;
  set_layer_params(fp, c, in, table, reverse, proj);
  fp.gates = r.gates.data_ptr();
  fp.output = r.output.data_ptr();
  fp.cells = r.cells.data_ptr();
  fp.h_buf = r.h_buf.data_ptr();
  fp.m_buf = proj ? r.m_buf.data_ptr() : nullptr;
  fp.c_state = r.c_state.data_ptr<float>();
  fp.h_n = r.h_n.data_ptr();
  return r;
}

// The forward's outputs against the CPU implementation in float64, which it
// returns.
template <typename T>
auto check_forward(const std::string& tag, const Inputs& in, const ForwardRun& run,
                   bool reverse) {
  const Inputs ref_in = as_double(in);
  const auto ref = fusedlstm::lstm_layer_forward(
      ref_in.x, ref_in.h0, ref_in.c0, ref_in.w_ih, ref_in.w_hh, opt(ref_in.b_ih),
      opt(ref_in.b_hh), opt(ref_in.w_hr), opt(in.batch_sizes), reverse);
  const double vtol = tolerances<T>().first;
  expect_close(tag + " output", run.output, ref.output, vtol);
  expect_close(tag + " h_n", run.h_n, ref.h_n, vtol);
  expect_close(tag + " c_n", run.c_state.to(in.x.scalar_type()), ref.c_n, vtol);
  expect_close(tag + " gates", run.gates, ref.gates, vtol);
  expect_close(tag + " cells", run.cells, ref.cells, vtol);
  return ref;
}

// The backward (run_persistent of backward_cuda.cpp) on the forward's
// tensors, run by launch(params), against the CPU implementation in float64:
// the whole-sequence gradients are formed in float64 from the kernel's gate
// gradients, so that only the kernel's rounding is judged.
template <typename T, typename Ref, typename Launch>
void check_backward(const std::string& tag, const Case& c, const Inputs& in,
                    const ForwardRun& run, const Ref& ref,
                    const ScheduleTable& table, int64_t N, bool reverse,
                    bool proj, Launch launch) {
  const auto nan = std::numeric_limits<double>::quiet_NaN();
  const at::Tensor &gates = run.gates, &output = run.output, &cells = run.cells;
  const Inputs ref_in = as_double(in);
  const int64_t H = c.H, P = c.P ? c.P : c.H;
  const at::Tensor x = in.x.reshape({N, c.I});
  const double gtol = tolerances<T>().second;
  at::Tensor dgates = at::full({N, 4 * H}, nan, in.x.options());
  at::Tensor h_prev = at::full({N, P}, nan, in.x.options());
  at::Tensor grad_h_all = at::full({N, P}, nan, in.x.options());
  at::Tensor dh_state = in.grad_h_n.to(at::kFloat).contiguous().clone();
  at::Tensor dc_state = in.grad_c_n.to(at::kFloat).contiguous().clone();
  const at::Tensor gout = in.grad_out.reshape({N, P}).contiguous();
  PersistentBackwardParams bp;
  set_layer_params(bp, c, in, table, reverse, proj);
  bp.gates = gates.data_ptr();
  bp.cells = cells.data_ptr();
  bp.output = output.data_ptr();
  bp.h0 = in.h0.data_ptr();
  bp.c0 = in.c0.data_ptr();
  bp.grad_out = gout.data_ptr();
  bp.dgates = dgates.data_ptr();
  bp.h_prev = h_prev.data_ptr();
  bp.grad_h_all = proj ? grad_h_all.data_ptr() : nullptr;
  bp.dh_state = dh_state.data_ptr<float>();
  bp.dc_state = dc_state.data_ptr<float>();
  launch(bp);
  const at::Tensor dg = dgates.to(at::kDouble);
  const auto rg = fusedlstm::lstm_layer_backward(
      ref_in.grad_out, ref_in.grad_h_n, ref_in.grad_c_n, ref_in.x, ref_in.h0,
      ref_in.c0, ref_in.w_ih, ref_in.w_hh, opt(ref_in.b_ih), opt(ref_in.b_hh),
      opt(ref_in.w_hr), ref.output, ref.gates, ref.cells, opt(in.batch_sizes),
      reverse);
  expect_close(tag + " grad_input", dg.mm(ref_in.w_ih), rg.grad_input, gtol);
  expect_close(tag + " grad_h0", dh_state, rg.grad_h0, gtol);
  expect_close(tag + " grad_c0", dc_state, rg.grad_c0, gtol);
  expect_close(tag + " grad_w_ih", dg.t().mm(x.to(at::kDouble)), rg.grad_w_ih, gtol);
  expect_close(tag + " grad_w_hh", dg.t().mm(h_prev.to(at::kDouble)), rg.grad_w_hh, gtol);
  if (c.bias) expect_close(tag + " grad_bias", dg.sum(0), rg.grad_bias, gtol);
  if (proj) {
    const at::Tensor g = gates.to(at::kDouble).narrow(1, 3 * H, H);
    const at::Tensor hidden = g * cells.to(at::kDouble).tanh();
    expect_close(tag + " grad_w_hr", grad_h_all.to(at::kDouble).t().mm(hidden),
                 rg.grad_w_hr, gtol);
  }
}

// Returns false (and prints why) when the planner says the layer does not fit.
template <typename T, bool kProj>
bool run_case(const Case& c, bool reverse) {
  const at::ScalarType dtype = scalar_type_of<T>();
  const Inputs in = make_inputs(c, dtype);
  const int64_t H = c.H, P = c.P ? c.P : c.H;
  ScheduleTable table;
  int64_t N = 0;
  const std::string tag = begin_case<T>(c, in, reverse, &table, &N);

  // Forward (run_persistent of forward_cuda.cpp).
  const PersistentPlan fplan = plan_persistent_forward<T, kProj>(int(H), int(P), 0);
  const PersistentPlan bplan = plan_persistent_backward<T, kProj>(int(H), int(P), 0);
  if (!fplan.fits || !bplan.fits) {
    std::printf("%-44s does not fit: %s\n", tag.c_str(),
                (fplan.fits ? bplan.reason : fplan.reason).c_str());
    return false;
  }
  // The staging buffer as launch_cooperative passes it.
  auto run_forward = [&](int x_stage_elems) {
    ForwardRun r = prepare_forward(c, in, table, N, reverse, kProj);
    r.fp.x_stage_elems = x_stage_elems;
    emu::launch(dim3(fplan.grid), dim3(fplan.block), fplan.smem, [&] {
      persistent::lstm_persistent_fwd<T, kProj>(r.fp, fplan.units, fplan.proj_units);
    });
    return r;
  };
  ForwardRun run = run_forward(fplan.x_stage_elems);
  const auto ref = check_forward<T>(tag, in, run, reverse);
  if constexpr (persistent::kTensorCore<T>) {
    // Chunks of h staged in shared memory reach the same MMAs with the same
    // values as the warps' own loads: the same bits.
    if (fplan.x_stage_elems > 0) {
      const ForwardRun direct = run_forward(0);
      bool same = true;
      for (const auto& [a, b] : {std::pair{run.output, direct.output},
                                 std::pair{run.h_n, direct.h_n},
                                 std::pair{run.c_state, direct.c_state},
                                 std::pair{run.gates, direct.gates},
                                 std::pair{run.cells, direct.cells}}) {
        same = same && at::allclose(a, b, 0.0, 0.0, /*equal_nan=*/true);
      }
      ++checks;
      if (!same) {
        ++failures;
        std::printf("  MISMATCH %s: the staged forward differs from the direct one\n",
                    tag.c_str());
      }
    }
  }
  check_backward<T>(tag, c, in, run, ref, table, N, reverse, kProj,
                    [&](const PersistentBackwardParams& bp) {
                      PersistentBackwardParams b = bp;
                      b.x_stage_elems = bplan.x_stage_elems;
                      emu::launch(dim3(bplan.grid), dim3(bplan.block), bplan.smem, [&] {
                        persistent::lstm_persistent_bwd<T, kProj>(b, bplan.units,
                                                                  bplan.proj_units);
                      });
                    });
  std::printf("%-44s grid %d/%d  U %d  PU %d  staged %d/%d  checked\n", tag.c_str(),
              fplan.grid, bplan.grid, bplan.units, bplan.proj_units, fplan.x_stage_elems,
              bplan.x_stage_elems);
  return true;
}

// The cluster forward and backward of a case (no projection), with
// `clusters` the number of clusters their plans must use. Plans are cached
// per (H, P, B): every cluster case needs its own shape.
template <typename T>
void run_cluster_case(const Case& c, bool reverse, int clusters) {
  const at::ScalarType dtype = scalar_type_of<T>();
  const Inputs in = make_inputs(c, dtype);
  ScheduleTable table;
  int64_t N = 0;
  const std::string tag = begin_case<T>(c, in, reverse, &table, &N);
  const PersistentPlan plan = plan_cluster_forward<T>(int(c.H), int(c.H), int(c.B), 0);
  const PersistentPlan bplan = plan_cluster_backward<T>(int(c.H), int(c.B), 0);
  for (const PersistentPlan* pl : {&plan, &bplan}) {
    ++checks;
    if (!pl->fits || pl->grid != pl->cluster * clusters) {
      ++failures;
      std::printf("  UNEXPECTED %s plan for %s: fits %d, grid %d, cluster %d (%s)\n",
                  pl == &plan ? "forward" : "backward", tag.c_str(), pl->fits,
                  pl->grid, pl->cluster, pl->reason.c_str());
      return;
    }
  }
  // kSplitSync selects the kernel's step barrier; keep_activations false is
  // inference (no gates or cells written back).
  auto run_forward = [&](bool split_sync, bool keep_activations) {
    ForwardRun r = prepare_forward(c, in, table, N, reverse, false);
    if (!keep_activations) r.fp.cells = nullptr;
    emu::launch(dim3(plan.grid), dim3(plan.block), plan.smem, [&] {
      if (split_sync) {
        persistent::lstm_cluster_fwd<T, true>(r.fp, plan.units, plan.batch_tile);
      } else {
        persistent::lstm_cluster_fwd<T, false>(r.fp, plan.units, plan.batch_tile);
      }
    }, plan.cluster);
    return r;
  };
  const ForwardRun run = run_forward(true, true);
  const auto ref = check_forward<T>(tag, in, run, reverse);
  // Both barriers, and inference, compute the same values in the same order:
  // the same bits (NOTES, change 71).
  const ForwardRun whole = run_forward(false, true), inference = run_forward(true, false);
  const auto same = [](std::initializer_list<std::pair<at::Tensor, at::Tensor>> pairs) {
    bool all = true;
    for (const auto& [a, b] : pairs) all = all && at::allclose(a, b, 0.0, 0.0, true);
    return all;
  };
  for (const auto& [what, ok] :
       {std::pair{"one whole cluster.sync a step", same({{run.output, whole.output},
                                                         {run.h_n, whole.h_n},
                                                         {run.c_state, whole.c_state},
                                                         {run.gates, whole.gates},
                                                         {run.cells, whole.cells}})},
        std::pair{"inference", same({{run.output, inference.output},
                                     {run.h_n, inference.h_n},
                                     {run.c_state, inference.c_state}})}}) {
    ++checks;
    if (!ok) {
      ++failures;
      std::printf("  MISMATCH %s: the split-phase forward differs from %s\n", tag.c_str(),
                  what);
    }
  }
  // The backward with each barrier, both against float64; what each wrote
  // (dgates, h_prev, and dh and dc as grad of h0 and c0) kept to compare.
  std::vector<at::Tensor> written[2];
  for (const bool split_sync : {true, false}) {
    check_backward<T>(tag, c, in, run, ref, table, N, reverse, false,
                      [&](const PersistentBackwardParams& bp) {
                        emu::launch(dim3(bplan.grid), dim3(bplan.block), bplan.smem, [&] {
                          if (split_sync) {
                            persistent::lstm_cluster_bwd<T, true>(bp, bplan.units,
                                                                  bplan.batch_tile);
                          } else {
                            persistent::lstm_cluster_bwd<T, false>(bp, bplan.units,
                                                                   bplan.batch_tile);
                          }
                        }, bplan.cluster);
                        const auto o = in.x.options();
                        written[split_sync] = {
                            at::from_blob(bp.dgates, {N, 4 * c.H}, o).clone(),
                            at::from_blob(bp.h_prev, {N, c.H}, o).clone(),
                            at::from_blob(bp.dh_state, {c.B, c.H}, o.dtype(at::kFloat)).clone(),
                            at::from_blob(bp.dc_state, {c.B, c.H}, o.dtype(at::kFloat)).clone()};
                      });
  }
  bool same_backward = true;
  for (size_t i = 0; i < written[0].size(); ++i) {
    same_backward = same_backward && at::allclose(written[1][i], written[0][i], 0.0, 0.0, true);
  }
  ++checks;
  if (!same_backward) {
    ++failures;
    std::printf("  MISMATCH %s: the split-phase backward differs from one whole "
                "cluster.sync a visit\n", tag.c_str());
  }
  std::printf("%-44s grid %d/%d = %d clusters of %d/%d, U %d/%d, BT %d/%d  checked\n",
              tag.c_str(), plan.grid, bplan.grid, clusters, plan.cluster,
              bplan.cluster, plan.units, bplan.units, plan.batch_tile,
              bplan.batch_tile);
}

template <typename T>
void run_cluster_all() {
  struct ClusterCase {
    Case c;
    int clusters;
  };
  const std::vector<ClusterCase> cases = {
      // H37 on 5 CTAs of U8 (the last one partial); one cluster for 5 rows.
      {{"cluster: packed H37", 3, 37, 0, 5, 6, true, true, 4, 2}, 1},
      // Two clusters (rows 4 and 3) of 2 CTAs; packed, so the second
      // cluster's rows run out before the first's.
      {{"cluster: packed H8 B7 two clusters", 5, 8, 0, 7, 5, true, true, 2, 2}, 2},
      // 72 rows in one cluster: three chunks of the product per step, the
      // second one full, so that it rewrites every column of part the
      // first one's cells read (the barrier between them is needed).
      {{"cluster: H20 B72 no bias", 4, 20, 0, 72, 3, false, false, 2, 4}, 1},
  };
  for (const ClusterCase& cc : cases) {
    for (bool reverse : {false, true}) run_cluster_case<T>(cc.c, reverse, cc.clusters);
  }
}

// The schedule table at its run limit: kMaxRuns distinct batch sizes fit,
// one more is refused with the reason the planners report (2^31 steps, the
// other refusal, would need 32 GiB of schedule).
void check_schedule_table_limit() {
  for (int runs : {ScheduleTable::kMaxRuns, ScheduleTable::kMaxRuns + 1}) {
    StepSchedule sched;
    sched.batch = runs;
    for (int t = 0; t < runs; ++t) {  // lengths runs, runs - 1, ..., 1
      sched.offsets.push_back(sched.rows);
      sched.batch_sizes.push_back(runs - t);
      sched.rows += runs - t;
    }
    ScheduleTable table;
    const std::string why_not = make_schedule_table(sched, &table);
    const bool fits = runs <= ScheduleTable::kMaxRuns;
    const std::string expected =
        fits ? "" : "batch_sizes has more than " + std::to_string(ScheduleTable::kMaxRuns) +
                        " distinct values";
    ++checks;
    if (why_not != expected || (fits && (table.runs != runs || table.steps != runs))) {
      ++failures;
      std::printf("  UNEXPECTED: schedule of %d runs gave \"%s\" (%d runs in the table)\n",
                  runs, why_not.c_str(), table.runs);
    }
  }
}

// The cluster planners alone, over batches that need large batch tiles. A
// plan must tile the batch, and every cluster of its grid must be resident
// at once with the shared memory it launches with (clusters past those run
// the whole sequence again in a second wave), unless its tile is the
// largest that fits, where waves are the only plan left. Shapes are their
// own: plans are cached per (H, P, B).
template <typename T>
void check_cluster_plans() {
  emu::kSms = 4;
  emu::kMaxBlocksPerSm = 8;
  for (int H : {64, 96}) {
    for (int B : {1, 9, 64, 300, 1000}) {
      const PersistentPlan fwd = plan_cluster_forward<T>(H, H, B, 0);
      const PersistentPlan bwd = plan_cluster_backward<T>(H, B, 0);
      for (const PersistentPlan* pl : {&fwd, &bwd}) {
        ++checks;
        const bool forward = pl == &fwd;
        if (!pl->fits) {
          ++failures;
          std::printf("  UNEXPECTED: no cluster %s plan for H%d B%d: %s\n",
                      forward ? "forward" : "backward", H, B, pl->reason.c_str());
          continue;
        }
        const int clusters = pl->grid / pl->cluster;
        const persistent::ClusterLaunchConfig one(pl->cluster, pl->cluster, pl->smem, nullptr);
        int held = 0;
        cudaOccupancyMaxActiveClusters(&held, nullptr, &one.config);
        const size_t next_tile =
            forward ? persistent::cluster_forward_layout<T>(pl->units, H, pl->batch_tile + 1).total
                    : persistent::cluster_backward_layout<T>(pl->units, H, pl->batch_tile + 1).total;
        const bool widest = next_tile > size_t(emu::kSmemOptin);
        const bool covers = pl->grid % pl->cluster == 0 &&
                            clusters * pl->batch_tile >= B &&
                            (clusters - 1) * pl->batch_tile < B;
        std::printf("cluster %s plan H%d B%d: %d clusters of %d, BT %d%s, %zu bytes, "
                    "%d resident\n", forward ? "forward" : "backward", H, B, clusters,
                    pl->cluster, pl->batch_tile, widest ? " (widest)" : "", pl->smem, held);
        if (!covers || held < 1 || (clusters > held && !widest) ||
            pl->smem > size_t(emu::kSmemOptin)) {
          ++failures;
          std::printf("  UNEXPECTED: the plan above %s\n",
                      !covers ? "does not tile the batch"
                              : "runs in waves where a wider tile fits, or does not fit");
        }
      }
    }
  }
}

template <typename T>
void run_all(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    for (bool reverse : {false, true}) {
      const bool ran = c.P ? run_case<T, true>(c, reverse)
                           : run_case<T, false>(c, reverse);
      if (!ran) {  // every case fits every element type's kernel
        ++failures;
        std::printf("  UNEXPECTED: the planner refused this case\n");
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  // --cluster-only: the cluster kernels and planners alone (a quicker run
  // under ThreadSanitizer while working on them).
  const bool cluster_only = argc > 1 && std::string(argv[1]) == "--cluster-only";
  // Small shapes: every CUDA thread is an OS thread here.
  const std::vector<Case> cases = {
      {"padded H24", 10, 24, 0, 5, 7, false, true, 4, 8},
      {"packed H37 (last CTA partial)", 3, 37, 0, 5, 6, true, true, 4, 8},
      {"B40 (two 32-row chunks)", 4, 20, 0, 40, 3, false, true, 4, 8},
      {"proj P8", 10, 24, 8, 5, 5, false, true, 4, 8},
      // Two full chunks and a part: the second chunk's products write every
      // column of part that the first chunk's cells read, in both phases, so
      // only the barriers between chunks order them (under ThreadSanitizer,
      // scripts/emulation_sanitizers.sh, a missing one is reported).
      {"proj P8 B72 (two full chunks)", 4, 20, 8, 72, 3, false, true, 4, 8},
      {"packed proj P5 no bias", 6, 20, 5, 6, 5, true, false, 4, 8},
      // H differs from the cases above: plans are cached per (H, P, device).
      {"one SM: U8", 5, 36, 0, 3, 4, true, true, 1, 8},
      // 80 rows of W_hh per CTA: float32's 20 row tiles outnumber the warps.
      {"two SMs, 1 block each: U20", 5, 37, 6, 3, 3, true, true, 2, 1},
      // U32 on five CTAs: the forward's k-tiles (P / 16, 160 / 8 for TF32)
      // and the backward's (4H / 16 per k-split) outnumber block_matmul's
      // load batch at every chunk width (steps of 20, 15, 10 and 5 rows), so
      // whole and partial batches run; 20 rows x 32 units are more cells
      // than the forward preloads (2 per thread). float32 stages 20 rows of
      // h (160 floats each) in one pass and the backward's 640-float gate
      // gradients in passes of 19 and 1.
      {"packed, five SMs, 1 block each: U32", 4, 160, 0, 20, 4, true, true, 5, 1},
  };
  if (!cluster_only) {
    std::printf("-- float32 (FMA path)\n");
    run_all<float>(cases);
    std::printf("-- float32 on TF32 tensor cores (emulated mma.sync m16n8k8)\n");
    run_all<Tf32>(cases);
    std::printf("-- float16 (emulated mma.sync)\n");
    run_all<c10::Half>(cases);
    std::printf("-- bfloat16 (emulated mma.sync)\n");
    run_all<c10::BFloat16>(cases);
  }
  std::printf("-- cluster forward and backward (emulated clusters and distributed shared memory)\n");
  run_cluster_all<Tf32>();
  run_cluster_all<c10::Half>();
  run_cluster_all<c10::BFloat16>();
  std::printf("-- the cluster planners at large batches\n");
  check_cluster_plans<Tf32>();
  check_cluster_plans<c10::Half>();
  check_cluster_plans<c10::BFloat16>();
  check_schedule_table_limit();
  return finish();
}
