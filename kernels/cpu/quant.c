/* quant.c: block sizes and the scalar reference dequantization (see quant.h).
 *
 * Written for clarity, not speed: this is what the vectorized dot products
 * are tested against. Each type has one function over a run of NB blocks;
 * fields are read byte by byte so nothing depends on alignment or on the
 * host's byte order. */
#include "kernels/cpu/quant.h"

#include "common/err.h"
#include "kernels/backend.h"

#include <string.h>

typedef void (*q_dequant_fn)(const uint8_t *b, float *y, size_t nb);

#define q_u16  fy__q_u16
#define q_u32  fy__q_u32
#define q_half fy__q_half

static void q_f32(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        uint32_t u = q_u32(b + 4 * i);
        memcpy(&y[i], &u, sizeof u);
    }
}

static void q_f16(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        y[i] = q_half(b + 2 * i);
    }
}

static void q_bf16(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++) {
        y[i] = fy_bf16_to_f32(q_u16(b + 2 * i));
    }
}

/* Q8_0: [d f16][q int8 x32]. */
static void q_q8_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 34, y += 32) {
        float d = q_half(b);
        for (int j = 0; j < 32; j++) {
            y[j] = d * (float)(int8_t)b[2 + j];
        }
    }
}

/* The 32-weight nibble blocks share one shape: a scale d, an optional
 * offset m (Q4_1, Q5_1; M is NULL for the symmetric types, which subtract
 * BIAS from the integer quant instead), optional fifth bits qh (Q5_0, Q5_1),
 * and 16 bytes holding weight j in the low nibble of byte j and weight j + 16
 * in the high one. The symmetric types add nothing, not even 0: d*(q-8)
 * with a negative d and q = 8 is -0, and -0 + 0 would be +0. */
static void q_nibble32(const uint8_t *qs, uint32_t qh, int has_qh, float d, const float *m,
                       int bias, float *y)
{
    for (int j = 0; j < 16; j++) {
        int lo = qs[j] & 0x0f, hi = qs[j] >> 4;
        if (has_qh) {
            lo |= (int)((qh >> j) & 1) << 4;
            hi |= (int)((qh >> (j + 16)) & 1) << 4;
        }
        y[j] = d * (float)(lo - bias);
        y[j + 16] = d * (float)(hi - bias);
        if (m) {
            y[j] += *m;
            y[j + 16] += *m;
        }
    }
}

/* Q4_0: [d][qs x16], w = d*(q-8). */
static void q_q4_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 18, y += 32) {
        q_nibble32(b + 2, 0, 0, q_half(b), NULL, 8, y);
    }
}

/* Q4_1: [d][m][qs x16], w = d*q + m. */
static void q_q4_1(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 20, y += 32) {
        float m = q_half(b + 2);
        q_nibble32(b + 4, 0, 0, q_half(b), &m, 0, y);
    }
}

/* Q5_0: [d][qh u32][qs x16], w = d*(q-16). */
static void q_q5_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 22, y += 32) {
        q_nibble32(b + 6, q_u32(b + 2), 1, q_half(b), NULL, 16, y);
    }
}

/* Q5_1: [d][m][qh u32][qs x16], w = d*q + m. */
static void q_q5_1(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 24, y += 32) {
        float m = q_half(b + 2);
        q_nibble32(b + 8, q_u32(b + 4), 1, q_half(b), &m, 0, y);
    }
}

/* One Q4_K or Q5_K super-block: 8 sub-blocks of 32 weights; QH (Q5_K) adds
 * bit j of qh[l] as bit 4 of weight l of sub-block j. */
static void q_k45_block(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y)
{
    float d = q_half(b), dmin = q_half(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        fy__q_k_scale_min(b + 4, j, &sc, &mn);
        float ds = d * (float)sc, dm = dmin * (float)mn;
        const uint8_t *q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = j % 2 ? q[l] >> 4 : q[l] & 0x0f;
            if (qh) {
                v |= ((qh[l] >> j) & 1) << 4;
            }
            y[32 * j + l] = ds * (float)v - dm;
        }
    }
}

/* Q4_K: [d][dmin][scales x12][qs x128]. */
static void q_q4_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 144, y += 256) {
        q_k45_block(b, NULL, b + 16, y);
    }
}

/* Q5_K: [d][dmin][scales x12][qh x32][qs x128]. */
static void q_q5_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 176, y += 256) {
        q_k45_block(b, b + 16, b + 48, y);
    }
}

/* Q6_K: [ql x128][qh x64][scales int8 x16][d]. Two halves of 128 weights;
 * in half h, weight 32*g + l (g = 0..3, l = 0..31) takes its low 4 bits from
 * ql[64*h + l + 32*(g&1)] (low nibble for g < 2, high for g >= 2), its top
 * 2 bits from bits 2g..2g+1 of qh[32*h + l], and scale 8*h + 2*g + l/16. */
static void q_q6_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 210, y += 256) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = q_half(b + 208);
        for (int h = 0; h < 2; h++) {
            for (int g = 0; g < 4; g++) {
                for (int l = 0; l < 32; l++) {
                    int lo = ql[64 * h + l + 32 * (g & 1)];
                    lo = g < 2 ? lo & 0x0f : lo >> 4;
                    int hi = (qh[32 * h + l] >> (2 * g)) & 3;
                    float s = d * (float)sc[8 * h + 2 * g + l / 16];
                    y[128 * h + 32 * g + l] = s * (float)((lo | hi << 4) - 32);
                }
            }
        }
    }
}

static const q_dequant_fn q_dequant[FY_DT_COUNT] = {
    [FY_DT_F32] = q_f32,   [FY_DT_F16] = q_f16,   [FY_DT_BF16] = q_bf16, [FY_DT_Q8_0] = q_q8_0,
    [FY_DT_Q4_0] = q_q4_0, [FY_DT_Q4_1] = q_q4_1, [FY_DT_Q5_0] = q_q5_0, [FY_DT_Q5_1] = q_q5_1,
    [FY_DT_Q4_K] = q_q4_k, [FY_DT_Q5_K] = q_q5_k, [FY_DT_Q6_K] = q_q6_k,
};

int fy_q_dequant(fy_dtype t, const void *src, float *dst, size_t n)
{
    uint32_t block = fy_dtype_block_weights(t);
    if (!block || n % block) {
        return FY_EINVAL;
    }
    q_dequant[t](src, dst, n / block);
    return 0;
}
