// Tap -> input coordinate mapping of ConvParams, shared by the CPU and CUDA kernels.
#pragma once

#include "common/params.h"

#if defined(__CUDACC__)
#define DELTAJAX_HD __host__ __device__ __forceinline__
#else
#define DELTAJAX_HD inline
#endif

namespace deltajax {

// Input index along one axis read by output index `o` at tap `k`, or -1 when the tap reads zero
// (padding, or a hole of the dilated input of a transposed convolution).
DELTAJAX_HD int64_t conv_source(int64_t o, int k, int stride, int rhs_dil, int pad_lo, int lhs_dil, int64_t size) {
  const int64_t pos = o * stride + int64_t(k) * rhs_dil - pad_lo;
  if (pos < 0 || pos % lhs_dil) return -1;
  const int64_t i = pos / lhs_dil;
  return i < size ? i : -1;
}

}  // namespace deltajax
