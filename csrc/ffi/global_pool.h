// deltajax_global_avg_pool: x [N,H,W,C], mask [N,H,W], acc [N,C] f32 (aliased) -> acc (+= active sum / (H*W)).
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error GlobalAvgPool(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer acc,
                         ffi::Result<ffi::AnyBuffer> acc_out) {
  const std::string op = "global_avg_pool";
  GlobalPoolParams p;
  DELTAJAX_RETURN_IF_ERROR(delta_arg(op, "x", "mask", x, mask, &p.n, &p.h, &p.w, &p.c, &p.dtype));
  std::vector<int64_t> acc_dims = dims_of(x);
  acc_dims.erase(acc_dims.end() - 3, acc_dims.end() - 1);
  DELTAJAX_RETURN_IF_ERROR(state_in_place<B>(op, "acc", acc, *acc_out, acc_dims, stream, &p.acc));
  p.x = x.untyped_data();
  p.mask = static_cast<const uint8_t*>(mask.untyped_data());
  return B::global_pool(p, stream);
}

template <class B>
auto GlobalAvgPoolBinding() {
  return BindBuffers<B, 3, 1>();
}

}  // namespace deltajax::ffi_ops
