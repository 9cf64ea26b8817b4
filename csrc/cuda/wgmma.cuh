// Hopper warpgroup MMA (wgmma.mma_async, sm_90a) with both operands in shared memory: the instruction, its shared
// memory descriptors, and the fences around it. Built only where the module's architectures include sm_90a
// (DELTAJAX_SM90A, set by cmake/cuda_module.cmake); elsewhere the wrappers trap, and the launchers never pick them.
//
// Operand layout (no swizzle, K-major): a "core matrix" is 8 rows x 16 bytes (8 rows of 8 16-bit or 4 float32 K
// values) stored as 128 contiguous bytes. A descriptor gives the first core matrix's address, the byte distance between
// core matrices adjacent along K (LBO) and between those adjacent along M or N (SBO).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/mma.cuh"

namespace deltajax::cuda::gemm {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DELTAJAX_WGMMA_ASM(...) asm volatile(__VA_ARGS__)
#else
#define DELTAJAX_WGMMA_ASM(...) __trap()
#endif

// The descriptor of a K-major operand at shared address `p`: core matrices `lbo` bytes apart along K, `sbo` bytes
// apart along M / N (all multiples of 16; the address fits the field's 18 bits, as shared memory does). Adding
// (bytes >> 4) to a descriptor moves its start by `bytes`.
__device__ __forceinline__ uint64_t wgmma_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  return uint64_t((smem_addr(p) & 0x3FFFF) >> 4) | uint64_t((lbo >> 4) & 0x3FFF) << 16 |
         uint64_t((sbo >> 4) & 0x3FFF) << 32;
}

// The descriptor of its low word `lo` (start address, LBO) and high word `hi` (SBO).
__device__ __forceinline__ uint64_t wgmma_desc_of(uint32_t lo, uint32_t hi) { return uint64_t(hi) << 32 | lo; }

// Makes this thread's generic-proxy writes to shared memory (cp.async, stores) visible to wgmma's reads.
__device__ __forceinline__ void fence_proxy_async() {
  DELTAJAX_WGMMA_ASM("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Orders register and shared-memory accesses before the warpgroup's next wgmma.
__device__ __forceinline__ void wgmma_fence() { DELTAJAX_WGMMA_ASM("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  DELTAJAX_WGMMA_ASM("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  DELTAJAX_WGMMA_ASM("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accesses to the accumulators across a wgmma fence or wait (the asynchronous
// instruction writes them behind its back).
template <int N>
__device__ __forceinline__ void fence_registers(float (&acc)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

// Accumulator operands of wgmma's inline assembly: d[i], ..., d[i + 15].
#define DELTAJAX_ACC16(d, i)                                                                                  \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), \
      "+f"(d[i + 7]), "+f"(d[i + 8]), "+f"(d[i + 9]), "+f"(d[i + 10]), "+f"(d[i + 11]), "+f"(d[i + 12]),      \
      "+f"(d[i + 13]), "+f"(d[i + 14]), "+f"(d[i + 15])
// The 32 accumulators of m64n64: SHAPE the instruction's shape and types, TAIL its operands after the predicate
// (16-bit inputs also take the transposes: none, both K-major).
#define DELTAJAX_WGMMA_N64(SHAPE, TAIL)                                                          \
  DELTAJAX_WGMMA_ASM(                                                                            \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                               \
      "wgmma.mma_async.sync.aligned." SHAPE                                                      \
      " {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23," \
      "%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, " TAIL ";\n}\n"                            \
      : DELTAJAX_ACC16(d, 0), DELTAJAX_ACC16(d, 16)                                              \
      : "l"(a), "l"(b), "r"(1))

// d += A (64 x kK, descriptor a) x B (kK x kN, descriptor b), fp32 accumulation, by the whole warpgroup: kN = 64;
// kK = 16 for 16-bit T, 8 for float32 (TF32: the hardware reads each value's 19 high bits). Warp w of the warpgroup
// holds rows 16 w + (lane / 4) and + 8: d[4 j + e] is (row, column 8 j + 2 (lane % 4) + e) for e < 2, the row + 8
// for e >= 2 (mma.m16n8's C fragment, once per 8 columns).
template <typename T>
struct Wgmma;
template <>
struct Wgmma<__nv_bfloat16> {
  static constexpr int kN = 64, kK = 16;
  __device__ __forceinline__ static void mma(float (&d)[kN / 2], uint64_t a, uint64_t b) {
    DELTAJAX_WGMMA_N64("m64n64k16.f32.bf16.bf16", "1, 1, 0, 0");
  }
};
template <>
struct Wgmma<__half> {
  static constexpr int kN = 64, kK = 16;
  __device__ __forceinline__ static void mma(float (&d)[kN / 2], uint64_t a, uint64_t b) {
    DELTAJAX_WGMMA_N64("m64n64k16.f32.f16.f16", "1, 1, 0, 0");
  }
};
template <>
struct Wgmma<float> {
  static constexpr int kN = 64, kK = 8;
  __device__ __forceinline__ static void mma(float (&d)[kN / 2], uint64_t a, uint64_t b) {
    DELTAJAX_WGMMA_N64("m64n64k8.f32.tf32.tf32", "1, 1");
  }
};

#undef DELTAJAX_WGMMA_N64
#undef DELTAJAX_ACC16
#undef DELTAJAX_WGMMA_ASM

}  // namespace deltajax::cuda::gemm
