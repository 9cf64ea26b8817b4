// Grid sizing and the grid-stride loop shared by the simple kernels.
#pragma once

#include <cstdint>

namespace deltajax::cuda {

constexpr int kBlock = 256;

inline int grid_for(int64_t threads) {
  const int64_t b = (threads + kBlock - 1) / kBlock;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

#define DELTAJAX_GRID_STRIDE(i, count) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (count); i += int64_t(gridDim.x) * blockDim.x)

}  // namespace deltajax::cuda
