// Tensor-core delta convolution instantiated for 3xTF32 (float32, precision 1: float32-level accuracy).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_3xtf32(const ConvParams& p, const ActiveSet& set, const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<float, 1>(p, set, rule, stream);
}

}  // namespace deltajax::cuda::gemm
