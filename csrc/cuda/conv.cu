// Delta convolution on the GPU, on XLA's stream, with no host synchronisation.
//
// Depthwise (groups == Cin == Cout, not transposed, <= 64 taps): one launch, conv_depthwise.cu (each block
// computes the output mask of a row segment, compacts its active pixels in shared memory and computes them with
// 16-byte channel vectors; no global list, no count).
//
// Everything else, three operations:
//   1. zero the active-pixel and active-tile counts (workspace[conv_count_at], common/params.h) with a small kernel:
//      the compaction below adds to them from many blocks, and XLA hands us a fresh, uninitialised workspace every
//      call, so something ordered before the mask kernel must zero them (a flag or ticket inside the mask kernel
//      would need zeroing too);
//   2. output mask (receptive-field OR of the input mask) and compaction of the active output pixels into
//      workspace[0..count): by 32-bit mask words where the geometry allows (mask_words_kernel: a thread per word
//      column of an 8 x 16-pixel output tile, a warp scan, one atomicAdd per list per block; it also lists the tiles
//      with an active pixel), else byte by byte (mask_compact_kernel: ballots, a block scan, one per block; no tile
//      list);
//   3. the arithmetic over that list, with the grid sized for the worst case and blocks striding up to the
//      device-side count: an implicit GEMM on tensor cores (conv_gemm.cuh) for dense channel mixing, or a
//      direct kernel (one thread per active pixel and output channel) for grouped convolutions, transposed
//      depthwise ones and very narrow layers, which are memory-bound. Stride-1 tensor-core layers (not float32
//      HIGHEST) whose tiles were listed also launch the halo kernel (conv_halo.cuh: whole active tiles, each input
//      halo staged once): where the active pixels fill a set share of the active tiles (halo_fraction: on Hopper
//      35 % with more than one tap) it computes and the list kernel returns at once; below, the other way round.
// conv_with_rule (conv_activation) is the same with the activation rule in the convolution's epilogue
// (rule_epilogue.cuh): the zeroing also covers the row tiles' arrival counters, the mask pass also writes the rule's
// mask, and the depthwise or tensor-core kernel runs the rule on its sums.

#include "common/conv_geometry.h"
#include "cuda/conv.h"
#include "cuda/conv_depthwise.h"
#include "cuda/conv_gemm.cuh"
#include "cuda/conv_mask.cuh"
#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"

namespace deltajax::cuda {
namespace {

constexpr int kMaskBlock = 256, kMaskItems = 4;  // output pixels per block: 1024 of one row, one atomicAdd

// Grid: x = output row (b * Ho + oy), y = segment of kMaskBlock * kMaskItems output columns.
// The receptive-field OR comes from receptive_field (conv_mask.cuh); then a block-level compaction.
// `also`: nullptr, or a second output mask that gets the same values.
__global__ void __launch_bounds__(kMaskBlock, 8)
    mask_compact_kernel(ConvParams p, int32_t* list, int32_t* count, uint8_t* also) {
  __shared__ uint8_t span[kMaskSpan];
  __shared__ int warp_offset[kMaskItems][kMaskBlock / 32];
  __shared__ int block_offset;
  const int ho = int(p.ho), wo = int(p.wo);
  const int row = blockIdx.x, b = row / ho, oy = row - b * ho;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int x0 = blockIdx.y * (kMaskBlock * kMaskItems);
  const int n_out = min(kMaskBlock * kMaskItems, wo - x0);
  uint32_t taps[kMaskItems];
  receptive_field<kMaskBlock, kMaskItems, false>(p, b, oy, x0, n_out, span, taps);
  bool active[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) active[i] = taps[i] != 0;
  unsigned ballot[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) {
    const int ox = x0 + i * kMaskBlock + tid;
    if (ox < wo) {
      p.out_mask[int64_t(row) * wo + ox] = active[i];
      if (also != nullptr) also[int64_t(row) * wo + ox] = active[i];
    }
    ballot[i] = __ballot_sync(0xffffffffu, active[i]);
    if (lane == 0) warp_offset[i][warp] = __popc(ballot[i]);
  }
  __syncthreads();
  if (tid == 0) {
    int sum = 0;
    for (int i = 0; i < kMaskItems; ++i)
      for (int w = 0; w < kMaskBlock / 32; ++w) {
        const int c = warp_offset[i][w];
        warp_offset[i][w] = sum;
        sum += c;
      }
    block_offset = sum ? atomicAdd(count, sum) : 0;
  }
  __syncthreads();
  const unsigned below = (1u << lane) - 1u;
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i)
    if (active[i])
      list[block_offset + warp_offset[i][warp] + __popc(ballot[i] & below)] = row * wo + x0 + i * kMaskBlock + tid;
}

// The common case, by 32-bit words of the masks: stride 1 along rows, no lhs dilation, no rhs dilation along rows,
// kw <= 5, W and Wo multiples of 4 (row starts word-aligned). A thread owns one word column of an output tile of
// kOutTileRows x kOutTileCols pixels (kTileWords threads a tile, consecutive tiles on consecutive threads, so a
// warp's loads and stores of a mask row are contiguous): for each of the tile's rows it ORs, over the kernel rows,
// the three input words covering columns [4q - pad_left, +8) (every row's loads of a kernel row issued together),
// ORs the kw byte-shifts of that 8-byte window, and stores the word. A warp scan places the threads' active pixels
// (tile by tile, within a tile by word column, then row), the block's warps take their places in the pixel and tile
// lists with one atomicAdd per list per block, and the block's pixels are staged in shared memory and written out
// as one contiguous run. A block's tiles are listed in tile order. On an H200 (2026-12-07, 3x3 at 1080x1920) it
// took 8.0 us with nothing active and 19.8 us with every pixel active while a full tile column staged its 32 pixels
// at consecutive words (a warp's staging stores all in one shared-memory bank). Padded, on an H100 (same day and
// layer): 8.0 us with nothing active, 13.2 us with every pixel active.
// Before (2026-12-07, H100): a warp per tile and a thread per word (lane l: word l % 4 of row l / 4) took 9.6 us at
// 1080x1920 for a 3x3 with nothing active, issue-bound (ncu on an H200: ~400 instructions a warp, loads of 16 bytes
// a row, 61 % of their sectors excess), and one atomicAdd per warp cost 21.7 us more with every pixel active.
// The byte-wise kernel above stages rows in shared memory with byte loads and serial per-tap tests: ~50 us for a
// 3x3 at 1080x1920 on an H100, latency-bound.
constexpr int kWordBlock = 128;  // threads per block: 32 tiles
constexpr int kWordWarps = kWordBlock / 32;
constexpr int kTileWords = kOutTileCols / 4;  // mask words per tile row: threads per tile
static_assert(32 % kTileWords == 0 && kTileWords <= 8, "a warp holds whole tiles; a tile's threads fit a ballot byte");
constexpr int kWordPixels = kOutTileRows * 4;  // output pixels per thread

bool mask_by_words(const ConvParams& p, const uint8_t* also) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 4 == 0; };
  return p.lhs_dil_h == 1 && p.lhs_dil_w == 1 && p.stride_w == 1 && p.rhs_dil_w == 1 && p.kw <= 5 && p.w % 4 == 0 &&
         p.wo % 4 == 0 && aligned(p.in_mask) && aligned(p.out_mask) && aligned(also);
}

__global__ void __launch_bounds__(kWordBlock)
    mask_words_kernel(ConvParams p, int32_t* list, int32_t* count, int32_t* tiles, uint8_t* also) {
  const int out_words = int(p.wo) >> 2, in_words = int(p.w) >> 2, ho = int(p.ho), in_h = int(p.h);
  const TileGrid grid = out_tile_grid(ho, p.wo);  // p.wo % 4 == 0: kTileWords words a tile row
  const int tile = (blockIdx.x * kWordBlock + threadIdx.x) / kTileWords;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t words[kOutTileRows] = {};  // one 0/1 byte per pixel, rows of the tile below ho stay 0
  int row0 = 0, q = 0;
  if (tile < int(p.n) * grid.y * grid.x) {
    const auto [b, ty, tx] = out_tile(tile, grid);
    q = tx * kTileWords + int(threadIdx.x) % kTileWords;
    if (q < out_words) {
      const int oy0 = ty * kOutTileRows;
      row0 = b * ho + oy0;
      const int c0 = 4 * q - p.pad_left;  // input column of pixel 4q's first tap
      const int a = c0 >> 2, s = c0 & 3;  // its word (floor) and byte within it
      const bool ok0 = a >= 0 && a < in_words, ok1 = a + 1 >= 0 && a + 1 < in_words;
      const bool ok2 = a + 2 >= 0 && a + 2 < in_words;
      const uint32_t* m = reinterpret_cast<const uint32_t*>(p.in_mask) + int64_t(b) * in_h * in_words;
      uint32_t v0[kOutTileRows] = {}, v1[kOutTileRows] = {}, v2[kOutTileRows] = {};
      for (int ky = 0; ky < p.kh; ++ky) {
        const int dy = ky * p.rhs_dil_h - p.pad_top;
#pragma unroll
        for (int r = 0; r < kOutTileRows; ++r) {
          const int iy = (oy0 + r) * p.stride_h + dy;
          if (oy0 + r >= ho || iy < 0 || iy >= in_h) continue;
          const uint32_t* row = m + iy * in_words + a;
          if (ok0) v0[r] |= __ldg(row);
          if (ok1) v1[r] |= __ldg(row + 1);
          if (ok2) v2[r] |= __ldg(row + 2);
        }
      }
#pragma unroll
      for (int r = 0; r < kOutTileRows; ++r) {
        const uint64_t lo = (uint64_t(v1[r]) << 32) | v0[r];
        const uint64_t window = s == 0 ? lo : (lo >> (8 * s)) | (uint64_t(v2[r]) << (64 - 8 * s));  // bytes s..s+7
        uint32_t word = 0;
        for (int kx = 0; kx < p.kw; ++kx) word |= uint32_t(window >> (8 * kx));
        words[r] = __vcmpne4(word, 0u) & 0x01010101u;
        if (oy0 + r < ho) {
          const int64_t w = int64_t(row0 + r) * out_words + q;
          reinterpret_cast<uint32_t*>(p.out_mask)[w] = words[r];
          if (also != nullptr) reinterpret_cast<uint32_t*>(also)[w] = words[r];
        }
      }
    }
  }
  int n = 0;
#pragma unroll
  for (int r = 0; r < kOutTileRows; ++r) n += __popc(words[r]);
  int inclusive = n;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, inclusive, d);
    if (lane >= d) inclusive += v;
  }
  // The warp's active tiles: a tile's first thread stands for it.
  const unsigned any = __ballot_sync(0xffffffffu, n > 0);
  const bool first = lane % kTileWords == 0;
  const bool tile_active = first && ((any >> lane) & ((1u << kTileWords) - 1u)) != 0;
  const unsigned active_tiles = __ballot_sync(0xffffffffu, tile_active);
  // The block's places: each warp's pixel offset and tile slot within the block, then one atomicAdd per list.
  __shared__ int warp_pixels[kWordWarps], warp_slot[kWordWarps], block_base[2], block_pixels;
  // The block's active pixels, in list order, with a padding word after every 32 (slot i at i + i / 32): a full
  // tile column puts consecutive lanes 32 pixels apart, which unpadded would be a 32-way bank conflict a store.
  __shared__ int32_t staged[kWordBlock * kWordPixels + kWordBlock * kWordPixels / 32];
  if (lane == 31) {
    warp_pixels[warp] = inclusive;
    warp_slot[warp] = __popc(active_tiles);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int pixels = 0, slots = 0;
    for (int w = 0; w < kWordWarps; ++w) {
      const int np = warp_pixels[w], nt = warp_slot[w];
      warp_pixels[w] = pixels;
      warp_slot[w] = slots;
      pixels += np;
      slots += nt;
    }
    block_pixels = pixels;
    block_base[0] = pixels ? atomicAdd(count, pixels) : 0;
    block_base[1] = slots ? atomicAdd(count + 1, slots) : 0;
  }
  __syncthreads();
  if (tile_active) tiles[block_base[1] + warp_slot[warp] + __popc(active_tiles & ((1u << lane) - 1u))] = tile;
  const int total = block_pixels;
  if (total == 0) return;  // uniform over the block
  int at = warp_pixels[warp] + inclusive - n;
  const int first_pixel = row0 * int(p.wo) + 4 * q;
#pragma unroll
  for (int r = 0; r < kOutTileRows; ++r)
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if ((words[r] >> (8 * j)) & 1u) {
        staged[at + at / 32] = first_pixel + r * int(p.wo) + j;
        ++at;
      }
  __syncthreads();
  for (int i = threadIdx.x; i < total; i += kWordBlock) list[block_base[0] + i] = staged[i + i / 32];
}

// Grouped convolutions (and narrow or many-tap layers): one thread per (active output pixel, output channel);
// consecutive threads take consecutive channels of a pixel, so loads of the kernel and the store are coalesced.
// Plain float32 FMAs. The grid-stride walk over (pixel, channel) carries the pair as two 32-bit counters (no
// division in the loop; 64-bit division costs dozens of instructions). OutT: the output's type (T, or float32).
template <typename T, typename OutT>
__global__ void __launch_bounds__(256, 4)
    conv_direct_kernel(ConvParams p, const int32_t* __restrict__ list, const int32_t* __restrict__ count_ptr) {
  const int cin = int(p.cin), cout = int(p.cout), cin_g = cin / p.groups, cout_g = cout / p.groups;
  const int howo = int(p.ho * p.wo), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w);
  const unsigned count = unsigned(*count_ptr);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ wt = static_cast<const T*>(p.kernel);
  OutT* __restrict__ out = static_cast<OutT*>(p.out);
  const unsigned stride = gridDim.x * blockDim.x, first = blockIdx.x * blockDim.x + threadIdx.x;  // < 2^31
  const unsigned step_r = stride / unsigned(cout), step_c = stride % unsigned(cout);
  unsigned r = first / unsigned(cout), co = first % unsigned(cout);  // item r * cout + co; r < 2^31 + 2^31
  for (; r < count; r += step_r, co += step_c) {
    if (co >= unsigned(cout)) {  // co + step_c < 2 * cout
      co -= unsigned(cout);
      ++r;
      if (r >= count) break;
    }
    const int g = int(co) / cout_g;
    const int o = list[r];
    const int b = o / howo, rem = o - b * howo, oy = rem / wo, ox = rem - oy * wo;
    const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
    const int base = b * in_h * in_w;
    float acc = 0.f;
    for (int ky = 0; ky < p.kh; ++ky) {
      const int iy = source_index(y0 + ky * p.rhs_dil_h, p.lhs_dil_h, in_h);
      if (iy < 0) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        const int ix = source_index(x0 + kx * p.rhs_dil_w, p.lhs_dil_w, in_w);
        if (ix < 0) continue;
        const int pix = base + iy * in_w + ix;
        if (!p.in_mask[pix]) continue;  // inactive inputs read as zero and are never loaded
        const T* xi = x + int64_t(pix) * cin + g * cin_g;
        const T* wk = wt + int64_t(ky * p.kw + kx) * cin_g * cout + co;
        for (int ci = 0; ci < cin_g; ++ci, wk += cout) acc = fmaf(to_float(xi[ci]), to_float(*wk), acc);
      }
    }
    out[int64_t(o) * cout + co] = from_float<OutT>(acc);
  }
}

int device_sms() {  // 132 (an H100 / H200) where the query fails: a grid size, not a correctness matter
  DeviceFacts f;
  return device_facts(f) == cudaSuccess ? f.sms : 132;
}

// The tensor-core path: one group, enough channels to fill mma tiles, a tap table that fits shared memory.
bool use_gemm(const ConvParams& p) {
  return p.groups == 1 && p.cin >= 8 && p.cout >= 8 && p.kh * p.kw <= gemm::kMaxTaps;
}

}  // namespace

namespace gemm {
int variant() {  // read once per process (benchmarks set it before the first call)
  static const int cached = [] {
    const double v = env_number("DELTAJAX_CONV_VARIANT");
    return v >= 0 && v < kVariants ? int(v) : -1;
  }();
  return cached;
}
}  // namespace gemm

namespace {

// Kernels index pixels with int32 (the workspace list is int32 too).
bool int32_pixels(const ConvParams& p) {
  const int64_t limit = int64_t(1) << 31;
  return p.n * p.ho * p.wo < limit && p.n * p.h * p.w < limit && p.n * p.ho < limit;
}

// n int32 at p set to 0, grid-stride.
__global__ void __launch_bounds__(kBlock) zero_kernel(int32_t* p, int64_t n) { DELTAJAX_GRID_STRIDE(i, n) p[i] = 0; }

// The list path's first two steps: zero `zeroed` int32 of the workspace from the pixel count on (the two counts,
// then what the caller keeps after them), then the output mask (also written to `also` where given), the active
// output pixels and, where the mask pass goes by words, the active output tiles (conv_count_at's layout). Returns the
// lists for the arithmetic.
cudaError_t mask_and_list(const ConvParams& p, int64_t zeroed, uint8_t* also, gemm::ActiveSet& set,
                          cudaStream_t stream) {
  const int64_t outputs = p.n * p.ho * p.wo;
  int32_t* list = p.workspace;
  int32_t* tiles = p.workspace + outputs;
  int32_t* count = p.workspace + conv_count_at(p);
  set = gemm::ActiveSet{list, count, outputs, {}};
  // A kernel, not cudaMemsetAsync: in XLA's command buffers a memset node left ~1.1 us idle before it and ~2.7 us
  // after it, against 0.1-0.3 us between two kernels (H100, 2026-12-06).
  zero_kernel<<<grid_for(zeroed), kBlock, 0, stream>>>(count, zeroed);
  if (outputs == 0) return cudaGetLastError();
  if (mask_by_words(p, also)) {
    set.tiles = gemm::TileList{tiles, count + 1};
    const int64_t threads = conv_out_tiles(p) * kTileWords;
    mask_words_kernel<<<unsigned((threads + kWordBlock - 1) / kWordBlock), kWordBlock, 0, stream>>>(p, list, count,
                                                                                                    tiles, also);
  } else {
    const int64_t per_block = int64_t(kMaskBlock) * kMaskItems;
    const dim3 mask_grid(unsigned(p.n * p.ho), unsigned((p.wo + per_block - 1) / per_block));
    mask_compact_kernel<<<mask_grid, kMaskBlock, 0, stream>>>(p, list, count, also);
  }
  return cudaGetLastError();
}

// The tensor-core convolution over the mask pass's lists, of p's dtype and precision (with the rule in its
// epilogue, or not).
cudaError_t gemm_over_list(const ConvParams& p, const gemm::ActiveSet& set, const EpilogueRule* rule,
                           cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kF32:
      return p.precision == 0 ? gemm::conv_gemm_tf32(p, set, rule, stream)
                              : gemm::conv_gemm_3xtf32(p, set, rule, stream);
    case DType::kBF16:
      return gemm::conv_gemm_bf16(p, set, rule, stream);
    case DType::kF16:
      return gemm::conv_gemm_f16(p, set, rule, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t conv(const ConvParams& p, cudaStream_t stream) {
  if (!int32_pixels(p)) return cudaErrorInvalidValue;
  const int64_t outputs = p.n * p.ho * p.wo;
  // Depthwise: one fused launch (mask + arithmetic per block), no list, no count to zero.
  if (depthwise_eligible(p)) return outputs == 0 ? cudaSuccess : conv_depthwise(p, device_sms(), stream);
  gemm::ActiveSet set;
  if (cudaError_t e = mask_and_list(p, 2, nullptr, set, stream); e != cudaSuccess) return e;
  if (outputs == 0 || p.cout == 0) return cudaSuccess;
  if (use_gemm(p)) return gemm_over_list(p, set, nullptr, stream);
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int kBlock = 256;
    const int64_t work = outputs * p.cout;
    int64_t blocks = (work + kBlock - 1) / kBlock;
    const int64_t cap = int64_t(device_sms()) * 8;  // persistent: 8 blocks of 256 per SM stride over the list
    if (blocks > cap) blocks = cap;
    const unsigned grid = unsigned(blocks > 0 ? blocks : 1);
    if (p.out_dtype == DType::kF32)
      conv_direct_kernel<T, float><<<grid, kBlock, 0, stream>>>(p, set.pixels, set.count);
    else
      conv_direct_kernel<T, T><<<grid, kBlock, 0, stream>>>(p, set.pixels, set.count);
    return cudaGetLastError();
  });
}

bool conv_takes_rule(const ConvParams& p) {
  if (depthwise_eligible(p)) return depthwise_takes_rule(p);
  if (!use_gemm(p)) return false;
  return p.dtype == DType::kF32 ? gemm::aligned_rows<float>(p) : gemm::aligned_rows<__half>(p);  // 16-bit: 8 a piece
}

int64_t conv_rule_tiles(const ConvParams& p) { return (p.n * p.ho * p.wo + gemm::kRuleRows - 1) / gemm::kRuleRows; }

cudaError_t conv_with_rule(const ConvParams& p, const EpilogueRule& rule, cudaStream_t stream) {
  if (!int32_pixels(p) || !conv_takes_rule(p)) return cudaErrorInvalidValue;
  const int64_t outputs = p.n * p.ho * p.wo;
  if (depthwise_eligible(p)) return outputs == 0 ? cudaSuccess : conv_depthwise(p, device_sms(), stream, &rule);
  // The counts, then the row tiles' arrival counters; the rule's mask starts as the convolution's.
  gemm::ActiveSet set;
  if (cudaError_t e = mask_and_list(p, 2 + conv_rule_tiles(p), rule.a.out_mask, set, stream); e != cudaSuccess)
    return e;
  if (outputs == 0 || p.cout == 0) return cudaSuccess;
  return gemm_over_list(p, set, &rule, stream);
}

}  // namespace deltajax::cuda
