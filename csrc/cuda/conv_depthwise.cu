// Depthwise delta convolution, one launch, no global pixel list, no count, no memset.
//
// Grid: x = output row (b * Ho + oy), y = segment of `seg` (<= 1024) output columns, z = slice of the channels.
// Each block of 256 threads
//   1. computes the receptive-field rule for its segment (conv_mask.cuh) as a 64-bit set of active taps per
//      output pixel, writes out_mask (z == 0 only) and compacts the active pixels, in column order, into shared
//      memory (warp ballots + a block scan): no cross-block communication, so nothing needs zeroing first;
//   2. computes them: thread = (pixel lane, channel vector of 16 bytes: 8 x bf16/fp16 or 4 x float32).
//      Consecutive threads take consecutive vectors of one pixel, so a warp's loads of an NHWC input pixel, of
//      the HWIO weights and its stores are whole 16-byte pieces of contiguous rows. A thread walks the block's
//      pixels kPix at a time (one weight load per tap serves kPix pixels), taps that read an inactive or
//      out-of-bounds input are skipped by their bit (never loaded: their values are unspecified), float32
//      accumulation, output rounded to the activation dtype (or float32: conv_activation's two launches), or, for
//      conv_activation, the activation rule run on the sums (rule_epilogue.cuh). Index math is 32-bit; only the
//      final pixel * channels offset is widened to 64 bits (one IMAD.WIDE).
// Channel counts that are not a multiple of the vector width (C = 3, 13, ...) or unaligned buffers take element
// loads and stores of the same kernel (kVector = false).
//
// Bytes moved (p = active fraction): each active input pixel row is read by the 3 (kh) output rows that use it:
// the first from DRAM, the others mostly from L2; taps of one output row hit L1. Output written once.
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda/conv_depthwise.h"
#include "cuda/conv_mask.cuh"
#include "cuda/dtype.cuh"
#include "cuda/rule_epilogue.cuh"

namespace deltajax::cuda {
namespace {

constexpr int kThreads = 256, kItems = 4, kMaxSeg = kThreads * kItems;
constexpr int kMaxSlots = 32;  // 16-byte channel vectors per block; wider layers are split over gridDim.z
constexpr int kPix = 2;        // pixels per thread per round, sharing each weight load

template <typename T>
constexpr int kVecOf = 16 / int(sizeof(T));

// Two 16-bit values packed in a 32-bit word (element 0 in the low half) <-> two floats.
__device__ __forceinline__ void unpack2(uint32_t w, float& a, float& b, __nv_bfloat16) {
  a = __uint_as_float(w << 16);
  b = __uint_as_float(w & 0xffff0000u);
}
__device__ __forceinline__ void unpack2(uint32_t w, float& a, float& b, __half) {
  __half2 h;
  memcpy(&h, &w, sizeof(h));
  const float2 f = __half22float2(h);
  a = f.x;
  b = f.y;
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __nv_bfloat16) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
  uint32_t w;
  memcpy(&w, &h, sizeof(w));
  return w;
}
__device__ __forceinline__ uint32_t pack2(float a, float b, __half) {
  const __half2 h = __floats2half2_rn(a, b);
  uint32_t w;
  memcpy(&w, &h, sizeof(w));
  return w;
}

// f = the kVecOf<T> values at p as floats, or zeros when !use (then nothing is read). kVector: one 16-byte load
// (p 16-byte aligned); otherwise the first n (1..kVecOf<T>) by element loads, the rest 0. The load is predicated,
// not branched around, so a caller's independent loads issue back to back before their FMAs.
template <typename T, bool kVector>
__device__ __forceinline__ void load_vec(const T* p, int n, bool use, float (&f)[kVecOf<T>]) {
  if constexpr (kVector) {
    uint4 u = make_uint4(0u, 0u, 0u, 0u);
    if (use) u = __ldg(reinterpret_cast<const uint4*>(p));
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (sizeof(T) == 4) {
        f[j] = __uint_as_float(w[j]);
      } else {
        unpack2(w[j], f[2 * j], f[2 * j + 1], T{});
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < kVecOf<T>; ++j) f[j] = use && j < n ? to_float(p[j]) : 0.f;
  }
}

template <typename T, bool kVector>
__device__ __forceinline__ void store_vec(T* p, int n, const float (&f)[kVecOf<T>]) {
  if constexpr (kVector) {
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if constexpr (sizeof(T) == 4) {
        w[j] = __float_as_uint(f[j]);
      } else {
        w[j] = pack2(f[2 * j], f[2 * j + 1], T{});
      }
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
#pragma unroll
    for (int j = 0; j < kVecOf<T>; ++j)
      if (j < n) p[j] = from_float<T>(f[j]);
  }
}

// The float32 output of 16-bit values (conv_activation's pre-activation): V floats as 16-byte stores (kVector:
// p 16-byte aligned, V a multiple of 4), else the first n by element stores.
template <int V, bool kVector>
__device__ __forceinline__ void store_float32(float* p, int n, const float (&f)[V]) {
  if constexpr (kVector) {
#pragma unroll
    for (int j = 0; j < V; j += 4) *reinterpret_cast<float4*>(p + j) = make_float4(f[j], f[j + 1], f[j + 2], f[j + 3]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j)
      if (j < n) p[j] = f[j];
  }
}

// seg: output columns per block (<= kMaxSeg); slots_per_block: channel vectors per block (<= kMaxSlots).
// OutT: the output's type (T, or float32 for 16-bit T). kRule (kVector, one slice of channels: every channel of a
// pixel in this block): the activation rule runs on the sums instead of storing them (rule_epilogue.cuh); the
// threads of a pixel add up its truncation score in shared memory, round by round, one pixel a thread (kPix would
// hold twice the registers: the bf16 kernel spilled 11 KB at 64 registers; one pixel, 16 bytes).
template <typename T, typename OutT, bool kVector, bool kRule = false>
__global__ void __launch_bounds__(kThreads, 4)
    depthwise_kernel(ConvParams p, int seg, int slots_per_block, EpilogueRule rule) {
  static_assert(!kRule || kVector, "the rule takes whole vectors of channels");
  constexpr int P = kRule ? 1 : kPix;  // the rule holds each pixel's update and sent values across a barrier
  constexpr int V = kVecOf<T>;
  __shared__ uint8_t span[kMaskSpan];
  __shared__ uint64_t tap_bits[kMaxSeg];  // active taps of each compacted output pixel
  __shared__ uint16_t column[kMaxSeg];    // its column within the segment
  __shared__ int warp_offset[kItems][kThreads / 32];
  __shared__ int active_count;
  const int ho = int(p.ho), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w), c = int(p.cin);
  const int row = blockIdx.x, b = row / ho, oy = row - b * ho;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int x0 = blockIdx.y * seg, n_out = min(seg, wo - x0);

  // 1. Active taps of the segment's output pixels, out_mask, compaction into shared memory.
  uint64_t taps[kItems];
  receptive_field<kThreads, kItems, true>(p, b, oy, x0, n_out, span, taps);  // 0 past n_out
  unsigned ballot[kItems];
#pragma unroll
  for (int i = 0; i < kItems; ++i) {
    const int j = i * kThreads + tid;  // column within the segment
    const bool active = taps[i] != 0;
    if (blockIdx.z == 0 && j < n_out) {
      p.out_mask[int64_t(row) * wo + x0 + j] = active;
      if (kRule && !active) rule.a.out_mask[int64_t(row) * wo + x0 + j] = 0;  // active pixels: the rule decides below
    }
    ballot[i] = __ballot_sync(0xffffffffu, active);
    if (lane == 0) warp_offset[i][warp] = __popc(ballot[i]);
  }
  __syncthreads();
  if (tid == 0) {  // exclusive scan in (item, warp) order = column order
    int sum = 0;
    for (int i = 0; i < kItems; ++i)
      for (int w = 0; w < kThreads / 32; ++w) {
        const int n = warp_offset[i][w];
        warp_offset[i][w] = sum;
        sum += n;
      }
    active_count = sum;
  }
  __syncthreads();
  const unsigned below = (1u << lane) - 1u;
#pragma unroll
  for (int i = 0; i < kItems; ++i)
    if (taps[i]) {
      const int k = warp_offset[i][warp] + __popc(ballot[i] & below);
      tap_bits[k] = taps[i];
      column[k] = uint16_t(i * kThreads + tid);
    }
  __syncthreads();
  const int count = active_count;
  if (count == 0) return;  // uniform; no barrier below

  // 2. Thread = (pixel lane, channel vector): nslots consecutive threads cover this block's channels of a pixel.
  const int slots = (c + V - 1) / V;
  const int s0 = blockIdx.z * slots_per_block;
  const int nslots = min(slots_per_block, slots - s0);  // >= 1 (the launcher sizes gridDim.z so)
  const int lanes = kThreads / nslots;                  // pixels per round
  const int lane_px = tid / nslots;
  const bool idle = lane_px >= lanes;  // the last kThreads % nslots threads
  const int c0 = (s0 + tid - lane_px * nslots) * V;
  const int nch = min(V, c - c0);  // V unless this is the last, partial vector (element path only)
  const T* __restrict__ xb = static_cast<const T*>(p.x) + int64_t(b) * in_h * in_w * c + c0;  // image b
  const T* __restrict__ wb = static_cast<const T*>(p.kernel) + c0;                            // [kh, kw, 1, C]
  OutT* __restrict__ ob = static_cast<OutT*>(p.out) + (int64_t(row) * wo + x0) * c + c0;
  // Element (pixel / tap / column) k of those rows: in 16-byte units with a 32-bit unsigned offset for the vector
  // path (one IMAD.WIDE.U32; the launcher checks that an image has < 2^32 vectors), 64-bit otherwise.
  auto at = [slots, c](auto* base, int k) {
    if constexpr (kVector) {
      using U = std::conditional_t<std::is_const_v<std::remove_pointer_t<decltype(base)>>, const uint4, uint4>;
      return reinterpret_cast<decltype(base)>(reinterpret_cast<U*>(base) + unsigned(k) * unsigned(slots));
    } else {
      return base + int64_t(k) * c;
    }
  };
  const int y0 = oy * p.stride_h - p.pad_top;
  // The sums over this thread's channel vector of the block's pixels j + q * lanes (q < P; zeros past count),
  // and their columns within the segment.
  auto sums = [&](int j, int(&col)[P], float(&acc)[P][V]) {
    uint64_t tb[P];
    int xs[P];
    uint64_t any = 0;
#pragma unroll
    for (int q = 0; q < P; ++q) {
      const int jq = j + q * lanes;
      const bool ok = jq < count;
      tb[q] = ok ? tap_bits[jq] : 0;
      col[q] = ok ? int(column[jq]) : 0;
      xs[q] = (x0 + col[q]) * p.stride_w - p.pad_left;
      any |= tb[q];
    }
#pragma unroll
    for (int q = 0; q < P; ++q)
#pragma unroll
      for (int e = 0; e < V; ++e) acc[q][e] = 0.f;
    int t = 0;
    for (int ky = 0; ky < p.kh; ++ky) {
      const int iy = y0 + ky * p.rhs_dil_h;
      const int row_px = (iy >= 0 && iy < in_h) ? iy * in_w : 0;  // a set bit implies 0 <= iy < in_h
      for (int kx = 0; kx < p.kw; ++kx, ++t) {
        if (!((any >> t) & 1)) continue;
        // The weight vector and every pixel's input vector are loaded first (independent, in flight together),
        // then the FMAs. A skipped pixel's vector reads as zero without a load: its FMAs add 0 * w.
        float wf[V], xv[P][V];
        load_vec<T, kVector>(at(wb, t), nch, true, wf);
#pragma unroll
        for (int q = 0; q < P; ++q) {
          const bool use = (tb[q] >> t) & 1;
          const int px = use ? row_px + xs[q] + kx * p.rhs_dil_w : 0;  // use implies 0 <= iy < in_h, 0 <= ix < in_w
          load_vec<T, kVector>(at(xb, px), nch, use, xv[q]);
        }
#pragma unroll
        for (int q = 0; q < P; ++q)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[q][e] = fmaf(xv[q][e], wf[e], acc[q][e]);
      }
    }
  };
  if constexpr (!kRule) {
    if (idle) return;
    for (int j = lane_px; j < count; j += P * lanes) {
      int col[P];
      float acc[P][V];
      sums(j, col, acc);
#pragma unroll
      for (int q = 0; q < P; ++q) {
        if (j + q * lanes >= count) continue;
        if constexpr (std::is_same_v<OutT, T>)
          store_vec<T, kVector>(at(ob, col[q]), nch, acc[q]);
        else
          store_float32<V, kVector>(ob + int64_t(col[q]) * c, nch, acc[q]);
      }
    }
  } else {
    // Rounds of P * lanes pixels, every thread of the block in each (barriers): the rule's per-channel part,
    // each thread's share of its pixel's score into shared memory, then every thread of the pixel combines the
    // pixel's shares in the same order (deterministic), decides and emits its channels.
    __shared__ float shares[P * kThreads];
    const int first = lane_px * nslots;             // the pixel's first thread: its slot 0
    const int64_t seg_px = int64_t(row) * wo + x0;  // output pixel of the segment's column 0
    const AnyAct f{rule.a.act, rule.a.negative_slope, rule.a.slopes};
    for (int base = 0; base < count; base += P * lanes) {  // uniform over the block
      const int j = base + lane_px;
      int col[P];
      float y[P][V], s[P][V];
      if (!idle) {
        float acc[P][V];
        sums(j, col, acc);
#pragma unroll
        for (int q = 0; q < P; ++q)
          shares[q * kThreads + tid] =
              j + q * lanes < count ? rule_update<V>(rule, f, (seg_px + col[q]) * c + c0, c0, acc[q], y[q], s[q]) : 0.f;
      }
      __syncthreads();
      if (!idle) {
#pragma unroll
        for (int q = 0; q < P; ++q) {
          if (j + q * lanes >= count) continue;
          float score = shares[q * kThreads + first];
          for (int k = 1; k < nslots; ++k)
            score = combine_scores(rule.a.truncation, score, shares[q * kThreads + first + k]);
          const bool keep = keeps(rule.a.truncation, rule.a.threshold, score, c);
          if (keep) emit<T, V>(rule, (seg_px + col[q]) * c + c0, y[q], s[q]);
          if (tid == first) rule.a.out_mask[seg_px + col[q]] = keep;
        }
      }
      __syncthreads();  // the shares are rewritten by the next round
    }
  }
}

// Where a launch of p goes: slices of the channels (gridDim.z) and channel vectors per slice, output columns per
// block, and whether whole 16-byte vectors can be loaded.
struct Shape {
  int64_t z, per_block, rows, segs;
  int seg;
  bool vector;
};

template <typename T>
Shape shape_of(const ConvParams& p, int sms) {
  constexpr int V = kVecOf<T>;
  Shape g;
  const int64_t slots = (p.cin + V - 1) / V;
  g.z = (slots + kMaxSlots - 1) / kMaxSlots;
  g.per_block = (slots + g.z - 1) / g.z;          // <= kMaxSlots, balanced over the z slices
  g.z = (slots + g.per_block - 1) / g.per_block;  // every slice gets >= 1 vector
  g.rows = p.n * p.ho;
  // Small frames: shorter segments (more blocks) until the grid covers the device a few times over. Down to 8
  // pixels a block (was 32), so that a thread of the late layers (27x48 and 14x24 pixels at 768x432) takes one
  // round of taps, not two or more: EfficientNet-Lite0's 16 depthwise convs 253 -> 227 us per step on an H200.
  // What remains there (12-19 us per layer at 1 % changed, H100) is not each thread's chain of one dependent
  // load per tap: issuing four taps' loads before their FMAs did not change it (2026-12-06).
  g.seg = kMaxSeg;
  while (g.seg > 8 && g.rows * ((p.wo + g.seg - 1) / g.seg) * g.z < int64_t(4) * sms) g.seg /= 2;
  g.segs = (p.wo + g.seg - 1) / g.seg;
  g.vector =
      p.cin % V == 0 && p.h * p.w * slots < (int64_t(1) << 32) &&
      (reinterpret_cast<uintptr_t>(p.x) | reinterpret_cast<uintptr_t>(p.kernel) | reinterpret_cast<uintptr_t>(p.out)) %
              16 ==
          0;
  return g;
}

template <typename T, typename OutT>
cudaError_t launch(const ConvParams& p, int sms, cudaStream_t stream, const EpilogueRule* rule) {
  const Shape g = shape_of<T>(p, sms);
  if (g.rows >= (int64_t(1) << 31) || g.segs > 65535 || g.z > 65535) return cudaErrorInvalidValue;
  const dim3 grid{unsigned(g.rows), unsigned(g.segs), unsigned(g.z)};
  if (rule != nullptr) {
    if (!g.vector || g.z != 1) return cudaErrorInvalidValue;
    depthwise_kernel<T, float, true, true><<<grid, kThreads, 0, stream>>>(p, g.seg, int(g.per_block), *rule);
  } else if (g.vector) {
    depthwise_kernel<T, OutT, true><<<grid, kThreads, 0, stream>>>(p, g.seg, int(g.per_block), EpilogueRule{});
  } else {
    depthwise_kernel<T, OutT, false><<<grid, kThreads, 0, stream>>>(p, g.seg, int(g.per_block), EpilogueRule{});
  }
  return cudaGetLastError();
}

}  // namespace

bool depthwise_eligible(const ConvParams& p) {
  return p.groups == p.cin && p.cout == p.cin && p.cin >= 1 && p.lhs_dil_h == 1 && p.lhs_dil_w == 1 && p.kh >= 1 &&
         p.kw >= 1 && p.kh * p.kw <= 64;
}

bool depthwise_takes_rule(const ConvParams& p) {
  if (!depthwise_eligible(p)) return false;
  const Shape g = p.dtype == DType::kF32 ? shape_of<float>(p, 1) : shape_of<__half>(p, 1);  // 16-bit: same vectors
  return g.vector && g.z == 1;
}

cudaError_t conv_depthwise(const ConvParams& p, int sms, cudaStream_t stream, const EpilogueRule* rule) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if (rule != nullptr || p.out_dtype == DType::kF32) return launch<T, float>(p, sms, stream, rule);
    return launch<T, T>(p, sms, stream, rule);
  });
}

}  // namespace deltajax::cuda
