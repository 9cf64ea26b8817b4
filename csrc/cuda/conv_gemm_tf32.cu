// Tensor-core delta convolution instantiated for TF32 (float32, precision 0).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_tf32(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<float, 0>(p, set, rule, stream);
}

}  // namespace deltajax::cuda::gemm
