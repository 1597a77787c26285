// dtype.cuh: element loads for the three weight dtypes of kernels/backend.h
// (F32, F16, BF16) and the 16-byte F16 vector loads/stores of the KV cache.
#ifndef FY_CUDA_DTYPE_CUH
#define FY_CUDA_DTYPE_CUH

#include "kernels/cuda/backend_c.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
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

// The KV cache holds F16 (auto), BF16 or F32 values (fy_attn_shape.kv_dtype);
// one thread moves 8 of them at a time (16 bytes, or 32 for F32), so a row of
// head_dim values is head_dim/8 aligned vector accesses.
#define FY_KV_VEC 8

// Eight floats in registers: every index into v[] must be a compile-time
// constant (loops over it fully unrolled), or the array lands in local memory.
struct fy_f8 {
    float v[FY_KV_VEC];
};

// Pairs of a 16-bit KV type (__half2, __nv_bfloat162) to and from floats.
__device__ __forceinline__ float2 fy_kv_pair_f32(__half2 h)
{
    return __half22float2(h);
}
__device__ __forceinline__ float2 fy_kv_pair_f32(__nv_bfloat162 h)
{
    return __bfloat1622float2(h);
}
__device__ __forceinline__ void fy_kv_pair_set(__half2 *h, float a, float b)
{
    *h = __floats2half2_rn(a, b);
}
__device__ __forceinline__ void fy_kv_pair_set(__nv_bfloat162 *h, float a, float b)
{
    *h = __floats2bfloat162_rn(a, b);
}

// Eight 16-bit values (one 16-byte access) of pair type H2 as floats, and back
// (round to nearest even).
template <typename H2> __device__ __forceinline__ fy_f8 fy_kv_load8_16(const void *p)
{
    uint4 raw = __ldg((const uint4 *)p);
    const H2 *h = (const H2 *)&raw;
    fy_f8 r;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float2 f = fy_kv_pair_f32(h[j]);
        r.v[2 * j] = f.x;
        r.v[2 * j + 1] = f.y;
    }
    return r;
}

template <typename H2> __device__ __forceinline__ void fy_kv_store8_16(void *p, const fy_f8 &x)
{
    uint4 raw;
    H2 *h = (H2 *)&raw;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        fy_kv_pair_set(&h[j], x.v[2 * j], x.v[2 * j + 1]);
    }
    *(uint4 *)p = raw;
}

__device__ __forceinline__ fy_f8 fy_kv_load8(const __half *p)
{
    return fy_kv_load8_16<__half2>(p);
}
__device__ __forceinline__ void fy_kv_store8(__half *p, const fy_f8 &x)
{
    fy_kv_store8_16<__half2>(p, x);
}
__device__ __forceinline__ fy_f8 fy_kv_load8(const __nv_bfloat16 *p)
{
    return fy_kv_load8_16<__nv_bfloat162>(p);
}
__device__ __forceinline__ void fy_kv_store8(__nv_bfloat16 *p, const fy_f8 &x)
{
    fy_kv_store8_16<__nv_bfloat162>(p, x);
}

__device__ __forceinline__ fy_f8 fy_kv_load8(const float *p)
{
    float4 a = __ldg((const float4 *)p), b = __ldg((const float4 *)p + 1);
    fy_f8 r = {{a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w}};
    return r;
}

__device__ __forceinline__ void fy_kv_store8(float *p, const fy_f8 &x)
{
    ((float4 *)p)[0] = make_float4(x.v[0], x.v[1], x.v[2], x.v[3]);
    ((float4 *)p)[1] = make_float4(x.v[4], x.v[5], x.v[6], x.v[7]);
}

// Returns F(KV()) with KV the element type of the cache type DT (a
// kernels/backend.h fy_dtype: F16, BF16 or F32), so a launch instantiates its
// kernel for the cache it is given.
template <typename F> static inline cudaError_t fy_kv_dispatch(int dt, F f)
{
    if (dt == FY_DT_BF16) {
        return f(__nv_bfloat16());
    }
    if (dt == FY_DT_F32) {
        return f(float());
    }
    return f(__half());
}

#endif
