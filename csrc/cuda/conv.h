#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace deltajax::cuda {

// Launches the delta convolution on `stream`; returns the launch status.
cudaError_t conv(const ConvParams& p, cudaStream_t stream);

}  // namespace deltajax::cuda
