/* The CPU matmul on weights in their stored type (kernels/cpu/mm.h) against
 * dequantize-then-multiply in double, for every dtype, every instruction-set
 * path this machine has (portable, avx2, avxvnni, avx512), 1 and 3 threads,
 * odd shapes (rows off the tiles, one block and many, K past a panel), token
 * counts through the dot path (T <= 3) and the GEMM path, bias on and off.
 *
 * Weights are random but valid blocks built here (random quant bytes, f16
 * scales in a sane range; there is no quantizer yet); the reference values
 * come from fy_q_dequant (checked bit for bit against an independent numpy
 * reader in engine_ref.gguf_dequant).
 *
 * Tolerance, per output y = sum_k w_k x_k (+ bias), derived:
 *  (1) Activation rounding. The kernels replace x by x^ = d q, one d =
 *      max|x| / 127 per activation block (32 weights for the 32-weight types;
 *      256, 32 or 16 for the K-quants depending on the path; a bound taken
 *      over the type's block, 32 or 256, covers every path since a larger
 *      block has the larger max), q = round(x / d), so |x - x^| <= d / 2 (+
 *      a few ulps of x / d: the factor 1.001). The error is at most
 *          E_q = 1.001 * sum_blocks (max_b |x| / 254) * sum_{k in b} |w_k|.
 *  (2) Float arithmetic. Each sub-block's integer sum is exact (below 2^24
 *      in the GEMM; a K-quant dot's super-block sum may reach 2^28 and is
 *      rounded once when converted). Per term: the scale product dw * dx and
 *      the product with the sum round once each; the terms (at most K / 16
 *      of them, Q6_K's GEMM sub-blocks being 16 wide) accumulate in float
 *      lanes, then a horizontal sum (3), the K chunks and the bias add a few
 *      more: n = K / 16 + 8 roundings of 2^-24 at most, to first order, on
 *      sum_k A_k |x^_k|, A_k = |dw_k (u_k - o)| + |m_k| (the two parts of a
 *      weight, which the kernels sum separately). Asserted with a factor 2:
 *          E_f = 2 n eps * sum_k A_k |x^_k|  (+ eps (|y| + |bias|), the bias add).
 *      F32/F16/BF16 weights sum K products in float: n = K + 8 on sum |w x|.
 *  Asserted: |got - want| <= E_q + E_f. With random activations E_q is a few
 *  percent of |y| for one block (a wrong scale, nibble or offset is off by
 *  far more); a second set of activations lies exactly on the int8 grid
 *  (each 16 values hold a +-127 d with d a power of two, so quantization is
 *  lossless at every block size and E_q = 0), which holds every kernel to
 *  float rounding alone at every K. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "kernels/cpu/mm.h"
#include "kernels/cpu/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy__cpu_backend_isa(fy_backend *be, int isa);
int fy__cpu_backend_threads(const fy_backend *be, int *avx2);

#define EPS 5.9604644775390625e-8 /* 2^-24 */

static uint32_t rng = 2463534242u;

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

static double urand(void) /* [-1, 1) */
{
    return (double)(rnd() >> 8) / 8388608.0 - 1.0;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* A random f16 scale, |s| in [2^-9, 2^-3), either sign unless POSITIVE. */
static uint16_t rand_scale(int positive)
{
    double s = ldexp(1.0 + (double)(rnd() % 1024) / 1024.0, -9 + (int)(rnd() % 6));
    return fy_f32_to_f16((float)(positive || rnd() % 2 ? s : -s));
}

/* One random block of DT: random bytes, then sane f16 fields. */
static void rand_block(fy_dtype dt, uint8_t *b)
{
    for (uint32_t i = 0; i < fy_dtype_block_bytes(dt); i++) {
        b[i] = (uint8_t)rnd();
    }
    switch (dt) {
    case FY_DT_Q4_1:
    case FY_DT_Q5_1:
    case FY_DT_Q4_K:
    case FY_DT_Q5_K:
        put16(b + 2, rand_scale(0));
        put16(b, rand_scale(0));
        break;
    case FY_DT_Q6_K:
        put16(b + 208, rand_scale(0));
        break;
    default:
        put16(b, rand_scale(0));
        break;
    }
}

/* A ROWS x COLS weight of DT; WF gets it dequantized, MAG the magnitudes A_k. */
static fy_tensor make_w(fy_dtype dt, int rows, int cols, float *wf, float *mag)
{
    uint32_t bw = fy_dtype_block_weights(dt), bb = fy_dtype_block_bytes(dt);
    size_t rb = (size_t)cols / bw * bb;
    uint8_t *d = malloc(rb * (size_t)rows + 1);
    for (int r = 0; r < rows; r++) {
        uint8_t *row = d + rb * (size_t)r;
        for (int c = 0; c < cols; c += (int)bw) {
            uint8_t *b = row + (size_t)c / bw * bb;
            if (dt == FY_DT_F32) {
                float v = (float)urand();
                memcpy(b, &v, 4);
            } else if (dt == FY_DT_F16) {
                put16(b, fy_f32_to_f16((float)urand()));
            } else if (dt == FY_DT_BF16) {
                put16(b, fy_f32_to_bf16((float)urand()));
            } else {
                rand_block(dt, b);
            }
        }
        assert_int_equal(fy_q_dequant(dt, row, wf + (size_t)r * cols, (size_t)cols), 0);
        for (int c = 0; c < cols; c += (int)bw) {
            if (!fy_dtype_is_block(dt)) {
                mag[(size_t)r * cols + c] = fabsf(wf[(size_t)r * cols + c]);
                continue;
            }
            const fy__mm_type *ty = &fy__mm_types[dt];
            uint8_t u[256];
            float dw[16], m[16] = {0};
            fy__mm_unpack(dt, row + (size_t)c / bw * bb, u, dw, m);
            for (uint32_t l = 0; l < bw; l++) {
                mag[(size_t)r * cols + c + l] =
                    fabsf(dw[l / ty->sb] * (float)(u[l] - ty->o)) + fabsf(m[l / ty->sb]);
            }
        }
    }
    return (fy_tensor){d, dt, rows, cols};
}

/* Activations: random with a scale that varies by block, or (GRID) on the
 * int8 grid of a power-of-two d per row, every 16 values holding a +-127. */
static void make_x(float *x, int T, int cols, int grid)
{
    for (int t = 0; t < T; t++) {
        float d = ldexpf(1.0f, -7 - t % 3);
        for (int c = 0; c < cols; c++) {
            float *v = &x[(size_t)t * cols + c];
            if (grid) {
                int q = c % 16 == (t * 5 + c / 16) % 16 ? (rnd() % 2 ? 127 : -127)
                                                        : (int)(rnd() % 255) - 127;
                *v = d * (float)q;
            } else {
                *v = (float)(urand() * (1.0 + 3.0 * ((c / 32 + t) % 3)));
            }
        }
    }
}

/* want = x . wf^T + bias in double, and the tolerance of the header (E_q = 0
 * when X is on the int8 GRID). */
static void reference(fy_dtype dt, const float *x, const float *wf, const float *mag,
                      const float *bias, int T, int R, int K, int grid, double *want, double *tol)
{
    int block = fy_dtype_is_block(dt), bw = block ? (int)fy_dtype_block_weights(dt) : 1;
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * K;
        for (int r = 0; r < R; r++) {
            const float *w = wf + (size_t)r * K, *a = mag + (size_t)r * K;
            double s = 0, eq = 0, ef = 0;
            for (int b = 0; b < K; b += bw) {
                double amax = 0, sw = 0;
                for (int k = b; k < b + bw; k++) {
                    s += (double)w[k] * xt[k];
                    amax = fmax(amax, fabs(xt[k]));
                    sw += fabs(w[k]);
                }
                if (block) {
                    eq += amax / 254.0 * sw;
                    for (int k = b; k < b + bw; k++) {
                        ef += (double)a[k] * (fabs(xt[k]) + amax / 254.0);
                    }
                } else {
                    ef += fabs((double)w[b] * xt[b]);
                }
            }
            double bv = bias ? bias[r] : 0.0;
            double n = 2.0 * (block ? K / 16.0 + 8 : K + 8.0);
            want[(size_t)t * R + r] = s + bv;
            tol[(size_t)t * R + r] =
                (block ? 1.001 * eq : 0.0) + n * EPS * ef + EPS * (fabs(s + bv) + fabs(bv)) + 1e-30;
        }
    }
}

/* Every configuration: each usable ISA, 1 and 3 threads. */
typedef struct {
    fy_backend *be[2 * FY_ISA_COUNT];
    int isa[2 * FY_ISA_COUNT], threads[2 * FY_ISA_COUNT];
    int n;
} cfgs_t;

static void cfgs_open(cfgs_t *c)
{
    memset(c, 0, sizeof *c);
    for (int isa = 0; isa < FY_ISA_COUNT; isa++) {
        if (!fy__cpu_isa_usable((fy_cpu_isa)isa)) {
            continue;
        }
        for (int th = 1; th <= 3; th += 2) {
            char err[256];
            fy_backend *be = NULL;
            assert_int_equal(fy_backend_create("cpu", th, &be, err, sizeof err), 0);
            assert_int_equal(fy__cpu_backend_isa(be, isa), isa);
            c->be[c->n] = be;
            c->isa[c->n] = isa;
            c->threads[c->n] = th;
            c->n++;
        }
    }
}

static void cfgs_close(cfgs_t *c)
{
    for (int i = 0; i < c->n; i++) {
        fy_backend_destroy(c->be[i]);
    }
}

/* Runs every shape of DT over every configuration. */
static void check_type(fy_dtype dt)
{
    static const int rows_[] = {1, 5, 17, 37};
    static const int T_[] = {1, 2, 3, 5, 7, 17, 64};
    int bw = (int)fy_dtype_block_weights(dt);
    /* One block, a few, and past a panel's K (1024 for block types, 256 for floats). */
    int cols_[3] = {bw, 3 * bw, bw == 256 ? 1280 : bw == 32 ? 1088 : 300};
    if (bw == 1) {
        cols_[0] = 7;
        cols_[1] = 64;
    }
    cfgs_t cf;
    cfgs_open(&cf);
    double worst[2] = {0, 0}; /* random, grid */
    long checked = 0;
    for (size_t ri = 0; ri < sizeof rows_ / sizeof rows_[0]; ri++) {
        for (int ci = 0; ci < 3; ci++) {
            int R = rows_[ri], K = cols_[ci];
            float *wf = malloc((size_t)R * K * 4), *mag = malloc((size_t)R * K * 4);
            float *bias = malloc((size_t)R * 4);
            fy_tensor w = make_w(dt, R, K, wf, mag);
            for (int r = 0; r < R; r++) {
                bias[r] = (float)urand();
            }
            fy_tensor bt = {bias, FY_DT_F32, 1, R};
            for (size_t ti = 0; ti < sizeof T_ / sizeof T_[0]; ti++) {
                int T = T_[ti];
                float *x = malloc((size_t)T * K * 4), *out = malloc((size_t)T * R * 4);
                double *want = malloc((size_t)T * R * 8), *tol = malloc((size_t)T * R * 8);
                for (int v = 0; v < 4; v++) { /* {random, grid} x {no bias, bias} */
                    int grid = v & 1, hb = v >> 1;
                    make_x(x, T, K, grid);
                    reference(dt, x, wf, mag, hb ? bias : NULL, T, R, K, grid, want, tol);
                    for (int c = 0; c < cf.n; c++) {
                        memset(out, 0xff, (size_t)T * R * 4); /* NaN: a missed output shows */
                        cf.be[c]->ops->matmul(cf.be[c], out, x, &w, hb ? &bt : NULL, T);
                        for (int i = 0; i < T * R; i++) {
                            double e = fabs((double)out[i] - want[i]);
                            if (!(e <= tol[i])) {
                                fail_msg("%s %s threads=%d R=%d K=%d T=%d %s bias=%d: out[%d][%d] "
                                         "= %.9g, want %.9g (tolerance %.3g)",
                                         fy_dtype_name(dt), fy__cpu_isa_name(cf.isa[c]),
                                         cf.threads[c], R, K, T, grid ? "grid" : "random", hb,
                                         i / R, i % R, out[i], want[i], tol[i]);
                            }
                            worst[grid] = fmax(worst[grid], e / tol[i]);
                            checked++;
                        }
                    }
                }
                free(x);
                free(out);
                free(want);
                free(tol);
            }
            free((void *)w.data);
            free(wf);
            free(mag);
            free(bias);
        }
    }
    printf("  %-5s %ld outputs over %d configurations; worst error / tolerance: random x %.2f, "
           "grid x %.4f\n",
           fy_dtype_name(dt), checked, cf.n, worst[0], worst[1]);
    cfgs_close(&cf);
}

static void test_type(void **state)
{
    check_type((fy_dtype)(intptr_t)*state);
}

/* T past the GEMM's token chunk (512) and a bias in F16: one shape per type. */
static void test_long_batch(void **state)
{
    (void)state;
    enum { T = 530, R = 19 };
    cfgs_t cf;
    cfgs_open(&cf);
    for (int dt = 0; dt < FY_DT_COUNT; dt++) {
        int K = fy_dtype_block_weights((fy_dtype)dt) == 256 ? 512 : 64;
        float *wf = malloc((size_t)R * K * 4), *mag = malloc((size_t)R * K * 4), bias[R];
        uint16_t bias16[R];
        fy_tensor w = make_w((fy_dtype)dt, R, K, wf, mag);
        for (int r = 0; r < R; r++) {
            bias16[r] = fy_f32_to_f16((float)urand());
            bias[r] = fy_f16_to_f32(bias16[r]);
        }
        fy_tensor bt = {bias16, FY_DT_F16, 1, R};
        float *x = malloc((size_t)T * K * 4), *out = malloc((size_t)T * R * 4);
        double *want = malloc((size_t)T * R * 8), *tol = malloc((size_t)T * R * 8);
        make_x(x, T, K, 0);
        reference((fy_dtype)dt, x, wf, mag, bias, T, R, K, 0, want, tol);
        for (int c = 0; c < cf.n; c++) {
            memset(out, 0xff, (size_t)T * R * 4);
            cf.be[c]->ops->matmul(cf.be[c], out, x, &w, &bt, T);
            for (int i = 0; i < T * R; i++) {
                if (!(fabs((double)out[i] - want[i]) <= tol[i])) {
                    fail_msg("%s %s T=%d: out[%d][%d] = %.9g, want %.9g (tolerance %.3g)",
                             fy_dtype_name((fy_dtype)dt), fy__cpu_isa_name(cf.isa[c]), T, i / R,
                             i % R, out[i], want[i], tol[i]);
                }
            }
        }
        free((void *)w.data);
        free(wf);
        free(mag);
        free(x);
        free(out);
        free(want);
        free(tol);
    }
    cfgs_close(&cf);
}

/* FERRY_CPU_ISA: names, capping, the refusal of an unknown value, and the
 * backend list's detail string. */
static void test_isa_env(void **state)
{
    (void)state;
    char msg[160];
    fy_cpu_isa best = fy__cpu_isa_best();
    printf("  this CPU: best path %s; usable:", fy__cpu_isa_name(best));
    for (int i = 0; i < FY_ISA_COUNT; i++) {
        if (fy__cpu_isa_usable((fy_cpu_isa)i)) {
            printf(" %s", fy__cpu_isa_name((fy_cpu_isa)i));
        }
    }
    printf("\n");
    assert_true(fy__cpu_isa_usable(FY_ISA_PORTABLE));
    assert_true(fy__cpu_isa_usable(best));
    assert_int_equal(fy__cpu_isa_cap(FY_ISA_PORTABLE), FY_ISA_PORTABLE);
    for (int i = 0; i < FY_ISA_COUNT; i++) {
        fy_cpu_isa c = fy__cpu_isa_cap((fy_cpu_isa)i);
        assert_true((int)c <= i && fy__cpu_isa_usable(c));
    }
    unsetenv("FERRY_CPU_ISA");
    assert_int_equal(fy__cpu_isa_from_env(msg, sizeof msg), best);
    assert_string_equal(msg, "");
    setenv("FERRY_CPU_ISA", "portable", 1);
    assert_int_equal(fy__cpu_isa_from_env(msg, sizeof msg), FY_ISA_PORTABLE);
    fy_backend *be = NULL;
    char err[256];
    assert_int_equal(fy_backend_create("cpu", 1, &be, err, sizeof err), 0);
    int avx2 = 1;
    fy__cpu_backend_threads(be, &avx2);
    assert_int_equal(avx2, 0);
    fy_backend_destroy(be);
    fy_backend_info info[4];
    assert_true(fy_backend_list(info, 4) >= 1);
    assert_non_null(strstr(info[0].detail, "kernels portable"));
    assert_non_null(strstr(info[0].detail, "FERRY_CPU_ISA"));
    setenv("FERRY_CPU_ISA", "avx512", 1);
    assert_int_equal(fy__cpu_isa_from_env(msg, sizeof msg), fy__cpu_isa_cap(FY_ISA_AVX512));
    setenv("FERRY_CPU_ISA", "sse9", 1);
    assert_int_equal(fy__cpu_isa_from_env(msg, sizeof msg), best);
    assert_non_null(strstr(msg, "FERRY_CPU_ISA=sse9 is not one of"));
    unsetenv("FERRY_CPU_ISA");
}

/* A block-type tensor whose rows are not whole blocks (the loaders refuse
 * them; the op must not turn one into plausible numbers), or an unknown
 * type: every output NaN. */
static void test_bad_shape(void **state)
{
    (void)state;
    cfgs_t cf;
    cfgs_open(&cf);
    uint8_t blocks[4 * 18] = {0};
    float x[2 * 40] = {0}, out[2 * 2];
    fy_tensor bad[2] = {{blocks, FY_DT_Q4_0, 2, 40}, {blocks, FY_DT_COUNT, 2, 32}};
    for (int c = 0; c < cf.n; c++) {
        for (int b = 0; b < 2; b++) {
            for (int T = 1; T <= 2; T++) {
                memset(out, 0, sizeof out);
                cf.be[c]->ops->matmul(cf.be[c], out, x, &bad[b], NULL, T);
                for (int i = 0; i < 2 * T; i++) {
                    assert_true(isnan(out[i]));
                }
            }
        }
    }
    cfgs_close(&cf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_env),
#define T_(dt) cmocka_unit_test_prestate(test_type, (void *)(intptr_t)(dt))
        T_(FY_DT_F32),
        T_(FY_DT_F16),
        T_(FY_DT_BF16),
        T_(FY_DT_Q8_0),
        T_(FY_DT_Q4_0),
        T_(FY_DT_Q4_1),
        T_(FY_DT_Q5_0),
        T_(FY_DT_Q5_1),
        T_(FY_DT_Q4_K),
        T_(FY_DT_Q5_K),
        T_(FY_DT_Q6_K),
#undef T_
        cmocka_unit_test(test_long_batch),
        cmocka_unit_test(test_bad_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
