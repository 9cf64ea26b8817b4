#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// acc[n, :] += sum of the active pixels of stream n / (H * W).
void global_pool(const GlobalPoolParams& p);

}  // namespace deltajax::cpu
