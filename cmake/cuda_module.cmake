# The CUDA module deltajax._cuda: kernels (.cu, no XLA headers) + handlers (.cc, g++), cudart static.
find_package(CUDAToolkit REQUIRED)
# The deltajax-cudaNN package (packages/cuda*/) names the CUDA major its static cudart needs a driver for.
if(DEFINED DELTAJAX_CUDA_MAJOR AND NOT CUDAToolkit_VERSION_MAJOR STREQUAL DELTAJAX_CUDA_MAJOR)
  message(FATAL_ERROR "deltajax: this package is built with CUDA ${DELTAJAX_CUDA_MAJOR} but nvcc is CUDA "
                      "${CUDAToolkit_VERSION}; put a CUDA ${DELTAJAX_CUDA_MAJOR} nvcc on PATH (or set CUDACXX)")
endif()

file(GLOB DELTAJAX_CUDA_KERNELS CONFIGURE_DEPENDS csrc/cuda/*.cu)
add_library(deltajax_cuda_kernels STATIC ${DELTAJAX_CUDA_KERNELS})
target_include_directories(deltajax_cuda_kernels PUBLIC csrc)
set_target_properties(deltajax_cuda_kernels PROPERTIES CUDA_RUNTIME_LIBRARY Static POSITION_INDEPENDENT_CODE ON)
target_compile_options(deltajax_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr -lineinfo>)
# Kernels on Hopper's warpgroup MMA exist where sm_90a code is built; the launchers pick them on such cards only.
if(CMAKE_CUDA_ARCHITECTURES MATCHES "(^|;)90a")
  target_compile_definitions(deltajax_cuda_kernels PRIVATE DELTAJAX_SM90A=1)
endif()

pybind11_add_module(_cuda MODULE csrc/ffi/module_cuda.cc)
target_include_directories(_cuda SYSTEM PRIVATE "${XLA_FFI_INCLUDE_DIR}")
target_compile_definitions(_cuda PRIVATE DELTAJAX_JAXLIB_VERSION="${DELTAJAX_JAXLIB_VERSION}")
target_link_libraries(_cuda PRIVATE deltajax_cuda_kernels CUDA::cudart_static)
target_link_options(_cuda PRIVATE -Wl,--exclude-libs,ALL)
set_target_properties(_cuda PROPERTIES CUDA_RUNTIME_LIBRARY Static)
install(TARGETS _cuda LIBRARY DESTINATION deltajax COMPONENT cuda)
