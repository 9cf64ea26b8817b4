#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// Separable two-tap resampling (nearest / bilinear upsampling) at active output pixels.
void resample(const ResampleParams& p);

}  // namespace deltajax::cpu
