#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// Fills p.active and p.mask, writes p.values and updates p.ref at active pixels.
void sparsify(const SparsifyParams& p);

}  // namespace deltajax::cpu
