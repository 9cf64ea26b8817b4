#include "cpu/conv.h"

#include <cstring>

#include "cpu/isa/kernels.h"
#include "cpu/window.h"

namespace deltajax::cpu {

namespace {

// The output mask, and the list of active output pixels with its count in p.workspace (conv_count_at).
int64_t output_pixels(const ConvParams& p) {
  const Window win{p.kh,       p.kw,        p.stride_h,  p.stride_w,  p.pad_top,
                   p.pad_left, p.lhs_dil_h, p.lhs_dil_w, p.rhs_dil_h, p.rhs_dil_w};
  window_mask(p.in_mask, p.n, p.h, p.w, win, p.out_mask, p.ho, p.wo);
  const int64_t outputs = p.n * p.ho * p.wo;
  const int64_t count = active_list(p.out_mask, outputs, p.workspace);
  p.workspace[conv_count_at(p)] = static_cast<int32_t>(count);
  return count;
}

}  // namespace

void conv(const ConvParams& p) { conv_compute(p, p.workspace, output_pixels(p)); }

void conv_activation(const ConvParams& p, const ActivationParams& act) {
  const int64_t count = output_pixels(p);
  std::memset(act.out_mask, 0, static_cast<size_t>(p.n * p.ho * p.wo));  // the rule visits active pixels only
  conv_compute(p, p.workspace, count, &act);
}

}  // namespace deltajax::cpu
