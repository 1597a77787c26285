// backend_c.cuh: kernels/backend.h and kernels/cuda/cuda_api.h with C linkage
// for the .cu files (nvcc compiles them as C++). Include this, never
// kernels/backend.h directly, from CUDA sources.
#ifndef FY_CUDA_BACKEND_C_CUH
#define FY_CUDA_BACKEND_C_CUH

extern "C" {
#include "common/err.h"
#include "kernels/backend.h"
}
#include "kernels/cuda/cuda_api.h"

#endif
