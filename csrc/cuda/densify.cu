#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// out += x at active pixels, lanes across the channels of each active pixel.
template <typename T>
__global__ void __launch_bounds__(kBlock) densify_kernel(DensifyParams p, PixelWalk w) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t c = p.c;
  for_active_pixels(w, PixelMasks{p.mask, nullptr, nullptr}, [&](PixelLanes l) {
    if (l.pixel < 0) return;
    const int64_t row = l.pixel * c;
#pragma unroll 4
    for (int64_t k = l.sub; k < c; k += l.group) p.out[row + k] += to_float(x[row + k]);
  });
}

}  // namespace

cudaError_t densify(const DensifyParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    const PixelWalk w = pixel_walk(p.n * p.h * p.w, p.c);
    densify_kernel<decltype(tag)><<<walk_grid(w), kBlock, 0, stream>>>(p, w);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
