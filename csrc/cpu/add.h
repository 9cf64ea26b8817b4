#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// out = x + y on the union of the masks.
void add(const AddParams& p);

}  // namespace deltajax::cpu
