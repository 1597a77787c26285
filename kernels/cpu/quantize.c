/* quantize.c: float weights to ggml's block types (quant.h's fy_q_quantize).
 *
 * The inverse of quant.c's dequantization, used by `ferry-runner quantize`.
 * Every type's blocks are fitted by least squares, not just by range:
 *
 * - Q8_0, Q4_0, Q5_0 (symmetric, w = d*q): d is chosen among candidates
 *   around amax / qmax (signed so the largest-magnitude weight lands on the
 *   wider end of the integer range) by the squared error of the rounded
 *   block, with d refitted to its quants (d = sum x*q / sum q*q).
 * - Q4_1, Q5_1 (w = d*q + m) and the K types' sub-blocks (w = sc*q - mn):
 *   a grid of scales between min and max is tried; for each, the quants are
 *   rounded and (scale, offset) refitted by least squares; the best error wins.
 * - Q4_K / Q5_K then quantize the eight sub-block scales and mins to 6 bits
 *   against two f16 super-scales, and requantize every weight against the
 *   scale it will actually be read with. Q6_K does the same with sixteen
 *   int8 sub-block scales.
 *
 * Errors are weighted by w_i = x_i^2 + mean(x^2) over the block: large
 * weights matter more to a matmul, and the mean keeps small ones in play.
 * Stored scales are rounded to f16 before the final quants are chosen, so
 * each quant is the nearest one for the scale the reader will see. */
#include "kernels/cpu/quant.h"

#include "common/err.h"
#include "kernels/backend.h"

#include <math.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* F to f16 and back: the value a reader will use. */
static float half_round(float f)
{
    return fy_f16_to_f32(fy_f32_to_f16(f));
}

static int nearest(float v, int lo, int hi)
{
    int q = (int)lrintf(v);
    return q < lo ? lo : q > hi ? hi : q;
}

/* Weights for the squared error of the N values at X (see the top). */
static void err_weights(const float *x, int n, float *w)
{
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        s += x[i] * x[i];
    }
    s /= (float)n;
    for (int i = 0; i < n; i++) {
        w[i] = x[i] * x[i] + s;
    }
}

/* --- Symmetric: x ~ d * q, q in [lo, hi] -------------------------------------------- */

/* Best d for X[0..n) with quants in [-nmax, nmax - 1] (nmax = 2^(bits-1)), or
 * [-127, 127] for Q8_0 (SYM). Writes the quants to Q. Returns d. */
static float fit_sym(const float *x, int n, int nmax, int sym, const float *w, int8_t *q)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    memset(q, 0, (size_t)n);
    if (amax == 0.0f) {
        return 0.0f;
    }
    int lo = sym ? -(nmax - 1) : -nmax, hi = nmax - 1;
    /* The largest-magnitude weight on -nmax (or +-(nmax-1) when symmetric). */
    float base = sym ? amax / (float)(nmax - 1) : max / (float)-nmax;
    float best_err = INFINITY, best_d = base;
    int8_t tq[256];
    for (int k = -9; k <= 9; k++) {
        float d = base * (1.0f + 0.01f * (float)k);
        float id = 1.0f / d, sxq = 0.0f, sqq = 0.0f;
        for (int i = 0; i < n; i++) {
            tq[i] = (int8_t)nearest(x[i] * id, lo, hi);
            sxq += w[i] * x[i] * (float)tq[i];
            sqq += w[i] * (float)tq[i] * (float)tq[i];
        }
        if (sqq <= 0.0f) {
            continue;
        }
        float dd = half_round(sxq / sqq), e = 0.0f;
        for (int i = 0; i < n; i++) {
            float r = x[i] - dd * (float)tq[i];
            e += w[i] * r * r;
        }
        if (e < best_err) {
            best_err = e;
            best_d = dd;
        }
    }
    best_d = half_round(best_d);
    if (best_d != 0.0f) {
        float id = 1.0f / best_d;
        for (int i = 0; i < n; i++) {
            q[i] = (int8_t)nearest(x[i] * id, lo, hi);
        }
    }
    return best_d;
}

/* --- Affine: x ~ a * q + b, q in [0, nmax] --------------------------------------------- */

typedef struct {
    float a, b; /* scale and offset (b <= 0 for the K types, whose mins are subtracted) */
} affine;

/* Least-squares (a, b) for quants Q; with B_NONPOS the offset is kept <= 0
 * (and then refitted as a scale alone when the free fit wants b > 0). */
static affine affine_fit(const float *x, const uint8_t *q, const float *w, int n, int b_nonpos)
{
    float sw = 0, sq = 0, sqq = 0, sx = 0, sxq = 0;
    for (int i = 0; i < n; i++) {
        sw += w[i];
        sq += w[i] * q[i];
        sqq += w[i] * q[i] * q[i];
        sx += w[i] * x[i];
        sxq += w[i] * x[i] * q[i];
    }
    float det = sw * sqq - sq * sq;
    affine f = {0.0f, 0.0f};
    if (det > 0.0f) {
        f.a = (sw * sxq - sq * sx) / det;
        f.b = (sqq * sx - sq * sxq) / det;
    }
    if (b_nonpos && f.b > 0.0f) {
        f.b = 0.0f;
        f.a = sqq > 0.0f ? sxq / sqq : 0.0f;
    }
    return f;
}

static float affine_err(const float *x, const uint8_t *q, const float *w, int n, affine f)
{
    float e = 0.0f;
    for (int i = 0; i < n; i++) {
        float r = x[i] - (f.a * (float)q[i] + f.b);
        e += w[i] * r * r;
    }
    return e;
}

/* Best (a, b) for X[0..n) with quants in [0, NMAX]; Q gets the quants. */
static affine fit_affine(const float *x, int n, int nmax, const float *w, int b_nonpos, uint8_t *q)
{
    float mn = x[0], mx = x[0];
    for (int i = 1; i < n; i++) {
        mn = x[i] < mn ? x[i] : mn;
        mx = x[i] > mx ? x[i] : mx;
    }
    if (b_nonpos && mn > 0.0f) {
        mn = 0.0f;
    }
    affine best = {0.0f, mn};
    if (mx == mn) {
        memset(q, 0, (size_t)n);
        return best;
    }
    float best_err = INFINITY;
    uint8_t tq[256];
    for (int k = -10; k <= 10; k++) {
        float iscale = ((float)nmax + 0.05f * (float)k) / (mx - mn);
        for (int i = 0; i < n; i++) {
            tq[i] = (uint8_t)nearest(iscale * (x[i] - mn), 0, nmax);
        }
        affine f = affine_fit(x, tq, w, n, b_nonpos);
        if (f.a <= 0.0f) {
            continue;
        }
        float e = affine_err(x, tq, w, n, f);
        if (e < best_err) {
            best_err = e;
            best = f;
            memcpy(q, tq, (size_t)n);
        }
    }
    if (best_err == INFINITY) { /* plain range quantization */
        best.a = (mx - mn) / (float)nmax;
        best.b = mn;
        for (int i = 0; i < n; i++) {
            q[i] = (uint8_t)nearest((x[i] - mn) / best.a, 0, nmax);
        }
    }
    return best;
}

/* The quants of X against the stored (A, B) a reader will use. */
static void requant(const float *x, int n, int nmax, float a, float b, uint8_t *q)
{
    float ia = a != 0.0f ? 1.0f / a : 0.0f;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)(a != 0.0f ? nearest((x[i] - b) * ia, 0, nmax) : 0);
    }
}

/* --- The 32-weight types ---------------------------------------------------------------- */

/* Packs 32 quants (0..31) into 16 nibble bytes (weight j low, j + 16 high)
 * and the fifth bits into *QH. */
static void pack_nibbles(const uint8_t *q, uint8_t *qs, uint32_t *qh)
{
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
        h |= (uint32_t)(q[j] >> 4 & 1) << j;
        h |= (uint32_t)(q[j + 16] >> 4 & 1) << (j + 16);
    }
    if (qh) {
        *qh = h;
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void quant_q8_0(const float *x, uint8_t *b)
{
    float w[32];
    int8_t q[32];
    err_weights(x, 32, w);
    float d = fit_sym(x, 32, 128, 1, w, q);
    put16(b, fy_f32_to_f16(d));
    memcpy(b + 2, q, 32);
}

/* Q4_0 / Q5_0: w = d * (q - bias), q in [0, 2*bias - 1]. */
static void quant_sym_nibbles(const float *x, uint8_t *b, int bias)
{
    float w[32];
    int8_t q[32];
    uint8_t u[32];
    err_weights(x, 32, w);
    float d = fit_sym(x, 32, bias, 0, w, q);
    for (int i = 0; i < 32; i++) {
        u[i] = (uint8_t)(q[i] + bias);
    }
    put16(b, fy_f32_to_f16(d));
    if (bias == 8) {
        pack_nibbles(u, b + 2, NULL);
    } else {
        uint32_t qh;
        pack_nibbles(u, b + 6, &qh);
        put32(b + 2, qh);
    }
}

/* Q4_1 / Q5_1: w = d * q + m, q in [0, nmax]. */
static void quant_affine_nibbles(const float *x, uint8_t *b, int nmax)
{
    float w[32];
    uint8_t q[32];
    err_weights(x, 32, w);
    affine f = fit_affine(x, 32, nmax, w, 0, q);
    float d = half_round(f.a), m = half_round(f.b);
    requant(x, 32, nmax, d, m, q);
    put16(b, fy_f32_to_f16(d));
    put16(b + 2, fy_f32_to_f16(m));
    if (nmax == 15) {
        pack_nibbles(q, b + 4, NULL);
    } else {
        uint32_t qh;
        pack_nibbles(q, b + 8, &qh);
        put32(b + 4, qh);
    }
}

/* --- K types -------------------------------------------------------------------------- */

/* Packs eight 6-bit scales and mins into the K types' 12 bytes (quant.c's
 * q_k_scale_min is the reader). */
static void pack_k_scales(const uint8_t *sc, const uint8_t *mn, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)((sc[j] & 63) | (sc[j + 4] >> 4) << 6);
        s[j + 4] = (uint8_t)((mn[j] & 63) | (mn[j + 4] >> 4) << 6);
        s[j + 8] = (uint8_t)((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
    }
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, w = d*sc*q - dmin*mn, q in [0, nmax]. */
static void quant_k45(const float *x, uint8_t *b, int nmax)
{
    float w[256], scale[8], minv[8];
    uint8_t q[256], sc[8], mn[8];
    for (int j = 0; j < 8; j++) {
        err_weights(x + 32 * j, 32, w + 32 * j);
        affine f = fit_affine(x + 32 * j, 32, nmax, w + 32 * j, 1, q + 32 * j);
        scale[j] = f.a;
        minv[j] = -f.b;
    }
    float smax = 0.0f, mmax = 0.0f;
    for (int j = 0; j < 8; j++) {
        smax = scale[j] > smax ? scale[j] : smax;
        mmax = minv[j] > mmax ? minv[j] : mmax;
    }
    float d = half_round(smax / 63.0f), dmin = half_round(mmax / 63.0f);
    for (int j = 0; j < 8; j++) {
        sc[j] = (uint8_t)(d > 0.0f ? nearest(scale[j] / d, 0, 63) : 0);
        mn[j] = (uint8_t)(dmin > 0.0f ? nearest(minv[j] / dmin, 0, 63) : 0);
        requant(x + 32 * j, 32, nmax, d * (float)sc[j], -(dmin * (float)mn[j]), q + 32 * j);
    }
    put16(b, fy_f32_to_f16(d));
    put16(b + 2, fy_f32_to_f16(dmin));
    pack_k_scales(sc, mn, b + 4);
    uint8_t *qh = nmax == 31 ? b + 16 : NULL, *qs = nmax == 31 ? b + 48 : b + 16;
    if (qh) {
        memset(qh, 0, 32);
    }
    for (int j = 0; j < 8; j++) {
        uint8_t *o = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            uint8_t v = q[32 * j + l];
            if (j % 2 == 0) {
                o[l] = (uint8_t)(v & 15);
            } else {
                o[l] |= (uint8_t)((v & 15) << 4);
            }
            if (qh) {
                qh[l] |= (uint8_t)((v >> 4 & 1) << j);
            }
        }
    }
}

/* Q6_K: 16 sub-blocks of 16 with int8 scales, w = d*sc*(q - 32). */
static void quant_q6_k(const float *x, uint8_t *b)
{
    float w[256], scale[16];
    int8_t q[256];
    for (int j = 0; j < 16; j++) {
        err_weights(x + 16 * j, 16, w + 16 * j);
        scale[j] = fit_sym(x + 16 * j, 16, 32, 0, w + 16 * j, q + 16 * j);
    }
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 16; j++) {
        if (fabsf(scale[j]) > amax) {
            amax = fabsf(scale[j]);
            max = scale[j];
        }
    }
    float d = half_round(max / -128.0f);
    int8_t sc[16];
    for (int j = 0; j < 16; j++) {
        sc[j] = (int8_t)(d != 0.0f ? nearest(scale[j] / d, -128, 127) : 0);
        float s = d * (float)sc[j];
        float is = s != 0.0f ? 1.0f / s : 0.0f;
        for (int l = 0; l < 16; l++) {
            q[16 * j + l] = (int8_t)(s != 0.0f ? nearest(x[16 * j + l] * is, -32, 31) : 0);
        }
    }
    uint8_t *ql = b, *qh = b + 128;
    memset(b, 0, 192);
    for (int h = 0; h < 2; h++) {
        for (int g = 0; g < 4; g++) {
            for (int l = 0; l < 32; l++) {
                int v = q[128 * h + 32 * g + l] + 32;
                uint8_t *lo = &ql[64 * h + l + 32 * (g & 1)];
                *lo |= (uint8_t)(g < 2 ? (v & 15) : (v & 15) << 4);
                qh[32 * h + l] |= (uint8_t)((v >> 4 & 3) << (2 * g));
            }
        }
    }
    memcpy(b + 192, sc, 16);
    put16(b + 208, fy_f32_to_f16(d));
}

int fy_q_quantize(fy_dtype t, const float *src, void *dst, size_t n)
{
    uint32_t bw = fy_dtype_block_weights(t), bb = fy_dtype_block_bytes(t);
    if (!bw || n % bw) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(src[i])) {
            return FY_EINVAL;
        }
    }
    uint8_t *b = dst;
    for (size_t i = 0; i < n; i += bw, b += bb) {
        const float *x = src + i;
        switch (t) {
        case FY_DT_F32:
            memcpy(b, x, 4);
            break;
        case FY_DT_F16:
            put16(b, fy_f32_to_f16(*x));
            break;
        case FY_DT_BF16:
            put16(b, fy_f32_to_bf16(*x));
            break;
        case FY_DT_Q8_0:
            quant_q8_0(x, b);
            break;
        case FY_DT_Q4_0:
            quant_sym_nibbles(x, b, 8);
            break;
        case FY_DT_Q5_0:
            quant_sym_nibbles(x, b, 16);
            break;
        case FY_DT_Q4_1:
            quant_affine_nibbles(x, b, 15);
            break;
        case FY_DT_Q5_1:
            quant_affine_nibbles(x, b, 31);
            break;
        case FY_DT_Q4_K:
            quant_k45(x, b, 15);
            break;
        case FY_DT_Q5_K:
            quant_k45(x, b, 31);
            break;
        case FY_DT_Q6_K:
            quant_q6_k(x, b);
            break;
        default:
            return FY_EINVAL;
        }
    }
    return 0;
}
