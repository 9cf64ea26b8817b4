// Included first by every file of csrc/cpu/isa/: names the functions it exports after its instruction set.
#pragma once

#ifndef DELTAJAX_CPU_ISA_NS
#error "files of csrc/cpu/isa/ are compiled with DELTAJAX_CPU_ISA_NS set (see CMakeLists.txt)"
#endif

#define DELTAJAX_ISA_CAT2(a, b) a##_##b
#define DELTAJAX_ISA_CAT(a, b) DELTAJAX_ISA_CAT2(a, b)
// DELTAJAX_ISA_FN(conv_compute) is conv_compute_avx2 in the AVX2 build, conv_compute_base in the baseline one.
#define DELTAJAX_ISA_FN(name) DELTAJAX_ISA_CAT(name, DELTAJAX_CPU_ISA_NS)
