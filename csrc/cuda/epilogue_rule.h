// The operands of the activation rule that a convolution runs in its epilogue (rule_epilogue.cuh); host-safe: the
// handlers include it through conv.h.
#pragma once

#include <cstdint>

#include "common/params.h"

namespace deltajax::cuda {

namespace gemm {
constexpr int kBN = 64;           // output channels per block of the tensor-core convolution
constexpr int kRuleRows = 128;    // pixels per row tile of its configurations that run the rule (kBM)
constexpr int kMinTileRows = 32;  // the fewest pixels a tile takes when few are active: one warp's rows (32 x 32)
}  // namespace gemm

// The activation rule, for the convolutions that run it in their epilogue (the tensor-core one and the depthwise
// one; csrc/cuda/conv_activation.cu fills it): the activation's params (its x and x_mask unused: the input update is
// the convolution's float32 result times a.scale; a.out_mask the rule's mask, zero beforehand at pixels not in the
// convolution's mask), and the tensor-core convolution's scratch where several channel tiles share a decision.
struct EpilogueRule {
  ActivationParams a;
  float* pending = nullptr;     // [pixels, Cout] float32: y = f(acc) - sent, for the emit kernel
  int32_t* arrivals = nullptr;  // [row tiles], zero before the launch
  float* scores = nullptr;      // [row tiles, gridDim.y, kRuleRows] partial truncation scores
};

}  // namespace deltajax::cuda
