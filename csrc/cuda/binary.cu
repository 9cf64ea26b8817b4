#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

__device__ __forceinline__ float apply(BinaryOp op, float a, float b) {
  return op == BinaryOp::kMultiply ? a * b : fmaxf(a, b);
}

// One thread per value. A broadcast gate's state is updated by a second kernel, after every pixel read it.
template <typename T>
__global__ void binary_kernel(BinaryParams p) {
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int64_t hw = p.h * p.w;
  DELTAJAX_GRID_STRIDE(t, p.n * hw * p.c) {
    const int64_t i = t / p.c, k = t % p.c, b = i / hw;
    const bool xm = p.x_mask[i], ym = p.y_broadcast ? p.y_mask[b] : p.y_mask[i];
    if (k == 0) p.out_mask[i] = xm || ym;
    if (!xm && !ym) continue;
    const int64_t yt = p.y_broadcast ? b * p.c + k : t;
    const float ax = p.acc_x[t], ay = p.acc_y[yt];
    const float ax_new = ax + (xm ? to_float(x[t]) : 0.f), ay_new = ay + (ym ? to_float(y[yt]) : 0.f);
    out[t] = from_float<T>(apply(p.op, ax_new, ay_new) - apply(p.op, ax, ay));
    p.acc_x[t] = ax_new;
    if (!p.y_broadcast) p.acc_y[t] = ay_new;
  }
}

template <typename T>
__global__ void gate_update_kernel(BinaryParams p) {
  const T* y = static_cast<const T*>(p.y);
  DELTAJAX_GRID_STRIDE(t, p.n * p.c) {
    if (p.y_mask[t / p.c]) p.acc_y[t] += to_float(y[t]);
  }
}

}  // namespace

cudaError_t binary(const BinaryParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    binary_kernel<T><<<grid_for(p.n * p.h * p.w * p.c), kBlock, 0, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess || !p.y_broadcast) return e;
    gate_update_kernel<T><<<grid_for(p.n * p.c), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
