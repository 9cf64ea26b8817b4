// Tensor-core delta convolution instantiated for TF32 (float32, precision 0).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_tf32(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                           const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<float, 0>(p, list, count, max_rows, rule, stream);
}

}  // namespace deltajax::cuda::gemm
