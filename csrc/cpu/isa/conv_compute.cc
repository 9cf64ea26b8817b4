// The arithmetic of the delta convolution at active output pixels, compiled once per instruction set.
//
// General path: an implicit GEMM over the active pixel list. A tile of kRows output pixels times a block of
// 8 or 16 output channels is accumulated in registers over (live taps x input channels); a tap that reads
// zero for every pixel of the tile (padding, inactive input, transposed-conv hole) is skipped, and a tap that
// reads zero for some pixels points them at a row of zeros. Depthwise (groups == C_in == C_out): per pixel,
// vectorised over channels.
#include <algorithm>

#include "cpu/dtype.h"
#include "cpu/isa/isa.h"
#include "cpu/isa/kernels.h"
#include "cpu/window.h"

namespace deltajax::cpu {
inline namespace DELTAJAX_CPU_ISA_NS {
namespace {

typedef float vf __attribute__((vector_size(32)));  // 8 lanes: one AVX register, two SSE registers
constexpr int kLanes = 8;
#if defined(__AVX2__)
constexpr int kRows = 6;  // 6 pixels x 2 vectors = 12 accumulators of 16 registers
#else
constexpr int kRows = 3;  // SSE: each vf takes two of the 16 registers
#endif

inline vf load(const float* p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, vf v) { __builtin_memcpy(p, &v, sizeof v); }

// new[] / delete[] only: no standard-library templates in these files (their weak copies would carry AVX2).
template <class T>
struct Scratch {
  T* data;
  explicit Scratch(int64_t n) : data(new T[n > 0 ? n : 1]) {}
  ~Scratch() { delete[] data; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

// Where active output pixels read: the input row / column of each (output row / column, tap) from tables built
// once per call, and a pixel's stream and coordinates by 32-bit divisions (the active lists are int32). With
// conv_source's 64-bit divisions per pixel and tap, a 3x3 depthwise layer (32 channels, 216x384, 97 % active,
// 2 cores) took 3.4 ms; now 2.8 (a 3x3 32 -> 32 conv at 108x192: 2.5 -> 2.2 ms; 1x1 layers unchanged).
struct Sources {
  Scratch<int64_t> y, x;  // [ho * kh], [wo * kw]: input row / column, -1 where the tap reads zero
  int32_t hw, wo;
  int kh, kw;
  explicit Sources(const ConvParams& p)
      : y(p.ho * p.kh),
        x(p.wo * p.kw),
        hw(static_cast<int32_t>(p.ho * p.wo)),
        wo(static_cast<int32_t>(p.wo)),
        kh(p.kh),
        kw(p.kw) {
    source_table(p.ho, p.kh, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h, y.data);
    source_table(p.wo, p.kw, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w, x.data);
  }
  struct Pixel {
    int32_t b, oy, ox;
  };
  Pixel pixel(int32_t o) const {
    const int32_t b = o / hw, r = o - b * hw, oy = r / wo;
    return {b, oy, r - oy * wo};
  }
  int64_t row(const Pixel& q, int ky) const { return y.data[int64_t(q.oy) * kh + ky]; }
  int64_t col(const Pixel& q, int kx) const { return x.data[int64_t(q.ox) * kw + kx]; }
};

// HWIO [taps, C_in/g, C_out] -> [g][block][tap][C_in/g][nr] float32; columns past C_out/g are zero.
template <typename T>
void pack_kernel(const ConvParams& p, int nr, float* dst) {
  const int64_t taps = int64_t(p.kh) * p.kw, cin_g = p.cin / p.groups, cout_g = p.cout / p.groups;
  const int64_t blocks = (cout_g + nr - 1) / nr;
  const T* w = static_cast<const T*>(p.kernel);
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t b = 0; b < blocks; ++b)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t ci = 0; ci < cin_g; ++ci, dst += nr)
          for (int j = 0; j < nr; ++j) {
            const int64_t co = b * nr + j;
            dst[j] = co < cout_g ? to_float(w[(t * cin_g + ci) * p.cout + g * cout_g + co]) : 0.f;
          }
}

// acc[m][:] = sum over live taps t and channels ci of src[t][m][ci] * w[t][ci][:], NV vectors per pixel.
template <typename T, int NV>
inline void tile_block(const T* const* src, const int32_t* live, int64_t n_live, int64_t cin_g, int64_t goff,
                       const float* w, float* out_acc) {
  constexpr int nr = NV * kLanes;
  vf acc[kRows][NV];
  for (int m = 0; m < kRows; ++m)
    for (int v = 0; v < NV; ++v) acc[m][v] = vf{};
  for (int64_t l = 0; l < n_live; ++l) {
    const T* const* s = src + l * kRows;
    const T* row[kRows];
    for (int m = 0; m < kRows; ++m) row[m] = s[m] + goff;
    const float* wt = w + int64_t(live[l]) * cin_g * nr;
    for (int64_t ci = 0; ci < cin_g; ++ci, wt += nr) {
      vf wv[NV];
      for (int v = 0; v < NV; ++v) wv[v] = load(wt + v * kLanes);
#pragma GCC unroll 8
      for (int m = 0; m < kRows; ++m) {
        const float xs = to_float(row[m][ci]);
        for (int v = 0; v < NV; ++v) acc[m][v] += wv[v] * xs;
      }
    }
  }
  for (int m = 0; m < kRows; ++m)
    for (int v = 0; v < NV; ++v) store(out_acc + m * nr + v * kLanes, acc[m][v]);
}

template <typename T, int NV>
void general(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then) {
  constexpr int nr = NV * kLanes;
  const int64_t taps = int64_t(p.kh) * p.kw, cin_g = p.cin / p.groups, cout_g = p.cout / p.groups;
  const int64_t blocks = (cout_g + nr - 1) / nr;
  Scratch<float> packed(p.groups * blocks * taps * cin_g * nr);
  pack_kernel<T>(p, nr, packed.data);
  Scratch<T> zeros(p.cin);
  for (int64_t i = 0; i < p.cin; ++i) zeros.data[i] = from_float<T>(0.f);
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const Sources sources(p);
  const int64_t tiles = (count + kRows - 1) / kRows;
  const int threads = threads_for(count * taps * cin_g * cout_g / 8);
#pragma omp parallel num_threads(threads)
  {
    Scratch<const T*> src(taps * kRows);
    Scratch<int32_t> live(taps);
    Scratch<float> rule_rows(then ? p.cout : 0), pre(then ? kRows * p.cout : 0);  // the rule's input rows
    alignas(32) float acc[kRows * nr];
#pragma omp for schedule(dynamic, 8)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t first = tile * kRows, rows = std::min<int64_t>(kRows, count - first);
      Sources::Pixel q[kRows];
      for (int m = 0; m < kRows; ++m) q[m] = sources.pixel(list[first + std::min<int64_t>(m, rows - 1)]);
      // Live taps of this tile and, per pixel, the input row each reads (zeros where it reads nothing).
      int64_t n_live = 0;
      for (int ky = 0; ky < p.kh; ++ky)
        for (int kx = 0; kx < p.kw; ++kx) {
          bool any = false;
          const T** s = src.data + n_live * kRows;
          for (int m = 0; m < kRows; ++m) {
            s[m] = zeros.data;
            if (m >= rows) continue;
            const int64_t iy = sources.row(q[m], ky);
            if (iy < 0) continue;
            const int64_t ix = sources.col(q[m], kx);
            if (ix < 0) continue;
            const int64_t pix = (q[m].b * p.h + iy) * p.w + ix;
            if (!p.in_mask[pix]) continue;  // inactive inputs read as zero, never loaded
            s[m] = x + pix * p.cin;
            any = true;
          }
          if (any) live.data[n_live++] = ky * p.kw + kx;
        }
      for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const float* w = packed.data + (g * blocks + blk) * taps * cin_g * nr;
          tile_block<T, NV>(src.data, live.data, n_live, cin_g, g * cin_g, w, acc);
          const int64_t co0 = g * cout_g + blk * nr, cols = std::min<int64_t>(nr, cout_g - blk * nr);
          for (int64_t m = 0; m < rows; ++m) {
            const float* a = acc + m * nr;
            if (then) {
              float* r = pre.data + m * p.cout + co0;
              for (int64_t j = 0; j < cols; ++j) r[j] = a[j];
            } else {
              T* o = out + int64_t(list[first + m]) * p.cout + co0;
              for (int64_t j = 0; j < cols; ++j) o[j] = from_float<T>(a[j]);
            }
          }
        }
      if (then) DELTAJAX_ISA_FN(activation_at)(*then, list + first, rows, rule_rows.data, pre.data);
    }
  }
}

// groups == C_in == C_out: out[c] = sum over taps of x[tap][c] * w[tap][c].
template <typename T>
void depthwise(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then) {
  const int64_t c = p.cout, taps = int64_t(p.kh) * p.kw;
  Scratch<float> w(taps * c);
  const T* wt = static_cast<const T*>(p.kernel);
  for (int64_t i = 0; i < taps * c; ++i) w.data[i] = to_float(wt[i]);
  const Sources sources(p);
  const T* x = static_cast<const T*>(p.x);
  T* out = static_cast<T*>(p.out);
  const int threads = threads_for(count * taps * c);
#pragma omp parallel num_threads(threads)
  {
    Scratch<float> acc(c), rule_rows(then ? c : 0);
    float* __restrict a = acc.data;
#pragma omp for schedule(dynamic, 64)
    for (int64_t k = 0; k < count; ++k) {
      const int32_t o = list[k];
      const Sources::Pixel q = sources.pixel(o);
      for (int64_t ch = 0; ch < c; ++ch) a[ch] = 0.f;
      for (int ky = 0; ky < p.kh; ++ky) {
        const int64_t iy = sources.row(q, ky);
        if (iy < 0) continue;
        for (int kx = 0; kx < p.kw; ++kx) {
          const int64_t ix = sources.col(q, kx);
          if (ix < 0) continue;
          const int64_t pix = (q.b * p.h + iy) * p.w + ix;
          if (!p.in_mask[pix]) continue;
          const T* __restrict xi = x + pix * c;
          const float* __restrict wk = w.data + (int64_t(ky) * p.kw + kx) * c;
          for (int64_t ch = 0; ch < c; ++ch) a[ch] += to_float(xi[ch]) * wk[ch];
        }
      }
      if (then) {
        DELTAJAX_ISA_FN(activation_at)(*then, list + k, 1, rule_rows.data, a);
        continue;
      }
      T* __restrict oi = out + o * c;
      for (int64_t ch = 0; ch < c; ++ch) oi[ch] = from_float<T>(a[ch]);
    }
  }
}

template <typename T>
void compute(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then) {
  if (p.groups == p.cin && p.cout == p.cin) return depthwise<T>(p, list, count, then);
  if (p.cout / p.groups <= kLanes) return general<T, 1>(p, list, count, then);
  general<T, 2>(p, list, count, then);
}

}  // namespace
}  // namespace DELTAJAX_CPU_ISA_NS

void DELTAJAX_ISA_FN(conv_compute)(const ConvParams& p, const int32_t* list, int64_t count,
                                   const ActivationParams* then) {
  if (count == 0) return;
  dispatch_dtype(p.dtype, [&](auto tag) { compute<decltype(tag)>(p, list, count, then); });
}

}  // namespace deltajax::cpu
