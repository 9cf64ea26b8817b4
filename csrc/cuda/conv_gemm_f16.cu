// bfloat16 / float16 instantiations of the tensor-core delta convolution (mma.m16n8k16, fp32 accumulation).
#include "cuda/conv_gemm.cuh"

namespace deltajax::cuda::gemm {

template <typename T>
cudaError_t conv_gemm_typed(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                            cudaStream_t stream) {
  const bool aligned = p.cin % Tile<T, 64>::kVec == 0 && p.cout % Tile<T, 64>::kVec == 0;
  return aligned ? launch_conv_gemm<T, 0, true>(p, list, count, max_rows, stream)
                 : launch_conv_gemm<T, 0, false>(p, list, count, max_rows, stream);
}

cudaError_t conv_gemm_16(const ConvParams& p, const int32_t* list, const int32_t* count, int64_t max_rows,
                         cudaStream_t stream) {
  if (p.dtype == DType::kBF16) return conv_gemm_typed<__nv_bfloat16>(p, list, count, max_rows, stream);
  if (p.dtype == DType::kF16) return conv_gemm_typed<__half>(p, list, count, max_rows, stream);
  return cudaErrorInvalidValue;
}

}  // namespace deltajax::cuda::gemm
