// nccl.cuh: tensor-parallel groups (the C API is in cuda_api.h). Built with
// NCCL when CMake finds it (FY_CUDA_WITH_NCCL); without it every TP call
// fails with FY_ENOTSUP and says so.
#ifndef FY_CUDA_NCCL_CUH
#define FY_CUDA_NCCL_CUH

#include "kernels/cuda/backend_cuda.cuh"
#include "kernels/cuda/cuda_api.h"

#define FY_CUDA_TP_MAX 16

#endif
