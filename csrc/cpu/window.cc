#include "cpu/window.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "common/conv_geometry.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace deltajax::cpu {

bool any_active(const uint8_t* mask, int64_t count) {
  uint8_t any = 0;
  for (int64_t i = 0; i < count; ++i) any |= mask[i];  // vectorised; no early exit needed at these sizes
  return any != 0;
}

int threads_for(int64_t work) {
#ifdef _OPENMP
  // Below ~64k element operations a parallel region costs more than it saves.
  const int64_t t = std::max<int64_t>(1, work / 65536);
  return static_cast<int>(std::min<int64_t>(t, omp_get_max_threads()));
#else
  (void)work;
  return 1;
#endif
}

void source_table(int64_t outputs, int taps, int stride, int rhs_dil, int pad_lo, int lhs_dil, int64_t size,
                  int64_t* table) {
  for (int64_t o = 0; o < outputs; ++o)
    for (int t = 0; t < taps; ++t) table[o * taps + t] = conv_source(o, t, stride, rhs_dil, pad_lo, lhs_dil, size);
}

void window_mask(const uint8_t* in, int64_t n, int64_t h, int64_t w, const Window& win, uint8_t* out, int64_t ho,
                 int64_t wo) {
  const bool identity = win.kh == 1 && win.kw == 1 && win.stride_h == 1 && win.stride_w == 1 && win.pad_top == 0 &&
                        win.pad_left == 0 && win.lhs_dil_h == 1 && win.lhs_dil_w == 1 && h == ho && w == wo;
  if (identity) {
    std::memcpy(out, in, static_cast<size_t>(n * h * w));
    return;
  }
  // Input column of each (output column, tap), -1 for padding and holes; likewise rows.
  std::vector<int64_t> src_x(static_cast<size_t>(wo * win.kw)), src_y(static_cast<size_t>(ho * win.kh));
  source_table(wo, win.kw, win.stride_w, win.rhs_dil_w, win.pad_left, win.lhs_dil_w, w, src_x.data());
  source_table(ho, win.kh, win.stride_h, win.rhs_dil_h, win.pad_top, win.lhs_dil_h, h, src_y.data());
  // Row pass: rows[b, iy, ox] = OR over kx; row_any[b, iy] says whether that row has anything.
  std::vector<uint8_t> rows(static_cast<size_t>(n * h * wo)), row_any(static_cast<size_t>(n * h));
  const int threads = threads_for(n * h * (w + wo * win.kw));
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < n * h; ++r) {
    const uint8_t* src = in + r * w;
    uint8_t* dst = rows.data() + r * wo;
    if (!any_active(src, w)) {
      row_any[r] = 0;
      continue;
    }
    uint8_t any = 0;
    for (int64_t ox = 0; ox < wo; ++ox) {
      uint8_t v = 0;
      for (int k = 0; k < win.kw; ++k) {
        const int64_t ix = src_x[ox * win.kw + k];
        if (ix >= 0) v |= src[ix];
      }
      dst[ox] = v;
      any |= v;
    }
    row_any[r] = any;
  }
  // Column pass: out[b, oy, :] = OR over ky of the active rows.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < n * ho; ++r) {
    const int64_t b = r / ho, oy = r % ho;
    uint8_t* dst = out + r * wo;
    std::memset(dst, 0, static_cast<size_t>(wo));
    for (int k = 0; k < win.kh; ++k) {
      const int64_t iy = src_y[oy * win.kh + k];
      if (iy < 0 || !row_any[b * h + iy]) continue;
      const uint8_t* src = rows.data() + (b * h + iy) * wo;
      for (int64_t ox = 0; ox < wo; ++ox) dst[ox] |= src[ox];
    }
  }
}

int64_t active_list(const uint8_t* mask, int64_t count, int32_t* list) {
  int64_t k = 0;
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) {
    uint64_t word;
    std::memcpy(&word, mask + i, 8);
    if (!word) continue;  // skip 8 inactive pixels at once
    for (int j = 0; j < 8; ++j)
      if (mask[i + j]) list[k++] = static_cast<int32_t>(i + j);
  }
  for (; i < count; ++i)
    if (mask[i]) list[k++] = static_cast<int32_t>(i);
  return k;
}

}  // namespace deltajax::cpu
