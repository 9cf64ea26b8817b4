// Kernels compiled once per instruction set (the files of csrc/cpu/isa/; CMake sets DELTAJAX_CPU_ISA_NS and
// the compiler flags) and the run-time choice between them. Callers use the dispatching functions only.
#pragma once

#include <cstdint>

#include "common/params.h"

namespace deltajax::cpu {

#define DELTAJAX_CPU_ISA_KERNELS(isa)                                                                             \
  void conv_compute_##isa(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then); \
  void activation_compute_##isa(const ActivationParams& p);                                                       \
  void activation_at_##isa(const ActivationParams& p, const int32_t* pixels, int64_t count, float* scratch,       \
                           const float* pre);

DELTAJAX_CPU_ISA_KERNELS(base)
DELTAJAX_CPU_ISA_KERNELS(avx2)

// activation_at_*: the rule at `count` pixels whose updates are the float32 rows of `pre` ([count, p.c]: a fused
// convolution's unrounded results); scratch: p.c floats.

// The instruction set the dispatching functions use on this machine ("avx2" or "base").
const char* cpu_isa();

// out at the `count` active output pixels of `list` (flat indices over N*Ho*Wo); the best ISA available. With
// `then`, each tile of pixels goes through that activation rule while it is in cache, taking the float32 result
// unrounded (then->out is p.out; the convolution itself writes nothing there).
void conv_compute(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then = nullptr);

// The activation rule with truncation at active pixels (plain, or fused with the add of p.y); the best ISA.
void activation(const ActivationParams& p);

}  // namespace deltajax::cpu
