// Includes every handler template listed in targets.def.
#pragma once

#include "ffi/conv.h"
#include "ffi/sparsify.h"
