#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

__device__ __forceinline__ bool live(const int32_t* taps, const float* weights, int64_t o, int j, int64_t size) {
  return weights[o * 2 + j] != 0.f && taps[o * 2 + j] >= 0 && taps[o * 2 + j] < size;
}

// One thread per output value; the channel-0 thread writes the mask.
template <typename T>
__global__ void resample_kernel(ResampleParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  DELTAJAX_GRID_STRIDE(t, p.n * p.ho * p.wo * p.c) {
    const int64_t o = t / p.c, k = t % p.c;
    const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
    bool any = false;
    float acc = 0.f;
    for (int a = 0; a < 2; ++a) {
      if (!live(p.taps_h, p.weights_h, oy, a, p.h)) continue;
      float row = 0.f;
      for (int e = 0; e < 2; ++e) {
        if (!live(p.taps_w, p.weights_w, ox, e, p.w)) continue;
        const int64_t pix = (b * p.h + p.taps_h[oy * 2 + a]) * p.w + p.taps_w[ox * 2 + e];
        if (!p.in_mask[pix]) continue;
        any = true;
        row += p.weights_w[ox * 2 + e] * to_float(x[pix * p.c + k]);
      }
      acc += p.weights_h[oy * 2 + a] * row;
    }
    if (k == 0) p.out_mask[o] = any;
    if (any) out[t] = from_float<T>(acc);
  }
}

}  // namespace

cudaError_t resample(const ResampleParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    resample_kernel<decltype(tag)><<<grid_for(p.n * p.ho * p.wo * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
