// The CUDA backend as the handler templates see it: XLA's stream, kernels in csrc/cuda.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "cuda/conv.h"
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
};

}  // namespace deltajax::ffi_ops
