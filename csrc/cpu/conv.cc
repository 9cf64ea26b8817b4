#include "cpu/conv.h"

#include "cpu/isa/kernels.h"
#include "cpu/window.h"

namespace deltajax::cpu {

void conv(const ConvParams& p) {
  const Window win{p.kh,       p.kw,        p.stride_h,  p.stride_w,  p.pad_top,
                   p.pad_left, p.lhs_dil_h, p.lhs_dil_w, p.rhs_dil_h, p.rhs_dil_w};
  window_mask(p.in_mask, p.n, p.h, p.w, win, p.out_mask, p.ho, p.wo);
  const int64_t outputs = p.n * p.ho * p.wo;
  const int64_t count = active_list(p.out_mask, outputs, p.workspace);
  p.workspace[outputs] = static_cast<int32_t>(count);
  conv_compute(p, p.workspace, count);
}

}  // namespace deltajax::cpu
