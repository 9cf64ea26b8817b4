#include "cpu/sparsify.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

// The update of one value: x - ref rounded to T; ref becomes what was sent (x itself when the update is exact), so
// a rounding is sent with the next update (error feedback).
template <typename T>
inline T emit(float x, float& ref) {
  const float diff = x - ref;
  const T v = from_float<T>(diff);
  ref = to_float(v) == diff ? x : ref + to_float(v);
  return v;
}

// Without dilation one pass decides and emits each pixel while its x and ref rows are in cache.
template <typename T>
void sparsify_fused(const SparsifyParams& p) {
  const int64_t pixels = p.n * p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  T* values = static_cast<T*>(p.values);
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels* c))
  for (int64_t i = 0; i < pixels; ++i) {
    const T* __restrict xi = x + i * c;
    float* __restrict ri = p.ref + i * c;
    float m = 0.f;
    for (int64_t k = 0; k < c; ++k) m = std::max(m, std::fabs(to_float(xi[k]) - ri[k]));
    const bool active = m > p.threshold;
    p.mask[i] = active;
    if (!active) continue;
    T* __restrict vi = values + i * c;
    for (int64_t k = 0; k < c; ++k) vi[k] = emit<T>(to_float(xi[k]), ri[k]);
  }
}

template <typename T>
void sparsify_typed(const SparsifyParams& p) {
  if (p.dilation == 0) return sparsify_fused<T>(p);
  const int64_t pixels = p.n * p.h * p.w;
  const T* x = static_cast<const T*>(p.x);
  T* values = static_cast<T*>(p.values);
  const int threads = threads_for(pixels * p.c);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < pixels; ++i) {
    const T* xi = x + i * p.c;
    const float* ri = p.ref + i * p.c;
    float m = 0.f;
    for (int64_t k = 0; k < p.c; ++k) m = std::max(m, std::fabs(to_float(xi[k]) - ri[k]));
    p.active[i] = m > p.threshold;
  }
  // The dilated mask is a square-window OR: the receptive-field rule of a (2d+1)^2 window, padded by d.
  const Window win{2 * p.dilation + 1, 2 * p.dilation + 1, 1, 1, p.dilation, p.dilation, 1, 1, 1, 1};
  window_mask(p.active, p.n, p.h, p.w, win, p.mask, p.h, p.w);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < pixels; ++i) {
    if (!p.mask[i]) continue;
    const T* xi = x + i * p.c;
    float* ri = p.ref + i * p.c;
    T* vi = values + i * p.c;
    for (int64_t k = 0; k < p.c; ++k) vi[k] = emit<T>(to_float(xi[k]), ri[k]);
  }
}

}  // namespace

void sparsify(const SparsifyParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { sparsify_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
