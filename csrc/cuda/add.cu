#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

template <typename T>
__global__ void add_kernel(AddParams p) {
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  DELTAJAX_GRID_STRIDE(i, p.n * p.h * p.w) {
    const bool xm = p.x_mask[i], ym = p.y_mask[i];
    p.out_mask[i] = xm || ym;
    if (!xm && !ym) continue;
    for (int64_t k = 0; k < p.c; ++k)
      out[i * p.c + k] = from_float<T>((xm ? to_float(x[i * p.c + k]) : 0.f) + (ym ? to_float(y[i * p.c + k]) : 0.f));
  }
}

}  // namespace

cudaError_t add(const AddParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    add_kernel<decltype(tag)><<<grid_for(p.n * p.h * p.w), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
