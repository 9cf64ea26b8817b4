// Tensor-core delta convolution instantiated for bfloat16.
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_bf16(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<__nv_bfloat16, 0>(p, set, rule, stream);
}

}  // namespace deltajax::cuda::gemm
