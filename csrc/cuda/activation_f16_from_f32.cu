// The delta activation instantiated for float32 inputs, float16 outputs.
#include "cuda/activation_kernel.cuh"

namespace deltajax::cuda::act {

template cudaError_t launch_activation<float, __half>(const ActivationParams&, cudaStream_t);

}  // namespace deltajax::cuda::act
