// dtype.cuh: element loads for the three weight dtypes of kernels/backend.h
// (F32, F16, BF16) and the 16-byte F16 vector loads/stores of the KV cache.
#ifndef FY_CUDA_DTYPE_CUH
#define FY_CUDA_DTYPE_CUH

#include "kernels/cuda/backend_c.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Element I of a DT array, as float.
__device__ __forceinline__ float fy_load_elem(const void *p, int dt, size_t i)
{
    if (dt == FY_DT_F16) {
        return __half2float(((const __half *)p)[i]);
    }
    if (dt == FY_DT_BF16) {
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    }
    return ((const float *)p)[i];
}

// The KV cache holds F16 values; one thread moves 8 of them (16 bytes) at a
// time, so a row of head_dim values is head_dim/8 aligned 16-byte accesses.
#define FY_KV_VEC 8

// Eight floats in registers: every index into v[] must be a compile-time
// constant (loops over it fully unrolled), or the array lands in local memory.
struct fy_f8 {
    float v[FY_KV_VEC];
};

__device__ __forceinline__ fy_f8 fy_kv_load8(const __half *p)
{
    uint4 raw = __ldg((const uint4 *)p);
    const __half2 *h = (const __half2 *)&raw;
    fy_f8 r;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 f = __half22float2(h[j]);
        r.v[2 * j] = f.x;
        r.v[2 * j + 1] = f.y;
    }
    return r;
}

__device__ __forceinline__ void fy_kv_store8(__half *p, const fy_f8 &x)
{
    uint4 raw;
    __half2 *h = (__half2 *)&raw;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        h[j] = __floats2half2_rn(x.v[2 * j], x.v[2 * j + 1]);
    }
    *(uint4 *)p = raw;
}

#endif
