// The walk shared by the per-pixel delta kernels (activation, add, affine, densify): the pixels go in chunks of
// 32, each read with one coalesced mask load and taken by a team of warps. A pixel gets `group` lanes (a power
// of two: at least min(units, 8), so that neighbouring lanes touch neighbouring channels of NHWC, and growing
// with the pixel's channel units (channels, or vectors of channels) until a lane takes at most 16, up to 32
// lanes); a warp takes 32 / group of the chunk's active pixels per pass. The team has as many warps as a fully
// active chunk needs passes (group) when the frame has few chunks, down to one warp that makes all the passes
// when the chunks alone give kWalkWarps warps: each warp of a team reads the chunk's mask again, and a frame of
// inactive pixels should cost one mask read per pixel.
// History, on an H100 (EfficientNet-Lite0, 8 x 768x432, threshold 0): one thread per pixel with a serial loop
// over its channels, then 32 and then <= 8 lanes per pixel with one warp per 32 pixels, ran the network at
// 320-420 frames/s where XLA's fused full-frame reference of the same activations reached 1076: the JAX
// profiler put 21.8 of a 25 ms step in the 33 activation kernels. Their wide late layers (480-1280 channels on
// 8 x 27x48 or 14x24 pixels) had 84-324 warps on 132 multiprocessors, each lane walking 60-144 channels twice.
// Teams of `group` warps for every frame size brought that to 2.4 ms, but made an inactive 1080p frame of 64
// channels cost 175 us instead of 36 (8 warps re-reading each chunk's mask).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launch.cuh"

namespace deltajax::cuda {

struct PixelLanes {
  int64_t pixel;  // the pixel this lane works on, or -1 (a spare lane: it must still join warp collectives)
  int sub;        // this lane's first unit; it takes units sub, sub + group, ...
  int group;      // lanes per pixel: a power of two, <= 32
};

__host__ __device__ constexpr int lanes_per_pixel(int64_t units) {
  int g = 1;
  while (g < 32 && ((g < units && g < 8) || units > 16 * g)) g <<= 1;
  return g;
}

// Enough warps for a GPU of 132 multiprocessors x 64 resident warps, four times over.
constexpr int64_t kWalkWarps = 32768;

// Warps per chunk of 32 pixels (a power of two, <= lanes_per_pixel(units)).
__host__ __device__ inline int team_size(int64_t pixels, int64_t units) {
  const int64_t chunks = (pixels + 31) / 32;
  int team = lanes_per_pixel(units);
  while (team > 1 && chunks * (team >> 1) >= kWalkWarps) team >>= 1;
  return team;
}

// Blocks of kBlock threads for a walk over `pixels` pixels of `units` channel units each.
inline int pixel_walk_grid(int64_t pixels, int64_t units) {
  return grid_for((pixels + 31) / 32 * team_size(pixels, units) * 32);
}

// active(i) -> bool and inactive(i) are called for each pixel i < pixels (inactive by one warp of the team);
// body(PixelLanes) is called by all 32 lanes of a warp together for each pass over active pixels that the warp
// makes (warp-uniform control flow, so the body may use __shfl_xor_sync with offsets < group). Launch with
// pixel_walk_grid(pixels, units).
template <class Active, class Inactive, class Body>
__device__ __forceinline__ void for_active_pixels(int64_t pixels, int64_t units, Active active, Inactive inactive,
                                                  Body body) {
  const int lane = threadIdx.x & 31;
  const int group = lanes_per_pixel(units), per_warp = 32 / group, slot = lane / group;
  const int team = team_size(pixels, units);
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t teams = ((int64_t(gridDim.x) * blockDim.x) >> 5) / team;
  if (warp >= teams * team) return;  // whole warps only: no collective waits for them
  const int member = static_cast<int>(warp % team);
  for (int64_t base = warp / team * 32; base < pixels; base += teams * 32) {
    const int64_t i = base + lane;
    const bool on = i < pixels && active(i);
    if (member == 0 && i < pixels && !on) inactive(i);
    const unsigned todo = __ballot_sync(0xffffffffu, on);
    const int passes = (__popc(todo) + per_warp - 1) / per_warp;  // warp-uniform
    for (int pass = member; pass < passes; pass += team) {
      unsigned mine = todo;  // this lane's pixel: the active one of rank pass * per_warp + slot in the chunk
      for (int k = pass * per_warp + slot; k > 0 && mine; --k) mine &= mine - 1;
      body(PixelLanes{mine ? base + __ffs(mine) - 1 : -1, lane - slot * group, group});
    }
  }
}

}  // namespace deltajax::cuda
