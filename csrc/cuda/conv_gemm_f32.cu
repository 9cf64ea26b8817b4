// float32 instantiations of the tensor-core delta convolution: TF32 (precision 0) and 3xTF32 (precision 1).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

cudaError_t conv_gemm_f32(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                          cudaStream_t stream) {
  const bool aligned = p.cin % Tile<float, 64>::kVec == 0 && p.cout % Tile<float, 64>::kVec == 0;
  if (p.precision == 0)
    return aligned ? launch_conv_gemm<float, 0, true>(p, list, count, max_rows, stream)
                   : launch_conv_gemm<float, 0, false>(p, list, count, max_rows, stream);
  return aligned ? launch_conv_gemm<float, 1, true>(p, list, count, max_rows, stream)
                 : launch_conv_gemm<float, 1, false>(p, list, count, max_rows, stream);
}

}  // namespace deltajax::cuda::gemm
