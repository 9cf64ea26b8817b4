// Depthwise delta convolution (groups == Cin == Cout) in one launch: output mask and arithmetic fused per block.
#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace deltajax::cuda {

// The shapes conv_depthwise handles: depthwise, not transposed (lhs_dilation 1), at most 64 taps.
bool depthwise_eligible(const ConvParams& p);

// Launches it on `stream` (`sms`: the device's multiprocessor count, sizes the grid for small frames). Needs
// p.n * p.ho * p.wo > 0. Writes out and out_mask; leaves p.workspace untouched.
cudaError_t conv_depthwise(const ConvParams& p, int sms, cudaStream_t stream);

}  // namespace deltajax::cuda
