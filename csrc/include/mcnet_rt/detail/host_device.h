// Per-element math shared by the CUDA kernels and their CPU twins: written once, compiled for both.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define MCNET_HD __host__ __device__ __forceinline__
#else
#define MCNET_HD inline
#endif
