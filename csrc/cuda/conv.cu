// Delta convolution on the GPU, in three launches on XLA's stream and no host synchronisation:
//   1. zero the active-pixel count (workspace[N*Ho*Wo]);
//   2. output mask (receptive-field OR of the input mask) and compaction of the active output pixels into
//      workspace[0..count) (warp ballots, a block-level scan, one atomicAdd per block);
//   3. the arithmetic over that list, with the grid sized for the worst case and blocks striding up to the
//      device-side count: an implicit GEMM on tensor cores (conv_gemm.cuh) for dense channel mixing, or a
//      direct kernel (one thread per active pixel and output channel) for depthwise / grouped convolutions
//      and very narrow layers, which are memory-bound.
#include <atomic>
#include <cstdlib>

#include "common/conv_geometry.h"
#include "cuda/conv.h"
#include "cuda/conv_gemm.cuh"
#include "cuda/dtype.cuh"

namespace deltajax::cuda {
namespace {

constexpr int kMaskBlock = 256, kMaskItems = 4;  // output pixels per block: 1024 of one row, one atomicAdd

// Input index along one axis for position `pos` = o * stride + k * rhs_dil - pad, or -1 (32-bit: 64-bit
// division costs dozens of instructions and dominated the first version).
__device__ __forceinline__ int source_index(int pos, int lhs_dil, int size) {
  if (lhs_dil != 1) pos = (pos >= 0 && pos % lhs_dil == 0) ? pos / lhs_dil : -1;
  return pos < size ? pos : -1;
}

constexpr int kMaskSpan = 8192;  // bytes of one input mask row staged in shared memory

// Grid: x = output row (b * Ho + oy), y = segment of kMaskBlock * kMaskItems output columns.
// For each kernel row the block stages the span of the input mask row its outputs read (one coalesced pass),
// then every output ORs its taps from shared memory; spans too wide to stage (huge strides) read global memory.
__global__ void __launch_bounds__(kMaskBlock) mask_compact_kernel(ConvParams p, int32_t* list, int32_t* count) {
  __shared__ uint8_t span[kMaskSpan];
  __shared__ int warp_offset[kMaskItems][kMaskBlock / 32];
  __shared__ int block_offset;
  const int ho = int(p.ho), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w);
  const int row = blockIdx.x, b = row / ho, oy = row - b * ho;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int x0 = blockIdx.y * (kMaskBlock * kMaskItems);
  const int n_out = min(kMaskBlock * kMaskItems, wo - x0);
  const uint8_t* m = p.in_mask + int64_t(b) * in_h * in_w;
  // Input columns [lo, hi] that this segment's outputs can read.
  const int pos_lo = x0 * p.stride_w - p.pad_left;
  const int pos_hi = (x0 + n_out - 1) * p.stride_w + (p.kw - 1) * p.rhs_dil_w - p.pad_left;
  const int lo = pos_lo <= 0 ? 0 : (pos_lo + p.lhs_dil_w - 1) / p.lhs_dil_w;
  const int hi = pos_hi < 0 ? -1 : min(in_w - 1, pos_hi / p.lhs_dil_w);
  const bool staged = hi - lo + 1 <= kMaskSpan;  // uniform over the block
  bool active[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) active[i] = false;
  for (int ky = 0; ky < p.kh; ++ky) {
    const int iy = source_index(oy * p.stride_h + ky * p.rhs_dil_h - p.pad_top, p.lhs_dil_h, in_h);
    if (iy < 0 || hi < lo) continue;  // uniform
    const uint8_t* mrow = m + int64_t(iy) * in_w;
    if (staged) {
      __syncthreads();  // the previous kernel row's reads are done
      for (int j = tid; j <= hi - lo; j += kMaskBlock) span[j] = mrow[lo + j];
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < kMaskItems; ++i) {
      const int ox = x0 + i * kMaskBlock + tid;
      if (ox >= wo || active[i]) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        const int ix = source_index(ox * p.stride_w + kx * p.rhs_dil_w - p.pad_left, p.lhs_dil_w, in_w);
        if (ix >= 0 && (staged ? span[ix - lo] : mrow[ix])) {
          active[i] = true;
          break;
        }
      }
    }
  }
  unsigned ballot[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) {
    const int ox = x0 + i * kMaskBlock + tid;
    if (ox < wo) p.out_mask[int64_t(row) * wo + ox] = active[i];
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

// One thread per (active output pixel, output channel): consecutive threads take consecutive channels of a
// pixel, so loads of x (depthwise) and of the kernel and the store are coalesced. Plain float32 FMAs.
template <typename T>
__global__ void __launch_bounds__(256) conv_direct_kernel(ConvParams p, const int32_t* __restrict__ list,
                                                          const int32_t* __restrict__ count_ptr) {
  const int cin = int(p.cin), cout = int(p.cout), cin_g = cin / p.groups, cout_g = cout / p.groups;
  const int howo = int(p.ho * p.wo), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w);
  const int64_t total = int64_t(*count_ptr) * cout;
  const T* __restrict__ x = static_cast<const T*>(p.x);
  const T* __restrict__ wt = static_cast<const T*>(p.kernel);
  T* __restrict__ out = static_cast<T*>(p.out);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int r = int(i / cout);
    const int co = int(i - int64_t(r) * cout), g = co / cout_g;
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
        for (int ci = 0; ci < cin_g; ++ci) acc = fmaf(to_float(xi[ci]), to_float(wk[int64_t(ci) * cout]), acc);
      }
    }
    out[int64_t(o) * cout + co] = from_float<T>(acc);
  }
}

int device_sms() {  // cached per device: the handler runs every frame
  static std::atomic<int> cache[gemm::kMaxDevices];
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 132;
  std::atomic<int>& c = cache[device < gemm::kMaxDevices ? device : 0];
  if ((sms = c.load(std::memory_order_relaxed)) != 0) return sms;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return 132;
  c.store(sms, std::memory_order_relaxed);
  return sms;
}

// The tensor-core path: one group, enough channels to fill mma tiles, a tap table that fits shared memory.
bool use_gemm(const ConvParams& p) {
  return p.groups == 1 && p.cin >= 8 && p.cout >= 8 && p.kh * p.kw <= gemm::kMaxTaps;
}

}  // namespace

namespace gemm {
int variant() {
  const char* env = std::getenv("DELTAJAX_CONV_VARIANT");
  if (!env || !*env) return -1;
  const int v = std::atoi(env);
  return v >= 0 && v < kVariants ? v : -1;
}
}  // namespace gemm

cudaError_t conv(const ConvParams& p, cudaStream_t stream) {
  const int64_t outputs = p.n * p.ho * p.wo;
  // Kernels index pixels with int32 (the workspace list is int32 too).
  if (outputs >= (int64_t(1) << 31) || p.n * p.h * p.w >= (int64_t(1) << 31) || p.n * p.ho >= (int64_t(1) << 31))
    return cudaErrorInvalidValue;
  int32_t* list = p.workspace;
  int32_t* count = p.workspace + outputs;
  if (cudaError_t e = cudaMemsetAsync(count, 0, sizeof(int32_t), stream); e != cudaSuccess) return e;
  if (outputs == 0) return cudaGetLastError();
  const int64_t per_block = int64_t(kMaskBlock) * kMaskItems;
  const dim3 mask_grid(unsigned(p.n * p.ho), unsigned((p.wo + per_block - 1) / per_block));
  mask_compact_kernel<<<mask_grid, kMaskBlock, 0, stream>>>(p, list, count);
  if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  if (p.cout == 0) return cudaSuccess;

  if (use_gemm(p))
    switch (p.dtype) {
      case DType::kF32:
        return p.precision == 0 ? gemm::conv_gemm_tf32(p, list, count, outputs, stream)
                                : gemm::conv_gemm_3xtf32(p, list, count, outputs, stream);
      case DType::kBF16:
        return gemm::conv_gemm_bf16(p, list, count, outputs, stream);
      case DType::kF16:
        return gemm::conv_gemm_f16(p, list, count, outputs, stream);
    }
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
