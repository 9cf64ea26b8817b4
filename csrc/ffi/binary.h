// deltajax_binary: x [N,H,W,C], x_mask [N,H,W], y [N,H,W,C] or [N,1,1,C], y_mask (y's pixel shape),
//   acc_x (x's shape), acc_y (y's shape) f32 aliased to their results
//   -> out [N,H,W,C], out_mask [N,H,W], acc_x, acc_y. Attribute op: BinaryOp.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Binary(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer x_mask, ffi::AnyBuffer y,
                  ffi::AnyBuffer y_mask, ffi::AnyBuffer acc_x, ffi::AnyBuffer acc_y, ffi::Result<ffi::AnyBuffer> out,
                  ffi::Result<ffi::AnyBuffer> out_mask, ffi::Result<ffi::AnyBuffer> acc_x_out,
                  ffi::Result<ffi::AnyBuffer> acc_y_out, int32_t binary_op) {
  const std::string op = "binary";
  BinaryParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "x_mask", x, x_mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  int64_t yn, yh, yw, yc;
  DType ydt;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "y", "y_mask", y, y_mask, &yn, &yh, &yw, &yc, &ydt));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "y", y, x, "x"));
  std::vector<int64_t> y_dims = dims_of(x);
  if (yh == 1 && yw == 1 && (p.h != 1 || p.w != 1)) {
    p.y_broadcast = true;
    y_dims[y_dims.size() - 3] = y_dims[y_dims.size() - 2] = 1;
  }
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "y", y, y_dims));
  if (binary_op != 0 && binary_op != 1)
    return invalid(op, "attribute 'op' must be 0 (multiply) or 1 (maximum), got " + std::to_string(binary_op));
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", *out, x, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(mask_result(op, "out_mask", *out_mask, without_channels(x)));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "acc_x", acc_x, *acc_x_out, dims_of(x), stream, &p.acc_x));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "acc_y", acc_y, *acc_y_out, y_dims, stream, &p.acc_y));
  p.op = static_cast<BinaryOp>(binary_op);
  p.x = x.untyped_data();
  p.x_mask = static_cast<const uint8_t*>(x_mask.untyped_data());
  p.y = y.untyped_data();
  p.y_mask = static_cast<const uint8_t*>(y_mask.untyped_data());
  p.out = out->untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask->untyped_data());
  return B::binary(p, stream);
}

template <class B>
auto BinaryBinding() {
  return BindBuffers<B, 6, 4>().template Attr<int32_t>("op");
}

}  // namespace deltajax::ffi_ops
