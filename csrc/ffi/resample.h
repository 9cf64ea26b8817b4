// deltajax_resample: x [N,H,W,C], mask [N,H,W], taps_h [Ho,2] s32, weights_h [Ho,2] f32, taps_w [Wo,2] s32,
//   weights_w [Wo,2] f32 -> out [N,Ho,Wo,C], out_mask [N,Ho,Wo]. Nearest and bilinear upsampling.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Resample(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer taps_h,
                    ffi::AnyBuffer weights_h, ffi::AnyBuffer taps_w, ffi::AnyBuffer weights_w,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask) {
  const std::string op = "resample";
  ResampleParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "mask", x, mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  int64_t n_out, c_out;
  DELTAJAX_RETURN_IF_ERROR(nhwc(op, "out", *out, &n_out, &p.ho, &p.wo, &c_out));
  std::vector<int64_t> out_dims = dims_of(x);
  out_dims[out_dims.size() - 3] = p.ho;
  out_dims[out_dims.size() - 2] = p.wo;
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", *out, x, out_dims));
  DELTAJAX_RETURN_IF_ERROR(mask_result(op, "out_mask", *out_mask, without_channels(*out)));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "taps_h", taps_h, ffi::DataType::S32, "int32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "taps_h", taps_h, {p.ho, 2}));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "weights_h", weights_h, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "weights_h", weights_h, {p.ho, 2}));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "taps_w", taps_w, ffi::DataType::S32, "int32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "taps_w", taps_w, {p.wo, 2}));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "weights_w", weights_w, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "weights_w", weights_w, {p.wo, 2}));
  p.x = x.untyped_data();
  p.in_mask = static_cast<const uint8_t*>(mask.untyped_data());
  p.taps_h = static_cast<const int32_t*>(taps_h.untyped_data());
  p.weights_h = static_cast<const float*>(weights_h.untyped_data());
  p.taps_w = static_cast<const int32_t*>(taps_w.untyped_data());
  p.weights_w = static_cast<const float*>(weights_w.untyped_data());
  p.out = out->untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask->untyped_data());
  return B::resample(p, stream);
}

template <class B>
auto ResampleBinding() {
  return BindBuffers<B, 6, 2>();
}

}  // namespace deltajax::ffi_ops
