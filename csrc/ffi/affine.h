// deltajax_affine: x [N,H,W,C], mask [N,H,W] bool, mul [C] f32 -> out [N,H,W,C] (x * mul at active pixels).
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Affine(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer mul,
                  ffi::Result<ffi::AnyBuffer> out) {
  const std::string op = "affine";
  AffineParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "mask", x, mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "mul", mul, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "mul", mul, {p.c}));
  DELTAJAX_RETURN_IF_ERROR(values_result(op, "out", *out, x, dims_of(x)));
  p.x = x.untyped_data();
  p.mask = static_cast<const uint8_t*>(mask.untyped_data());
  p.mul = static_cast<const float*>(mul.untyped_data());
  p.out = out->untyped_data();
  return B::affine(p, stream);
}

template <class B>
auto AffineBinding() {
  return BindBuffers<B, 3, 1>();
}

}  // namespace deltajax::ffi_ops
