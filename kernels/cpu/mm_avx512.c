/* mm_avx512.c: the AVX512 matmul kernels: mm_x86.h's 256-bit dot kernels
 * compiled with AVX512-VNNI + VL (vpdpbusd, 32 vector registers), and GEMM
 * microkernels on 512-bit registers:
 *  - f32: a 12-token x 32-row tile (24 accumulators), each panel row of 32
 *    weights loaded once per k and each activation broadcast once;
 *  - block types: a 12-token x 16-row tile; per 4 weights of a sub-block one
 *    vpdpbusd per token against the panel's 16 rows (64 products), then per
 *    sub-block int32 -> float, times the rows' dw, times the token's dx. */
#include "kernels/cpu/mm.h"

#if FY_MM_X86
#define MMX_TARGET \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#define MMX_VNNI 2
#define MMX_R    8
#define MMX_NO_GEMM
#include "kernels/cpu/mm_x86.h"

#define Z_MR   12 /* tile tokens */
#define Z_FNR  32 /* f32 panel rows */
#define Z_QNR  16 /* block-type panel rows */
#define Z_MMAX 12

MMX_INLINE __mmask16 z_mask(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

MMX_INLINE void z_store(float *o, __m512 v, int n, int add)
{
    __mmask16 k = z_mask(n);
    if (k == 0xffff) {
        _mm512_storeu_ps(o, add ? _mm512_add_ps(_mm512_loadu_ps(o), v) : v);
    } else if (k) {
        if (add) {
            v = _mm512_add_ps(_mm512_maskz_loadu_ps(k, o), v);
        }
        _mm512_mask_storeu_ps(o, k, v);
    }
}

MMX_INLINE void z_gemmf_body(const float *p, const float *x, size_t ldx, int kc, float *c,
                             size_t ldc, int m, int n, int add, const int M)
{
    m = m < M ? m : M; /* (m <= M always; this lets the compiler see it) */
    __m512 a0[Z_MMAX], a1[Z_MMAX];
    const float *xr[Z_MMAX];
    for (int i = 0; i < M; i++) {
        a0[i] = a1[i] = _mm512_setzero_ps();
        xr[i] = x + (size_t)(i < m ? i : m - 1) * ldx;
    }
    for (int k = 0; k < kc; k++) {
        __m512 w0 = _mm512_loadu_ps(p + (size_t)k * 32),
               w1 = _mm512_loadu_ps(p + (size_t)k * 32 + 16);
        for (int i = 0; i < M; i++) {
            __m512 xb = _mm512_set1_ps(xr[i][k]);
            a0[i] = _mm512_fmadd_ps(w0, xb, a0[i]);
            a1[i] = _mm512_fmadd_ps(w1, xb, a1[i]);
        }
    }
    for (int i = 0; i < m; i++) {
        z_store(c + (size_t)i * ldc, a0[i], n, add);
        z_store(c + (size_t)i * ldc + 16, a1[i], n - 16, add);
    }
}

MMX_FN void z_gemmf(const float *p, const float *x, size_t ldx, int kc, float *c, size_t ldc, int m,
                    int n, int add)
{
    if (m > 8) {
        z_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 12);
    } else if (m > 4) {
        z_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 8);
    } else if (m > 2) {
        z_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 4);
    } else if (m == 2) {
        z_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 2);
    } else {
        z_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 1);
    }
}

MMX_INLINE void z_gemmq_body(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, float *c,
                             size_t ldc, int m, int n, int add, const int M, const int SB,
                             const int MIN)
{
    m = m < M ? m : M; /* (m <= M always; this lets the compiler see it) */
    const uint8_t *pu = p;
    const float *pd = (const float *)(const void *)(p + fy__mm_al64((size_t)nsb * SB * 16));
    const float *pm = pd + fy__mm_al64((size_t)nsb * 16 * 4) / 4;
    const uint8_t *xq = xt;
    const float *xd = (const float *)(const void *)(xt + fy__mm_al64((size_t)nsb * SB * mrx));
    const int32_t *xa =
        (const int32_t *)(const void *)(xd + fy__mm_al64((size_t)nsb * mrx * 4) / 4);
    __m512 f[Z_MMAX];
    for (int i = 0; i < M; i++) {
        f[i] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nsb; b++) {
        __m512i s[Z_MMAX];
        for (int i = 0; i < M; i++) {
            s[i] = MIN ? _mm512_setzero_si512() : _mm512_set1_epi32(xa[(size_t)b * mrx + i]);
        }
        for (int g = 0; g < SB / 4; g++) {
            size_t kg = (size_t)b * (SB / 4) + g;
            __m512i wv = _mm512_loadu_si512((const void *)(pu + kg * 64));
            const uint8_t *x4 = xq + kg * (size_t)mrx * 4;
            for (int i = 0; i < M; i++) {
                int32_t v;
                memcpy(&v, x4 + 4 * i, 4);
                s[i] = _mm512_dpbusd_epi32(s[i], wv, _mm512_set1_epi32(v));
            }
        }
        __m512 dw = _mm512_loadu_ps(pd + (size_t)b * 16);
        for (int i = 0; i < M; i++) {
            f[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s[i]), dw),
                                   _mm512_set1_ps(xd[(size_t)b * mrx + i]), f[i]);
        }
        if (MIN) {
            __m512 mw = _mm512_loadu_ps(pm + (size_t)b * 16);
            for (int i = 0; i < M; i++) {
                float ds;
                memcpy(&ds, xa + (size_t)b * mrx + i, sizeof ds);
                f[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(ds), f[i]);
            }
        }
    }
    for (int i = 0; i < m; i++) {
        z_store(c + (size_t)i * ldc, f[i], n, add);
    }
}

#define Z_GQ(M, SB, MIN) z_gemmq_body(p, xt, mrx, nsb, c, ldc, m, n, add, M, SB, MIN)
#define Z_GQ_M(SB, MIN)        \
    do {                       \
        if (m > 8)             \
            Z_GQ(12, SB, MIN); \
        else if (m > 4)        \
            Z_GQ(8, SB, MIN);  \
        else if (m > 2)        \
            Z_GQ(4, SB, MIN);  \
        else if (m == 2)       \
            Z_GQ(2, SB, MIN);  \
        else                   \
            Z_GQ(1, SB, MIN);  \
    } while (0)

MMX_FN void z_gemmq(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, int sb, int min, int sgn,
                    float *c, size_t ldc, int m, int n, int add)
{
    (void)sgn; /* vpdpbusd takes Q8_0's u = q + 128 as it is */
    if (sb == 16) {
        Z_GQ_M(16, 0);
    } else if (min) {
        Z_GQ_M(32, 1);
    } else {
        Z_GQ_M(32, 0);
    }
}

const fy__mm_kern fy__mm_avx512 = {
    .isa = FY_ISA_AVX512,
    MMX_KERN_DOTS,
    .dot_tf = 3,
    .dot_tq = 3,
    .f_mr = Z_MR,
    .f_nr = Z_FNR,
    .gemmf = z_gemmf,
    .q_mr = Z_MR,
    .q_nr = Z_QNR,
    .gemmq = z_gemmq,
};
#endif
