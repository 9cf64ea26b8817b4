#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// p.out += p.x at active pixels (float32 accumulation, in place).
void densify(const DensifyParams& p);

}  // namespace deltajax::cpu
