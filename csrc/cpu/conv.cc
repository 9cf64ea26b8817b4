#include "cpu/conv.h"

#include <vector>

#include "common/conv_geometry.h"
#include "cpu/dtype.h"

namespace deltajax::cpu {
namespace {

// OR of the input mask over the receptive field of output pixel `o` (flat index over N*Ho*Wo).
bool receptive_active(const ConvParams& p, int64_t o) {
  const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
  for (int ky = 0; ky < p.kh; ++ky) {
    const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
    if (iy < 0) continue;
    for (int kx = 0; kx < p.kw; ++kx) {
      const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
      if (ix >= 0 && p.in_mask[(b * p.h + iy) * p.w + ix]) return true;
    }
  }
  return false;
}

template <typename T>
void conv_typed(const ConvParams& p) {
  const int64_t outputs = p.n * p.ho * p.wo;
#pragma omp parallel for schedule(static)
  for (int64_t o = 0; o < outputs; ++o) p.out_mask[o] = receptive_active(p, o);
  int32_t count = 0;
  for (int64_t o = 0; o < outputs; ++o)
    if (p.out_mask[o]) p.workspace[count++] = static_cast<int32_t>(o);
  p.workspace[outputs] = count;

  const T* x = static_cast<const T*>(p.x);
  const T* wt = static_cast<const T*>(p.kernel);
  T* out = static_cast<T*>(p.out);
  const int64_t cin_g = p.cin / p.groups, cout_g = p.cout / p.groups;
#pragma omp parallel
  {
    std::vector<float> acc(p.cout);
#pragma omp for schedule(dynamic, 16)
    for (int32_t a = 0; a < count; ++a) {
      const int64_t o = p.workspace[a];
      const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int ky = 0; ky < p.kh; ++ky) {
        const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
        if (iy < 0) continue;
        for (int kx = 0; kx < p.kw; ++kx) {
          const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
          const int64_t pix = (b * p.h + iy) * p.w + ix;
          if (ix < 0 || !p.in_mask[pix]) continue;  // inactive inputs read as zero, never loaded
          const T* xi = x + pix * p.cin;
          const T* wk = wt + (int64_t(ky) * p.kw + kx) * cin_g * p.cout;
          for (int64_t g = 0; g < p.groups; ++g)
            for (int64_t ci = 0; ci < cin_g; ++ci) {
              const float xv = to_float(xi[g * cin_g + ci]);
              const T* wrow = wk + ci * p.cout + g * cout_g;
              float* arow = acc.data() + g * cout_g;
              for (int64_t co = 0; co < cout_g; ++co) arow[co] += xv * to_float(wrow[co]);
            }
        }
      }
      T* oi = out + o * p.cout;
      for (int64_t co = 0; co < p.cout; ++co) oi[co] = from_float<T>(acc[co]);
    }
  }
}

}  // namespace

void conv(const ConvParams& p) {
  dispatch_dtype(p.dtype, [&](auto tag) { conv_typed<decltype(tag)>(p); });
}

}  // namespace deltajax::cpu
