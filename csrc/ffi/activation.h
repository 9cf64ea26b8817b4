// deltajax_activation: x [N,H,W,C], x_mask [N,H,W] bool, scale [C] f32 (x's update is x * scale),
//   acc, sent [N,H,W,C] f32 (aliased to their results) -> out [N,H,W,C] (x's dtype), out_mask [N,H,W] bool, acc, sent.
// deltajax_prelu: x, x_mask, scale, slopes [C] f32 (act must be prelu), acc, sent -> the same as activation.
// deltajax_add_activation: x, x_mask, y, y_mask (f of the update x + y, fused; no scale), acc, sent -> the same.
// Attributes: act (ActKind), negative_slope, truncation (TruncMode), threshold.
#pragma once

#include <utility>
#include <vector>

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

// Reads prelu's per-channel slopes [c] float32 into p.slopes.
inline ffi::Error SetSlopes(const std::string& op, const ffi::AnyBuffer& slopes, int64_t c, ActivationParams& p) {
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "slopes", slopes, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "slopes", slopes, {c}));
  p.slopes = static_cast<const float*>(slopes.untyped_data());
  return ffi::Error::Success();
}

// Validates the activation's attributes, results and state (aliased in place) and fills p; launches nothing.
template <class B>
ffi::Error ActivationSetup(const std::string& op, typename B::Stream stream, ActivationParams& p,
                           const ffi::AnyBuffer& x, const ffi::AnyBuffer& acc, const ffi::AnyBuffer& sent,
                           ffi::AnyBuffer& out, ffi::AnyBuffer& out_mask, ffi::AnyBuffer& acc_out,
                           ffi::AnyBuffer& sent_out, int32_t act, float negative_slope, int32_t truncation,
                           float threshold) {
  if (act < 0 || act >= kActKindCount)
    return invalid(op, "attribute 'act' must be an ActKind in [0, " + std::to_string(kActKindCount) + "), got " +
                           std::to_string(act));
  if (truncation < 0 || truncation > 3)
    return invalid(
        op, "attribute 'truncation' must be 0 (max), 1 (l2), 2 (rms) or 3 (none), got " + std::to_string(truncation));
  if (!(threshold >= 0.f)) return invalid(op, "attribute 'threshold' must be >= 0, got " + std::to_string(threshold));
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", out, x, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(mask_result(op, "out_mask", out_mask, without_channels(x)));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "acc", acc, acc_out, dims_of(x), stream, &p.acc));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "sent", sent, sent_out, dims_of(x), stream, &p.sent));
  p.act = static_cast<ActKind>(act);
  if ((p.act == ActKind::kPRelu) != (p.slopes != nullptr))
    return invalid(op, "attribute 'act' must be prelu (" + std::to_string(static_cast<int>(ActKind::kPRelu)) +
                           ") exactly when per-channel slopes are given (the prelu target), got " +
                           std::to_string(act));
  p.negative_slope = negative_slope;
  p.truncation = static_cast<TruncMode>(truncation);
  p.threshold = threshold;
  p.x = x.untyped_data();
  p.x_dtype = p.dtype;
  p.out = out.untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask.untyped_data());
  return ffi::Error::Success();
}

// The activation of x times a per-channel scale; slopes: prelu's [C] float32 buffer, or nullptr.
template <class B>
ffi::Error ScaledActivation(const std::string& op, typename B::Stream stream, const ffi::AnyBuffer& x,
                            const ffi::AnyBuffer& x_mask, const ffi::AnyBuffer& scale, const ffi::AnyBuffer* slopes,
                            const ffi::AnyBuffer& acc, const ffi::AnyBuffer& sent, ffi::AnyBuffer& out,
                            ffi::AnyBuffer& out_mask, ffi::AnyBuffer& acc_out, ffi::AnyBuffer& sent_out, int32_t act,
                            float negative_slope, int32_t truncation, float threshold) {
  ActivationParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "x_mask", x, x_mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "scale", scale, ffi::DataType::F32, "float32"));
  // [C], or under vmap (batch dims ahead of NHWC, folded into N) one row per batch element: [B..., C].
  auto x_dims = x.dimensions();
  std::vector<int64_t> batched(x_dims.begin(), x_dims.end() - 4);
  batched.push_back(p.c);
  if (scale.dimensions().size() > 1) {
    DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "scale", scale, batched));
    p.scale_group = x_dims[x_dims.size() - 4] * p.h * p.w;
  } else {
    DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "scale", scale, {p.c}));
  }
  if (slopes != nullptr) DELTAJAX_RETURN_IF_ERROR(SetSlopes(op, *slopes, p.c, p));
  p.x_mask = static_cast<const uint8_t*>(x_mask.untyped_data());
  p.scale = static_cast<const float*>(scale.untyped_data());
  DELTAJAX_RETURN_IF_ERROR(ActivationSetup<B>(op, stream, p, x, acc, sent, out, out_mask, acc_out, sent_out, act,
                                              negative_slope, truncation, threshold));
  return B::activation(p, stream);
}

template <class B>
ffi::Error Activation(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer scale,
                      ffi::AnyBuffer acc, ffi::AnyBuffer sent, ffi::Result<ffi::AnyBuffer> out,
                      ffi::Result<ffi::AnyBuffer> out_mask, ffi::Result<ffi::AnyBuffer> acc_out,
                      ffi::Result<ffi::AnyBuffer> sent_out, int32_t act, float negative_slope, int32_t truncation,
                      float threshold) {
  return ScaledActivation<B>("activation", stream, x, x_mask, scale, nullptr, acc, sent, *out, *out_mask, *acc_out,
                             *sent_out, act, negative_slope, truncation, threshold);
}

template <class B>
ffi::Error PRelu(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer scale,
                 ffi::AnyBuffer slopes, ffi::AnyBuffer acc, ffi::AnyBuffer sent, ffi::Result<ffi::AnyBuffer> out,
                 ffi::Result<ffi::AnyBuffer> out_mask, ffi::Result<ffi::AnyBuffer> acc_out,
                 ffi::Result<ffi::AnyBuffer> sent_out, int32_t act, float negative_slope, int32_t truncation,
                 float threshold) {
  return ScaledActivation<B>("prelu", stream, x, x_mask, scale, &slopes, acc, sent, *out, *out_mask, *acc_out,
                             *sent_out, act, negative_slope, truncation, threshold);
}

template <class B>
ffi::Error AddActivation(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer y,
                         ffi::AnyBuffer y_mask, ffi::AnyBuffer acc, ffi::AnyBuffer sent,
                         ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                         ffi::Result<ffi::AnyBuffer> acc_out, ffi::Result<ffi::AnyBuffer> sent_out, int32_t act,
                         float negative_slope, int32_t truncation, float threshold) {
  const std::string op = "add_activation";
  ActivationParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "x_mask", x, x_mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "y", y, x, "x"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "y", y, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "y_mask", y_mask, ffi::DataType::PRED, "bool"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "y_mask", y_mask, without_channels(x)));
  p.x_mask = static_cast<const uint8_t*>(x_mask.untyped_data());
  p.y = y.untyped_data();
  p.y_mask = static_cast<const uint8_t*>(y_mask.untyped_data());
  DELTAJAX_RETURN_IF_ERROR(ActivationSetup<B>(op, stream, p, x, acc, sent, *out, *out_mask, *acc_out, *sent_out, act,
                                              negative_slope, truncation, threshold));
  return B::activation(p, stream);
}

// The attributes both activation targets share, after their buffers.
template <class Binding>
auto WithActivationAttrs(Binding binding) {  // Binding's methods take *this as an rvalue
  return std::move(binding)
      .template Attr<int32_t>("act")
      .template Attr<float>("negative_slope")
      .template Attr<int32_t>("truncation")
      .template Attr<float>("threshold");
}

template <class B>
auto ActivationBinding() {  // x, x_mask, scale, acc, sent -> out, out_mask, acc, sent
  return WithActivationAttrs(BindBuffers<B, 5, 4>());
}

template <class B>
auto PReluBinding() {  // x, x_mask, scale, slopes, acc, sent -> out, out_mask, acc, sent
  return WithActivationAttrs(BindBuffers<B, 6, 4>());
}

template <class B>
auto AddActivationBinding() {  // x, x_mask, y, y_mask, acc, sent -> out, out_mask, acc, sent
  return WithActivationAttrs(BindBuffers<B, 6, 4>());
}

}  // namespace deltajax::ffi_ops
