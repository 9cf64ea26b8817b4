#include "common/activation_fn.h"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// One thread per pixel: the input update, the truncation score, then the kept or residual update.
template <typename T, class F>
__global__ void activation_kernel(ActivationParams p, F f) {
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  DELTAJAX_GRID_STRIDE(i, p.n * p.h * p.w) {
    const bool xm = p.x_mask[i], ym = y != nullptr && p.y_mask[i];
    if (!xm && !ym) {
      p.out_mask[i] = 0;
      continue;
    }
    float* acc = p.acc + i * p.c;
    float* res = p.res + i * p.c;
    auto update = [&](int64_t k) {
      float d;
      if (y == nullptr) {
        d = to_float(x[i * p.c + k]);
      } else {
        d = to_float(from_float<T>((xm ? to_float(x[i * p.c + k]) : 0.f) + (ym ? to_float(y[i * p.c + k]) : 0.f)));
      }
      return res[k] + d;
    };
    float score = 0.f;
    for (int64_t k = 0; k < p.c; ++k) {
      const float a = update(k);
      const float dy = f(acc[k] + a) - f(acc[k]);
      if (p.truncation == TruncMode::kMax) score = fmaxf(score, fabsf(dy));
      if (p.truncation == TruncMode::kL2 || p.truncation == TruncMode::kRms) score += dy * dy;
    }
    if (p.truncation == TruncMode::kL2) score = sqrtf(score);
    if (p.truncation == TruncMode::kRms) score = sqrtf(score / float(p.c));
    const bool keep = p.truncation == TruncMode::kNone || score > p.threshold;
    p.out_mask[i] = keep;
    for (int64_t k = 0; k < p.c; ++k) {
      const float a = update(k);
      if (keep) {
        out[i * p.c + k] = from_float<T>(f(acc[k] + a) - f(acc[k]));
        acc[k] += a;
        res[k] = 0.f;
      } else {
        res[k] = a;
      }
    }
  }
}

}  // namespace

cudaError_t activation(const ActivationParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    with_activation(p.act, p.negative_slope,
                    [&](auto f) { activation_kernel<T><<<grid_for(p.n * p.h * p.w), kBlock, 0, stream>>>(p, f); });
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
