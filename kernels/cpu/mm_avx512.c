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
    for (int i = 0; i < M && i < m; i++) { /* constant bound: the tile stays in registers */
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
        MMX_UNROLL8
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
    for (int i = 0; i < M && i < m; i++) { /* constant bound: the tile stays in registers */
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

/* --- Dot kernels on 512-bit registers -------------------------------------------------
 *
 * Decode is a stream of weight bytes; at 2 x 256-bit the template's one block
 * per instruction, with a scalar scale per block, falls short of memory
 * bandwidth. These take 4 blocks of the 32-weight types (Q8_0: 2) or one
 * 256-weight super-block per step: the blocks' quants in one register, their
 * f16 scales gathered and converted together, one int32 -> float and one FMA
 * for all of them. Rows a few at a time share the activation registers. */

/* Lane i/4 of V in lane i (each of 4 values over 4 lanes). */
MMX_INLINE __m512 z_rep4(__m128 v)
{
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                                 _mm512_castps128_ps512(v));
}

/* 16 bytes at P + OFF of each of 4 blocks BB bytes apart. */
MMX_INLINE __m512i z_ld4(const uint8_t *p, size_t bb, int off)
{
    __m512i q = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(p + off)));
    q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + bb + off)), 1);
    q = _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + 2 * bb + off)), 2);
    return _mm512_inserti32x4(q, _mm_loadu_si128((const __m128i *)(p + 3 * bb + off)), 3);
}

/* The f16 at P of 4 blocks BB bytes apart, as floats. Put together in
 * general registers (idle here) rather than by a gather. */
MMX_INLINE __m128 z_h4(const uint8_t *p, int bb)
{
    uint64_t h = (uint64_t)mmx_u16(p) | (uint64_t)mmx_u16(p + bb) << 16 |
                 (uint64_t)mmx_u16(p + 2 * bb) << 32 | (uint64_t)mmx_u16(p + 3 * bb) << 48;
    return _mm_cvtph_ps(_mm_cvtsi64_si128((long long)h));
}

/* 4 values of A, each in the first of its 4 lanes (the others 0). */
MMX_INLINE __m512i z_first4(__m128i a)
{
    return _mm512_maskz_permutexvar_epi32(
        0x1111, _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        _mm512_castsi128_si512(a));
}

/* One token's 4 blocks of fmt A from block B, in the weights' order below: LO
 * holds weights 0-15 of each block (16 bytes per block), HI weights 16-31;
 * INIT the -o * sum offsets and DS the d * sum, each in the first lane of
 * its block's 4 (the other lanes 0); DX each block's d over its 4 lanes. */
typedef struct {
    __m512i lo, hi, init;
    __m512 dx, ds;
} z_x4;

MMX_INLINE z_x4 z_x4_load(const fy__mm_act *a, int b, int min)
{
    z_x4 x;
    __m512i x0 = _mm512_loadu_si512((const void *)(a->q + 32 * b));
    __m512i x1 = _mm512_loadu_si512((const void *)(a->q + 32 * b + 64));
    x.lo = _mm512_permutex2var_epi64(x0, _mm512_setr_epi64(0, 1, 4, 5, 8, 9, 12, 13), x1);
    x.hi = _mm512_permutex2var_epi64(x0, _mm512_setr_epi64(2, 3, 6, 7, 10, 11, 14, 15), x1);
    x.dx = z_rep4(_mm_loadu_ps(a->d + b));
    __m512i aux = z_first4(_mm_loadu_si128((const __m128i *)(a->aux + b)));
    x.init = min ? _mm512_setzero_si512() : aux;
    x.ds = min ? _mm512_castsi512_ps(aux) : _mm512_setzero_ps();
    return x;
}

/* Q5's fifth bits of 4 blocks (qh words at P): 0x10 into the bytes of LO
 * (bits 0-15 of each word) and HI (bits 16-31), the masks built in general
 * registers. */
MMX_INLINE void z_bits5(const uint8_t *p, int bb, __m512i *lo, __m512i *hi)
{
    uint64_t ml = 0, mh = 0;
    for (int i = 0; i < 4; i++) {
        uint32_t q = mmx_u32(p + i * bb);
        ml |= (uint64_t)(q & 0xffff) << (16 * i);
        mh |= (uint64_t)(q >> 16) << (16 * i);
    }
    const __m512i b4 = _mm512_set1_epi8(0x10);
    *lo = _mm512_or_si512(*lo, _mm512_maskz_mov_epi8(_cvtu64_mask64(ml), b4));
    *hi = _mm512_or_si512(*hi, _mm512_maskz_mov_epi8(_cvtu64_mask64(mh), b4));
}

/* 4 blocks of Q4_0/Q4_1/Q5_0/Q5_1 at P: u as LO/HI (z_x4's order), dw over 4
 * lanes each, m in each block's first lane. */
MMX_INLINE void z_unpack4(fy_dtype dt, const uint8_t *p, __m512i *lo, __m512i *hi, __m512 *dw,
                          __m512 *mw)
{
    const int bb = dt == FY_DT_Q4_0 ? 18 : dt == FY_DT_Q4_1 ? 20 : dt == FY_DT_Q5_0 ? 22 : 24;
    const int qs = dt == FY_DT_Q4_0 ? 2 : dt == FY_DT_Q4_1 ? 4 : dt == FY_DT_Q5_0 ? 6 : 8;
    const __m512i m4 = _mm512_set1_epi8(15);
    __m512i q = z_ld4(p, (size_t)bb, qs);
    *lo = _mm512_and_si512(q, m4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
    if (dt == FY_DT_Q5_0 || dt == FY_DT_Q5_1) {
        z_bits5(p + (dt == FY_DT_Q5_0 ? 2 : 4), bb, lo, hi);
    }
    *dw = z_rep4(z_h4(p, bb));
    if (dt == FY_DT_Q4_1 || dt == FY_DT_Q5_1) {
        *mw = _mm512_castsi512_ps(z_first4(_mm_castps_si128(z_h4(p + 2, bb))));
    }
}

#define Z_NT 4 /* tokens per call at most (FY_MM_DOT_NT) */

/* Software prefetch of the N bytes at P + AHEAD (AHEAD: 4 passes of rows
 * on, the same offset 4R rows later): the dot kernels walk R rows side by
 * side, a pattern the hardware prefetcher follows poorly at these speeds
 * (Q4_0 decode streamed 13 GB/s per core without, 21-31 with; 1 and 2
 * passes ahead, or into L2 only, did less). */
#define Z_PREFETCH(p, ahead, n)                         \
    do {                                                \
        const char *pf_ = (const char *)(p) + (ahead);  \
        for (size_t o_ = 0; o_ < (size_t)(n); o_ += 64) \
            _mm_prefetch(pf_ + o_, _MM_HINT_T0);        \
    } while (0)

MMX_INLINE void z_store1(float *out, size_t ldo, int add, int r, int t, float v)
{
    float *o = &out[(size_t)t * ldo + (size_t)r];
    *o = add ? *o + v : v;
}

/* R rows x NT tokens of a 32-weight nibble type over the first NG blocks (a
 * multiple of 4). */
MMX_INLINE void z_dot32_body(fy_dtype dt, const uint8_t *w, size_t rb, int ng, const fy__mm_act *a,
                             float *out, size_t ldo, int add, const int R, const int NT)
{
    const int min = dt == FY_DT_Q4_1 || dt == FY_DT_Q5_1;
    const size_t bb = dt == FY_DT_Q4_0 ? 18 : dt == FY_DT_Q4_1 ? 20 : dt == FY_DT_Q5_0 ? 22 : 24;
    __m512 acc[4][Z_NT];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }
    for (int b = 0; b < ng; b += 4) {
        z_x4 x[Z_NT];
        for (int t = 0; t < NT; t++) {
            x[t] = z_x4_load(&a[t], b, min);
        }
        for (int r = 0; r < R; r++) {
            __m512i lo, hi;
            __m512 dw, mw = _mm512_setzero_ps();
            Z_PREFETCH(w + (size_t)r * rb + (size_t)b * bb, 4 * R * rb, 4 * bb);
            z_unpack4(dt, w + (size_t)r * rb + (size_t)b * bb, &lo, &hi, &dw, &mw);
            for (int t = 0; t < NT; t++) {
                __m512i s = _mm512_dpbusd_epi32(x[t].init, lo, x[t].lo);
                s = _mm512_dpbusd_epi32(s, hi, x[t].hi);
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, x[t].dx), acc[r][t]);
                if (min) {
                    acc[r][t] = _mm512_fmadd_ps(mw, x[t].ds, acc[r][t]);
                }
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            z_store1(out, ldo, add, r, t, _mm512_reduce_add_ps(acc[r][t]));
        }
    }
}

/* Q8_0: 2 blocks per register (32 bytes each, in order), u = q + 128. */
MMX_INLINE void z_dotq8_body(fy_dtype dt, const uint8_t *w, size_t rb, int ng, const fy__mm_act *a,
                             float *out, size_t ldo, int add, const int R, const int NT)
{
    const __m512i idx8 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    __m512 acc[4][Z_NT];
    (void)dt;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }
    for (int b = 0; b < ng; b += 2) {
        __m512i xq[Z_NT], xi[Z_NT];
        __m512 xd[Z_NT];
        for (int t = 0; t < NT; t++) {
            xq[t] = _mm512_loadu_si512((const void *)(a[t].q + 32 * b));
            /* -o * sum of block b in lane 0, of block b + 1 in lane 8. */
            xi[t] = _mm512_maskz_permutexvar_epi32(
                0x0101, idx8,
                _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(a[t].aux + b))));
            xd[t] = _mm512_permutexvar_ps(idx8, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd(
                                                    (const double *)(const void *)(a[t].d + b)))));
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *p = w + (size_t)r * rb + (size_t)b * 34;
            Z_PREFETCH(p, 4 * R * rb, 68);
            __m512i u = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2)));
            u = _mm512_inserti64x4(u, _mm256_loadu_si256((const __m256i *)(p + 36)), 1);
            u = _mm512_xor_si512(u, flip);
            __m128i h = _mm_cvtsi32_si128((int)(mmx_u16(p) | (uint32_t)mmx_u16(p + 34) << 16));
            __m512 dw = _mm512_permutexvar_ps(idx8, _mm512_castps128_ps512(_mm_cvtph_ps(h)));
            for (int t = 0; t < NT; t++) {
                __m512i s = _mm512_dpbusd_epi32(xi[t], u, xq[t]);
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, xd[t]), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            z_store1(out, ldo, add, r, t, _mm512_reduce_add_ps(acc[r][t]));
        }
    }
}

/* The int16 scales in S spread for a product of maddubs: int16 lanes 0-15
 * take S[I0], lanes 16-31 S[I1]. */
MMX_INLINE __m512i z_sc2(__m512i s, int i0, int i1)
{
    __m512i idx = _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16((short)i0),
                                          _mm512_set1_epi16((short)i1));
    return _mm512_permutexvar_epi16(idx, s);
}

/* Q4_K/Q5_K, one super-block per step. The nibble registers give sub-blocks
 * [0 | 2], [1 | 3], [4 | 6], [5 | 7] (32 bytes each); the activations are
 * shuffled to match, once per super-block and token. */
MMX_INLINE void z_dotk45_body(fy_dtype dt, const uint8_t *w, size_t rb, int nsup,
                              const fy__mm_act *a, float *out, size_t ldo, int add, const int R,
                              const int NT)
{
    const int q5 = dt == FY_DT_Q5_K;
    const size_t bb = q5 ? 176 : 144;
    const __m512i m4 = _mm512_set1_epi8(15), one = _mm512_set1_epi8(1);
    __m512 acc[4][Z_NT];
    __m256 macc[4][Z_NT];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
            macc[r][t] = _mm256_setzero_ps();
        }
    }
    for (int b = 0; b < nsup; b++) {
        __m512i xp[Z_NT][4];
        __m256i bs[Z_NT];
        for (int t = 0; t < NT; t++) {
            const int8_t *q = a[t].q + 256 * (size_t)b;
            __m512i a0 = _mm512_loadu_si512((const void *)q);
            __m512i a1 = _mm512_loadu_si512((const void *)(q + 64));
            __m512i a2 = _mm512_loadu_si512((const void *)(q + 128));
            __m512i a3 = _mm512_loadu_si512((const void *)(q + 192));
            xp[t][0] = _mm512_shuffle_i64x2(a0, a1, 0x44);
            xp[t][1] = _mm512_shuffle_i64x2(a0, a1, 0xee);
            xp[t][2] = _mm512_shuffle_i64x2(a2, a3, 0x44);
            xp[t][3] = _mm512_shuffle_i64x2(a2, a3, 0xee);
            bs[t] = mmx_load(a[t].bsum + 16 * (size_t)b);
        }
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * bb;
            const uint8_t *qs = blk + (q5 ? 48 : 16);
            Z_PREFETCH(blk, 4 * R * rb, bb);
            float d = mmx_h(blk), dmin = mmx_h(blk + 2);
            __m256i s16 = _mm256_cvtepu8_epi16(mmx_kscales(blk + 4)); /* [sc x8 | mn x8] */
            __m512i sc = _mm512_castsi256_si512(s16);
            __m128i mn = _mm256_extracti128_si256(s16, 1);
            __m256i mins = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_unpacklo_epi16(mn, mn)), _mm_unpackhi_epi16(mn, mn), 1);
            __m512i za = _mm512_loadu_si512((const void *)qs);
            __m512i zb = _mm512_loadu_si512((const void *)(qs + 64));
            __m512i u[4] = {
                _mm512_and_si512(za, m4), _mm512_and_si512(_mm512_srli_epi16(za, 4), m4),
                _mm512_and_si512(zb, m4), _mm512_and_si512(_mm512_srli_epi16(zb, 4), m4)};
            if (q5) {
                __m512i qh = _mm512_broadcast_i64x4(mmx_load(blk + 16));
                for (int v = 0; v < 4; v++) {
                    const int j0 = (v & 1) + 4 * (v >> 1); /* sub-blocks j0 and j0 + 2 */
                    __m512i sh = _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16((short)j0),
                                                         _mm512_set1_epi16((short)(j0 + 2)));
                    __m512i bit = _mm512_and_si512(_mm512_srlv_epi16(qh, sh), one);
                    u[v] = _mm512_or_si512(u[v], _mm512_slli_epi16(bit, 4));
                }
            }
            __m512i scv[4] = {z_sc2(sc, 0, 2), z_sc2(sc, 1, 3), z_sc2(sc, 4, 6), z_sc2(sc, 5, 7)};
            for (int t = 0; t < NT; t++) {
                __m512i s = _mm512_setzero_si512();
                for (int v = 0; v < 4; v++) {
                    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u[v], xp[t][v]), scv[v]);
                }
                float dx = a[t].d[b];
                acc[r][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d * dx), acc[r][t]);
                macc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs[t], mins)),
                                             _mm256_set1_ps(dmin * dx), macc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            z_store1(out, ldo, add, r, t, _mm512_reduce_add_ps(acc[r][t]) - mmx_hsum(macc[r][t]));
        }
    }
}

/* Q6_K, one super-block per step: the weights come out in order, 64 per
 * register, each 16 with its own int8 scale. */
MMX_INLINE void z_dotk6_body(fy_dtype dt, const uint8_t *w, size_t rb, int nsup,
                             const fy__mm_act *a, float *out, size_t ldo, int add, const int R,
                             const int NT)
{
    const __m512i m4 = _mm512_set1_epi8(15), three = _mm512_set1_epi8(3);
    const __m512i sh01 =
        _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(0), _mm512_set1_epi16(2));
    const __m512i sh23 =
        _mm512_mask_blend_epi16(0xffff0000u, _mm512_set1_epi16(4), _mm512_set1_epi16(6));
    /* int16 lane l of product vector v takes the scale of sub-block 4v + l/8. */
    const __m512i lane8 = _mm512_srli_epi16(
        _mm512_setr_epi32(0x00010000, 0x00030002, 0x00050004, 0x00070006, 0x00090008, 0x000b000a,
                          0x000d000c, 0x000f000e, 0x00110010, 0x00130012, 0x00150014, 0x00170016,
                          0x00190018, 0x001b001a, 0x001d001c, 0x001f001e),
        3);
    __m512 acc[4][Z_NT];
    (void)dt;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }
    for (int b = 0; b < nsup; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * 210;
            Z_PREFETCH(blk, 4 * R * rb, 210);
            __m256i scn = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 192)));
            __m512i sc = _mm512_castsi256_si512(scn);
            float d = mmx_h(blk + 208);
            __m512i l0 = _mm512_loadu_si512((const void *)blk);
            __m512i l1 = _mm512_loadu_si512((const void *)(blk + 64));
            __m512i qh = _mm512_loadu_si512((const void *)(blk + 128));
            __m512i h0 = _mm512_shuffle_i64x2(qh, qh, 0x44),
                    h1 = _mm512_shuffle_i64x2(qh, qh, 0xee);
            __m512i u[4] = {
                _mm512_or_si512(
                    _mm512_and_si512(l0, m4),
                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h0, sh01), three), 4)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(l0, 4), m4),
                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h0, sh23), three), 4)),
                _mm512_or_si512(
                    _mm512_and_si512(l1, m4),
                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h1, sh01), three), 4)),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16(l1, 4), m4),
                    _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(h1, sh23), three), 4))};
            __m512i scv[4];
            for (int v = 0; v < 4; v++) {
                scv[v] = _mm512_permutexvar_epi16(
                    _mm512_add_epi16(lane8, _mm512_set1_epi16((short)(4 * v))), sc);
            }
            for (int t = 0; t < NT; t++) {
                const int8_t *q = a[t].q + 256 * (size_t)b;
                /* The -32 offset: 32 * sum over sub-blocks of scale * sum of its quants. */
                __m256i c = _mm256_madd_epi16(mmx_load(a[t].bsum + 16 * (size_t)b), scn);
                __m512i s = _mm512_zextsi256_si512(
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(c, 5)));
                for (int v = 0; v < 4; v++) {
                    __m512i x = _mm512_loadu_si512((const void *)(q + 64 * v));
                    s = _mm512_dpwssd_epi32(s, _mm512_maddubs_epi16(u[v], x), scv[v]);
                }
                acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(d * a[t].d[b]),
                                            acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            z_store1(out, ldo, add, r, t, _mm512_reduce_add_ps(acc[r][t]));
        }
    }
}

/* 16 floats of a float-type row at element I. */
MMX_INLINE __m512 z_ld16(const uint8_t *p, fy_dtype dt, int64_t i)
{
    if (dt == FY_DT_BF16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)(const void *)p + i));
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (dt == FY_DT_F16) {
        return _mm512_cvtph_ps(
            _mm256_loadu_si256((const __m256i *)((const uint16_t *)(const void *)p + i)));
    }
    return _mm512_loadu_ps((const float *)(const void *)p + i);
}

/* F32/F16/BF16: one row at a time for any NT (a single stream the
 * prefetcher follows; 2 rows side by side streamed F32 10-20% slower), U
 * accumulators per token so that 4 (one token) to 8 FMA chains overlap (4
 * chains for 4 tokens were latency-bound). */
MMX_INLINE void z_dotf_body(fy_dtype dt, const uint8_t *w, int k, const fy__mm_act *a, float *out,
                            size_t ldo, int add, const int NT)
{
    const int U = NT == 1 ? 4 : NT == 2 ? 4 : 2; /* 4 to 8 chains */
    __m512 acc[4][Z_NT];
    for (int u = 0; u < U; u++) {
        for (int t = 0; t < NT; t++) {
            acc[u][t] = _mm512_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 16 * U <= k; i += 16 * U) {
        for (int u = 0; u < U; u++) {
            __m512 wv = z_ld16(w, dt, i + 16 * u);
            for (int t = 0; t < NT; t++) {
                acc[u][t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(a[t].x + i + 16 * u), acc[u][t]);
            }
        }
    }
    for (; i + 16 <= k; i += 16) {
        __m512 wv = z_ld16(w, dt, i);
        for (int t = 0; t < NT; t++) {
            acc[0][t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(a[t].x + i), acc[0][t]);
        }
    }
    for (int t = 0; t < NT; t++) {
        __m512 v = acc[0][t];
        for (int u = 1; u < U; u++) {
            v = _mm512_add_ps(v, acc[u][t]);
        }
        float s = _mm512_reduce_add_ps(v);
        for (int j = i; j < k; j++) {
            s += mmx_f1(w, dt, j) * a[t].x[j];
        }
        z_store1(out, ldo, add, 0, t, s);
    }
}

/* R rows x NT (<= 2) tokens of a float type, 16 weights per step: each row
 * vector serves both tokens, each token vector all R rows. */
MMX_INLINE void z_dotf_tile(fy_dtype dt, const uint8_t *w, size_t rb, int k, const fy__mm_act *a,
                            float *out, size_t ldo, int add, const int R, const int NT)
{
    __m512 acc[4][2];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm512_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m512 xv[2];
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm512_loadu_ps(a[t].x + i);
        }
        for (int r = 0; r < R; r++) {
            __m512 wv = z_ld16(w + (size_t)r * rb, dt, i);
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm512_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            float s = _mm512_reduce_add_ps(acc[r][t]);
            for (int j = i; j < k; j++) {
                s += mmx_f1(w + (size_t)r * rb, dt, j) * a[t].x[j];
            }
            z_store1(out, ldo, add, r, t, s);
        }
    }
}

/* Rows [0, R) for every token, in pairs of tokens. */
MMX_INLINE void z_dotf_pairs(fy_dtype dt, const uint8_t *w, size_t rb, int k, const fy__mm_act *a,
                             int nt, float *out, size_t ldo, int add, const int R)
{
    for (int t = 0; t < nt; t += 2) {
        if (nt - t >= 2) {
            z_dotf_tile(dt, w, rb, k, a + t, out + (size_t)t * ldo, ldo, add, R, 2);
        } else {
            z_dotf_tile(dt, w, rb, k, a + t, out + (size_t)t * ldo, ldo, add, R, 1);
        }
    }
}

/* Float types: one token one row at a time (z_dotf_body); more tokens as
 * 4-row x 2-token tiles, token pairs in turn over the same rows (in L1 by
 * the second pair). */
#define Z_DOTF(name, dt)                                                                         \
    MMX_FN void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        int r = 0;                                                                               \
        if (nt == 1) {                                                                           \
            for (; r < nrows; r++)                                                               \
                z_dotf_body(dt, w + (size_t)r * rb, k, a, out + r, ldo, add, 1);                 \
            return;                                                                              \
        }                                                                                        \
        for (; r + 4 <= nrows; r += 4)                                                           \
            z_dotf_pairs(dt, w + (size_t)r * rb, rb, k, a, nt, out + r, ldo, add, 4);            \
        for (; r < nrows; r++)                                                                   \
            z_dotf_pairs(dt, w + (size_t)r * rb, rb, k, a, nt, out + r, ldo, add, 1);            \
    }

Z_DOTF(z_dot_f32, FY_DT_F32)
Z_DOTF(z_dot_f16, FY_DT_F16)
Z_DOTF(z_dot_bf16, FY_DT_BF16)

/* Rows in passes of 4 / NT (then single rows). */
#define Z_DOT_ROWS(BODY, dt, n)                                                    \
    do {                                                                           \
        int r_ = 0;                                                                \
        switch (nt) {                                                              \
        case 1:                                                                    \
            for (; r_ + 4 <= nrows; r_ += 4)                                       \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 4, 1); \
            for (; r_ < nrows; r_++)                                               \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 1, 1); \
            break;                                                                 \
        case 2:                                                                    \
            for (; r_ + 2 <= nrows; r_ += 2)                                       \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 2, 2); \
            for (; r_ < nrows; r_++)                                               \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 1, 2); \
            break;                                                                 \
        case 3:                                                                    \
            for (; r_ < nrows; r_++)                                               \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 1, 3); \
            break;                                                                 \
        default:                                                                   \
            for (; r_ < nrows; r_++)                                               \
                BODY(dt, w + (size_t)r_ * rb, rb, n, a, out + r_, ldo, add, 1, 4); \
            break;                                                                 \
        }                                                                          \
    } while (0)

/* The 32-weight types: groups of G blocks here, the rest through the
 * template's 256-bit kernel, added on top. */
#define Z_DOT32(name, dt, BODY, G, TAIL)                                                         \
    MMX_FN void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        int nb = k / 32, ng = nb / (G) * (G);                                                    \
        if (ng) {                                                                                \
            Z_DOT_ROWS(BODY, dt, ng);                                                            \
        }                                                                                        \
        if (ng < nb) {                                                                           \
            fy__mm_act t_[FY_MM_DOT_NT];                                                         \
            for (int i = 0; i < nt; i++) {                                                       \
                t_[i] = a[i];                                                                    \
                t_[i].q += 32 * ng;                                                              \
                t_[i].d += ng;                                                                   \
                t_[i].aux += ng;                                                                 \
            }                                                                                    \
            TAIL(w + (size_t)ng * fy_dtype_block_bytes(dt), rb, nrows, k - 32 * ng, t_, nt, out, \
                 ldo, add || ng > 0);                                                            \
        }                                                                                        \
    }

Z_DOT32(z_dot_q8_0, FY_DT_Q8_0, z_dotq8_body, 2, mmx_dot_q8_0)
Z_DOT32(z_dot_q4_0, FY_DT_Q4_0, z_dot32_body, 4, mmx_dot_q4_0)
Z_DOT32(z_dot_q4_1, FY_DT_Q4_1, z_dot32_body, 4, mmx_dot_q4_1)
Z_DOT32(z_dot_q5_0, FY_DT_Q5_0, z_dot32_body, 4, mmx_dot_q5_0)
Z_DOT32(z_dot_q5_1, FY_DT_Q5_1, z_dot32_body, 4, mmx_dot_q5_1)

#define Z_DOTK(name, dt, BODY)                                                                   \
    MMX_FN void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        Z_DOT_ROWS(BODY, dt, k / 256);                                                           \
    }

Z_DOTK(z_dot_q4_k, FY_DT_Q4_K, z_dotk45_body)
Z_DOTK(z_dot_q5_k, FY_DT_Q5_K, z_dotk45_body)
Z_DOTK(z_dot_q6_k, FY_DT_Q6_K, z_dotk6_body)

const fy__mm_kern fy__mm_avx512 = {
    .isa = FY_ISA_AVX512,
    MMX_KERN_QUANT,
    .dot[FY_DT_F32] = z_dot_f32,
    .dot[FY_DT_F16] = z_dot_f16,
    .dot[FY_DT_BF16] = z_dot_bf16,
    .dot[FY_DT_Q8_0] = z_dot_q8_0,
    .dot[FY_DT_Q4_0] = z_dot_q4_0,
    .dot[FY_DT_Q4_1] = z_dot_q4_1,
    .dot[FY_DT_Q5_0] = z_dot_q5_0,
    .dot[FY_DT_Q5_1] = z_dot_q5_1,
    .dot[FY_DT_Q4_K] = z_dot_q4_k,
    .dot[FY_DT_Q5_K] = z_dot_q5_k,
    .dot[FY_DT_Q6_K] = z_dot_q6_k,
    MMX_KERN_DOT_T,
    .f_mr = Z_MR,
    .f_nr = Z_FNR,
    .gemmf = z_gemmf,
    .q_mr = Z_MR,
    .q_nr = Z_QNR,
    .gemmq = z_gemmq,
};
#endif
