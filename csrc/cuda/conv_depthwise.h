// Depthwise delta convolution (groups == Cin == Cout) in one launch: output mask and arithmetic fused per block.
#pragma once

#include <cuda_runtime_api.h>

#include "common/params.h"
#include "cuda/epilogue_rule.h"

namespace deltajax::cuda {

// The shapes conv_depthwise handles: depthwise, not transposed (lhs_dilation 1), at most 64 taps.
bool depthwise_eligible(const ConvParams& p);

// Whether it can run the activation rule on its sums (whole 16-byte channel vectors, every channel of a pixel in
// one block: at most 32 vectors).
bool depthwise_takes_rule(const ConvParams& p);

// Launches it on `stream` (`sms`: the device's multiprocessor count, sizes the grid for small frames). Needs
// p.n * p.ho * p.wo > 0. Writes out and out_mask, or with a rule (depthwise_takes_rule(p)) out_mask and the rule's
// results instead of out; leaves p.workspace untouched.
cudaError_t conv_depthwise(const ConvParams& p, int sms, cudaStream_t stream, const EpilogueRule* rule = nullptr);

}  // namespace deltajax::cuda
