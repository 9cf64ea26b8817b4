// Tile-sparse convolution on tensor cores for layers with many active pixels (more than one tap, stride 1, no
// dilation, one group).
//
// The list kernel (conv_gemm.cuh) gathers every tap of every active pixel from L2: a 3x3 layer reads its input nine
// times, and at p = 100 % it runs at a third of cuDNN's rate. This kernel computes the active output tiles of
// kOutTileRows x kOutTileCols pixels (common/params.h) that the mask pass listed instead. A block keeps its kBN output
// channels' whole kernel resident in shared memory (all taps, all input channels, loaded once), and for each of its
// tiles (the block strides over the tile list) stages the tile's input halo ((kOutTileRows + kh - 1) x
// (kOutTileCols + kw - 1) pixels, every input channel, inactive pixels as zeros) once; the taps then read shifted
// windows of the halo. Each input pixel crosses L2 about 1.4 times for a 3x3 instead of 9. The halo of the next
// tile loads (cp.async) while the block computes the current one where a second halo buffer keeps as many blocks an
// SM (else one buffer, and the SM's other blocks fill the gap).
//
// GEMM view of one tile: rows = the tile's 128 pixels, K = taps x Cin (Cin rounded up to one k-step, zero-filled),
// N = kBN output channels; 8 warps, each 32 x 32 (two output rows of the tile x 32 channels), mma.cuh's k-step.
// Outputs are stored where out_mask is set (inactive outputs keep what they held, as in the list kernel).
//
// The choice between the two kernels is made on the device, per call, by both (halo_takes): this one computes
// where the active pixels fill at least a set share of the active tiles (so its idle pixels cost less than the
// list kernel's gathers would), the list kernel elsewhere; each returns at once where the other computes.
// float32 HIGHEST (3xTF32) was not measured with it and keeps the list kernel.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>

#include "common/params.h"
#include "cuda/epilogue_rule.h"
#include "cuda/launch.cuh"
#include "cuda/mma.cuh"

namespace deltajax::cuda::gemm {

constexpr int kTileRows = kOutTileRows, kTileCols = kOutTileCols, kHaloThreads = 256;
static_assert(kTileRows == 8 && kTileCols == 16, "8 warps of 2 tile rows x 16 pixels");

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

// Element counts of the halo kernel's shared memory for one layer. The kernel slice is [taps * cin_pad][b_stride]
// (output channels contiguous; ldmatrix.trans gives the B fragments) for 16-bit values, and [taps][kBN][b_stride]
// (input channels contiguous) for float32, whose 32-bit elements ldmatrix cannot transpose.
template <typename T>
struct HaloLayout {
  static constexpr int kStep = sizeof(T) == 2 ? 16 : 8;  // K per mma k-step
  static constexpr int kVec = 16 / int(sizeof(T));       // elements per 16-byte copy
  static constexpr bool kKContiguous = sizeof(T) == 4;   // the kernel slice's layout
  int cin_pad, a_stride, b_stride, halo_h, halo_w, halo_elems, weight_elems;
  __host__ __device__ explicit HaloLayout(const ConvParams& p) {
    cin_pad = (int(p.cin) + kStep - 1) / kStep * kStep;
    a_stride = cin_pad + kVec;  // +16 bytes per row: ldmatrix rows fall in distinct banks
    b_stride = kKContiguous ? cin_pad + kVec : kBN + 8;
    halo_h = kTileRows + p.kh - 1;
    halo_w = kTileCols + p.kw - 1;
    halo_elems = halo_h * halo_w * a_stride;
    weight_elems = p.kh * p.kw * (kKContiguous ? kBN : cin_pad) * b_stride;
  }
  size_t bytes(int halos) const { return size_t(weight_elems + halos * halo_elems) * sizeof(T); }
};

template <typename T, typename OutT, int kMode>
__global__ void __launch_bounds__(kHaloThreads, 2)
    conv_halo_kernel(ConvParams p, const int32_t* __restrict__ count_ptr, TileList list, HaloSplit split, int halos) {
  static_assert(sizeof(T) == 2 || kMode == 0, "float32 takes the halo kernel in TF32 only");
  const int tiles = *list.count;
  if (!halo_takes(split, *count_ptr) || int(blockIdx.x) >= tiles) return;  // the list kernel, or no tile for it
  constexpr int kVec = HaloLayout<T>::kVec, kStep = HaloLayout<T>::kStep;
  const HaloLayout<T> L(p);
  extern __shared__ __align__(16) unsigned char smem[];
  T* weights = reinterpret_cast<T*>(smem);  // [taps * cin_pad][b_stride]
  T* halo0 = weights + L.weight_elems;      // [halos][halo_h * halo_w][a_stride]
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.kernel);
  OutT* __restrict__ out = static_cast<OutT*>(p.out);
  const int cin = int(p.cin), cout = int(p.cout), taps = p.kh * p.kw;
  const int in_h = int(p.h), in_w = int(p.w), ho = int(p.ho), wo = int(p.wo);
  const int tiles_x = (wo + kTileCols - 1) / kTileCols, tiles_y = (ho + kTileRows - 1) / kTileRows;
  const int n0 = blockIdx.y * kBN;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wrow = (warp >> 1) * 2, wn = (warp & 1) * 32;  // this warp's first tile row (of two) and channel
  const int g = lane >> 2, t4 = lane & 3;

  // The kernel slice of channels [n0, n0 + kBN), every tap and input channel; zeros past Cin and Cout. Float32 is
  // transposed on the way (4-byte copies; global reads stay coalesced along the output channels).
  if constexpr (HaloLayout<T>::kKContiguous) {
    for (int s = tid; s < taps * L.cin_pad * kBN; s += kHaloThreads) {
      const int k = s / kBN, nl = s - k * kBN, tap = k / L.cin_pad, c = k - tap * L.cin_pad, n = n0 + nl;
      const bool ok = c < cin && n < cout;
      cp_async4(weights + (tap * kBN + nl) * L.b_stride + c, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
    }
  } else {
    constexpr int kSeg = kBN / kVec;
    const int rows = taps * L.cin_pad;
    for (int s = tid; s < rows * kSeg; s += kHaloThreads) {
      const int k = s / kSeg, seg = s - k * kSeg, tap = k / L.cin_pad, c = k - tap * L.cin_pad;
      const int n = n0 + seg * kVec;
      const bool ok = c < cin && n < cout;
      cp_async16(weights + k * L.b_stride + seg * kVec, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
    }
  }
  auto tile_origin = [&](int i, int& b, int& oy0, int& ox0) {  // of the i-th listed tile
    const int t = list.tiles[i], per_image = tiles_y * tiles_x;
    b = t / per_image;
    const int r = t - b * per_image, ty = r / tiles_x;
    oy0 = ty * kTileRows;
    ox0 = (r - ty * tiles_x) * kTileCols;
  };
  // The halo of the i-th listed tile into buffer h: input pixels outside the image or inactive read as zero.
  auto load_halo = [&](int i, int h) {
    int b, oy0, ox0;
    tile_origin(i, b, oy0, ox0);
    T* dst = halo0 + h * L.halo_elems;
    const int segs = L.cin_pad / kVec, pixels = L.halo_h * L.halo_w;
    const int iy0 = oy0 - p.pad_top, ix0 = ox0 - p.pad_left;
    for (int s = tid; s < pixels * segs; s += kHaloThreads) {
      const int hp = s / segs, seg = s - hp * segs, hy = hp / L.halo_w, hx = hp - hy * L.halo_w;
      const int iy = iy0 + hy, ix = ix0 + hx, c = seg * kVec;
      int64_t pix = -1;
      if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w && c < cin) {
        pix = (int64_t(b) * in_h + iy) * in_w + ix;
        if (!p.in_mask[pix]) pix = -1;
      }
      cp_async16(dst + hp * L.a_stride + c, pix >= 0 ? x + pix * cin + c : x, pix >= 0);
    }
  };

  // The block's tiles are blockIdx.x, + gridDim.x, ...: `i` (its halo in buffer `buf`) and, with two halos, the next
  // one (loading into the other buffer).
  const int ahead = halos == 2 ? int(gridDim.x) : 0;  // how far past i the tile loading during i's arithmetic is
  int i = blockIdx.x, buf = 0;
  load_halo(i, 0);
  cp_async_commit();  // the weights and the first halo
  if (halos == 2 && i + ahead < tiles) load_halo(i + ahead, 1);
  cp_async_commit();
  for (; i < tiles; i += gridDim.x) {
    if (halos == 2)
      cp_async_wait<1>();  // all but the group committed last (the next halo): i's halo has landed
    else
      cp_async_wait<0>();
    __syncthreads();
    const T* halo = halo0 + buf * L.halo_elems;
    float acc[2][4][4];
    zero(acc);
    if (n0 + wn < cout) {  // warps whose 32 channels are all past Cout skip the arithmetic
      for (int tap = 0; tap < taps; ++tap) {
        const int ky = tap / p.kw, kx = tap - ky * p.kw;
        const T* a0 = halo + ((wrow + ky) * L.halo_w + kx) * L.a_stride;
#pragma unroll 4
        for (int kk = 0; kk < L.cin_pad; kk += kStep) {
          const T* const a[2] = {a0 + kk, a0 + L.halo_w * L.a_stride + kk};
          if constexpr (HaloLayout<T>::kKContiguous)
            warp_mma_step_tf32_nk(a, L.a_stride, weights + (tap * kBN + wn) * L.b_stride + kk, L.b_stride, lane, acc);
          else
            warp_mma_step<T, kMode>(a, L.a_stride, weights + (tap * L.cin_pad + kk) * L.b_stride + wn, L.b_stride, lane,
                                    acc);
        }
      }
    }
    // Fragment rows: tile row wrow + mi, columns g and g + 8; two adjacent channels per register pair.
    int b, oy0, ox0;
    tile_origin(i, b, oy0, ox0);
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int oy = oy0 + wrow + mi, ox = ox0 + g + 8 * half;
        if (oy >= ho || ox >= wo) continue;
        const int64_t o = (int64_t(b) * ho + oy) * wo + ox;
        if (!p.out_mask[o]) continue;
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int n = n0 + wn + ni * 8 + 2 * t4;
          if (n < cout) store_pair(out + o * cout + n, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]);
        }
      }
    __syncthreads();  // every warp is done with this halo buffer, which the load below refills
    const int after = i + gridDim.x + ahead;
    if (after < tiles) load_halo(after, buf);
    cp_async_commit();
    buf ^= halos - 1;
  }
  cp_async_wait<0>();  // no copy outlives the block
}

// Launch facts per device and instantiation, computed once (the handler runs every frame).
struct HaloCache {
  std::atomic<int> regs{0}, smem_set{0};
};

// The share of an active tile's pixels from which the halo kernel takes a layer, for values of `bytes` bytes: where
// the halo kernel over whole tiles costs what the list kernel costs over their active pixels. 3x3, 64 -> 64,
// 1x1080x1920 on an H100 (2026-12-06), every tile active: bf16 0.668 ms against the list's 1.033, TF32 1.767
// against 2.037. DELTAJAX_HALO_FROM overrides it (benchmarks only; above 1 turns the kernel off), read once per
// process.
inline double halo_fraction(int bytes) {
  static const double env = [] {
    const char* s = std::getenv("DELTAJAX_HALO_FROM");
    return s && *s ? std::atof(s) : -1.0;
  }();
  return env >= 0 ? env : bytes == 2 ? 0.65 : 0.87;
}

// Whether the geometry is the halo kernel's: more than one tap (a 1x1 reads each input once from the list too, and
// its halo kernel measured no faster: H100, 2026-12-06), stride 1, no dilation, one group, 16-byte operand rows.
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
  // One halo buffer or two: whichever keeps more blocks an SM (by shared memory, 228 KB an SM with 1 KB reserved
  // per block, and by registers), two on a tie. 3x3, 64 -> 64, bf16 on an H100 (2026-12-06): one buffer and two
  // blocks an SM 0.666 ms at p = 100 %, two buffers and one block 0.878.
  const HaloLayout<T> layout(p);
  auto per_sm = [&](int halos) {
    const size_t bytes = layout.bytes(halos);
    if (bytes > size_t(dev.smem_optin)) return int64_t(0);
    return std::min<int64_t>(int64_t(228 * 1024) / int64_t(bytes + 1024), 65536 / (regs * kHaloThreads));
  };
  const int halos = per_sm(2) > 0 && per_sm(2) >= per_sm(1) ? 2 : 1;
  const int64_t blocks_per_sm = per_sm(halos);
  if (blocks_per_sm < 1) return cudaSuccess;
  const size_t smem = layout.bytes(halos);
  if (int(smem) > c.smem_set.load(std::memory_order_acquire)) {
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        e != cudaSuccess)
      return e;
    c.smem_set.store(int(smem), std::memory_order_release);
  }
  split = HaloSplit{list.count, int(fraction * kTileRows * kTileCols + 0.999)};
  const int ny = int((p.cout + kBN - 1) / kBN);
  const int64_t nx =
      std::max<int64_t>(1, std::min<int64_t>(conv_out_tiles(p), (dev.sms * blocks_per_sm + ny - 1) / ny));
  kernel<<<dim3(unsigned(nx), unsigned(ny)), kHaloThreads, smem, stream>>>(p, count, list, split, halos);
  return cudaGetLastError();
}

}  // namespace deltajax::cuda::gemm
