#include "cpu/resample.h"

#include "cpu/dtype.h"
#include "cpu/window.h"

namespace deltajax::cpu {
namespace {

// A tap is live when its weight is non-zero and its index is in range (out-of-range tables read nothing).
inline bool live(const int32_t* taps, const float* weights, int64_t o, int j, int64_t size) {
  return weights[o * 2 + j] != 0.f && taps[o * 2 + j] >= 0 && taps[o * 2 + j] < size;
}

template <typename T>
void resample_typed(const ResampleParams& p) {
  const int64_t rows = p.n * p.ho, c = p.c;
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads_for(rows* p.wo * 4))
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / p.ho, oy = r % p.ho;
    for (int64_t ox = 0; ox < p.wo; ++ox) {
      const int64_t o = r * p.wo + ox;
      uint8_t any = 0;
      for (int a = 0; a < 2; ++a) {
        if (!live(p.taps_h, p.weights_h, oy, a, p.h)) continue;
        for (int e = 0; e < 2; ++e)
          if (live(p.taps_w, p.weights_w, ox, e, p.w))
            any |= p.in_mask[(b * p.h + p.taps_h[oy * 2 + a]) * p.w + p.taps_w[ox * 2 + e]];
      }
      p.out_mask[o] = any;
      if (!any) continue;
      T* __restrict oi = out + o * c;
      float acc[256];
      for (int64_t k0 = 0; k0 < c; k0 += 256) {
        const int64_t kn = c - k0 < 256 ? c - k0 : 256;
        for (int64_t k = 0; k < kn; ++k) acc[k] = 0.f;
        for (int a = 0; a < 2; ++a) {
          if (!live(p.taps_h, p.weights_h, oy, a, p.h)) continue;
          const float wa = p.weights_h[oy * 2 + a];
          const int64_t iy = p.taps_h[oy * 2 + a];
          float row[256];
          for (int64_t k = 0; k < kn; ++k) row[k] = 0.f;
          for (int e = 0; e < 2; ++e) {
            if (!live(p.taps_w, p.weights_w, ox, e, p.w)) continue;
            const int64_t pix = (b * p.h + iy) * p.w + p.taps_w[ox * 2 + e];
            if (!p.in_mask[pix]) continue;  // inactive inputs read as zero
            const float we = p.weights_w[ox * 2 + e];
            const T* __restrict xi = x + pix * c + k0;
            for (int64_t k = 0; k < kn; ++k) row[k] += we * to_float(xi[k]);
          }
          for (int64_t k = 0; k < kn; ++k) acc[k] += wa * row[k];
        }
        for (int64_t k = 0; k < kn; ++k) oi[k0 + k] = from_float<T>(acc[k]);
      }
    }
  }
}

}  // namespace

void resample(const ResampleParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { resample_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
