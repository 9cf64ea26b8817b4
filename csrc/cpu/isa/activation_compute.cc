// The activation rule at active pixels, compiled once per instruction set (its per-channel loops are what
// XLA's own fused loops, compiled for the host, compete with; the baseline build ran EfficientNet-Lite0's delta
// step 60 % slower than XLA's fusion of the same rule).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/activation_fn.h"
#include "common/truncation.h"
#include "cpu/dtype.h"
#include "cpu/isa/isa.h"
#include "cpu/isa/kernels.h"
#include "cpu/window.h"

namespace deltajax::cpu {
inline namespace DELTAJAX_CPU_ISA_NS {
namespace {

// The rule at pixel i, active in x or y; dy is a scratch row of p.c floats. acc takes the update, the output is
// f(acc) less what was sent so far (error feedback), and sent takes the rounded value that is emitted.
// pre: the pixel's update as p.c floats (a fused convolution's unrounded result), or nullptr to read x (and y).
template <typename T, class F>
inline void rule_at(const ActivationParams& p, F f, int64_t i, float* __restrict dy, const float* pre = nullptr) {
  const int64_t c = p.c;
  const T* y = static_cast<const T*>(p.y);
  const bool xm = p.x_mask[i], ym = y != nullptr && p.y_mask[i];
  float* __restrict acc = p.acc + i * c;
  float* __restrict sent = p.sent + i * c;
  const T* xi = static_cast<const T*>(p.x) + i * c;
  if (pre != nullptr) {
    const float* scale = p.scale + (p.scale_group ? i / p.scale_group * c : 0);
    for (int64_t k = 0; k < c; ++k) acc[k] += pre[k] * scale[k];
  } else if (y == nullptr && p.scale != nullptr) {
    const float* scale = p.scale + (p.scale_group ? i / p.scale_group * c : 0);
    for (int64_t k = 0; k < c; ++k) acc[k] += to_float(xi[k]) * scale[k];
  } else if (y == nullptr) {
    for (int64_t k = 0; k < c; ++k) acc[k] += to_float(xi[k]);
  } else {
    // The add in float32: never rounded before the activation accumulates it.
    const T* yi = y + i * c;
    for (int64_t k = 0; k < c; ++k) acc[k] += (xm ? to_float(xi[k]) : 0.f) + (ym ? to_float(yi[k]) : 0.f);
  }
  // Vectorised (clamps as vector max / min: this file is compiled with -ffinite-math-only, CMakeLists.txt).
  for (int64_t k = 0; k < c; ++k) dy[k] = f.at(acc[k], k) - sent[k];
  float score = 0.f;
  switch (p.truncation) {  // one loop per mode, each vectorised (the mode a constant in it)
    case TruncMode::kMax:
      for (int64_t k = 0; k < c; ++k) score = add_score(TruncMode::kMax, score, dy[k]);
      break;
    case TruncMode::kL2:
    case TruncMode::kRms:
      for (int64_t k = 0; k < c; ++k) score = add_score(TruncMode::kL2, score, dy[k]);
      break;
    case TruncMode::kNone:
      break;
  }
  const bool keep = keeps(p.truncation, p.threshold, score, c);
  p.out_mask[i] = keep;
  if (!keep) return;
  T* oi = static_cast<T*>(p.out) + i * c;  // may be x itself: x's row was read into acc above
  for (int64_t k = 0; k < c; ++k) {
    const T v = from_float<T>(dy[k]);
    oi[k] = v;
    sent[k] += to_float(v);
  }
}

template <typename T, class F>
void run(const ActivationParams& p, F f) {
  const int64_t pixels = p.n * p.h * p.w;
  const int threads = threads_for(pixels * (1 + p.c));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> scratch(p.c);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < pixels; ++i) {
      if (!p.x_mask[i] && !(p.y != nullptr && p.y_mask[i])) {
        p.out_mask[i] = 0;
        continue;
      }
      rule_at<T>(p, f, i, scratch.data());
    }
  }
}

template <typename T>
void run_typed(const ActivationParams& p) {
  with_activation(p.act, p.negative_slope, p.slopes, [&](auto f) { run<T>(p, f); });
}

}  // namespace
}  // namespace DELTAJAX_CPU_ISA_NS

void DELTAJAX_ISA_FN(activation_compute)(const ActivationParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { run_typed<decltype(tag)>(p); });
}

void DELTAJAX_ISA_FN(activation_at)(const ActivationParams& p, const int32_t* pixels, int64_t count, float* scratch,
                                    const float* pre) {
  dispatch_dtype(p.dtype, [&](auto tag) {
    with_activation(p.act, p.negative_slope, p.slopes, [&](auto f) {
      for (int64_t k = 0; k < count; ++k) rule_at<decltype(tag)>(p, f, pixels[k], scratch, pre + k * p.c);
    });
  });
}

}  // namespace deltajax::cpu
