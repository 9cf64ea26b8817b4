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
  const void* x = nullptr;  // [N, H, W, C] dtype
  float* ref = nullptr;     // [N, H, W, C] float32, read and updated in place
  void* values = nullptr;   // [N, H, W, C] dtype, written at active pixels only
  uint8_t* mask = nullptr;  // [N, H, W]
  uint8_t* active = nullptr;  // [N, H, W] workspace: the activity map before dilation
};

}  // namespace deltajax
