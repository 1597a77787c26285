// gemm.cuh: the matmul op through cuBLAS (one handle per backend stream).
#ifndef FY_CUDA_GEMM_CUH
#define FY_CUDA_GEMM_CUH

#include "kernels/cuda/backend_cuda.cuh"

// out[T x w->rows] = x[T x w->cols] . W^T (+ bias). F32 weights: SGEMM (full
// fp32, no TF32). F16/BF16 weights: x is rounded to the weight's type in
// scratch and cublasGemmEx runs with fp32 accumulation and an fp32 output
// (cuBLAS has no mixed f32 x bf16 input). Block types: fy_qmatmul_launch.
// Failures are recorded in C->err.
void fy_cuda_gemm(fy_cuda_be *c, float *out, const float *x, const fy_tensor *w,
                  const fy_tensor *bias, int T);

#endif
