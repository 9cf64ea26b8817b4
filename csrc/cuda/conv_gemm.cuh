// Implicit GEMM over the active output pixel list, on tensor cores (mma.sync).
//
//   rows = active output pixels (list in device memory, count in device memory),
//   K    = kh * kw * Cin, walked tap by tap in chunks of kBK channels (64 bytes of one tap),
//   N    = Cout, in tiles of kBN.
// A (the gathered input) and B (the HWIO kernel, already K x N row-major) are staged in shared memory by
// cp.async (16-byte copies with zero fill for inactive / out-of-bounds pixels and the channel tails) in a
// kStages-deep ring; warps each own a 32 x 32 piece of the kBM x 64 output tile. The grid is persistent:
// blocks stride over row tiles up to the device-side count, so nothing waits on the host.
//
// The instructions per precision are mma.cuh's. Where a stride-1 layer has many active pixels, conv_halo.cuh's
// kernel takes the layer instead (see launch_conv_gemm_for).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "common/conv_geometry.h"
#include "cuda/conv_halo.cuh"
#include "cuda/dtype.cuh"
#include "cuda/mma.cuh"
#include "cuda/rule_epilogue.cuh"

namespace deltajax::cuda::gemm {

constexpr int kMaxTaps = 64;  // the tap table lives in shared memory: kBM * taps int32

// A tile configuration: kBM rows per tile, K chunks of kBKBytes (of one tap), a kStages-deep cp.async ring.
// 2 * kBM threads: warps in a (kBM / 32) x 2 grid, each owning 32 x 32 outputs.
template <int BM, int BKBytes, int Stages>
struct Config {
  static constexpr int kBM = BM, kBKBytes = BKBytes, kStages = Stages;
};

// OutT: the output's type, T or float32 (conv_activation's pre-activation of 16-bit values).
template <typename T, class C, typename OutT = T>
struct Tile {
  static constexpr int kBM = C::kBM, kStages = C::kStages;
  static constexpr int kThreads = 2 * kBM;
  static constexpr int kVec = 16 / int(sizeof(T));          // elements per 16-byte copy
  static constexpr int kBK = C::kBKBytes / int(sizeof(T));  // channels per chunk
  static constexpr int kAStride = kBK + kVec;               // A row: +16 bytes breaks bank conflicts (ldmatrix, lds)
  static constexpr int kBStride = kBN + 8;                  // B row: 8 elements of pad (conflict-free fragments)
  static constexpr int kCStride = kBN + 8;                  // epilogue staging row
  static constexpr int kAElems = kBM * kAStride;
  static constexpr int kBElems = kBK * kBStride;
  static constexpr int kStageBytes = (kAElems + kBElems) * int(sizeof(T));
  static constexpr int kOutVec = 16 / int(sizeof(OutT));  // output elements per 16-byte store
  static constexpr int kCBytes = kBM * kCStride * int(sizeof(OutT));
  static constexpr int kPipeBytes = kStages * kStageBytes > kCBytes ? kStages* kStageBytes : kCBytes;
};

// Pipeline ring (or epilogue staging), then per row: output pixel, input-pixel base, input row/column origin,
// then the tap table.
template <typename T, class C, typename OutT>
inline size_t smem_bytes(int taps) {
  return size_t(Tile<T, C, OutT>::kPipeBytes) + size_t(C::kBM) * (4 + taps) * sizeof(int32_t);
}

// ---- the kernel --------------------------------------------------------------------------------------------------

// kMode (float32 only): 0 = TF32, 1 = 3xTF32. kAligned: Cin and Cout are multiples of 16 bytes, so every
// operand row is copied in 16-byte pieces; otherwise element loads (first layers with C = 3 and the like).
// OutT: the output's type (T, or float32 for 16-bit T). kRule: the epilogue runs the activation rule (OutT is
// float32, the staging of the accumulators; the rule writes its output in T; rule_epilogue.cuh) instead of
// storing the convolution's output; it is held to 85 registers (three blocks an SM, as without it): with the rule
// instantiated once per activation kind it took 160, one block an SM; with the run-time kind (AnyAct) it takes 78.
template <typename T, typename OutT, int kMode, bool kAligned, class C, bool kRule = false>
__global__ void __launch_bounds__(2 * C::kBM, kRule ? 3 : 1)
    conv_gemm_kernel(ConvParams p, const int32_t* __restrict__ list, const int32_t* __restrict__ count_ptr, int spread,
                     HaloSplit split, EpilogueRule rule) {
  using L = Tile<T, C, OutT>;
  constexpr int kThreads = L::kThreads, kBM = L::kBM, kStages = L::kStages;
  extern __shared__ __align__(16) unsigned char smem[];
  T* pipe = reinterpret_cast<T*>(smem);
  int32_t* rows = reinterpret_cast<int32_t*>(smem + L::kPipeBytes);  // [kBM] output pixel, -1 past the count
  int32_t* row_base = rows + kBM;   // [kBM] first input pixel of the row's image, -1 past the count
  int32_t* row_y = row_base + kBM;  // [kBM] oy * stride - pad (in the dilated input when lhs_dil > 1)
  int32_t* row_x = row_y + kBM;     // [kBM] ox * stride - pad
  int32_t* taps = row_x + kBM;      // [kBM][ntaps] source pixel, -1 where the tap reads zero

  const int count = *count_ptr;
  if (halo_takes(split, count)) return;  // the halo kernel, launched just before this one, takes the layer
  const int ntaps = p.kh * p.kw;
  const int cin = int(p.cin), cout = int(p.cout);
  const int chunks_per_tap = (cin + L::kBK - 1) / L::kBK;
  const int nk = ntaps * chunks_per_tap;
  const int n0 = blockIdx.y * kBN;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // this warp's 32 x 32 piece of the tile
  const int g = lane >> 2, t4 = lane & 3;                 // mma fragment coordinates
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ w = static_cast<const T*>(p.kernel);
  OutT* __restrict__ out = static_cast<OutT*>(p.out);
  const int howo = int(p.ho * p.wo), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w);
  // Rows per tile: kBM, halved (down to kMinTileRows, one warp's rows) while the halves still number at most `spread`,
  // the tiles that each get an SM of their own. A nearly idle layer's launch lasts as long as one tile, most of it the
  // epilogue's passes over the tile's rows, so its rows are spread over SMs that would be idle.
  int tile_rows = kBM;
  while (tile_rows > kMinTileRows && count <= (tile_rows / 2) * spread) tile_rows /= 2;
  const int num_tiles = (count + tile_rows - 1) / tile_rows;

  auto load_chunk = [&](int kc, int stage) {
    const int tap = kc / chunks_per_tap;
    const int c0 = (kc - tap * chunks_per_tap) * L::kBK;
    T* As = pipe + stage * (L::kAElems + L::kBElems);
    T* Bs = As + L::kAElems;
    if constexpr (kAligned) {
      constexpr int kSegA = L::kBK / L::kVec;  // 16-byte pieces per A row
#pragma unroll
      for (int i = 0; i < kBM * kSegA / kThreads; ++i) {
        const int s = tid + i * kThreads, r = s / kSegA, seg = s % kSegA;
        const int c = c0 + seg * L::kVec;
        const int src = taps[r * ntaps + tap];
        const bool ok = src >= 0 && c < cin;
        cp_async16(As + r * L::kAStride + seg * L::kVec, ok ? x + int64_t(src) * cin + c : x, ok);
      }
      constexpr int kSegB = kBN / L::kVec;  // 16-byte pieces per B row
#pragma unroll
      for (int i = 0; i < L::kBK * kSegB / kThreads; ++i) {
        const int s = tid + i * kThreads, k = s / kSegB, seg = s % kSegB;
        const int c = c0 + k, n = n0 + seg * L::kVec;
        const bool ok = c < cin && n < cout;
        cp_async16(Bs + k * L::kBStride + seg * L::kVec, ok ? w + (int64_t(tap) * cin + c) * cout + n : w, ok);
      }
    } else {
      const T zero = from_float<T>(0.f);
      for (int e = tid; e < kBM * L::kBK; e += kThreads) {
        const int r = e / L::kBK, k = e % L::kBK, c = c0 + k;
        const int src = taps[r * ntaps + tap];
        As[r * L::kAStride + k] = (src >= 0 && c < cin) ? x[int64_t(src) * cin + c] : zero;
      }
      for (int e = tid; e < L::kBK * kBN; e += kThreads) {
        const int k = e / kBN, nn = e % kBN, c = c0 + k, n = n0 + nn;
        Bs[k * L::kBStride + nn] = (c < cin && n < cout) ? w[(int64_t(tap) * cin + c) * cout + n] : zero;
      }
    }
  };

  auto compute_chunk = [&](int stage, float(&acc)[2][4][4]) {
    const T* As = pipe + stage * (L::kAElems + L::kBElems);
    const T* Bs = As + L::kAElems;
    constexpr int kStep = sizeof(T) == 2 ? 16 : 8;
#pragma unroll
    for (int kk = 0; kk < L::kBK; kk += kStep) {
      const T* const a[2] = {As + wm * L::kAStride + kk, As + (wm + 16) * L::kAStride + kk};
      warp_mma_step<T, kMode>(a, L::kAStride, Bs + kk * L::kBStride + wn, L::kBStride, lane, acc);
    }
  };

  for (int tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    // 32-bit index arithmetic throughout (pixel counts < 2^31 are checked by the launcher): 64-bit division
    // costs dozens of instructions and dominated the first version.
    for (int r = tid; r < kBM; r += kThreads) {
      const int i = tile * tile_rows + r;
      const int o = r < tile_rows && i < count ? list[i] : -1;
      rows[r] = o;
      if (o >= 0) {
        const int b = o / howo, rem = o - b * howo, oy = rem / wo, ox = rem - oy * wo;
        row_base[r] = b * in_h * in_w;
        row_y[r] = oy * p.stride_h - p.pad_top;
        row_x[r] = ox * p.stride_w - p.pad_left;
      } else {
        row_base[r] = -1;
      }
    }
    __syncthreads();
    // The rule's state of the tile's rows, asked of L2 now so that the epilogue's reads (after the main loop, one
    // per pass of its loop) do not each wait on DRAM.
    if constexpr (kRule)
      for (int r = tid; r < kBM; r += kThreads)
        if (rows[r] >= 0) prefetch_rule_state(rule, int64_t(rows[r]) * cout + n0, min(kBN, cout - n0));
    // Source pixel of every (row, tap), or -1 where the tap reads zero (padding, dilation hole, inactive input).
    // Four entries per thread per round, their mask loads issued together (one latency per round, not four).
    for (int e0 = 0; e0 < kBM * ntaps; e0 += 4 * kThreads) {
      int pix[4];
      uint8_t on[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int e = e0 + j * kThreads + tid;
        pix[j] = -1;
        if (e < kBM * ntaps) {
          const int r = e / ntaps, tap = e - r * ntaps;
          const int base = row_base[r];
          if (base >= 0) {
            const int ky = tap / p.kw, kx = tap - ky * p.kw;
            int iy = row_y[r] + ky * p.rhs_dil_h, ix = row_x[r] + kx * p.rhs_dil_w;
            if (p.lhs_dil_h != 1) iy = (iy >= 0 && iy % p.lhs_dil_h == 0) ? iy / p.lhs_dil_h : -1;
            if (p.lhs_dil_w != 1) ix = (ix >= 0 && ix % p.lhs_dil_w == 0) ? ix / p.lhs_dil_w : -1;
            if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) pix[j] = base + iy * in_w + ix;
          }
        }
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) on[j] = pix[j] >= 0 ? __ldg(p.in_mask + pix[j]) : 0;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int e = e0 + j * kThreads + tid;
        if (e < kBM * ntaps) taps[e] = on[j] ? pix[j] : -1;
      }
    }
    __syncthreads();

    float acc[2][4][4];
    zero(acc);

#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < nk) load_chunk(s, s);
      cp_async_commit();
    }
    for (int kc = 0; kc < nk; ++kc) {
      cp_async_wait<kStages - 2>();
      __syncthreads();  // chunk kc landed for every thread; every warp is done with the stage refilled below
      const int next = kc + kStages - 1;
      if (next < nk) load_chunk(next, next % kStages);
      cp_async_commit();
      compute_chunk(kc % kStages, acc);
    }
    cp_async_wait<0>();
    __syncthreads();

    // Epilogue: fragments -> shared staging (as OutT) -> whole 16-byte pieces of each output row.
    OutT* Cs = reinterpret_cast<OutT*>(smem);
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni) {
        const int r = wm + mi * 16 + g, c = wn + ni * 8 + 2 * t4;
        store_pair(Cs + r * L::kCStride + c, acc[mi][ni][0], acc[mi][ni][1]);
        store_pair(Cs + (r + 8) * L::kCStride + c, acc[mi][ni][2], acc[mi][ni][3]);
      }
    __syncthreads();
    if constexpr (kRule) {
      static_assert(kAligned && std::is_same_v<OutT, float>, "the rule reads float32 accumulators in 16-byte pieces");
      rule_epilogue<T, kBM, kThreads>(rule, Cs, L::kCStride, rows, tile_rows, tile, n0, cout);
    } else if constexpr (kAligned) {
      constexpr int kSegC = kBN / L::kOutVec;
      for (int s = tid; s < tile_rows * kSegC; s += kThreads) {
        const int r = s / kSegC, seg = s % kSegC, n = n0 + seg * L::kOutVec;
        const int o = rows[r];
        if (o >= 0 && n < cout)
          *reinterpret_cast<uint4*>(out + int64_t(o) * cout + n) =
              *reinterpret_cast<const uint4*>(Cs + r * L::kCStride + seg * L::kOutVec);
      }
    } else {
      for (int e = tid; e < tile_rows * kBN; e += kThreads) {
        const int r = e / kBN, nn = e % kBN, n = n0 + nn;
        const int o = rows[r];
        if (o >= 0 && n < cout) out[int64_t(o) * cout + n] = Cs[r * L::kCStride + nn];
      }
    }
    __syncthreads();  // staging and row list are rewritten by the next tile
  }
}

// Per-device launch facts, computed once: the handler runs on every frame, and occupancy queries cost
// host time that, at small update fractions, is the whole budget of a layer.
struct LaunchCache {
  std::atomic<bool> smem_opt_in{false};
  std::atomic<int> blocks_per_sm[kMaxTaps + 1];  // by tap count (the tap table's size); 0 = not yet known
};

// Persistent launch: enough blocks to fill the device, never more than the worst-case number of tiles.
template <typename T, typename OutT, int kMode, bool kAligned, class C, bool kRule = false>
cudaError_t launch_conv_gemm_cfg(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                                 const HaloSplit& split, cudaStream_t stream, const EpilogueRule& rule = {}) {
  static LaunchCache cache[kMaxDevices];
  auto kernel = conv_gemm_kernel<T, OutT, kMode, kAligned, C, kRule>;
  constexpr int kThreads = Tile<T, C, OutT>::kThreads;
  const int taps = p.kh * p.kw;
  const size_t smem = smem_bytes<T, C, OutT>(taps);
  DeviceFacts dev;
  if (cudaError_t e = device_facts(dev); e != cudaSuccess) return e;
  LaunchCache& c = cache[dev.device < kMaxDevices ? dev.device : 0];
  const int sms = dev.sms;
  if (!c.smem_opt_in.load(std::memory_order_acquire)) {  // allow the largest tap table once
    const size_t most = smem_bytes<T, C, OutT>(kMaxTaps);
    if (most > 48 * 1024) {
      if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(most));
          e != cudaSuccess)
        return e;
    }
    c.smem_opt_in.store(true, std::memory_order_release);
  }
  int per_sm = c.blocks_per_sm[taps].load(std::memory_order_relaxed);
  if (per_sm == 0) {
    if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
        e != cudaSuccess)
      return e;
    if (per_sm < 1) per_sm = 1;
    c.blocks_per_sm[taps].store(per_sm, std::memory_order_relaxed);
  }
  const int ny = int((p.cout + kBN - 1) / kBN);
  const int64_t max_tiles = (max_rows + C::kBM - 1) / C::kBM;
  int64_t nx = (int64_t(sms) * per_sm + ny - 1) / ny;
  if (nx > max_tiles) nx = max_tiles;
  if (nx < 1) nx = 1;
  // Row tiles that each get an SM of their own, and a block: smaller tiles never outnumber the blocks, nor the
  // kBM-row tiles that the rule's arrival counters and scores are sized for.
  const int spread = int(std::max<int64_t>(1, std::min<int64_t>(sms / ny, nx)));
  kernel<<<dim3(unsigned(nx), unsigned(ny)), kThreads, smem, stream>>>(p, list, count, spread, split, rule);
  return cudaGetLastError();
}

// Tile configurations. Defaults chosen by a sweep on an H100 (benchmarks/NOTES_cuda.md): float32 (TF32,
// 3xTF32) takes Cfg2 (128-byte K chunks halve the barriers per tile), 16-bit types Cfg4 (a 4-deep ring).
// DELTAJAX_CONV_VARIANT=<index> selects another for measurement; -1 (unset) = the default.
using Cfg0 = Config<128, 64, 3>;
using Cfg1 = Config<64, 64, 3>;
using Cfg2 = Config<128, 128, 3>;
using Cfg3 = Config<64, 128, 3>;
using Cfg4 = Config<128, 64, 4>;
using Cfg5 = Config<64, 128, 4>;
constexpr int kVariants = 6;
int variant();

// OutT other than T (float32 results of 16-bit values, for conv_activation) takes the default configuration only.
template <typename T, typename OutT, int kMode, bool kAligned>
cudaError_t launch_conv_gemm(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                             const HaloSplit& split, cudaStream_t stream) {
  if constexpr (!kAligned) {  // element loads: odd channel counts are small layers; one configuration
    return launch_conv_gemm_cfg<T, OutT, kMode, false, Cfg1>(p, list, count, max_rows, split, stream);
  } else if constexpr (!std::is_same_v<T, OutT>) {
    return launch_conv_gemm_cfg<T, OutT, kMode, true, Cfg4>(p, list, count, max_rows, split, stream);
  } else {
    int v = variant();
    if (v < 0) v = sizeof(T) == 4 ? 2 : 4;
    switch (v) {
      case 1:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg1>(p, list, count, max_rows, split, stream);
      case 2:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg2>(p, list, count, max_rows, split, stream);
      case 3:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg3>(p, list, count, max_rows, split, stream);
      case 4:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg4>(p, list, count, max_rows, split, stream);
      case 5:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg5>(p, list, count, max_rows, split, stream);
      default:
        return launch_conv_gemm_cfg<T, T, kMode, true, Cfg0>(p, list, count, max_rows, split, stream);
    }
  }
}

// Whether the activation rule can run in the epilogue of the convolution of values of type T (the caller checks
// use_gemm and the state's alignment): every operand row is whole 16-byte pieces.
template <typename T>
bool aligned_rows(const ConvParams& p) {
  constexpr int kVec = 16 / int(sizeof(T));
  return p.cin % kVec == 0 && p.cout % kVec == 0;
}

// What the mask pass wrote for the arithmetic: the active output pixels (and their count) and, where it listed them,
// the active output tiles.
struct ActiveSet {
  const int32_t* pixels = nullptr;  // [count]
  const int32_t* count = nullptr;
  int64_t max_rows = 0;  // the most pixels there can be (the grid's worst case)
  TileList tiles;
};

// The launch for values of type T: 16-byte copies where every operand row is whole 16-byte pieces, else element
// loads; the output in T, or (16-bit T, p.out_dtype float32) in float32; or, with a rule (aligned rows only), the
// activation rule in the epilogue, in the default configuration of T (both have kRuleRows rows).
template <typename T, int kMode>
cudaError_t launch_conv_gemm_for(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule,
                                 cudaStream_t stream) {
  const int32_t *list = set.pixels, *count = set.count;
  const int64_t max_rows = set.max_rows;
  if (rule != nullptr) {
    if (!aligned_rows<T>(p)) return cudaErrorInvalidValue;
    using Cfg = std::conditional_t<sizeof(T) == 4, Cfg2, Cfg4>;
    HaloSplit split;  // the halo kernel with the rule, where launch_conv_halo takes it (TF32, Cout <= 64)
    if constexpr (kMode == 0)
      if (cudaError_t e = launch_conv_halo<T, T, kMode>(p, count, set.tiles, split, stream, rule); e != cudaSuccess)
        return e;
    if (cudaError_t e =
            launch_conv_gemm_cfg<T, float, kMode, true, Cfg, true>(p, list, count, max_rows, split, stream, *rule);
        e != cudaSuccess || p.cout <= kBN)
      return e;
    const int64_t items = max_rows * (p.cout / 4), blocks = (items + 255) / 256;
    rule_emit_kernel<T><<<unsigned(blocks < 1024 ? (blocks > 0 ? blocks : 1) : 1024), 256, 0, stream>>>(
        *rule, list, count, int(p.cout));
    return cudaGetLastError();
  }
  // Without a rule: the halo kernel where the layer is its (it returns the rule that splits the calls between the
  // two), then the list kernel.
  auto launch = [&](auto out_tag) -> cudaError_t {
    using OutT = decltype(out_tag);
    if (!aligned_rows<T>(p)) return launch_conv_gemm<T, OutT, kMode, false>(p, list, count, max_rows, {}, stream);
    HaloSplit split;
    if constexpr (kMode == 0)  // 3xTF32 (float32 HIGHEST) was not measured with the halo kernel: the list kernel
      if (cudaError_t e = launch_conv_halo<T, OutT, kMode>(p, count, set.tiles, split, stream); e != cudaSuccess)
        return e;
    return launch_conv_gemm<T, OutT, kMode, true>(p, list, count, max_rows, split, stream);
  };
  if constexpr (!std::is_same_v<T, float>) {
    if (p.out_dtype == DType::kF32) return launch(float{});
  }
  return launch(T{});
}

// Instantiations, one file each so that they compile in parallel. rule: nullptr, or the activation rule to run in
// the epilogue (conv_activation; p.out_dtype is then ignored).
cudaError_t conv_gemm_tf32(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream);
cudaError_t conv_gemm_3xtf32(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream);
cudaError_t conv_gemm_bf16(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream);
cudaError_t conv_gemm_f16(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream);

}  // namespace deltajax::cuda::gemm
