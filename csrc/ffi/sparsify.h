// deltajax_sparsify: frame x [N,H,W,C], ref [N,H,W,C] f32 (aliased to the ref result)
//   -> values [N,H,W,C] (x's dtype), mask [N,H,W] bool, ref [N,H,W,C] f32, workspace [N,H,W] u8.
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

template <class B>
ffi::Error Sparsify(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer ref, ffi::Result<ffi::AnyBuffer> values,
                    ffi::Result<ffi::AnyBuffer> mask, ffi::Result<ffi::AnyBuffer> ref_out,
                    ffi::Result<ffi::AnyBuffer> workspace, float threshold, int32_t dilation) {
  const std::string op = "sparsify";
  SparsifyParams p;
  DELTAJAX_RETURN_IF_ERROR(activation_dtype(op, "x", x, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(nhwc(op, "x", x, &p.n, &p.h, &p.w, &p.c));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "ref", ref, ffi::DataType::F32, "float32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "ref", ref, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "values", *values, x, "x"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "values", *values, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "mask", *mask, ffi::DataType::PRED, "bool"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "mask", *mask, without_channels(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "ref_out", *ref_out, dims_of(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "workspace", *workspace, without_channels(x)));
  if (!(threshold >= 0.f)) return invalid(op, "attribute 'threshold' must be >= 0, got " + std::to_string(threshold));
  if (dilation < 0) return invalid(op, "attribute 'dilation' must be >= 0, got " + std::to_string(dilation));
  p.threshold = threshold;
  p.dilation = dilation;
  p.x = x.untyped_data();
  p.ref = static_cast<float*>(ref_out->untyped_data());
  if (ref_out->untyped_data() != ref.untyped_data())
    B::copy(p.ref, ref.untyped_data(), ref.size_bytes(), stream);  // not donated: XLA gave a fresh buffer
  p.values = values->untyped_data();
  p.mask = static_cast<uint8_t*>(mask->untyped_data());
  p.active = static_cast<uint8_t*>(workspace->untyped_data());
  return B::sparsify(p, stream);
}

template <class B>
auto SparsifyBinding() {
  return BindBuffers<B, 2, 4>().template Attr<float>("threshold").template Attr<int32_t>("dilation");
}

}  // namespace deltajax::ffi_ops
