// The host side of the persistent and cluster kernels: plan caches, the
// occupancy-checked planners, and the cooperative and cluster launches.
// Included only by the kernels' headers (persistent_fwd.cuh, ...), whose
// plan_* and launch_* wrappers call these with their kernel and layout.
#pragma once

#include <c10/cuda/CUDAException.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "cuda/persistent/persistent_common.cuh"

namespace fusedlstm::cuda::persistent {

// Launch plans by shape and device. Each planner keeps one (a static per
// kernel instantiation), which keeps the occupancy queries off the per-call
// path; planning itself runs outside the lock.
template <typename Key>
class PlanCache {
 public:
  std::optional<PersistentPlan> find(const Key& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = plans_.find(key);
    if (it == plans_.end()) return std::nullopt;
    return it->second;
  }
  PersistentPlan store(const Key& key, const PersistentPlan& plan) {
    std::lock_guard<std::mutex> lock(mu_);
    plans_[key] = plan;
    return plan;
  }

 private:
  std::mutex mu_;
  std::map<Key, PersistentPlan> plans_;
};

// A cluster launch's configuration: `grid` CTAs of kThreads in clusters of
// `cluster` along x. Holds the attribute its config points to, so it is
// neither copied nor moved.
struct ClusterLaunchConfig {
  ClusterLaunchConfig(int cluster, int grid, size_t smem, cudaStream_t stream) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = unsigned(cluster);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    config.gridDim = dim3(unsigned(grid));
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = 1;
  }
  ClusterLaunchConfig(const ClusterLaunchConfig&) = delete;
  ClusterLaunchConfig& operator=(const ClusterLaunchConfig&) = delete;

  cudaLaunchAttribute attr[1];
  cudaLaunchConfig_t config = {};
};

// The GPU target (compute capability x 10) that the current device's image
// of `kernel` was compiled for: its PTX target, which is what __CUDA_ARCH__
// was (binaryVersion is the device's own where older PTX was JIT-compiled).
inline int kernel_image_arch(const void* kernel) {
  cudaFuncAttributes attr;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, kernel));
  return attr.ptxVersion;
}

// Why a kernel whose instructions need target `needed` cannot run from an
// image for `image`, or "" if it can. An image built for an older target (a
// TORCH_CUDA_ARCH_LIST entry below `needed`, or older PTX) only traps.
inline std::string image_refusal(int image, int needed, const char* instructions) {
  if (image >= needed) return "";
  return std::string("its ") + instructions + " need compute capability " +
         std::to_string(needed / 10) + "." + std::to_string(needed % 10) +
         ", and this device runs the build's code for " + std::to_string(image / 10) +
         "." + std::to_string(image % 10);
}

// The launch plan of a cooperative kernel whose CTA k owns hidden units
// [k*U, k*U + U) and state columns [k*PU, k*PU + PU), PU = ceil(P / grid).
// layout(U, PU, H, P, stage_elems) is the CTA's shared memory. Takes the
// smallest U (a multiple of 4) whose grid is co-resident: smaller U means
// more CTAs and less shared memory each; U is judged with the smallest
// staging buffer (exact fp32: one row of x; tensor-core types: none), so
// that the buffer never decides it. Then the buffer (x_stage_elems): exact
// fp32 stages x in what the rest leaves of kFmaSmemTarget (or of the
// device's limit), or else in kFmaStageFallbackFloats; with stage_chunks
// (the forward), a tensor-core kernel gets kChunk rows of its first slice's
// depth; each only where the grid stays co-resident. Cached per shape and
// device (PlanCache).
template <typename T, typename Layout>
PersistentPlan plan_cooperative(const void* kernel, int H, int P, int device,
                                Layout layout, bool stage_chunks = false) {
  static PlanCache<std::tuple<int, int, int>> cache;
  const auto key = std::make_tuple(H, P, device);
  if (const auto hit = cache.find(key)) return *hit;
  PersistentPlan plan;
  plan.block = kThreads;
  int sms = 0, coop = 0, smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const std::string old_image = image_refusal(
      kernel_image_arch(kernel), kMinImageArch<T>, "tensor-core (mma.sync) instructions");
  if (!coop) {
    plan.reason = "the device does not support cooperative launches";
  } else if (!old_image.empty()) {
    plan.reason = old_image;
  } else {
    // Always the device maximum, so concurrent callers never race on it.
    C10_CUDA_CHECK(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin));
    // smem grows with U, so the first U over the limit ends the search.
    for (int U = 4;; U += 4) {
      const int grid = (H + U - 1) / U;
      const int PU = (P + grid - 1) / grid;
      SmemLayout L = layout(U, PU, H, P, 0);  // fp32: one row staged
      if (L.total > size_t(smem_optin)) {
        plan.reason = "the weight slices per CTA need " + std::to_string(L.total) +
                      " bytes of shared memory, over the device's " +
                      std::to_string(smem_optin);
        break;
      }
      auto co_resident = [&](const SmemLayout& l) {
        int per_sm = 0;
        C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, kernel, kThreads, l.total));
        return per_sm >= 1 && grid <= per_sm * sms;
      };
      int stage = 0;
      bool staged = false;  // try_stage has checked co-residency already
      auto try_stage = [&](size_t elems) {
        const SmemLayout l = layout(U, PU, H, P, elems);
        if (l.total > size_t(smem_optin) || !co_resident(l)) return false;
        L = l;
        stage = int(elems);
        staged = true;
        return true;
      };
      if constexpr (!kTensorCore<T>) {
        // The widest staging buffer that keeps this U's grid co-resident:
        // up to the target, else 16 KB, else the one row.
        const size_t cap = std::min(kFmaSmemTarget, size_t(smem_optin));
        const size_t wide = cap > L.off_xs ? (cap - L.off_xs) / 4 : 0;
        if (!try_stage(wide)) try_stage(size_t(kFmaStageFallbackFloats));
      } else if (stage_chunks) {
        try_stage(size_t(kChunk) * L.w1.stride);
      }
      if (staged || co_resident(L)) {
        plan.fits = true;
        plan.grid = grid;
        plan.units = U;
        plan.proj_units = PU;
        plan.smem = L.total;
        plan.x_stage_elems = stage;
        break;
      }
      if (U >= H) {
        plan.reason = "no grid of co-resident CTAs holds the weights";
        break;
      }
    }
  }
  return cache.store(key, plan);
}

// The launch plan of a cluster kernel (lstm_cluster_fwd, lstm_cluster_bwd): CS <= 16 CTAs per
// cluster own U = ceil(H / CS) units each (a multiple of 4), and each of NC
// clusters takes BT = ceil(B / NC) batch rows. The largest cluster wins
// (least work per CTA per step: the step is latency-bound); NC is as many as
// can be resident at once (cudaOccupancyMaxActiveClusters) with the shared
// memory of their batch tile, at most B; or, where no such tile fits, as
// many as the widest tile that fits needs, run in waves.
// smem_of(U, P, BT) is a CTA's shared memory. `twin`, if given, is a
// variant of `kernel` with the same launch bounds and shared memory that may
// run the same plan: it gets the same attributes. Cached per shape and
// device (PlanCache).
template <typename SmemOf>
PersistentPlan plan_cluster(const void* kernel, int H, int P, int B, int device,
                            SmemOf smem_of, const void* twin = nullptr) {
  static PlanCache<std::tuple<int, int, int, int>> cache;
  const auto key = std::make_tuple(H, P, B, device);
  if (const auto hit = cache.find(key)) return *hit;
  PersistentPlan plan;
  plan.block = kThreads;
  int clusters_ok = 0, smem_optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&clusters_ok, cudaDevAttrClusterLaunch, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  plan.reason = "the device does not support thread-block clusters (sm_90 and later)";
  if (clusters_ok) {
    const std::string old_image =
        image_refusal(kernel_image_arch(kernel), 90, "thread-block clusters");
    if (!old_image.empty()) {
      plan.reason = old_image;
      clusters_ok = 0;
    }
  }
  if (clusters_ok && B > 0) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin));
    C10_CUDA_CHECK(cudaFuncSetAttribute(
        kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    if (twin != nullptr) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(
          twin, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_optin));
      C10_CUDA_CHECK(cudaFuncSetAttribute(
          twin, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
    }
    plan.reason = "W_hh does not fit in the shared memory of one cluster of "
                  "16 CTAs (" + std::to_string(smem_optin) + " bytes each)";
    // How many clusters of CS CTAs with `smem` bytes each can be resident.
    auto resident = [&](int CS, size_t smem) {
      const ClusterLaunchConfig one(CS, CS, smem, nullptr);
      int n = 0;
      // A size the device cannot schedule is an error here, not a plan.
      if (cudaOccupancyMaxActiveClusters(&n, kernel, &one.config) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
      }
      return n;
    };
    // Two passes. The first wants every cluster of the grid resident at
    // once: a larger batch tile takes more shared memory, which can leave
    // fewer clusters resident, so NC shrinks (BT grows) until all are, for
    // clusters past those would run the whole sequence again in a second
    // wave. Where no tile both fits and leaves its clusters resident, the
    // second takes the largest tile that fits and runs its clusters in
    // waves: slower, but correct, as clusters never wait on each other.
    for (const bool waves : {false, true}) {
      for (int CS = 16; CS >= 1 && !plan.fits; --CS) {
        const int U = ((H + CS - 1) / CS + 3) / 4 * 4;
        if ((CS - 1) * U >= H) continue;  // a CTA with no units: a smaller CS
        const size_t smem_one = smem_of(U, P, 1);
        if (smem_one > size_t(smem_optin)) break;  // smaller clusters need more
        int NC = std::min(B, resident(CS, smem_one)), BT = 0;
        if (!waves) {
          while (NC >= 1) {  // NC falls on each pass
            BT = (B + NC - 1) / NC;
            const size_t smem = smem_of(U, P, BT);
            if (smem > size_t(smem_optin)) {  // for the second pass
              NC = 0;
              break;
            }
            const int held = resident(CS, smem), needed = (B + BT - 1) / BT;
            if (needed <= held) break;
            NC = held;  // held < needed <= NC
          }
        } else if (NC >= 1) {
          int fits = 1, over = B + 1;  // smem_of(fits) fits, smem_of(over) does not
          while (over - fits > 1) {
            const int mid = fits + (over - fits) / 2;
            (smem_of(U, P, mid) <= size_t(smem_optin) ? fits : over) = mid;
          }
          BT = fits;
          NC = resident(CS, smem_of(U, P, BT)) >= 1 ? (B + BT - 1) / BT : 0;
        }
        if (NC < 1) {
          if (waves) {
            plan.reason = "no cluster of " + std::to_string(CS) +
                          " CTAs holding W_hh can be resident on the device";
          }
          continue;
        }
        plan.fits = true;
        plan.reason.clear();
        plan.cluster = CS;
        plan.units = U;
        plan.batch_tile = BT;
        plan.grid = CS * ((B + BT - 1) / BT);
        plan.smem = smem_of(U, P, BT);
        plan.all_resident = !waves;
      }
      if (plan.fits) break;
    }
  }
  return cache.store(key, plan);
}

#ifdef FUSEDLSTM_CUDA_EMULATION
// The host emulation (cpp_tests/cuda_emulation) calls a kernel as a function:
// every kernel here takes (Params, int, int), so its address converts back.
template <typename Params>
auto emulated_kernel(const void* kernel) {
  return reinterpret_cast<void (*)(Params, int, int)>(const_cast<void*>(kernel));
}
#endif

// Launches a cluster kernel(params, U, BT) on `stream` with its plan.
template <typename Params>
void launch_cluster(const void* kernel, const PersistentPlan& plan,
                    const Params& params, cudaStream_t stream) {
  TORCH_CHECK(plan.fits && plan.cluster > 0, "fusedlstm: cluster launch without a plan");
  Params p = params;
  int U = plan.units, BT = plan.batch_tile;
#ifdef FUSEDLSTM_CUDA_EMULATION
  emu::launch(dim3(plan.grid), dim3(plan.block), plan.smem,
              [&] { emulated_kernel<Params>(kernel)(p, U, BT); }, plan.cluster);
#else
  void* args[] = {&p, &U, &BT};
  const ClusterLaunchConfig launch(plan.cluster, plan.grid, plan.smem, stream);
  C10_CUDA_CHECK(cudaLaunchKernelExC(&launch.config, kernel, args));
#endif
}

// Launches a persistent kernel(params, U, PU) on `stream` with its plan. A
// cooperative launch either has every CTA resident at once or fails
// (cudaErrorCooperativeLaunchTooLarge): grid.sync can never deadlock.
template <typename Params>
void launch_cooperative(const void* kernel, const PersistentPlan& plan,
                        const Params& params, cudaStream_t stream) {
  TORCH_CHECK(plan.fits, "fusedlstm: persistent launch without a plan");
  Params p = params;
  p.x_stage_elems = plan.x_stage_elems;
  int U = plan.units, PU = plan.proj_units;
#ifdef FUSEDLSTM_CUDA_EMULATION
  emu::launch(dim3(plan.grid), dim3(plan.block), plan.smem,
              [&] { emulated_kernel<Params>(kernel)(p, U, PU); });
#else
  void* args[] = {&p, &U, &PU};
  C10_CUDA_CHECK(cudaLaunchCooperativeKernel(kernel, dim3(plan.grid),
                                             dim3(plan.block), args, plan.smem,
                                             stream));
#endif
}

}  // namespace fusedlstm::cuda::persistent
