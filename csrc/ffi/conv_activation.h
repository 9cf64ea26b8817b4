// deltajax_conv_activation: a delta convolution and the activation rule on its output in one pass.
//   values [N,H,W,Cin], mask [N,H,W] bool, kernel [kh,kw,Cin/g,Cout] (values' dtype), scale [Cout] f32 (the conv
//   output's update is multiplied by it: a batch-norm scale), acc, sent [N,Ho,Wo,Cout] f32 (aliased to their results)
//   -> out [N,Ho,Wo,Cout] (values' dtype), out_mask [N,Ho,Wo] bool (the rule's: kept pixels), acc, sent,
//      conv_mask [N,Ho,Wo] bool (the convolution's output mask), workspace int32 [B::conv_activation_workspace]:
//      the convolution's lists and counts (conv_list_size), then whatever the backend needs (CUDA, for 16-bit
//      values: the float32 pre-activation, [N,Ho,Wo,Cout] at the next 16-byte boundary).
// deltajax_conv_prelu: values, mask, kernel, scale, slopes [Cout] f32 (act must be prelu), acc, sent -> the same.
// Attributes: the convolution's (conv.h), then the activation's (activation.h). The activation rule takes the
// convolution's float32 result, never rounded to the values' dtype: a 16-bit stream keeps float32 accuracy up to
// the activation's own emitted output (deltajax/ops/fused.py computes the same in its reference).
#pragma once

#include "ffi/activation.h"
#include "ffi/conv.h"

namespace deltajax::ffi_ops {

// The fused op; slopes: prelu's [Cout] float32 buffer, or nullptr.
template <class B>
ffi::Error ScaledConvActivation(const std::string& op, typename B::Stream stream, const ffi::AnyBuffer& x,
                                const ffi::AnyBuffer& mask, const ffi::AnyBuffer& kernel, const ffi::AnyBuffer& scale,
                                const ffi::AnyBuffer* slopes, const ffi::AnyBuffer& acc, const ffi::AnyBuffer& sent,
                                ffi::AnyBuffer& out, ffi::AnyBuffer& out_mask, ffi::AnyBuffer& acc_out,
                                ffi::AnyBuffer& sent_out, ffi::AnyBuffer& conv_mask, ffi::AnyBuffer& workspace,
                                int32_t stride_h, int32_t stride_w, int32_t pad_top, int32_t pad_left,
                                int32_t lhs_dil_h, int32_t lhs_dil_w, int32_t rhs_dil_h, int32_t rhs_dil_w,
                                int32_t groups, int32_t precision, int32_t act, float negative_slope,
                                int32_t truncation, float threshold) {
  ConvParams cp;
  DELTAJAX_RETURN_IF_ERROR(ConvSetup(op, x, mask, kernel, &out, &conv_mask, stride_h, stride_w, pad_top, pad_left,
                                     lhs_dil_h, lhs_dil_w, rhs_dil_h, rhs_dil_w, groups, precision, cp));
  DELTAJAX_RETURN_IF_ERROR(ConvWorkspace(op, workspace, B::conv_activation_workspace(cp), cp));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "scale", scale, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "scale", scale, {cp.cout}));
  ActivationParams ap;
  ap.n = cp.n;
  ap.h = cp.ho;
  ap.w = cp.wo;
  ap.c = cp.cout;
  ap.dtype = cp.dtype;
  ap.x_mask = cp.out_mask;
  ap.scale = static_cast<const float*>(scale.untyped_data());
  if (slopes != nullptr) DELTAJAX_RETURN_IF_ERROR(SetSlopes(op, *slopes, cp.cout, ap));
  // The rule reads the conv's output and writes its own in place: `out` is both its x and its out.
  DELTAJAX_RETURN_IF_ERROR(ActivationSetup<B>(op, stream, ap, out, acc, sent, out, out_mask, acc_out, sent_out, act,
                                              negative_slope, truncation, threshold));
  return B::conv_activation(cp, ap, stream);
}

template <class B>
ffi::Error ConvActivation(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer kernel,
                          ffi::AnyBuffer scale, ffi::AnyBuffer acc, ffi::AnyBuffer sent,
                          ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                          ffi::Result<ffi::AnyBuffer> acc_out, ffi::Result<ffi::AnyBuffer> sent_out,
                          ffi::Result<ffi::AnyBuffer> conv_mask, ffi::Result<ffi::AnyBuffer> workspace,
                          int32_t stride_h, int32_t stride_w, int32_t pad_top, int32_t pad_left, int32_t lhs_dil_h,
                          int32_t lhs_dil_w, int32_t rhs_dil_h, int32_t rhs_dil_w, int32_t groups, int32_t precision,
                          int32_t act, float negative_slope, int32_t truncation, float threshold) {
  return ScaledConvActivation<B>("conv_activation", stream, x, mask, kernel, scale, nullptr, acc, sent, *out, *out_mask,
                                 *acc_out, *sent_out, *conv_mask, *workspace, stride_h, stride_w, pad_top, pad_left,
                                 lhs_dil_h, lhs_dil_w, rhs_dil_h, rhs_dil_w, groups, precision, act, negative_slope,
                                 truncation, threshold);
}

template <class B>
ffi::Error ConvPRelu(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer kernel,
                     ffi::AnyBuffer scale, ffi::AnyBuffer slopes, ffi::AnyBuffer acc, ffi::AnyBuffer sent,
                     ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                     ffi::Result<ffi::AnyBuffer> acc_out, ffi::Result<ffi::AnyBuffer> sent_out,
                     ffi::Result<ffi::AnyBuffer> conv_mask, ffi::Result<ffi::AnyBuffer> workspace, int32_t stride_h,
                     int32_t stride_w, int32_t pad_top, int32_t pad_left, int32_t lhs_dil_h, int32_t lhs_dil_w,
                     int32_t rhs_dil_h, int32_t rhs_dil_w, int32_t groups, int32_t precision, int32_t act,
                     float negative_slope, int32_t truncation, float threshold) {
  return ScaledConvActivation<B>("conv_prelu", stream, x, mask, kernel, scale, &slopes, acc, sent, *out, *out_mask,
                                 *acc_out, *sent_out, *conv_mask, *workspace, stride_h, stride_w, pad_top, pad_left,
                                 lhs_dil_h, lhs_dil_w, rhs_dil_h, rhs_dil_w, groups, precision, act, negative_slope,
                                 truncation, threshold);
}

template <class B>
auto ConvActivationBinding() {  // values, mask, kernel, scale, acc, sent -> out, out_mask, acc, sent, conv_mask, ws
  return WithActivationAttrs(WithConvAttrs(BindBuffers<B, 6, 6>()));
}

template <class B>
auto ConvPReluBinding() {  // values, mask, kernel, scale, slopes, acc, sent -> the same as conv_activation
  return WithActivationAttrs(WithConvAttrs(BindBuffers<B, 7, 6>()));
}

}  // namespace deltajax::ffi_ops
