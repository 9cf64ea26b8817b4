// The activation rule in a convolution's epilogue (conv_activation): the convolution's float32 sums go straight
// into the rule, so no activation kernel walks the frame after the convolution and no pre-activation is written
// for it to read back. The per-channel rule and the emission below serve the depthwise kernel (conv_depthwise.cu)
// and the tensor-core one, whose epilogue and emit kernel follow them.
//
// A tensor-core block holds kBM pixels x kBN output channels. The rule's per-channel part (acc += d * scale,
// y = f(acc) - sent, the pixel's truncation score) runs on the block's channels; the pixel's decision needs the
// score over all of its channels, which the blocks of one row tile (gridDim.y of them, kBN channels each) hold
// in parts:
//   - one channel tile (Cout <= kBN): the block decides and emits at once, from registers;
//   - several: each block writes y (float32, `pending`) and its partial scores, then counts itself in with one
//     atomicAdd on the row tile's arrival counter (zeroed with the pixel count before the mask pass); the block
//     that arrives last reads the partial scores and decides every pixel of the row tile. No block waits for
//     another. Then rule_emit_kernel emits the kept pixels' channels from `pending` over the whole grid. With the
//     last blocks emitting them (one block a row tile, up to 1280 channels) EfficientNet-Lite0's delta step took
//     -3 to +6 % of its time with a separate activation kernel; with the emit kernel -5 to +2 % (H100, 2026-12-06).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/activation_fn.h"
#include "common/truncation.h"
#include "cuda/dtype.cuh"
#include "cuda/epilogue_rule.h"

namespace deltajax::cuda {

// The activation of a run-time kind, one branch per value, for the rule epilogues: with_activation would
// instantiate their whole loops once per kind, and those twelve copies made the tensor-core kernel's code 106 KB
// (49 KB with this; 32 KB without the rule) and cost registers (the depthwise rule spilled 80 bytes, now 16). The
// step's time did not change measurably (H100, 2026-12-06). The transcendental kinds share one out-of-line
// function, so the inlined part stays a few comparisons.
template <ActKind... Ks>
__device__ __forceinline__ float act_of(ActKind kind, float slope, float x) {
  float y = x;  // kinds not listed: identity
  (void)(... || (kind == Ks && (y = ActFn<Ks>{slope}(x), true)));
  return y;
}
__device__ __noinline__ inline float act_transcendental(ActKind kind, float x) {
  return act_of<ActKind::kSigmoid, ActKind::kSilu, ActKind::kGelu, ActKind::kGeluTanh, ActKind::kTanh>(kind, 0.f, x);
}
struct AnyAct {
  ActKind kind;
  float slope;          // leaky_relu
  const float* slopes;  // prelu: [C]
  __device__ __forceinline__ float at(float x, int k) const {
    switch (kind) {
      case ActKind::kIdentity:
        return x;
      case ActKind::kPRelu:
        return ActFn<ActKind::kPRelu>{slope, slopes}.at(x, k);
      case ActKind::kSigmoid:
      case ActKind::kSilu:
      case ActKind::kGelu:
      case ActKind::kGeluTanh:
      case ActKind::kTanh:
        return act_transcendental(kind, x);
      default:
        return act_of<ActKind::kRelu, ActKind::kRelu6, ActKind::kLeakyRelu, ActKind::kHardSwish, ActKind::kHardSigmoid>(
            kind, slope, x);
    }
  }
};

// Asks L2 for the line holding p (no effect on results).
__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Prefetches into L2 the state that the rule reads from element `at` (pixel * C + first channel) on, `count`
// channels of acc and of sent (float32; count <= 64: at most three 128-byte lines each), so that the reads,
// issued later, do not wait on DRAM.
__device__ __forceinline__ void prefetch_rule_state(const EpilogueRule& r, int64_t at, int count) {
  for (const float* base : {r.a.acc + at, r.a.sent + at}) {
    prefetch_l2(base);
    if (count > 32) prefetch_l2(base + 32);
    prefetch_l2(base + count - 1);
  }
}

// V (a multiple of 4) float32 state values at p, in 16-byte pieces.
template <int V>
__device__ __forceinline__ void load_state(const float* p, float (&f)[V]) {
#pragma unroll
  for (int j = 0; j < V; j += 4) {
    const float4 q = *reinterpret_cast<const float4*>(p + j);
    f[j] = q.x, f[j + 1] = q.y, f[j + 2] = q.z, f[j + 3] = q.w;
  }
}
template <int V>
__device__ __forceinline__ void store_state(float* p, const float (&f)[V]) {
#pragma unroll
  for (int j = 0; j < V; j += 4) *reinterpret_cast<float4*>(p + j) = make_float4(f[j], f[j + 1], f[j + 2], f[j + 3]);
}

// The rule's per-channel part for channels ch .. ch + V - 1 of a pixel, whose state starts at `at`: acc += d * scale
// (stored), y = f(acc) - sent, s = sent as loaded; returns these channels' share of the truncation score.
template <int V, class F>
__device__ __forceinline__ float rule_update(const EpilogueRule& r, const F& f, int64_t at, int ch, const float (&d)[V],
                                             float (&y)[V], float (&s)[V]) {
  float a[V], scale[V], score = 0.f;
  load_state<V>(r.a.acc + at, a);
  load_state<V>(r.a.sent + at, s);
  load_state<V>(r.a.scale + ch, scale);
#pragma unroll
  for (int j = 0; j < V; ++j) {
    a[j] += d[j] * scale[j];
    y[j] = f.at(a[j], ch + j) - s[j];
    score = add_score(r.a.truncation, score, y[j]);
  }
  store_state<V>(r.a.acc + at, a);
  return score;
}

// Emits channels at .. at + V - 1 of a kept pixel: v = y rounded to T, out = v, sent += v (s: sent as loaded).
template <typename T, int V>
__device__ __forceinline__ void emit(const EpilogueRule& r, int64_t at, const float (&y)[V], float (&s)[V]) {
  float v[V];
#pragma unroll
  for (int j = 0; j < V; ++j) {
    v[j] = to_float(from_float<T>(y[j]));
    s[j] += v[j];
  }
#pragma unroll
  for (int j = 0; j < V; j += 4) {
    const float v4[4] = {v[j], v[j + 1], v[j + 2], v[j + 3]};
    store_floats<4>(static_cast<T*>(r.a.out) + at + j, v4);
  }
  store_state<V>(r.a.sent + at, s);
}

namespace gemm {

// The rule over the block's tile: acc_tile[row * stride + k] is the float32 convolution of pixel rows[row] (-1:
// no pixel) at channel n0 + k, for the tile's first tile_rows rows (a multiple of kMinTileRows; the rest hold no
// pixel). Called by all kThreads threads of the block after a barrier that made acc_tile visible; the caller's next
// barrier brings them together again. Needs Cout % 4 == 0 and 16-byte aligned state rows. With several channel tiles,
// rule_emit_kernel must follow.
template <typename T, int kBM, int kThreads>
__device__ __forceinline__ void rule_epilogue(const EpilogueRule& r, const float* acc_tile, int stride,
                                              const int32_t* rows, int tile_rows, int tile, int n0, int cout) {
  constexpr int kSeg = kBN / 4;  // lanes per pixel row (4 channels each): a half warp, reduced by shuffles
  static_assert(
      kBM == kRuleRows && kBM % kMinTileRows == 0 && kThreads % 32 == 0 && (kMinTileRows * kSeg) % kThreads == 0,
      "whole warps per pass for every tile_rows");
  __shared__ int last;
  const int ny = int(gridDim.y);
  const TruncMode mode = r.a.truncation;
  const AnyAct f{r.a.act, r.a.negative_slope, r.a.slopes};
  for (int e = threadIdx.x; e < tile_rows * kSeg; e += kThreads) {  // the same trip count for every lane
    const int row = e / kSeg, seg = e % kSeg, n = n0 + 4 * seg;
    const int o = rows[row];
    const bool valid = o >= 0 && n < cout;
    const int64_t at = int64_t(o) * cout + n;
    float y[4] = {0.f, 0.f, 0.f, 0.f}, s[4] = {0.f, 0.f, 0.f, 0.f}, score = 0.f;
    if (valid) {
      float d[4];
      load_state<4>(acc_tile + row * stride + 4 * seg, d);
      score = rule_update<4>(r, f, at, n, d, y, s);
    }
#pragma unroll
    for (int d = kSeg / 2; d > 0; d >>= 1) {
      score = combine_scores(mode, score, __shfl_xor_sync(0xffffffffu, score, d));
    }
    if (ny == 1) {
      const bool keep = keeps(r.a.truncation, r.a.threshold, score, cout);
      if (valid && keep) emit<T, 4>(r, at, y, s);
      if (seg == 0 && o >= 0) r.a.out_mask[o] = keep;
    } else {
      if (valid) store_state<4>(r.pending + at, y);
      if (seg == 0) r.scores[(int64_t(tile) * ny + blockIdx.y) * kBM + row] = score;
    }
  }
  if (ny == 1) return;
  __threadfence();  // this block's pending values and scores, before its arrival
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(r.arrivals + tile, 1) == ny - 1;
  __syncthreads();
  if (!last) return;  // uniform over the block
  __threadfence();
  for (int row = threadIdx.x; row < tile_rows; row += kThreads) {
    const int o = rows[row];
    float score = 0.f;
    for (int j = 0; j < ny; ++j)
      score = combine_scores(mode, score, __ldcg(r.scores + (int64_t(tile) * ny + j) * kBM + row));
    if (o >= 0) r.a.out_mask[o] = keeps(r.a.truncation, r.a.threshold, score, cout);
  }
}

// The emission where several channel tiles shared a decision: every channel of each listed pixel that the rule kept,
// spread over the whole grid. Launch after the convolution with grid-stride blocks of 256.
template <typename T>
__global__ void __launch_bounds__(256) rule_emit_kernel(EpilogueRule r, const int32_t* __restrict__ list,
                                                        const int32_t* __restrict__ count_ptr, int cout) {
  const int units = cout / 4;
  const int64_t items = int64_t(*count_ptr) * units;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < items; e += int64_t(gridDim.x) * blockDim.x) {
    const int i = int(e / units), n = 4 * int(e - int64_t(i) * units);
    const int o = list[i];
    if (!r.a.out_mask[o]) continue;
    const int64_t at = int64_t(o) * cout + n;
    float y[4], s[4];
    load_state<4>(r.pending + at, y);
    load_state<4>(r.a.sent + at, s);
    emit<T, 4>(r, at, y, s);
  }
}

}  // namespace gemm
}  // namespace deltajax::cuda
