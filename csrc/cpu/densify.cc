#include "cpu/densify.h"

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void densify_typed(const DensifyParams& p) {
  const int64_t pixels = p.n * p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels * (1 + c)))
  for (int64_t i = 0; i < pixels; ++i) {
    if (!p.mask[i]) continue;
    const T* __restrict xi = x + i * c;
    float* __restrict oi = p.out + i * c;
    for (int64_t k = 0; k < c; ++k) oi[k] += to_float(xi[k]);
  }
}

}  // namespace

void densify(const DensifyParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { densify_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
