// Shared decoding and validation for the XLA FFI handlers of every backend.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/params.h"
#include "xla/ffi/api/ffi.h"

namespace deltajax::ffi_util {

namespace ffi = xla::ffi;

// "(3,)", "(1, 4, 5, 3)". No iostreams: on the GPU machine (jax 0.11.2 with its CUDA plugin loaded) an
// std::ostringstream in the CPU module crashed the process (SIGSEGV) on every error message that printed a shape.
inline std::string dims_str(ffi::AnyBuffer::Dimensions dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

inline std::string dims_str(const std::vector<int64_t>& dims) {
  return dims_str(ffi::AnyBuffer::Dimensions(dims.data(), dims.size()));
}

inline ffi::Error invalid(const std::string& op, const std::string& msg) {
  return ffi::Error::InvalidArgument("deltajax_" + op + ": " + msg);
}

// Maps the buffer's element type to an activation dtype, or reports it.
inline ffi::Error activation_dtype(const std::string& op, const char* arg, const ffi::AnyBuffer& b, DType* out) {
  switch (b.element_type()) {
    case ffi::DataType::F32:
      *out = DType::kF32;
      return ffi::Error::Success();
    case ffi::DataType::BF16:
      *out = DType::kBF16;
      return ffi::Error::Success();
    case ffi::DataType::F16:
      *out = DType::kF16;
      return ffi::Error::Success();
    default:
      return invalid(op, std::string("argument '") + arg + "' must be float32, bfloat16 or float16, got element type " +
                             std::to_string(static_cast<int>(b.element_type())));
  }
}

inline ffi::Error expect_type(const std::string& op, const char* arg, const ffi::AnyBuffer& b, ffi::DataType want,
                              const char* want_name) {
  if (b.element_type() == want) return ffi::Error::Success();
  return invalid(op, std::string("argument '") + arg + "' must be " + want_name + ", got element type " +
                         std::to_string(static_cast<int>(b.element_type())));
}

inline ffi::Error expect_same_type(const std::string& op, const char* arg, const ffi::AnyBuffer& b,
                                   const ffi::AnyBuffer& like, const char* like_name) {
  if (b.element_type() == like.element_type()) return ffi::Error::Success();
  return invalid(op, std::string("argument '") + arg + "' must have the element type of '" + like_name + "'");
}

inline ffi::Error expect_dims(const std::string& op, const char* arg, const ffi::AnyBuffer& b,
                              const std::vector<int64_t>& want) {
  auto dims = b.dimensions();
  bool ok = dims.size() == want.size();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = dims[i] == want[i];
  if (ok) return ffi::Error::Success();
  return invalid(op,
                 std::string("argument '") + arg + "' must have shape " + dims_str(want) + ", got " + dims_str(dims));
}

// Reads an NHWC activation shape; leading batch dims (from vmap) fold into N.
inline ffi::Error nhwc(const std::string& op, const char* arg, const ffi::AnyBuffer& b, int64_t* n, int64_t* h,
                       int64_t* w, int64_t* c) {
  auto dims = b.dimensions();
  if (dims.size() < 4)
    return invalid(op, std::string("argument '") + arg + "' must be NHWC (rank >= 4), got shape " + dims_str(dims));
  const size_t r = dims.size();
  *n = 1;
  for (size_t i = 0; i + 3 < r; ++i) *n *= dims[i];
  *h = dims[r - 3];
  *w = dims[r - 2];
  *c = dims[r - 1];
  return ffi::Error::Success();
}

// The same dims with the channel axis dropped (a mask's shape).
inline std::vector<int64_t> without_channels(const ffi::AnyBuffer& b) {
  auto dims = b.dimensions();
  return std::vector<int64_t>(dims.begin(), dims.end() - 1);
}

inline std::vector<int64_t> dims_of(const ffi::AnyBuffer& b) {
  auto dims = b.dimensions();
  return std::vector<int64_t>(dims.begin(), dims.end());
}

// A delta argument: values NHWC of an activation dtype, mask bool of its shape without channels.
inline ffi::Error delta_arg(const std::string& op, const char* name, const char* mask_name, const ffi::AnyBuffer& x,
                            const ffi::AnyBuffer& mask, int64_t* n, int64_t* h, int64_t* w, int64_t* c, DType* dtype) {
  ffi::Error err = activation_dtype(op, name, x, dtype);
  if (err.failure()) return err;
  err = nhwc(op, name, x, n, h, w, c);
  if (err.failure()) return err;
  err = expect_type(op, mask_name, mask, ffi::DataType::PRED, "bool");
  if (err.failure()) return err;
  return expect_dims(op, mask_name, mask, without_channels(x));
}

// An activation-dtype result of the given shape and the element type of `like`.
inline ffi::Error values_result(const std::string& op, const char* name, const ffi::AnyBuffer& out,
                                const ffi::AnyBuffer& like, const std::vector<int64_t>& dims) {
  ffi::Error err = expect_same_type(op, name, out, like, "x");
  if (err.failure()) return err;
  return expect_dims(op, name, out, dims);
}

// A bool mask result of the given shape.
inline ffi::Error mask_result(const std::string& op, const char* name, const ffi::AnyBuffer& out,
                              const std::vector<int64_t>& dims) {
  ffi::Error err = expect_type(op, name, out, ffi::DataType::PRED, "bool");
  if (err.failure()) return err;
  return expect_dims(op, name, out, dims);
}

// A float32 state updated in place: the argument `in` and the result `out` (aliased through
// input_output_aliases) must both have `dims`; when XLA did not alias them (state not donated) the input is
// copied to the result first. *ptr receives the result's data.
template <class B>
ffi::Error state_in_place(const std::string& op, const char* name, const ffi::AnyBuffer& in, ffi::AnyBuffer& out,
                          const std::vector<int64_t>& dims, typename B::Stream stream, float** ptr) {
  ffi::Error err = expect_type(op, name, in, ffi::DataType::F32, "float32");
  if (err.failure()) return err;
  err = expect_dims(op, name, in, dims);
  if (err.failure()) return err;
  err = expect_type(op, name, out, ffi::DataType::F32, "float32");
  if (err.failure()) return err;
  err = expect_dims(op, name, out, dims);
  if (err.failure()) return err;
  *ptr = static_cast<float*>(out.untyped_data());
  if (out.untyped_data() != in.untyped_data()) B::copy(*ptr, in.untyped_data(), in.size_bytes(), stream);
  return ffi::Error::Success();
}

// int32 list indices: the pixel count of one call must fit.
inline ffi::Error fits_int32(const std::string& op, int64_t pixels) {
  if (pixels < (int64_t(1) << 31) - 1) return ffi::Error::Success();
  return invalid(op, "too many pixels in one call (" + std::to_string(pixels) + "), at most 2^31 - 2");
}

#define DELTAJAX_RETURN_IF_ERROR(expr) \
  do {                                 \
    ::xla::ffi::Error _err = (expr);   \
    if (_err.failure()) return _err;   \
  } while (0)

// `binding` followed by kArgs AnyBuffer arguments, then kRets AnyBuffer results (every deltajax target takes
// buffers first, then attributes): BindBuffers<B, 3, 2>() is B::Bind() with three .Arg and two .Ret.
template <int kArgs, int kRets, class Binding>
auto WithBuffers(Binding binding) {  // Binding's methods take *this as an rvalue; it can't be copied or moved here
  static_assert(kArgs + kRets > 0, "a target takes at least one buffer");
  if constexpr (kArgs > 0) {
    if constexpr (kArgs == 1 && kRets == 0) {
      return std::move(binding).template Arg<ffi::AnyBuffer>();
    } else {
      return WithBuffers<kArgs - 1, kRets>(std::move(binding).template Arg<ffi::AnyBuffer>());
    }
  } else if constexpr (kRets == 1) {
    return std::move(binding).template Ret<ffi::AnyBuffer>();
  } else {
    return WithBuffers<0, kRets - 1>(std::move(binding).template Ret<ffi::AnyBuffer>());
  }
}

template <class B, int kArgs, int kRets>
auto BindBuffers() {
  return WithBuffers<kArgs, kRets>(B::Bind());
}

}  // namespace deltajax::ffi_util
