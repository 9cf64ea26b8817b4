// pybind11 module deltajax._cuda: the CUDA handlers as a dict of capsules.
#include <pybind11/pybind11.h>

#include "ffi/all_ops.h"
#include "ffi/backend_cuda.h"

namespace ffi = xla::ffi;
namespace ops = deltajax::ffi_ops;

#define DELTAJAX_TARGET(name, Impl, Binding)                                                             \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(deltajax_##name##_cuda, ops::Impl<ops::Cuda>, ops::Binding<ops::Cuda>(), \
                                {ffi::Traits::kCmdBufferCompatible});
#include "ffi/targets.def"
#undef DELTAJAX_TARGET

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "deltajax CUDA kernels as XLA FFI handlers";
  m.def("registrations", []() {
    pybind11::dict d;
#define DELTAJAX_TARGET(name, Impl, Binding) \
  d["deltajax_" #name] = pybind11::capsule(reinterpret_cast<void*>(&deltajax_##name##_cuda));
#include "ffi/targets.def"
#undef DELTAJAX_TARGET
    return d;
  });
  m.attr("ffi_api_version") = pybind11::make_tuple(XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR);
  m.attr("built_with_jaxlib") = DELTAJAX_JAXLIB_VERSION;
}
