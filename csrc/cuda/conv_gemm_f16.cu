// Tensor-core delta convolution instantiated for float16.
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_f16(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                          const EpilogueRule* rule, cudaStream_t stream) {
  return launch_conv_gemm_for<__half, 0>(p, list, count, max_rows, rule, stream);
}

}  // namespace deltajax::cuda::gemm
