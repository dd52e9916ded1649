// MCPM_HD: a function that compiles for the device (inlined) when nvcc builds a kernel file and for
// the host otherwise, so the index math of a kernel can also run in CPU tests in CI.
#pragma once

#if defined(__CUDACC__)
#define MCPM_HD __host__ __device__ __forceinline__
#define MCPM_UNROLL _Pragma("unroll")
#else
#define MCPM_HD inline
#define MCPM_UNROLL
#endif
