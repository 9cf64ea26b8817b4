// Delta convolution on the GPU, in three launches on XLA's stream and no host synchronisation:
//   1. zero the active-pixel count (workspace[N*Ho*Wo]);
//   2. output mask (receptive-field OR of the input mask) and compaction of the active output pixels into
//      workspace[0..count) (warp ballots, a block-level scan, one atomicAdd per block);
//   3. the arithmetic over that list, with the grid sized for the worst case and blocks striding up to the
//      device-side count: an implicit GEMM on tensor cores (conv_gemm.cuh) for dense channel mixing, or a
//      direct kernel (one thread per active pixel and output channel) for depthwise / grouped convolutions
//      and very narrow layers, which are memory-bound.
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

// Grid: x = output row (b * Ho + oy), y = segment of kMaskBlock * kMaskItems output columns.
__global__ void __launch_bounds__(kMaskBlock) mask_compact_kernel(ConvParams p, int32_t* list, int32_t* count) {
  __shared__ int warp_offset[kMaskItems][kMaskBlock / 32];
  __shared__ int block_offset;
  const int ho = int(p.ho), wo = int(p.wo), in_h = int(p.h), in_w = int(p.w);
  const int row = blockIdx.x, b = row / ho, oy = row - b * ho;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int x0 = blockIdx.y * (kMaskBlock * kMaskItems);
  const uint8_t* m = p.in_mask + int64_t(b) * in_h * in_w;
  bool active[kMaskItems];
  unsigned ballot[kMaskItems];
#pragma unroll
  for (int i = 0; i < kMaskItems; ++i) {
    const int ox = x0 + i * kMaskBlock + tid;
    bool a = false;
    if (ox < wo) {
      for (int ky = 0; ky < p.kh && !a; ++ky) {
        const int iy = source_index(oy * p.stride_h + ky * p.rhs_dil_h - p.pad_top, p.lhs_dil_h, in_h);
        if (iy < 0) continue;
        const uint8_t* mrow = m + iy * in_w;
        for (int kx = 0; kx < p.kw; ++kx) {
          const int ix = source_index(ox * p.stride_w + kx * p.rhs_dil_w - p.pad_left, p.lhs_dil_w, in_w);
          if (ix >= 0 && mrow[ix]) {
            a = true;
            break;
          }
        }
      }
      p.out_mask[int64_t(row) * wo + ox] = a;
    }
    active[i] = a;
    ballot[i] = __ballot_sync(0xffffffffu, a);
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

namespace gemm {
int tile_rows() {
  static const int rows = [] {
    const char* env = std::getenv("DELTAJAX_CONV_BM");
    return env && std::atoi(env) == 64 ? 64 : 128;
  }();
  return rows;
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
