#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// The binary non-linear rule (multiply, maximum) on the union of the masks; acc_x, acc_y in place.
void binary(const BinaryParams& p);

}  // namespace deltajax::cpu
