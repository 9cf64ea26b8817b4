// Tensor-core delta convolution instantiated for TF32 (float32, precision 0).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_tf32(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                           cudaStream_t stream) {
  constexpr int kVec = 16 / int(sizeof(float));  // 16-byte copies need whole pieces of every operand row
  if (p.cin % kVec == 0 && p.cout % kVec == 0)
    return launch_conv_gemm<float, 0, true>(p, list, count, max_rows, stream);
  return launch_conv_gemm<float, 0, false>(p, list, count, max_rows, stream);
}

}  // namespace deltajax::cuda::gemm
