#include "cpu/affine.h"

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void affine_typed(const AffineParams& p) {
  const int64_t pixels = p.n * p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const float* __restrict mul = p.mul;
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels * (1 + c)))
  for (int64_t i = 0; i < pixels; ++i) {
    if (!p.mask[i]) continue;
    const T* __restrict xi = x + i * c;
    T* __restrict oi = out + i * c;
    for (int64_t k = 0; k < c; ++k) oi[k] = from_float<T>(to_float(xi[k]) * mul[k]);
  }
}

}  // namespace

void affine(const AffineParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { affine_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
