#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// Max pool (p.acc set: stateful rule, acc updated in place) or average pool (p.acc == nullptr).
void pool(const PoolParams& p);

}  // namespace deltajax::cpu
