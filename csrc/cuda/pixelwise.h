// Launchers of the per-pixel delta ops (activation, add, affine, densify walk active pixels warp by warp,
// active_pixels.cuh). Each takes its params struct and the stream and returns the launch status.
#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace deltajax::cuda {

cudaError_t activation(const ActivationParams& p, cudaStream_t stream);
cudaError_t add(const AddParams& p, cudaStream_t stream);
cudaError_t densify(const DensifyParams& p, cudaStream_t stream);
cudaError_t affine(const AffineParams& p, cudaStream_t stream);
cudaError_t binary(const BinaryParams& p, cudaStream_t stream);
cudaError_t pool(const PoolParams& p, cudaStream_t stream);
cudaError_t resample(const ResampleParams& p, cudaStream_t stream);
cudaError_t global_pool(const GlobalPoolParams& p, cudaStream_t stream);

}  // namespace deltajax::cuda
