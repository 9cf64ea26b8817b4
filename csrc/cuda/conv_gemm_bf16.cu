// Tensor-core delta convolution instantiated for bfloat16.
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_bf16(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                           cudaStream_t stream) {
  constexpr int kVec = 16 / int(sizeof(__nv_bfloat16));  // 16-byte copies need whole pieces of every operand row
  if (p.cin % kVec == 0 && p.cout % kVec == 0)
    return launch_conv_gemm<__nv_bfloat16, 0, true>(p, list, count, max_rows, stream);
  return launch_conv_gemm<__nv_bfloat16, 0, false>(p, list, count, max_rows, stream);
}

}  // namespace deltajax::cuda::gemm
