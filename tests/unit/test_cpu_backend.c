/* The CPU backend's ops against naive reference loops (double accumulation),
 * for every weight dtype, odd shapes, 1 and 3 threads, and both the AVX2 and
 * the portable path; f16/bf16 conversions; the device-name dispatch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/backend.h"
#include "kernels/cpu/mm.h"
#include "kernels/math.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy__cpu_backend_simd(fy_backend *be, int on);
int fy__cpu_backend_isa(fy_backend *be, int isa);

static uint32_t rng = 12345;

static float urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (float)(rng >> 8) / 16777216.0f * 2.0f - 1.0f;
}

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i] = urand();
    }
}

/* A weight tensor of DT with random values; VALS gets them as f32 (after rounding). */
static fy_tensor make_w(fy_dtype dt, int64_t rows, int64_t cols, float *vals)
{
    size_t n = (size_t)(rows * cols), es = fy_dtype_size(dt);
    void *d = malloc(n * es + 1);
    for (size_t i = 0; i < n; i++) {
        float v = urand();
        if (dt == FY_DT_F32) {
            ((float *)d)[i] = v;
        } else if (dt == FY_DT_F16) {
            ((uint16_t *)d)[i] = fy_f32_to_f16(v);
            v = fy_f16_to_f32(((uint16_t *)d)[i]);
        } else {
            ((uint16_t *)d)[i] = fy_f32_to_bf16(v);
            v = fy_bf16_to_f32(((uint16_t *)d)[i]);
        }
        vals[i] = v;
    }
    return (fy_tensor){d, dt, rows, cols};
}

static void expect_near(const float *got, const double *want, size_t n, double tol, const char *w)
{
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(got[i] - want[i]) <= tol * (1.0 + fabs(want[i])))) {
            fail_msg("%s: [%zu] = %.9g, expected %.9g", w, i, got[i], want[i]);
        }
    }
}

/* Every backend configuration the tests run: threads x SIMD on/off. */
typedef struct {
    int threads, simd;
} cfg;
static const cfg cfgs[] = {{1, 1}, {3, 1}, {1, 0}, {3, 0}};

static fy_backend *open_be(cfg c)
{
    fy_backend *be = NULL;
    char err[256];
    assert_int_equal(fy_backend_create("cpu", c.threads, &be, err, sizeof err), 0);
    if (!c.simd) {
        assert_int_equal(fy__cpu_backend_simd(be, 0), 0);
    }
    return be;
}

static void test_conversions(void **state)
{
    (void)state;
    /* f16: every non-NaN value survives f16 -> f32 -> f16, and matches its bit pattern. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fy_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true(((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff));
            assert_true(isnan(fy_f16_to_f32(fy_f32_to_f16(f))));
            continue;
        }
        assert_int_equal(fy_f32_to_f16(f), h);
        int e = (int)((h >> 10) & 0x1f), m = (int)(h & 0x3ff);
        double want = e == 0 ? ldexp(m, -24) : e == 31 ? INFINITY : ldexp(1024 + m, e - 25);
        assert_true((double)fabsf(f) == want);
    }
    /* Rounding: to nearest, ties to even, overflow to inf. */
    assert_int_equal(fy_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);     /* tie -> even */
    assert_int_equal(fy_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02); /* tie -> even */
    assert_int_equal(fy_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)), 0x3c01);
    assert_int_equal(fy_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(fy_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(fy_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(fy_f32_to_f16(ldexpf(1, -25)), 0);    /* tie with 0 -> even */
    assert_int_equal(fy_f32_to_f16(ldexpf(1.5f, -25)), 1); /* above the tie */
    assert_int_equal(fy_f32_to_f16(ldexpf(3, -25)), 2);    /* 1.5 ulp -> 2 */
    /* bf16: every value round-trips; rounding to nearest even. */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fy_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) {
            assert_int_equal(fy_f32_to_bf16(f), h);
        }
    }
    assert_int_equal(fy_f32_to_bf16(1.0f + ldexpf(1, -8)), 0x3f80);
    assert_int_equal(fy_f32_to_bf16(1.0f + 3 * ldexpf(1, -8)), 0x3f82);
    assert_true(isnan(fy_bf16_to_f32(fy_f32_to_bf16(NAN))));
    assert_string_equal(fy_dtype_name(FY_DT_BF16), "BF16");
    assert_int_equal(fy_dtype_size(FY_DT_F16), 2);
    assert_int_equal(fy_dtype_size(FY_DT_F32), 4);
}

static void test_create(void **state)
{
    (void)state;
    fy_backend *be = NULL;
    char err[256] = "";
    assert_int_equal(fy_backend_create("cpu", 0, &be, err, sizeof err), 0);
    assert_string_equal(be->ops->name, "cpu");
    /* auto is F32 on the CPU (ops_cpu.c says why); all three types have kernels. */
    fy_dtype kv = FY_DT_COUNT;
    assert_int_equal(be->ops->kv_dtype, FY_DT_F32);
    assert_int_equal(fy_kv_dtype_parse(NULL, be->ops, &kv, err, sizeof err), 0);
    assert_int_equal(kv, FY_DT_F32);
    assert_int_equal(fy_kv_dtype_parse("auto", be->ops, &kv, err, sizeof err), 0);
    assert_int_equal(kv, FY_DT_F32);
    assert_int_equal(fy_kv_dtype_parse("F16", be->ops, &kv, err, sizeof err), 0);
    assert_int_equal(kv, FY_DT_F16);
    assert_int_equal(fy_kv_dtype_parse("bf16", be->ops, &kv, err, sizeof err), 0);
    assert_int_equal(kv, FY_DT_BF16);
    assert_int_equal(fy_kv_dtype_parse("q8_0", be->ops, &kv, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "--kv-cache-dtype 'q8_0' is unknown (auto, f32, f16 or bf16)"));
    fy_backend_ops only_f16 = *be->ops;
    only_f16.kv_dtypes = 1u << FY_DT_F16;
    assert_int_equal(fy_kv_dtype_parse("bf16", &only_f16, &kv, err, sizeof err), FY_ENOTSUP);
    assert_non_null(strstr(err, "no kernels for a BF16 KV cache"));
    fy_backend_destroy(be);
    assert_int_equal(fy_backend_create("tpu", 0, &be, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "tpu"));
    assert_int_equal(fy_backend_create("cuda:x", 0, &be, err, sizeof err), FY_EINVAL);
#ifndef FY_HAVE_CUDA
    assert_int_equal(fy_backend_create("cuda:0", 0, &be, err, sizeof err), FY_ENOTSUP);
    assert_non_null(strstr(err, "no CUDA"));
#endif
    assert_int_equal(fy_backend_create("cpu", -1, &be, err, sizeof err), FY_EINVAL);
    assert_null(be);
}

static void test_matmul(void **state)
{
    (void)state;
    static const int rows_[] = {1, 5, 16, 37};
    static const int cols_[] = {1, 7, 8, 33, 64};
    static const int T_[] = {1, 2, 3, 5, 17};
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        fy_backend *be = open_be(cfgs[ci]);
        for (int dt = 0; dt < 3; dt++) {
            for (size_t ri = 0; ri < 4; ri++) {
                for (size_t co = 0; co < 5; co++) {
                    int R = rows_[ri], C = cols_[co];
                    float *wv = malloc((size_t)R * C * 4), *bv = malloc((size_t)R * 4);
                    fy_tensor w = make_w((fy_dtype)dt, R, C, wv);
                    fy_tensor b = make_w((fy_dtype)dt, 1, R, bv);
                    for (size_t ti = 0; ti < 5; ti++) {
                        int T = T_[ti];
                        float *x = malloc((size_t)T * C * 4), *out = malloc((size_t)T * R * 4);
                        double *ref = malloc((size_t)T * R * 8);
                        fill(x, (size_t)T * C);
                        for (int bias = 0; bias < 2; bias++) {
                            for (int t = 0; t < T; t++) {
                                for (int r = 0; r < R; r++) {
                                    double s = bias ? bv[r] : 0;
                                    for (int c = 0; c < C; c++) {
                                        s += (double)wv[r * C + c] * x[t * C + c];
                                    }
                                    ref[t * R + r] = s;
                                }
                            }
                            be->ops->matmul(be, out, x, &w, bias ? &b : NULL, T);
                            char what[128];
                            snprintf(what, sizeof what, "matmul cfg %zu %s %dx%d T=%d bias=%d", ci,
                                     fy_dtype_name((fy_dtype)dt), R, C, T, bias);
                            expect_near(out, ref, (size_t)T * R, 1e-5, what);
                        }
                        free(x);
                        free(out);
                        free(ref);
                    }
                    free((void *)w.data);
                    free((void *)b.data);
                    free(wv);
                    free(bv);
                }
            }
        }
        fy_backend_destroy(be);
    }
}

static void test_rowwise(void **state)
{
    (void)state;
    enum { T = 7, D = 37 };
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
        fy_backend *be = open_be(cfgs[ci]);
        for (int dt = 0; dt < 3; dt++) {
            float x[T * D], out[T * D], wv[D], tv[11 * D];
            double ref[T * D];
            fill(x, T * D);
            fy_tensor w = make_w((fy_dtype)dt, 1, D, wv);
            /* RMSNorm, also in place. */
            for (int t = 0; t < T; t++) {
                double ss = 0;
                for (int i = 0; i < D; i++) {
                    ss += (double)x[t * D + i] * x[t * D + i];
                }
                for (int i = 0; i < D; i++) {
                    ref[t * D + i] = x[t * D + i] / sqrt(ss / D + 1e-5) * wv[i];
                }
            }
            be->ops->rmsnorm(be, out, x, &w, T, D, 1e-5f);
            expect_near(out, ref, T * D, 1e-5, "rmsnorm");
            memcpy(out, x, sizeof x);
            be->ops->rmsnorm(be, out, out, &w, T, D, 1e-5f);
            expect_near(out, ref, T * D, 1e-5, "rmsnorm in place");
            /* Embedding. */
            fy_tensor table = make_w((fy_dtype)dt, 11, D, tv);
            int32_t ids[T] = {3, 0, 10, 3, 7, 1, 2};
            be->ops->embed(be, out, &table, ids, T);
            for (int t = 0; t < T; t++) {
                for (int i = 0; i < D; i++) {
                    ref[t * D + i] = tv[ids[t] * D + i];
                }
            }
            expect_near(out, ref, T * D, 0, "embed");
            free((void *)w.data);
            free((void *)table.data);
        }
        /* SiLU-mul (in place on gate), add, gather. */
        float g[T * D], u[T * D], o[T * D];
        double ref[T * D];
        fill(g, T * D);
        fill(u, T * D);
        for (int i = 0; i < T * D; i++) {
            g[i] *= 8;
            ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
        }
        be->ops->silu_mul(be, g, g, u, T, D);
        expect_near(g, ref, T * D, 1e-6, "silu_mul");
        fill(g, T * D);
        for (int i = 0; i < T * D; i++) {
            ref[i] = (double)g[i] + u[i];
        }
        be->ops->add(be, g, g, u, T * D);
        expect_near(g, ref, T * D, 1e-7, "add");
        int32_t rows[3] = {6, 0, 6};
        be->ops->gather_rows(be, o, u, rows, 3, D);
        for (int r = 0; r < 3; r++) {
            for (int i = 0; i < D; i++) {
                ref[r * D + i] = u[rows[r] * D + i];
            }
        }
        expect_near(o, ref, 3 * D, 0, "gather_rows");
        /* Argmax: lowest index on ties. */
        float l[2 * 5] = {1, 3, 3, 2, -1, -5, -4, -4, -9, -4};
        int32_t am[2];
        be->ops->argmax(be, am, l, 2, 5);
        assert_int_equal(am[0], 1);
        assert_int_equal(am[1], 1);
        fy_backend_destroy(be);
    }
}

static void test_rope(void **state)
{
    (void)state;
    enum { T = 5, NH = 4, NKV = 2, HD = 10 };
    float q[T * NH * HD], k[T * NKV * HD], q0[T * NH * HD], k0[T * NKV * HD], inv[HD / 2];
    int32_t pos[T] = {0, 1, 7, 100, 5000};
    double rq[T * NH * HD], rk[T * NKV * HD];
    fill(q0, sizeof q0 / 4);
    fill(k0, sizeof k0 / 4);
    for (int i = 0; i < HD / 2; i++) {
        inv[i] = (float)pow(10000.0, -2.0 * i / HD);
    }
    /* Both pair layouts: HF's (i, i + HD/2) and GGUF llama's (2i, 2i + 1). */
    for (int pairs = FY_ROPE_PAIRS_HALF; pairs <= FY_ROPE_PAIRS_ADJACENT; pairs++) {
        for (int pass = 0; pass < 2; pass++) {
            const float *src = pass ? k0 : q0;
            double *dst = pass ? rk : rq;
            int nh = pass ? NKV : NH;
            for (int t = 0; t < T; t++) {
                for (int h = 0; h < nh; h++) {
                    const float *x = src + (t * nh + h) * HD;
                    double *y = dst + (t * nh + h) * HD;
                    for (int i = 0; i < HD / 2; i++) {
                        int a = pairs ? 2 * i : i, b = pairs ? 2 * i + 1 : i + HD / 2;
                        double ang = (double)pos[t] * inv[i];
                        y[a] = x[a] * cos(ang) - x[b] * sin(ang);
                        y[b] = x[b] * cos(ang) + x[a] * sin(ang);
                    }
                }
            }
        }
        for (size_t ci = 0; ci < 2; ci++) {
            fy_backend *be = open_be(cfgs[ci]);
            memcpy(q, q0, sizeof q);
            memcpy(k, k0, sizeof k);
            be->ops->rope(be, q, k, pos, T, NH, NKV, HD, inv, pairs);
            expect_near(q, rq, T * NH * HD, 1e-6, pairs ? "rope q adjacent" : "rope q half");
            expect_near(k, rk, T * NKV * HD, 1e-6, pairs ? "rope k adjacent" : "rope k half");
            fy_backend_destroy(be);
        }
    }
}

/* A batch of T tokens of S sequences in host memory (the CPU backend's). */
static fy_attn_batch host_batch(int T, int S, const int32_t *pos, const int32_t *slots,
                                const int32_t *seq_start, const int32_t *ctx, const int32_t *bt,
                                int max_blocks, int max_ctx, int max_q)
{
    return (fy_attn_batch){.n_tokens = T,
                           .n_seqs = S,
                           .positions = pos,
                           .slots = slots,
                           .seq_start = seq_start,
                           .ctx_len = ctx,
                           .block_tables = bt,
                           .max_blocks = max_blocks,
                           .max_ctx_len = max_ctx,
                           .max_query_len = max_q,
                           .host_seq_start = seq_start,
                           .host_ctx_len = ctx};
}

/* One attention batch over a paged cache: S sequences, sequence s with
 * START[s] tokens already cached and NTOK[s] new ones (a prefill chunk, a
 * fresh prefill or a decode), GQA of NH / NKV, scattered blocks; checked on
 * every instruction set this CPU has, 1 and 3 threads, against a direct
 * softmax over the unpaged K/V in double. */
typedef struct {
    int nh, nkv, hd, bs, s;
    const int *start, *ntok;
} att_case;

static void attention_case(const char *name, att_case c)
{
    const int NH = c.nh, NKV = c.nkv, HD = c.hd, BS = c.bs, S = c.s;
    int T = 0, maxctx = 0, maxq = 0;
    for (int s = 0; s < S; s++) {
        T += c.ntok[s];
        maxctx = c.start[s] + c.ntok[s] > maxctx ? c.start[s] + c.ntok[s] : maxctx;
        maxq = c.ntok[s] > maxq ? c.ntok[s] : maxq;
    }
    const int MB = (maxctx + BS - 1) / BS, NB = S * MB + 3;
    /* The whole K/V history of each sequence, [S][maxctx][NKV][HD]. */
    size_t hist = (size_t)S * maxctx * NKV * HD;
    float *K = malloc(hist * 4), *V = malloc(hist * 4);
#define KV_AT(A, s, p, g) ((A) + (((size_t)(s)*maxctx + (p)) * NKV + (g)) * HD)
    fill(K, hist);
    fill(V, hist);
    float *q = malloc((size_t)T * NH * HD * 4), *out = malloc((size_t)T * NH * HD * 4);
    float *knew = malloc((size_t)T * NKV * HD * 4), *vnew = malloc((size_t)T * NKV * HD * 4);
    double *ref = malloc((size_t)T * NH * HD * 8), *sc = malloc((size_t)maxctx * 8);
    int32_t *pos = malloc((size_t)T * 4), *slots = malloc((size_t)T * 4);
    int32_t *seq_start = malloc((size_t)(S + 1) * 4), *ctx = malloc((size_t)S * 4);
    int32_t *bt = malloc((size_t)S * MB * 4);
    fill(q, (size_t)T * NH * HD);
    for (int i = 0; i < S * MB; i++) {
        bt[i] = (int32_t)(((size_t)i * 37 + 5) % (size_t)NB); /* distinct, scattered */
    }
    int t = 0;
    for (int s = 0; s < S; s++) {
        seq_start[s] = t;
        ctx[s] = c.start[s] + c.ntok[s];
        for (int i = 0; i < c.ntok[s]; i++, t++) {
            int p = c.start[s] + i;
            pos[t] = p;
            slots[t] = bt[s * MB + p / BS] * BS + p % BS;
            memcpy(knew + (size_t)t * NKV * HD, KV_AT(K, s, p, 0), (size_t)NKV * HD * 4);
            memcpy(vnew + (size_t)t * NKV * HD, KV_AT(V, s, p, 0), (size_t)NKV * HD * 4);
            for (int h = 0; h < NH; h++) {
                int g = h / (NH / NKV);
                double mx = -1e30, sum = 0;
                for (int j = 0; j <= p; j++) {
                    double d = 0;
                    for (int e = 0; e < HD; e++) {
                        d += (double)q[((size_t)t * NH + h) * HD + e] * KV_AT(K, s, j, g)[e];
                    }
                    sc[j] = d / sqrt(HD);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= p; j++) {
                    sum += exp(sc[j] - mx);
                }
                for (int e = 0; e < HD; e++) {
                    double a = 0;
                    for (int j = 0; j <= p; j++) {
                        a += exp(sc[j] - mx) / sum * KV_AT(V, s, j, g)[e];
                    }
                    ref[((size_t)t * NH + h) * HD + e] = a;
                }
            }
        }
    }
    seq_start[S] = T;
    fy_attn_batch b = host_batch(T, S, pos, slots, seq_start, ctx, bt, MB, maxctx, maxq);
    fy_attn_shape sh = {NH, NKV, HD, BS, 1.0f / sqrtf((float)HD), FY_DT_F32};
    size_t cache_floats = (size_t)NB * NKV * BS * HD;
    for (int isa = 0; isa < FY_ISA_COUNT; isa++) {
        for (int threads = 1; threads <= 3; threads += 2) {
            fy_backend *be = open_be((cfg){threads, 1});
            if (fy__cpu_backend_isa(be, isa) != isa) {
                fy_backend_destroy(be);
                continue; /* not on this CPU */
            }
            float *kc = be->ops->alloc(be, cache_floats * 4),
                  *vc = be->ops->alloc(be, cache_floats * 4);
            memset(kc, 0xff, cache_floats * 4); /* NaN: any stray read shows */
            memset(vc, 0xff, cache_floats * 4);
            /* Earlier context (positions before start) is already in the cache. */
            for (int s = 0; s < S; s++) {
                for (int p = 0; p < c.start[s]; p++) {
                    for (int g = 0; g < NKV; g++) {
                        size_t off = (((size_t)bt[s * MB + p / BS] * NKV + g) * BS + p % BS) * HD;
                        memcpy(kc + off, KV_AT(K, s, p, g), (size_t)HD * 4);
                        memcpy(vc + off, KV_AT(V, s, p, g), (size_t)HD * 4);
                    }
                }
            }
            be->ops->cache_write(be, kc, vc, knew, vnew, &b, &sh);
            be->ops->attention(be, out, q, kc, vc, &b, &sh);
            char what[160];
            snprintf(what, sizeof what, "attention %s, isa %d, %d threads", name, isa, threads);
            expect_near(out, ref, (size_t)T * NH * HD, 1e-5, what);
            if (isa == 0 && threads == 1) {
                /* Block copy: block NB-1 becomes a copy of bt[0]'s block. */
                int32_t src = bt[0], dst = NB - 1;
                size_t blk = (size_t)NKV * BS * HD;
                be->ops->block_copy(be, kc, vc, &src, &dst, 1, blk * 4);
                assert_memory_equal(kc + (size_t)dst * blk, kc + (size_t)src * blk, blk * 4);
                assert_memory_equal(vc + (size_t)dst * blk, vc + (size_t)src * blk, blk * 4);
            }
            be->ops->free(be, kc);
            be->ops->free(be, vc);
            fy_backend_destroy(be);
        }
    }
#undef KV_AT
    free(K);
    free(V);
    free(q);
    free(out);
    free(knew);
    free(vnew);
    free(ref);
    free(sc);
    free(pos);
    free(slots);
    free(seq_start);
    free(ctx);
    free(bt);
}

/* The shapes cover attn.h's tiles: one chunk of keys and several (ATT_KC),
 * one tile of query rows and several per sequence (ATT_ROWS), a KV group
 * wider than a tile (split over tiles), head sizes off the 16- and
 * 64-column steps, and decodes beside prefills. */
static void test_attention(void **state)
{
    (void)state;
    static const int s1[] = {9, 0, 30, 3}, n1[] = {6, 5, 1, 1};
    attention_case("small", (att_case){6, 2, 12, 4, 4, s1, n1});
    static const int s2[] = {0, 50, 100, 7}, n2[] = {70, 40, 1, 1};
    attention_case("prefill 64", (att_case){4, 4, 64, 16, 4, s2, n2});
    static const int s3[] = {33, 0, 64}, n3[] = {31, 45, 1};
    attention_case("gqa 80", (att_case){8, 2, 80, 16, 3, s3, n3});
    static const int s4[] = {0, 95}, n4[] = {5, 1};
    attention_case("group 40", (att_case){40, 1, 16, 8, 2, s4, n4});
    static const int s5[] = {20, 130}, n5[] = {9, 1};
    attention_case("head 136", (att_case){4, 1, 136, 32, 2, s5, n5});
}

/* A KV element of DT at I as f32. */
static float kv_elem(const void *c, fy_dtype dt, size_t i)
{
    if (dt == FY_DT_F16) {
        return fy_f16_to_f32(((const uint16_t *)c)[i]);
    }
    if (dt == FY_DT_BF16) {
        return fy_bf16_to_f32(((const uint16_t *)c)[i]);
    }
    return ((const float *)c)[i];
}

/* cache_write and attention with an F16 and a BF16 cache against the F32
 * ones, on both paths. Tolerances from the formats: rounding to nearest
 * keeps U = 2^-11 (f16: 11 significant bits) or 2^-8 (bf16) of each value,
 * plus half f16's subnormal spacing (2^-25) for tiny values. Attention: a
 * key off by U|k| moves a score by at most D = U * scale * sum|q||k|, which
 * scales each softmax weight by a factor in [e^-2D, e^2D] after
 * normalising, so the output moves by at most (e^2D - 1) max|v| from the
 * keys and U max|v| from the values. */
static void test_attention_kv_dtypes(void **state)
{
    (void)state;
    enum { NH = 4, NKV = 2, HD = 20, BS = 4, NB = 16, S = 2, T = 24 };
    static const int ntok[S] = {13, 11};
    static const struct {
        fy_dtype dt;
        double u, tiny;
    } types[] = {{FY_DT_F16, 1.0 / 2048, 1.0 / 33554432}, {FY_DT_BF16, 1.0 / 256, 0}};
    float q[T * NH * HD], k[T * NKV * HD], v[T * NKV * HD], out32[T * NH * HD], out[T * NH * HD];
    fill(q, sizeof q / 4);
    fill(k, sizeof k / 4);
    fill(v, sizeof v / 4);
    k[0] = 1e-6f; /* an f16 subnormal */
    v[1] = -3e-7f;
    int32_t pos[T], slots[T], seq_start[S + 1] = {0, ntok[0], T}, ctx[S] = {ntok[0], ntok[1]};
    int32_t bt[S * 4] = {9, 2, 14, 5, 0, 11, 7, 3}; /* scattered blocks */
    for (int s = 0, t = 0; s < S; s++) {
        for (int p = 0; p < ntok[s]; p++, t++) {
            pos[t] = p;
            slots[t] = bt[s * 4 + p / BS] * BS + p % BS;
        }
    }
    fy_attn_batch b = host_batch(T, S, pos, slots, seq_start, ctx, bt, 4, ntok[0], ntok[0]);
    fy_attn_shape sh = {NH, NKV, HD, BS, 1.0f / sqrtf(HD), FY_DT_F32};
    size_t elems = (size_t)NB * NKV * BS * HD;
    fy_backend *be = open_be(cfgs[0]);
    float *kc32 = calloc(elems, 4), *vc32 = calloc(elems, 4);
    be->ops->cache_write(be, kc32, vc32, k, v, &b, &sh);
    be->ops->attention(be, out32, q, kc32, vc32, &b, &sh);
    fy_backend_destroy(be);
    double vmax = 0, qk = 0;
    for (size_t i = 0; i < sizeof v / 4; i++) {
        vmax = fmax(vmax, fabs(v[i]));
    }
    for (int t = 0; t < T; t++) { /* max over (t, h, j) of sum |q||k| */
        for (int h = 0; h < NH; h++) {
            for (int j = 0; j < T; j++) {
                double d = 0;
                for (int e = 0; e < HD; e++) {
                    d += fabs(q[(t * NH + h) * HD + e] * k[(j * NKV + h / 2) * HD + e]);
                }
                qk = fmax(qk, d);
            }
        }
    }
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        double u = types[ti].u, D = u * sh.scale * qk;
        double tol = (exp(2 * D) - 1) * vmax + u * vmax + 1e-6;
        for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++) {
            be = open_be(cfgs[ci]);
            fy_attn_shape sh16 = sh;
            sh16.kv_dtype = types[ti].dt;
            uint16_t *kc = calloc(elems, 2), *vc = calloc(elems, 2);
            be->ops->cache_write(be, kc, vc, k, v, &b, &sh16);
            for (size_t i = 0; i < elems; i++) {
                float ka = kc32[i], va = vc32[i];
                float kb = kv_elem(kc, types[ti].dt, i), vb = kv_elem(vc, types[ti].dt, i);
                if (fabs(kb - ka) > fabs(ka) * u + types[ti].tiny ||
                    fabs(vb - va) > fabs(va) * u + types[ti].tiny) {
                    fail_msg("%s cache element %zu: k %g -> %g, v %g -> %g",
                             fy_dtype_name(types[ti].dt), i, ka, kb, va, vb);
                }
            }
            be->ops->attention(be, out, q, kc, vc, &b, &sh16);
            double worst = 0;
            for (size_t i = 0; i < sizeof out / 4; i++) {
                worst = fmax(worst, fabs((double)out[i] - out32[i]));
            }
            if (worst > tol) {
                fail_msg("%s attention: %g off the f32 result (bound %g)",
                         fy_dtype_name(types[ti].dt), worst, tol);
            }
            /* block_copy moves a block's bytes whatever the type. */
            int32_t src = bt[0], dst = 1;
            size_t blk = (size_t)NKV * BS * HD;
            be->ops->block_copy(be, kc, vc, &src, &dst, 1, blk * 2);
            assert_memory_equal(kc + blk, kc + (size_t)src * blk, blk * 2);
            assert_memory_equal(vc + blk, vc + (size_t)src * blk, blk * 2);
            free(kc);
            free(vc);
            fy_backend_destroy(be);
        }
    }
    free(kc32);
    free(vc32);
}

static void test_softmax_math(void **state)
{
    (void)state;
    /* Pushing scores one by one equals merging two partitions equals the direct sum. */
    float sc[9] = {0.5f, -2, 3, 3, 10, -50, 0, 1, 2};
    fy_softmax_state a = fy_softmax_init(), p1 = fy_softmax_init(), p2 = fy_softmax_init();
    double acc = 0, a1 = 0, a2 = 0, mx = 10, l = 0;
    for (int i = 0; i < 9; i++) {
        float w, f = fy_softmax_push(&a, sc[i], &w);
        acc = acc * f + w * i;
        fy_softmax_state *p = i < 4 ? &p1 : &p2;
        double *pa = i < 4 ? &a1 : &a2;
        f = fy_softmax_push(p, sc[i], &w);
        *pa = *pa * f + w * i;
        l += exp(sc[i] - mx);
    }
    float fa, fb;
    fy_softmax_merge(&p1, p2, &fa, &fb);
    double merged = a1 * fa + a2 * fb;
    double want = 0;
    for (int i = 0; i < 9; i++) {
        want += exp(sc[i] - mx) / l * i;
    }
    assert_float_equal(acc / a.l, want, 1e-5);
    assert_float_equal(merged / p1.l, want, 1e-5);
    assert_float_equal(a.m, 10, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rowwise),
        cmocka_unit_test(test_rope),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_kv_dtypes),
        cmocka_unit_test(test_softmax_math),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
