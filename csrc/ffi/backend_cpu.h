// The CPU backend as the handler templates see it: no stream, kernels in csrc/cpu.
#pragma once

#include <cstring>

#include "cpu/conv.h"
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
};

// Adapts a handler template instance taking a leading Stream to the stream-less CPU calling convention.
template <auto Fn>
struct WithoutStream;
template <class... Args, xla::ffi::Error (*Fn)(Cpu::Stream, Args...)>
struct WithoutStream<Fn> {
  static xla::ffi::Error Call(Args... args) { return Fn(Cpu::Stream{}, std::move(args)...); }
};

}  // namespace deltajax::ffi_ops
