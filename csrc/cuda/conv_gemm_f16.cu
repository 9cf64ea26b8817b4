// Tensor-core delta convolution instantiated for float16.
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_f16(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                          cudaStream_t stream) {
  constexpr int kVec = 16 / int(sizeof(__half));  // 16-byte copies need whole pieces of every operand row
  if (p.cin % kVec == 0 && p.cout % kVec == 0)
    return launch_conv_gemm<__half, 0, true>(p, list, count, max_rows, stream);
  return launch_conv_gemm<__half, 0, false>(p, list, count, max_rows, stream);
}

}  // namespace deltajax::cuda::gemm
