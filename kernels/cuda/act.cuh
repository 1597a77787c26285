// act.cuh: SiLU-and-multiply (the SwiGLU MLP's middle) and residual add.
#ifndef FY_CUDA_ACT_CUH
#define FY_CUDA_ACT_CUH

#include <cuda_runtime.h>
#include <stddef.h>

// out[i] = fy_silu(gate[i]) * up[i] for N elements. OUT may equal GATE.
cudaError_t fy_silu_mul_launch(cudaStream_t stream, float *out, const float *gate, const float *up,
                               size_t n);
// out[i] = a[i] + b[i] for N elements. OUT may equal A.
cudaError_t fy_add_launch(cudaStream_t stream, float *out, const float *a, const float *b,
                          size_t n);

#endif
