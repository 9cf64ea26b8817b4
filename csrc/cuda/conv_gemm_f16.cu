// Tensor-core delta convolution instantiated for float16.
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_f16(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<__half, 0>(p, set, rule, stream);
}

}  // namespace deltajax::cuda::gemm
