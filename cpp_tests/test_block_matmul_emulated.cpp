// The exact-fp32 product of the persistent kernels (block_matmul<float>,
// csrc/cuda/persistent/block_matmul.cuh) on one emulated CTA, against
// float64, on shapes chosen to reach each of its branches: batch tiles of
// 1, 2, 4 and 8 rows, one and several k-split parts, one and several staging
// passes, 16-byte and element loads of x (row stride or base not a multiple
// of 16 bytes, depth not a multiple of 4). The layer tests
// (test_persistent_emulated, test_cuda_host_emulated) run it inside whole
// layers at small sizes; here the depths reach those of real layers (up to
// 4H = 4096 in the backward).
//
// Bound: any order of summing K products in float32 is within
// gamma_K = K u / (1 - K u) (u = 2^-24) of the exact sum, relative to the
// sum of the products' magnitudes (Higham, Accuracy and Stability of
// Numerical Algorithms, 2nd ed., section 3.1). Exits non-zero on any miss.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/persistent/block_matmul.cuh"

namespace {

using namespace fusedlstm::cuda::persistent;

int failures = 0, checks = 0;

struct ProductCase {
  const char* name;
  int rows, k, nbn;
  int ldx;          // x's row stride (>= k)
  int x_offset;     // floats from a 16-byte boundary to x's first element
  size_t stage_floats = 40960;  // the staging buffer (160 KB: sm_90's)
};

void run(const ProductCase& c) {
  const SmemLayout L =
      smem_layout_of<float>(slice_geom<float>(c.rows, c.k), SliceGeom(), c.stage_floats);
  const SliceGeom& g = L.w1;  // with its stage_rows
  std::mt19937 rng(1234u + c.rows * 31u + c.k);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> w(size_t(c.rows) * c.k), x_store(size_t(c.x_offset) + size_t(c.nbn) * c.ldx + 4);
  for (float& v : w) v = dist(rng);
  for (float& v : x_store) v = dist(rng);
  // 16-byte aligned storage, so that x_offset alone decides x's alignment.
  std::vector<float4> x_aligned((x_store.size() + 3) / 4);
  std::memcpy(x_aligned.data(), x_store.data(), x_store.size() * sizeof(float));
  const float* x = reinterpret_cast<const float*>(x_aligned.data()) + c.x_offset;
  std::vector<float> got(size_t(g.rows_pad) * c.nbn, std::nanf(""));

  emu::launch(dim3(1), dim3(kThreads), L.total, [&] {
    unsigned char* smem = dynamic_smem();
    float* ws = reinterpret_cast<float*>(smem);
    float* part = reinterpret_cast<float*>(smem + L.off_part);
    float* xs = reinterpret_cast<float*>(smem + L.off_xs);
    load_slice<float>(ws, g, w.data(), c.k, [&](int r) { return r; });
    __syncthreads();
    block_matmul<float>(ws, g, x, c.ldx, c.nbn, part, xs);
    for (int e = threadIdx.x; e < g.rows_pad * c.nbn; e += kThreads) {
      const int r = e / c.nbn, b = e % c.nbn;
      got[e] = part[r * kPartStride + b];
    }
  });

  const double u = std::ldexp(1.0, -24), gamma = c.k * u / (1 - c.k * u);
  int bad = 0;
  double worst = 0;
  for (int r = 0; r < g.rows_pad; ++r) {
    for (int b = 0; b < c.nbn; ++b) {
      double exact = 0, magnitude = 0;
      if (r < c.rows) {
        for (int k = 0; k < c.k; ++k) {
          const double p = double(w[size_t(r) * c.k + k]) * x[size_t(b) * c.ldx + k];
          exact += p;
          magnitude += std::fabs(p);
        }
      }
      const double err = std::fabs(got[size_t(r) * c.nbn + b] - exact);
      const double allowed = gamma * magnitude;
      ++checks;
      if (!(err <= allowed)) {  // NaN fails too
        ++bad;
        if (bad <= 3) {
          std::printf("  MISMATCH row %d batch %d: %.9g, exact %.9g (allowed %.3g)\n", r, b,
                      got[size_t(r) * c.nbn + b], exact, allowed);
        }
      }
      if (magnitude > 0) worst = std::max(worst, err / (gamma * magnitude));
    }
  }
  failures += bad;
  std::printf("%-44s rows %3d (pad %3d) k %4d nbn %2d: k-split %d, staged %2d rows a pass, "
              "%zu bytes; worst error %.3f of the bound%s\n",
              c.name, c.rows, g.rows_pad, c.k, c.nbn, g.ksplit, g.stage_rows, L.total,
              worst, bad ? "  FAILED" : "");
}

}  // namespace

int main() {
  const std::vector<ProductCase> cases = {
      // G4's forward slice (U = 4, P = 512) at B = 1: tiles of 4 x 1, the
      // depth in two k-split parts.
      {"forward, one row", 16, 512, 1, 512, 0},
      {"forward, two rows", 16, 512, 2, 512, 0},
      {"forward, three rows (tile of 4)", 16, 512, 3, 512, 0},
      {"forward, eight rows", 16, 512, 8, 512, 0},
      // Rows past a multiple of 4 and a depth past a multiple of 4: element
      // loads and zero-padded granules.
      {"ragged rows and depth", 18, 37, 5, 37, 0},
      {"ragged depth, aligned stride", 12, 61, 6, 64, 0},
      // A base off the 16-byte grid: element loads though the stride is not.
      {"misaligned base", 16, 256, 7, 256, 1},
      // G1-like chunk: the whole 32 rows of h in one pass.
      {"full chunk", 16, 512, 32, 512, 0},
      // U = 16: more row tiles than warps (each warp loops), no k-split;
      // the fallback buffer (16 KB): passes of 8 rows.
      {"wide slice, 16 KB buffer", 64, 512, 32, 512, 0, 4096},
      // The backward's transposed slice: few rows, depth 4H, in k-split
      // parts of at least 32 granules, and several staging passes.
      {"backward U4 H512", 4, 2048, 1, 2048, 0},
      {"backward U4 H512, a chunk (passes 15, 15, 2)", 4, 2048, 32, 2048, 0, 30720},
      {"backward U8 H1024, stride past the depth", 8, 4096, 5, 4100, 0, 12288},
      // The smallest buffer: one row a pass.
      {"one row a pass", 8, 300, 3, 300, 0, 0},
      {"one row tile, short depth (one part)", 4, 100, 9, 100, 0},
  };
  for (const ProductCase& c : cases) run(c);
  std::printf("%d checks, %d mismatches\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
