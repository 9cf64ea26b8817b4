#include "common/activation_fn.h"
#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// Lanes of a pixel: the input update, the truncation score (reduced across the pixel's lanes), then the kept or
// residual update. Pixels with no input update only get out_mask = 0. The residual a = res + d is formed the
// same way in both passes, so the score tests exactly the update that is kept.
template <typename T, class F>
__global__ void __launch_bounds__(kBlock) activation_kernel(ActivationParams p, F f) {
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int64_t c = p.c;
  const auto active = [&](int64_t i) { return p.x_mask[i] || (y != nullptr && p.y_mask[i]); };
  const auto inactive = [&](int64_t i) { p.out_mask[i] = 0; };
  for_active_pixels(p.n * p.h * p.w, c, active, inactive, [&](PixelLanes l) {
    const int64_t i = l.pixel, row = (i >= 0 ? i : 0) * c;  // a spare lane indexes pixel 0 and loads nothing
    const bool xm = i >= 0 && p.x_mask[i], ym = i >= 0 && y != nullptr && p.y_mask[i];
    float* acc = p.acc + row;
    float* res = p.res + row;
    const float* scale =
        p.scale == nullptr ? nullptr : p.scale + (p.scale_group ? (i >= 0 ? i : 0) / p.scale_group * c : 0);
    auto input_delta = [&](int64_t k) {
      if (y != nullptr)
        return to_float(from_float<T>((xm ? to_float(x[row + k]) : 0.f) + (ym ? to_float(y[row + k]) : 0.f)));
      const float d = to_float(x[row + k]);
      return scale != nullptr ? d * scale[k] : d;
    };
    float score = 0.f;
    if (p.truncation != TruncMode::kNone) {
#pragma unroll 4
      for (int64_t k = l.sub; i >= 0 && k < c; k += l.group) {
        const float dy = f(acc[k] + (res[k] + input_delta(k))) - f(acc[k]);
        score = p.truncation == TruncMode::kMax ? fmaxf(score, fabsf(dy)) : score + dy * dy;
      }
      for (int o = l.group >> 1; o > 0; o >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, score, o);
        score = p.truncation == TruncMode::kMax ? fmaxf(score, other) : score + other;
      }
      if (p.truncation == TruncMode::kL2) score = sqrtf(score);
      if (p.truncation == TruncMode::kRms) score = sqrtf(score / float(c));
    }
    if (i < 0) return;
    const bool keep = p.truncation == TruncMode::kNone || score > p.threshold;
    if (l.sub == 0) p.out_mask[i] = keep;
#pragma unroll 4
    for (int64_t k = l.sub; k < c; k += l.group) {
      const float r = res[k], a = r + input_delta(k);
      if (keep) {
        out[row + k] = from_float<T>(f(acc[k] + a) - f(acc[k]));
        acc[k] += a;
        if (r != 0.f) res[k] = 0.f;  // usually already 0: no store
      } else {
        res[k] = a;
      }
    }
  });
}

}  // namespace

cudaError_t activation(const ActivationParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    with_activation(p.act, p.negative_slope, [&](auto f) {
      activation_kernel<T><<<pixel_walk_grid(p.n * p.h * p.w, p.c), kBlock, 0, stream>>>(p, f);
    });
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
