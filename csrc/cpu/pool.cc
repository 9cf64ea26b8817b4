#include "cpu/pool.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

template <typename T>
void pool_typed(const PoolParams& p) {
  const Window win{p.kh, p.kw, p.stride_h, p.stride_w, p.pad_top, p.pad_left, 1, 1, 1, 1};
  window_mask(p.in_mask, p.n, p.h, p.w, win, p.out_mask, p.ho, p.wo);
  const int64_t outputs = p.n * p.ho * p.wo, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const bool is_max = p.acc != nullptr;
  const int threads = threads_for(outputs + outputs * c);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> buf_new(c), buf_old(c);
    float* __restrict hi_new = buf_new.data();
    float* __restrict hi_old = buf_old.data();
#pragma omp for schedule(dynamic, 256)
    for (int64_t o = 0; o < outputs; ++o) {
      if (!p.out_mask[o]) continue;
      const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
      const int64_t y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
      const int64_t ya = std::max<int64_t>(y0, 0), yb = std::min<int64_t>(y0 + p.kh, p.h);
      const int64_t xa = std::max<int64_t>(x0, 0), xb = std::min<int64_t>(x0 + p.kw, p.w);
      const float init = is_max ? -std::numeric_limits<float>::infinity() : 0.f;
      for (int64_t k = 0; k < c; ++k) hi_new[k] = hi_old[k] = init;
      for (int64_t iy = ya; iy < yb; ++iy)
        for (int64_t ix = xa; ix < xb; ++ix) {
          const int64_t pix = (b * p.h + iy) * p.w + ix;
          const bool active = p.in_mask[pix];
          const T* __restrict xi = x + pix * c;
          if (is_max) {
            const float* __restrict ai = p.acc + pix * c;
            if (active) {
              for (int64_t k = 0; k < c; ++k) {
                hi_new[k] = std::max(hi_new[k], ai[k] + to_float(xi[k]));
                hi_old[k] = std::max(hi_old[k], ai[k]);
              }
            } else {
              for (int64_t k = 0; k < c; ++k) {
                hi_new[k] = std::max(hi_new[k], ai[k]);
                hi_old[k] = std::max(hi_old[k], ai[k]);
              }
            }
          } else if (active) {
            for (int64_t k = 0; k < c; ++k) hi_new[k] += to_float(xi[k]);
          }
        }
      T* __restrict oi = out + o * c;
      if (is_max) {
        for (int64_t k = 0; k < c; ++k) oi[k] = from_float<T>(hi_new[k] - hi_old[k]);
      } else {
        const float divisor = p.count_include_pad ? float(p.kh * p.kw) : float((yb - ya) * (xb - xa));
        for (int64_t k = 0; k < c; ++k) oi[k] = from_float<T>(hi_new[k] / divisor);
      }
    }
  }
  if (!is_max) return;
  // acc += d after every output has read the old acc.
  const int64_t pixels = p.n * p.h * p.w;
#pragma omp parallel for schedule(static) num_threads(threads_for(pixels * (1 + c)))
  for (int64_t i = 0; i < pixels; ++i) {
    if (!p.in_mask[i]) continue;
    const T* __restrict xi = x + i * c;
    float* __restrict ai = p.acc + i * c;
    for (int64_t k = 0; k < c; ++k) ai[k] += to_float(xi[k]);
  }
}

}  // namespace

void pool(const PoolParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { pool_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
