// The operands of the activation rule that a convolution runs in its epilogue (rule_epilogue.cuh); host-safe: the
// handlers include it through conv.h.
#pragma once

#include <cstdint>

#include "common/params.h"

namespace deltajax::cuda {

namespace gemm {
constexpr int kBN = 64;         // output channels per block of the tensor-core convolution
constexpr int kRuleRows = 128;  // pixels per row tile of its configurations that run the rule (kBM)
}  // namespace gemm

// The activation rule's operands, for the convolutions that run it in their epilogue (the tensor-core one and the
// depthwise one; csrc/cuda/conv_activation.cu fills it). pending, arrivals and scores: the tensor-core one's.
struct EpilogueRule {
  ActKind act = ActKind::kRelu;
  float slope = 0.01f;            // leaky_relu
  const float* slopes = nullptr;  // prelu: [Cout]
  TruncMode truncation = TruncMode::kMax;
  float threshold = 0.f;
  const float* scale = nullptr;  // [Cout]: the update is the convolution times scale (a batch-norm scale)
  float* acc = nullptr;          // [pixels, Cout] float32, in place
  float* sent = nullptr;         // [pixels, Cout] float32, in place
  void* out = nullptr;           // [pixels, Cout] in the values' dtype, written at kept pixels only
  uint8_t* keep = nullptr;       // [pixels]: the rule's output mask (zero at pixels not in the list beforehand)
  float* pending = nullptr;      // [pixels, Cout] float32: y where several channel tiles share a decision
  int32_t* arrivals = nullptr;   // [row tiles], zero before the launch
  float* scores = nullptr;       // [row tiles, gridDim.y, kRuleRows] partial truncation scores
};

}  // namespace deltajax::cuda
