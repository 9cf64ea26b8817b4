// The delta activation instantiated for float16 inputs and outputs.
#include "cuda/activation_kernel.cuh"

namespace deltajax::cuda::act {

template cudaError_t launch_activation<__half, __half>(const ActivationParams&, cudaStream_t);

}  // namespace deltajax::cuda::act
