// The delta activation instantiated for bfloat16 inputs and outputs.
#include "cuda/activation_kernel.cuh"

namespace deltajax::cuda::act {

template cudaError_t launch_activation<__nv_bfloat16, __nv_bfloat16>(const ActivationParams&, cudaStream_t);

}  // namespace deltajax::cuda::act
