/* mm_portable.c: the matmul kernels in plain C (mm.h), for any CPU.
 *
 * The same formats and the same integer identity as the vector kernels
 * (w = dw * (u - o) + m against int8 activations), written as loops the
 * compiler can vectorize for the baseline ISA; tests run them beside the
 * vector kernels, and FERRY_CPU_ISA=portable selects them. */
#include "kernels/cpu/mm.h"

#include "kernels/cpu/quant.h"

#include <string.h>

#define P_MR 4 /* GEMM tile: tokens */
#define P_NR 8 /* GEMM tile: rows */

static void p_store(float *o, float v, int add)
{
    *o = add ? *o + v : v;
}

/* F32, F16, BF16 rows: converted 256 weights at a time, each chunk dotted with every token. */
static void p_dot_float(fy_dtype dt, const uint8_t *w, size_t rb, int nrows, int k,
                        const fy__mm_act *a, int nt, float *out, size_t ldo, int add)
{
    size_t es = fy_dtype_size(dt);
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        float s[FY_MM_DOT_NT] = {0}, tmp[256];
        for (int c = 0; c < k; c += 256) {
            int n = k - c < 256 ? k - c : 256;
            const float *v = (const float *)(const void *)(row + (size_t)c * es);
            if (dt != FY_DT_F32) {
                fy_q_dequant(dt, row + (size_t)c * es, tmp, (size_t)n);
                v = tmp;
            }
            for (int t = 0; t < nt; t++) {
                s[t] += fy__mm_dot_f32(v, a[t].x + c, n);
            }
        }
        for (int t = 0; t < nt; t++) {
            p_store(&out[(size_t)t * ldo + (size_t)r], s[t], add);
        }
    }
}

/* Block types: each block unpacked once (u, dw, m) and dotted with every
 * token's int8 block; the per-block scale d is fmt A's or fmt B's alike. */
static void p_dot_block(fy_dtype dt, const uint8_t *w, size_t rb, int nrows, int k,
                        const fy__mm_act *a, int nt, float *out, size_t ldo, int add)
{
    const fy__mm_type *ty = &fy__mm_types[dt];
    int bw = (int)fy_dtype_block_weights(dt), sb = ty->sb, o = ty->o;
    size_t bb = fy_dtype_block_bytes(dt);
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        float acc[FY_MM_DOT_NT] = {0};
        for (int blk = 0; blk < k / bw; blk++) {
            uint8_t u[256];
            float dw[16], m[16] = {0};
            fy__mm_unpack(dt, row + (size_t)blk * bb, u, dw, m);
            for (int t = 0; t < nt; t++) {
                const int8_t *q = a[t].q + (size_t)blk * bw;
                float s = 0.0f;
                for (int j = 0; j < bw / sb; j++) {
                    int32_t S = 0, Q = 0;
                    for (int l = 0; l < sb; l++) {
                        S += (u[j * sb + l] - o) * q[j * sb + l];
                        Q += q[j * sb + l];
                    }
                    s += dw[j] * (float)S + m[j] * (float)Q;
                }
                acc[t] += a[t].d[blk] * s;
            }
        }
        for (int t = 0; t < nt; t++) {
            p_store(&out[(size_t)t * ldo + (size_t)r], acc[t], add);
        }
    }
}

#define P_DOT(name, dt, fn)                                                                      \
    static void name(const uint8_t *w, size_t rb, int nrows, int k, const fy__mm_act *a, int nt, \
                     float *out, size_t ldo, int add)                                            \
    {                                                                                            \
        fn(dt, w, rb, nrows, k, a, nt, out, ldo, add);                                           \
    }
P_DOT(p_dot_f32, FY_DT_F32, p_dot_float)
P_DOT(p_dot_f16, FY_DT_F16, p_dot_float)
P_DOT(p_dot_bf16, FY_DT_BF16, p_dot_float)
P_DOT(p_dot_q8_0, FY_DT_Q8_0, p_dot_block)
P_DOT(p_dot_q4_0, FY_DT_Q4_0, p_dot_block)
P_DOT(p_dot_q4_1, FY_DT_Q4_1, p_dot_block)
P_DOT(p_dot_q5_0, FY_DT_Q5_0, p_dot_block)
P_DOT(p_dot_q5_1, FY_DT_Q5_1, p_dot_block)
P_DOT(p_dot_q4_k, FY_DT_Q4_K, p_dot_block)
P_DOT(p_dot_q5_k, FY_DT_Q5_K, p_dot_block)
P_DOT(p_dot_q6_k, FY_DT_Q6_K, p_dot_block)

static void p_gemmf(const float *p, const float *x, size_t ldx, int kc, float *c, size_t ldc, int m,
                    int n, int add)
{
    float acc[P_MR][P_NR] = {{0}};
    for (int k = 0; k < kc; k++) {
        for (int i = 0; i < m; i++) {
            float xv = x[(size_t)i * ldx + (size_t)k];
            for (int j = 0; j < P_NR; j++) {
                acc[i][j] += xv * p[(size_t)k * P_NR + j];
            }
        }
    }
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            p_store(&c[(size_t)i * ldc + (size_t)j], acc[i][j], add);
        }
    }
}

static void p_gemmq(const uint8_t *p, const uint8_t *xt, int mrx, int nsb, int sb, int min, int sgn,
                    float *c, size_t ldc, int m, int n, int add)
{
    const uint8_t *pu = p;
    const float *pd = (const float *)(const void *)(p + fy__mm_al64((size_t)nsb * sb * P_NR));
    const float *pm = pd + fy__mm_al64((size_t)nsb * P_NR * 4) / 4;
    const int8_t *xq = (const int8_t *)xt;
    const float *xd = (const float *)(const void *)(xt + fy__mm_al64((size_t)nsb * sb * mrx));
    const int32_t *xa =
        (const int32_t *)(const void *)(xd + fy__mm_al64((size_t)nsb * mrx * 4) / 4);
    float acc[P_MR][P_NR] = {{0}};
    for (int b = 0; b < nsb; b++) {
        int32_t S[P_MR][P_NR];
        for (int i = 0; i < m; i++) {
            for (int j = 0; j < P_NR; j++) {
                S[i][j] = min || sgn ? 0 : xa[(size_t)b * mrx + i];
            }
        }
        for (int g = 0; g < sb / 4; g++) {
            size_t kg = (size_t)b * (sb / 4) + g;
            for (int i = 0; i < m; i++) {
                const int8_t *x4 = xq + (kg * mrx + i) * 4;
                for (int j = 0; j < P_NR; j++) {
                    const uint8_t *w4 = pu + (kg * P_NR + j) * 4;
                    for (int l = 0; l < 4; l++) {
                        S[i][j] += (sgn ? (int8_t)w4[l] : w4[l]) * x4[l];
                    }
                }
            }
        }
        for (int i = 0; i < m; i++) {
            float dx = xd[(size_t)b * mrx + i], ds = 0.0f;
            if (min) {
                memcpy(&ds, &xa[(size_t)b * mrx + i], sizeof ds);
            }
            for (int j = 0; j < P_NR; j++) {
                acc[i][j] += (float)S[i][j] * pd[(size_t)b * P_NR + j] * dx;
                if (min) {
                    acc[i][j] += pm[(size_t)b * P_NR + j] * ds;
                }
            }
        }
    }
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            p_store(&c[(size_t)i * ldc + (size_t)j], acc[i][j], add);
        }
    }
}

const fy__mm_kern fy__mm_portable = {
    .isa = FY_ISA_PORTABLE,
    .dot = {[FY_DT_F32] = p_dot_f32,
            [FY_DT_F16] = p_dot_f16,
            [FY_DT_BF16] = p_dot_bf16,
            [FY_DT_Q8_0] = p_dot_q8_0,
            [FY_DT_Q4_0] = p_dot_q4_0,
            [FY_DT_Q4_1] = p_dot_q4_1,
            [FY_DT_Q5_0] = p_dot_q5_0,
            [FY_DT_Q5_1] = p_dot_q5_1,
            [FY_DT_Q4_K] = p_dot_q4_k,
            [FY_DT_Q5_K] = p_dot_q5_k,
            [FY_DT_Q6_K] = p_dot_q6_k},
    .dot_t = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
    .f_mr = P_MR,
    .f_nr = P_NR,
    .gemmf = p_gemmf,
    .q_mr = P_MR,
    .q_nr = P_NR,
    .q_sgn = 0,
    .gemmq = p_gemmq,
};
