#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"

namespace deltajax::cuda {

// Launches the delta convolution on `stream`; returns the launch status.
cudaError_t conv(const ConvParams& p, cudaStream_t stream);

// Int32 elements of conv_activation's workspace for p: conv_list_size(p), then for 16-bit values the float32
// pre-activation [N, Ho, Wo, Cout] from the next 16-byte boundary on (deltajax/ops/fused.py sizes it the same way).
int64_t conv_activation_workspace(const ConvParams& p);

// The convolution, then the activation rule on its float32 result (conv_activation.cu). conv_p.out is act_p's x
// and out (the rule runs in place); act_p.x_mask is conv_p.out_mask; conv_p.workspace has
// conv_activation_workspace(conv_p) elements.
cudaError_t conv_activation(ConvParams conv_p, ActivationParams act_p, cudaStream_t stream);

}  // namespace deltajax::cuda
