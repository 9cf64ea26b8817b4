// Run-time choice of the instruction set (compiled for the baseline only).
#include <cstdlib>
#include <cstring>

#include "cpu/isa/kernels.h"

namespace deltajax::cpu {
namespace {

bool has_avx2() {
#if defined(DELTAJAX_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
  // DELTAJAX_CPU_ISA=base forces the portable kernels (tests of the fallback).
  const char* force = std::getenv("DELTAJAX_CPU_ISA");
  if (force && std::strcmp(force, "base") == 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

const bool kAvx2 = has_avx2();

}  // namespace

const char* cpu_isa() { return kAvx2 ? "avx2" : "base"; }

void conv_compute(const ConvParams& p, const int32_t* list, int64_t count, const ActivationParams* then) {
#ifdef DELTAJAX_HAVE_AVX2
  if (kAvx2) return conv_compute_avx2(p, list, count, then);
#endif
  conv_compute_base(p, list, count, then);
}

void activation(const ActivationParams& p) {
#ifdef DELTAJAX_HAVE_AVX2
  if (kAvx2) return activation_compute_avx2(p);
#endif
  activation_compute_base(p);
}

}  // namespace deltajax::cpu
