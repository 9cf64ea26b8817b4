// Tile-sparse convolution on tensor cores for layers with many active pixels (stride 1, no dilation, one group).
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
// N = the block's channels (kN). The math is a policy of the one kernel: HaloWarpgroup on Hopper (wgmma, both
// operands read from shared memory by descriptor; one warpgroup per group), HaloWarps elsewhere (mma.sync: 16-bit
// groups of two warps, each 64 x 64, eight ldmatrix.x4 per 32 mma.m16n8k16; TF32 groups of four warps of 32 x 32).
// Where the kernel slice leaves too little room for whole halos, each tile takes its input channels in passes, a
// smaller halo each (halo_passes). On mma.sync, float32 (TF32) takes a 32-channel slice (half the bytes of a
// 64-channel one, so that three groups fit). Outputs are stored where out_mask is set (inactive outputs keep what
// they held, as in the list kernel).
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
#include <type_traits>

#include "common/params.h"
#include "cuda/epilogue_rule.h"
#include "cuda/launch.cuh"
#include "cuda/mma.cuh"
#include "cuda/rule_epilogue.cuh"
#include "cuda/wgmma.cuh"

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

// A type as a value, for generic lambdas.
template <class M>
struct Type {
  using type = M;
};

// Waits for the `threads` threads of named barrier `id` (1 and up; 0 is __syncthreads').
__device__ __forceinline__ void group_barrier(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// The halo kernel's math on mma.sync (sm_80 and up), for values of type T, and the element counts of its shared
// memory for one layer split into `passes` channel passes (each a halo of pass_c = cin_pad / passes input channels).
// A block computes kN output channels; its groups of kGroupWarps warps each compute one tile at a time, a warp
// kTileRows / kGroupWarps tile rows x kN channels. The kernel slice is [taps * cin_pad][b_stride] (output channels
// contiguous; ldmatrix.trans gives the B fragments) for 16-bit values, and [taps][kN][b_stride] (input channels
// contiguous) for float32, whose 32-bit elements ldmatrix cannot transpose. Float32 takes half the channels (its
// slice is twice the bytes) and twice the warps per tile (so a warp holds as many accumulators). The halo is
// [halo_h * halo_w][a_stride].
template <typename T, int kMode>
struct HaloWarps {
  static constexpr int kStep = sizeof(T) == 2 ? 16 : 8;  // K per mma k-step
  static constexpr int kVec = 16 / int(sizeof(T));       // elements per 16-byte copy
  static constexpr bool kKContiguous = sizeof(T) == 4;   // the kernel slice's layout
  static constexpr bool kAsyncProxy = false;             // its shared memory is read by the generic proxy only
  static constexpr int kN = sizeof(T) == 2 ? 64 : 32;    // output channels per block (and per warp)
  static constexpr int kGroupWarps = sizeof(T) == 2 ? 2 : 4;
  static constexpr int kGroupThreads = 32 * kGroupWarps;
  static constexpr int kWarpRows = kTileRows / kGroupWarps;  // tile rows per warp (its 16-row mma fragments)
  static constexpr int kMaxGroups = 4;                       // a block's, and the bound on its registers
  using Acc = float[kWarpRows][kN / 8][4];
  static constexpr int kOutputs = 2 * kWarpRows;  // pixels whose outputs a thread holds
  int cin_pad, pass_c, a_stride, b_stride, halo_h, halo_w, halo_elems, weight_elems;
  __host__ __device__ HaloWarps(const ConvParams& p, int passes) {
    cin_pad = (int(p.cin) + kStep - 1) / kStep * kStep;
    pass_c = cin_pad / passes;
    a_stride = pass_c + kVec;  // +16 bytes per row: ldmatrix rows fall in distinct banks
    b_stride = kKContiguous ? cin_pad + kVec : kN + 8;
    halo_h = kTileRows + p.kh - 1;
    halo_w = kTileCols + p.kw - 1;
    halo_elems = halo_h * halo_w * a_stride;
    weight_elems = p.kh * p.kw * (kKContiguous ? kN : cin_pad) * b_stride;
  }
  size_t bytes(int groups) const { return size_t(weight_elems + groups * halo_elems) * sizeof(T); }
  // The halo element of channel c (a multiple of kVec) of halo pixel hp.
  __device__ __forceinline__ int halo_at(int hp, int c) const { return hp * a_stride + c; }

  // The kernel slice of channels [n0, n0 + kN), every tap and input channel, by `threads` threads; zeros past Cin
  // and Cout. Float32 is transposed on the way (4-byte copies; global reads stay coalesced along the channels).
  __device__ void load_slice(T* weights, const T* __restrict__ w, const ConvParams& p, int n0, int tid,
                             int threads) const {
    const int cin = int(p.cin), cout = int(p.cout), taps = p.kh * p.kw;
    if constexpr (kKContiguous) {
      for (int s = tid; s < taps * cin_pad * kN; s += threads) {
        const int k = s / kN, nl = s - k * kN, tap = k / cin_pad, c = k - tap * cin_pad, n = n0 + nl;
        const bool ok = c < cin && n < cout;
        cp_async4(weights + (tap * kN + nl) * b_stride + c, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
      }
    } else {
      constexpr int kSeg = kN / kVec;
      for (int s = tid; s < taps * cin_pad * kSeg; s += threads) {
        const int k = s / kSeg, seg = s - k * kSeg, tap = k / cin_pad, c = k - tap * cin_pad;
        const int n = n0 + seg * kVec;
        const bool ok = c < cin && n < cout;
        cp_async16(weights + k * b_stride + seg * kVec, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
      }
    }
  }

  // Adds to one tile's accumulators (zeroed first where c0 == 0) the pass of input channels [c0, c0 + pass_c) from
  // the group's halo: gtid is the thread's index in its group.
  __device__ __forceinline__ void compute(Acc& acc, const T* halo, const T* weights, const ConvParams& p, int gtid,
                                          int c0) const {
    const int lane = gtid & 31, wrow = (gtid >> 5) * kWarpRows;
    if (c0 == 0) zero(acc);
    for (int ky = 0; ky < p.kh; ++ky)
      for (int kx = 0; kx < p.kw; ++kx) {
        const int tap = ky * p.kw + kx;
        const T* a0 = halo + ((wrow + ky) * halo_w + kx) * a_stride;
#pragma unroll 2
        for (int kk = 0; kk < pass_c; kk += kStep) {
          const T* a[kWarpRows];
#pragma unroll
          for (int mi = 0; mi < kWarpRows; ++mi) a[mi] = a0 + mi * halo_w * a_stride + kk;
          if constexpr (kKContiguous)
            warp_mma_step_tf32_nk(a, a_stride, weights + tap * kN * b_stride + c0 + kk, b_stride, lane, acc);
          else
            warp_mma_step<T, kMode>(a, a_stride, weights + (tap * cin_pad + c0 + kk) * b_stride, b_stride, lane, acc);
        }
      }
  }

  // f(row, col, pairs) for each of the kOutputs tile pixels whose outputs the thread holds, in the same order every
  // call; pairs(g) calls g(ni, v) for ni < kN / 8, v the values of the block's output channels 8 ni + 2 (lane % 4)
  // and + 1 (the m16n8 C fragment's columns; the four lanes of a quad hold one pixel). Fragment rows: tile row
  // wrow + mi, columns lane / 4 and + 8.
  template <class F>
  __device__ __forceinline__ static void for_each_output(const Acc& acc, int gtid, F&& f) {
    const int lane = gtid & 31, wrow = (gtid >> 5) * kWarpRows;
#pragma unroll
    for (int mi = 0; mi < kWarpRows; ++mi)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        f(wrow + mi, (lane >> 2) + 8 * half, [&](auto&& g) {
#pragma unroll
          for (int ni = 0; ni < kN / 8; ++ni) g(ni, make_float2(acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1]));
        });
  }
};

// The halo kernel's math on Hopper's warpgroup MMA (wgmma, sm_90a): each group is one warpgroup (four warps) and
// computes a tile as two 64-pixel halves (tile columns [0, 8) and [8, 16), so that the rows of an operand's core
// matrix are 8 adjacent pixels of one halo row), each with kN = 64 output channels; both operands come from shared
// memory, and a pass's 2 x taps x pass_c / kStep instructions are issued back to back and waited for once. Layouts
// (wgmma.cuh's core matrices, 16 bytes = kVec values, no swizzle): the kernel slice is [taps * cin_pad / kVec][kN]
// [kVec] (kVec input channels of one output channel per 16 bytes); the halo is [pass_c / kVec][chunk][kVec] (kVec
// channels of one pixel per 16 bytes, pixels in row order), chunk an odd number of pixels so that the 16-byte copies
// of one pixel's channels fall in distinct banks. Float32 is TF32 (kMode 0): the slice is rounded to TF32 on its way
// in, the halo read as the hardware reads it (19 high bits); its 64-channel slice (147 KB for a 3x3 of 64 channels)
// leaves room for three groups with a halo of half the input channels each (two passes a tile), where a 32-channel
// slice would load each halo twice, once per slice, and read each A operand from shared memory for half the work.
template <typename T>
struct HaloWarpgroup {
  using Mma = Wgmma<T>;
  static constexpr int kVec = 16 / int(sizeof(T)), kStep = Mma::kK, kN = Mma::kN, kGroupThreads = 128;
  static constexpr int kMaxGroups = sizeof(T) == 2 ? 4 : 3;  // float32: the most that fit, and room for registers
  static constexpr bool kAsyncProxy = true;                  // wgmma reads shared memory through the async proxy
  using Acc = float[2][kN / 2];                              // [tile column half][Wgmma's fragment]
  static constexpr int kOutputs = 4;                         // pixels whose outputs a thread holds
  int cin_pad, pass_c, halo_h, halo_w, chunk_elems, halo_elems, weight_elems;
  __host__ __device__ HaloWarpgroup(const ConvParams& p, int passes) {
    cin_pad = (int(p.cin) + kStep - 1) / kStep * kStep;
    pass_c = cin_pad / passes;
    halo_h = kTileRows + p.kh - 1;
    halo_w = kTileCols + p.kw - 1;
    chunk_elems = ((halo_h * halo_w) | 1) * kVec;
    halo_elems = pass_c / kVec * chunk_elems;
    weight_elems = p.kh * p.kw * cin_pad * kN;
  }
  size_t bytes(int groups) const { return size_t(weight_elems + groups * halo_elems) * sizeof(T); }
  __device__ __forceinline__ int halo_at(int hp, int c) const { return c / kVec * chunk_elems + hp * kVec; }

  // The kernel slice, transposed on the way by element stores (once per block): 16-byte global reads of kVec
  // output channels, zeros past Cin and Cout.
  __device__ void load_slice(T* weights, const T* __restrict__ w, const ConvParams& p, int n0, int tid,
                             int threads) const {
    constexpr int kSeg = kN / kVec;
    const int cin = int(p.cin), cout = int(p.cout), taps = p.kh * p.kw;
    for (int s = tid; s < taps * cin_pad * kSeg; s += threads) {
      const int k = s / kSeg, seg = s - k * kSeg, tap = k / cin_pad, c = k - tap * cin_pad, n = n0 + seg * kVec;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (c < cin && n < cout) v = __ldg(reinterpret_cast<const uint4*>(w + (int64_t(tap) * cin + c) * cout + n));
      const T* e = reinterpret_cast<const T*>(&v);
      T* dst = weights + ((k / kVec) * kN + seg * kVec) * kVec + k % kVec;
#pragma unroll
      for (int i = 0; i < kVec; ++i) {
        if constexpr (sizeof(T) == 4)
          dst[i * kVec] = __uint_as_float(to_tf32(e[i]));
        else
          dst[i * kVec] = e[i];
      }
    }
  }

  // As HaloWarps::compute.
  __device__ __forceinline__ void compute(Acc& acc, const T* halo, const T* weights, const ConvParams& p, int,
                                          int c0) const {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (c0 == 0)
#pragma unroll
        for (int i = 0; i < kN / 2; ++i) acc[h][i] = 0.f;
      fence_registers(acc[h]);
    }
    wgmma_fence();
    // A (64 pixels x kStep channels): core matrices along K one channel chunk apart, along M one halo row apart. B
    // (kN output channels x kStep input channels): along K kN * 16 bytes apart, along N 128. A descriptor advances
    // by bytes / 16: a halo pixel is 1, a k-step (two chunks) chunk_elems * sizeof(T) / 8 in A and 2 * kN in B.
    // Descriptors as their low words (start address, LBO) and high words (SBO): moving a start never carries out of
    // its 14-bit field (shared memory is under 256 KB), so a step is one 32-bit add. The walk runs tap by tap without
    // a division; B's k-steps of a tap follow one another through the slice from the pass's first channel.
    const uint64_t a_desc = wgmma_desc(halo, chunk_elems * sizeof(T), halo_w * 16);
    const uint64_t b_desc = wgmma_desc(weights, kN * 16, 128);
    const uint32_t a_hi = uint32_t(a_desc >> 32), b_hi = uint32_t(b_desc >> 32);
    const uint32_t a_step = chunk_elems * sizeof(T) / 8;  // two chunks, in 16-byte units
    const int steps = pass_c / kStep;
    const uint32_t tap_step = uint32_t(cin_pad / kVec * kN);  // a tap's whole slice
    uint32_t b_tap = uint32_t(b_desc) + uint32_t(c0 / kVec * kN);
    for (int ky = 0; ky < p.kh; ++ky) {
      for (int kx = 0; kx < p.kw; ++kx, b_tap += tap_step) {
        uint32_t a = uint32_t(a_desc) + uint32_t(ky * halo_w + kx), b = b_tap;
        for (int s = 0; s < steps; ++s, a += a_step, b += 2 * kN) {
          Mma::mma(acc[0], wgmma_desc_of(a, a_hi), wgmma_desc_of(b, b_hi));
          Mma::mma(acc[1], wgmma_desc_of(a + 8, a_hi), wgmma_desc_of(b, b_hi));  // 8 pixels to the right
        }
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int h = 0; h < 2; ++h) fence_registers(acc[h]);
  }

  // As HaloWarps::for_each_output. Warp w of the group holds rows 16 w + lane / 4 and + 8 of each half: tile rows
  // 2 w and 2 w + 1, column 8 half + lane / 4; channels 8 ni + 2 (lane % 4) (Wgmma's fragment).
  template <class F>
  __device__ __forceinline__ static void for_each_output(const Acc& acc, int gtid, F&& f) {
    const int lane = gtid & 31, w = gtid >> 5;
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int r = 0; r < 2; ++r)
        f(2 * w + r, 8 * h + (lane >> 2), [&](auto&& g) {
#pragma unroll
          for (int ni = 0; ni < kN / 8; ++ni) g(ni, make_float2(acc[h][4 * ni + 2 * r], acc[h][4 * ni + 2 * r + 1]));
        });
  }
};

// An output pair packed for its store: one 32-bit word of two 16-bit values, or two float32 words.
template <typename OutT>
struct PackedPair {
  using type = uint32_t;
  __device__ __forceinline__ static type pack(float2 v) {
    alignas(4) OutT h[2];
    store_pair(h, v.x, v.y);
    return *reinterpret_cast<const uint32_t*>(h);
  }
};
template <>
struct PackedPair<float> {
  using type = uint2;
  __device__ __forceinline__ static type pack(float2 v) {
    return make_uint2(__float_as_uint(v.x), __float_as_uint(v.y));
  }
};
__device__ __forceinline__ uint32_t shfl_xor(uint32_t v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
__device__ __forceinline__ uint2 shfl_xor(uint2 v, int mask) {
  return make_uint2(shfl_xor(v.x, mask), shfl_xor(v.y, mask));
}

// A 16-byte store to global memory (`p` 16-byte aligned), written as one instruction: the compiler would split some.
__device__ __forceinline__ void store16(void* p, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("st.global.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "r"(a), "r"(b), "r"(c), "r"(d) : "memory");
}

// One round of regroup_quad: lanes `mask` apart swap, of each slot pair (s, s + kHalf), the slot the other keeps
// (`upper`: this lane keeps the upper one).
template <int kHalf, class P, int kB>
__device__ __forceinline__ void quad_exchange(P (&w)[kB], int mask, bool upper) {
#pragma unroll
  for (int s = 0; s < kB; ++s) {
    if (s & kHalf) continue;
    const P lo = w[s], hi = w[s + kHalf], got = shfl_xor(upper ? lo : hi, mask);
    w[s] = upper ? got : lo;
    w[s + kHalf] = upper ? hi : got;
  }
}

// Regroups one pixel's kB x 8 channels, held by the four lanes of a quad as MMA fragments (lane q holds channels 8 ni
// + 2 q and + 1 as w[ni]), so that lane q holds the 8-channel blocks q kB / 4 + j (j < kB / 4) whole: two rounds of
// shuffles (lanes 2 apart, then 1) leave pair position 2 a + b of block j in slot j + a kB / 2 + b kB / 4
// (quad_pair). Every lane of the warp calls it.
template <class P, int kB>
__device__ __forceinline__ void regroup_quad(P (&w)[kB], int lane) {
  static_assert(kB == 4 || kB == 8, "8 or 4 blocks of 8 channels");
  const int q = lane & 3;
  quad_exchange<kB / 2>(w, 2, (q >> 1) != 0);
  quad_exchange<kB / 4>(w, 1, (q & 1) != 0);
}
template <class P, int kB>
__device__ __forceinline__ const P& quad_pair(const P (&w)[kB], int j, int pos) {
  return w[j + (pos >> 1) * (kB / 2) + (pos & 1) * (kB / 4)];
}

// Stores one pixel's kB x 8 output channels from the four lanes of a quad (lane q of the quad holds channels 8 ni +
// 2 q and + 1 as v[ni]) in 16-byte writes of whole sectors, where one pair a lane would be 4- or 8-byte writes that
// fill half a sector: regroup_quad, then each lane writes its whole blocks. `o` is the pixel's first channel,
// `channels` how many from it exist (a multiple of 16 bytes' worth); nothing is stored where !keep. Every lane of
// the warp calls it (the shuffles).
template <typename OutT, int kB>
__device__ __forceinline__ void store_quad_pixel(OutT* o, const float2 (&v)[kB], int lane, int channels, bool keep) {
  using Packed = PackedPair<OutT>;
  typename Packed::type w[kB];
#pragma unroll
  for (int ni = 0; ni < kB; ++ni) w[ni] = Packed::pack(v[ni]);
  regroup_quad(w, lane);
  if (!keep) return;
#pragma unroll
  for (int j = 0; j < kB / 4; ++j) {
    const int n = 8 * ((lane & 3) * (kB / 4) + j);  // the block's first channel
    const auto p0 = quad_pair(w, j, 0), p1 = quad_pair(w, j, 1), p2 = quad_pair(w, j, 2), p3 = quad_pair(w, j, 3);
    if constexpr (sizeof(OutT) == 2) {
      if (n < channels) store16(o + n, p0, p1, p2, p3);
    } else {
      if (n < channels) store16(o + n, p0.x, p0.y, p1.x, p1.y);
      if (n + 4 < channels) store16(o + n + 4, p2.x, p2.y, p3.x, p3.y);
    }
  }
}

// The activation rule (rule_epilogue.cuh) on one pixel's convolution sums, kB x 8 channels held by the four lanes of
// a quad as store_quad_pixel takes them, where the block holds every output channel (Cout <= 8 kB): regrouped, each
// lane runs the rule's per-channel part on its whole blocks (acc += d * scale, y = f(acc) - sent), the quad combines
// the pixel's truncation score, and where the rule keeps the pixel each lane emits its channels (out, sent) and lane
// 0 of the quad sets the rule's mask. `o`: the output pixel; `active`: in the convolution's output mask (the rule's
// mask is zero elsewhere already). T: the values' type. Every lane of the warp calls it.
template <typename T, int kB>
__device__ __forceinline__ void rule_quad_pixel(const EpilogueRule& r, const AnyAct& f, int64_t o,
                                                const float2 (&v)[kB], int lane, int cout, bool active) {
  constexpr int kUnits = kB / 2;  // 4-channel units a lane holds after the regrouping
  uint2 w[kB];
#pragma unroll
  for (int ni = 0; ni < kB; ++ni) w[ni] = PackedPair<float>::pack(v[ni]);
  regroup_quad(w, lane);
  const TruncMode mode = r.a.truncation;
  const int first = 8 * (lane & 3) * (kB / 4);  // the lane's first channel
  float y[kUnits][4], s[kUnits][4], score = 0.f;
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {  // unit u: pairs 2 (u % 2) and + 1 of block u / 2
    const uint2 a = quad_pair(w, u / 2, 2 * (u % 2)), b = quad_pair(w, u / 2, 2 * (u % 2) + 1);
    const float d[4] = {__uint_as_float(a.x), __uint_as_float(a.y), __uint_as_float(b.x), __uint_as_float(b.y)};
    const int ch = first + 4 * u;
    if (active && ch < cout)
      score = combine_scores(mode, score, rule_update<4>(r, f, o * cout + ch, ch, d, y[u], s[u]));
  }
  score = combine_scores(mode, score, __shfl_xor_sync(0xffffffffu, score, 1));
  score = combine_scores(mode, score, __shfl_xor_sync(0xffffffffu, score, 2));
  if (!active) return;
  const bool keep = keeps(mode, r.a.threshold, score, cout);
  if (keep)
#pragma unroll
    for (int u = 0; u < kUnits; ++u)
      if (first + 4 * u < cout) emit<T, 4>(r, o * cout + first + 4 * u, y[u], s[u]);
  if ((lane & 3) == 0) r.a.out_mask[o] = keep;
}

// A 16-byte copy's place in a halo: halo row hy, column hx, channel segment seg (of segs a pixel).
struct HaloPos {
  int hy, hx, seg;
  // The place of copy s in row order ((hy * halo_w + hx) * segs + seg).
  __device__ static HaloPos of(int s, int segs, int halo_w) {
    const int hp = s / segs, hy = hp / halo_w;
    return HaloPos{hy, hp - hy * halo_w, s - hp * segs};
  }
  // Moves on by the stride whose place is `d` (d.seg < segs and d.hx < halo_w, so each field carries at most once),
  // without a division.
  __device__ __forceinline__ void advance(const HaloPos& d, int segs, int halo_w) {
    seg += d.seg;
    if (seg >= segs) seg -= segs, ++hx;
    hx += d.hx;
    if (hx >= halo_w) hx -= halo_w, ++hy;
    hy += d.hy;
  }
};

// One block: the kernel slice of channels [n0, n0 + kN) loaded once by all its threads, then blockDim.x /
// kGroupThreads groups, each with a halo buffer of its own, walking the tile list apart (group g of block x takes
// tiles g * gridDim.x + x, then every groups * gridDim.x: few tiles spread over the SMs first). A group's threads
// meet at a named barrier only: while one group waits for its halo, the others compute. A tile takes `passes`
// halos of pass_c input channels each, one after the other in the group's buffer (more passes: smaller halos, so
// that more groups fit beside a large kernel slice); the first halo of its next tile is loaded while it stores the
// current tile's outputs. Math: HaloWarps or HaloWarpgroup. kRule: the activation rule on the tile's sums in place
// of the stores (rule_quad_pixel; Cout <= kN, OutT = T), with fewer groups a block (halo_max_groups).
template <class Math, bool kRule>
constexpr int halo_max_groups() {
  constexpr int kRuleThreads = 384;  // the rule's state beside the accumulators: up to 168 registers a thread
  return kRule && Math::kMaxGroups * Math::kGroupThreads > kRuleThreads ? kRuleThreads / Math::kGroupThreads
                                                                        : Math::kMaxGroups;
}
template <typename T, typename OutT, class Math, bool kRule>
__global__ void __launch_bounds__(halo_max_groups<Math, kRule>() * Math::kGroupThreads, 1)
    conv_halo_kernel(ConvParams p, const int32_t* __restrict__ count_ptr, TileList list, HaloSplit split, int passes,
                     EpilogueRule rule) {
  constexpr int kVec = Math::kVec, kN = Math::kN, kGroupThreads = Math::kGroupThreads;
  const int tiles = *list.count;
  if (!halo_takes(split, *count_ptr) || int(blockIdx.x) >= tiles) return;  // the list kernel, or no tile for it
  const Math L(p, passes);
  extern __shared__ __align__(16) unsigned char smem[];
  T* weights = reinterpret_cast<T*>(smem);  // the kernel slice
  const T* __restrict__ x = static_cast<const T*>(p.x);
  OutT* __restrict__ out = static_cast<OutT*>(p.out);
  const int cin = int(p.cin), cout = int(p.cout);
  const int in_h = int(p.h), in_w = int(p.w), ho = int(p.ho), wo = int(p.wo);
  const TileGrid grid = out_tile_grid(ho, wo);
  const int n0 = blockIdx.y * kN;
  // The group index broadcast from lane 0, so that the compiler sees it (and the halo's descriptors) warp-uniform.
  const int tid = threadIdx.x, group = __shfl_sync(0xffffffffu, tid / kGroupThreads, 0),
            gtid = tid - group * kGroupThreads;
  T* halo = weights + L.weight_elems + group * L.halo_elems;           // this group's
  const AnyAct act{rule.a.act, rule.a.negative_slope, rule.a.slopes};  // kRule only

  L.load_slice(weights, static_cast<const T*>(p.kernel), p, n0, tid, int(blockDim.x));
  // A thread's 16-byte copies of a halo are s = gtid, gtid + kGroupThreads, ... of (hy * halo_w + hx) * segs + seg,
  // the same for every tile: its walk starts at `first` and steps by `step` with carries, divisions only here.
  const int segs = L.pass_c / kVec, total = L.halo_h * L.halo_w * segs;
  const HaloPos first = HaloPos::of(gtid, segs, L.halo_w), step = HaloPos::of(kGroupThreads, segs, L.halo_w);
  // The halo of tile t's input channels [c0, c0 + pass_c) into this group's buffer, by the group's threads: input
  // pixels outside the image or inactive read as zero.
  auto load_halo = [&](const OutTile& t, int c0) {
    constexpr int kBatch = 4;  // mask bytes read together, then their copies issued
    const int iy0 = t.ty * kTileRows - p.pad_top, ix0 = t.tx * kTileCols - p.pad_left;
    const int64_t image = int64_t(t.b) * in_h * in_w;
    HaloPos at = first;
    for (int s0 = gtid; s0 < total; s0 += kBatch * kGroupThreads) {
      int64_t src[kBatch];  // element offsets in x (0 where the copy zero-fills)
      int dst[kBatch];
      bool on[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int iy = iy0 + at.hy, ix = ix0 + at.hx, c = c0 + at.seg * kVec;
        dst[u] = L.halo_at(at.hy * L.halo_w + at.hx, c - c0);
        const bool inside =
            s0 + u * kGroupThreads < total && unsigned(iy) < unsigned(in_h) && unsigned(ix) < unsigned(in_w) && c < cin;
        const int64_t pix = inside ? image + int64_t(iy) * in_w + ix : 0;  // pixel 0 (a valid read) outside
        src[u] = pix * cin + c;
        on[u] = inside && p.in_mask[pix] != 0;
        at.advance(step, segs, L.halo_w);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u)
        if (s0 + u * kGroupThreads < total) cp_async16(halo + dst[u], x + (on[u] ? src[u] : 0), on[u]);
    }
  };
  // This thread's copies have landed; with wgmma, made visible to its reads too.
  auto landed = [] {
    cp_async_wait<0>();
    if constexpr (Math::kAsyncProxy) fence_proxy_async();
  };

  const int stride = int(blockDim.x / kGroupThreads * gridDim.x);
  int i = group * int(gridDim.x) + int(blockIdx.x);
  OutTile t{};  // the tile of i, decoded once
  if (i < tiles) {
    t = out_tile(list.tiles[i], grid);
    load_halo(t, 0);
  }
  cp_async_commit();
  landed();
  __syncthreads();  // the kernel slice and every group's first halo
  while (i < tiles) {
    typename Math::Acc acc;
    for (int c0 = 0;;) {
      L.compute(acc, halo, weights, p, gtid, c0);
      group_barrier(1 + group, kGroupThreads);  // the group is done with its halo, which the load refills
      c0 += L.pass_c;
      if (c0 == passes * L.pass_c) break;
      load_halo(t, c0);
      cp_async_commit();
      landed();
      group_barrier(1 + group, kGroupThreads);  // the tile's next pass has landed for every thread of the group
    }
    const int next = i + stride;
    OutTile t_next{};
    if (next < tiles) {
      t_next = out_tile(list.tiles[next], grid);
      load_halo(t_next, 0);
    }
    cp_async_commit();
    bool keep[Math::kOutputs];  // the output masks of the thread's pixels, all read before the first store
    int k = 0;
    Math::for_each_output(acc, gtid, [&](int row, int col, auto) {
      const int oy = t.ty * kTileRows + row, ox = t.tx * kTileCols + col;
      keep[k++] = oy < ho && ox < wo && p.out_mask[(int64_t(t.b) * ho + oy) * wo + ox];
    });
    k = 0;
    Math::for_each_output(acc, gtid, [&](int row, int col, auto pairs) {
      float2 v[kN / 8];
      pairs([&](int ni, float2 value) { v[ni] = value; });
      const int64_t o = (int64_t(t.b) * ho + t.ty * kTileRows + row) * wo + t.tx * kTileCols + col;
      if constexpr (kRule)
        rule_quad_pixel<T>(rule, act, o, v, gtid & 31, cout, keep[k++]);
      else
        store_quad_pixel(out + o * cout + n0, v, gtid & 31, cout - n0, keep[k++]);
    });
    landed();
    group_barrier(1 + group, kGroupThreads);  // the next halo has landed for every thread of the group
    i = next;
    t = t_next;
  }
}

// What an instantiation's launches learned on a device; the handler runs every frame, and both queries cost host
// time. `smem_set`: the dynamic shared memory the kernel was allowed, raised as layers ask for more. `occupancy`:
// blocks per SM by launch shape, each slot packing (shared memory bytes << 16 | groups << 8 | blocks), 0 = free; a
// shape past the last slot is queried at each launch.
struct HaloCache {
  static constexpr int kShapes = 8;
  std::atomic<int> smem_set{0};
  std::atomic<uint64_t> occupancy[kShapes] = {};

  // Blocks of `threads` threads and `smem` bytes that fit an SM (at least 1), for `groups` tile groups.
  template <class Kernel>
  cudaError_t blocks_per_sm(Kernel kernel, int groups, int threads, size_t smem, int& blocks) {
    const uint64_t key = uint64_t(smem) << 16 | uint64_t(groups) << 8;
    for (auto& slot : occupancy) {
      const uint64_t v = slot.load(std::memory_order_relaxed);
      if (v == 0) break;
      if ((v & ~uint64_t(0xff)) == key) {
        blocks = int(v & 0xff);
        return cudaSuccess;
      }
    }
    if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, threads, smem); e != cudaSuccess)
      return e;
    blocks = std::min(std::max(blocks, 1), 255);
    for (auto& slot : occupancy) {  // the first free slot; a slot another thread took for this shape is as good
      uint64_t expected = 0;
      if (slot.compare_exchange_strong(expected, key | uint64_t(blocks), std::memory_order_relaxed) ||
          (expected & ~uint64_t(0xff)) == key)
        break;
    }
    return cudaSuccess;
  }
};

// The share of an active tile's pixels from which the halo kernel takes a layer of `taps` taps, for values of
// `bytes` bytes and its math: where the halo kernel over whole tiles costs what the list kernel costs over their
// active pixels.
// 3x3, 64 -> 64, 1x1080x1920 on an H100, every tile active:
// - mma.sync (2026-12-06): bf16 0.668 ms against the list's 1.033, TF32 1.767 against 2.037 (with tile groups,
//   later: bf16 0.591 against 1.027, TF32 1.583 against 1.988; the shares were kept, as blob masks at p = 5 % still
//   ran faster on the list in TF32, 0.134 against 0.144 ms);
// - wgmma (2026-12-07; scattered masks at p = 80 %, every tile full): bf16 0.462 ms against 1.020, TF32 1.134
//   against 1.954, a tile costing what 45 % (bf16) and 58 % (TF32) of its pixels cost on the list. The halo kernel
//   was faster at every partial fraction measured, blob and scattered masks at p = 20 / 50 / 80 %: blob TF32
//   0.316 / 0.702 / 1.016 ms against 0.428 / 1.042 / 1.643 (the list took them at the mma.sync share), bf16
//   0.139 / 0.276 / 0.404 against 0.233 / 0.547 / 0.841. The shares sat 7-10 points above that crossover, as
//   mma.sync's (crossover 57 % / 80 %) did.
// - wgmma with 16-byte output stores and TF32 on 64-channel slices in two passes (2026-12-07, later; scattered
//   masks at p = 2 / 5 / 10 %, the tiles 17 / 37 / 61 % full): bf16 0.295 / 0.308 / 0.308 ms against the list's
//   0.210 / 0.406 / 0.632, TF32 0.533 / 0.573 / 0.623 against 0.360 / 0.743 / 1.193: the crossover near 27 % for
//   both; the share sits 8 points above it.
// A 1x1 reads each input once from the list too. On wgmma with 16-bit values the halo kernel's whole-tile loads and
// stores still pay from about 60 % (1x1, 64 -> 64, 1x1080x1920, H100, 2026-12-07, scattered masks at p = 50 / 80 %:
// bf16 0.205 / 0.258 ms against the list's 0.198 / 0.283; blob masks at p = 100 %: 0.306 against 0.329); float32
// 1x1s stay on the list (TF32 at p = 100 %: 0.598 against 0.504), as do 1x1s on mma.sync (unmeasured since 4-byte
// stores, when the halo kernel was no faster).
// DELTAJAX_HALO_FROM overrides them (benchmarks only; above 1 turns the kernel off), read once per process.
inline double halo_fraction(int bytes, bool wgmma, int taps) {
  static const double env = env_number("DELTAJAX_HALO_FROM");
  if (env >= 0) return env;
  if (taps == 1) return wgmma && bytes == 2 ? 0.65 : 2.0;
  if (wgmma) return 0.35;
  return bytes == 2 ? 0.65 : 0.87;
}

// Whether the geometry is the halo kernel's: stride 1, no dilation, one group, 16-byte operand rows (halo_fraction
// decides for 1x1s).
// Kernels past 16 x 16 taps or 2048 input channels never fit shared memory; bounding them first keeps the layouts'
// int arithmetic far from overflow.
inline bool halo_geometry(const ConvParams& p, int vec) {
  return p.kh <= 16 && p.kw <= 16 && p.cin <= 2048 && p.groups == 1 && p.stride_h == 1 && p.stride_w == 1 &&
         p.lhs_dil_h == 1 && p.lhs_dil_w == 1 && p.rhs_dil_h == 1 && p.rhs_dil_w == 1 && p.cin % vec == 0 &&
         p.cout % vec == 0 && p.cin >= 8 && p.cout >= 8;
}

// Whether the halo kernel runs on wgmma (HaloWarpgroup): on a compute capability 9.0 device, where the module holds
// sm_90a code. DELTAJAX_HALO_WGMMA=0 keeps mma.sync (benchmarks only), read once per process.
inline bool halo_wgmma(const DeviceFacts& dev) {
#if defined(DELTAJAX_SM90A)
  static const bool off = env_number("DELTAJAX_HALO_WGMMA") == 0;
  return dev.cc == 90 && !off;
#else
  (void)dev;
  return false;
#endif
}

// The channel passes and tile groups of a launch of the halo kernel with `Math`, at most kMaxGroups groups: the
// fewest passes (1, 2, 4, ..., each whole k-steps) whose halos fit three groups (or kMaxGroups where fewer) beside the
// kernel slice in `smem` bytes, else the passes that fit the most groups; groups = 0 where none fits. (A 3x3 of 64
// channels: one pass, four 16-bit groups or three TF32 mma.sync groups; two passes for TF32 on wgmma, whose
// 64-channel slice leaves room for one whole halo.)
template <class Math, int kMaxGroups>
void halo_passes(const ConvParams& p, size_t smem, int& passes, int& groups) {
  constexpr int kEnough = std::min(3, kMaxGroups);
  passes = 1;
  groups = 0;
  const int cin_pad = Math(p, 1).cin_pad;
  for (int q = 1; cin_pad % (q * Math::kStep) == 0; q *= 2) {
    const Math layout(p, q);
    int g = kMaxGroups;
    while (g > 0 && layout.bytes(g) > smem) --g;
    if (g > groups) passes = q, groups = g;
    if (groups >= kEnough) return;
  }
}

// The launch of the halo kernel with `Math` on the listed tiles, in halo_passes' passes and tile groups (each with a
// halo buffer of its own), with the activation rule in its epilogue where `rule` is given; leaves `split` empty and
// launches nothing where one group does not fit, or where the rule's pixels would be split over several blocks
// (Cout > kN).
template <typename T, typename OutT, class Math, bool kRule>
cudaError_t launch_conv_halo_with(const ConvParams& p, const DeviceFacts& dev, const int32_t* count,
                                  const TileList& list, int per_tile, HaloSplit& split, cudaStream_t stream,
                                  const EpilogueRule& rule) {
  static HaloCache cache[kMaxDevices];
  if (kRule && p.cout > Math::kN) return cudaSuccess;
  HaloCache& c = cache[dev.device < kMaxDevices ? dev.device : 0];
  auto kernel = conv_halo_kernel<T, OutT, Math, kRule>;
  int passes = 1, groups = 0;
  halo_passes<Math, halo_max_groups<Math, kRule>()>(p, size_t(dev.smem_optin), passes, groups);
  if (groups < 1) return cudaSuccess;
  const Math layout(p, passes);
  const int threads = groups * Math::kGroupThreads;
  const size_t smem = layout.bytes(groups);
  if (int(smem) > c.smem_set.load(std::memory_order_acquire)) {
    if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
        e != cudaSuccess)
      return e;
    c.smem_set.store(int(smem), std::memory_order_release);
  }
  int blocks_per_sm = 0;  // by shared memory and registers
  if (cudaError_t e = c.blocks_per_sm(kernel, groups, threads, smem, blocks_per_sm); e != cudaSuccess) return e;
  split = HaloSplit{list.count, per_tile};
  const int ny = int((p.cout + Math::kN - 1) / Math::kN);
  const int64_t nx = std::max<int64_t>(1, std::min<int64_t>((conv_out_tiles(p) + groups - 1) / groups,
                                                            (int64_t(dev.sms) * blocks_per_sm + ny - 1) / ny));
  kernel<<<dim3(unsigned(nx), unsigned(ny)), unsigned(threads), smem, stream>>>(p, count, list, split, passes, rule);
  return cudaGetLastError();
}

// Launches the halo kernel over the listed tiles (with the activation rule in its epilogue where `rule` is given)
// and sets `split` to the rule that both kernels decide by; or leaves `split` empty (the list kernel computes) and
// launches nothing where the tiles were not listed, the layer is not the kernel's, its kernel slice and one halo do
// not fit in shared memory, or a rule is given for 16-bit values. A rule needs OutT = T (it writes T; the sums
// never leave the kernel).
template <typename T, typename OutT, int kMode>
cudaError_t launch_conv_halo(const ConvParams& p, const int32_t* count, const TileList& list, HaloSplit& split,
                             cudaStream_t stream, const EpilogueRule* rule = nullptr) {
  split = HaloSplit{};
  // With the rule (which writes T), TF32 alone: on an H100 (3x3 conv + relu6, 64 channels, 1080x1920, p = 20 / 50 /
  // 100 %) the tile kernel took 0.566 / 1.233 / 2.001 ms against the list's 0.631 / 1.490 / 2.810 in TF32, but
  // 0.488 / 1.054 / 2.046 against 0.367 / 0.830 / 1.537 in bf16, so 16-bit values leave every pixel to the list.
  constexpr bool kRuleTaken = std::is_same_v<T, OutT> && sizeof(T) == 4;
  if (list.tiles == nullptr || (rule != nullptr && !kRuleTaken) || !halo_geometry(p, 16 / int(sizeof(T))))
    return cudaSuccess;
  DeviceFacts dev;
  if (cudaError_t e = device_facts(dev); e != cudaSuccess) return e;
  const bool wgmma = kMode == 0 && halo_wgmma(dev);
  const double fraction = halo_fraction(int(sizeof(T)), wgmma, p.kh * p.kw);
  if (fraction > 1.0) return cudaSuccess;
  const int per_tile = int(fraction * kTileRows * kTileCols + 0.999);
  auto launch = [&](auto math) -> cudaError_t {
    using Math = typename decltype(math)::type;
    if constexpr (kRuleTaken)
      if (rule != nullptr)
        return launch_conv_halo_with<T, T, Math, true>(p, dev, count, list, per_tile, split, stream, *rule);
    return launch_conv_halo_with<T, OutT, Math, false>(p, dev, count, list, per_tile, split, stream, {});
  };
  if constexpr (kMode == 0)
    if (wgmma) return launch(Type<HaloWarpgroup<T>>{});
  return launch(Type<HaloWarps<T, kMode>>{});
}

}  // namespace deltajax::cuda::gemm
