// The delta activation kernel and its launcher. The activation functions times three walks times five type pairs
// made one translation unit the module's longest compile by far, so each type pair is instantiated in its own
// (activation_<dtype>*.cu); activation.cu dispatches on the dtypes.
#pragma once

#include "common/activation_fn.h"
#include "common/truncation.h"
#include "cuda/active_pixels.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda::act {

// Lanes of a pixel: the input update, the truncation score (reduced across the pixel's lanes), then the emitted
// update. A lane takes V consecutive channels per access (V = 4 where C allows: 16-byte float32 state loads), a
// unit, and units sub, sub + group, ... of its pixel. Pixels with no input update only get out_mask = 0. Error
// feedback: acc takes the update, the output is f(acc) - sent, and sent takes the value emitted after its rounding
// to T. kHeld > 0: a lane has at most kHeld units (the launcher checks); their input, accumulator and sent values
// are loaded once, all in flight together, and held in registers from the score to the update. kHeld == 0: the
// lane walks its units twice, loading them each time (wide channels on few lanes); both passes form acc + d the same
// way, so the score tests exactly the update that is emitted. Tin: x's and y's type (T, or float32 for 16-bit T).
template <typename Tin, typename T, int V, int kHeld, class F>
__global__ void __launch_bounds__(kBlock) activation_kernel(ActivationParams p, PixelWalk w, F f) {
  const Tin* x = static_cast<const Tin*>(p.x);
  const Tin* y = static_cast<const Tin*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int64_t c = p.c;
  for_active_pixels(w, PixelMasks{p.x_mask, y == nullptr ? nullptr : p.y_mask, p.out_mask}, [&](PixelLanes l) {
    const int64_t i = l.pixel, row = (i >= 0 ? i : 0) * c;  // a spare lane indexes pixel 0 and loads nothing
    const bool xm = i >= 0 && p.x_mask[i], ym = i >= 0 && y != nullptr && p.y_mask[i];
    float* acc = p.acc + row;
    float* sent = p.sent + row;
    const float* scale =
        p.scale == nullptr ? nullptr : p.scale + (p.scale_group ? (i >= 0 ? i : 0) / p.scale_group * c : 0);
    // Channels k .. k + V - 1: a = acc + the input update (x times the scale, or x + y in float32), s = sent.
    auto load_unit = [&](int64_t k, float(&a)[V], float(&s)[V]) {
      float d[V] = {}, other[V] = {};
      if (y == nullptr || xm) load_floats<V>(x + row + k, d);
      if (scale != nullptr)
        for (int j = 0; j < V; ++j) d[j] *= scale[k + j];
      if (ym) load_floats<V>(y + row + k, other);
      load_floats<V>(acc + k, a);
      load_floats<V>(sent + k, s);
      for (int j = 0; j < V; ++j) a[j] += d[j] + other[j];
    };
    auto score_unit = [&](int64_t k, const float(&a)[V], const float(&s)[V], float& score) {
      for (int j = 0; j < V; ++j) {
        const float dy = f.at(a[j], k + j) - s[j];
        score = add_score(p.truncation, score, dy);
      }
    };
    auto emit_unit = [&](int64_t k, const float(&a)[V], float(&s)[V], bool keep) {
      store_floats<V>(acc + k, a);
      if (!keep) return;
      float v[V];
      for (int j = 0; j < V; ++j) {
        v[j] = to_float(from_float<T>(f.at(a[j], k + j) - s[j]));
        s[j] += v[j];
      }
      store_floats<V>(out + row + k, v);
      store_floats<V>(sent + k, s);
    };
    const bool scored = p.truncation != TruncMode::kNone;
    const int64_t first = l.sub * V, stride = int64_t(l.group) * V;
    float score = 0.f;
    float held_a[kHeld > 0 ? kHeld : 1][V], held_s[kHeld > 0 ? kHeld : 1][V];
    if constexpr (kHeld > 0) {
#pragma unroll
      for (int u = 0; u < kHeld; ++u)
        if (i >= 0 && first + u * stride < c) load_unit(first + u * stride, held_a[u], held_s[u]);
#pragma unroll
      for (int u = 0; u < kHeld; ++u)
        if (scored && i >= 0 && first + u * stride < c) score_unit(first + u * stride, held_a[u], held_s[u], score);
    } else if (scored) {
#pragma unroll 2
      for (int64_t k = first; i >= 0 && k < c; k += stride) {
        load_unit(k, held_a[0], held_s[0]);
        score_unit(k, held_a[0], held_s[0], score);
      }
    }
    if (scored)
      for (int o = l.group >> 1; o > 0; o >>= 1)
        score = combine_scores(p.truncation, score, __shfl_xor_sync(0xffffffffu, score, o));
    if (i < 0) return;
    const bool keep = keeps(p.truncation, p.threshold, score, c);
    if (l.sub == 0) p.out_mask[i] = keep;
    if constexpr (kHeld > 0) {
#pragma unroll
      for (int u = 0; u < kHeld; ++u)
        if (first + u * stride < c) emit_unit(first + u * stride, held_a[u], held_s[u], keep);
    } else {
#pragma unroll 2
      for (int64_t k = first; k < c; k += stride) {
        load_unit(k, held_a[0], held_s[0]);
        emit_unit(k, held_a[0], held_s[0], keep);
      }
    }
  });
}

inline bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Units a lane holds in registers in the single-pass kernel.
constexpr int kHeldUnits = 4;

template <typename Tin, typename T>
cudaError_t launch_activation(const ActivationParams& p, cudaStream_t stream) {
  constexpr int kV = 4;  // 16-byte float32 accesses; the other pointers need kV * their element size
  const bool vector = p.c % kV == 0 && aligned(p.acc, 16) && aligned(p.sent, 16) && aligned(p.x, kV * sizeof(Tin)) &&
                      aligned(p.y, kV * sizeof(Tin)) && aligned(p.out, kV * sizeof(T));
  const int64_t units = vector ? p.c / kV : p.c;
  const PixelWalk w = pixel_walk(p.n * p.h * p.w, units);
  const bool held = (units + w.group - 1) / w.group <= kHeldUnits;
  with_activation(p.act, p.negative_slope, p.slopes, [&](auto f) {
    const int grid = walk_grid(w);
    if (vector && held)
      activation_kernel<Tin, T, kV, kHeldUnits><<<grid, kBlock, 0, stream>>>(p, w, f);
    else if (vector)
      activation_kernel<Tin, T, kV, 0><<<grid, kBlock, 0, stream>>>(p, w, f);
    else
      activation_kernel<Tin, T, 1, 0><<<grid, kBlock, 0, stream>>>(p, w, f);
  });
  return cudaGetLastError();
}

// Each (input, output) type pair is instantiated in its own translation unit: activation_<dtype>[_from_f32].cu.
extern template cudaError_t launch_activation<float, float>(const ActivationParams&, cudaStream_t);
extern template cudaError_t launch_activation<__nv_bfloat16, __nv_bfloat16>(const ActivationParams&, cudaStream_t);
extern template cudaError_t launch_activation<float, __nv_bfloat16>(const ActivationParams&, cudaStream_t);
extern template cudaError_t launch_activation<__half, __half>(const ActivationParams&, cudaStream_t);
extern template cudaError_t launch_activation<float, __half>(const ActivationParams&, cudaStream_t);

}  // namespace deltajax::cuda::act
