// Includes every handler template listed in targets.def.
#pragma once

#include "ffi/activation.h"
#include "ffi/add.h"
#include "ffi/affine.h"
#include "ffi/binary.h"
#include "ffi/conv.h"
#include "ffi/conv_activation.h"
#include "ffi/densify.h"
#include "ffi/global_pool.h"
#include "ffi/pool.h"
#include "ffi/resample.h"
#include "ffi/sparsify.h"
