#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// One thread per value: out += x at active pixels.
template <typename T>
__global__ void densify_kernel(DensifyParams p) {
  const T* x = static_cast<const T*>(p.x);
  DELTAJAX_GRID_STRIDE(t, p.n * p.h * p.w * p.c) {
    if (p.mask[t / p.c]) p.out[t] += to_float(x[t]);
  }
}

}  // namespace

cudaError_t densify(const DensifyParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    densify_kernel<decltype(tag)><<<grid_for(p.n * p.h * p.w * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
