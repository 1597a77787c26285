/* mm_x86.h: the 256-bit matmul kernels (mm.h), one text compiled three
 * times: by mm_avx2.c, mm_avxvnni.c and mm_avx512.c, each defining
 *
 *   MMX_TARGET    the target attribute of every function here
 *   MMX_VNNI      0: integer dots through maddubs + madd (AVX2);
 *                 1: vpdpbusd (AVX-VNNI, VEX); 2: vpdpbusd (AVX512-VNNI + VL, EVEX)
 *   MMX_R         rows per dot-kernel pass (AVX512's 32 vector registers take more)
 *   MMX_NO_GEMM   (optional) leave the GEMM microkernels out
 *
 * before including it. Function-level targets (not per-file flags) keep the
 * build at the baseline ISA; the driver calls a table only after checking
 * the CPU (fy__cpu_isa_usable).
 *
 * Integer dots: u (unsigned bytes) against int8 activations, 4 products per
 * int32 lane. maddubs adds two u*q products into a saturating int16, so on
 * AVX2 it is exact only while 2 * max(u) * 127 <= 32767: true for every u
 * here (at most 63) but Q8_0's u = q + 128, which instead goes through the
 * sign trick (|q| against the activations with q's sign), in both the dot
 * kernel and the SGN GEMM panels. vpdpbusd has no intermediate saturation. */
#include "kernels/cpu/mm.h"
#include "kernels/cpu/quant.h"

#include <immintrin.h>
#include <string.h>

/* Register arrays are declared at their largest and indexed by constants
 * once inlined, so they live in registers. */
#define MMX_RMAX 8 /* dot rows */
#define MMX_MMAX 6 /* GEMM tile tokens (MR at most) */

/* (unused: each including file takes the kernels it wants from the template) */
/* Loops over the 4-weight groups of a sub-block are unrolled, or the
 * compiler rotates the tile's accumulators through copies and spills. */
#define MMX_UNROLL8 _Pragma("GCC unroll 8")

#define MMX_FN     static __attribute__((unused)) MMX_TARGET
#define MMX_INLINE static inline __attribute__((always_inline)) MMX_TARGET

#if MMX_VNNI == 1
#define MMX_DPBUSD(acc, u, s) _mm256_dpbusd_avx_epi32((acc), (u), (s))
#elif MMX_VNNI == 2
#define MMX_DPBUSD(acc, u, s) _mm256_dpbusd_epi32((acc), (u), (s))
#else
#define MMX_DPBUSD(acc, u, s) \
    _mm256_add_epi32((acc), _mm256_madd_epi16(_mm256_maddubs_epi16((u), (s)), _mm256_set1_epi16(1)))
#endif

/* --- Small helpers -------------------------------------------------------------------- */

MMX_INLINE float mmx_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

MMX_INLINE float mmx_hmax(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

MMX_INLINE int mmx_hsum_i(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* An IEEE half at P (any alignment) as a float. */
MMX_INLINE float mmx_h(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, sizeof h);
    return _cvtsh_ss(h);
}

MMX_INLINE uint32_t mmx_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

MMX_INLINE uint32_t mmx_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The float whose bits are the int32 at P, broadcast. */
MMX_INLINE __m256 mmx_f32(const int32_t *p)
{
    float f;
    memcpy(&f, p, sizeof f);
    return _mm256_set1_ps(f);
}

MMX_INLINE __m256i mmx_load(const void *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}

/* Lanes j < N set (masks for partial tiles). */
MMX_INLINE __m256i mmx_mask(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

MMX_INLINE void mmx_store(float *o, __m256 v, int n, int add)
{
    if (n >= 8) {
        _mm256_storeu_ps(o, add ? _mm256_add_ps(_mm256_loadu_ps(o), v) : v);
    } else if (n > 0) {
        __m256i mk = mmx_mask(n);
        if (add) {
            v = _mm256_add_ps(_mm256_maskload_ps(o, mk), v);
        }
        _mm256_maskstore_ps(o, mk, v);
    }
}

/* 8 floats of a float-type row at element I. */
MMX_INLINE __m256 mmx_ld8(const void *p, fy_dtype dt, int64_t i)
{
    if (dt == FY_DT_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    if (dt == FY_DT_F16) {
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
    }
    return _mm256_loadu_ps((const float *)p + i);
}

/* Element J of a float-type row (the tails of the float dot kernels). */
MMX_INLINE float mmx_f1(const uint8_t *row, fy_dtype dt, int j)
{
    if (dt == FY_DT_F32) {
        float f;
        memcpy(&f, row + (size_t)j * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + (size_t)j * 2, 2);
    return dt == FY_DT_F16 ? _cvtsh_ss(h) : fy_bf16_to_f32(h);
}

/* --- Activation quantizers -------------------------------------------------------------- */

/* 32 floats at X to int8 with one scale (round to nearest even); returns the
 * scale, puts the bytes in order at Q and their sum in *S. */
MMX_INLINE float mmx_quant32(const float *x, int8_t *q, int *s)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
    float amax = mmx_hmax(m);
    __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
    /* |x * id| <= 127 up to rounding: clamp (NaN, from an inf, became INT_MIN). */
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    i0 = _mm256_max_epi32(_mm256_min_epi32(i0, lim), nlim);
    i1 = _mm256_max_epi32(_mm256_min_epi32(i1, lim), nlim);
    i2 = _mm256_max_epi32(_mm256_min_epi32(i2, lim), nlim);
    i3 = _mm256_max_epi32(_mm256_min_epi32(i3, lim), nlim);
    *s = mmx_hsum_i(_mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)));
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i *)q, p);
    return amax / 127.0f;
}

MMX_FN void mmx_quant_a(const fy__mm_act *a, const float *x, size_t k, int o, int min)
{
    int8_t *q = (int8_t *)a->q;
    float *d = (float *)a->d;
    int32_t *aux = (int32_t *)a->aux;
    for (size_t b = 0; b < k / 32; b++) {
        int s;
        d[b] = mmx_quant32(x + 32 * b, q + 32 * b, &s);
        aux[b] = fy__mm_aux(s, d[b], o, min);
    }
}

MMX_FN void mmx_quant_b(const fy__mm_act *a, const float *x, size_t k)
{
    int8_t *q = (int8_t *)a->q;
    float *d = (float *)a->d;
    int16_t *bs = (int16_t *)a->bsum;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (size_t b = 0; b < k / 256; b++) {
        const float *xb = x + 256 * b;
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < 256; i += 8) {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + i)));
        }
        float amax = mmx_hmax(m);
        __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
        d[b] = amax / 127.0f;
        for (int i = 0; i < 256; i += 32) {
            __m256i v[4];
            for (int j = 0; j < 4; j++) {
                v[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * j), id));
                v[j] = _mm256_max_epi32(_mm256_min_epi32(v[j], lim), nlim);
            }
            bs[16 * b + (size_t)i / 16] = (int16_t)mmx_hsum_i(_mm256_add_epi32(v[0], v[1]));
            bs[16 * b + (size_t)i / 16 + 1] = (int16_t)mmx_hsum_i(_mm256_add_epi32(v[2], v[3]));
            __m256i p =
                _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + 256 * b + i), p);
        }
    }
}

/* 16 floats to int8 with one scale (Q6_K's GEMM sub-blocks). */
MMX_INLINE float mmx_quant16(const float *x, int8_t *q, int *s)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    float amax = mmx_hmax(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)));
    __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    const __m256i lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id));
    i0 = _mm256_max_epi32(_mm256_min_epi32(i0, lim), nlim);
    i1 = _mm256_max_epi32(_mm256_min_epi32(i1, lim), nlim);
    *s = mmx_hsum_i(_mm256_add_epi32(i0, i1));
    __m256i p = _mm256_packs_epi32(i0, i1); /* [i0 0-3, i1 0-3 | i0 4-7, i1 4-7] as int16 */
    p = _mm256_permute4x64_epi64(p, 0xd8);
    __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    _mm_storeu_si128((__m128i *)q, b);
    return amax / 127.0f;
}

MMX_FN void mmx_quant_tile(uint8_t *dst, const float *x, size_t ldx, int ntok, int mr, int kc,
                           int sb, int o, int min)
{
    int nsb = kc / sb;
    int8_t *q = (int8_t *)dst;
    float *d = (float *)(void *)(dst + fy__mm_al64((size_t)nsb * sb * mr));
    int32_t *aux = (int32_t *)(void *)((char *)d + fy__mm_al64((size_t)nsb * mr * 4));
    if (ntok < mr) {
        memset(dst, 0, fy__mm_tile_bytes(mr, kc, sb));
    }
    for (int t = 0; t < ntok; t++) {
        const float *xt = x + (size_t)t * ldx;
        for (int b = 0; b < nsb; b++) {
            int8_t tmp[32];
            int s;
            float db = sb == 32 ? mmx_quant32(xt + (size_t)b * 32, tmp, &s)
                                : mmx_quant16(xt + (size_t)b * 16, tmp, &s);
            for (int g = 0; g < sb / 4; g++) {
                memcpy(q + (((size_t)b * (sb / 4) + g) * mr + t) * 4, tmp + 4 * g, 4);
            }
            d[(size_t)b * mr + t] = db;
            aux[(size_t)b * mr + t] = fy__mm_aux(s, db, o, min);
        }
    }
}

/* --- Float panels ---------------------------------------------------------------------- */

/* 8 x 8 transpose of R[0..8) in place. */
MMX_INLINE void mmx_tr8(__m256 r[8])
{
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* mm.h's fy__mm_pack_f: 8 rows x 8 weights at a time, converted on load and
 * transposed in registers; rows past the matrix are zero. */
MMX_FN void mmx_pack_f(float *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc)
{
    fy_dtype dt = w->dtype;
    size_t es = fy_dtype_size(dt), K = (size_t)w->cols;
    int kv = kc / 8 * 8;
    for (int j0 = 0; j0 < nr; j0 += 8) {
        const uint8_t *row[8];
        int live[8];
        for (int j = 0; j < 8; j++) {
            int64_t r = r0 + j0 + j;
            live[j] = r < w->rows;
            row[j] = (const uint8_t *)w->data + ((size_t)(live[j] ? r : r0) * K + (size_t)k0) * es;
        }
        for (int k = 0; k < kv; k += 8) {
            __m256 v[8];
            for (int j = 0; j < 8; j++) {
                v[j] = live[j] ? mmx_ld8(row[j], dt, k) : _mm256_setzero_ps();
            }
            mmx_tr8(v);
            for (int i = 0; i < 8; i++) {
                _mm256_storeu_ps(dst + (size_t)(k + i) * nr + j0, v[i]);
            }
        }
        for (int k = kv; k < kc; k++) {
            for (int j = 0; j < 8; j++) {
                float f = 0.0f;
                if (live[j] && dt == FY_DT_F32) {
                    memcpy(&f, row[j] + (size_t)k * 4, 4);
                } else if (live[j]) {
                    uint16_t h;
                    memcpy(&h, row[j] + (size_t)k * 2, 2);
                    f = dt == FY_DT_F16 ? _cvtsh_ss(h) : fy_bf16_to_f32(h);
                }
                dst[(size_t)k * nr + j0 + j] = f;
            }
        }
    }
}

/* --- Dot kernels: float types ---------------------------------------------------------- */

/* R rows x NT tokens, 8 weights at a time, one accumulator per pair. */
MMX_INLINE void mmx_dotf_body(fy_dtype dt, const uint8_t *w, size_t rb, int k, const fy__mm_act *a,
                              float *out, size_t ldo, int add, const int R, const int NT)
{
    __m256 acc[MMX_RMAX][FY_MM_DOT_NT];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
        }
    }
    int i = 0;
    for (; i + 8 <= k; i += 8) {
        __m256 xv[FY_MM_DOT_NT];
        for (int t = 0; t < NT; t++) {
            xv[t] = _mm256_loadu_ps(a[t].x + i);
        }
        for (int r = 0; r < R; r++) {
            __m256 wv = mmx_ld8(w + (size_t)r * rb, dt, i);
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            float s = mmx_hsum(acc[r][t]);
            for (int j = i; j < k; j++) {
                s += mmx_f1(w + (size_t)r * rb, dt, j) * a[t].x[j];
            }
            float *o = &out[(size_t)t * ldo + (size_t)r];
            *o = add ? *o + s : s;
        }
    }
}

/* One token, one row at a time, 4 accumulators over 32 weights: a single
 * sequential stream per thread, which the hardware prefetcher follows (4
 * rows side by side streamed F32 at 22 GB/s per core and BF16 at 14; this
 * shape at 29 and 22). */
MMX_INLINE void mmx_dotf1(fy_dtype dt, const uint8_t *w, size_t rb, int nrows, int k,
                          const fy__mm_act *a, float *out, int add)
{
    const float *x = a[0].x;
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        int i = 0;
        for (; i + 32 <= k; i += 32) {
            s0 = _mm256_fmadd_ps(mmx_ld8(row, dt, i), _mm256_loadu_ps(x + i), s0);
            s1 = _mm256_fmadd_ps(mmx_ld8(row, dt, i + 8), _mm256_loadu_ps(x + i + 8), s1);
            s2 = _mm256_fmadd_ps(mmx_ld8(row, dt, i + 16), _mm256_loadu_ps(x + i + 16), s2);
            s3 = _mm256_fmadd_ps(mmx_ld8(row, dt, i + 24), _mm256_loadu_ps(x + i + 24), s3);
        }
        for (; i + 8 <= k; i += 8) {
            s0 = _mm256_fmadd_ps(mmx_ld8(row, dt, i), _mm256_loadu_ps(x + i), s0);
        }
        float s = mmx_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
        for (; i < k; i++) {
            s += mmx_f1(row, dt, i) * x[i];
        }
        out[r] = add ? out[r] + s : s;
    }
}

#define MMX_DOTF_FN(name, dt)                                                                    \
    MMX_FN void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        if (nt == 1) {                                                                           \
            mmx_dotf1(dt, w, rb, nrows, k, a, out, add);                                         \
            return;                                                                              \
        }                                                                                        \
        MMX_DOT_ROWS(mmx_dotf_body, dt, 4, 4);                                                   \
    }

/* The row loop: passes of R rows (R chosen for NT), then single rows. BODY is
 * an always-inline kernel taking (dt, w, rb, k, a, out, ldo, add, R, NT). */
#define MMX_DOT_ROWS(BODY, dt, R1, R2)                                                \
    do {                                                                              \
        int r_ = 0;                                                                   \
        switch (nt) {                                                                 \
        case 1:                                                                       \
            for (; r_ + (R1) <= nrows; r_ += (R1))                                    \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, (R1), 1); \
            for (; r_ < nrows; r_++)                                                  \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 1, 1);    \
            break;                                                                    \
        case 2:                                                                       \
            for (; r_ + (R2) <= nrows; r_ += (R2))                                    \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, (R2), 2); \
            for (; r_ < nrows; r_++)                                                  \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 1, 2);    \
            break;                                                                    \
        case 3:                                                                       \
            for (; r_ + 2 <= nrows; r_ += 2)                                          \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 2, 3);    \
            for (; r_ < nrows; r_++)                                                  \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 1, 3);    \
            break;                                                                    \
        default:                                                                      \
            for (; r_ + 2 <= nrows; r_ += 2)                                          \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 2, 4);    \
            for (; r_ < nrows; r_++)                                                  \
                BODY(dt, w + (size_t)r_ * rb, rb, k, a, out + r_, ldo, add, 1, 4);    \
            break;                                                                    \
        }                                                                             \
    } while (0)

#define MMX_DOT_FN(name, dt, BODY, R1, R2)                                                       \
    MMX_FN void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        MMX_DOT_ROWS(BODY, dt, R1, R2);                                                          \
    }

MMX_DOTF_FN(mmx_dot_f32, FY_DT_F32)
MMX_DOTF_FN(mmx_dot_f16, FY_DT_F16)
MMX_DOTF_FN(mmx_dot_bf16, FY_DT_BF16)

/* --- Dot kernels: the 32-weight block types --------------------------------------------- */

/* Weights j and j + 16 from the low and high nibbles of the 16 bytes at P. */
MMX_INLINE __m256i mmx_nib32(const uint8_t *p)
{
    __m128i t = _mm_loadu_si128((const __m128i *)p);
    __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(t), _mm_srli_epi16(t, 4), 1);
    return _mm256_and_si256(v, _mm256_set1_epi8(15));
}

/* 0x10 in byte j where bit j of QH is set (Q5's fifth bits). */
MMX_INLINE __m256i mmx_bit4(uint32_t qh)
{
    const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2,
                                          2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bm = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i t = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    t = _mm256_cmpeq_epi8(_mm256_and_si256(t, bm), bm);
    return _mm256_and_si256(t, _mm256_set1_epi8(0x10));
}

/* Block B of type DT: u (or Q8_0's signed q on AVX2), dw, and m. */
MMX_INLINE __m256i mmx_unpack32(fy_dtype dt, const uint8_t *b, float *dw, float *m)
{
    *dw = mmx_h(b);
    switch (dt) {
    case FY_DT_Q8_0: {
        __m256i q = mmx_load(b + 2);
        return MMX_VNNI ? _mm256_xor_si256(q, _mm256_set1_epi8((char)0x80)) : q;
    }
    case FY_DT_Q4_0:
        return mmx_nib32(b + 2);
    case FY_DT_Q4_1:
        *m = mmx_h(b + 2);
        return mmx_nib32(b + 4);
    case FY_DT_Q5_0:
        return _mm256_or_si256(mmx_nib32(b + 6), mmx_bit4(mmx_u32(b + 2)));
    default: /* Q5_1 */
        *m = mmx_h(b + 2);
        return _mm256_or_si256(mmx_nib32(b + 8), mmx_bit4(mmx_u32(b + 4)));
    }
}

MMX_INLINE void mmx_dot32_body(fy_dtype dt, const uint8_t *w, size_t rb, int k, const fy__mm_act *a,
                               float *out, size_t ldo, int add, const int R, const int NT)
{
    const int min = dt == FY_DT_Q4_1 || dt == FY_DT_Q5_1;
    const int sgn = dt == FY_DT_Q8_0 && !MMX_VNNI;
    const size_t bb = fy_dtype_block_bytes(dt);
    __m256 acc[MMX_RMAX][FY_MM_DOT_NT];
    float macc[MMX_RMAX][FY_MM_DOT_NT];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = 0.0f;
        }
    }
    for (int b = 0; b < k / 32; b++) {
        __m256i xq[FY_MM_DOT_NT];
        for (int t = 0; t < NT; t++) {
            xq[t] = mmx_load(a[t].q + 32 * b);
        }
        for (int r = 0; r < R; r++) {
            float dw, m = 0.0f;
            __m256i u = mmx_unpack32(dt, w + (size_t)r * rb + (size_t)b * bb, &dw, &m);
            __m256i ua = sgn ? _mm256_sign_epi8(u, u) : u;
            for (int t = 0; t < NT; t++) {
                __m256i p;
                if (sgn) {
                    p = _mm256_madd_epi16(_mm256_maddubs_epi16(ua, _mm256_sign_epi8(xq[t], u)),
                                          _mm256_set1_epi16(1));
                } else {
                    p = min ? _mm256_setzero_si256()
                            : _mm256_setr_epi32(a[t].aux[b], 0, 0, 0, 0, 0, 0, 0);
                    p = MMX_DPBUSD(p, u, xq[t]);
                }
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[t].d[b]),
                                            acc[r][t]);
                if (min) {
                    float ds;
                    memcpy(&ds, &a[t].aux[b], sizeof ds);
                    macc[r][t] += m * ds;
                }
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            float s = mmx_hsum(acc[r][t]) + macc[r][t];
            float *o = &out[(size_t)t * ldo + (size_t)r];
            *o = add ? *o + s : s;
        }
    }
}

MMX_DOT_FN(mmx_dot_q8_0, FY_DT_Q8_0, mmx_dot32_body, MMX_R, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q4_0, FY_DT_Q4_0, mmx_dot32_body, MMX_R, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q4_1, FY_DT_Q4_1, mmx_dot32_body, MMX_R, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q5_0, FY_DT_Q5_0, mmx_dot32_body, MMX_R, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q5_1, FY_DT_Q5_1, mmx_dot32_body, MMX_R, MMX_R / 2)

/* --- Dot kernels: K-quants against fmt B ------------------------------------------------ */

/* Q4_K/Q5_K: the 8 6-bit scales (low 8 bytes) and mins (high 8) of the 12 bytes at S. */
MMX_INLINE __m128i mmx_kscales(const uint8_t *s)
{
    uint32_t a = mmx_u32(s), b = mmx_u32(s + 4), c = mmx_u32(s + 8);
    uint32_t sc_lo = a & 0x3f3f3f3f, mn_lo = b & 0x3f3f3f3f;
    uint32_t sc_hi = (c & 0x0f0f0f0f) | ((a >> 2) & 0x30303030);
    uint32_t mn_hi = ((c >> 4) & 0x0f0f0f0f) | ((b >> 2) & 0x30303030);
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)mn_lo, (int)mn_hi);
}

/* int16 element J of each 128-bit lane of V, in every int16 of that lane. */
#define MMX_PICK16(v, j) \
    _mm256_shuffle_epi8((v), _mm256_set1_epi16((short)((2 * (j) + 1) << 8 | 2 * (j))))

MMX_INLINE void mmx_dotk45_body(fy_dtype dt, const uint8_t *w, size_t rb, int k,
                                const fy__mm_act *a, float *out, size_t ldo, int add, const int R,
                                const int NT)
{
    const int q5 = dt == FY_DT_Q5_K;
    const size_t bb = q5 ? 176 : 144;
    const __m256i low4 = _mm256_set1_epi8(15);
    __m256 acc[MMX_RMAX][FY_MM_DOT_NT], macc[MMX_RMAX][FY_MM_DOT_NT];
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
            macc[r][t] = _mm256_setzero_ps();
        }
    }
    for (int b = 0; b < k / 256; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * bb;
            const uint8_t *qs = blk + (q5 ? 48 : 16);
            float d = mmx_h(blk), dmin = mmx_h(blk + 2);
            __m256i s16 = _mm256_cvtepu8_epi16(mmx_kscales(blk + 4)); /* [sc x8 | mn x8] */
            __m256i scv = _mm256_permute2x128_si256(s16, s16, 0x00);
            __m128i mn = _mm256_extracti128_si256(s16, 1);
            __m256i mins = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_unpacklo_epi16(mn, mn)), _mm_unpackhi_epi16(mn, mn), 1);
            __m256i qh = q5 ? mmx_load(blk + 16) : _mm256_setzero_si256();
            __m256i sumi[FY_MM_DOT_NT];
            for (int t = 0; t < NT; t++) {
                sumi[t] = _mm256_setzero_si256();
            }
            for (int p = 0; p < 4; p++) {
                __m256i q4 = mmx_load(qs + 32 * p);
                __m256i lo = _mm256_and_si256(q4, low4);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
                if (q5) {
                    const __m256i one = _mm256_set1_epi8(1);
                    lo = _mm256_or_si256(
                        lo,
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), one), 4));
                    hi = _mm256_or_si256(
                        hi, _mm256_slli_epi16(
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), one), 4));
                }
                __m256i s0 = MMX_PICK16(scv, 2 * p), s1 = MMX_PICK16(scv, 2 * p + 1);
                for (int t = 0; t < NT; t++) {
                    const int8_t *xq = a[t].q + 256 * (size_t)b + 64 * p;
                    __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, mmx_load(xq)), s0);
                    __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, mmx_load(xq + 32)), s1);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p0, p1));
                }
            }
            for (int t = 0; t < NT; t++) {
                float dx = a[t].d[b];
                __m256i pm = _mm256_madd_epi16(mmx_load(a[t].bsum + 16 * (size_t)b), mins);
                acc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]), _mm256_set1_ps(d * dx), acc[r][t]);
                macc[r][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(pm), _mm256_set1_ps(dmin * dx), macc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            float s = mmx_hsum(acc[r][t]) - mmx_hsum(macc[r][t]);
            float *o = &out[(size_t)t * ldo + (size_t)r];
            *o = add ? *o + s : s;
        }
    }
}

/* Q6_K: the 32 6-bit quants (0..63) of group G (0..3) of a 128-weight half
 * whose low nibbles are in QA (ql[0..32)) and QB (ql[32..64)) and whose top
 * bits are in QH (qh[0..32)): quant.c's q_q6_k layout. */
MMX_INLINE __m256i mmx_q6_group(__m256i qa, __m256i qb, __m256i qh, int g)
{
    const __m256i low4 = _mm256_set1_epi8(15), three = _mm256_set1_epi8(3);
    __m256i lo = g & 1 ? qb : qa;
    lo = g < 2 ? _mm256_and_si256(lo, low4) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), low4);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * g), three);
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

MMX_INLINE void mmx_dotk6_body(fy_dtype dt, const uint8_t *w, size_t rb, int k, const fy__mm_act *a,
                               float *out, size_t ldo, int add, const int R, const int NT)
{
    /* Even scales into lane 0, odd into lane 1: pair (h, g) takes element 4h + g of each. */
    const __m128i eo = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m256 acc[MMX_RMAX][FY_MM_DOT_NT];
    (void)dt;
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            acc[r][t] = _mm256_setzero_ps();
        }
    }
    for (int b = 0; b < k / 256; b++) {
        for (int r = 0; r < R; r++) {
            const uint8_t *blk = w + (size_t)r * rb + (size_t)b * 210;
            __m128i sc8 = _mm_loadu_si128((const __m128i *)(blk + 192));
            __m256i scn = _mm256_cvtepi8_epi16(sc8);
            __m256i scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, eo));
            float d = mmx_h(blk + 208);
            __m256i sumi[FY_MM_DOT_NT];
            for (int t = 0; t < NT; t++) {
                /* The -32 offset: 32 * sum over sub-blocks of scale * sum of its quants. */
                __m256i c = _mm256_madd_epi16(mmx_load(a[t].bsum + 16 * (size_t)b), scn);
                sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(c, 5));
            }
            for (int h = 0; h < 2; h++) {
                __m256i qa = mmx_load(blk + 64 * h), qb = mmx_load(blk + 64 * h + 32);
                __m256i qh = mmx_load(blk + 128 + 32 * h);
                for (int g = 0; g < 4; g++) {
                    __m256i q = mmx_q6_group(qa, qb, qh, g);
                    __m256i s = MMX_PICK16(scv, 4 * h + g);
                    for (int t = 0; t < NT; t++) {
                        const int8_t *xq = a[t].q + 256 * (size_t)b + 128 * h + 32 * g;
                        sumi[t] = _mm256_add_epi32(
                            sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(q, mmx_load(xq)), s));
                    }
                }
            }
            for (int t = 0; t < NT; t++) {
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[t]),
                                            _mm256_set1_ps(d * a[t].d[b]), acc[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++) {
        for (int t = 0; t < NT; t++) {
            float s = mmx_hsum(acc[r][t]);
            float *o = &out[(size_t)t * ldo + (size_t)r];
            *o = add ? *o + s : s;
        }
    }
}

MMX_DOT_FN(mmx_dot_q4_k, FY_DT_Q4_K, mmx_dotk45_body, MMX_R / 2, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q5_k, FY_DT_Q5_K, mmx_dotk45_body, MMX_R / 2, MMX_R / 2)
MMX_DOT_FN(mmx_dot_q6_k, FY_DT_Q6_K, mmx_dotk6_body, MMX_R / 2, MMX_R / 2)

/* --- Block-type panels ------------------------------------------------------------------ */

/* One block of DT at B unpacked: u (mm.h's, or Q8_0's signed q on AVX2) into
 * U[bw], dw and m per sub-block. */
MMX_INLINE void mmx_unpack_block(fy_dtype dt, const uint8_t *b, uint8_t *u, float *dw, float *m)
{
    const __m256i low4 = _mm256_set1_epi8(15);
    if (dt == FY_DT_Q4_K || dt == FY_DT_Q5_K) {
        const int q5 = dt == FY_DT_Q5_K;
        const uint8_t *qs = b + (q5 ? 48 : 16);
        float d = mmx_h(b), dmin = mmx_h(b + 2);
        __m256i qh = q5 ? mmx_load(b + 16) : _mm256_setzero_si256();
        for (int j = 0; j < 8; j++) {
            int sc, mn;
            fy__q_k_scale_min(b + 4, j, &sc, &mn);
            dw[j] = d * (float)sc;
            m[j] = -(dmin * (float)mn);
        }
        for (int p = 0; p < 4; p++) {
            __m256i q4 = mmx_load(qs + 32 * p);
            __m256i lo = _mm256_and_si256(q4, low4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low4);
            if (q5) {
                const __m256i one = _mm256_set1_epi8(1);
                __m256i b0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), one);
                __m256i b1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(b0, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(b1, 4));
            }
            _mm256_storeu_si256((__m256i *)(u + 64 * p), lo);
            _mm256_storeu_si256((__m256i *)(u + 64 * p + 32), hi);
        }
    } else if (dt == FY_DT_Q6_K) {
        float d = mmx_h(b + 208);
        for (int s = 0; s < 16; s++) {
            dw[s] = d * (float)(int8_t)b[192 + s];
        }
        for (int h = 0; h < 2; h++) {
            __m256i qa = mmx_load(b + 64 * h), qb = mmx_load(b + 64 * h + 32);
            __m256i qh = mmx_load(b + 128 + 32 * h);
            for (int g = 0; g < 4; g++) {
                _mm256_storeu_si256((__m256i *)(u + 128 * h + 32 * g), mmx_q6_group(qa, qb, qh, g));
            }
        }
    } else {
        m[0] = 0.0f;
        _mm256_storeu_si256((__m256i *)u, mmx_unpack32(dt, b, dw, m));
    }
}

/* mm.h's fy__mm_pack_q: 8 rows at a time, each block unpacked with the
 * kernels above and 8 rows x 8 groups of 4 weights transposed in registers
 * into the panel's [k/4][NR][4] order (the same for either sub-block size). */
MMX_FN void mmx_pack_q(uint8_t *dst, const fy_tensor *w, int64_t r0, int nr, int64_t k0, int kc,
                       int sgn)
{
    fy_dtype dt = w->dtype;
    const fy__mm_type *ty = &fy__mm_types[dt];
    int bw = (int)fy_dtype_block_weights(dt), sb = ty->sb, nsb = kc / sb, spb = bw / sb;
    size_t bb = fy_dtype_block_bytes(dt), rb = (size_t)(w->cols / bw) * bb;
    float *dwp = (float *)(void *)(dst + fy__mm_al64((size_t)nsb * sb * nr));
    float *mwp = (float *)(void *)((char *)dwp + fy__mm_al64((size_t)nsb * nr * 4));
    (void)sgn; /* Q8_0's sign: mmx_unpack32 gives what this path's kernels take */
    for (int j0 = 0; j0 < nr; j0 += 8) {
        for (int blk = 0; blk < kc / bw; blk++) {
            uint8_t ub[8][256];
            for (int j = 0; j < 8; j++) {
                int64_t r = r0 + j0 + j;
                float dws[16], ms[16] = {0};
                if (r < w->rows) {
                    const uint8_t *src =
                        (const uint8_t *)w->data + (size_t)r * rb + (size_t)(k0 / bw + blk) * bb;
                    if (r + 8 < w->rows) { /* the next 8 rows' block: short rows defeat the
                                              hardware prefetcher */
                        _mm_prefetch((const char *)(src + 8 * rb), _MM_HINT_T0);
                    }
                    mmx_unpack_block(dt, src, ub[j], dws, ms);
                } else {
                    memset(ub[j], 0, (size_t)bw);
                    memset(dws, 0, sizeof dws);
                }
                for (int s = 0; s < spb; s++) {
                    size_t gs = (size_t)blk * spb + s;
                    dwp[gs * nr + j0 + j] = dws[s];
                    if (ty->min) {
                        mwp[gs * nr + j0 + j] = ms[s];
                    }
                }
            }
            for (int c = 0; c < bw; c += 32) {
                __m256 v[8];
                for (int j = 0; j < 8; j++) {
                    v[j] = _mm256_castsi256_ps(mmx_load(ub[j] + c));
                }
                mmx_tr8(v);
                size_t k4 = (size_t)(blk * bw + c) / 4;
                for (int g = 0; g < 8; g++) {
                    _mm256_storeu_ps((float *)(void *)(dst + ((k4 + g) * nr + j0) * 4), v[g]);
                }
            }
        }
    }
}

/* --- GEMM microkernels (8 rows per vector) ----------------------------------------------- */

#ifndef MMX_NO_GEMM /* mm_avx512.c has its own, on 512-bit registers */

#define MMX_FNR 16 /* f32 panel rows (2 vectors) */
#define MMX_QNR 8  /* block-type panel rows */

/* C[M x 16] (+)= X[M x kc] . P[kc x 16]; rows of X past m repeat row m - 1. */
MMX_INLINE void mmx_gemmf_body(const float *p, const float *x, size_t ldx, int kc, float *c,
                               size_t ldc, int m, int n, int add, const int M)
{
    m = m < M ? m : M; /* (m <= M always; this lets the compiler see it) */
    __m256 a0[MMX_MMAX], a1[MMX_MMAX];
    const float *xr[MMX_MMAX];
    for (int i = 0; i < M; i++) {
        a0[i] = a1[i] = _mm256_setzero_ps();
        xr[i] = x + (size_t)(i < m ? i : m - 1) * ldx;
    }
    for (int k = 0; k < kc; k++) {
        __m256 w0 = _mm256_loadu_ps(p + (size_t)k * 16),
               w1 = _mm256_loadu_ps(p + (size_t)k * 16 + 8);
        for (int i = 0; i < M; i++) {
            __m256 xb = _mm256_set1_ps(xr[i][k]);
            a0[i] = _mm256_fmadd_ps(w0, xb, a0[i]);
            a1[i] = _mm256_fmadd_ps(w1, xb, a1[i]);
        }
    }
    for (int i = 0; i < M && i < m; i++) { /* constant bound: the tile stays in registers */
        mmx_store(c + (size_t)i * ldc, a0[i], n, add);
        mmx_store(c + (size_t)i * ldc + 8, a1[i], n - 8, add);
    }
}

MMX_FN void mmx_gemmf(const float *p, const float *x, size_t ldx, int kc, float *c, size_t ldc,
                      int m, int n, int add)
{
    if (m > 4) {
        mmx_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 6);
    } else if (m > 2) {
        mmx_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 4);
    } else if (m == 2) {
        mmx_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 2);
    } else {
        mmx_gemmf_body(p, x, ldx, kc, c, ldc, m, n, add, 1);
    }
}

/* C[M x 8] (+)= the tile's tokens . the panel's rows; SB, MIN, SGN as in mm.h. */
MMX_INLINE void mmx_gemmq_body(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, float *c,
                               size_t ldc, int m, int n, int add, const int M, const int SB,
                               const int MIN, const int SGN)
{
    m = m < M ? m : M; /* (m <= M always; this lets the compiler see it) */
    const uint8_t *pu = p;
    const float *pd = (const float *)(const void *)(p + fy__mm_al64((size_t)nsb * SB * 8));
    const float *pm = pd + fy__mm_al64((size_t)nsb * 8 * 4) / 4;
    const uint8_t *xq = xt;
    const float *xd = (const float *)(const void *)(xt + fy__mm_al64((size_t)nsb * SB * mrx));
    const int32_t *xa =
        (const int32_t *)(const void *)(xd + fy__mm_al64((size_t)nsb * mrx * 4) / 4);
    __m256 f[MMX_MMAX];
    for (int i = 0; i < M; i++) {
        f[i] = _mm256_setzero_ps();
    }
    for (int b = 0; b < nsb; b++) {
        __m256i s[MMX_MMAX];
        for (int i = 0; i < M; i++) {
            s[i] = MIN || SGN ? _mm256_setzero_si256() : _mm256_set1_epi32(xa[(size_t)b * mrx + i]);
        }
        MMX_UNROLL8
        for (int g = 0; g < SB / 4; g++) {
            size_t kg = (size_t)b * (SB / 4) + g;
            __m256i wv = mmx_load(pu + kg * 32);
            __m256i wa = SGN ? _mm256_sign_epi8(wv, wv) : wv;
            for (int i = 0; i < M; i++) {
                int32_t x4;
                memcpy(&x4, xq + (kg * (size_t)mrx + (size_t)i) * 4, 4);
                __m256i xb = _mm256_set1_epi32(x4);
                if (SGN) {
                    s[i] = _mm256_add_epi32(
                        s[i], _mm256_madd_epi16(_mm256_maddubs_epi16(wa, _mm256_sign_epi8(xb, wv)),
                                                _mm256_set1_epi16(1)));
                } else {
                    s[i] = MMX_DPBUSD(s[i], wv, xb);
                }
            }
        }
        __m256 dw = _mm256_loadu_ps(pd + (size_t)b * 8);
        for (int i = 0; i < M; i++) {
            f[i] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s[i]), dw),
                                   _mm256_set1_ps(xd[(size_t)b * mrx + i]), f[i]);
        }
        if (MIN) {
            __m256 mw = _mm256_loadu_ps(pm + (size_t)b * 8);
            for (int i = 0; i < M; i++) {
                f[i] = _mm256_fmadd_ps(mw, mmx_f32(xa + (size_t)b * mrx + i), f[i]);
            }
        }
    }
    for (int i = 0; i < M && i < m; i++) { /* constant bound: the tile stays in registers */
        mmx_store(c + (size_t)i * ldc, f[i], n, add);
    }
}

#if MMX_VNNI
#define MMX_QMR 6
#else
#define MMX_QMR 4
#endif

#define MMX_GQ(M, SB, MIN, SGN) mmx_gemmq_body(p, xt, mrx, nsb, c, ldc, m, n, add, M, SB, MIN, SGN)
#define MMX_GQ_M(SB, MIN, SGN)             \
    do {                                   \
        if (m > 4)                         \
            MMX_GQ(MMX_QMR, SB, MIN, SGN); \
        else if (m > 2)                    \
            MMX_GQ(4, SB, MIN, SGN);       \
        else if (m == 2)                   \
            MMX_GQ(2, SB, MIN, SGN);       \
        else                               \
            MMX_GQ(1, SB, MIN, SGN);       \
    } while (0)

MMX_FN void mmx_gemmq(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, int sb, int min,
                      int sgn, float *c, size_t ldc, int m, int n, int add)
{
    if (sgn) {
        MMX_GQ_M(32, 0, 1);
    } else if (sb == 16) {
        MMX_GQ_M(16, 0, 0);
    } else if (min) {
        MMX_GQ_M(32, 1, 0);
    } else {
        MMX_GQ_M(32, 0, 0);
    }
}
#endif

/* Kernel-table entries the x86 paths share: the float and the block-type dot
 * kernels, and the quantizers and float panel packer. */
#define MMX_KERN_FDOTS \
    .dot[FY_DT_F32] = mmx_dot_f32, .dot[FY_DT_F16] = mmx_dot_f16, .dot[FY_DT_BF16] = mmx_dot_bf16
#define MMX_KERN_QDOTS                                                \
    .dot[FY_DT_Q8_0] = mmx_dot_q8_0, .dot[FY_DT_Q4_0] = mmx_dot_q4_0, \
    .dot[FY_DT_Q4_1] = mmx_dot_q4_1, .dot[FY_DT_Q5_0] = mmx_dot_q5_0, \
    .dot[FY_DT_Q5_1] = mmx_dot_q5_1, .dot[FY_DT_Q4_K] = mmx_dot_q4_k, \
    .dot[FY_DT_Q5_K] = mmx_dot_q5_k, .dot[FY_DT_Q6_K] = mmx_dot_q6_k
/* Dot-path batch limits, by dtype (F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K),
 * from the crossover measured on a Zen 5 at 2048x768. */
#define MMX_KERN_DOT_T .dot_t = {8, 4, 4, 16, 12, 8, 8, 8, 8, 8, 8}
#define MMX_KERN_QUANT                                                            \
    .quant_a = mmx_quant_a, .quant_b = mmx_quant_b, .quant_tile = mmx_quant_tile, \
    .pack_f = mmx_pack_f, .pack_q = mmx_pack_q

#ifndef MMX_NO_GEMM
/* The whole table of a 256-bit path (AVX2, AVX-VNNI). */
#define MMX_KERN_YMM(ISA)                                                                          \
    {                                                                                              \
        .isa = (ISA), MMX_KERN_FDOTS, MMX_KERN_QDOTS, MMX_KERN_QUANT, MMX_KERN_DOT_T, .f_mr = 6,   \
        .f_nr = MMX_FNR, .gemmf = mmx_gemmf, .q_mr = MMX_QMR, .q_nr = MMX_QNR, .q_sgn = !MMX_VNNI, \
        .gemmq = mmx_gemmq,                                                                        \
    }
#endif
