// A delta convolution and the activation rule on its float32 result, as two launches on one stream: the
// convolution writes its result in float32 (16-bit values: into the workspace after the pixel list; float32
// values: into `out`, which the rule then overwrites in place), and the activation kernel reads it from there.
// The 16-bit result is never rounded before the rule accumulates it, as on the CPU, whose kernel runs the rule
// in the convolution's epilogue.
#include "cuda/conv.h"
#include "cuda/pixelwise.h"

namespace deltajax::cuda {
namespace {

// Int32 elements before the float32 pre-activation: the pixel list and its count, to a 16-byte boundary.
int64_t preactivation_offset(const ConvParams& p) { return (conv_list_size(p) + 3) / 4 * 4; }

}  // namespace

int64_t conv_activation_workspace(const ConvParams& p) {
  if (p.dtype == DType::kF32) return conv_list_size(p);
  return preactivation_offset(p) + p.n * p.ho * p.wo * p.cout;
}

cudaError_t conv_activation(ConvParams conv_p, ActivationParams act_p, cudaStream_t stream) {
  if (conv_p.dtype != DType::kF32) {
    float* pre = reinterpret_cast<float*>(conv_p.workspace + preactivation_offset(conv_p));
    conv_p.out = pre;
    conv_p.out_dtype = DType::kF32;
    act_p.x = pre;
    act_p.x_dtype = DType::kF32;
  }
  if (cudaError_t e = conv(conv_p, stream); e != cudaSuccess) return e;
  return activation(act_p, stream);
}

}  // namespace deltajax::cuda
