// Delta convolution, first version: one thread per (output pixel, output channel), inactive pixels skipped.
#include "common/conv_geometry.h"
#include "cuda/conv.h"
#include "cuda/dtype.cuh"

namespace deltajax::cuda {
namespace {

__global__ void out_mask_kernel(ConvParams p) {
  const int64_t outputs = p.n * p.ho * p.wo;
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < outputs; o += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
    uint8_t any = 0;
    for (int ky = 0; ky < p.kh && !any; ++ky) {
      const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
      if (iy < 0) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
        if (ix >= 0) any |= p.in_mask[(b * p.h + iy) * p.w + ix];
      }
    }
    p.out_mask[o] = any;
  }
}

template <typename T>
__global__ void conv_kernel(ConvParams p) {
  const int64_t total = p.n * p.ho * p.wo * p.cout;
  const T* x = static_cast<const T*>(p.x);
  const T* wt = static_cast<const T*>(p.kernel);
  T* out = static_cast<T*>(p.out);
  const int64_t cin_g = p.cin / p.groups, cout_g = p.cout / p.groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = t / p.cout, co = t % p.cout, g = co / cout_g;
    if (!p.out_mask[o]) continue;
    const int64_t b = o / (p.ho * p.wo), oy = (o / p.wo) % p.ho, ox = o % p.wo;
    float acc = 0.f;
    for (int ky = 0; ky < p.kh; ++ky) {
      const int64_t iy = conv_source(oy, ky, p.stride_h, p.rhs_dil_h, p.pad_top, p.lhs_dil_h, p.h);
      if (iy < 0) continue;
      for (int kx = 0; kx < p.kw; ++kx) {
        const int64_t ix = conv_source(ox, kx, p.stride_w, p.rhs_dil_w, p.pad_left, p.lhs_dil_w, p.w);
        const int64_t pix = (b * p.h + iy) * p.w + ix;
        if (ix < 0 || !p.in_mask[pix]) continue;
        const T* xi = x + pix * p.cin + g * cin_g;
        const T* wk = wt + (int64_t(ky) * p.kw + kx) * cin_g * p.cout + co;
        for (int64_t ci = 0; ci < cin_g; ++ci) acc += to_float(xi[ci]) * to_float(wk[ci * p.cout]);
      }
    }
    out[t] = from_float<T>(acc);
  }
}

int blocks_for(int64_t threads, int block) {
  const int64_t b = (threads + block - 1) / block;
  return static_cast<int>(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

}  // namespace

cudaError_t conv(const ConvParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int kBlock = 256;
    out_mask_kernel<<<blocks_for(p.n * p.ho * p.wo, kBlock), kBlock, 0, stream>>>(p);
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    conv_kernel<T><<<blocks_for(p.n * p.ho * p.wo * p.cout, kBlock), kBlock, 0, stream>>>(p);
    return cudaGetLastError();
  });
}

}  // namespace deltajax::cuda
