#include "cuda/dtype.cuh"
#include "cuda/sparsify.h"

namespace deltajax::cuda {
namespace {

// One warp per pixel: lanes stride over channels, the max |x - ref| is reduced by shuffles.
template <typename T>
__global__ void activity_kernel(SparsifyParams p, uint8_t* active) {
  const int64_t pixels = p.n * p.h * p.w;
  const int lane = threadIdx.x & 31;
  const T* x = static_cast<const T*>(p.x);
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; i < pixels;
       i += (int64_t(gridDim.x) * blockDim.x) >> 5) {
    float m = 0.f;
    for (int64_t k = lane; k < p.c; k += 32) m = fmaxf(m, fabsf(to_float(x[i * p.c + k]) - p.ref[i * p.c + k]));
    for (int off = 16; off; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    if (lane == 0) active[i] = m > p.threshold;
  }
}

__global__ void dilate_kernel(SparsifyParams p) {
  const int64_t pixels = p.n * p.h * p.w;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < pixels; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / (p.h * p.w), y = (i / p.w) % p.h, x = i % p.w;
    uint8_t any = 0;
    for (int64_t yy = max(int64_t(0), y - p.dilation); yy <= min(p.h - 1, y + p.dilation); ++yy)
      for (int64_t xx = max(int64_t(0), x - p.dilation); xx <= min(p.w - 1, x + p.dilation); ++xx)
        any |= p.active[(b * p.h + yy) * p.w + xx];
    p.mask[i] = any;
  }
}

template <typename T>
__global__ void emit_kernel(SparsifyParams p) {
  const int64_t pixels = p.n * p.h * p.w;
  const int lane = threadIdx.x & 31;
  const T* x = static_cast<const T*>(p.x);
  T* values = static_cast<T*>(p.values);
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5; i < pixels;
       i += (int64_t(gridDim.x) * blockDim.x) >> 5) {
    if (!p.mask[i]) continue;
    for (int64_t k = lane; k < p.c; k += 32) {
      const float xv = to_float(x[i * p.c + k]);
      values[i * p.c + k] = from_float<T>(xv - p.ref[i * p.c + k]);
      p.ref[i * p.c + k] = xv;
    }
  }
}

int blocks_for(int64_t threads_needed, int block) {
  const int64_t b = (threads_needed + block - 1) / block;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

}  // namespace

cudaError_t sparsify(const SparsifyParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int kBlock = 256;
    const int64_t pixels = p.n * p.h * p.w;
    uint8_t* active = p.dilation > 0 ? p.active : p.mask;
    activity_kernel<T><<<blocks_for(pixels * 32, kBlock), kBlock, 0, stream>>>(p, active);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    if (p.dilation > 0) {
      dilate_kernel<<<blocks_for(pixels, kBlock), kBlock, 0, stream>>>(p);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    }
    emit_kernel<T><<<blocks_for(pixels * 32, kBlock), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
