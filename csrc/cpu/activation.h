#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// The activation rule with truncation at active pixels (plain, or fused with the add of p.y).
void activation(const ActivationParams& p);

}  // namespace deltajax::cpu
