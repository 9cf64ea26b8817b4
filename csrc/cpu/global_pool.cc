#include "cpu/global_pool.h"

#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void global_pool_typed(const GlobalPoolParams& p) {
  const int64_t hw = p.h * p.w, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  std::vector<float> sums(p.n * c, 0.f);
  const int threads = threads_for(p.n * hw * (1 + c));
  // Per-thread partial sums over static chunks, added in thread order: the result does not depend on timing.
  std::vector<float> parts(static_cast<size_t>(threads) * c);
  for (int64_t b = 0; b < p.n; ++b) {
    std::fill(parts.begin(), parts.end(), 0.f);
    int used = 1;
#pragma omp parallel num_threads(threads)
    {
      int t = 0;
#ifdef _OPENMP
      t = omp_get_thread_num();
#pragma omp single
      used = omp_get_num_threads();
#endif
      float* __restrict part = parts.data() + t * c;
#pragma omp for schedule(static)
      for (int64_t i = b * hw; i < (b + 1) * hw; ++i) {
        if (!p.mask[i]) continue;
        const T* __restrict xi = x + i * c;
        for (int64_t k = 0; k < c; ++k) part[k] += to_float(xi[k]);
      }
    }
    float* total = sums.data() + b * c;
    for (int t = 0; t < used; ++t)
      for (int64_t k = 0; k < c; ++k) total[k] += parts[t * c + k];
  }
  const float area = static_cast<float>(hw);
  for (int64_t i = 0; i < p.n * c; ++i) p.acc[i] += sums[i] / area;
}

}  // namespace

void global_pool(const GlobalPoolParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { global_pool_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
