// Delta convolution on the GPU, in three launches on XLA's stream and no host synchronisation:
//   1. zero the active-pixel count (workspace[N*Ho*Wo]);
//   2. output mask (receptive-field OR of the input mask) and compaction of the active output pixels into
//      workspace[0..count) (warp ballots, a block-level scan, one atomicAdd per block);
//   3. the arithmetic over that list, with the grid sized for the worst case and blocks striding up to the
//      device-side count: an implicit GEMM on tensor cores (conv_gemm.cuh) for dense channel mixing, or a
//      direct kernel (one thread per active pixel and output channel) for depthwise / grouped convolutions
//      and very narrow layers, which are memory-bound.
#include "common/conv_geometry.h"
#include "cuda/conv.h"
#include "cuda/conv_gemm.cuh"
#include "cuda/dtype.cuh"

namespace deltajax::cuda {
namespace {

constexpr int kMaskBlock = 256, kMaskItems = 4;  // pixels per block: 1024, so one atomicAdd per 1024 pixels

__device__ __forceinline__ bool receptive_active(const ConvParams& p, int64_t o) {
  const int64_t b = o / (p.ho * p.wo), rem = o - b * (p.ho * p.wo), oy = rem / p.wo, ox = rem - oy * p.wo;
  const uint8_t* m = p.in_mask + b * p.h * p.w;
  for (int ky = 0; ky < p.kh; ++ky) {
    const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
    if (iy < 0) continue;
    for (int kx = 0; kx < p.kw; ++kx) {
      const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
      if (ix >= 0 && m[iy * p.w + ix]) return true;
    }
  }
  return false;
}

__global__ void __launch_bounds__(kMaskBlock) mask_compact_kernel(ConvParams p, int32_t* list, int32_t* count) {
  __shared__ int warp_offset[kMaskItems][kMaskBlock / 32];
  __shared__ int block_offset;
  const int64_t outputs = p.n * p.ho * p.wo;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t base = int64_t(blockIdx.x) * kMaskBlock * kMaskItems;
  bool active[kMaskItems];
  unsigned ballot[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) {
    const int64_t o = base + i * kMaskBlock + tid;
    active[i] = o < outputs && receptive_active(p, o);
    if (o < outputs) p.out_mask[o] = active[i];
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
      list[block_offset + warp_offset[i][warp] + __popc(ballot[i] & below)] = int32_t(base + i * kMaskBlock + tid);
}

// One thread per (active output pixel, output channel): consecutive threads take consecutive channels of a
// pixel, so loads of x (depthwise) and of the kernel and the store are coalesced. Plain float32 FMAs.
template <typename T>
__global__ void __launch_bounds__(256) conv_direct_kernel(ConvParams p, const int32_t* __restrict__ list,
                                                          const int32_t* __restrict__ count_ptr) {
  const int64_t total = int64_t(*count_ptr) * p.cout;
  const int cin_g = int(p.cin / p.groups), cout_g = int(p.cout / p.groups), cout = int(p.cout);
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ wt = static_cast<const T*>(p.kernel);
  T* __restrict__ out = static_cast<T*>(p.out);
  const int64_t howo = p.ho * p.wo;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cout;
    const int co = int(i - r * cout), g = co / cout_g;
    const int64_t o = list[r];
    const int64_t b = o / howo, rem = o - b * howo, oy = rem / p.wo, ox = rem - oy * p.wo;
    float acc = 0.f;
    for (int ky = 0; ky < p.kh; ++ky) {
      const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
      if (iy < 0) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
        if (ix < 0) continue;
        const int64_t pix = (b * p.h + iy) * p.w + ix;
        if (!p.in_mask[pix]) continue;  // inactive inputs read as zero and are never loaded
        const T* xi = x + pix * p.cin + int64_t(g) * cin_g;
        const T* wk = wt + int64_t(ky * p.kw + kx) * cin_g * cout + co;
        for (int ci = 0; ci < cin_g; ++ci) acc = fmaf(to_float(xi[ci]), to_float(wk[int64_t(ci) * cout]), acc);
      }
    }
    out[o * cout + co] = from_float<T>(acc);
  }
}

int device_sms() {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) !=
                                                    cudaSuccess)
    return 132;
  return sms;
}

// The tensor-core path: one group, enough channels to fill mma tiles, a tap table that fits shared memory.
bool use_gemm(const ConvParams& p) {
  return p.groups == 1 && p.cin >= 8 && p.cout >= 8 && p.kh * p.kw <= gemm::kMaxTaps;
}

}  // namespace

cudaError_t conv(const ConvParams& p, cudaStream_t stream) {
  const int64_t outputs = p.n * p.ho * p.wo;
  if (outputs >= (int64_t(1) << 31) || p.n * p.h * p.w >= (int64_t(1) << 31)) return cudaErrorInvalidValue;
  int32_t* list = p.workspace;
  int32_t* count = p.workspace + outputs;
  if (cudaError_t e = cudaMemsetAsync(count, 0, sizeof(int32_t), stream); e != cudaSuccess) return e;
  if (outputs == 0) return cudaGetLastError();
  const int64_t per_block = int64_t(kMaskBlock) * kMaskItems;
  mask_compact_kernel<<<unsigned((outputs + per_block - 1) / per_block), kMaskBlock, 0, stream>>>(p, list, count);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (p.cout == 0) return cudaSuccess;

  if (use_gemm(p))
    return p.dtype == DType::kF32 ? gemm::conv_gemm_f32(p, list, count, outputs, stream)
                                  : gemm::conv_gemm_16(p, list, count, outputs, stream);
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int kBlock = 256;
    const int64_t work = outputs * p.cout;
    int64_t blocks = (work + kBlock - 1) / kBlock;
    const int64_t cap = int64_t(device_sms()) * 8;  // persistent: 8 blocks of 256 per SM stride over the list
    if (blocks > cap) blocks = cap;
    conv_direct_kernel<T><<<unsigned(blocks > 0 ? blocks : 1), kBlock, 0, stream>>>(p, list, count);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
