#include "common/activation_fn.h"
#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// Lanes of a pixel: the input update, the truncation score (reduced across the pixel's lanes), then the emitted
// update. A lane takes V consecutive channels per access (V = 4 where C allows: 16-byte float32 state loads).
// Pixels with no input update only get out_mask = 0. Error feedback: acc takes the update, the output is
// f(acc) - sent, and sent takes the value emitted after its rounding to T; both passes form acc + d the same way,
// so the score tests exactly the update that is emitted. Tin: x's and y's type (T, or float32 for 16-bit T).
template <typename Tin, typename T, int V, class F>
__global__ void __launch_bounds__(kBlock) activation_kernel(ActivationParams p, F f) {
  const Tin* x = static_cast<const Tin*>(p.x);
  const Tin* y = static_cast<const Tin*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int64_t c = p.c;
  const auto active = [&](int64_t i) { return p.x_mask[i] || (y != nullptr && p.y_mask[i]); };
  const auto inactive = [&](int64_t i) { p.out_mask[i] = 0; };
  for_active_pixels(p.n * p.h * p.w, c / V, active, inactive, [&](PixelLanes l) {
    const int64_t i = l.pixel, row = (i >= 0 ? i : 0) * c;  // a spare lane indexes pixel 0 and loads nothing
    const bool xm = i >= 0 && p.x_mask[i], ym = i >= 0 && y != nullptr && p.y_mask[i];
    float* acc = p.acc + row;
    float* sent = p.sent + row;
    const float* scale =
        p.scale == nullptr ? nullptr : p.scale + (p.scale_group ? (i >= 0 ? i : 0) / p.scale_group * c : 0);
    // The input update of channels k .. k + V - 1: x (times the scale), or x + y in float32.
    auto input_delta = [&](int64_t k, float(&d)[V]) {
      float other[V] = {};
      if (y == nullptr || xm) load_floats<V>(x + row + k, d);
      if (y == nullptr) {
        if (scale != nullptr)
          for (int j = 0; j < V; ++j) d[j] *= scale[k + j];
        return;
      }
      if (!xm)
        for (int j = 0; j < V; ++j) d[j] = 0.f;
      if (ym) load_floats<V>(y + row + k, other);
      for (int j = 0; j < V; ++j) d[j] += other[j];
    };
    float score = 0.f;
    if (p.truncation != TruncMode::kNone) {
#pragma unroll 2
      for (int64_t k = l.sub * V; i >= 0 && k < c; k += l.group * V) {
        float d[V], a[V], s[V];
        input_delta(k, d);
        load_floats<V>(acc + k, a);
        load_floats<V>(sent + k, s);
        for (int j = 0; j < V; ++j) {
          const float dy = f.at(a[j] + d[j], k + j) - s[j];
          score = p.truncation == TruncMode::kMax ? fmaxf(score, fabsf(dy)) : score + dy * dy;
        }
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
#pragma unroll 2
    for (int64_t k = l.sub * V; k < c; k += l.group * V) {
      float d[V], a[V];
      input_delta(k, d);
      load_floats<V>(acc + k, a);
      for (int j = 0; j < V; ++j) a[j] += d[j];
      store_floats<V>(acc + k, a);
      if (!keep) continue;
      float s[V], v[V];
      load_floats<V>(sent + k, s);
      for (int j = 0; j < V; ++j) {
        v[j] = to_float(from_float<T>(f.at(a[j], k + j) - s[j]));
        s[j] += v[j];
      }
      store_floats<V>(out + row + k, v);
      store_floats<V>(sent + k, s);
    }
  });
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

template <typename Tin, typename T>
cudaError_t launch(const ActivationParams& p, cudaStream_t stream) {
  constexpr int kV = 4;  // 16-byte float32 accesses; the other pointers need kV * their element size
  const bool vector = p.c % kV == 0 && aligned(p.acc, 16) && aligned(p.sent, 16) && aligned(p.x, kV * sizeof(Tin)) &&
                      aligned(p.y, kV * sizeof(Tin)) && aligned(p.out, kV * sizeof(T));
  with_activation(p.act, p.negative_slope, p.slopes, [&](auto f) {
    if (vector)
      activation_kernel<Tin, T, kV><<<pixel_walk_grid(p.n * p.h * p.w, p.c / kV), kBlock, 0, stream>>>(p, f);
    else
      activation_kernel<Tin, T, 1><<<pixel_walk_grid(p.n * p.h * p.w, p.c), kBlock, 0, stream>>>(p, f);
  });
  return cudaGetLastError();
}

}  // namespace

cudaError_t activation(const ActivationParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if (p.x_dtype == DType::kF32) return launch<float, T>(p, stream);
    if (p.x_dtype != p.dtype) return cudaErrorInvalidValue;
    return launch<T, T>(p, stream);
  });
}

}  // namespace deltajax::cuda
