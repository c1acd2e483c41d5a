// What one step of a cluster kernel's barrier costs on this GPU, apart from
// any LSTM: the floor under the cluster kernels' step (issue 5), and the
// test of the premise of NOTES changes 71 and 72, that a barrier's arrive
// waits for the global stores issued before it.
//
//   nvcc -O3 -arch=sm_90 -o cluster_sync_probe benchmarks/probes/cluster_sync_probe.cu
//   ./cluster_sync_probe [ITERS]       # CSV on stdout
//
// Each CTA (256 threads) runs ITERS steps of one pattern, clusters of 2-16
// CTAs, as many clusters as the G3 plan had (8 of 16 CTAs: 128) or as fit.
// Patterns, per step:
//   sync          cluster.sync() alone
//   dsmem         each thread stores 16 bytes into the next CTA's shared
//                 memory (the broadcast), then cluster.sync()
//   dsmem+global  the same plus one 16-byte global store a thread before the
//                 sync (the output row of the step)
//   split         the dsmem store, arrive, the global store, wait
//   load_after    dsmem, sync, then a global load the next step's store
//                 depends on (the step's input, loaded after the barrier)
//   load_split    dsmem, arrive, the same load, wait (loaded during it)
// Timed with CUDA events over the whole launch; the first launch of each
// pattern is a warm-up. Prints: pattern,cluster,clusters,us_per_step.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

namespace cg = cooperative_groups;

#define CHECK(x)                                                                   \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x,               \
                   cudaGetErrorString(e_));                                        \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

enum Pattern { kSync, kDsmem, kDsmemGlobal, kSplit, kLoadAfter, kLoadSplit, kPatterns };
const char* kNames[kPatterns] = {"sync", "dsmem", "dsmem+global", "split", "load_after",
                                 "load_split"};
constexpr int kThreads = 256;

template <int kPattern>
__global__ void __launch_bounds__(kThreads) probe(uint4* out, const uint4* in, int iters,
                                                  int in_elems) {
  cg::cluster_group cluster = cg::this_cluster();
  __shared__ uint4 buf[2][kThreads];
  const unsigned rank = cluster.block_rank(), next = (rank + 1) % cluster.num_blocks();
  const int me = blockIdx.x * kThreads + threadIdx.x;
  uint4 v = make_uint4(me, 0, 0, 0);
  buf[0][threadIdx.x] = v;
  buf[1][threadIdx.x] = v;
  cluster.sync();
  for (int i = 0; i < iters; ++i) {
    uint4* remote = cluster.map_shared_rank(&buf[i & 1][threadIdx.x], next);
    if constexpr (kPattern != kSync) *remote = v;
    if constexpr (kPattern == kDsmemGlobal) out[me] = v;
    if constexpr (kPattern == kSplit || kPattern == kLoadSplit) {
      cluster.barrier_arrive();
      if constexpr (kPattern == kSplit) out[me] = v;
      else v = in[(me + i * 97) % in_elems];
      cluster.barrier_wait();
    } else {
      cluster.sync();
      if constexpr (kPattern == kLoadAfter) v = in[(me + i * 97) % in_elems];
    }
    // The step reads what arrived; the next store into this half comes two
    // steps on, after this thread's next arrive.
    v.y += buf[i & 1][threadIdx.x].x;
  }
  out[me] = v;
}

// A launch of `clusters` clusters of cs CTAs (the attribute lives with it).
struct ClusterLaunch {
  cudaLaunchConfig_t cfg = {};
  cudaLaunchAttribute attr[1];
  ClusterLaunch(int cs, int clusters) {
    cfg.gridDim = dim3(cs * clusters);
    cfg.blockDim = dim3(kThreads);
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cs;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  ClusterLaunch(const ClusterLaunch&) = delete;
};

template <int kPattern>
float time_pattern(int cs, int clusters, int iters, uint4* out, const uint4* in,
                   int in_elems) {
  auto kernel = probe<kPattern>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  const ClusterLaunch launch(cs, clusters);
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  CHECK(cudaLaunchKernelEx(&launch.cfg, kernel, out, in, iters, in_elems));  // warm-up
  CHECK(cudaEventRecord(a));
  CHECK(cudaLaunchKernelEx(&launch.cfg, kernel, out, in, iters, in_elems));
  CHECK(cudaEventRecord(b));
  CHECK(cudaEventSynchronize(b));
  float ms = 0.f;
  CHECK(cudaEventElapsedTime(&ms, a, b));
  CHECK(cudaEventDestroy(a));
  CHECK(cudaEventDestroy(b));
  return ms * 1000.f / iters;
}

// How many clusters of cs CTAs can be resident at once (at most `want`).
int resident_clusters(int cs, int want) {
  auto kernel = probe<kSync>;
  CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  const ClusterLaunch launch(cs, want);
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, kernel, &launch.cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n < want ? n : want;
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20000;
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  // A 64 MiB input, past L2 only in part: loads of the kind a step's input
  // projection makes (written recently, mostly in L2).
  const int in_elems = (64 << 20) / int(sizeof(uint4));
  uint4 *out = nullptr, *in = nullptr;
  CHECK(cudaMalloc(&out, size_t(16) * 132 * kThreads * sizeof(uint4)));
  CHECK(cudaMalloc(&in, size_t(in_elems) * sizeof(uint4)));
  CHECK(cudaMemset(in, 0, size_t(in_elems) * sizeof(uint4)));
  std::printf("# %s, %d SMs, %d steps a launch\n", prop.name, prop.multiProcessorCount, iters);
  std::printf("pattern,cluster,clusters,us_per_step\n");
  for (int cs : {2, 4, 8, 16}) {
    const int clusters = resident_clusters(cs, 128 / cs);
    if (clusters < 1) {
      std::printf("# cluster of %d: none resident\n", cs);
      continue;
    }
    const float us[kPatterns] = {
        time_pattern<kSync>(cs, clusters, iters, out, in, in_elems),
        time_pattern<kDsmem>(cs, clusters, iters, out, in, in_elems),
        time_pattern<kDsmemGlobal>(cs, clusters, iters, out, in, in_elems),
        time_pattern<kSplit>(cs, clusters, iters, out, in, in_elems),
        time_pattern<kLoadAfter>(cs, clusters, iters, out, in, in_elems),
        time_pattern<kLoadSplit>(cs, clusters, iters, out, in, in_elems)};
    for (int p = 0; p < kPatterns; ++p) {
      std::printf("%s,%d,%d,%.4f\n", kNames[p], cs, clusters, us[p]);
    }
  }
  CHECK(cudaFree(out));
  CHECK(cudaFree(in));
  return 0;
}
