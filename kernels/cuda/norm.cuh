// norm.cuh: RMSNorm.
#ifndef FY_CUDA_NORM_CUH
#define FY_CUDA_NORM_CUH

#include <cuda_runtime.h>

// out[t] = x[t] * fy_rms_scale(sum x^2, dim, eps) * w, for T rows of DIM.
// W: DIM elements of dtype W_DT (fy_dtype). OUT may equal X.
cudaError_t fy_rmsnorm_launch(cudaStream_t stream, float *out, const float *x, const void *w,
                              int w_dt, int T, int dim, float eps);

#endif
