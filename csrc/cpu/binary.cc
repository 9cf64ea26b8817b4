#include "cpu/binary.h"

#include <algorithm>
#include <vector>

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

struct Mul {
  float operator()(float a, float b) const { return a * b; }
};
struct Max {
  float operator()(float a, float b) const { return std::max(a, b); }
};

template <typename T, class F>
void run(const BinaryParams& p, F f) {
  const int64_t hw = p.h * p.w, pixels = p.n * hw, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
  // A broadcast gate [N, 1, 1, C]: every pixel of its stream reads the old and the new value, so the new
  // one is computed first and stored after the pixel loop.
  std::vector<float> gate_new;
  if (p.y_broadcast) {
    gate_new.assign(p.acc_y, p.acc_y + p.n * c);
    for (int64_t b = 0; b < p.n; ++b)
      if (p.y_mask[b])
        for (int64_t k = 0; k < c; ++k) gate_new[b * c + k] += to_float(y[b * c + k]);
  }
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels * (1 + c)))
  for (int64_t i = 0; i < pixels; ++i) {
    const int64_t b = i / hw;
    const bool xm = p.x_mask[i], ym = p.y_broadcast ? p.y_mask[b] : p.y_mask[i];
    p.out_mask[i] = xm || ym;
    if (!xm && !ym) continue;
    float* __restrict ax = p.acc_x + i * c;
    const T* xi = x + i * c;
    T* oi = out + i * c;
    if (p.y_broadcast) {
      const float* ay_old = p.acc_y + b * c;
      const float* ay_new = gate_new.data() + b * c;
      for (int64_t k = 0; k < c; ++k) {
        const float ax_new = ax[k] + (xm ? to_float(xi[k]) : 0.f);
        oi[k] = from_float<T>(f(ax_new, ay_new[k]) - f(ax[k], ay_old[k]));
        ax[k] = ax_new;
      }
    } else {
      float* __restrict ay = p.acc_y + i * c;
      const T* yi = y + i * c;
      for (int64_t k = 0; k < c; ++k) {
        const float ax_new = ax[k] + (xm ? to_float(xi[k]) : 0.f);
        const float ay_new = ay[k] + (ym ? to_float(yi[k]) : 0.f);
        oi[k] = from_float<T>(f(ax_new, ay_new) - f(ax[k], ay[k]));
        ax[k] = ax_new;
        ay[k] = ay_new;
      }
    }
  }
  if (p.y_broadcast) std::copy(gate_new.begin(), gate_new.end(), p.acc_y);
}

template <typename T>
void binary_typed(const BinaryParams& p) {
  switch (p.op) {
    case BinaryOp::kMultiply:
      return run<T>(p, Mul{});
    case BinaryOp::kMaximum:
      return run<T>(p, Max{});
  }
}

}  // namespace

void binary(const BinaryParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { binary_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
