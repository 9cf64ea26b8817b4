// Rounding of an emitted float32 delta to the precision its consumer computes in, for host and device code.
#pragma once

#include <stdint.h>
#include <string.h>

#if defined(__CUDACC__)
#define DELTAJAX_EHD __host__ __device__ __forceinline__
#else
#define DELTAJAX_EHD inline
#endif

namespace deltajax {

// x rounded to nearest even with `bits` explicit mantissa bits (0 or >= 23: x itself; 10 is TF32, what tensor
// cores read of a float32 operand). NaN and Inf pass unchanged. The same bits as lax.reduce_precision(x, 8, bits).
DELTAJAX_EHD float round_mantissa(float x, int bits) {
  if (bits <= 0 || bits >= 23) return x;
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  const int drop = 23 - bits;
  u += ((1u << (drop - 1)) - 1u) + ((u >> drop) & 1u);
  u &= ~((1u << drop) - 1u);
  memcpy(&x, &u, 4);
  return x;
}

}  // namespace deltajax
