// A delta convolution and the activation rule on its float32 result.
//
// Where the convolution runs on tensor cores with whole 16-byte operand rows, or depthwise with whole 16-byte channel
// vectors (conv_takes_rule), the rule is the convolution's epilogue (rule_epilogue.cuh): after the mask pass one
// launch, and an emit kernel over the list where more than 64 output channels share a decision (depthwise: one
// launch in all). Elsewhere (direct, element-load and very wide depthwise convolutions), two launches on one stream:
// the convolution writes its result in float32 (16-bit values: into the workspace's pre-activation; float32 values:
// into `out`, which the rule then overwrites in place), and the activation kernel reads it from there. Either way a
// 16-bit result is never rounded before the rule accumulates it, as on the CPU, whose kernel runs the rule on each
// tile of output pixels.
#include "cuda/conv.h"
#include "cuda/launch.cuh"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

struct Workspace {
  int64_t scores;  // int32 offset of the partial scores (16-byte aligned)
  int64_t pre;     // of the float32 pre-activation (16-bit values; 16-byte aligned)
  int64_t size;
};

Workspace layout(const ConvParams& p) {
  const int64_t tiles = conv_rule_tiles(p), channel_tiles = (p.cout + gemm::kBN - 1) / gemm::kBN;
  Workspace w;
  w.scores = (conv_list_size(p) + tiles + 3) / 4 * 4;
  w.pre = w.scores + tiles * channel_tiles * gemm::kRuleRows;
  w.size = w.pre + (p.dtype == DType::kF32 ? 0 : p.n * p.ho * p.wo * p.cout);
  return w;
}

bool rule_epilogue_enabled() {  // DELTAJAX_RULE_EPILOGUE=0: two launches everywhere (for measurement); read once
  static const bool enabled = env_number("DELTAJAX_RULE_EPILOGUE") != 0;
  return enabled;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

int64_t conv_activation_workspace(const ConvParams& p) { return layout(p).size; }

cudaError_t conv_activation(ConvParams conv_p, ActivationParams act_p, cudaStream_t stream) {
  const Workspace w = layout(conv_p);
  float* pre = reinterpret_cast<float*>(conv_p.workspace + w.pre);
  if (rule_epilogue_enabled() && conv_takes_rule(conv_p) && act_p.y == nullptr && act_p.scale_group == 0 &&
      act_p.scale != nullptr && aligned16(act_p.acc) && aligned16(act_p.sent) && aligned16(act_p.out) &&
      aligned16(conv_p.workspace)) {
    EpilogueRule r;
    r.a = act_p;
    r.pending = conv_p.dtype == DType::kF32 ? static_cast<float*>(act_p.out) : pre;
    r.arrivals = conv_p.workspace + conv_list_size(conv_p);
    r.scores = reinterpret_cast<float*>(conv_p.workspace + w.scores);
    return conv_with_rule(conv_p, r, stream);
  }
  if (conv_p.dtype != DType::kF32) {
    conv_p.out = pre;
    conv_p.out_dtype = DType::kF32;
    act_p.x = pre;
    act_p.x_dtype = DType::kF32;
  }
  if (cudaError_t e = conv(conv_p, stream); e != cudaSuccess) return e;
  return activation(act_p, stream);
}

}  // namespace deltajax::cuda
