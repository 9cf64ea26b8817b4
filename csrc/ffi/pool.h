// deltajax_max_pool: x [N,H,W,C], mask [N,H,W], acc [N,H,W,C] f32 (aliased) -> out [N,Ho,Wo,C], out_mask, acc.
// deltajax_avg_pool: x, mask -> out, out_mask; attribute count_include_pad (0/1).
// Both: attributes kh, kw, stride_h, stride_w, pad_top, pad_left; Ho, Wo from the result shape.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

inline ffi::Error PoolCommon(const std::string& op, PoolParams& p, const ffi::AnyBuffer& x, const ffi::AnyBuffer& mask,
                             ffi::AnyBuffer& out, ffi::AnyBuffer& out_mask, int32_t kh, int32_t kw, int32_t stride_h,
                             int32_t stride_w, int32_t pad_top, int32_t pad_left) {
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "mask", x, mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  int64_t n_out, c_out;
  DELTAJAX_RETURN_IF_ERROR(nhwc(op, "out", out, &n_out, &p.ho, &p.wo, &c_out));
  std::vector<int64_t> out_dims = dims_of(x);
  out_dims[out_dims.size() - 3] = p.ho;
  out_dims[out_dims.size() - 2] = p.wo;
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", out, x, out_dims));
  DELTAJAX_RETURN_IF_ERROR(mask_result(op, "out_mask", out_mask, without_channels(out)));
  if (kh < 1 || kw < 1 || stride_h < 1 || stride_w < 1)
    return invalid(op, "window and strides must be >= 1, got window (" + std::to_string(kh) + ", " +
                           std::to_string(kw) + ") strides (" + std::to_string(stride_h) + ", " +
                           std::to_string(stride_w) + ")");
  if (pad_top < 0 || pad_left < 0 || pad_top >= kh || pad_left >= kw)
    return invalid(
        op, "pads must be in [0, window), got (" + std::to_string(pad_top) + ", " + std::to_string(pad_left) + ")");
  p.kh = kh;
  p.kw = kw;
  p.stride_h = stride_h;
  p.stride_w = stride_w;
  p.pad_top = pad_top;
  p.pad_left = pad_left;
  p.x = x.untyped_data();
  p.in_mask = static_cast<const uint8_t*>(mask.untyped_data());
  p.out = out.untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask.untyped_data());
  return ffi::Error::Success();
}

template <class B>
ffi::Error MaxPool(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer acc,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                   ffi::Result<ffi::AnyBuffer> acc_out, int32_t kh, int32_t kw, int32_t stride_h, int32_t stride_w,
                   int32_t pad_top, int32_t pad_left) {
  const std::string op = "max_pool";
  PoolParams p;
  DELTAJAX_RETURN_IF_ERROR(PoolCommon(op, p, x, mask, *out, *out_mask, kh, kw, stride_h, stride_w, pad_top, pad_left));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "acc", acc, *acc_out, dims_of(x), stream, &p.acc));
  return B::pool(p, stream);
}

template <class B>
ffi::Error AvgPool(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Result<ffi::AnyBuffer> out_mask, int32_t kh, int32_t kw, int32_t stride_h, int32_t stride_w,
                   int32_t pad_top, int32_t pad_left, int32_t count_include_pad) {
  const std::string op = "avg_pool";
  PoolParams p;
  DELTAJAX_RETURN_IF_ERROR(PoolCommon(op, p, x, mask, *out, *out_mask, kh, kw, stride_h, stride_w, pad_top, pad_left));
  p.count_include_pad = count_include_pad != 0;
  return B::pool(p, stream);
}

template <class B>
auto MaxPoolBinding() {
  return BindBuffers<B, 3, 3>()
      .template Attr<int32_t>("kh")
      .template Attr<int32_t>("kw")
      .template Attr<int32_t>("stride_h")
      .template Attr<int32_t>("stride_w")
      .template Attr<int32_t>("pad_top")
      .template Attr<int32_t>("pad_left");
}

template <class B>
auto AvgPoolBinding() {
  return BindBuffers<B, 2, 2>()
      .template Attr<int32_t>("kh")
      .template Attr<int32_t>("kw")
      .template Attr<int32_t>("stride_h")
      .template Attr<int32_t>("stride_w")
      .template Attr<int32_t>("pad_top")
      .template Attr<int32_t>("pad_left")
      .template Attr<int32_t>("count_include_pad");
}

}  // namespace deltajax::ffi_ops
