#include "cpu/sparsify.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/dtype.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void sparsify_typed(const SparsifyParams& p) {
  const int64_t pixels = p.n * p.h * p.w;
  const T* x = static_cast<const T*>(p.x);
  T* values = static_cast<T*>(p.values);
  uint8_t* active = p.dilation > 0 ? p.active : p.mask;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pixels; ++i) {
    const T* xi = x + i * p.c;
    const float* ri = p.ref + i * p.c;
    float m = 0.f;
    for (int64_t k = 0; k < p.c; ++k) m = std::max(m, std::fabs(to_float(xi[k]) - ri[k]));
    active[i] = m > p.threshold;
  }
  if (p.dilation > 0) {
    const int64_t d = p.dilation;
#pragma omp parallel for schedule(static)
    for (int64_t row = 0; row < p.n * p.h; ++row) {
      const int64_t b = row / p.h, y = row % p.h;
      for (int64_t xx = 0; xx < p.w; ++xx) {
        uint8_t any = 0;
        for (int64_t yy = std::max<int64_t>(0, y - d); yy <= std::min(p.h - 1, y + d) && !any; ++yy) {
          const uint8_t* a = active + (b * p.h + yy) * p.w;
          for (int64_t xk = std::max<int64_t>(0, xx - d); xk <= std::min(p.w - 1, xx + d); ++xk) any |= a[xk];
        }
        p.mask[row * p.w + xx] = any;
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < pixels; ++i) {
    if (!p.mask[i]) continue;
    const T* xi = x + i * p.c;
    float* ri = p.ref + i * p.c;
    T* vi = values + i * p.c;
    for (int64_t k = 0; k < p.c; ++k) {
      const float xv = to_float(xi[k]);
      vi[k] = from_float<T>(xv - ri[k]);
      ri[k] = xv;
    }
  }
}

}  // namespace

void sparsify(const SparsifyParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { sparsify_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
