// Checks the cell's own exp, sigmoid and tanh (csrc/cpu/cell_math.h,
// csrc/cpu/simd_ops.h) against float64 on dense sweeps and at the special
// values: the bounds in ulp that the header promises, NaN in -> NaN out, and
// saturation at +-inf. Built once per ISA: for AVX-512 with
// FUSEDLSTM_TEST_AVX512 defined, else for AVX2. Exits 77 (reported by ctest as
// skipped, with the reason printed) on a CPU without that ISA, where this code
// never runs.
#if defined(FUSEDLSTM_TEST_AVX512)
#include "cpu/avx512_target.h"  // first: see there
#else
#include "cpu/avx2_target.h"  // first: see there
#endif
#include "cpu/cell_math.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

namespace {

using fusedlstm::cpu::FUSEDLSTM_ISA::exp_cell;
using fusedlstm::cpu::FUSEDLSTM_ISA::sigmoid_cell;
using fusedlstm::cpu::FUSEDLSTM_ISA::tanh_cell;
using V = at::vec::Vectorized<float>;
using Fn = std::function<float(float)>;

int failures = 0;

// x in every lane; checks that all lanes agree and returns lane 0.
float lane0(const V& v) {
  float out[V::size()];
  v.store(out);
  for (int l = 1; l < V::size(); ++l) {
    const bool same = out[l] == out[0] || (std::isnan(out[l]) && std::isnan(out[0]));
    if (!same) {
      std::printf("FAIL: lane %d gives %.9g, lane 0 %.9g\n", l, out[l], out[0]);
      ++failures;
    }
  }
  return out[0];
}

// |y - ref| in units of the float spacing at |ref| (ref rounded to float).
double ulps(float y, double ref) {
  const float r = static_cast<float>(std::fabs(ref));
  const double spacing =
      std::nextafter(r, std::numeric_limits<float>::infinity()) - r;
  return std::fabs(static_cast<double>(y) - ref) / spacing;
}

// Worst error over `points` evenly spaced x in [lo, hi], and over +-2^-e
// (1 + i/64) for e in [1, 40] when `near_zero` (tanh ~ x there).
void sweep(const char* name, const Fn& f, double (*ref)(double), float lo,
           float hi, double bound, bool near_zero) {
  double worst = 0;
  float worst_x = 0;
  auto visit = [&](float x) {
    const double e = ulps(f(x), ref(x));
    if (!(e <= worst)) {
      worst = e;
      worst_x = x;
    }
  };
  const int points = 2000000;
  for (int i = 0; i <= points; ++i) visit(lo + (hi - lo) * (i / double(points)));
  if (near_zero) {
    for (int e = 1; e <= 40; ++e) {
      for (int i = 0; i < 64; ++i) {
        const float x = std::ldexp(1.f + i / 64.f, -e);
        visit(x);
        visit(-x);
      }
    }
  }
  const bool ok = worst <= bound;
  std::printf("%-8s on [%g, %g]: worst %.2f ulp at x = %.9g (bound %.1f) %s\n",
              name, lo, hi, worst, worst_x, bound, ok ? "ok" : "FAIL");
  if (!ok) ++failures;
}

void expect(const char* what, bool ok, float got) {
  std::printf("%-34s %s (got %.9g)\n", what, ok ? "ok" : "FAIL", got);
  if (!ok) ++failures;
}

double exp_ref(double x) { return std::exp(x); }
double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double tanh_ref(double x) { return std::tanh(x); }

}  // namespace

int main() {
#if defined(FUSEDLSTM_TEST_AVX512)
  if (!__builtin_cpu_supports("avx512f")) {
    std::printf("skipped: this CPU has no AVX-512F, so the AVX-512 cell never runs here\n");
    return 77;
  }
  std::printf("AVX-512 (16 lanes)\n");
#else
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
    std::printf("skipped: this CPU has no AVX2/FMA, so the fused cell never runs here\n");
    return 77;
  }
  std::printf("AVX2 (8 lanes)\n");
#endif
  const Fn exp_f = [](float x) { return lane0(V(exp_cell(V(x)))); };
  const Fn sig_f = [](float x) { return lane0(sigmoid_cell(V(x))); };
  const Fn tanh_f = [](float x) { return lane0(tanh_cell(V(x))); };

  // Normal results only: exp below -87.33 and sigmoid below -87.33 are under
  // the smallest normal float (checked separately below).
  sweep("exp", exp_f, exp_ref, -87.3f, 88.3f, 1.0, false);
  sweep("sigmoid", sig_f, sigmoid_ref, -87.0f, 30.f, 3.0, false);
#if defined(FUSEDLSTM_TEST_AVX512)
  // The expm1 form (NOTES change 46): 2.50 ulp over every float.
  sweep("tanh", tanh_f, tanh_ref, -20.f, 20.f, 2.5, true);
#else
  sweep("tanh", tanh_f, tanh_ref, -20.f, 20.f, 3.0, true);
#endif
#if defined(FUSEDLSTM_TEST_AVX512)
  // vscalefps (NOTES change 45) also rounds the subnormal results and the
  // finite ones past 127.5 ln 2 correctly; the ulp there is the subnormal
  // spacing, 2^-149, and near the largest float 2^104.
  sweep("exp", exp_f, exp_ref, -103.f, -87.3f, 1.0, false);
  sweep("exp", exp_f, exp_ref, 88.3f, 88.72f, 1.0, false);
  sweep("sigmoid", sig_f, sigmoid_ref, -88.72f, -87.0f, 3.0, false);
  expect("exp(88.72) finite", std::isfinite(exp_f(88.72f)), exp_f(88.72f));
  expect("exp(88.73) = +inf", exp_f(88.73f) == std::numeric_limits<float>::infinity(),
         exp_f(88.73f));
#endif

  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float tiny = std::numeric_limits<float>::min();
  expect("exp(NaN) is NaN", std::isnan(exp_f(nan)), exp_f(nan));
  expect("exp(+inf) = +inf", exp_f(inf) == inf, exp_f(inf));
  expect("exp(-inf) = 0", exp_f(-inf) == 0.f, exp_f(-inf));
  expect("exp(100) = +inf", exp_f(100.f) == inf, exp_f(100.f));
  expect("exp(-100) < smallest normal", exp_f(-100.f) < tiny, exp_f(-100.f));
  expect("sigmoid(NaN) is NaN", std::isnan(sig_f(nan)), sig_f(nan));
  expect("sigmoid(+inf) = 1", sig_f(inf) == 1.f, sig_f(inf));
  expect("sigmoid(-inf) = 0", sig_f(-inf) == 0.f, sig_f(-inf));
  expect("sigmoid(-95) < smallest normal", sig_f(-95.f) < tiny, sig_f(-95.f));
  expect("sigmoid(0) = 0.5", sig_f(0.f) == 0.5f, sig_f(0.f));
  expect("tanh(NaN) is NaN", std::isnan(tanh_f(nan)), tanh_f(nan));
  expect("tanh(+inf) = 1", tanh_f(inf) == 1.f, tanh_f(inf));
  expect("tanh(-inf) = -1", tanh_f(-inf) == -1.f, tanh_f(-inf));
  expect("tanh(+-100) = +-1", tanh_f(100.f) == 1.f && tanh_f(-100.f) == -1.f,
         tanh_f(100.f));
  expect("tanh(0) = 0", tanh_f(0.f) == 0.f, tanh_f(0.f));
  expect("tanh(1e-30) = 1e-30", tanh_f(1e-30f) == 1e-30f, tanh_f(1e-30f));
#if defined(FUSEDLSTM_TEST_AVX512)
  // The sign is copied from x (AVX2's polynomial branch gives +0 here).
  expect("tanh(-0) = -0", tanh_f(-0.f) == 0.f && std::signbit(tanh_f(-0.f)), tanh_f(-0.f));
#endif

  std::printf("%s\n", failures == 0 ? "all checks passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
