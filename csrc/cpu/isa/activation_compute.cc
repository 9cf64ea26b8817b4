// The activation rule at active pixels, compiled once per instruction set (its per-channel loops are what
// XLA's own fused loops, compiled for the host, compete with; the baseline build ran EfficientNet-Lite0's delta
// step 60 % slower than XLA's fusion of the same rule).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/activation_fn.h"
#include "cpu/dtype.h"
#include "cpu/isa/isa.h"
#include "cpu/isa/kernels.h"
#include "cpu/window.h"

namespace deltajax::cpu {
inline namespace DELTAJAX_CPU_ISA_NS {
namespace {

template <typename T, class F>
void run(const ActivationParams& p, F f) {
  const int64_t pixels = p.n * p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  const int threads = threads_for(pixels * (1 + c));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> a_buf(c), y_buf(c);
    float* __restrict a = a_buf.data();
    float* __restrict dy = y_buf.data();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < pixels; ++i) {
      const bool xm = p.x_mask[i], ym = y != nullptr && p.y_mask[i];
      if (!xm && !ym) {
        p.out_mask[i] = 0;
        continue;
      }
      float* __restrict acc = p.acc + i * c;
      float* __restrict res = p.res + i * c;
      const T* xi = x + i * c;
      if (y == nullptr && p.scale != nullptr) {
        const float* scale = p.scale + (p.scale_group ? i / p.scale_group * c : 0);
        for (int64_t k = 0; k < c; ++k) a[k] = res[k] + to_float(xi[k]) * scale[k];
      } else if (y == nullptr) {
        for (int64_t k = 0; k < c; ++k) a[k] = res[k] + to_float(xi[k]);
      } else {
        // The add rounds to the activation dtype before the activation reads it (as the unfused ops do).
        const T* yi = y + i * c;
        for (int64_t k = 0; k < c; ++k) {
          const float d = (xm ? to_float(xi[k]) : 0.f) + (ym ? to_float(yi[k]) : 0.f);
          a[k] = res[k] + to_float(from_float<T>(d));
        }
      }
      // Vectorised (clamps as vector max / min: this file is compiled with -ffinite-math-only, CMakeLists.txt).
      for (int64_t k = 0; k < c; ++k) dy[k] = f(acc[k] + a[k]) - f(acc[k]);
      float score = 0.f;
      switch (p.truncation) {
        case TruncMode::kMax:
          for (int64_t k = 0; k < c; ++k) score = std::max(score, std::fabs(dy[k]));
          break;
        case TruncMode::kL2:
        case TruncMode::kRms:
          for (int64_t k = 0; k < c; ++k) score += dy[k] * dy[k];
          break;
        case TruncMode::kNone:
          break;
      }
      bool keep = true;
      if (p.truncation == TruncMode::kL2) score = std::sqrt(score);
      if (p.truncation == TruncMode::kRms) score = std::sqrt(score / static_cast<float>(c));
      if (p.truncation != TruncMode::kNone) keep = score > p.threshold;
      p.out_mask[i] = keep;
      if (keep) {
        T* oi = out + i * c;
        for (int64_t k = 0; k < c; ++k) {
          oi[k] = from_float<T>(dy[k]);
          acc[k] += a[k];
          res[k] = 0.f;
        }
      } else {
        for (int64_t k = 0; k < c; ++k) res[k] = a[k];
      }
    }
  }
}

template <typename T>
void run_typed(const ActivationParams& p) {
  with_activation(p.act, p.negative_slope, [&](auto f) { run<T>(p, f); });
}

}  // namespace
}  // namespace DELTAJAX_CPU_ISA_NS

void DELTAJAX_ISA_FN(activation_compute)(const ActivationParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { run_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
