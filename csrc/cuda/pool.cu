#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// One thread per output value (the channel-0 thread also writes the mask). Max pool: a second kernel adds
// the delta to the state after every window has read the old state.
template <typename T>
__global__ void pool_kernel(PoolParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const bool is_max = p.acc != nullptr;
  DELTAJAX_GRID_STRIDE(t, p.n * p.ho * p.wo * p.c) {
    const int64_t o = t / p.c, k = t % p.c;
    const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
    const int64_t y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
    const int64_t ya = max(y0, int64_t(0)), yb = min(y0 + p.kh, p.h);
    const int64_t xa = max(x0, int64_t(0)), xb = min(x0 + p.kw, p.w);
    bool any = false;
    for (int64_t iy = ya; iy < yb; ++iy)
      for (int64_t ix = xa; ix < xb; ++ix) any |= p.in_mask[(b * p.h + iy) * p.w + ix] != 0;
    if (k == 0) p.out_mask[o] = any;
    if (!any) continue;
    float hi_new = is_max ? -INFINITY : 0.f, hi_old = hi_new;
    for (int64_t iy = ya; iy < yb; ++iy)
      for (int64_t ix = xa; ix < xb; ++ix) {
        const int64_t pix = (b * p.h + iy) * p.w + ix;
        const float d = p.in_mask[pix] ? to_float(x[pix * p.c + k]) : 0.f;
        if (is_max) {
          const float a = p.acc[pix * p.c + k];
          hi_new = fmaxf(hi_new, a + d);
          hi_old = fmaxf(hi_old, a);
        } else {
          hi_new += d;
        }
      }
    const float divisor = p.count_include_pad ? float(p.kh * p.kw) : float((yb - ya) * (xb - xa));
    out[t] = from_float<T>(is_max ? hi_new - hi_old : hi_new / divisor);
  }
}

template <typename T>
__global__ void pool_state_kernel(PoolParams p) {
  const T* x = static_cast<const T*>(p.x);
  DELTAJAX_GRID_STRIDE(t, p.n * p.h * p.w * p.c) {
    if (p.in_mask[t / p.c]) p.acc[t] += to_float(x[t]);
  }
}

}  // namespace

cudaError_t pool(const PoolParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    pool_kernel<T><<<grid_for(p.n * p.ho * p.wo * p.c), kBlock, 0, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess || p.acc == nullptr) return e;
    pool_state_kernel<T><<<grid_for(p.n * p.h * p.w * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
