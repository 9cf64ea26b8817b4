#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// One thread per (stream, channel), summing its active pixels in order (deterministic; a first version).
template <typename T>
__global__ void global_pool_kernel(GlobalPoolParams p) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t hw = p.h * p.w;
  DELTAJAX_GRID_STRIDE(t, p.n * p.c) {
    const int64_t b = t / p.c, k = t % p.c;
    float sum = 0.f;
    for (int64_t i = b * hw; i < (b + 1) * hw; ++i)
      if (p.mask[i]) sum += to_float(x[i * p.c + k]);
    p.acc[t] += sum / float(hw);
  }
}

}  // namespace

cudaError_t global_pool(const GlobalPoolParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    global_pool_kernel<decltype(tag)><<<grid_for(p.n * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
