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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_32_weight_blocks),
        cmocka_unit_test(test_k_quants),
        cmocka_unit_test(test_float_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
