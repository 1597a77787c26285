// act.cu: elementwise kernels (grid-stride loops).
#include "kernels/cuda/act.cuh"

#include "kernels/math.h"

__global__ void fy_silu_mul_kernel(float *out, const float *gate, const float *up, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] = fy_silu(gate[i]) * up[i];
    }
}

__global__ void fy_add_kernel(float *out, const float *a, const float *b, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

static unsigned fy_act_blocks(size_t n)
{
    size_t b = (n + 255) / 256;
    return (unsigned)(b > 65535 ? 65535 : (b ? b : 1));
}

cudaError_t fy_silu_mul_launch(cudaStream_t stream, float *out, const float *gate, const float *up,
                               size_t n)
{
    fy_silu_mul_kernel<<<fy_act_blocks(n), 256, 0, stream>>>(out, gate, up, n);
    return cudaGetLastError();
}

cudaError_t fy_add_launch(cudaStream_t stream, float *out, const float *a, const float *b, size_t n)
{
    fy_add_kernel<<<fy_act_blocks(n), 256, 0, stream>>>(out, a, b, n);
    return cudaGetLastError();
}
