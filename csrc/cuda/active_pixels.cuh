// The walk shared by the per-pixel delta kernels (activation, add, affine, densify). A team of warps owns a span
// of `span` chunks of 32 pixels: its lanes first skim the span's masks together (each lane `span` bytes in one
// load, so a warp reads up to 512 pixels at once) and clear the output mask of inactive pixels; then, for each
// chunk of the span with an active pixel, the team's warps share the chunk's passes. A pixel gets `group` lanes (a
// power of two: at least min(units, 8), so that neighbouring lanes touch neighbouring channels of NHWC, and
// growing with the pixel's channel units (channels, or vectors of channels) until a lane takes at most 16, up to
// 32 lanes; on frames of few chunks, until a lane takes at most 4 while the grid allows); a warp takes 32 / group
// of the chunk's active pixels per pass. The host sizes the walk (pixel_walk): a team has as many warps as a fully
// active chunk needs passes (group), and spans grow, then teams shrink, until the grid has at most kWalkWarps
// warps, so a frame with few active pixels costs a few waves of warps that read the masks up to 16 bytes a lane.
// History, on an H100 / H200 (EfficientNet-Lite0): one thread per pixel with a serial loop over its channels, then
// one warp per 32 pixels with <= 8 lanes per pixel, left the wide late layers (480-1280 channels on few pixels)
// latency-bound: 21.8 of a 25 ms step in the activations. Teams of `group` warps per chunk fixed that (2.4 ms) but
// launched a warp per chunk and team member: at about 60 registers a thread, four blocks of 256 threads fit an SM,
// so an inactive 1080p frame of 64 channels took ~15 waves of warps that each read 32 mask bytes (58 us; 25 us
// with the skim). Lanes that took 15-30 channel vectors each on the late layers (27x48 and 14x24 pixels at
// 768x432, nearly all active once 1 % of the input changed) cost 12-24 us an activation: hence up to 32 lanes.
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

// Where a pixel is active, and which output mask to clear where it is not.
struct PixelMasks {
  const uint8_t* a;  // a pixel is active where a or b is nonzero
  const uint8_t* b;  // or nullptr
  uint8_t* clear;    // set to 0 at inactive pixels, or nullptr
};

// The shape of a walk over `pixels` pixels, chosen on the host (pixel_walk) and passed to the kernel.
struct PixelWalk {
  int64_t pixels;
  int group;  // lanes per pixel
  int team;   // warps per team: a power of two, <= group
  int span;   // chunks of 32 pixels per team and round: 1, 2, 4, 8 or 16 (mask bytes per lane in the skim)
};

__host__ __device__ constexpr int lanes_per_pixel(int64_t units) {
  int g = 1;
  while (g < 32 && ((g < units && g < 8) || units > 16 * g)) g <<= 1;
  return g;
}

// Two to four waves of warps on an H200 (132 multiprocessors, 16-32 resident warps each at these kernels'
// registers).
constexpr int64_t kWalkWarps = 8192;

inline PixelWalk pixel_walk(int64_t pixels, int64_t units) {
  PixelWalk w{pixels, lanes_per_pixel(units), 1, 1};
  const int64_t chunks = (pixels + 31) / 32;
  // Few chunks (wide layers on small frames): more lanes per pixel, down to 4 units a lane, while full teams fit.
  while (w.group < 32 && units > 4 * w.group && chunks * 2 * w.group <= kWalkWarps) w.group <<= 1;
  w.team = w.group;
  const auto warps = [&] { return (chunks + w.span - 1) / w.span * w.team; };
  while (w.span < 16 && warps() > kWalkWarps) w.span <<= 1;
  while (w.team > 1 && warps() > kWalkWarps) w.team >>= 1;
  return w;
}

// Blocks of kBlock threads for a walk (grid-stride beyond grid_for's cap).
inline int walk_grid(const PixelWalk& w) {
  const int64_t spans = (w.pixels + 32 * w.span - 1) / (32 * w.span);
  return grid_for(spans * w.team * 32);
}

// Bit j: byte j of w is nonzero.
__device__ __forceinline__ uint32_t nonzero_bytes(uint32_t w) {
  const uint32_t high = (((w & 0x7f7f7f7fu) + 0x7f7f7f7fu) | w) & 0x80808080u;
  return (high >> 7 & 1u) | (high >> 14 & 2u) | (high >> 21 & 4u) | (high >> 28 & 8u);
}

// Bit j (j < n, n in 1, 2, 4, 8, 16): mask byte i + j is nonzero; bytes at or past `pixels` read as zero. One load
// where the n bytes are in range and n-byte aligned.
__device__ __forceinline__ uint32_t mask_bits(const uint8_t* m, int64_t i, int n, int64_t pixels) {
  uint32_t w[4] = {0, 0, 0, 0};
  const uint8_t* at = m + i;
  if (i + n <= pixels && (reinterpret_cast<uintptr_t>(at) & (n - 1)) == 0) {
    switch (n) {
      case 16: {
        const uint4 v = *reinterpret_cast<const uint4*>(at);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
        break;
      }
      case 8: {
        const uint2 v = *reinterpret_cast<const uint2*>(at);
        w[0] = v.x, w[1] = v.y;
        break;
      }
      case 4:
        w[0] = *reinterpret_cast<const uint32_t*>(at);
        break;
      case 2:
        w[0] = *reinterpret_cast<const uint16_t*>(at);
        break;
      default:
        w[0] = *at;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 16; ++j)
      if (j < n && i + j < pixels) w[j / 4] |= uint32_t(at[j]) << (8 * (j % 4));
  }
  return nonzero_bytes(w[0]) | nonzero_bytes(w[1]) << 4 | nonzero_bytes(w[2]) << 8 | nonzero_bytes(w[3]) << 12;
}

// Zeroes mask bytes i + j (j < n, i + j < pixels) whose bit in `keep` is clear: one store where all n are.
__device__ __forceinline__ void clear_bytes(uint8_t* m, int64_t i, int n, int64_t pixels, uint32_t keep) {
  uint8_t* at = m + i;
  if (keep == 0 && i + n <= pixels && (reinterpret_cast<uintptr_t>(at) & (n - 1)) == 0) {
    switch (n) {
      case 16:
        *reinterpret_cast<uint4*>(at) = make_uint4(0, 0, 0, 0);
        return;
      case 8:
        *reinterpret_cast<uint2*>(at) = make_uint2(0, 0);
        return;
      case 4:
        *reinterpret_cast<uint32_t*>(at) = 0;
        return;
      case 2:
        *reinterpret_cast<uint16_t*>(at) = 0;
        return;
      default:
        *at = 0;
        return;
    }
  }
  for (int j = 0; j < n && i + j < pixels; ++j)
    if (!(keep >> j & 1u)) at[j] = 0;
}

// body(PixelLanes) is called by all 32 lanes of a warp together for each pass over active pixels that the warp
// makes (warp-uniform control flow, so the body may use __shfl_xor_sync with offsets < group). The body writes
// the output mask of active pixels; the walk clears it at inactive ones. Launch with walk_grid(w) blocks of kBlock.
template <class Body>
__device__ __forceinline__ void for_active_pixels(const PixelWalk& w, const PixelMasks& m, Body body) {
  const int lane = threadIdx.x & 31;
  const int per_warp = 32 / w.group, slot = lane / w.group;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t teams = ((int64_t(gridDim.x) * blockDim.x) >> 5) / w.team;
  if (warp >= teams * w.team) return;  // whole warps only: no collective waits for them
  const int member = static_cast<int>(warp % w.team);
  const int lanes_per_chunk = 32 / w.span;  // skim lanes that cover one chunk
  const unsigned chunk_lanes = lanes_per_chunk == 32 ? 0xffffffffu : (1u << lanes_per_chunk) - 1;
  for (int64_t start = warp / w.team * 32 * w.span; start < w.pixels; start += teams * 32 * w.span) {
    // The skim: this lane's `span` pixels start + lane * span + j, as bits j.
    const int64_t mine = start + int64_t(lane) * w.span;
    uint32_t bits = mask_bits(m.a, mine, w.span, w.pixels);
    if (m.b != nullptr) bits |= mask_bits(m.b, mine, w.span, w.pixels);
    if (member == 0 && m.clear != nullptr && bits != (1u << w.span) - 1)
      clear_bytes(m.clear, mine, w.span, w.pixels, bits);
    const unsigned busy = __ballot_sync(0xffffffffu, bits != 0);
    for (int chunk = 0; chunk < w.span; ++chunk) {
      if (!((busy >> (chunk * lanes_per_chunk)) & chunk_lanes)) continue;  // warp-uniform
      // Pixel `lane` of the chunk: bit lane % span of skim lane chunk * lanes_per_chunk + lane / span.
      const uint32_t held = __shfl_sync(0xffffffffu, bits, chunk * lanes_per_chunk + lane / w.span);
      const unsigned todo = __ballot_sync(0xffffffffu, held >> (lane % w.span) & 1u);
      const int64_t base = start + 32 * chunk;
      const int passes = (__popc(todo) + per_warp - 1) / per_warp;  // warp-uniform
      for (int pass = member; pass < passes; pass += w.team) {
        unsigned pick = todo;  // this lane's pixel: the active one of rank pass * per_warp + slot in the chunk
        for (int k = pass * per_warp + slot; k > 0 && pick; --k) pick &= pick - 1;
        body(PixelLanes{pick ? base + __ffs(pick) - 1 : -1, lane - slot * w.group, w.group});
      }
    }
  }
}

}  // namespace deltajax::cuda
