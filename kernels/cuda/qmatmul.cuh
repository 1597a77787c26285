// qmatmul.cuh: the matmul op over ggml block-type weights (quant.cuh).
#ifndef FY_CUDA_QMATMUL_CUH
#define FY_CUDA_QMATMUL_CUH

#include <cuda_runtime.h>
#include <stddef.h>

// Up to this many tokens the decode kernel runs (one pass over the weights
// for all of them); above it, the tensor-core kernel.
#define FY_QMV_MAX_T 8

// out[T x R] = x[T x C] . W^T for W R rows of C weights of block type DT
// (C a multiple of the block, W packed rows of fy_cu_row_bytes(DT, C) bytes,
// any alignment). T <= FY_QMV_MAX_T: fp32 throughout, the weights exactly
// fy_q_dequant's; larger T: weights and activations rounded to f16, products
// summed in fp32 on the tensor cores. No bias (the caller adds it). Returns
// the launch error (cudaErrorInvalidValue for a DT that is not a block type).
cudaError_t fy_qmatmul_launch(cudaStream_t stream, float *out, const float *x, const void *w,
                              int dt, int R, int C, int T);

#endif
