// The CUDA backend as the handler templates see it: XLA's stream, kernels in csrc/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/conv.h"
#include "cuda/pixelwise.h"
#include "cuda/sparsify.h"
#include "ffi/common.h"

namespace deltajax::ffi_ops {

struct Cuda {
  using Stream = cudaStream_t;
  static auto Bind() { return xla::ffi::Ffi::Bind().Ctx<xla::ffi::PlatformStream<cudaStream_t>>(); }

  // Turns a launch status into an FFI error naming the op (cudaGetLastError may report an earlier async error).
  static xla::ffi::Error check(const char* op, cudaError_t status) {
    if (status == cudaSuccess) return xla::ffi::Error::Success();
    return xla::ffi::Error::Internal(std::string("deltajax_") + op + ": CUDA error " + cudaGetErrorName(status) + ": " +
                                     cudaGetErrorString(status));
  }
  static void copy(void* dst, const void* src, size_t bytes, Stream s) {
    cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s);
  }
  static xla::ffi::Error sparsify(const SparsifyParams& p, Stream s) { return check("sparsify", cuda::sparsify(p, s)); }
  static xla::ffi::Error conv(const ConvParams& p, Stream s) { return check("conv", cuda::conv(p, s)); }
  static int64_t conv_activation_workspace(const ConvParams& p) { return cuda::conv_activation_workspace(p); }
  static xla::ffi::Error conv_activation(const ConvParams& p, const ActivationParams& a, Stream s) {
    return check("conv_activation", cuda::conv_activation(p, a, s));
  }
  static xla::ffi::Error activation(const ActivationParams& p, Stream s) {
    return check("activation", cuda::activation(p, s));
  }
  static xla::ffi::Error add(const AddParams& p, Stream s) { return check("add", cuda::add(p, s)); }
  static xla::ffi::Error densify(const DensifyParams& p, Stream s) { return check("densify", cuda::densify(p, s)); }
  static xla::ffi::Error affine(const AffineParams& p, Stream s) { return check("affine", cuda::affine(p, s)); }
  static xla::ffi::Error binary(const BinaryParams& p, Stream s) { return check("binary", cuda::binary(p, s)); }
  static xla::ffi::Error pool(const PoolParams& p, Stream s) { return check("pool", cuda::pool(p, s)); }
  static xla::ffi::Error resample(const ResampleParams& p, Stream s) { return check("resample", cuda::resample(p, s)); }
  static xla::ffi::Error global_pool(const GlobalPoolParams& p, Stream s) {
    return check("global_avg_pool", cuda::global_pool(p, s));
  }
};

}  // namespace deltajax::ffi_ops
