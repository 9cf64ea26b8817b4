// Pixel-level helpers shared by the CPU kernels: receptive-field masks and active-pixel lists.
#pragma once

#include <cstdint>

namespace deltajax::cpu {

// Window geometry along both axes, in the terms of ConvParams (pools: no dilations).
struct Window {
  int kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;
  int lhs_dil_h = 1, lhs_dil_w = 1;
  int rhs_dil_h = 1, rhs_dil_w = 1;
};

// out[b, oy, ox] = OR of in[b, iy, ix] over the taps of the window (out-of-bounds and holes read 0).
// Separable: a row pass then a column pass, rows without any active pixel skipped.
void window_mask(const uint8_t* in, int64_t n, int64_t h, int64_t w, const Window& win, uint8_t* out, int64_t ho,
                 int64_t wo);

// table[o * taps + t] = the input index along one axis that output index o reads at tap t, or -1 where the tap
// reads zero (conv_source for o < outputs): built once per call, so per-pixel loops need no divisions.
void source_table(int64_t outputs, int taps, int stride, int rhs_dil, int pad_lo, int lhs_dil, int64_t size,
                  int64_t* table);

// Writes the flat indices of the non-zero entries of mask[0, count) to list, in order; returns how many.
int64_t active_list(const uint8_t* mask, int64_t count, int32_t* list);

// True when any of mask[0, count) is non-zero.
bool any_active(const uint8_t* mask, int64_t count);

// Number of threads the kernels use for `work` units of roughly `unit_cost` element operations.
int threads_for(int64_t work);

}  // namespace deltajax::cpu
