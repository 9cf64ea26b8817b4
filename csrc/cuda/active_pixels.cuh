// The walk shared by the per-pixel delta kernels (activation, add, affine, densify): a warp takes 32
// consecutive pixels, reads their masks with one coalesced load, settles the inactive ones lane by lane, and
// then visits only the active ones, `group` lanes per pixel (the power of two >= C, at most 8) so that
// neighbouring lanes touch neighbouring channels of NHWC (a 32-byte sector per float32 load).
// History, on an H100 (EfficientNet-Lite0, 8 x 768x432, threshold 0): the first versions gave each thread one
// pixel and a serial loop over its channels (neighbouring lanes read addresses C elements apart); 32 lanes per
// pixel made every warp walk its active pixels one at a time, a memory latency each, and the network ran at
// 330 frames/s where XLA's fused full-frame reference of the same activations reached 1076. At most 8 lanes
// per pixel walks four pixels per step.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace deltajax::cuda {

struct PixelLanes {
  int64_t pixel;  // the pixel this lane works on, or -1 (a spare lane: it must still join warp collectives)
  int sub;        // this lane's first channel; it takes channels sub, sub + group, ...
  int group;      // lanes per pixel: a power of two, <= kMaxLanesPerPixel
};

constexpr int kMaxLanesPerPixel = 8;

__device__ __forceinline__ int lanes_per_pixel(int64_t c) {
  int g = 1;
  while (g < kMaxLanesPerPixel && g < c) g <<= 1;
  return g;
}

// active(i) -> bool and inactive(i) are called for each of the lane's pixels (i < pixels); body(PixelLanes) is
// called by all 32 lanes together for each batch of up to 32 / group active pixels (warp-uniform control flow,
// so the body may use __shfl_xor_sync with offsets < group). Launch with one thread per pixel (grid_for).
template <class Active, class Inactive, class Body>
__device__ __forceinline__ void for_active_pixels(int64_t pixels, int64_t c, Active active, Inactive inactive,
                                                  Body body) {
  const int lane = threadIdx.x & 31;
  const int group = lanes_per_pixel(c), slot = lane / group, per_step = 32 / group;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t base = ((int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5) * 32; base < pixels; base += warps * 32) {
    const int64_t i = base + lane;
    const bool on = i < pixels && active(i);
    if (i < pixels && !on) inactive(i);
    unsigned todo = __ballot_sync(0xffffffffu, on);
    while (todo) {  // warp-uniform
      unsigned mine = todo;
      for (int k = 0; k < slot && mine; ++k) mine &= mine - 1;  // drop the set bits of the slots before this one
      body(PixelLanes{mine ? base + __ffs(mine) - 1 : -1, lane - slot * group, group});
      for (int k = 0; k < per_step && todo; ++k) todo &= todo - 1;
    }
  }
}

}  // namespace deltajax::cuda
