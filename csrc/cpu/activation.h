// The activation rule with truncation at active pixels: compiled per instruction set, csrc/cpu/isa/.
#pragma once

#include "cpu/isa/kernels.h"
