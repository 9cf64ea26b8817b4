// Grid sizing and the grid-stride loop shared by the simple kernels, the device facts that launchers size persistent
// grids by, and the environment's measurement overrides.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

namespace deltajax::cuda {

constexpr int kBlock = 256;

inline int grid_for(int64_t threads) {
  const int64_t b = (threads + kBlock - 1) / kBlock;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

constexpr int kMaxDevices = 64;  // launch facts are cached per device, for devices below this index

// The current device's index, multiprocessor count, opt-in shared memory per block (bytes) and compute capability
// (major * 10 + minor).
struct DeviceFacts {
  int device = 0, sms = 0, smem_optin = 0, cc = 0;
};

// Queried once per device (the FFI handlers run every frame, and attribute queries cost host time).
inline cudaError_t device_facts(DeviceFacts& f) {
  static std::atomic<int> sms[kMaxDevices], smem[kMaxDevices], cc[kMaxDevices];
  if (cudaError_t e = cudaGetDevice(&f.device); e != cudaSuccess) return e;
  const int slot = f.device < kMaxDevices ? f.device : 0;
  f.sms = sms[slot].load(std::memory_order_acquire);
  f.smem_optin = smem[slot].load(std::memory_order_relaxed);
  f.cc = cc[slot].load(std::memory_order_relaxed);
  if (f.sms != 0 && f.device < kMaxDevices) return cudaSuccess;
  if (cudaError_t e = cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, f.device); e != cudaSuccess)
    return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&f.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, f.device);
      e != cudaSuccess)
    return e;
  int major = 0, minor = 0;
  if (cudaError_t e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, f.device); e != cudaSuccess)
    return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, f.device); e != cudaSuccess)
    return e;
  f.cc = major * 10 + minor;
  if (f.device < kMaxDevices) {
    smem[slot].store(f.smem_optin, std::memory_order_relaxed);
    cc[slot].store(f.cc, std::memory_order_relaxed);
    sms[slot].store(f.sms, std::memory_order_release);
  }
  return cudaSuccess;
}

// The number in environment variable `name` (a measurement override), or -1 where it is unset or empty.
inline double env_number(const char* name) {
  const char* s = std::getenv(name);
  return s && *s ? std::atof(s) : -1.0;
}

#define DELTAJAX_GRID_STRIDE(i, count) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (count); i += int64_t(gridDim.x) * blockDim.x)

}  // namespace deltajax::cuda
