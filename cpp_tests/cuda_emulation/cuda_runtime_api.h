// Host stand-in for the CUDA runtime API (see prelude.h): the few types and
// calls the kernels' host code uses (the launches themselves call
// emu::launch under the emulation), answering for an emulated device with
// emu::kSms SMs and an H100's shared memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace emu {
inline int kSms = 4;                       // SMs of the emulated device
inline int kMaxBlocksPerSm = 8;            // a cap the tests lower to force larger U
constexpr int kSmemOptin = 227 * 1024;     // per block, opt-in
constexpr int kSmemPerSm = 228 * 1024;
constexpr int kThreadsPerSm = 2048;
// Compute capability of the emulated device and the GPU target its image of
// every kernel was built for, both x 10 (an H100 by default; a test sets
// them to 75 for a Turing GPU, whose kernels then take their sm_75 forms).
inline int kComputeCapability = 90;
inline int kImageArch = 90;
// True: the build holds no image the device can run (cudaFuncGetAttributes
// fails as for a TORCH_CUDA_ARCH_LIST without the device's target).
inline bool kNoImage = false;
}  // namespace emu

typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidDeviceFunction = 98;
constexpr cudaError_t cudaErrorNoKernelImageForDevice = 209;
typedef struct CUstream_st* cudaStream_t;
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrCooperativeLaunch,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrClusterLaunch,
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor,
};
enum cudaFuncAttribute {
  cudaFuncAttributeMaxDynamicSharedMemorySize,
  cudaFuncAttributeNonPortableClusterSizeAllowed,
};

// Cluster launches: the subset of cudaLaunchConfig_t the kernels' host code
// sets.
enum cudaLaunchAttributeID { cudaLaunchAttributeClusterDimension = 4 };
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes = 0;
  cudaStream_t stream = nullptr;
  cudaLaunchAttribute* attrs = nullptr;
  unsigned numAttrs = 0;
};

inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = emu::kSms; break;
    case cudaDevAttrCooperativeLaunch: *value = 1; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::kSmemOptin; break;
    case cudaDevAttrClusterLaunch: *value = emu::kComputeCapability >= 90; break;
    case cudaDevAttrComputeCapabilityMajor: *value = emu::kComputeCapability / 10; break;
    case cudaDevAttrComputeCapabilityMinor: *value = emu::kComputeCapability % 10; break;
  }
  return cudaSuccess;
}

// The two fields the host code reads.
struct cudaFuncAttributes {
  int ptxVersion = 0;
  int binaryVersion = 0;
};

inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, const void*) {
  if (emu::kNoImage) return cudaErrorNoKernelImageForDevice;
  attr->ptxVersion = emu::kImageArch;
  attr->binaryVersion = emu::kComputeCapability;
  return cudaSuccess;
}

inline cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

// Blocks per SM, limited by threads and by shared memory (1 KiB reserved per
// block, as on sm_90).
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(
    int* blocks, const void*, int block_size, size_t smem) {
  int n = emu::kThreadsPerSm / block_size;
  const size_t per_block = smem + 1024;
  if (per_block * n > size_t(emu::kSmemPerSm)) n = int(emu::kSmemPerSm / per_block);
  if (n > emu::kMaxBlocksPerSm) n = emu::kMaxBlocksPerSm;
  *blocks = n;
  return cudaSuccess;
}

// Clusters of the config's size that fit at once: whole clusters of the
// blocks that fit per SM, over all SMs (the emulated device has no GPCs).
inline cudaError_t cudaOccupancyMaxActiveClusters(int* clusters, const void* kernel,
                                                  const cudaLaunchConfig_t* config) {
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, int(config->blockDim.x),
                                                config->dynamicSmemBytes);
  unsigned size = 1;
  for (unsigned i = 0; i < config->numAttrs; ++i) {
    if (config->attrs[i].id == cudaLaunchAttributeClusterDimension) {
      size = config->attrs[i].val.clusterDim.x;
    }
  }
  *clusters = size > 16 ? 0 : per_sm * emu::kSms / int(size);
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
