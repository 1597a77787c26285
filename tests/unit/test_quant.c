/* The block formats (kernels/cpu/quant.h): sizes, the argument checks, and
 * for each type a hand-built block whose weights are worked out here from
 * the layout (the numpy reference in tests/engine_ref/ covers whole files;
 * this runs everywhere and pins each field's position). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/cpu/quant.h"

#include <math.h>
#include <string.h>

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        fy_dtype t;
        const char *name;
        uint32_t block, bytes;
    } want[] = {
        {FY_DT_F32, "F32", 1, 4},       {FY_DT_F16, "F16", 1, 2},
        {FY_DT_BF16, "BF16", 1, 2},     {FY_DT_Q8_0, "Q8_0", 32, 34},
        {FY_DT_Q4_0, "Q4_0", 32, 18},   {FY_DT_Q4_1, "Q4_1", 32, 20},
        {FY_DT_Q5_0, "Q5_0", 32, 22},   {FY_DT_Q5_1, "Q5_1", 32, 24},
        {FY_DT_Q4_K, "Q4_K", 256, 144}, {FY_DT_Q5_K, "Q5_K", 256, 176},
        {FY_DT_Q6_K, "Q6_K", 256, 210},
    };
    assert_int_equal(sizeof want / sizeof want[0], FY_DT_COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(fy_dtype_name(want[i].t), want[i].name);
        assert_int_equal(fy_dtype_block_weights(want[i].t), want[i].block);
        assert_int_equal(fy_dtype_block_bytes(want[i].t), want[i].bytes);
    }
    uint64_t b = 0;
    assert_int_equal(fy_dtype_bytes(FY_DT_Q4_K, 512, &b), 0);
    assert_int_equal(b, 288);
    assert_int_equal(fy_dtype_bytes(FY_DT_Q4_K, 100, &b), FY_EINVAL);
    assert_int_equal(fy_dtype_bytes(FY_DT_F32, 1ull << 62, &b), FY_ETOOBIG);
    assert_int_equal(fy_dtype_bytes(FY_DT_COUNT, 32, &b), FY_EINVAL);
    assert_string_equal(fy_dtype_name(FY_DT_COUNT), "?");
    float y[32] = {7};
    uint8_t blk[34] = {0};
    assert_int_equal(fy_q_dequant(FY_DT_Q8_0, blk, y, 31), FY_EINVAL);
    assert_true(y[0] == 7); /* nothing written */
    assert_int_equal(fy_q_dequant(FY_DT_COUNT, blk, y, 32), FY_EINVAL);
}

/* fp16 constants: 1 0x3c00, 2 0x4000, 0.5 0x3800, 0.25 0x3400, -1 0xbc00, 10 0x4900. */
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Dequantizes the block(s) at B from an odd address too: nothing may
 * depend on alignment. */
static void deq(fy_dtype t, const uint8_t *b, size_t nbytes, float *y, size_t n)
{
    uint8_t shifted[512];
    float y2[256];
    assert_int_equal(fy_q_dequant(t, b, y, n), 0);
    memcpy(shifted + 1, b, nbytes);
    assert_int_equal(fy_q_dequant(t, shifted + 1, y2, n), 0);
    assert_memory_equal(y, y2, n * sizeof *y);
}

static void test_32_weight_blocks(void **state)
{
    (void)state;
    float y[32];
    uint8_t b[24];

    /* Q8_0: w = d*q. */
    uint8_t q8[34] = {0};
    put16(q8, 0x3800);
    q8[2] = 0x80, q8[3] = 127, q8[33] = 3; /* q[0] = -128, q[1] = 127, q[31] = 3 */
    deq(FY_DT_Q8_0, q8, 34, y, 32);
    assert_true(y[0] == -64.0f && y[1] == 63.5f && y[31] == 1.5f && y[2] == 0.0f);

    /* Q4_0: byte j holds weight j (low nibble) and j+16 (high); w = d*(q-8). */
    memset(b, 0, sizeof b);
    put16(b, 0x4000);
    b[2] = 0x0f;
    b[2 + 5] = 0x88;
    deq(FY_DT_Q4_0, b, 18, y, 32);
    assert_true(y[0] == 14.0f && y[16] == -16.0f && y[5] == 0.0f && y[21] == 0.0f);
    put16(b, 0xbc00); /* d = -1: q = 8 gives -0, as d*(q-8) does */
    deq(FY_DT_Q4_0, b, 18, y, 32);
    assert_true(y[5] == 0.0f && signbit(y[5]) && y[0] == -7.0f);

    /* Q4_1: w = d*q + m. */
    memset(b, 0, sizeof b);
    put16(b, 0x3400);
    put16(b + 2, 0xbc00);
    b[4] = 0xf3;
    deq(FY_DT_Q4_1, b, 20, y, 32);
    assert_true(y[0] == -0.25f && y[16] == 2.75f && y[1] == -1.0f);

    /* Q5_0: bit k of the u32 qh is bit 4 of weight k; w = d*(q-16). */
    memset(b, 0, sizeof b);
    put16(b, 0x3c00);
    b[2] = 0x01; /* qh bit 0 */
    b[4] = 0x01; /* qh bit 16 */
    b[5] = 0x80; /* qh bit 31 */
    b[6] = 0x21; /* weight 0: 1, weight 16: 2 */
    deq(FY_DT_Q5_0, b, 22, y, 32);
    assert_true(y[0] == 1.0f && y[16] == 2.0f && y[31] == 0.0f && y[15] == -16.0f);

    /* Q5_1: w = d*q + m, qh after d and m. */
    memset(b, 0, sizeof b);
    put16(b, 0x3800);
    put16(b + 2, 0x4900);
    b[4] = 0x02;  /* qh bit 1 */
    b[8 + 1] = 3; /* weight 1: 3 | 16 = 19 */
    deq(FY_DT_Q5_1, b, 24, y, 32);
    assert_true(y[1] == 19.5f && y[0] == 10.0f && y[17] == 10.0f);
}

static void test_k_quants(void **state)
{
    (void)state;
    float y[256];
    uint8_t b[210];

    /* Q4_K: [d][dmin][scales 12][qs 128]; sub-block 0 has scale 1, min 2;
     * sub-block 5 takes scale 3 | 3<<4 = 51 (byte 9 low nibble, byte 1 top
     * bits) and min 4 | 1<<4 = 20 (byte 9 high nibble, byte 5 top bits), and
     * the high nibbles of qs[64..96). w = d*sc*q - dmin*mn. */
    memset(b, 0, sizeof b);
    put16(b, 0x3c00);
    put16(b + 2, 0x3800);
    uint8_t *s = b + 4;
    s[0] = 1, s[4] = 2, s[1] = 0xc0, s[5] = 0x40, s[9] = 0x43;
    b[16 + 0] = 0x05;
    b[16 + 64 + 7] = 0xa0;
    deq(FY_DT_Q4_K, b, 144, y, 256);
    assert_true(y[0] == 4.0f);         /* 1*1*5 - 0.5*2 */
    assert_true(y[32] == 0.0f);        /* sub-block 1: scale 0, min 0 */
    assert_true(y[5 * 32 + 7] == 500); /* 51*10 - 0.5*20 */
    assert_true(y[5 * 32 + 8] == -10); /* q 0 */
    assert_true(y[4 * 32 + 7] == 0);   /* sub-block 4 reads the low nibbles */

    /* Q5_K: the same with qh[32] before qs; bit j of qh[l] is bit 4 of
     * weight l of sub-block j. */
    uint8_t k5[176];
    memset(k5, 0, sizeof k5);
    memcpy(k5, b, 16);
    memcpy(k5 + 48, b + 16, 128);
    k5[16 + 7] = 1 << 5;
    deq(FY_DT_Q5_K, k5, 176, y, 256);
    assert_true(y[0] == 4.0f && y[5 * 32 + 7] == 51 * 26 - 10);

    /* Q6_K: [ql 128][qh 64][int8 scales 16][d]. Weight 0: low nibble of
     * ql[0], bits 0-1 of qh[0], scale 0. Weight 255 (half 1, group 3, l 31):
     * high nibble of ql[127], bits 6-7 of qh[63], scale 15. w = d*sc*(q-32). */
    memset(b, 0, sizeof b);
    put16(b + 208, 0x3800);
    b[192 + 0] = (uint8_t)-2;
    b[192 + 15] = 100;
    b[0] = 0x07, b[128] = 0x02;   /* q = 7 | 2<<4 = 39 */
    b[127] = 0xf0, b[191] = 0xc0; /* q = 15 | 3<<4 = 63 */
    deq(FY_DT_Q6_K, b, 210, y, 256);
    assert_true(y[0] == -7.0f);     /* 0.5 * -2 * 7 */
    assert_true(y[255] == 1550.0f); /* 0.5 * 100 * 31 */
    assert_true(y[1] == 32.0f);     /* 0.5 * -2 * -32 */
}

static void test_float_types(void **state)
{
    (void)state;
    float y[4];
    uint8_t h[8] = {0x00, 0x3c, 0x01, 0x00, 0x00, 0xfc, 0x00, 0x80}; /* 1, 2^-24, -inf, -0 */
    deq(FY_DT_F16, h, 8, y, 4);
    assert_true(y[0] == 1.0f && y[1] == ldexpf(1, -24) && isinf(y[2]) && y[2] < 0);
    assert_true(y[3] == 0 && signbit(y[3]));
    uint8_t bf[4] = {0x80, 0x3f, 0x01, 0x00}; /* 1, 2^-133 */
    deq(FY_DT_BF16, bf, 4, y, 2);
    assert_true(y[0] == 1.0f && y[1] == ldexpf(1, -133));
    uint8_t f[4] = {0x00, 0x00, 0xc0, 0x3f}; /* 1.5 */
    deq(FY_DT_F32, f, 4, y, 1);
    assert_true(y[0] == 1.5f);
}

/* --- Quantization (kernels/cpu/quantize.c) ------------------------------------------ */

/* Gaussian weights from a fixed LCG + Box-Muller, with a scale that varies
 * per 256 so blocks see different magnitudes, and a few outliers. */
static void gauss(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i += 2) {
        seed = seed * 1664525u + 1013904223u;
        double u1 = ((seed >> 8) + 1.0) / 16777217.0;
        seed = seed * 1664525u + 1013904223u;
        double u2 = (seed >> 8) / 16777216.0, r = sqrt(-2.0 * log(u1));
        double sc = 0.02 * (1.0 + (double)((i / 256) % 7));
        x[i] = (float)(sc * r * cos(6.283185307179586 * u2));
        if (i + 1 < n) {
            x[i + 1] = (float)(sc * r * sin(6.283185307179586 * u2));
        }
    }
    for (size_t i = 37; i < n; i += 997) {
        x[i] *= 6.0f;
    }
}

/* sqrt(sum (y - x)^2 / sum x^2): the relative RMS error of a round trip. */
static double rel_rms(const float *x, const float *y, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)y[i] - x[i]) * ((double)y[i] - x[i]);
        s += (double)x[i] * x[i];
    }
    return sqrt(e / s);
}

/* Every type round-trips Gaussian weights within the error its bit width
 * allows. For a Gaussian, a uniform b-bit grid over the block's range has an
 * RMS error of about range / (2^b - 1) / sqrt(12) ~ 6 sigma / (2^b - 1) / 3.46
 * (0.115 sigma at 4 bits, 0.056 at 5, 0.027 at 6, 0.0068 at 8); a fitted
 * grid does better, so each bound below is that figure, not a measured one.
 * The K types pay a little for 6-bit sub-block scales, Q8_0 for f16 d. */
static void test_quantize_error(void **state)
{
    (void)state;
    enum { N = 256 * 48 };
    static float x[N], y[N];
    static uint8_t q[N * 4];
    gauss(x, N, 7);
    static const struct {
        fy_dtype t;
        double bound;
    } want[] = {
        {FY_DT_Q8_0, 0.0068}, {FY_DT_Q4_0, 0.115}, {FY_DT_Q4_1, 0.115}, {FY_DT_Q5_0, 0.056},
        {FY_DT_Q5_1, 0.056},  {FY_DT_Q4_K, 0.115}, {FY_DT_Q5_K, 0.056}, {FY_DT_Q6_K, 0.027},
        {FY_DT_F16, 0.001},   {FY_DT_BF16, 0.004}, {FY_DT_F32, 0.0},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        assert_int_equal(fy_q_quantize(want[k].t, x, q, N), 0);
        assert_int_equal(fy_q_dequant(want[k].t, q, y, N), 0);
        double e = rel_rms(x, y, N);
        print_message("%-5s relative rms error %.5f (bound %.4f)\n", fy_dtype_name(want[k].t), e,
                      want[k].bound);
        assert_true(e <= want[k].bound);
    }
}

/* Weights a block type represents exactly come back exactly: dequantized
 * Q8_0 and Q4_0 blocks (with the extreme quant present, so the block's scale
 * is found) quantize to the same weights. */
static void test_quantize_exact(void **state)
{
    (void)state;
    uint8_t b[34 * 4], b2[34 * 4];
    float x[128], y[128];
    uint32_t seed = 11;
    for (int k = 0; k < 4; k++) { /* Q8_0 */
        uint8_t *p = b + 34 * k;
        put16(p, (uint16_t)(0x2000 + 97 * k)); /* small positive d */
        for (int j = 0; j < 32; j++) {
            seed = seed * 1664525u + 1013904223u;
            p[2 + j] = (uint8_t)(int8_t)((int)(seed >> 24) % 127);
        }
        p[2 + 5] = (uint8_t)(int8_t)(k % 2 ? -127 : 127);
    }
    deq(FY_DT_Q8_0, b, sizeof b, x, 128);
    assert_int_equal(fy_q_quantize(FY_DT_Q8_0, x, b2, 128), 0);
    assert_int_equal(fy_q_dequant(FY_DT_Q8_0, b2, y, 128), 0);
    assert_memory_equal(x, y, sizeof x);
    for (int k = 0; k < 4; k++) { /* Q4_0: quant 0 is d * -8, the largest magnitude */
        uint8_t *p = b + 18 * k;
        put16(p, (uint16_t)(0x2400 + 31 * k));
        for (int j = 0; j < 16; j++) {
            seed = seed * 1664525u + 1013904223u;
            p[2 + j] = (uint8_t)(0x11 + (seed >> 24) % 0xEE);
        }
        p[2] = 0x70; /* weight 0: -8 */
    }
    deq(FY_DT_Q4_0, b, 18 * 4, x, 128);
    assert_int_equal(fy_q_quantize(FY_DT_Q4_0, x, b2, 128), 0);
    assert_int_equal(fy_q_dequant(FY_DT_Q4_0, b2, y, 128), 0);
    assert_memory_equal(x, y, sizeof x);
}

/* Fitting beats plain range quantization (d = (max - min) / 15, m = min)
 * on the squared error, block for block over the whole tensor. */
static void test_quantize_beats_range(void **state)
{
    (void)state;
    enum { N = 32 * 256 };
    static float x[N], y[N];
    static uint8_t q[N];
    gauss(x, N, 3);
    assert_int_equal(fy_q_quantize(FY_DT_Q4_1, x, q, N), 0);
    assert_int_equal(fy_q_dequant(FY_DT_Q4_1, q, y, N), 0);
    double fit = 0, range = 0;
    for (int b = 0; b < N / 32; b++) {
        const float *v = x + 32 * b;
        float mn = v[0], mx = v[0];
        for (int i = 1; i < 32; i++) {
            mn = fminf(mn, v[i]);
            mx = fmaxf(mx, v[i]);
        }
        float d = fy_f16_to_f32(fy_f32_to_f16((mx - mn) / 15)),
              m = fy_f16_to_f32(fy_f32_to_f16(mn));
        for (int i = 0; i < 32; i++) {
            float r = lrintf((v[i] - m) / d);
            r = r < 0 ? 0 : r > 15 ? 15 : r;
            range += pow(d * r + m - v[i], 2);
            fit += pow(y[32 * b + i] - v[i], 2);
        }
    }
    print_message("Q4_1 squared error: fitted %.6g, range %.6g\n", fit, range);
    assert_true(fit < range);
}

static void test_quantize_refusals(void **state)
{
    (void)state;
    float x[64] = {0};
    uint8_t q[64 * 4];
    assert_int_equal(fy_q_quantize(FY_DT_Q4_K, x, q, 64), FY_EINVAL); /* not a 256 multiple */
    assert_int_equal(fy_q_quantize(FY_DT_COUNT, x, q, 32), FY_EINVAL);
    x[9] = NAN;
    assert_int_equal(fy_q_quantize(FY_DT_Q8_0, x, q, 32), FY_EINVAL);
    x[9] = INFINITY;
    assert_int_equal(fy_q_quantize(FY_DT_F16, x, q, 32), FY_EINVAL);
    x[9] = 0;
    assert_int_equal(fy_q_quantize(FY_DT_Q6_K, x, q, 0), 0); /* nothing to do */
    float z[256] = {0}, y[256];
    for (int t = FY_DT_Q8_0; t < FY_DT_COUNT; t++) { /* all-zero blocks stay zero */
        size_t n = fy_dtype_block_weights((fy_dtype)t);
        assert_int_equal(fy_q_quantize((fy_dtype)t, z, q, n), 0);
        assert_int_equal(fy_q_dequant((fy_dtype)t, q, y, n), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(y[i] == 0.0f);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_32_weight_blocks),
        cmocka_unit_test(test_k_quants),
        cmocka_unit_test(test_float_types),
        cmocka_unit_test(test_quantize_error),
        cmocka_unit_test(test_quantize_exact),
        cmocka_unit_test(test_quantize_beats_range),
        cmocka_unit_test(test_quantize_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
