// deltajax_conv: values [N,H,W,Cin], mask [N,H,W] bool, kernel [kh,kw,Cin/g,Cout] (values' dtype)
//   -> out [N,Ho,Wo,Cout], out_mask [N,Ho,Wo] bool, workspace [conv_list_size] int32 (common/params.h).
#pragma once

#include "ffi/common.h"

namespace deltajax::ffi_ops {

namespace ffi = xla::ffi;
using namespace deltajax::ffi_util;

// Validates a delta convolution's buffers (all but the workspace: ConvWorkspace) and attributes and fills p.
inline ffi::Error ConvSetup(const std::string& op, const ffi::AnyBuffer& x, const ffi::AnyBuffer& mask,
                            const ffi::AnyBuffer& kernel, ffi::AnyBuffer* out, ffi::AnyBuffer* out_mask,
                            int32_t stride_h, int32_t stride_w, int32_t pad_top, int32_t pad_left, int32_t lhs_dil_h,
                            int32_t lhs_dil_w, int32_t rhs_dil_h, int32_t rhs_dil_w, int32_t groups, int32_t precision,
                            ConvParams& p) {
  DELTAJAX_RETURN_IF_ERROR(activation_dtype(op, "x", x, &p.dtype));
  DELTAJAX_RETURN_IF_ERROR(nhwc(op, "x", x, &p.n, &p.h, &p.w, &p.cin));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "mask", mask, ffi::DataType::PRED, "bool"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "mask", mask, without_channels(x)));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "kernel", kernel, x, "x"));
  auto k = kernel.dimensions();
  if (k.size() != 4) return invalid(op, "argument 'kernel' must be HWIO (rank 4), got shape " + dims_str(k));
  if (groups < 1 || k[2] * groups != p.cin || k[3] % groups != 0)
    return invalid(op, "argument 'kernel' " + dims_str(k) + " does not fit " + std::to_string(p.cin) +
                           " input channels in " + std::to_string(groups) + " groups");
  int64_t n_out;
  DELTAJAX_RETURN_IF_ERROR(nhwc(op, "out", *out, &n_out, &p.ho, &p.wo, &p.cout));
  if (n_out != p.n || p.cout != k[3])
    return invalid(op, "result 'out' has shape " + dims_str(out->dimensions()) + ", which does not match x " +
                           dims_str(x.dimensions()) + " and kernel " + dims_str(k));
  DELTAJAX_RETURN_IF_ERROR(expect_same_type(op, "out", *out, x, "x"));
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "out_mask", *out_mask, ffi::DataType::PRED, "bool"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "out_mask", *out_mask, without_channels(*out)));
  DELTAJAX_RETURN_IF_ERROR(fits_int32(op, p.n * p.ho * p.wo));
  if (stride_h < 1 || stride_w < 1 || lhs_dil_h < 1 || lhs_dil_w < 1 || rhs_dil_h < 1 || rhs_dil_w < 1)
    return invalid(op, "strides and dilations must be >= 1");
  if (precision != 0 && precision != 1)
    return invalid(op, "attribute 'precision' must be 0 (default) or 1 (highest), got " + std::to_string(precision));
  p.kh = static_cast<int>(k[0]);
  p.kw = static_cast<int>(k[1]);
  p.stride_h = stride_h;
  p.stride_w = stride_w;
  p.pad_top = pad_top;
  p.pad_left = pad_left;
  p.lhs_dil_h = lhs_dil_h;
  p.lhs_dil_w = lhs_dil_w;
  p.rhs_dil_h = rhs_dil_h;
  p.rhs_dil_w = rhs_dil_w;
  p.groups = groups;
  p.precision = precision;
  p.x = x.untyped_data();
  p.in_mask = static_cast<const uint8_t*>(mask.untyped_data());
  p.kernel = kernel.untyped_data();
  p.out = out->untyped_data();
  p.out_mask = static_cast<uint8_t*>(out_mask->untyped_data());
  p.out_dtype = p.dtype;
  return ffi::Error::Success();
}

// Checks that the workspace is `size` int32 elements (at least the active output pixel and tile lists and their
// counts: conv_list_size) and sets p.workspace.
inline ffi::Error ConvWorkspace(const std::string& op, ffi::AnyBuffer& workspace, int64_t size, ConvParams& p) {
  DELTAJAX_RETURN_IF_ERROR(expect_type(op, "workspace", workspace, ffi::DataType::S32, "int32"));
  DELTAJAX_RETURN_IF_ERROR(expect_dims(op, "workspace", workspace, {size}));
  p.workspace = static_cast<int32_t*>(workspace.untyped_data());
  return ffi::Error::Success();
}

template <class B>
ffi::Error Conv(typename B::Stream stream, ffi::AnyBuffer x, ffi::AnyBuffer mask, ffi::AnyBuffer kernel,
                ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> out_mask,
                ffi::Result<ffi::AnyBuffer> workspace, int32_t stride_h, int32_t stride_w, int32_t pad_top,
                int32_t pad_left, int32_t lhs_dil_h, int32_t lhs_dil_w, int32_t rhs_dil_h, int32_t rhs_dil_w,
                int32_t groups, int32_t precision) {
  ConvParams p;
  DELTAJAX_RETURN_IF_ERROR(ConvSetup("conv", x, mask, kernel, &*out, &*out_mask, stride_h, stride_w, pad_top, pad_left,
                                     lhs_dil_h, lhs_dil_w, rhs_dil_h, rhs_dil_w, groups, precision, p));
  DELTAJAX_RETURN_IF_ERROR(ConvWorkspace("conv", *workspace, conv_list_size(p), p));
  return B::conv(p, stream);
}

// The convolution's attributes, after the buffers.
template <class Binding>
auto WithConvAttrs(Binding binding) {  // Binding's methods take *this as an rvalue
  return std::move(binding)
      .template Attr<int32_t>("stride_h")
      .template Attr<int32_t>("stride_w")
      .template Attr<int32_t>("pad_top")
      .template Attr<int32_t>("pad_left")
      .template Attr<int32_t>("lhs_dil_h")
      .template Attr<int32_t>("lhs_dil_w")
      .template Attr<int32_t>("rhs_dil_h")
      .template Attr<int32_t>("rhs_dil_w")
      .template Attr<int32_t>("groups")
      .template Attr<int32_t>("precision");
}

template <class B>
auto ConvBinding() {
  return WithConvAttrs(BindBuffers<B, 3, 3>());
}

}  // namespace deltajax::ffi_ops
