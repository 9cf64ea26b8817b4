// Includes every handler template listed in targets.def.
#pragma once

#include "ffi/sparsify.h"
