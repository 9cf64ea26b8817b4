// A pixel's truncation test (TruncMode) in float32, for host and device code, so that the CPU's activation, the
// CUDA activation kernel and the CUDA rule epilogues decide alike. A pixel's score is built from its channels'
// updates y, in shares that are then combined (a thread's channels, a warp's lanes, a row tile's channel tiles).
#pragma once

#include <math.h>
#include <stdint.h>

#include "common/host_device.h"
#include "common/params.h"

namespace deltajax {

// Two shares of a pixel's score combined: the larger (kMax) or the sum (kL2, kRms: sums of squares). The larger is
// fmaxf on the device (one instruction) and a comparison on the host (it vectorises); both leave a for a NaN b,
// and they differ only for a NaN a, which no score starts as.
DELTAJAX_AHD float combine_scores(TruncMode mode, float a, float b) {
#if defined(__CUDA_ARCH__)
  return mode == TruncMode::kMax ? fmaxf(a, b) : a + b;
#else
  return mode == TruncMode::kMax ? (b > a ? b : a) : a + b;
#endif
}

// A channel's update y added to a share: |y| for kMax, y * y otherwise.
DELTAJAX_AHD float add_score(TruncMode mode, float score, float y) {
  return combine_scores(mode, score, mode == TruncMode::kMax ? fabsf(y) : y * y);
}

// Whether a pixel whose combined score over its c channels is `score` is kept (kNone: always).
DELTAJAX_AHD bool keeps(TruncMode mode, float threshold, float score, int64_t c) {
  switch (mode) {
    case TruncMode::kNone:
      return true;
    case TruncMode::kL2:
      return sqrtf(score) > threshold;
    case TruncMode::kRms:
      return sqrtf(score / float(c)) > threshold;
    default:
      return score > threshold;
  }
}

}  // namespace deltajax
