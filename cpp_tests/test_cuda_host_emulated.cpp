// Runs the CUDA entry points themselves (csrc/cuda/forward_cuda.cpp,
// backward_cuda.cpp: buffers, the path choice, the per-step GEMMs of the
// stepwise path, the launches) on CPU tensors, with every kernel executed by
// the host emulation (cpp_tests/cuda_emulation), against fusedlstm's CPU
// implementation in float64. test_persistent_emulated.cpp checks the
// persistent kernels with host code of its own; this checks the host code
// that will run on the GPU, on each FUSEDLSTM_CUDA_PATH, on an emulated
// H100 or, with --turing, an emulated T4 (sm_75); with --random N, on N
// layers drawn at random (--seed S; --sms K and --blocks-per-sm M shape the
// emulated device: fewer CTAs at once make the planners take wider slices;
// --turing makes it a T4).
// Exits non-zero on any mismatch.
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <fusedlstm/lstm.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/layer_args.h"
#include "cuda/lstm_cuda.h"
#include "cuda/persistent/persistent.h"
#include "emulated_layers.h"

namespace {

using namespace emutest;

// Values, gradients (those of tests/cuda/test_cuda_parity.py). TF32 keeps
// float16's 10 mantissa bits in the products.
std::pair<double, double> tolerances(at::ScalarType t, bool tf32) {
  if (tf32 && t == at::kFloat) t = at::kHalf;
  switch (t) {
    case at::kDouble: return {1e-10, 1e-9};
    case at::kFloat: return {2e-5, 1e-4};
    case at::kHalf: return {4e-3, 1e-2};
    default: return {3e-2, 6e-2};
  }
}

void expect(const std::string& what, bool ok) {
  ++checks;
  if (!ok) ++failures;
  std::printf("%-56s %s\n", what.c_str(), ok ? "as expected" : "  WRONG");
}

// The CUDA entry point's forward of inputs l.
auto cuda_forward(const Inputs& l, bool reverse) {
  return fusedlstm::cuda::lstm_layer_forward(l.x, l.h0, l.c0, l.w_ih, l.w_hh,
                                             opt(l.b_ih), opt(l.b_hh), opt(l.w_hr),
                                             opt(l.batch_sizes), reverse);
}

// `in` with some tensors in other layouts, chosen by `seed`: every other
// element of a wider buffer, storage transposed, or (states and output
// gradients, as autograd hands out for a sum) one row expanded over the
// rest. Values may change (expanded rows); the reference reads the same ones.
Inputs with_odd_layouts(Inputs in, unsigned seed) {
  std::mt19937 rng(seed);
  const auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  const auto odd = [&](at::Tensor& t, bool may_expand) {
    if (!t.defined() || !chance(0.4)) return;
    const int how = std::uniform_int_distribution<int>(0, may_expand ? 2 : 1)(rng);
    if (how == 0) {  // innermost stride 2
      std::vector<int64_t> wide(t.sizes().begin(), t.sizes().end());
      wide.back() *= 2;
      at::Tensor buffer = at::zeros(wide, t.options());
      t = buffer.slice(-1, 0, buffer.size(-1), 2).copy_(t);
    } else if (how == 1 && t.dim() >= 2) {  // storage transposed
      t = t.transpose(0, 1).contiguous().transpose(0, 1);
    } else if (how == 2 && t.dim() >= 1 && t.size(0) > 0) {  // one row, expanded
      t = t.narrow(0, 0, 1).expand(t.sizes());
    }
  };
  for (at::Tensor* t : {&in.x, &in.w_ih, &in.w_hh, &in.b_ih, &in.b_hh, &in.w_hr}) odd(*t, false);
  for (at::Tensor* t : {&in.h0, &in.c0, &in.grad_out, &in.grad_h_n, &in.grad_c_n}) {
    odd(*t, true);
  }
  return in;
}

// `tf32`: the float32 products may run on TF32 tensor cores (the caller
// allowed them, and the path's kernels use them). `layout_seed`, if not 0,
// gives some inputs other layouts (with_odd_layouts).
void run(const char* path, const Case& c, at::ScalarType dtype, bool reverse,
         bool tf32 = false, unsigned layout_seed = 0) {
  setenv("FUSEDLSTM_CUDA_PATH", path, 1);
  const Inputs l = layout_seed ? with_odd_layouts(make_inputs(c, dtype), layout_seed)
                               : make_inputs(c, dtype);
  const Inputs r = as_double(l);
  const std::string tag = std::string(path) + " " + c.name + (reverse ? " rev " : " fwd ") +
                          c10::toString(dtype) + (layout_seed ? " odd-layouts" : "");
  const auto [out, h_n, c_n, gates, cells] = cuda_forward(l, reverse);
  const auto ref = fusedlstm::lstm_layer_forward(
      r.x, r.h0, r.c0, r.w_ih, r.w_hh, opt(r.b_ih), opt(r.b_hh), opt(r.w_hr),
      opt(l.batch_sizes), reverse);
  const auto [vtol, gtol] = tolerances(dtype, tf32);
  expect_close(tag + " output", out, ref.output, vtol);
  expect_close(tag + " h_n", h_n, ref.h_n, vtol);
  expect_close(tag + " c_n", c_n, ref.c_n, vtol);
  expect_close(tag + " gates", gates, ref.gates, vtol);
  expect_close(tag + " cells", cells, ref.cells, vtol);
  // Inference writes no activations back and allocates no cells: the
  // results must still be forward's, bit for bit.
  const auto [inf_out, inf_h_n, inf_c_n] = fusedlstm::cuda::lstm_layer_inference(
      l.x, l.h0, l.c0, l.w_ih, l.w_hh, opt(l.b_ih), opt(l.b_hh), opt(l.w_hr),
      opt(l.batch_sizes), reverse);
  expect(tag + " inference: forward's bits",
         at::equal(inf_out, out) && at::equal(inf_h_n, h_n) && at::equal(inf_c_n, c_n));

  const auto grads = fusedlstm::cuda::lstm_layer_backward(
      l.grad_out, l.grad_h_n, l.grad_c_n, l.x, l.h0, l.c0, l.w_ih, l.w_hh, opt(l.b_ih),
      opt(l.b_hh), opt(l.w_hr), out, gates, cells, opt(l.batch_sizes), reverse);
  const auto rg = fusedlstm::lstm_layer_backward(
      r.grad_out, r.grad_h_n, r.grad_c_n, r.x, r.h0, r.c0, r.w_ih, r.w_hh, opt(r.b_ih),
      opt(r.b_hh), opt(r.w_hr), ref.output, ref.gates, ref.cells,
      opt(l.batch_sizes), reverse);
  expect_close(tag + " grad_input", std::get<0>(grads), rg.grad_input, gtol);
  expect_close(tag + " grad_h0", std::get<1>(grads), rg.grad_h0, gtol);
  expect_close(tag + " grad_c0", std::get<2>(grads), rg.grad_c0, gtol);
  expect_close(tag + " grad_w_ih", std::get<3>(grads), rg.grad_w_ih, gtol);
  expect_close(tag + " grad_w_hh", std::get<4>(grads), rg.grad_w_hh, gtol);
  if (c.bias) expect_close(tag + " grad_bias", std::get<5>(grads), rg.grad_bias, gtol);
  if (c.P) expect_close(tag + " grad_w_hr", std::get<6>(grads), rg.grad_w_hr, gtol);
  // A mask that leaves out dX and the weights (a frozen layer), then one that
  // keeps only them: what is left out is empty, the rest the full call's bits.
  for (const fusedlstm::BackwardMask& mask :
       {fusedlstm::BackwardMask{false, true, true, false, false, false, false},
        fusedlstm::BackwardMask{true, false, false, true, true, true, true}}) {
    const auto some = fusedlstm::cuda::lstm_layer_backward(
        l.grad_out, l.grad_h_n, l.grad_c_n, l.x, l.h0, l.c0, l.w_ih, l.w_hh,
        opt(l.b_ih), opt(l.b_hh), opt(l.w_hr), out, gates, cells,
        opt(l.batch_sizes), reverse, mask);
    const auto listed = [](const auto& g) {
      return std::apply([](const auto&... t) { return std::vector<at::Tensor>{t...}; }, g);
    };
    const std::vector<at::Tensor> full = listed(grads), got = listed(some);
    bool ok = true;
    for (size_t i = 0; i < full.size(); ++i) ok &= mask[i] ? at::equal(got[i], full[i]) : got[i].numel() == 0;
    expect(tag + (mask[0] ? " masked: all but states" : " masked: states only"), ok);
  }
  std::printf("%-56s checked\n", tag.c_str());
}

// Runs `call` and checks that it raises a c10::Error whose message holds
// `needle`.
template <typename Call>
void expect_raises(const std::string& what, const std::string& needle, Call call) {
  ++checks;
  try {
    call();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (msg.find(needle) != std::string::npos) {
      std::printf("%-56s raised\n", what.c_str());
      return;
    }
    ++failures;
    std::printf("  WRONG MESSAGE %s: %s\n", what.c_str(), msg.c_str());
    return;
  }
  ++failures;
  std::printf("  NO ERROR %s\n", what.c_str());
}

// What choose_persistent makes of one pass of case c in `dtype`.
fusedlstm::cuda::PersistentChoice pass_choice(const Case& c, at::ScalarType dtype,
                                              fusedlstm::cuda::RecurrencePass pass) {
  const Inputs l = make_inputs(c, dtype);
  const fusedlstm::LayerDims d = fusedlstm::check_layer_args(
      "choice", l.x, l.h0, l.c0, l.w_ih, l.w_hh, opt(l.b_ih), opt(l.b_hh),
      opt(l.w_hr), opt(l.batch_sizes));
  const fusedlstm::StepSchedule sched =
      fusedlstm::make_schedule(l.x, l.h0.size(0), opt(l.batch_sizes));
  return fusedlstm::cuda::choose_persistent(pass, dtype, sched, d, l.x.get_device());
}

fusedlstm::cuda::PersistentChoice forward_choice(const Case& c, at::ScalarType dtype) {
  return pass_choice(c, dtype, fusedlstm::cuda::RecurrencePass::kForward);
}

// The backward's checks and its independence of autocast, on `path`:
// gradients unlike forward's results raise before any kernel reads them, and
// a backward under autocast (the engine keeps the caller's autocast state;
// the emulated device's tensors are CPU tensors, so CPU autocast stands in)
// gives the bits of one outside it, although its weight-gradient GEMMs and
// bias sum are ATen calls that autocast would otherwise run in bfloat16.
void backward_guards(const char* path, const Case& c) {
  setenv("FUSEDLSTM_CUDA_PATH", path, 1);
  const Inputs l = make_inputs(c, at::kFloat);
  const auto [out, h_n, c_n, gates, cells] = cuda_forward(l, false);
  auto backward = [&](const at::Tensor& grad_h_n) {
    return fusedlstm::cuda::lstm_layer_backward(
        l.grad_out, grad_h_n, l.grad_c_n, l.x, l.h0, l.c0, l.w_ih, l.w_hh,
        opt(l.b_ih), opt(l.b_hh), opt(l.w_hr), out, gates, cells,
        opt(l.batch_sizes), false);
  };
  const std::string tag = std::string(path) + " " + c.name;
  expect_raises(tag + ": a wider grad_h_n", "expected grad_h_n of shape", [&] {
    backward(at::zeros({l.grad_h_n.size(0), l.grad_h_n.size(1) + 2}));
  });
  expect_raises(tag + ": a float64 grad_h_n", "grad_h_n has dtype Double", [&] {
    backward(l.grad_h_n.to(at::kDouble));
  });
  const auto outside = backward(l.grad_h_n);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  const auto inside = backward(l.grad_h_n);
  at::autocast::set_autocast_enabled(at::kCPU, false);
  at::autocast::clear_cache();
  const auto as_list = [](const auto& grads) {
    return std::apply([](const auto&... g) { return std::vector<at::Tensor>{g...}; }, grads);
  };
  const std::vector<at::Tensor> o = as_list(outside), n = as_list(inside);
  bool same = true;
  for (size_t i = 0; i < o.size(); ++i) {
    same = same && o[i].scalar_type() == n[i].scalar_type() && at::equal(o[i], n[i]);
  }
  expect(tag + ": backward under autocast, the same bits", same);
}

// auto's cost rule (persistent_pays_off: persistent_choice.cpp) on the
// grid's shapes and at its edges, then through choose_persistent: layers the
// persistent kernel fits but auto sends to the stepwise path, which an
// explicit request still gets; and a wide B = 1 float32 layer, which auto
// now keeps on the persistent kernel, run by auto and by the stepwise path.
void auto_cost_rule() {
  using fusedlstm::cuda::persistent_pays_off;
  expect("rule: exact float32 G4 (B 1, H = P = 512) stays persistent",
         persistent_pays_off(at::kFloat, false, 1, 512, 512, false));
  expect("rule: exact float32 G1 (B 64, H = P = 512) stays persistent",
         persistent_pays_off(at::kFloat, false, 64, 512, 512, false));
  expect("rule: exact float32 G8 (projection 256 of H 1024) stays persistent",
         persistent_pays_off(at::kFloat, false, 64, 1024, 256, true));
  expect("rule: exact float32 G5 (B 256, H = P = 1024) goes stepwise",
         !persistent_pays_off(at::kFloat, false, 256, 1024, 1024, false));
  expect("rule: exact float32 at 4e8 multiply-adds stays persistent",
         persistent_pays_off(at::kFloat, false, 1000, 100, 1000, false));
  expect("rule: exact float32 just past 4e8 goes stepwise",
         !persistent_pays_off(at::kFloat, false, 1001, 100, 1000, false));
  expect("rule: bfloat16 G1 (B 64, H = P = 512) stays persistent",
         persistent_pays_off(at::kBFloat16, false, 64, 512, 512, false));
  expect("rule: bfloat16 G2 (B 16, H = P = 768) stays persistent",
         persistent_pays_off(at::kBFloat16, false, 16, 768, 768, false));
  expect("rule: TF32 G1 goes stepwise (float storage, twice the bytes)",
         !persistent_pays_off(at::kFloat, true, 64, 512, 512, false));
  expect("rule: float16 G8 (projection 256 of H 1024) goes stepwise",
         !persistent_pays_off(at::kHalf, false, 64, 1024, 256, true));
  expect("rule: bfloat16 G5 (B 256, H = P = 1024) goes stepwise",
         !persistent_pays_off(at::kBFloat16, false, 256, 1024, 1024, false));
  expect("rule: nothing to run (B 0) stays persistent",
         persistent_pays_off(at::kBFloat16, false, 0, 1024, 1024, false));

  at::globalContext().setAllowTF32CuDNN(false);
  const Case wide_f32{"padded H160 B1", 8, 160, 0, 1, 3, false, true};
  const Case tall_f32{"padded H48 B44000", 4, 48, 0, 44000, 1, false, true};
  const Case tall_bf16{"padded H48 B12000", 4, 48, 0, 12000, 1, false, true};
  for (const auto& [c, dtype] : {std::pair{tall_f32, at::kFloat},
                                 std::pair{tall_bf16, at::kBFloat16}}) {
    const std::string tag = c.name + " " + c10::toString(dtype);
    setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
    expect(tag + ": auto takes the stepwise path", !forward_choice(c, dtype).use);
    setenv("FUSEDLSTM_CUDA_PATH", "persistent", 1);
    expect(tag + ": an explicit request still runs persistent",
           forward_choice(c, dtype).use);
  }
  setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
  expect("padded H160 B1 Float: auto takes the persistent kernel",
         forward_choice(wide_f32, at::kFloat).use);
  run("auto", wide_f32, at::kFloat, false);
  run("stepwise", wide_f32, at::kFloat, true);
}

// auto's choice of the cluster kernels (cluster_pays_off) on the grid's
// shapes, planned for an emulated H200: 132 SMs of one CTA each (the
// tensor-core kernels' register counts allow one on sm_90). The emulated
// device has no GPCs, so every 8 SMs hold a 16-CTA cluster; T = 2, since
// plans do not depend on it. Then the same rule through the planner's
// edges: a batch that needs waves, and a CTA product past the bound.
void auto_prefers_clusters() {
  using fusedlstm::cuda::RecurrencePass;
  const int sms = emu::kSms, per_sm = emu::kMaxBlocksPerSm;
  emu::kSms = 132;
  emu::kMaxBlocksPerSm = 1;
  setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
  at::globalContext().setAllowTF32CuDNN(false);
  struct Shape {
    Case c;
    bool cluster_forward;
  };
  const Shape shapes[] = {
      {{"G1 (B 64, H 512)", 512, 512, 0, 64, 2, false, true}, true},
      {{"G3 (B 8, H 256)", 256, 256, 0, 8, 2, false, true}, true},
      {{"G4 (B 1, H 512)", 512, 512, 0, 1, 2, false, true}, true},
      {{"G6 (B 32, H 512)", 512, 512, 0, 32, 2, false, true}, true},
      {{"G7 (packed, B 64, H 512)", 512, 512, 0, 64, 3, true, true}, true},
      // W_hh over 16 CTAs' shared memory (4.5 and 8 MiB in 16-bit types).
      {{"G2 (B 16, H 768)", 768, 768, 0, 16, 2, false, true}, false},
      {{"G5 (B 256, H 1024)", 1024, 1024, 0, 256, 2, false, true}, false},
      // A projection: the cluster kernels have none.
      {{"G8 (B 64, H 1024, P 256)", 1024, 1024, 256, 64, 2, false, true}, false},
  };
  for (const Shape& s : shapes) {
    for (at::ScalarType dtype : {at::kBFloat16, at::kHalf}) {
      const std::string tag = s.c.name + " " + c10::toString(dtype) + " forward";
      const auto f = forward_choice(s.c, dtype);
      if (s.cluster_forward) {
        expect(tag + ": auto takes the cluster kernel", f.use && f.cluster);
      } else {
        expect(tag + ": auto does not take the cluster kernel", !f.cluster);
      }
      if (f.cluster) {
        const double macs = 4.0 * f.plan.units * double(s.c.P ? s.c.P : s.c.H) *
                            f.plan.batch_tile;
        expect(tag + ": one wave of clusters, within the CTA bound",
               f.plan.all_resident && macs <= fusedlstm::cuda::kClusterMaxCtaMacs);
      }
      const auto b = pass_choice(s.c, dtype, RecurrencePass::kBackward);
      std::printf("%s %s: forward %s (cluster %d, batch tile %d), backward %s (cluster "
                  "%d, batch tile %d, %s)\n",
                  s.c.name.c_str(), c10::toString(dtype),
                  f.cluster ? "cluster" : f.use ? "persistent" : "stepwise", f.plan.cluster,
                  f.plan.batch_tile, b.cluster ? "cluster" : b.use ? "persistent" : "stepwise",
                  b.plan.cluster, b.plan.batch_tile,
                  b.plan.all_resident ? "one wave" : "waves or none");
    }
  }
  // The backward of G3 and G4 (batch 8 and 1) fits one wave: dG's tile is
  // 1 row a cluster.
  for (const Shape& s : {shapes[1], shapes[2]}) {
    const auto b = pass_choice(s.c, at::kBFloat16, RecurrencePass::kBackward);
    expect(s.c.name + " bfloat16 backward: auto takes the cluster kernel", b.use && b.cluster);
  }
  // Exact float32 has no cluster kernel; TF32 does (G3: W_hh 1 MiB in float).
  expect("G3 exact float32: not the cluster kernel",
         !forward_choice(shapes[1].c, at::kFloat).cluster);
  at::globalContext().setAllowTF32CuDNN(true);
  const Case g3_tf32{"G3 TF32 (B 9)", 256, 256, 0, 9, 2, false, true};
  const auto tf32 = forward_choice(g3_tf32, at::kFloat);
  expect("G3 TF32: auto takes the cluster kernel", tf32.use && tf32.cluster && tf32.tf32);
  at::globalContext().setAllowTF32CuDNN(false);
  // Batch 4096 at H 512: one wave would need 512 rows a cluster, far past
  // shared memory, so the plan runs in waves: auto takes another path,
  // while an explicit request still gets the clusters.
  const Case waves{"B 4096, H 512", 512, 512, 0, 4096, 2, false, true};
  const auto w = forward_choice(waves, at::kBFloat16);
  expect("B 4096 H 512: auto declines clusters in waves", !w.cluster);
  setenv("FUSEDLSTM_CUDA_PATH", "cluster", 1);
  const auto wc = forward_choice(waves, at::kBFloat16);
  expect("B 4096 H 512: an explicit request runs them in waves",
         wc.use && wc.cluster && !wc.plan.all_resident);
  setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
  // The bound itself, at its edge: G1's CTA (U 32, P 512) with 32 rows is
  // exactly 2^21 multiply-adds.
  using fusedlstm::cuda::cluster_pays_off;
  fusedlstm::cuda::PersistentPlan plan;
  plan.fits = true;
  plan.cluster = 16;
  plan.all_resident = true;
  plan.units = 32;
  plan.batch_tile = 32;
  expect("bound: U 32, P 512, 32 rows (2^21 multiply-adds) pays off",
         cluster_pays_off(plan, 512));
  plan.batch_tile = 33;
  expect("bound: one row more does not", !cluster_pays_off(plan, 512));
  plan.batch_tile = 8;
  plan.all_resident = false;
  expect("bound: waves do not", !cluster_pays_off(plan, 512));
  emu::kSms = sms;
  emu::kMaxBlocksPerSm = per_sm;
}

// An emulated Turing GPU (compute capability 7.5) running a build with
// sm_75 code: float16 takes the persistent kernel through sm_75's m16n8k8
// MMA, float32 the exact-FMA kernel although PyTorch allows TF32 (there is
// none before sm_80, and cuDNN computes float32 exactly there too),
// bfloat16 the stepwise path; explicit requests the device cannot serve
// raise. First the same device with a build that has no code for it.
void emulate_turing() {
  emu::kComputeCapability = 75;
  emu::kImageArch = 75;
}

int turing(const std::vector<Case>& cases) {
  emulate_turing();
  emu::kNoImage = true;
  setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
  expect_raises("sm_75 build without sm_75 code", "has no GPU code for", [&] {
    cuda_forward(make_inputs(cases[0], at::kFloat), false);
  });
  emu::kNoImage = false;

  at::globalContext().setAllowTF32CuDNN(true);  // PyTorch's default
  const auto f32 = forward_choice(cases[0], at::kFloat);
  expect("sm_75 float32: persistent, exact products", f32.use && !f32.tf32);
  expect("sm_75 float16: persistent", forward_choice(cases[0], at::kHalf).use);
  expect("sm_75 bfloat16: stepwise", !forward_choice(cases[0], at::kBFloat16).use);
  for (const char* path : {"persistent", "auto"}) {
    for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
      if (dtype == at::kBFloat16 && std::string(path) == "persistent") continue;
      for (const Case& c : cases) {
        for (bool reverse : {false, true}) run(path, c, dtype, reverse);
      }
    }
  }
  setenv("FUSEDLSTM_CUDA_PATH", "persistent", 1);
  expect_raises("sm_75 bfloat16 persistent request", "need compute capability 8.0", [&] {
    cuda_forward(make_inputs(cases[0], at::kBFloat16), false);
  });
  setenv("FUSEDLSTM_CUDA_PATH", "cluster", 1);
  expect_raises("sm_75 cluster request", "thread-block clusters", [&] {
    cuda_forward(make_inputs(cases[0], at::kHalf), false);
  });
  return finish();
}

// One random layer of the sweep: small, since every CUDA thread is an OS
// thread here, with sizes 0 and 1, partial tiles, uneven packed batches and
// non-contiguous inputs in reach of every path and dtype.
struct Draw {
  Case c;
  at::ScalarType dtype;
  std::string path;
  bool reverse, tf32;
  bool fitting;  // a layer the requested path's kernels are made for
  unsigned layout_seed;  // 0: contiguous inputs; else with_odd_layouts' seed
};

Draw draw(std::mt19937& rng, int index) {
  const auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>(lo, hi)(rng);
  };
  const auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  static const at::ScalarType kTypes[] = {at::kDouble, at::kFloat, at::kHalf,
                                          at::kBFloat16};
  static const char* kPaths[] = {"auto", "stepwise", "persistent", "cluster"};
  Draw d;
  Case& c = d.c;
  d.path = kPaths[pick(0, 3)];
  // Explicit requests mostly get layers their kernels take (the rest check
  // the refusal): no float64 for the persistent kernels, and for the
  // cluster kernels tensor-core types and no projection.
  d.fitting = d.path == "persistent" || d.path == "cluster" ? chance(0.9) : false;
  d.dtype = kTypes[pick(d.fitting ? 1 : 0, 3)];
  d.tf32 = d.dtype == at::kFloat && (d.fitting && d.path == "cluster" ? true : chance(0.5));
  c.I = pick(1, 24);
  // Mostly small; now and then wide enough for several k-tile batches.
  c.H = chance(0.9) ? pick(1, 48) : pick(49, 160);
  const bool proj_allowed = !(d.fitting && d.path == "cluster");
  c.P = proj_allowed && c.H > 1 && chance(0.3) ? pick(1, int(c.H) - 1) : 0;
  c.packed = chance(0.5);
  // Packed input has no batch 0 (pack_padded_sequence refuses it).
  c.B = !c.packed && chance(0.05) ? 0 : pick(1, 40);
  c.T = c.H > 48 ? pick(1, 3) : pick(1, 8);
  c.bias = chance(0.75);
  d.reverse = chance(0.5);
  d.layout_seed = chance(0.5) ? unsigned(rng() | 1u) : 0u;
  c.name = "#" + std::to_string(index) + " I" + std::to_string(c.I) + " H" +
           std::to_string(c.H) + " P" + std::to_string(c.P) + " B" +
           std::to_string(c.B) + " T" + std::to_string(c.T) +
           (c.packed ? " packed" : " padded") + (c.bias ? "" : " no-bias") +
           (d.tf32 ? " tf32" : "");
  return d;
}

// `count` random layers on the emulated device with `sms` SMs of at most
// `blocks_per_sm` CTAs each (compute capability 7.5 with sm_75 code where
// `turing`, else an H100's). An explicit persistent or cluster request may
// be refused, with the message that names the other paths; a refused
// persistent forward must also be what auto declines. On the default device
// (4 SMs of 8 CTAs, compute capability 9.0) every layer the kernels are made
// for fits, so a refusal of one is a failure. Everything that runs is
// checked as run() checks the fixed cases.
int random_sweep(int count, unsigned seed, int sms, int blocks_per_sm, bool turing) {
  emu::kSms = sms;
  emu::kMaxBlocksPerSm = blocks_per_sm;
  if (turing) emulate_turing();
  std::printf("random sweep: %d layers, seed %u, %d emulated SMs of at most %d CTAs%s\n",
              count, seed, sms, blocks_per_sm, turing ? ", Turing (sm_75)" : "");
  const bool roomy = !turing && sms >= 4 && blocks_per_sm >= 8;
  std::mt19937 rng(seed);
  std::map<std::string, int> ran, refused;
  for (int i = 0; i < count; ++i) {
    const Draw d = draw(rng, i);
    const std::string& path = d.path;
    at::globalContext().setAllowTF32CuDNN(d.tf32);
    try {
      // Before sm_80 the float32 products are exact whatever the flag says.
      run(path.c_str(), d.c, d.dtype, d.reverse, d.tf32 && !turing, d.layout_seed);
      ++ran[path];
    } catch (const c10::Error& e) {
      const std::string msg = e.what_without_backtrace();
      const bool explicit_request = path == "persistent" || path == "cluster";
      if (!explicit_request || msg.find("cannot run on the") == std::string::npos) {
        ++failures;
        std::printf("  UNEXPECTED ERROR %s %s %s: %s\n", path.c_str(), d.c.name.c_str(),
                    c10::toString(d.dtype), msg.c_str());
        continue;
      }
      ++refused[path];
      std::printf("%s %s %s refused: %s\n", path.c_str(), d.c.name.c_str(),
                  c10::toString(d.dtype), msg.substr(0, msg.find(" (hidden_size")).c_str());
      if (roomy && d.fitting) {
        ++failures;
        std::printf("  UNEXPECTED REFUSAL: the kernels are made for this layer\n");
      }
      if (path == "persistent" && msg.find("persistent forward") != std::string::npos) {
        setenv("FUSEDLSTM_CUDA_PATH", "auto", 1);
        expect("  ... and auto declines it too", !forward_choice(d.c, d.dtype).use);
      }
    }
  }
  at::globalContext().setAllowTF32CuDNN(false);
  for (const char* path : {"auto", "stepwise", "persistent", "cluster"}) {
    std::printf("%-10s ran %d, refused %d\n", path, ran[path], refused[path]);
  }
  return finish();
}

}  // namespace

int main(int argc, char** argv) {
  // Exact float32 products, so that float32's tolerance means something.
  at::globalContext().setAllowTF32CuDNN(false);
  emu::kSms = 4;
  // Small shapes: every CUDA thread is an OS thread here. Each (H, P, B)
  // differs, since the kernels' plans are cached per shape.
  const std::vector<Case> cases = {
      {"padded H24", 10, 24, 0, 5, 4, false, true},
      {"packed H20 no bias", 6, 20, 0, 6, 5, true, false},
      {"packed proj P5", 7, 16, 5, 4, 4, true, true},
  };
  if (argc > 1 && std::string(argv[1]) == "--turing") return turing(cases);
  if (argc > 1 && std::string(argv[1]) == "--random") {
    int count = 0, sms = 4, blocks_per_sm = emu::kMaxBlocksPerSm;
    unsigned seed = 0;
    bool turing_device = false, usage = false;
    for (int a = 1; a < argc; ++a) {
      const std::string flag = argv[a];
      if (flag == "--turing") {
        turing_device = true;
        continue;
      }
      if (a + 1 == argc) {
        usage = true;
        break;
      }
      const char* value = argv[++a];
      if (flag == "--random") count = std::atoi(value);
      else if (flag == "--seed") seed = unsigned(std::strtoul(value, nullptr, 10));
      else if (flag == "--sms") sms = std::atoi(value);
      else if (flag == "--blocks-per-sm") blocks_per_sm = std::atoi(value);
      else usage = true;
    }
    if (usage || count < 1 || sms < 1 || blocks_per_sm < 1) {
      std::fprintf(stderr,
                   "usage: %s --random N [--seed S] [--sms K] [--blocks-per-sm M] [--turing]\n",
                   argv[0]);
      return 2;
    }
    return random_sweep(count, seed, sms, blocks_per_sm, turing_device);
  }
  const at::ScalarType types[] = {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16};
  for (const char* path : {"stepwise", "persistent", "auto"}) {
    for (at::ScalarType dtype : types) {
      // float64 has no persistent kernel: that request raises (tested in
      // Python); auto takes the stepwise path for it.
      if (dtype == at::kDouble && std::string(path) == "persistent") continue;
      for (const Case& c : cases) {
        for (bool reverse : {false, true}) run(path, c, dtype, reverse);
      }
    }
  }
  for (const char* path : {"stepwise", "persistent"}) {
    for (const Case& c : cases) backward_guards(path, c);
  }
  auto_cost_rule();
  auto_prefers_clusters();
  // The cluster kernels: no projection, tensor-core types.
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (bool reverse : {false, true}) {
      run("cluster", cases[0], dtype, reverse);
      run("cluster", cases[1], dtype, reverse);
    }
  }
  // The cluster forward with one whole cluster.sync a step, as before
  // change 71 (FUSEDLSTM_CLUSTER_SYNC=whole), and a value it does not know.
  setenv("FUSEDLSTM_CLUSTER_SYNC", "whole", 1);
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) run("cluster", cases[1], dtype, true);
  setenv("FUSEDLSTM_CLUSTER_SYNC", "halves", 1);
  expect_raises("cluster: FUSEDLSTM_CLUSTER_SYNC=halves",
                "FUSEDLSTM_CLUSTER_SYNC must be split or whole, got 'halves'",
                [&] { cuda_forward(make_inputs(cases[0], at::kHalf), false); });
  unsetenv("FUSEDLSTM_CLUSTER_SYNC");
  return finish();
}
