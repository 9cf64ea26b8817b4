// deltajax_densify: x [N,H,W,C], mask [N,H,W] bool, out [N,H,W,C] f32 (aliased to the result) -> out.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Densify(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer acc,
                   ffi::Result<ffi::AnyBuffer> acc_out) {
  const std::string op = "densify";
  DensifyParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "mask", x, mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "out", acc, *acc_out, dims_of(x), stream, &p.out));
  p.x = x.untyped_data();
  p.mask = static_cast<const uint8_t*>(mask.untyped_data());
  return B::densify(p, stream);
}

template <class B>
auto DensifyBinding() {
  return BindBuffers<B, 3, 1>();
}

}  // namespace deltajax::ffi_ops
