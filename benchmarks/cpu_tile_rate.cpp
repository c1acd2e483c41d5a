// How close the CPU recurrence's register tiles come to the core's own rate
// for their instruction: the tile_product (float FMA) or tile_product_bf16
// (vdpbf16ps) of csrc/cpu/recurrence_tiles.h, the code the layers run, timed
// on one thread over a block of packed weights, against a loop of the same
// instruction on independent register chains (24 on AVX-512, 12 on AVX2; no
// loads: the most this core can issue). Answers "are the products already at the machine's peak?"
// before a change to them is tried (benchmarks/NOTES.md: 2026-12-03, Zen 4).
//
// Built by CMake once per ISA, like cpp_tests/test_cell_math.cpp:
//   cmake --build build --target cpu_tile_rate_avx512bf16
//   build/cpu_tile_rate_avx512bf16 [--depths 128,1024] [--seconds 0.3]
// Exits 77 on a CPU without the ISA. Not a test: nothing here is asserted.
#if defined(FUSEDLSTM_TILE_RATE_AVX512BF16)
#include "cpu/bf16_dot_build.h"  // only macros: before the target header
#include "cpu/avx512bf16_target.h"  // first: see there
#elif defined(FUSEDLSTM_TILE_RATE_AVX512)
#include "cpu/avx512_target.h"  // first: see there
#else
#include "cpu/avx2_target.h"  // first: see there
#endif
#include "cpu/recurrence_tiles.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace isa = fusedlstm::cpu::FUSEDLSTM_ISA;
using isa::Reg;
using isa::kForwardRows;
using isa::kLanes;

#if defined(FUSEDLSTM_BF16_DOT)
constexpr const char* kInstruction = "vdpbf16ps";
constexpr int kMacsPerLane = 2;  // a pair of bfloat16 products per lane
using Word = uint32_t;           // one packed pair
#else
constexpr const char* kInstruction = "vfmadd";
constexpr int kMacsPerLane = 1;
using Word = float;
#endif

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Repeats `run` (which issues `per_call` instructions) for about `budget`
// seconds, five times, and returns the best rate in instructions per ns: the
// machine's neighbours only ever slow a run down.
template <typename Run>
double best_rate(Run&& run, double per_call, double budget) {
  int64_t calls = 1;
  for (;;) {  // calls per timing: enough for a tenth of the budget
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < calls; ++i) run();
    if (seconds_since(t0) > budget / 10) break;
    calls *= 2;
  }
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    for (int64_t i = 0; i < calls; ++i) run();
    best = std::max(best, calls * per_call / seconds_since(t0) / 1e9);
  }
  return best;
}

// Independent chains of the tile's instruction on registers alone: enough to
// cover its latency on two pipes, few enough to stay in registers (AVX2 has
// 16, AVX-512 32).
#if defined(FUSEDLSTM_ISA_AVX512)
constexpr int kChains = 24;
#else
constexpr int kChains = 12;
#endif

__attribute__((noinline)) void instruction_peak(int64_t iterations, Reg* sink) {
  Reg acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = isa::reg_zero();
#if defined(FUSEDLSTM_BF16_DOT)
  __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);
  __m512bh y = (__m512bh)_mm512_set1_epi32(0x3f003f00);
#else
  Reg x = isa::reg_zero(), y = isa::reg_zero();
#endif
  for (int64_t n = 0; n < iterations; ++n) {
#pragma GCC unroll 24
    for (int i = 0; i < kChains; ++i) {
#if defined(FUSEDLSTM_BF16_DOT)
      acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
#else
      acc[i] = isa::reg_fma(x, y, acc[i]);
#endif
    }
    asm volatile("" : "+v"(x), "+v"(y));  // keeps the loop's work alive
  }
  for (int i = 0; i < kChains; ++i) sink[i] = acc[i];
}

// The recurrence's R x C tile over `depth` steps of k (pairs for bfloat16) of
// one block of packed weights: C = 4 is the forward's unit tile, C = 2 the
// panel tile (backward, projection).
template <int R, int C>
void tile_over(const std::vector<uint16_t>& a16, const std::vector<float>& a32,
               int64_t lda, const std::vector<Word>& block, int64_t depth,
               Reg (&acc)[R][C]) {
#if defined(FUSEDLSTM_BF16_DOT)
  (void)a32;
  isa::tile_product_bf16<R, C>(a16.data(), lda, block.data(), 0, depth, acc,
                               nullptr);
#else
  (void)a16;
  isa::tile_product<R, C>(a32.data(), lda, block.data(), 0, depth, acc,
                          nullptr, /*two_chains=*/true);
#endif
}

template <int R, int C>
double tile_rate(int64_t depth, double budget) {
  const int64_t lda = 2 * depth + 64;  // a row of k (pairs: 2 per step)
  std::vector<uint16_t> a16(R * lda, 0x3f80);  // bfloat16 1.0
  std::vector<float> a32(R * lda, 1.0f);
#if defined(FUSEDLSTM_BF16_DOT)
  const Word half = 0x3f003f00u;  // the pair (0.5, 0.5) in bfloat16
#else
  const Word half = 0.5f;
#endif
  std::vector<Word> block(depth * C * kLanes, half);
  Reg acc[R][C];
  for (auto& row : acc)
    for (auto& r : row) r = isa::reg_zero();
  return best_rate([&] { tile_over<R, C>(a16, a32, lda, block, depth, acc); },
                   double(R) * C * depth, budget);
}

// The rates of the 1- to kForwardRows-row tiles of C vectors.
template <int C>
std::vector<double> rates_by_rows(int64_t depth, double budget) {
  std::vector<double> r = {tile_rate<1, C>(depth, budget),
                           tile_rate<2, C>(depth, budget),
                           tile_rate<3, C>(depth, budget)};
  if constexpr (kForwardRows > 3) {
    r.push_back(tile_rate<std::min<int>(4, kForwardRows), C>(depth, budget));
    r.push_back(tile_rate<std::min<int>(5, kForwardRows), C>(depth, budget));
    r.push_back(tile_rate<std::min<int>(6, kForwardRows), C>(depth, budget));
  }
  return r;
}

bool cpu_has_isa() {
#if defined(FUSEDLSTM_BF16_DOT)
  return __builtin_cpu_supports("avx512bf16");
#elif defined(FUSEDLSTM_ISA_AVX512)
  return __builtin_cpu_supports("avx512f");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}

std::vector<int64_t> parse_depths(const char* s) {
  std::vector<int64_t> out;
  for (const char* p = s; *p;) {
    char* end = nullptr;
    out.push_back(std::strtoll(p, &end, 10));
    if (end == p || out.back() <= 0) {
      std::fprintf(stderr, "--depths takes positive integers: %s\n", s);
      std::exit(2);
    }
    p = *end == ',' ? end + 1 : end;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  // The recurrence walks k in chunks of kChunk (pairs: half as many), so a
  // chunk of a block stays in cache over the step's row tiles; the input
  // projection walks the whole of I.
  std::vector<int64_t> depths = {
      kMacsPerLane == 2 ? isa::kChunk / 2 : isa::kChunk, 1024};
  double budget = 0.3;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--depths" && i + 1 < argc) {
      depths = parse_depths(argv[++i]);
    } else if (arg == "--seconds" && i + 1 < argc) {
      budget = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--depths D1,D2] [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  if (!cpu_has_isa()) {
    std::printf("skipped: this CPU lacks the ISA of this build (%s)\n",
                FUSEDLSTM_TILE_RATE_NAME);
    return 77;
  }
  // The peak is sampled before each depth's tiles and after the last, and
  // the best sample is the core's rate.
  Reg sink[kChains];
  const int64_t iterations = 1 << 16;
  double peak = 0;
  auto sample_peak = [&] {
    peak = std::max(peak, best_rate([&] { instruction_peak(iterations, sink); },
                                    double(kChains) * iterations, budget));
  };
  // rates[depth][columns == 2][rows - 1]
  std::vector<std::vector<std::vector<double>>> rates;
  for (const int64_t depth : depths) {
    sample_peak();
    rates.push_back({rates_by_rows<4>(depth, budget),
                     rates_by_rows<2>(depth, budget)});
  }
  sample_peak();
  const double lane_macs = double(kLanes) * kMacsPerLane;
  std::printf("%s build, one thread: %s on %d register chains %.2f per ns "
              "(%.1f GMAC/s)\n", FUSEDLSTM_TILE_RATE_NAME, kInstruction,
              kChains, peak, peak * lane_macs);
  std::printf("| tile (rows x vectors) | depth | %s per ns | of peak |\n",
              kInstruction);
  std::printf("|---|---:|---:|---:|\n");
  for (size_t d = 0; d < depths.size(); ++d) {
    for (int c = 0; c < 2; ++c) {
      const auto& by_rows = rates[d][c];
      for (size_t r = 0; r < by_rows.size(); ++r) {
        std::printf("| %zu x %d | %lld | %.2f | %.1f %% |\n", r + 1,
                    c == 0 ? 4 : 2, static_cast<long long>(depths[d]),
                    by_rows[r], 100 * by_rows[r] / peak);
      }
    }
  }
  return 0;
}
