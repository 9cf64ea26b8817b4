// Loads and stores of the activation dtypes as float32.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common/params.h"

namespace deltajax::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float f);
template <>
__device__ __forceinline__ float from_float<float>(float f) {
  return f;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float f) {
  return __float2bfloat16_rn(f);
}
template <>
__device__ __forceinline__ __half from_float<__half>(float f) {
  return __float2half_rn(f);
}

// V consecutive elements of T, loaded and stored as one access (the pointer must be aligned to the pack's size).
template <int V, typename T>
struct alignas(V * sizeof(T)) Pack {
  T v[V];
};

template <int V, typename T>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[V]) {
  const Pack<V, T> pack = *reinterpret_cast<const Pack<V, T>*>(p);
#pragma unroll
  for (int j = 0; j < V; ++j) out[j] = to_float(pack.v[j]);
}

template <int V, typename T>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[V]) {
  Pack<V, T> pack;
#pragma unroll
  for (int j = 0; j < V; ++j) pack.v[j] = from_float<T>(in[j]);
  *reinterpret_cast<Pack<V, T>*>(p) = pack;
}

// Calls fn(T{}) with T the CUDA type of the activation dtype; returns its result.
template <typename Fn>
inline cudaError_t dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kF32:
      return fn(float{});
    case DType::kBF16:
      return fn(__nv_bfloat16{});
    case DType::kF16:
      return fn(__half{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace deltajax::cuda
