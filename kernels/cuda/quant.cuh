// quant.cuh: ggml's packed block types (kernels/cpu/quant.h has the layouts
// and the scalar reference) on the device: their sizes, for the host side of
// the module, and the dequantization of 8 consecutive weights of a block,
// shared by the matmul (qmatmul.cu) and embedding (embed.cu) kernels.
//
// The sizes repeat kernels/backend.c's table: the module is linked with
// --no-undefined and cannot call fy_dtype_block_weights and friends.
//
// The weights come out bit for bit as fy_q_dequant gives them: every product
// in the formulas is exact in float (quant.h, "Exactness"), so a fused
// multiply-add rounds once, exactly where the reference's separate multiply
// and add round the sum.
#ifndef FY_CUDA_QUANT_CUH
#define FY_CUDA_QUANT_CUH

#include "kernels/cuda/backend_c.cuh"

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

// Weights per block (1 for F32/F16/BF16, 0 outside the enum).
__host__ __device__ constexpr int fy_cu_block_weights(int dt)
{
    switch (dt) {
    case FY_DT_F32:
    case FY_DT_F16:
    case FY_DT_BF16:
        return 1;
    case FY_DT_Q8_0:
    case FY_DT_Q4_0:
    case FY_DT_Q4_1:
    case FY_DT_Q5_0:
    case FY_DT_Q5_1:
        return 32;
    case FY_DT_Q4_K:
    case FY_DT_Q5_K:
    case FY_DT_Q6_K:
        return 256;
    default:
        return 0;
    }
}

// Bytes per block (the element size for F32/F16/BF16, 0 outside the enum).
__host__ __device__ constexpr int fy_cu_block_bytes(int dt)
{
    switch (dt) {
    case FY_DT_F32:
        return 4;
    case FY_DT_F16:
    case FY_DT_BF16:
        return 2;
    case FY_DT_Q8_0:
        return 34;
    case FY_DT_Q4_0:
        return 18;
    case FY_DT_Q4_1:
        return 20;
    case FY_DT_Q5_0:
        return 22;
    case FY_DT_Q5_1:
        return 24;
    case FY_DT_Q4_K:
        return 144;
    case FY_DT_Q5_K:
        return 176;
    case FY_DT_Q6_K:
        return 210;
    default:
        return 0;
    }
}

// 1 for the packed block types.
__host__ __device__ static inline int fy_cu_is_block(int dt)
{
    return fy_cu_block_weights(dt) > 1;
}

// Bytes of a row of COLS weights of DT (COLS whole blocks).
__host__ __device__ static inline size_t fy_cu_row_bytes(int dt, int64_t cols)
{
    int bw = fy_cu_block_weights(dt);
    return bw ? (size_t)(cols / bw) * (size_t)fy_cu_block_bytes(dt) : 0;
}

// The type's name in messages ("?" outside the enum).
static inline const char *fy_cu_dtype_name(int dt)
{
    static const char *const names[FY_DT_COUNT] = {
        "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
    };
    return dt >= 0 && dt < FY_DT_COUNT ? names[dt] : "?";
}

// --- dequantization ---------------------------------------------------------------

// The loops below are unrolled on the device (constant indices keep fy_w8 in
// registers); the host compiler, for the host-side test, knows no such pragma.
#ifdef __CUDA_ARCH__
#define FY_Q_UNROLL _Pragma("unroll")
#else
#define FY_Q_UNROLL
#endif

// Eight weights in registers (constant indices only, like fy_f8).
struct fy_w8 {
    float v[8];
};

__host__ __device__ __forceinline__ float fy_q_half(const uint8_t *p)
{
    return __half2float(__ushort_as_half((unsigned short)(p[0] | p[1] << 8)));
}

__host__ __device__ __forceinline__ uint32_t fy_q_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// The 32-weight nibble types: weight i in the low nibble of byte i, weight
// i + 16 in the high one, bit i of QH as bit 4 (HAS_QH); w = d*(q - BIAS)
// for the symmetric types, d*q + m for the others (adding nothing, not even
// 0, to the symmetric ones keeps the reference's signed zeros).
template <bool HAS_M, bool HAS_QH>
__host__ __device__ __forceinline__ fy_w8 fy_q_nibble32(const uint8_t *qs, uint32_t qh, float d,
                                                        float m, int bias, int j)
{
    fy_w8 r;
    FY_Q_UNROLL
    for (int i = 0; i < 8; i++) {
        const int n = j + i;
        const int byte = qs[n & 15];
        int q = n < 16 ? byte & 0x0f : byte >> 4;
        if (HAS_QH) {
            q |= (int)((qh >> n) & 1) << 4;
        }
        r.v[i] = HAS_M ? d * (float)q + m : d * (float)(q - bias);
    }
    return r;
}

// Q4_K / Q5_K: sub-block s = j / 32 of 32 weights with 6-bit scale and min.
template <bool HAS_QH> __host__ __device__ __forceinline__ fy_w8 fy_q_k45(const uint8_t *b, int j)
{
    const uint8_t *sc = b + 4, *qh = b + 16, *qs = b + (HAS_QH ? 48 : 16);
    const int s = j >> 5, l0 = j & 31;
    int scale, mn;
    if (s < 4) {
        scale = sc[s] & 63;
        mn = sc[s + 4] & 63;
    } else {
        scale = (sc[s + 4] & 0x0f) | (sc[s - 4] >> 6) << 4;
        mn = (sc[s + 4] >> 4) | (sc[s] >> 6) << 4;
    }
    const float ds = fy_q_half(b) * (float)scale, dm = fy_q_half(b + 2) * (float)mn;
    const uint8_t *q = qs + 32 * (s >> 1);
    fy_w8 r;
    FY_Q_UNROLL
    for (int i = 0; i < 8; i++) {
        const int l = l0 + i;
        int v = s & 1 ? q[l] >> 4 : q[l] & 0x0f;
        if (HAS_QH) {
            v |= ((qh[l] >> s) & 1) << 4;
        }
        r.v[i] = ds * (float)v - dm;
    }
    return r;
}

// Q6_K: weight n = 128*h + 32*g + l takes its low 4 bits from
// ql[64*h + l + 32*(g&1)] (low nibble for g < 2), its top 2 from bits 2g of
// qh[32*h + l], and int8 scale 8*h + 2*g + l/16; 8 weights share h, g, scale.
__host__ __device__ __forceinline__ fy_w8 fy_q_q6k(const uint8_t *b, int j)
{
    const int h = j >> 7, g = (j >> 5) & 3, l0 = j & 31;
    const uint8_t *ql = b + 64 * h + 32 * (g & 1), *qh = b + 128 + 32 * h;
    const float s = fy_q_half(b + 208) * (float)(int8_t)b[192 + 8 * h + 2 * g + (l0 >> 4)];
    fy_w8 r;
    FY_Q_UNROLL
    for (int i = 0; i < 8; i++) {
        const int l = l0 + i;
        const int lo = g < 2 ? ql[l] & 0x0f : ql[l] >> 4;
        const int hi = (qh[l] >> (2 * g)) & 3;
        r.v[i] = s * (float)((lo | hi << 4) - 32);
    }
    return r;
}

// Weights J .. J+7 of the block at B of block type DT (J a multiple of 8
// below the block's weight count). B may point to global or shared memory,
// at any alignment. Host-callable too, so tests/gpu/test_quant_host checks
// it against fy_q_dequant on machines without a GPU.
template <int DT> __host__ __device__ __forceinline__ fy_w8 fy_q_dequant8(const uint8_t *b, int j)
{
    if (DT == FY_DT_Q8_0) {
        const float d = fy_q_half(b);
        fy_w8 r;
        FY_Q_UNROLL
        for (int i = 0; i < 8; i++) {
            r.v[i] = d * (float)(int8_t)b[2 + j + i];
        }
        return r;
    }
    if (DT == FY_DT_Q4_0) {
        return fy_q_nibble32<false, false>(b + 2, 0, fy_q_half(b), 0.0f, 8, j);
    }
    if (DT == FY_DT_Q4_1) {
        return fy_q_nibble32<true, false>(b + 4, 0, fy_q_half(b), fy_q_half(b + 2), 0, j);
    }
    if (DT == FY_DT_Q5_0) {
        return fy_q_nibble32<false, true>(b + 6, fy_q_u32(b + 2), fy_q_half(b), 0.0f, 16, j);
    }
    if (DT == FY_DT_Q5_1) {
        return fy_q_nibble32<true, true>(b + 8, fy_q_u32(b + 4), fy_q_half(b), fy_q_half(b + 2), 0,
                                         j);
    }
    if (DT == FY_DT_Q4_K) {
        return fy_q_k45<false>(b, j);
    }
    if (DT == FY_DT_Q5_K) {
        return fy_q_k45<true>(b, j);
    }
    return fy_q_q6k(b, j);
}

// --- staging ------------------------------------------------------------------------

// Copies the N bytes at G (any alignment) into ST (16-byte aligned) as
// thread LANE of NLANES that together copy them: the aligned 16-byte window
// around them in whole 16-byte loads, the partial 16 bytes at either end
// byte by byte, so no byte outside [G, G+N) is read. Returns where G's first
// byte lands in ST (G's offset in its 16 bytes); ST needs that plus N plus
// 15 bytes. Host-callable for tests/gpu/test_quant_host.
__host__ __device__ __forceinline__ int fy_q_stage(uint8_t *st, const uint8_t *g, int n, int lane,
                                                   int nlanes)
{
    const uintptr_t a = (uintptr_t)g & ~(uintptr_t)15;
    const int off = (int)((uintptr_t)g - a), units = (off + n + 15) >> 4;
    for (int u = lane; u < units; u += nlanes) {
        const uint8_t *ua = (const uint8_t *)(a + 16 * (uintptr_t)u);
        if (ua >= g && ua + 16 <= g + n) {
#ifdef __CUDA_ARCH__
            *(uint4 *)(st + 16 * u) = __ldg((const uint4 *)ua);
#else
            *(uint4 *)(st + 16 * u) = *(const uint4 *)ua;
#endif
        } else {
            for (int b = 0; b < 16; b++) {
                if (ua + b >= g && ua + b < g + n) {
                    st[16 * u + b] = ua[b];
                }
            }
        }
    }
    return off;
}

// Returns F(fy_q_tag<DT>()) for block type DT, so a launch instantiates its
// kernel for the type it is given (sizes: fy_cu_block_weights(DT), which is
// constexpr); cudaErrorInvalidValue for a type that is not a block type.
template <int DT> struct fy_q_tag {
    static constexpr int dt = DT;
};

template <typename F> static inline cudaError_t fy_q_dispatch(int dt, F f)
{
    switch (dt) {
    case FY_DT_Q8_0:
        return f(fy_q_tag<FY_DT_Q8_0>());
    case FY_DT_Q4_0:
        return f(fy_q_tag<FY_DT_Q4_0>());
    case FY_DT_Q4_1:
        return f(fy_q_tag<FY_DT_Q4_1>());
    case FY_DT_Q5_0:
        return f(fy_q_tag<FY_DT_Q5_0>());
    case FY_DT_Q5_1:
        return f(fy_q_tag<FY_DT_Q5_1>());
    case FY_DT_Q4_K:
        return f(fy_q_tag<FY_DT_Q4_K>());
    case FY_DT_Q5_K:
        return f(fy_q_tag<FY_DT_Q5_K>());
    case FY_DT_Q6_K:
        return f(fy_q_tag<FY_DT_Q6_K>());
    default:
        return cudaErrorInvalidValue;
    }
}

#endif
