// The qualifier of small functions compiled for both the host and the device.
#pragma once

#if defined(__CUDACC__)
#define DELTAJAX_AHD __host__ __device__ __forceinline__
#else
#define DELTAJAX_AHD inline
#endif
