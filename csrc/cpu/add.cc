#include "cpu/add.h"

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void add_typed(const AddParams& p) {
  const int64_t pixels = p.n * p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  const T* y = static_cast<const T*>(p.y);
  T* out = static_cast<T*>(p.out);
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels * (1 + c)))
  for (int64_t i = 0; i < pixels; ++i) {
    const bool xm = p.x_mask[i], ym = p.y_mask[i];
    p.out_mask[i] = xm || ym;
    const T* __restrict xi = x + i * c;
    const T* __restrict yi = y + i * c;
    T* __restrict oi = out + i * c;
    if (xm && ym) {
      for (int64_t k = 0; k < c; ++k) oi[k] = from_float<T>(to_float(xi[k]) + to_float(yi[k]));
    } else if (xm) {
      for (int64_t k = 0; k < c; ++k) oi[k] = xi[k];
    } else if (ym) {
      for (int64_t k = 0; k < c; ++k) oi[k] = yi[k];
    }
  }
}

}  // namespace

void add(const AddParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { add_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
