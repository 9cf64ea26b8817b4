// deltajax_add: x [N,H,W,C], x_mask [N,H,W] bool, y, y_mask (same shapes) -> out [N,H,W,C], out_mask.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Add(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer y,
               ffi::AnyBuffer y_mask, ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask) {
  const std::string op = "add";
  AddParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "x_mask", x, x_mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "y", y, x, "x"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "y", y, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "y_mask", y_mask, ffi::DataType::PRED, "bool"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "y_mask", y_mask, without_channels(x)));
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", *out, x, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(mask_result(op, "out_mask", *out_mask, without_channels(x)));
  p.x = x.untyped_data();
  p.x_mask = static_cast<const uint8_t*>(x_mask.untyped_data());
  p.y = y.untyped_data();
  p.y_mask = static_cast<const uint8_t*>(y_mask.untyped_data());
  p.out = out->untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask->untyped_data());
  return B::add(p, stream);
}

template <class B>
auto AddBinding() {
  return BindBuffers<B, 4, 2>();
}

}  // namespace deltajax::ffi_ops
