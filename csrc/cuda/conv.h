#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"
#include "cuda/epilogue_rule.h"

namespace deltajax::cuda {

// Launches the delta convolution on `stream`; returns the launch status.
cudaError_t conv(const ConvParams& p, cudaStream_t stream);

// Whether p's convolution can run the activation rule in its epilogue: a tensor-core convolution (one group,
// at least 8 channels on each side) whose operand rows are whole 16-byte pieces, or a depthwise one with whole
// 16-byte channel vectors, at most 32 of them.
bool conv_takes_rule(const ConvParams& p);

// Row tiles of that convolution (kRuleRows output pixels each): its arrival counters and partial scores.
int64_t conv_rule_tiles(const ConvParams& p);

// The convolution with the activation rule in its epilogue (conv_takes_rule(p) must hold): p.out is unused,
// p.out_mask gets the convolution's mask and rule.keep the rule's; p.workspace holds the lists, their counts and
// conv_rule_tiles(p) arrival counters (the rest of the tensor-core convolution's scratch is in `rule`; the
// depthwise one needs none).
cudaError_t conv_with_rule(const ConvParams& p, const EpilogueRule& rule, cudaStream_t stream);

// Int32 elements of conv_activation's workspace for p: the lists, their counts and conv_rule_tiles(p) arrival
// counters; from the next 16-byte boundary on, the partial scores (conv_rule_tiles(p) x ceil(Cout / kBN) x
// kRuleRows float32); then, for 16-bit values, the float32 pre-activation [N, Ho, Wo, Cout]
// (deltajax/ops/fused.py sizes it the same way).
int64_t conv_activation_workspace(const ConvParams& p);

// The convolution and the activation rule on its float32 result (conv_activation.cu): in one launch after the
// mask pass where conv_takes_rule(conv_p), else the convolution, then the activation kernel. act_p.x_mask is
// conv_p.out_mask; conv_p.workspace has conv_activation_workspace(conv_p) elements.
cudaError_t conv_activation(ConvParams conv_p, ActivationParams act_p, cudaStream_t stream);

}  // namespace deltajax::cuda
