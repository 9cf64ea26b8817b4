#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace deltajax::cuda {

// Launches the sparsify kernels on `stream`; returns the launch status.
cudaError_t sparsify(const SparsifyParams& p, cudaStream_t stream);

}  // namespace deltajax::cuda
