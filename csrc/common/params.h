// Plain parameter structs shared by the CPU and CUDA kernels.
// Kernels see only these: no XLA, no Python. Layouts are NHWC, masks [N, H, W]
// (one byte per pixel), state buffers float32.
#pragma once

#include <cstdint>

namespace deltajax {

// Element type of activations (values); state is always float32.
enum class DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

// Sparsify: a dense frame against the reference -> delta + mask; ref updated in place.
struct SparsifyParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  float threshold = 0.f;  // active when max_c |x - ref| > threshold
  int dilation = 0;       // grow the activity map by this many pixels per side
  DType dtype = DType::kF32;
  const void* x = nullptr;    // [N, H, W, C] dtype
  float* ref = nullptr;       // [N, H, W, C] float32, read and updated in place
  void* values = nullptr;     // [N, H, W, C] dtype, written at active pixels only
  uint8_t* mask = nullptr;    // [N, H, W]
  uint8_t* active = nullptr;  // [N, H, W] workspace: the activity map before dilation
};

}  // namespace deltajax

namespace deltajax {

// Convolution of a delta (linear, no bias): out = conv(values masked by in_mask), computed only at
// active output pixels; out_mask = OR of in_mask over each output pixel's receptive field.
// Generalised like XLA's conv_general_dilated: lhs_dilation > 1 is a transposed convolution.
// Output pixel (oy, ox), tap (ky, kx) reads input row iy = (oy*stride_h + ky*rhs_dil_h - pad_top) / lhs_dil_h
// when that division is exact and 0 <= iy < h (likewise for columns); otherwise the tap reads zero.
struct ConvParams {
  int64_t n = 0, h = 0, w = 0, cin = 0;  // input [N, H, W, Cin]
  int64_t ho = 0, wo = 0, cout = 0;      // output [N, Ho, Wo, Cout]
  int kh = 1, kw = 1;                    // kernel [kh, kw, Cin / groups, Cout] (HWIO)
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;  // low pads (high pads follow from the output size)
  int lhs_dil_h = 1, lhs_dil_w = 1;
  int rhs_dil_h = 1, rhs_dil_w = 1;
  int groups = 1;
  int precision = 0;  // 0: default (TF32 allowed on tensor cores for float32), 1: highest (full float32)
  DType dtype = DType::kF32;
  const void* x = nullptr;           // [N, H, W, Cin] dtype; unspecified where in_mask is 0
  const uint8_t* in_mask = nullptr;  // [N, H, W]
  const void* kernel = nullptr;      // [kh, kw, Cin / groups, Cout] dtype
  void* out = nullptr;               // [N, Ho, Wo, Cout] dtype; written at active output pixels only
  uint8_t* out_mask = nullptr;       // [N, Ho, Wo]
  int32_t* workspace = nullptr;      // [N * Ho * Wo + 1]: active output pixel list, then its count
};

}  // namespace deltajax
