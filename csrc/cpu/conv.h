#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// Computes p.out_mask, the active list in p.workspace, and p.out at active output pixels.
void conv(const ConvParams& p);

}  // namespace deltajax::cpu
