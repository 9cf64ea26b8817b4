// Tensor-core building blocks of the convolution kernels (conv_gemm.cuh, conv_halo.cuh): PTX wrappers for
// cp.async, ldmatrix and mma.sync, and one k-step of a warp's piece of a tile.
//
// Instruction per precision:
//   bf16 / fp16     mma.m16n8k16 (fp32 accumulation), fragments by ldmatrix (B with .trans)
//   fp32, mode 0    mma.m16n8k8 TF32, inputs rounded to TF32 (cvt.rna)
//   fp32, mode 1    3xTF32: a = a_hi + a_lo, b = b_hi + b_lo, acc += a_lo b_hi + a_hi b_lo + a_hi b_hi
//                   (about 22 mantissa bits per product: float32-level error on tensor cores)
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace deltajax::cuda::gemm {

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy; when !valid nothing is read and the destination is zero-filled.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 16 : 0));
}
// 4-byte async copy (through L1: the only path for 4 bytes); when !valid the destination is zero-filled.
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ uint32_t to_tf32(float f) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(f));
  return r;
}

// hi = tf32(f), lo = tf32(f - hi): f == hi + lo to about 22 mantissa bits.
__device__ __forceinline__ void split_tf32(float f, uint32_t& hi, uint32_t& lo) {
  hi = to_tf32(f);
  lo = to_tf32(f - __uint_as_float(hi));
}

__device__ __forceinline__ void store_pair(float* p, float a, float b) { *reinterpret_cast<float2*>(p) = {a, b}; }
__device__ __forceinline__ void store_pair(__nv_bfloat16* p, float a, float b) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
}
__device__ __forceinline__ void store_pair(__half* p, float a, float b) {
  *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
}

// The B fragments of the 8-column blocks 2 * nj and 2 * nj + 1 from one ldmatrix.x4 whose matrices are, in order,
// block 2 * nj's first and second K halves, then block 2 * nj + 1's.
template <int NI>
__device__ __forceinline__ void b_fragments(uint32_t (&bf)[NI][2], int nj, const uint32_t (&r)[4]) {
  bf[2 * nj][0] = r[0];
  bf[2 * nj][1] = r[1];
  bf[2 * nj + 1][0] = r[2];
  bf[2 * nj + 1][1] = r[3];
}

// The TF32 products of one k-step (8 of K) from float32 fragments given as bit patterns: each value rounded to TF32
// (cvt.rna), then acc[mi][ni] += A fragment mi x B fragment ni.
template <int MI, int NI>
__device__ __forceinline__ void mma_tf32_rounded(float (&acc)[MI][NI][4], uint32_t (&af)[MI][4],
                                                 uint32_t (&bf)[NI][2]) {
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int j = 0; j < 4; ++j) af[mi][j] = to_tf32(__uint_as_float(af[mi][j]));
#pragma unroll
  for (int ni = 0; ni < NI; ++ni)
#pragma unroll
    for (int j = 0; j < 2; ++j) bf[ni][j] = to_tf32(__uint_as_float(bf[ni][j]));
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) mma_tf32(acc[mi][ni], af[mi], bf[ni]);
}

// One k-step of a warp's (16 MI) x (8 NI) piece of a tile (NI even): 16 of K for 16-bit T (ldmatrix, mma.m16n8k16),
// 8 for float32 (TF32, or 3xTF32 when kMode is 1). a[mi] is row 0 of the warp's 16-row fragment mi, at this step's
// first K column, rows a_stride elements apart; b is row 0 of this step's K rows, at the warp's first output column,
// rows b_stride apart. The fragments' rows need not be adjacent (the halo kernel's are output rows of a tile).
template <typename T, int kMode, int MI, int NI>
__device__ __forceinline__ void warp_mma_step(const T* const (&a)[MI], int a_stride, const T* b, int b_stride, int lane,
                                              float (&acc)[MI][NI][4]) {
  static_assert(NI % 2 == 0, "B fragments come in pairs of 8-column blocks");
  const int g = lane >> 2, t4 = lane & 3;  // mma fragment coordinates
  if constexpr (sizeof(T) == 2) {
    uint32_t af[MI][4], bf[NI][2];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) ldmatrix_x4(af[mi], a[mi] + (lane & 15) * a_stride + (lane >> 4) * 8);
#pragma unroll
    for (int nj = 0; nj < NI / 2; ++nj) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, b + (lane & 15) * b_stride + nj * 16 + (lane >> 4) * 8);
      b_fragments(bf, nj, r);
    }
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < NI; ++ni) mma_16816<T>(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
  } else {
    uint32_t af[MI][4], bf[NI][2];  // float32 bit patterns
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
      const float* a0 = a[mi] + g * a_stride + t4;
      af[mi][0] = __float_as_uint(a0[0]);
      af[mi][1] = __float_as_uint(a0[8 * a_stride]);
      af[mi][2] = __float_as_uint(a0[4]);
      af[mi][3] = __float_as_uint(a0[8 * a_stride + 4]);
    }
#pragma unroll
    for (int ni = 0; ni < NI; ++ni) {
      const float* b0 = b + t4 * b_stride + ni * 8 + g;
      bf[ni][0] = __float_as_uint(b0[0]);
      bf[ni][1] = __float_as_uint(b0[4 * b_stride]);
    }
    if constexpr (kMode == 0) {
      mma_tf32_rounded(acc, af, bf);
    } else {
      uint32_t ah[MI][4], al[MI][4], bh[NI][2], bl[NI][2];
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int j = 0; j < 4; ++j) split_tf32(__uint_as_float(af[mi][j]), ah[mi][j], al[mi][j]);
#pragma unroll
      for (int ni = 0; ni < NI; ++ni)
#pragma unroll
        for (int j = 0; j < 2; ++j) split_tf32(__uint_as_float(bf[ni][j]), bh[ni][j], bl[ni][j]);
#pragma unroll
      for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni) {
          mma_tf32(acc[mi][ni], al[mi], bh[ni]);
          mma_tf32(acc[mi][ni], ah[mi], bl[ni]);
          mma_tf32(acc[mi][ni], ah[mi], bh[ni]);
        }
    }
  }
}

// The TF32 k-step (8 of K) with B stored K-contiguous ([N][K]), as the halo kernel keeps its float32 kernel slice:
// a[mi] as in warp_mma_step; b is the warp's first output column at this step's first K, columns b_stride apart.
// Both operands come by ldmatrix: its 8x8 16-bit matrices are 8x4 float32 ones, whose fragments are m16n8k8's (A:
// rows +0 / +8 and K +0 / +4; B: K +0 / +4 of an 8-column block), in place of warp_mma_step's scalar loads.
template <int MI, int NI>
__device__ __forceinline__ void warp_mma_step_tf32_nk(const float* const (&a)[MI], int a_stride, const float* b,
                                                      int b_stride, int lane, float (&acc)[MI][NI][4]) {
  static_assert(NI % 2 == 0, "B fragments come in pairs of 8-column blocks");
  uint32_t af[MI][4], bf[NI][2];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) ldmatrix_x4(af[mi], a[mi] + ((lane & 7) + (lane & 8)) * a_stride + (lane >> 4) * 4);
#pragma unroll
  for (int nj = 0; nj < NI / 2; ++nj) {
    uint32_t r[4];
    ldmatrix_x4(r, b + (nj * 16 + (lane & 7) + (lane >> 4) * 8) * b_stride + (lane & 8) / 2);
    b_fragments(bf, nj, r);
  }
  mma_tf32_rounded(acc, af, bf);
}

template <int M, int N>
__device__ __forceinline__ void zero(float (&acc)[M][N][4]) {
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < N; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) acc[i][j][k] = 0.f;
}

}  // namespace deltajax::cuda::gemm
