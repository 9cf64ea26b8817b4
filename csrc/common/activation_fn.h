// The element-wise functions of ops.elementwise (jax.nn's formulas) in float32, for host and device code.
#pragma once

#include <math.h>

#include "common/host_device.h"
#include "common/params.h"

namespace deltajax {

// max(x, lo) and min(x, hi) as comparisons: they vectorise on the host (maxps / minps), where fmaxf / fminf do
// not without -ffast-math, and they give the same results (a NaN x gives the bound, like fmaxf / fminf).
DELTAJAX_AHD float at_least(float x, float lo) { return x > lo ? x : lo; }
DELTAJAX_AHD float at_most(float x, float hi) { return x < hi ? x : hi; }

template <ActKind K>
struct ActFn {
  float slope;                    // leaky_relu only
  const float* slopes = nullptr;  // prelu only: [C]
  // f at channel k (the kernels call this: prelu's slope depends on the channel, the others do not).
  DELTAJAX_AHD float at(float x, int64_t k) const {
    if constexpr (K == ActKind::kPRelu) {
      return x >= 0.f ? x : slopes[k] * x;
    } else {
      return (*this)(x);
    }
  }
  // f of a channel-independent kind.
  DELTAJAX_AHD float operator()(float x) const {
    static_assert(K != ActKind::kPRelu, "prelu depends on the channel: call at(x, k)");
    if constexpr (K == ActKind::kIdentity) {
      return x;
    } else if constexpr (K == ActKind::kRelu) {
      return at_least(x, 0.f);
    } else if constexpr (K == ActKind::kRelu6) {
      return at_most(at_least(x, 0.f), 6.f);
    } else if constexpr (K == ActKind::kLeakyRelu) {
      return x >= 0.f ? x : slope * x;
    } else if constexpr (K == ActKind::kSigmoid) {
      return 1.f / (1.f + expf(-x));
    } else if constexpr (K == ActKind::kSilu) {
      return x / (1.f + expf(-x));
    } else if constexpr (K == ActKind::kHardSwish) {
      return x * (at_most(at_least(x + 3.f, 0.f), 6.f) / 6.f);
    } else if constexpr (K == ActKind::kHardSigmoid) {
      return at_most(at_least(x + 3.f, 0.f), 6.f) / 6.f;
    } else if constexpr (K == ActKind::kGelu) {
      return x * (erfcf(-x * 0.70710678118654752f) / 2.f);
    } else if constexpr (K == ActKind::kGeluTanh) {
      return x * (0.5f * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * (x * x * x)))));
    } else {
      static_assert(K == ActKind::kTanh);
      return tanhf(x);
    }
  }
};

// Calls fn(ActFn<K>{slope, slopes}) for the run-time kind (one switch; the loops inside fn are specialised per K).
template <typename Fn>
DELTAJAX_AHD auto with_activation(ActKind act, float slope, const float* slopes, Fn&& fn) {
  switch (act) {
    case ActKind::kPRelu:
      return fn(ActFn<ActKind::kPRelu>{slope, slopes});
    case ActKind::kRelu:
      return fn(ActFn<ActKind::kRelu>{slope});
    case ActKind::kRelu6:
      return fn(ActFn<ActKind::kRelu6>{slope});
    case ActKind::kLeakyRelu:
      return fn(ActFn<ActKind::kLeakyRelu>{slope});
    case ActKind::kSigmoid:
      return fn(ActFn<ActKind::kSigmoid>{slope});
    case ActKind::kSilu:
      return fn(ActFn<ActKind::kSilu>{slope});
    case ActKind::kHardSwish:
      return fn(ActFn<ActKind::kHardSwish>{slope});
    case ActKind::kHardSigmoid:
      return fn(ActFn<ActKind::kHardSigmoid>{slope});
    case ActKind::kGelu:
      return fn(ActFn<ActKind::kGelu>{slope});
    case ActKind::kGeluTanh:
      return fn(ActFn<ActKind::kGeluTanh>{slope});
    case ActKind::kTanh:
      return fn(ActFn<ActKind::kTanh>{slope});
    case ActKind::kIdentity:
      break;
  }
  return fn(ActFn<ActKind::kIdentity>{slope});
}

}  // namespace deltajax
