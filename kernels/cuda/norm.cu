// norm.cu: RMSNorm, one block per row; the scale comes from kernels/math.h.
#include "kernels/cuda/norm.cuh"

#include "kernels/cuda/dtype.cuh"
#include "kernels/math.h"

#define FY_NORM_THREADS 256

__global__ void __launch_bounds__(FY_NORM_THREADS)
    fy_rmsnorm_kernel(float *out, const float *x, const void *w, int w_dt, int dim, float eps)
{
    __shared__ float warp_sums[FY_NORM_THREADS / 32];
    __shared__ float scale;
    const float *xr = x + (size_t)blockIdx.x * dim;
    float *orow = out + (size_t)blockIdx.x * dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < dim; i += FY_NORM_THREADS) {
        s = fmaf(xr[i], xr[i], s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
    }
    if ((threadIdx.x & 31) == 0) {
        warp_sums[threadIdx.x / 32] = s;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (int i = 0; i < FY_NORM_THREADS / 32; i++) {
            total += warp_sums[i];
        }
        scale = fy_rms_scale(total, dim, eps);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < dim; i += FY_NORM_THREADS) {
        orow[i] = xr[i] * scale * fy_load_elem(w, w_dt, (size_t)i);
    }
}

cudaError_t fy_rmsnorm_launch(cudaStream_t stream, float *out, const float *x, const void *w,
                              int w_dt, int T, int dim, float eps)
{
    fy_rmsnorm_kernel<<<T, FY_NORM_THREADS, 0, stream>>>(out, x, w, w_dt, dim, eps);
    return cudaGetLastError();
}
