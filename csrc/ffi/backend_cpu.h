// The CPU backend as the handler templates see it: no stream, kernels in csrc/cpu.
#pragma once

#include <cstring>

#include "cpu/activation.h"
#include "cpu/add.h"
#include "cpu/affine.h"
#include "cpu/binary.h"
#include "cpu/conv.h"
#include "cpu/densify.h"
#include "cpu/global_pool.h"
#include "cpu/pool.h"
#include "cpu/resample.h"
#include "cpu/sparsify.h"
#include "ffi/common.h"

namespace deltajax::ffi_ops {

struct Cpu {
  struct Stream {};
  static auto Bind() { return xla::ffi::Ffi::Bind(); }
  static void copy(void* dst, const void* src, size_t bytes, Stream) { std::memcpy(dst, src, bytes); }

  // Runs a CPU kernel; CPU kernels report nothing (inputs were validated by the handler).
  template <class Params>
  static xla::ffi::Error run(void (*kernel)(const Params&), const Params& p) {
    kernel(p);
    return xla::ffi::Error::Success();
  }
  static xla::ffi::Error sparsify(const SparsifyParams& p, Stream) { return run(cpu::sparsify, p); }
  static xla::ffi::Error conv(const ConvParams& p, Stream) { return run(cpu::conv, p); }
  static int64_t conv_activation_workspace(const ConvParams& p) { return conv_list_size(p); }
  static xla::ffi::Error conv_activation(const ConvParams& p, const ActivationParams& a, Stream) {
    cpu::conv_activation(p, a);
    return xla::ffi::Error::Success();
  }
  static xla::ffi::Error activation(const ActivationParams& p, Stream) { return run(cpu::activation, p); }
  static xla::ffi::Error add(const AddParams& p, Stream) { return run(cpu::add, p); }
  static xla::ffi::Error densify(const DensifyParams& p, Stream) { return run(cpu::densify, p); }
  static xla::ffi::Error affine(const AffineParams& p, Stream) { return run(cpu::affine, p); }
  static xla::ffi::Error binary(const BinaryParams& p, Stream) { return run(cpu::binary, p); }
  static xla::ffi::Error pool(const PoolParams& p, Stream) { return run(cpu::pool, p); }
  static xla::ffi::Error resample(const ResampleParams& p, Stream) { return run(cpu::resample, p); }
  static xla::ffi::Error global_pool(const GlobalPoolParams& p, Stream) { return run(cpu::global_pool, p); }
};

// Adapts a handler template instance taking a leading Stream to the stream-less CPU calling convention.
template <auto Fn>
struct WithoutStream;
template <class... Args, xla::ffi::Error (*Fn)(Cpu::Stream, Args...)>
struct WithoutStream<Fn> {
  static xla::ffi::Error Call(Args... args) { return Fn(Cpu::Stream{}, std::move(args)...); }
};

}  // namespace deltajax::ffi_ops
