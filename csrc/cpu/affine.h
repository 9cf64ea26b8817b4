#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// out = x * mul (per channel) at active pixels.
void affine(const AffineParams& p);

}  // namespace deltajax::cpu
