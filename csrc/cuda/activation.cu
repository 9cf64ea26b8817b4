// The delta activation: dispatch on the dtypes to the launcher instantiated for them (activation_kernel.cuh).
#include "cuda/activation_kernel.cuh"

namespace deltajax::cuda {

cudaError_t activation(const ActivationParams& p, cudaStream_t stream) {
  return dispatch_dtype(p.dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    if (p.x_dtype == DType::kF32) return act::launch_activation<float, T>(p, stream);
    if (p.x_dtype != p.dtype) return cudaErrorInvalidValue;
    return act::launch_activation<T, T>(p, stream);
  });
}

}  // namespace deltajax::cuda
