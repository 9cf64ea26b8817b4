#pragma once

#include "common/params.h"

namespace deltajax::cpu {

// Computes p.out_mask, the active list in p.workspace, and p.out at active output pixels.
void conv(const ConvParams& p);

// conv, then the activation rule `act` on its output in place, tile by tile while the tile is in cache:
// act.x / act.out are p.out, act.x_mask is p.out_mask (the conv's mask), act.out_mask the rule's own.
void conv_activation(const ConvParams& p, const ActivationParams& act);

}  // namespace deltajax::cpu
