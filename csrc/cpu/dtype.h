// Scalar conversions between the activation dtypes and float32 (round to nearest even).
// Everything here lives in an inline namespace named after the instruction set the including file is
// compiled for (DELTAJAX_CPU_ISA_NS, set by CMake for the files of csrc/cpu/isa/): inline functions
// compiled with AVX2 must never be merged by the linker with the baseline copies.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/params.h"

#ifndef DELTAJAX_CPU_ISA_NS
#define DELTAJAX_CPU_ISA_NS base
#endif

namespace deltajax::cpu {
inline namespace DELTAJAX_CPU_ISA_NS {

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline float to_float(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float to_float(f16 x) {
  _Float16 h;
  std::memcpy(&h, &x.bits, 2);
  return static_cast<float>(h);
}

template <typename T>
inline T from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
template <>
inline bf16 from_float<bf16>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
template <>
inline f16 from_float<f16>(float f) {
  _Float16 h = static_cast<_Float16>(f);
  f16 out;
  std::memcpy(&out.bits, &h, 2);
  return out;
}

// Calls fn(T{}) with T the C++ type of the activation dtype.
template <typename Fn>
inline void dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      fn(float{});
      return;
    case DType::kBF16:
      fn(bf16{});
      return;
    case DType::kF16:
      fn(f16{});
      return;
  }
}

}  // namespace DELTAJAX_CPU_ISA_NS
}  // namespace deltajax::cpu
