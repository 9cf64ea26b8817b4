// Plain parameter structs shared by the CPU and CUDA kernels.
// Kernels see only these: no XLA, no Python. Layouts are NHWC, masks [N, H, W]
// (one byte per pixel), state buffers float32.
#pragma once

#include <cstdint>

#include "common/host_device.h"

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
  DType out_dtype = DType::kF32;     // out's: dtype, or float32 (the CUDA conv_activation's pre-activation)
  const void* x = nullptr;           // [N, H, W, Cin] dtype; unspecified where in_mask is 0
  const uint8_t* in_mask = nullptr;  // [N, H, W]
  const void* kernel = nullptr;      // [kh, kw, Cin / groups, Cout] dtype
  void* out = nullptr;               // [N, Ho, Wo, Cout] out_dtype; written at active output pixels only
  uint8_t* out_mask = nullptr;       // [N, Ho, Wo]
  int32_t* workspace = nullptr;      // [conv_list_size]: the active output pixels and tiles, then their counts
                                     // (conv_count_at); for a backend's conv_activation, what else it asks for after
};

// Output tiles of the CUDA tile-sparse kernel (kOutTileRows x kOutTileCols pixels of one image): the mask pass lists
// those with an active pixel (the CPU backend leaves that part of the workspace unused).
constexpr int kOutTileRows = 8, kOutTileCols = 16;
// The output tiles of one image of ho x wo pixels: grid.y down, grid.x across.
struct TileGrid {
  int y, x;
};
DELTAJAX_AHD TileGrid out_tile_grid(int64_t ho, int64_t wo) {
  return {int((ho + kOutTileRows - 1) / kOutTileRows), int((wo + kOutTileCols - 1) / kOutTileCols)};
}
inline int64_t conv_out_tiles(const ConvParams& p) {
  const TileGrid g = out_tile_grid(p.ho, p.wo);
  return p.n * g.y * g.x;
}
// Output tile t of images of grid.y x grid.x tiles, numbered b * grid.y * grid.x + ty * grid.x + tx.
struct OutTile {
  int b, ty, tx;
};
DELTAJAX_AHD OutTile out_tile(int t, TileGrid grid) {
  const int per_image = grid.y * grid.x, b = t / per_image, in_image = t - b * per_image, ty = in_image / grid.x;
  return {b, ty, in_image - ty * grid.x};
}

// The convolution's workspace, int32: [N * Ho * Wo] active output pixels, [conv_out_tiles] active output tiles, then
// the count of each (the pixels' at conv_count_at, the tiles' after it). deltajax/ops/conv.py sizes it the same way.
inline int64_t conv_count_at(const ConvParams& p) { return p.n * p.ho * p.wo + conv_out_tiles(p); }
inline int64_t conv_list_size(const ConvParams& p) { return conv_count_at(p) + 2; }

}  // namespace deltajax

namespace deltajax {

// Named element-wise functions of ops.elementwise (the int32 attribute 'act' of the FFI targets).
// Values are an ABI shared with deltajax/ops/elementwise.py: append, never renumber.
enum class ActKind : int {
  kIdentity = 0,
  kRelu = 1,
  kRelu6 = 2,
  kLeakyRelu = 3,
  kSigmoid = 4,
  kSilu = 5,
  kHardSwish = 6,
  kHardSigmoid = 7,
  kGelu = 8,
  kGeluTanh = 9,
  kTanh = 10,
  kPRelu = 11,  // per-channel slopes: ActivationParams::slopes
};
constexpr int kActKindCount = 12;

// Truncation test of an output update (the int32 attribute 'truncation').
enum class TruncMode : int { kMax = 0, kL2 = 1, kRms = 2, kNone = 3 };

// Element-wise non-linearity on a delta with truncation and error feedback; acc/sent updated in place:
// at an active pixel acc += d, y = f(acc) - sent; kept pixels emit v = y rounded to dtype and sent += v, dropped
// ones leave sent (what was not sent, by truncation or rounding, is in the next update).
// With y != nullptr the input delta is the add of two deltas (x + y in float32, union of masks): the residual
// add fused with the activation that follows it.
struct ActivationParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  ActKind act = ActKind::kRelu;
  float negative_slope = 0.01f;   // leaky_relu
  const float* slopes = nullptr;  // prelu: [C] float32, x if x >= 0 else slopes[c] * x
  TruncMode truncation = TruncMode::kMax;
  float threshold = 0.f;
  DType dtype = DType::kF32;        // out's
  DType x_dtype = DType::kF32;      // x's and y's: dtype, or float32 (the CUDA conv_activation's pre-activation)
  const void* x = nullptr;          // [N, H, W, C] x_dtype
  const uint8_t* x_mask = nullptr;  // [N, H, W]
  const void* y = nullptr;          // optional second addend [N, H, W, C] x_dtype
  const uint8_t* y_mask = nullptr;  // [N, H, W] when y is given
  const float* scale = nullptr;     // optional [C] float32: x's update is x * scale (a fused batch-norm scale),
  int64_t scale_group = 0;          // or [B, C] under vmap: row i / scale_group for pixel i (0: one row)
  float* acc = nullptr;             // [N, H, W, C] float32, in place
  float* sent = nullptr;            // [N, H, W, C] float32, in place: the sum of the emitted updates
  void* out = nullptr;              // [N, H, W, C] dtype, written at kept pixels only
  uint8_t* out_mask = nullptr;      // [N, H, W]
};

// Add of two deltas: out = x + y on the union of the masks (an absent side reads zero).
struct AddParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* x_mask = nullptr;
  const void* y = nullptr;
  const uint8_t* y_mask = nullptr;
  void* out = nullptr;          // written on the union only
  uint8_t* out_mask = nullptr;  // [N, H, W]
};

// Densify: out += values at active pixels, in place.
struct DensifyParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  DType dtype = DType::kF32;
  const void* x = nullptr;        // [N, H, W, C] dtype
  const uint8_t* mask = nullptr;  // [N, H, W]
  float* out = nullptr;           // [N, H, W, C] float32, in place
};

// Per-channel scale of a delta (batch norm / affine on later frames): out = x * mul at active pixels.
struct AffineParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* mask = nullptr;
  const float* mul = nullptr;  // [C] float32
  void* out = nullptr;         // written at active pixels only (the mask passes through)
};

// Binary non-linear rule: out = f(acc_x + dx, acc_y + dy) - f(acc_x, acc_y) on the union of the masks.
// y is [N, H, W, C] like x, or [N, 1, 1, C] (y_broadcast: one gate per stream, e.g. squeeze-excite).
enum class BinaryOp : int { kMultiply = 0, kMaximum = 1 };
struct BinaryParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  bool y_broadcast = false;
  BinaryOp op = BinaryOp::kMultiply;
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* x_mask = nullptr;  // [N, H, W]
  const void* y = nullptr;
  const uint8_t* y_mask = nullptr;  // [N, H, W], or [N] when y_broadcast
  float* acc_x = nullptr;           // in place, shape of x
  float* acc_y = nullptr;           // in place, shape of y
  void* out = nullptr;              // [N, H, W, C] dtype, written on the union only
  uint8_t* out_mask = nullptr;      // [N, H, W]
};

// Max pool (acc != nullptr: out = max(window(acc + d)) - max(window(acc)), then acc += d in place) or
// average pool (acc == nullptr: out = sum(window(d)) / divisor). Windows like ConvParams with no dilation;
// padding reads -inf (max) or zero (average). Output mask by the receptive-field rule.
struct PoolParams {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input [N, H, W, C]
  int64_t ho = 0, wo = 0;              // output [N, Ho, Wo, C]
  int kh = 1, kw = 1;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0;
  bool count_include_pad = true;  // average pool: divide by kh*kw, else by the in-bounds taps
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* in_mask = nullptr;
  float* acc = nullptr;  // max pool state [N, H, W, C] float32, in place; nullptr for the average pool
  void* out = nullptr;   // written at active output pixels only
  uint8_t* out_mask = nullptr;
};

// Separable resampling with at most two taps per output row and column (nearest: one tap of weight 1;
// bilinear: the two weights jax.image.resize uses). A tap with weight 0 is absent (not read, not in the mask).
struct ResampleParams {
  int64_t n = 0, h = 0, w = 0, c = 0;  // input
  int64_t ho = 0, wo = 0;              // output
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* in_mask = nullptr;
  const int32_t* taps_h = nullptr;   // [Ho, 2] input rows
  const float* weights_h = nullptr;  // [Ho, 2]
  const int32_t* taps_w = nullptr;   // [Wo, 2] input columns
  const float* weights_w = nullptr;  // [Wo, 2]
  void* out = nullptr;               // [N, Ho, Wo, C], written at active output pixels only
  uint8_t* out_mask = nullptr;       // [N, Ho, Wo]
};

// Global average pool of a delta: acc[n, c] += sum over active pixels of x / (H * W), in place.
struct GlobalPoolParams {
  int64_t n = 0, h = 0, w = 0, c = 0;
  DType dtype = DType::kF32;
  const void* x = nullptr;
  const uint8_t* mask = nullptr;
  float* acc = nullptr;  // [N, C] float32
};

}  // namespace deltajax
