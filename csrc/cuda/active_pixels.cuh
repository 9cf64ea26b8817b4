// The walk shared by the per-pixel delta kernels (activation, add, affine, densify): the pixels go in chunks of
// 32, each read with one coalesced mask load and taken by a team of warps, so that wide layers get as many
// lanes as their channels need. A pixel gets `group` lanes (a power of two: at least min(C, 8), so that
// neighbouring lanes touch neighbouring channels of NHWC, a 32-byte sector per float32 load, and growing with C
// until a lane takes at most 16 channels, up to 32 lanes); a warp takes 32 / group of the chunk's active pixels,
// and the team has `group` warps, so a fully active chunk is done in one pass.
// History, on an H100 (EfficientNet-Lite0, 8 x 768x432, threshold 0): one thread per pixel with a serial loop
// over its channels, then 32 and then <= 8 lanes per pixel with one warp per 32 pixels, ran the network at
// 320-420 frames/s where XLA's fused full-frame reference of the same activations reached 1076: the JAX
// profiler put 21.8 of a 25 ms step in the 33 activation kernels. Their wide late layers (480-1280 channels on
// 8 x 27x48 or 14x24 pixels) had 84-324 warps on 132 multiprocessors, each lane walking 60-144 channels twice.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.cuh"

namespace deltajax::cuda {

struct PixelLanes {
  int64_t pixel;  // the pixel this lane works on, or -1 (a spare lane: it must still join warp collectives)
  int sub;        // this lane's first channel; it takes channels sub, sub + group, ...
  int group;      // lanes per pixel: a power of two, <= 32
};

__host__ __device__ constexpr int lanes_per_pixel(int64_t c) {
  int g = 1;
  while (g < 32 && ((g < c && g < 8) || c > 16 * g)) g <<= 1;
  return g;
}

// Blocks of kBlock threads for a walk over `pixels` pixels of `c` channels: a team of lanes_per_pixel(c) warps
// per chunk of 32 pixels.
inline int pixel_walk_grid(int64_t pixels, int64_t c) { return grid_for((pixels + 31) / 32 * lanes_per_pixel(c) * 32); }

// active(i) -> bool and inactive(i) are called for each pixel i < pixels (inactive by one warp of the team);
// body(PixelLanes) is called by all 32 lanes of a warp together when the warp has active pixels (warp-uniform
// control flow, so the body may use __shfl_xor_sync with offsets < group). Launch with pixel_walk_grid.
template <class Active, class Inactive, class Body>
__device__ __forceinline__ void for_active_pixels(int64_t pixels, int64_t c, Active active, Inactive inactive,
                                                  Body body) {
  const int lane = threadIdx.x & 31;
  const int group = lanes_per_pixel(c), per_warp = 32 / group, slot = lane / group;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t teams = ((int64_t(gridDim.x) * blockDim.x) >> 5) / group;
  if (warp >= teams * group) return;  // whole warps only: no collective waits for them
  const int member = static_cast<int>(warp % group);
  for (int64_t base = warp / group * 32; base < pixels; base += teams * 32) {
    const int64_t i = base + lane;
    const bool on = i < pixels && active(i);
    if (member == 0 && i < pixels && !on) inactive(i);
    const unsigned todo = __ballot_sync(0xffffffffu, on);
    if (__popc(todo) <= member * per_warp) continue;  // warp-uniform: none of the team's active pixels is ours
    unsigned mine = todo;  // this lane's pixel: the active one of rank member * per_warp + slot in the chunk
    for (int k = member * per_warp + slot; k > 0 && mine; --k) mine &= mine - 1;
    body(PixelLanes{mine ? base + __ffs(mine) - 1 : -1, lane - slot * group, group});
  }
}

}  // namespace deltajax::cuda
