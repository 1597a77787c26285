// probe.cu: proves the CUDA toolchain path. Compiled by nvcc, linked into the
// runner; queries devices and runs a trivial kernel when one is present.
#include "kernels/cuda/backend_c.cuh"

#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

__global__ void axpy_kernel(size_t n, float a, const float *x, float *y)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        y[i] += a * x[i];
    }
}

extern "C" int fy_cuda_probe(fy_backend_info *info)
{
    memset(info, 0, sizeof *info);
    info->name = "cuda";
    info->compiled = 1;
    int rt = 0, count = 0;
    cudaRuntimeGetVersion(&rt);
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(info->detail, sizeof info->detail, "runtime %d.%d, no usable device (%s)",
                 rt / 1000, (rt % 1000) / 10,
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        cudaGetLastError(); // clear the sticky error for later calls
        return FY_ENOTSUP;
    }
    cudaDeviceProp p;
    cudaGetDeviceProperties(&p, 0);
    info->usable = 1;
    snprintf(info->detail, sizeof info->detail, "runtime %d.%d, %d device(s), 0: %.*s (sm_%d%d)",
             rt / 1000, (rt % 1000) / 10, count, 60, p.name, p.major, p.minor);
    return 0;
}

#define CHECK(stmt)                                                                          \
    do {                                                                                     \
        cudaError_t e_ = (stmt);                                                             \
        if (e_ != cudaSuccess) {                                                             \
            snprintf(msg, msglen, "%s:%d: %s: %s", __FILE__, __LINE__, #stmt,                \
                     cudaGetErrorString(e_));                                                \
            rc = (e_ == cudaErrorNoDevice || e_ == cudaErrorInsufficientDriver) ? FY_ENOTSUP \
                                                                                : FY_EIO;    \
            goto out;                                                                        \
        }                                                                                    \
    } while (0)

extern "C" int fy_cuda_axpy(size_t n, float a, const float *x, float *y, char *msg, size_t msglen)
{
    int rc = 0;
    float *dx = NULL, *dy = NULL;
    unsigned blocks = (unsigned)((n + 255) / 256);
    if (msglen) {
        msg[0] = '\0';
    }
    CHECK(cudaMalloc(&dx, n * sizeof(float)));
    CHECK(cudaMalloc(&dy, n * sizeof(float)));
    CHECK(cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dy, y, n * sizeof(float), cudaMemcpyHostToDevice));
    axpy_kernel<<<blocks, 256>>>(n, a, dx, dy);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(y, dy, n * sizeof(float), cudaMemcpyDeviceToHost));
out:
    cudaFree(dx);
    cudaFree(dy);
    cudaGetLastError();
    return rc;
}
