#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

constexpr int kPoolWarps = 16;

// Block (channel slice of 32, stream): lane = channel, warp w sums the active pixels w, w + kPoolWarps, ... in
// order, four mask bytes and their values in flight per step; then warp 0 adds the warps' sums in warp order.
// Deterministic. (Its first version, one thread per (stream, channel) walking every pixel, took 60 us for
// EfficientNet-Lite0's 1280 channels on 14x24 pixels on an H200, with nothing active.)
template <typename T>
__global__ void __launch_bounds__(kPoolWarps * 32) global_pool_kernel(GlobalPoolParams p) {
  __shared__ float partial[kPoolWarps][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t k = int64_t(blockIdx.x) * 32 + lane, b = blockIdx.y, hw = p.h * p.w;
  const T* x = static_cast<const T*>(p.x) + b * hw * p.c;
  const uint8_t* mask = p.mask + b * hw;
  constexpr int kUnroll = 4;
  float sum = 0.f;
  for (int64_t i0 = warp; i0 < hw; i0 += kUnroll * kPoolWarps) {
    float v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = i0 + int64_t(u) * kPoolWarps;
      v[u] = i < hw && k < p.c && mask[i] ? to_float(x[i * p.c + k]) : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) sum += v[u];
  }
  partial[warp][lane] = sum;
  __syncthreads();
  if (warp != 0 || k >= p.c) return;
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kPoolWarps; ++w) total += partial[w][lane];
  p.acc[b * p.c + k] += total / float(hw);
}

}  // namespace

cudaError_t global_pool(const GlobalPoolParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    const dim3 grid(unsigned((p.c + 31) / 32), unsigned(p.n));
    global_pool_kernel<decltype(tag)><<<grid, kPoolWarps * 32, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
