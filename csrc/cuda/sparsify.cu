#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/sparsify.h"

namespace deltajax::cuda {
namespace {

// Lanes per pixel: one for frames of at most 4 channels (RGB input: a warp reads 32 whole pixels, contiguous),
// else lanes_per_pixel(C) (a warp takes 32 / group pixels per step).
__host__ __device__ inline int sparsify_lanes(int64_t c) { return c <= 4 ? 1 : lanes_per_pixel(c); }

// Every pixel, sparsify_lanes(C) lanes each. fn(pixel or -1, first channel, lanes) is called by all 32 lanes of a
// warp together.
template <class Fn>
__device__ __forceinline__ void for_each_pixel(int64_t pixels, int64_t c, Fn fn) {
  const int group = sparsify_lanes(c), per_warp = 32 / group, lane = threadIdx.x & 31, slot = lane / group;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t base = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5) * per_warp; base < pixels;
       base += warps * per_warp) {
    const int64_t i = base + slot;
    fn(i < pixels ? i : int64_t(-1), lane - slot * group, group);
  }
}

inline int pixel_lanes_grid(int64_t pixels, int64_t c) {
  const int per_warp = 32 / sparsify_lanes(c);
  return grid_for((pixels + per_warp - 1) / per_warp * 32);
}

// Whether pixel i changed: max_c |x - ref| > threshold, the max reduced across the pixel's lanes (all 32 lanes of
// the warp call it together; i = -1 for a lane without a pixel).
template <typename T>
__device__ __forceinline__ bool changed(const SparsifyParams& p, int64_t i, int sub, int group) {
  const T* x = static_cast<const T*>(p.x);
  float m = 0.f;
  for (int64_t k = sub; i >= 0 && k < p.c; k += group)
    m = fmaxf(m, fabsf(to_float(x[i * p.c + k]) - p.ref[i * p.c + k]));
  for (int o = group >> 1; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return m > p.threshold;
}

// Pixel i's update, by the lane that holds channel `sub` and every group-th after it: values = x - ref rounded to
// T; ref becomes what was sent (x itself when the update is exact), so a rounding is sent with the next update
// (error feedback).
template <typename T>
__device__ __forceinline__ void emit(const SparsifyParams& p, int64_t i, int sub, int group) {
  const T* x = static_cast<const T*>(p.x);
  T* values = static_cast<T*>(p.values);
  for (int64_t k = sub; k < p.c; k += group) {
    const float xv = to_float(x[i * p.c + k]), ref = p.ref[i * p.c + k], diff = xv - ref;
    const T v = from_float<T>(diff);
    values[i * p.c + k] = v;
    p.ref[i * p.c + k] = to_float(v) == diff ? xv : ref + to_float(v);
  }
}

// No dilation: one pass, each pixel's activity is its mask and its lanes send its update at once.
template <typename T>
__global__ void __launch_bounds__(kBlock) sparsify_kernel(SparsifyParams p) {
  for_each_pixel(p.n * p.h * p.w, p.c, [&](int64_t i, int sub, int group) {
    const bool on = changed<T>(p, i, sub, group);
    if (i < 0) return;
    if (sub == 0) p.mask[i] = on;
    if (on) emit<T>(p, i, sub, group);
  });
}

// With dilation, three passes: activity, its dilation into the mask, the updates at the masked pixels.
template <typename T>
__global__ void __launch_bounds__(kBlock) activity_kernel(SparsifyParams p) {
  for_each_pixel(p.n * p.h * p.w, p.c, [&](int64_t i, int sub, int group) {
    const bool on = changed<T>(p, i, sub, group);
    if (i >= 0 && sub == 0) p.active[i] = on;
  });
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
__global__ void __launch_bounds__(kBlock) emit_kernel(SparsifyParams p) {
  for_each_pixel(p.n * p.h * p.w, p.c, [&](int64_t i, int sub, int group) {
    if (i >= 0 && p.mask[i]) emit<T>(p, i, sub, group);
  });
}

}  // namespace

cudaError_t sparsify(const SparsifyParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    const int64_t pixels = p.n * p.h * p.w;
    const int grid = pixel_lanes_grid(pixels, p.c);
    if (p.dilation == 0) {
      sparsify_kernel<T><<<grid, kBlock, 0, stream>>>(p);
      return cudaGetLastError();
    }
    activity_kernel<T><<<grid, kBlock, 0, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    dilate_kernel<<<grid_for(pixels), kBlock, 0, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    emit_kernel<T><<<grid, kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
