// Tile-sparse convolution on tensor cores for layers with many active pixels (more than one tap, stride 1, no
// dilation, one group).
//
// The list kernel (conv_gemm.cuh) gathers every tap of every active pixel from L2: a 3x3 layer reads its input nine
// times, and at p = 100 % it runs at a third of cuDNN's rate. This kernel computes the active output tiles of
// kOutTileRows x kOutTileCols pixels (common/params.h) that the mask pass listed instead. A block keeps its output
// channels' whole kernel slice resident in shared memory (all taps, all input channels, loaded once) and shares it
// among up to four tile groups of warps. Each group stages one tile's input halo ((kOutTileRows + kh - 1) x
// (kOutTileCols + kw - 1) pixels, every input channel, inactive pixels as zeros) in a buffer of its own, and its
// taps read shifted windows of the halo: each input pixel crosses L2 about 1.4 times for a 3x3 instead of 9. The
// groups meet only at named barriers, so one group's halo loads while the others compute.
//
// GEMM view of one tile: rows = the tile's 128 pixels, K = taps x Cin (Cin rounded up to one k-step, zero-filled),
// N = the block's channels (HaloLayout::kN). 16-bit values: groups of two warps, each 64 x 64 (four tile rows x
// 64 channels), eight ldmatrix.x4 per 32 mma.m16n8k16. Float32 (TF32): a 32-channel slice (half the bytes of a
// 64-channel one, so that three groups fit), groups of four warps of 32 x 32. Outputs are stored where out_mask is
// set (inactive outputs keep what they held, as in the list kernel).
//
// The choice between the two kernels is made on the device, per call, by both (halo_takes): this one computes
// where the active pixels fill at least a set share of the active tiles (so its idle pixels cost less than the
// list kernel's gathers would), the list kernel elsewhere; each returns at once where the other computes.
// float32 HIGHEST (3xTF32) was not measured with it and keeps the list kernel.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "common/params.h"
#include "cuda/epilogue_rule.h"
#include "cuda/launch.cuh"
#include "cuda/mma.cuh"

namespace deltajax::cuda::gemm {

constexpr int kTileRows = kOutTileRows, kTileCols = kOutTileCols;
static_assert(kTileCols == 16, "one 16-row mma fragment per tile row");

// The active output tiles that the mask pass listed (tile indices b * tiles_y * tiles_x + ty * tiles_x + tx, in
// any order), or none (tiles == nullptr: its byte-wise kernel lists none).
struct TileList {
  const int32_t* tiles = nullptr;  // [count]
  const int32_t* count = nullptr;
};

// Which kernel computes a layer, decided by both on the device: the halo kernel where the active pixels number at
// least `per_tile` per active tile (of kTileRows * kTileCols pixels), the list kernel elsewhere.
struct HaloSplit {
  const int32_t* tile_count = nullptr;  // nullptr: the list kernel computes every call
  int per_tile = 0;
};
__device__ __forceinline__ bool halo_takes(const HaloSplit& s, int pixel_count) {
  return s.tile_count != nullptr && pixel_count > 0 && int64_t(pixel_count) >= int64_t(s.per_tile) * *s.tile_count;
}

// The halo kernel's shape for values of type T, and the element counts of its shared memory for one layer.
// A block computes kN output channels; its groups of kGroupWarps warps each compute one tile at a time, a warp
// kTileRows / kGroupWarps tile rows x kN channels. The kernel slice is [taps * cin_pad][b_stride] (output channels
// contiguous; ldmatrix.trans gives the B fragments) for 16-bit values, and [taps][kN][b_stride] (input channels
// contiguous) for float32, whose 32-bit elements ldmatrix cannot transpose. Float32 takes half the channels (its
// slice is twice the bytes) and twice the warps per tile (so a warp holds as many accumulators).
template <typename T>
struct HaloLayout {
  static constexpr int kStep = sizeof(T) == 2 ? 16 : 8;  // K per mma k-step
  static constexpr int kVec = 16 / int(sizeof(T));       // elements per 16-byte copy
  static constexpr bool kKContiguous = sizeof(T) == 4;   // the kernel slice's layout
  static constexpr int kN = sizeof(T) == 2 ? 64 : 32;    // output channels per block (and per warp)
  static constexpr int kGroupWarps = sizeof(T) == 2 ? 2 : 4;
  static constexpr int kGroupThreads = 32 * kGroupWarps;
  static constexpr int kWarpRows = kTileRows / kGroupWarps;  // tile rows per warp (its 16-row mma fragments)
  static constexpr int kMaxGroups = 4;                       // a block's, and the bound on its registers
  int cin_pad, a_stride, b_stride, halo_h, halo_w, halo_elems, weight_elems;
  __host__ __device__ explicit HaloLayout(const ConvParams& p) {
    cin_pad = (int(p.cin) + kStep - 1) / kStep * kStep;
    a_stride = cin_pad + kVec;  // +16 bytes per row: ldmatrix rows fall in distinct banks
    b_stride = kKContiguous ? cin_pad + kVec : kN + 8;
    halo_h = kTileRows + p.kh - 1;
    halo_w = kTileCols + p.kw - 1;
    halo_elems = halo_h * halo_w * a_stride;
    weight_elems = p.kh * p.kw * (kKContiguous ? kN : cin_pad) * b_stride;
  }
  size_t bytes(int groups) const { return size_t(weight_elems + groups * halo_elems) * sizeof(T); }
};

// Waits for the `threads` threads of named barrier `id` (1 and up; 0 is __syncthreads').
__device__ __forceinline__ void group_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// One block: the kernel slice of channels [n0, n0 + kN) loaded once by all its threads, then blockDim.x /
// kGroupThreads groups, each with a halo buffer of its own, walking the tile list apart (group g of block x takes
// tiles g * gridDim.x + x, then every groups * gridDim.x: few tiles spread over the SMs first). A group's warps meet
// at a named barrier only: while one group waits for its halo, the others compute. Its next halo is loaded while its
// warps store the current tile's outputs.
template <typename T, typename OutT, int kMode>
__global__ void __launch_bounds__(HaloLayout<T>::kMaxGroups* HaloLayout<T>::kGroupThreads, 1)
    conv_halo_kernel(ConvParams p, const int32_t* __restrict__ count_ptr, TileList list, HaloSplit split) {
  static_assert(sizeof(T) == 2 || kMode == 0, "float32 takes the halo kernel in TF32 only");
  using Shape = HaloLayout<T>;
  constexpr int kVec = Shape::kVec, kStep = Shape::kStep, kN = Shape::kN, kGroupThreads = Shape::kGroupThreads;
  constexpr int kMI = Shape::kWarpRows, kNI = kN / 8;
  const int tiles = *list.count;
  if (!halo_takes(split, *count_ptr) || int(blockIdx.x) >= tiles) return;  // the list kernel, or no tile for it
  const Shape L(p);
  extern __shared__ __align__(16) unsigned char smem[];
  T* weights = reinterpret_cast<T*>(smem);  // the kernel slice
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.kernel);
  OutT* __restrict__ out = static_cast<OutT*>(p.out);
  const int cin = int(p.cin), cout = int(p.cout), taps = p.kh * p.kw;
  const int in_h = int(p.h), in_w = int(p.w), ho = int(p.ho), wo = int(p.wo);
  const int tiles_x = (wo + kTileCols - 1) / kTileCols, tiles_y = (ho + kTileRows - 1) / kTileRows;
  const int n0 = blockIdx.y * kN;
  const int tid = threadIdx.x, lane = tid & 31, group = tid / kGroupThreads, gtid = tid - group * kGroupThreads;
  const int wrow = (gtid >> 5) * kMI;  // this warp's first tile row
  const int g = lane >> 2, t4 = lane & 3;
  T* halo = weights + L.weight_elems + group * L.halo_elems;  // [halo_h * halo_w][a_stride], this group's

  // The kernel slice of channels [n0, n0 + kN), every tap and input channel; zeros past Cin and Cout. Float32 is
  // transposed on the way (4-byte copies; global reads stay coalesced along the output channels).
  if constexpr (Shape::kKContiguous) {
    for (int s = tid; s < taps * L.cin_pad * kN; s += blockDim.x) {
      const int k = s / kN, nl = s - k * kN, tap = k / L.cin_pad, c = k - tap * L.cin_pad, n = n0 + nl;
      const bool ok = c < cin && n < cout;
      cp_async4(weights + (tap * kN + nl) * L.b_stride + c, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
    }
  } else {
    constexpr int kSeg = kN / kVec;
    const int rows = taps * L.cin_pad;
    for (int s = tid; s < rows * kSeg; s += blockDim.x) {
      const int k = s / kSeg, seg = s - k * kSeg, tap = k / L.cin_pad, c = k - tap * L.cin_pad;
      const int n = n0 + seg * kVec;
      const bool ok = c < cin && n < cout;
      cp_async16(weights + k * L.b_stride + seg * kVec, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
    }
  }
  // The halo of the i-th listed tile into this group's buffer, by the group's threads: input pixels outside the
  // image or inactive read as zero.
  auto load_halo = [&](int i) {
    const OutTile t = out_tile(list.tiles[i], tiles_y, tiles_x);
    const int segs = L.cin_pad / kVec, pixels = L.halo_h * L.halo_w;
    const int iy0 = t.ty * kTileRows - p.pad_top, ix0 = t.tx * kTileCols - p.pad_left;
    for (int s = gtid; s < pixels * segs; s += kGroupThreads) {
      const int hp = s / segs, seg = s - hp * segs, hy = hp / L.halo_w, hx = hp - hy * L.halo_w;
      const int iy = iy0 + hy, ix = ix0 + hx, c = seg * kVec;
      int64_t pix = -1;
      if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w && c < cin) {
        pix = (int64_t(t.b) * in_h + iy) * in_w + ix;
        if (!p.in_mask[pix]) pix = -1;
      }
      cp_async16(halo + hp * L.a_stride + c, pix >= 0 ? x + pix * cin + c : x, pix >= 0);
    }
  };

  const int stride = int(blockDim.x / kGroupThreads * gridDim.x);
  int i = group * int(gridDim.x) + int(blockIdx.x);
  if (i < tiles) load_halo(i);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();  // the kernel slice and every group's first halo
  while (i < tiles) {
    float acc[kMI][kNI][4];
    zero(acc);
    for (int tap = 0; tap < taps; ++tap) {
      const int ky = tap / p.kw, kx = tap - ky * p.kw;
      const T* a0 = halo + ((wrow + ky) * L.halo_w + kx) * L.a_stride;
#pragma unroll 2
      for (int kk = 0; kk < L.cin_pad; kk += kStep) {
        const T* a[kMI];
#pragma unroll
        for (int mi = 0; mi < kMI; ++mi) a[mi] = a0 + mi * L.halo_w * L.a_stride + kk;
        if constexpr (Shape::kKContiguous)
          warp_mma_step_tf32_nk(a, L.a_stride, weights + tap * kN * L.b_stride + kk, L.b_stride, lane, acc);
        else
          warp_mma_step<T, kMode>(a, L.a_stride, weights + (tap * L.cin_pad + kk) * L.b_stride, L.b_stride, lane, acc);
      }
    }
    const OutTile t = out_tile(list.tiles[i], tiles_y, tiles_x);
    group_barrier(1 + group, kGroupThreads);  // the group's warps are done with its halo, which the load refills
    const int next = i + stride;
    if (next < tiles) load_halo(next);
    cp_async_commit();
    // Fragment rows: tile row wrow + mi, columns g and g + 8; two adjacent channels per register pair.
#pragma unroll
    for (int mi = 0; mi < kMI; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int oy = t.ty * kTileRows + wrow + mi, ox = t.tx * kTileCols + g + 8 * half;
        if (oy >= ho || ox >= wo) continue;
        const int64_t o = (int64_t(t.b) * ho + oy) * wo + ox;
        if (!p.out_mask[o]) continue;
#pragma unroll
        for (int ni = 0; ni < kNI; ++ni) {
          const int n = n0 + ni * 8 + 2 * t4;
          if (n < cout) store_pair(out + o * cout + n, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
        }
      }
    cp_async_wait<0>();
    group_barrier(1 + group, kGroupThreads);  // the next halo has landed for every thread of the group
    i = next;
  }
}

// Launch facts per device and instantiation, computed once (the handler runs every frame).
struct HaloCache {
  std::atomic<int> regs{0}, smem_set{0};
};

// The share of an active tile's pixels from which the halo kernel takes a layer, for values of `bytes` bytes: where
// the halo kernel over whole tiles costs what the list kernel costs over their active pixels. 3x3, 64 -> 64,
// 1x1080x1920 on an H100 (2026-12-06), every tile active: bf16 0.668 ms against the list's 1.033, TF32 1.767
// against 2.037 (with tile groups, later: bf16 0.591 against 1.027, TF32 1.583 against 1.988; the shares were kept,
// as blob masks at p = 5 % still ran faster on the list in TF32, 0.134 against 0.144 ms, and scattered masks were
// not measured again). DELTAJAX_HALO_FROM overrides it (benchmarks only; above 1 turns the kernel off), read once
// per process.
inline double halo_fraction(int bytes) {
  static const double env = env_number("DELTAJAX_HALO_FROM");
  return env >= 0 ? env : bytes == 2 ? 0.65 : 0.87;
}

// Whether the geometry is the halo kernel's: more than one tap (a 1x1 reads each input once from the list too; 1x1,
// 64 -> 64, 1x1080x1920 on an H100 with tile groups, 2026-12-06, blob masks at p = 5 / 20 / 50 / 100 %: TF32
// 0.063 / 0.159 / 0.335 / 0.573 ms against the list's 0.049 / 0.122 / 0.268 / 0.503, bf16 0.041 / 0.099 / 0.189 /
// 0.314 against 0.038 / 0.092 / 0.184 / 0.327), stride 1, no dilation, one group, 16-byte operand rows.
// Kernels past 16 x 16 taps or 2048 input channels never fit shared memory; bounding them first keeps HaloLayout's
// int arithmetic far from overflow.
inline bool halo_geometry(const ConvParams& p, int vec) {
  return p.kh * p.kw > 1 && p.kh <= 16 && p.kw <= 16 && p.cin <= 2048 && p.groups == 1 && p.stride_h == 1 &&
         p.stride_w == 1 && p.lhs_dil_h == 1 && p.lhs_dil_w == 1 && p.rhs_dil_h == 1 && p.rhs_dil_w == 1 &&
         p.cin % vec == 0 && p.cout % vec == 0 && p.cin >= 8 && p.cout >= 8;
}

// Launches the halo kernel over the listed tiles and sets `split` to the rule that both kernels decide by; or
// leaves `split` empty (the list kernel computes) and launches nothing where the tiles were not listed, the layer
// is not the kernel's, or its kernel slice and one halo do not fit in shared memory.
template <typename T, typename OutT, int kMode>
cudaError_t launch_conv_halo(const ConvParams& p, const int32_t* count, const TileList& list, HaloSplit& split,
                             cudaStream_t stream) {
  static HaloCache cache[kMaxDevices];
  split = HaloSplit{};
  const double fraction = halo_fraction(int(sizeof(T)));
  if (list.tiles == nullptr || !halo_geometry(p, HaloLayout<T>::kVec) || fraction > 1.0) return cudaSuccess;
  DeviceFacts dev;
  if (cudaError_t e = device_facts(dev); e != cudaSuccess) return e;
  HaloCache& c = cache[dev.device < kMaxDevices ? dev.device : 0];
  auto kernel = conv_halo_kernel<T, OutT, kMode>;
  int regs = c.regs.load(std::memory_order_relaxed);
  if (regs == 0) {
    cudaFuncAttributes attr{};
    if (cudaError_t e = cudaFuncGetAttributes(&attr, kernel); e != cudaSuccess) return e;
    regs = attr.numRegs > 0 ? attr.numRegs : 255;
    c.regs.store(regs, std::memory_order_relaxed);
  }
  // As many tile groups (each with a halo buffer of its own) as fit beside the kernel slice in shared memory; blocks
  // an SM by shared memory (228 KB an SM, 1 KB reserved per block) and by registers.
  using Shape = HaloLayout<T>;
  const Shape layout(p);
  int groups = Shape::kMaxGroups;
  while (groups > 0 && layout.bytes(groups) > size_t(dev.smem_optin)) --groups;
  if (groups < 1) return cudaSuccess;
  const int threads = groups * Shape::kGroupThreads;
  const size_t smem = layout.bytes(groups);
  const int64_t blocks_per_sm = std::max<int64_t>(
      1, std::min<int64_t>(int64_t(228 * 1024) / int64_t(smem + 1024), 65536 / (int64_t(regs) * threads)));
  if (int(smem) > c.smem_set.load(std::memory_order_acquire)) {
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        e != cudaSuccess)
      return e;
    c.smem_set.store(int(smem), std::memory_order_release);
  }
  split = HaloSplit{list.count, int(fraction * kTileRows * kTileCols + 0.999)};
  const int ny = int((p.cout + Shape::kN - 1) / Shape::kN);
  const int64_t nx = std::max<int64_t>(
      1, std::min<int64_t>((conv_out_tiles(p) + groups - 1) / groups, (dev.sms * blocks_per_sm + ny - 1) / ny));
  kernel<<<dim3(unsigned(nx), unsigned(ny)), unsigned(threads), smem, stream>>>(p, count, list, split);
  return cudaGetLastError();
}

}  // namespace deltajax::cuda::gemm
