#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

template <typename T>
__global__ void affine_kernel(AffineParams p) {
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  DELTAJAX_GRID_STRIDE(t, p.n * p.h * p.w * p.c) {
    if (p.mask[t / p.c]) out[t] = from_float<T>(to_float(x[t]) * p.mul[t % p.c]);
  }
}

}  // namespace

cudaError_t affine(const AffineParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    affine_kernel<decltype(tag)><<<grid_for(p.n * p.h * p.w * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
