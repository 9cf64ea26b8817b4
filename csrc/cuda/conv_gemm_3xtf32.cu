// Tensor-core delta convolution instantiated for 3xTF32 (float32, precision 1: float32-level accuracy).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_3xtf32(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                             cudaStream_t stream) {
  constexpr int kVec = 16 / int(sizeof(float));  // 16-byte copies need whole pieces of every operand row
  if (p.cin % kVec == 0 && p.cout % kVec == 0)
    return launch_conv_gemm<float, 1, true>(p, list, count, max_rows, stream);
  return launch_conv_gemm<float, 1, false>(p, list, count, max_rows, stream);
}

}  // namespace deltajax::cuda::gemm
