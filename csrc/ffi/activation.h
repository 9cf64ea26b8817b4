// deltajax_activation: x [N,H,W,C], x_mask [N,H,W] bool, acc, res [N,H,W,C] f32 (aliased to their results)
//   -> out [N,H,W,C] (x's dtype), out_mask [N,H,W] bool, acc, res.
// deltajax_add_activation: the same with a second addend y, y_mask after x_mask (f(x + y), fused).
// Attributes: act (ActKind), negative_slope, truncation (TruncMode), threshold.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error ActivationCommon(const std::string& op, typename B::Stream stream, ActivationParams& p,
                            const ffi::AnyBuffer& x, const ffi::AnyBuffer& acc, const ffi::AnyBuffer& res,
                            ffi::AnyBuffer& out, ffi::AnyBuffer& out_mask, ffi::AnyBuffer& acc_out,
                            ffi::AnyBuffer& res_out, int32_t act, float negative_slope, int32_t truncation,
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
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "res", res, res_out, dims_of(x), stream, &p.res));
  p.act = static_cast<ActKind>(act);
  p.negative_slope = negative_slope;
  p.truncation = static_cast<TruncMode>(truncation);
  p.threshold = threshold;
  p.x = x.untyped_data();
  p.out = out.untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask.untyped_data());
  return B::activation(p, stream);
}

template <class B>
ffi::Error Activation(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer acc,
                      ffi::AnyBuffer res, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                      ffi::Result<ffi::AnyBuffer> acc_out, ffi::Result<ffi::AnyBuffer> res_out, int32_t act,
                      float negative_slope, int32_t truncation, float threshold) {
  const std::string op = "activation";
  ActivationParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "x_mask", x, x_mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  p.x_mask = static_cast<const uint8_t*>(x_mask.untyped_data());
  return ActivationCommon<B>(op, stream, p, x, acc, res, *out, *out_mask, *acc_out, *res_out, act, negative_slope,
                             truncation, threshold);
}

template <class B>
ffi::Error AddActivation(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer y,
                         ffi::AnyBuffer y_mask, ffi::AnyBuffer acc, ffi::AnyBuffer res, ffi::Result<ffi::AnyBuffer> out,
                         ffi::Result<ffi::AnyBuffer> out_mask, ffi::Result<ffi::AnyBuffer> acc_out,
                         ffi::Result<ffi::AnyBuffer> res_out, int32_t act, float negative_slope, int32_t truncation,
                         float threshold) {
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
  return ActivationCommon<B>(op, stream, p, x, acc, res, *out, *out_mask, *acc_out, *res_out, act, negative_slope,
                             truncation, threshold);
}

template <class B>
auto ActivationBinding() {
  return B::Bind()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Attr<int32_t>("act")
      .template Attr<float>("negative_slope")
      .template Attr<int32_t>("truncation")
      .template Attr<float>("threshold");
}

template <class B>
auto AddActivationBinding() {
  return B::Bind()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Attr<int32_t>("act")
      .template Attr<float>("negative_slope")
      .template Attr<int32_t>("truncation")
      .template Attr<float>("threshold");
}

}  // namespace deltajax::ffi_ops
