// The receptive-field rule of the output mask, per block of output pixels of one row, shared by the mask +
// compaction kernel (conv.cu) and the fused depthwise kernel (conv_depthwise.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/params.h"

namespace deltajax::cuda {

constexpr int kMaskSpan = 8192;  // bytes of input mask staged in shared memory (one or more rows of a span)

// Input index along one axis for position `pos` = o * stride + k * rhs_dil - pad, or -1 (32-bit: 64-bit
// division costs dozens of instructions and dominated the first version).
__device__ __forceinline__ int source_index(int pos, int lhs_dil, int size) {
  if (lhs_dil != 1) pos = (pos >= 0 && pos % lhs_dil == 0) ? pos / lhs_dil : -1;
  return pos < size ? pos : -1;
}

// Output pixels (b, oy, x0 + i * kThreads + threadIdx.x) for i < kItems, those below x0 + n_out, of a block of
// kThreads threads: taps[i] gets bit (ky * kw + kx) set for every tap that reads an active input pixel
// (kBits, needs kh * kw <= 64), or is just nonzero when any tap does (!kBits: stops at the first one).
// The input mask columns [lo, hi] the segment can read are staged in `span` (kMaskSpan bytes of shared memory),
// as many kernel rows at a time as fit (one pair of barriers per batch of rows, the rows' loads issued
// together; a batch with no active byte skips its per-tap tests); spans too wide to stage (huge strides) are
// read from global memory. Every thread of the block must call it (it has barriers); all its branches around
// barriers are uniform over the block.
template <int kThreads, int kItems, bool kBits, typename Taps>
__device__ __forceinline__ void receptive_field(const ConvParams& p, int b, int oy, int x0, int n_out, uint8_t* span,
                                                Taps (&taps)[kItems]) {
  static_assert(std::is_same_v<Taps, std::conditional_t<kBits, uint64_t, uint32_t>>, "64-bit tap sets, or a flag");
  const int in_h = int(p.h), in_w = int(p.w), tid = threadIdx.x;
  const uint8_t* m = p.in_mask + int64_t(b) * in_h * in_w;
#pragma unroll
  for (int i = 0; i < kItems; ++i) taps[i] = 0;
  // Input columns [lo, hi] that this segment's outputs can read.
  const int pos_lo = x0 * p.stride_w - p.pad_left;
  const int pos_hi = (x0 + n_out - 1) * p.stride_w + (p.kw - 1) * p.rhs_dil_w - p.pad_left;
  const int lo = pos_lo <= 0 ? 0 : (pos_lo + p.lhs_dil_w - 1) / p.lhs_dil_w;
  const int hi = pos_hi < 0 ? -1 : min(in_w - 1, pos_hi / p.lhs_dil_w);
  const int width = hi - lo + 1;
  if (width <= 0 || n_out <= 0) return;  // no input column in reach: nothing is active (uniform)
  const int batch = width <= kMaskSpan ? min(p.kh, kMaskSpan / width) : 0;  // rows staged together; 0: global
  const int step = batch > 0 ? batch : p.kh;
  for (int k0 = 0; k0 < p.kh; k0 += step) {
    const int k1 = min(p.kh, k0 + step);
    if (batch > 0) {
      __syncthreads();  // the previous batch's reads are done
      int staged_active = 0;
      for (int ky = k0; ky < k1; ++ky) {
        const int iy = source_index(oy * p.stride_h + ky * p.rhs_dil_h - p.pad_top, p.lhs_dil_h, in_h);
        if (iy < 0) continue;  // uniform
        const uint8_t* mrow = m + int64_t(iy) * in_w + lo;
        uint8_t* srow = span + (ky - k0) * width;
        for (int j = tid; j < width; j += kThreads) staged_active |= srow[j] = mrow[j];
      }
      // Rows with no active pixel in reach set no tap: the per-tap tests below are skipped (uniform).
      if (!__syncthreads_or(staged_active)) continue;
    }
    for (int ky = k0; ky < k1; ++ky) {
      const int iy = source_index(oy * p.stride_h + ky * p.rhs_dil_h - p.pad_top, p.lhs_dil_h, in_h);
      if (iy < 0) continue;
      const uint8_t* mrow = m + int64_t(iy) * in_w;
      const uint8_t* srow = span + (ky - k0) * width;
#pragma unroll
      for (int i = 0; i < kItems; ++i) {
        const int ox = x0 + i * kThreads + tid;
        if (ox >= x0 + n_out || (!kBits && taps[i])) continue;
#pragma unroll 1  // small code: this runs once per block, the kernels' hot loops come after it
        for (int kx = 0; kx < p.kw; ++kx) {
          const int ix = source_index(ox * p.stride_w + kx * p.rhs_dil_w - p.pad_left, p.lhs_dil_w, in_w);
          if (ix >= 0 && (batch > 0 ? srow[ix - lo] : mrow[ix])) {  // a valid ix lies in [lo, hi]
            if constexpr (kBits) {
              taps[i] |= Taps(1) << (ky * p.kw + kx);
            } else {
              taps[i] = 1;
              break;
            }
          }
        }
      }
    }
  }
}

}  // namespace deltajax::cuda
