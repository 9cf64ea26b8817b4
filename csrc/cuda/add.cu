#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// out = x + y on the union of the masks, lanes across the channels of each active pixel.
template <typename T>
__global__ void __launch_bounds__(kBlock) add_kernel(AddParams p, PixelWalk w) {
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int64_t c = p.c;
  for_active_pixels(w, PixelMasks{p.x_mask, p.y_mask, p.out_mask}, [&](PixelLanes l) {
    if (l.pixel < 0) return;
    const int64_t i = l.pixel, row = i * c;
    const bool xm = p.x_mask[i], ym = p.y_mask[i];
    if (l.sub == 0) p.out_mask[i] = 1;
#pragma unroll 4
    for (int64_t k = l.sub; k < c; k += l.group)
      out[row + k] = from_float<T>((xm ? to_float(x[row + k]) : 0.f) + (ym ? to_float(y[row + k]) : 0.f));
  });
}

}  // namespace

cudaError_t add(const AddParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    const PixelWalk w = pixel_walk(p.n * p.h * p.w, p.c);
    add_kernel<decltype(tag)><<<walk_grid(w), kBlock, 0, stream>>>(p, w);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
