/* test_gpu_ops.c: every op of the CUDA backend against the CPU backend (the
 * reference) by relative error on random inputs: embeddings, RMSNorm and
 * matmul over F32/F16/BF16 weights, embeddings and matmul (decode sizes and
 * batches) over every ggml block type, RoPE at large positions, SiLU-mul, add,
 * row gather, argmax with ties, reshape-and-cache with padding slots,
 * block copy, and attention over the paged cache for decode (single-pass
 * and partitioned, around the partition boundaries), prefill, chunked
 * prefill and mixed batches, GQA ratios 1/2/4/8, several head sizes and
 * block sizes, with permuted block tables. Then the CUDA-only helpers:
 * the top-k/top-p/penalty filter against a sorting reference, and, with two
 * or more GPUs, tensor-parallel shards and the NCCL all-reduce.
 *
 * Exit status: 0 pass, 1 failure, 77 skipped (no usable GPU, or a build
 * without CUDA), which ctest reports as skipped.
 *
 * --self-check runs the same comparisons with a second CPU backend in the
 * CUDA backend's place: it proves the harness itself (batch construction,
 * slots, block tables, tolerances) on machines without a GPU. */
#include "common/err.h"
#include "kernels/backend.h"
#include "kernels/cpu/quant.h"
#include "kernels/math.h"
#ifdef FY_HAVE_CUDA
#include "kernels/cuda/cuda_api.h"
#include <pthread.h>
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fy_backend *ref, *dut; /* reference (CPU) and device under test */
static int failures, checks;
static int self_check;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* --- helpers ------------------------------------------------------------------- */

static uint32_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static float frand(void) /* uniform in [-1, 1) */
{
    return (float)(rnd() % 2000001) / 1000000.0f - 1.0f;
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

static float *rand_floats(size_t n, float scale)
{
    float *p = xmalloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        p[i] = frand() * scale;
    }
    return p;
}

static void must(int rc, fy_backend *be, const char *what)
{
    if (rc < 0) {
        fprintf(stderr, "FAIL: %s on %s: %s\n", what, be->ops->name, fy_strerror(rc));
        exit(1);
    }
}

/* A copy of host bytes in BE's memory. */
static void *put(fy_backend *be, const void *host, size_t n)
{
    void *d = be->ops->alloc(be, n);
    if (!d) {
        fprintf(stderr, "FAIL: %s alloc %zu bytes\n", be->ops->name, n);
        exit(1);
    }
    if (host) {
        must(be->ops->upload(be, d, host, n), be, "upload");
    }
    return d;
}

static void get(fy_backend *be, void *host, const void *d, size_t n)
{
    must(be->ops->download(be, host, d, n), be, "download");
}

static void drop(fy_backend *be, void *d)
{
    be->ops->free(be, d);
}

/* ||a - r|| / ||r|| (absolute when r is all zeros). */
static double rel_err(const float *a, const float *r, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)r[i];
        if (isnan(a[i]) != isnan(r[i])) {
            return INFINITY;
        }
        num += d * d;
        den += (double)r[i] * r[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void check(const char *what, double err, double tol)
{
    checks++;
    int ok = err <= tol;
    if (!ok) {
        failures++;
    }
    printf("%-4s %-58s rel err %.3g (tol %.1g)\n", ok ? "ok" : "FAIL", what, err, tol);
}

/* Host bytes of N values of DT holding the (rounded) floats V; V is
 * rewritten with the rounded values so references see what the device sees. */
static void *to_dtype(float *v, size_t n, fy_dtype dt)
{
    void *p = xmalloc(n * fy_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        if (dt == FY_DT_F16) {
            ((uint16_t *)p)[i] = fy_f32_to_f16(v[i]);
            v[i] = fy_f16_to_f32(((uint16_t *)p)[i]);
        } else if (dt == FY_DT_BF16) {
            ((uint16_t *)p)[i] = fy_f32_to_bf16(v[i]);
            v[i] = fy_bf16_to_f32(((uint16_t *)p)[i]);
        } else {
            ((float *)p)[i] = v[i];
        }
    }
    return p;
}

/* A weight tensor in both backends' memory. */
typedef struct {
    fy_tensor r, d; /* on ref, on dut */
} pair_tensor;

static pair_tensor put_tensor(const void *host, fy_dtype dt, int64_t rows, int64_t cols)
{
    size_t n = (size_t)rows * fy_dtype_row_bytes(dt, cols);
    pair_tensor t = {{put(ref, host, n), dt, rows, cols}, {put(dut, host, n), dt, rows, cols}};
    return t;
}

static void drop_tensor(pair_tensor *t)
{
    drop(ref, (void *)t->r.data);
    drop(dut, (void *)t->d.data);
}

static const fy_dtype dtypes[] = {FY_DT_F32, FY_DT_F16, FY_DT_BF16};
static const fy_dtype qtypes[] = {FY_DT_Q8_0, FY_DT_Q4_0, FY_DT_Q4_1, FY_DT_Q5_0,
                                  FY_DT_Q5_1, FY_DT_Q4_K, FY_DT_Q5_K, FY_DT_Q6_K};
#define N_QTYPES (int)(sizeof qtypes / sizeof qtypes[0])

/* ROWS x COLS weights of block type DT, packed by the CPU quantizer
 * (fy_q_quantize, as `ferry-runner quantize` writes them) from random values
 * whose spread and offset change every 32 weights, so the blocks' scales,
 * mins and the K-quants' 6-bit sub-block scales take many values. Returns
 * the packed bytes; *DEQ gets fy_q_dequant's floats of them. */
static void *rand_packed(fy_dtype dt, int64_t rows, int64_t cols, float **deq)
{
    size_t n = (size_t)(rows * cols);
    float *w = xmalloc(n * sizeof *w);
    for (size_t g = 0; g < n; g += 32) {
        float spread = 0.02f + 0.09f * (frand() + 1.0f), offset = 0.05f * frand();
        for (size_t i = g; i < g + 32; i++) {
            w[i] = frand() * spread + offset;
        }
    }
    void *p = xmalloc((size_t)rows * fy_dtype_row_bytes(dt, cols));
    if (fy_q_quantize(dt, w, p, n) != 0 || fy_q_dequant(dt, p, w, n) != 0) {
        fprintf(stderr, "FAIL: quantizing %zu weights to %s\n", n, fy_dtype_name(dt));
        exit(1);
    }
    *deq = w;
    return p;
}

/* --- elementwise, norm, GEMM ------------------------------------------------------ */

static void test_embed(void)
{
    const int vocab = 100, dim = 72, T = 9;
    int32_t ids[9] = {0, 99, 5, 5, 17, 42, 1, 98, 63};
    for (int k = 0; k < 3; k++) {
        float *tab = rand_floats((size_t)vocab * dim, 1.0f);
        void *h = to_dtype(tab, (size_t)vocab * dim, dtypes[k]);
        pair_tensor t = put_tensor(h, dtypes[k], vocab, dim);
        int32_t *ir = put(ref, ids, sizeof ids), *id = put(dut, ids, sizeof ids);
        float * or = put(ref, NULL, (size_t)T * dim * 4), *od = put(dut, NULL, (size_t)T * dim * 4);
        ref->ops->embed(ref, or, &t.r, ir, T);
        dut->ops->embed(dut, od, &t.d, id, T);
        float *a = xmalloc((size_t)T * dim * 4), *r = xmalloc((size_t)T * dim * 4);
        get(ref, r, or, (size_t)T * dim * 4);
        get(dut, a, od, (size_t)T * dim * 4);
        char name[96];
        snprintf(name, sizeof name, "embed %s vocab %d dim %d", fy_dtype_name(dtypes[k]), vocab,
                 dim);
        check(name, rel_err(a, r, (size_t)T * dim), 0);
        drop_tensor(&t);
        drop(ref, ir), drop(dut, id), drop(ref, or), drop(dut, od);
        free(tab), free(h), free(a), free(r);
    }
}

/* A block-type table (GGUF's token_embd is often Q8_0, Q4_K or Q6_K): one
 * row gathered and dequantized, the same floats as the CPU's (the formulas
 * are exact in float, kernels/cpu/quant.h), so the tolerance is 0. */
static void test_embed_blocks(void)
{
    const int vocab = 37, dim = 768, T = 7;
    const int32_t ids[7] = {0, 36, 5, 5, 17, 1, 35};
    for (int k = 0; k < N_QTYPES; k++) {
        float *deq;
        void *h = rand_packed(qtypes[k], vocab, dim, &deq);
        pair_tensor t = put_tensor(h, qtypes[k], vocab, dim);
        int32_t *ir = put(ref, ids, sizeof ids), *id = put(dut, ids, sizeof ids);
        size_t n = (size_t)T * dim;
        float * or = put(ref, NULL, n * 4), *od = put(dut, NULL, n * 4);
        ref->ops->embed(ref, or, &t.r, ir, T);
        dut->ops->embed(dut, od, &t.d, id, T);
        float *a = xmalloc(n * 4), *r = xmalloc(n * 4);
        get(ref, r, or, n * 4);
        get(dut, a, od, n * 4);
        char name[96];
        snprintf(name, sizeof name, "embed %s vocab %d dim %d", fy_dtype_name(qtypes[k]), vocab,
                 dim);
        check(name, rel_err(a, r, n), 0);
        /* And those are fy_q_dequant's values of the rows asked for. */
        double e = 0;
        for (int i = 0; i < T; i++) {
            e = fmax(e, rel_err(a + (size_t)i * dim, deq + (size_t)ids[i] * dim, (size_t)dim));
        }
        snprintf(name, sizeof name, "embed %s rows = fy_q_dequant's", fy_dtype_name(qtypes[k]));
        check(name, e, 0);
        drop_tensor(&t);
        drop(ref, ir), drop(dut, id), drop(ref, or), drop(dut, od);
        free(deq), free(h), free(a), free(r);
    }
}

static void test_rmsnorm(void)
{
    const int dims[] = {64, 4099};
    for (int di = 0; di < 2; di++) {
        for (int k = 0; k < 3; k++) {
            const int T = 5, dim = dims[di];
            size_t n = (size_t)T * dim;
            float *x = rand_floats(n, 3.0f), *w = rand_floats((size_t)dim, 1.0f);
            void *wh = to_dtype(w, (size_t)dim, dtypes[k]);
            pair_tensor t = put_tensor(wh, dtypes[k], 1, dim);
            float *xr = put(ref, x, n * 4), *xd = put(dut, x, n * 4);
            ref->ops->rmsnorm(ref, xr, xr, &t.r, T, dim, 1e-5f); /* in place, as allowed */
            dut->ops->rmsnorm(dut, xd, xd, &t.d, T, dim, 1e-5f);
            float *a = xmalloc(n * 4), *r = xmalloc(n * 4);
            get(ref, r, xr, n * 4);
            get(dut, a, xd, n * 4);
            char name[96];
            snprintf(name, sizeof name, "rmsnorm %s dim %d (in place)", fy_dtype_name(dtypes[k]),
                     dim);
            check(name, rel_err(a, r, n), 1e-5);
            drop_tensor(&t);
            drop(ref, xr), drop(dut, xd);
            free(x), free(w), free(wh), free(a), free(r);
        }
    }
}

static void test_matmul(void)
{
    const int shapes[][3] = {{1, 96, 64}, {7, 333, 257}, {64, 128, 512}, {3, 512, 64}};
    /* F16/BF16 GEMMs on CUDA round the activations to the weight type. */
    const double tol[] = {1e-5, 3e-3, 2e-2};
    for (int si = 0; si < 4; si++) {
        for (int k = 0; k < 3; k++) {
            const int T = shapes[si][0], R = shapes[si][1], C = shapes[si][2];
            float *w = rand_floats((size_t)R * C, 0.1f), *x = rand_floats((size_t)T * C, 1.0f);
            float *bias = rand_floats((size_t)R, 1.0f);
            void *wh = to_dtype(w, (size_t)R * C, dtypes[k]);
            void *bh = to_dtype(bias, (size_t)R, dtypes[k]);
            pair_tensor tw = put_tensor(wh, dtypes[k], R, C), tb = put_tensor(bh, dtypes[k], 1, R);
            float *xr = put(ref, x, (size_t)T * C * 4), *xd = put(dut, x, (size_t)T * C * 4);
            float * or = put(ref, NULL, (size_t)T * R * 4), *od = put(dut, NULL, (size_t)T * R * 4);
            float *a = xmalloc((size_t)T * R * 4), *r = xmalloc((size_t)T * R * 4);
            for (int with_bias = 0; with_bias < 2; with_bias++) {
                ref->ops->matmul(ref, or, xr, &tw.r, with_bias ? &tb.r : NULL, T);
                dut->ops->matmul(dut, od, xd, &tw.d, with_bias ? &tb.d : NULL, T);
                get(ref, r, or, (size_t)T * R * 4);
                get(dut, a, od, (size_t)T * R * 4);
                char name[96];
                snprintf(name, sizeof name, "matmul %s T %d R %d C %d%s", fy_dtype_name(dtypes[k]),
                         T, R, C, with_bias ? " +bias" : "");
                check(name, rel_err(a, r, (size_t)T * R), tol[k]);
            }
            drop_tensor(&tw), drop_tensor(&tb);
            drop(ref, xr), drop(dut, xd), drop(ref, or), drop(dut, od);
            free(w), free(x), free(bias), free(wh), free(bh), free(a), free(r);
        }
    }
}

/* Matmul over block-type weights at decode sizes (T <= 8: CUDA's fp32
 * kernel) and batches (64, 300: its f16 tensor-core kernel), R odd so the
 * last row block and tile are partial, against the reference CPU backend on
 * F32 weights holding fy_q_dequant's values of the same packed bytes (exact
 * fp32 arithmetic). Tolerances: CUDA decode sums in fp32 in another order
 * (1e-5); CUDA batches round weights and activations to f16 (4e-3, as the F16
 * GEMM); the CPU (--self-check) quantizes the activations to 8 bits per
 * block (1e-2; it measures 4e-3). A wrong block layout, scale or nibble order costs O(1). */
static double qmatmul_tol(int T)
{
    return self_check ? 1e-2 : T <= 8 ? 1e-5 : 4e-3;
}

static void test_qmatmul(void)
{
    const int Ts[] = {1, 3, 8, 64, 300};
    const int R = 333, C = 512;
    for (int k = 0; k < N_QTYPES; k++) {
        float *deq;
        void *wp = rand_packed(qtypes[k], R, C, &deq);
        float *bias = rand_floats((size_t)R, 1.0f);
        fy_tensor wr = {put(ref, deq, (size_t)R * C * 4), FY_DT_F32, R, C};
        fy_tensor wd = {put(dut, wp, (size_t)R * fy_dtype_row_bytes(qtypes[k], C)), qtypes[k], R,
                        C};
        pair_tensor tb = put_tensor(bias, FY_DT_F32, 1, R);
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++) {
            const int T = Ts[ti], with_bias = ti % 2;
            float *x = rand_floats((size_t)T * C, 1.0f);
            float *xr = put(ref, x, (size_t)T * C * 4), *xd = put(dut, x, (size_t)T * C * 4);
            float * or = put(ref, NULL, (size_t)T * R * 4), *od = put(dut, NULL, (size_t)T * R * 4);
            float *a = xmalloc((size_t)T * R * 4), *r = xmalloc((size_t)T * R * 4);
            ref->ops->matmul(ref, or, xr, &wr, with_bias ? &tb.r : NULL, T);
            dut->ops->matmul(dut, od, xd, &wd, with_bias ? &tb.d : NULL, T);
            get(ref, r, or, (size_t)T * R * 4);
            get(dut, a, od, (size_t)T * R * 4);
            char name[96];
            snprintf(name, sizeof name, "matmul %s T %d R %d C %d%s", fy_dtype_name(qtypes[k]), T,
                     R, C, with_bias ? " +bias" : "");
            check(name, rel_err(a, r, (size_t)T * R), qmatmul_tol(T));
            drop(ref, xr), drop(dut, xd), drop(ref, or), drop(dut, od);
            free(x), free(a), free(r);
        }
        drop(ref, (void *)wr.data), drop(dut, (void *)wd.data), drop_tensor(&tb);
        free(deq), free(wp), free(bias);
    }
}

static void test_rope(void)
{
    const int cfg[][3] = {{8, 2, 64}, {8, 4, 8}, {32, 8, 128}}; /* heads, kv heads, head_dim */
    for (int ci = 0; ci < 3; ci++) {
        const int T = 6, H = cfg[ci][0], KV = cfg[ci][1], hd = cfg[ci][2];
        int32_t pos[6] = {0, 1, 17, 4095, 32768, 131071};
        float inv[64];
        for (int i = 0; i < hd / 2; i++) {
            inv[i] = powf(500000.0f, -2.0f * (float)i / (float)hd);
        }
        size_t nq = (size_t)T * H * hd, nk = (size_t)T * KV * hd;
        float *q = rand_floats(nq, 2.0f), *k = rand_floats(nk, 2.0f);
        float *qr = put(ref, q, nq * 4), *qd = put(dut, q, nq * 4);
        float *kr = put(ref, k, nk * 4), *kd = put(dut, k, nk * 4);
        int32_t *pr = put(ref, pos, sizeof pos), *pd = put(dut, pos, sizeof pos);
        float *ir = put(ref, inv, (size_t)hd / 2 * 4), *id = put(dut, inv, (size_t)hd / 2 * 4);
        int pairs = ci % 2 ? FY_ROPE_PAIRS_ADJACENT : FY_ROPE_PAIRS_HALF;
        ref->ops->rope(ref, qr, kr, pr, T, H, KV, hd, ir, pairs);
        dut->ops->rope(dut, qd, kd, pd, T, H, KV, hd, id, pairs);
        float *a = xmalloc(nq * 4), *r = xmalloc(nq * 4);
        char name[96];
        get(ref, r, qr, nq * 4);
        get(dut, a, qd, nq * 4);
        snprintf(name, sizeof name, "rope q heads %d head_dim %d pairs %s pos up to 131071", H, hd,
                 pairs ? "adjacent" : "half");
        check(name, rel_err(a, r, nq), 1e-5);
        get(ref, r, kr, nk * 4);
        get(dut, a, kd, nk * 4);
        snprintf(name, sizeof name, "rope k kv heads %d head_dim %d", KV, hd);
        check(name, rel_err(a, r, nk), 1e-5);
        drop(ref, qr), drop(dut, qd), drop(ref, kr), drop(dut, kd), drop(ref, pr), drop(dut, pd);
        drop(ref, ir), drop(dut, id);
        free(q), free(k), free(a), free(r);
    }
}

static void test_elementwise(void)
{
    const int T = 7, dim = 1031;
    size_t n = (size_t)T * dim;
    float *g = rand_floats(n, 8.0f), *u = rand_floats(n, 2.0f);
    float *gr = put(ref, g, n * 4), *gd = put(dut, g, n * 4);
    float *ur = put(ref, u, n * 4), *ud = put(dut, u, n * 4);
    float *a = xmalloc(n * 4), *r = xmalloc(n * 4);
    ref->ops->silu_mul(ref, gr, gr, ur, T, dim);
    dut->ops->silu_mul(dut, gd, gd, ud, T, dim);
    get(ref, r, gr, n * 4);
    get(dut, a, gd, n * 4);
    check("silu_mul T 7 dim 1031 (in place)", rel_err(a, r, n), 1e-6);
    ref->ops->add(ref, gr, gr, ur, n);
    dut->ops->add(dut, gd, gd, ud, n);
    get(ref, r, gr, n * 4);
    get(dut, a, gd, n * 4);
    check("add 7217 elements (in place)", rel_err(a, r, n), 1e-6);

    int32_t rows[5] = {6, 0, 3, 3, 5};
    float * or = put(ref, NULL, 5 * (size_t)dim * 4), *od = put(dut, NULL, 5 * (size_t)dim * 4);
    int32_t *rr = put(ref, rows, sizeof rows), *rd = put(dut, rows, sizeof rows);
    ref->ops->gather_rows(ref, or, gr, rr, 5, dim);
    dut->ops->gather_rows(dut, od, gd, rd, 5, dim);
    get(ref, r, or, 5 * (size_t)dim * 4);
    get(dut, a, od, 5 * (size_t)dim * 4);
    check("gather_rows 5 of 7 rows", rel_err(a, r, 5 * (size_t)dim), 1e-6);
    drop(ref, gr), drop(dut, gd), drop(ref, ur), drop(dut, ud), drop(ref, or), drop(dut, od);
    drop(ref, rr), drop(dut, rd);
    free(g), free(u), free(a), free(r);
}

static void test_argmax(void)
{
    const int n = 5, vocab = 32000;
    float *l = rand_floats((size_t)n * vocab, 10.0f);
    l[0 * vocab + 100] = 50.0f, l[0 * vocab + 7] = 50.0f; /* tie: lowest index wins */
    l[1 * vocab + vocab - 1] = 60.0f;                     /* last element */
    l[2 * vocab + 0] = 70.0f;                             /* first element */
    for (int i = 0; i < vocab; i++) {
        l[3 * vocab + i] = -1.0f; /* all equal: index 0 */
    }
    l[4 * vocab + 31000] = 12.0f, l[4 * vocab + 257] = 12.0f, l[4 * vocab + 20000] = 12.0f;
    size_t bytes = (size_t)n * vocab * 4;
    float *lr = put(ref, l, bytes), *ld = put(dut, l, bytes);
    int32_t * or = put(ref, NULL, (size_t)n * 4), *od = put(dut, NULL, (size_t)n * 4);
    ref->ops->argmax(ref, or, lr, n, vocab);
    dut->ops->argmax(dut, od, ld, n, vocab);
    int32_t a[5], r[5];
    get(ref, r, or, sizeof r);
    get(dut, a, od, sizeof a);
    int bad = 0;
    for (int i = 0; i < n; i++) {
        bad += a[i] != r[i];
    }
    int want[5] = {7, vocab - 1, 0, 0, 257};
    for (int i = 0; i < n; i++) {
        bad += r[i] != want[i];
    }
    check("argmax 5 x 32000 with ties (lowest index)", bad, 0);
    drop(ref, lr), drop(dut, ld), drop(ref, or), drop(dut, od);
    free(l);
}

/* --- paged KV cache and attention ----------------------------------------------- */

/* The KV element type a backend is tested with: the CPU reference keeps F32
 * (exact), the backend under test each type it lists (dut_kv, set by
 * test_attention), its "auto" type outside attention. */
static fy_dtype dut_kv = FY_DT_COUNT;

static fy_dtype kv_of(const fy_backend *be)
{
    if (be == ref) {
        return FY_DT_F32;
    }
    return dut_kv == FY_DT_COUNT ? be->ops->kv_dtype : dut_kv;
}

/* Normwise relative error that rounding K/V to the type under test allows:
 * its unit roundoff (F16 2^-11, BF16 2^-8) with 2x to spare, or f32 rounding
 * in sums ordered differently. Attention compounds the keys' error through
 * the softmax: 10x. */
static double kv_tol(int attention)
{
    double u = dut_kv == FY_DT_BF16 ? 1.0 / 256 : dut_kv == FY_DT_F32 ? 1e-5 : 1.0 / 2048;
    return (attention ? 10 : 2) * u;
}

/* A KV cache in backend memory read back as floats (any kv_dtype). */
static float *cache_floats(fy_backend *be, const void *cache, size_t elems)
{
    size_t es = fy_dtype_size(kv_of(be));
    void *raw = xmalloc(elems * es);
    float *f = xmalloc(elems * sizeof *f);
    get(be, raw, cache, elems * es);
    for (size_t i = 0; i < elems; i++) {
        if (kv_of(be) == FY_DT_F16) {
            f[i] = fy_f16_to_f32(((uint16_t *)raw)[i]);
        } else if (kv_of(be) == FY_DT_BF16) {
            f[i] = fy_bf16_to_f32(((uint16_t *)raw)[i]);
        } else {
            f[i] = ((float *)raw)[i];
        }
    }
    free(raw);
    return f;
}

/* The batch arrays of one step on one backend. */
typedef struct {
    int32_t *pos, *slots, *seq_start, *ctx_len, *bt;
} dev_batch;

typedef struct {
    int n_tokens, n_seqs, max_blocks, max_ctx, max_q;
    int32_t *pos, *slots, *seq_start, *ctx_len, *bt; /* host */
} host_batch;

static dev_batch put_batch(fy_backend *be, const host_batch *h)
{
    dev_batch d = {
        put(be, h->pos, (size_t)h->n_tokens * 4),
        put(be, h->slots, (size_t)h->n_tokens * 4),
        put(be, h->seq_start, (size_t)(h->n_seqs + 1) * 4),
        put(be, h->ctx_len, (size_t)h->n_seqs * 4),
        put(be, h->bt, (size_t)h->n_seqs * h->max_blocks * 4),
    };
    return d;
}

static void drop_batch(fy_backend *be, dev_batch *d)
{
    drop(be, d->pos), drop(be, d->slots), drop(be, d->seq_start), drop(be, d->ctx_len);
    drop(be, d->bt);
}

static fy_attn_batch view(const host_batch *h, const dev_batch *d)
{
    fy_attn_batch b = {h->n_tokens, h->n_seqs,     d->pos,     d->slots, d->seq_start, d->ctx_len,
                       d->bt,       h->max_blocks, h->max_ctx, h->max_q, h->seq_start, h->ctx_len};
    return b;
}

typedef struct {
    const char *name;
    int heads, kv_heads, head_dim, block_size;
    int n_seqs;
    int ctx[64];  /* tokens in the cache after the step, per sequence (0: repeat ctx[0]) */
    int qlen[64]; /* tokens of this step per sequence (0: 1 = decode) */
    int permute;  /* 1: block ids shuffled over the whole pool */
} attn_case;

/* Builds a host batch over the sequences of C: the history step (positions
 * 0 .. ctx-qlen-1, with a padding token of slot -1 after each sequence) when
 * HISTORY, else this step's tokens. BLOCK_OF[s][i]: block i of sequence s. */
static host_batch make_batch(const attn_case *c, int32_t **block_of, int max_blocks, int history)
{
    host_batch h;
    memset(&h, 0, sizeof h);
    h.n_seqs = c->n_seqs;
    h.max_blocks = max_blocks;
    int total = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        int ctx = c->ctx[s], q = c->qlen[s];
        total += history ? ctx - q + 1 : q;
    }
    h.pos = xmalloc((size_t)total * 4);
    h.slots = xmalloc((size_t)total * 4);
    h.seq_start = xmalloc((size_t)(c->n_seqs + 1) * 4);
    h.ctx_len = xmalloc((size_t)c->n_seqs * 4);
    h.bt = xmalloc((size_t)c->n_seqs * max_blocks * 4);
    int t = 0;
    for (int s = 0; s < c->n_seqs; s++) {
        int ctx = c->ctx[s], q = c->qlen[s];
        int from = history ? 0 : ctx - q, to = history ? ctx - q : ctx;
        h.seq_start[s] = t;
        for (int p = from; p < to; p++, t++) {
            h.pos[t] = p;
            h.slots[t] = block_of[s][p / c->block_size] * c->block_size + p % c->block_size;
        }
        if (history) { /* padding: must be skipped by cache_write */
            h.pos[t] = 0;
            h.slots[t] = -1;
            t++;
        }
        h.ctx_len[s] = history ? (to > 0 ? to : 1) : ctx;
        for (int i = 0; i < max_blocks; i++) {
            h.bt[(size_t)s * max_blocks + i] = block_of[s][i];
        }
        int ql = to - from;
        h.max_q = ql > h.max_q ? ql : h.max_q;
        h.max_ctx = h.ctx_len[s] > h.max_ctx ? h.ctx_len[s] : h.max_ctx;
    }
    h.seq_start[c->n_seqs] = t;
    h.n_tokens = t;
    if (h.max_q == 0) {
        h.max_q = 1;
    }
    return h;
}

static void free_batch(host_batch *h)
{
    free(h->pos), free(h->slots), free(h->seq_start), free(h->ctx_len), free(h->bt);
}

/* K/V rows for the batch's tokens: random, and a loud 1e4 on padding rows
 * (a cache that took them would fail the comparison). */
static float *kv_rows(const host_batch *h, int width)
{
    float *v = rand_floats((size_t)h->n_tokens * width, 1.0f);
    for (int t = 0; t < h->n_tokens; t++) {
        if (h->slots[t] < 0) {
            for (int i = 0; i < width; i++) {
                v[(size_t)t * width + i] = 1e4f;
            }
        }
    }
    return v;
}

static void run_cache_write(const host_batch *h, const fy_attn_shape *sh, void *kc[2], void *vc[2])
{
    int width = sh->n_kv_heads * sh->head_dim;
    float *k = kv_rows(h, width), *v = kv_rows(h, width);
    fy_backend *bes[2] = {ref, dut};
    for (int i = 0; i < 2; i++) {
        dev_batch d = put_batch(bes[i], h);
        fy_attn_batch b = view(h, &d);
        size_t n = (size_t)h->n_tokens * width * 4;
        float *kd = put(bes[i], k, n), *vd = put(bes[i], v, n);
        fy_attn_shape shi = *sh;
        shi.kv_dtype = kv_of(bes[i]);
        bes[i]->ops->cache_write(bes[i], kc[i], vc[i], kd, vd, &b, &shi);
        must(bes[i]->ops->sync(bes[i]), bes[i], "cache_write");
        drop(bes[i], kd), drop(bes[i], vd);
        drop_batch(bes[i], &d);
    }
    free(k), free(v);
}

static void attn_run(const attn_case *c0)
{
    attn_case c = *c0;
    for (int s = 0; s < c.n_seqs; s++) {
        c.ctx[s] = c.ctx[s] ? c.ctx[s] : c.ctx[0];
        c.qlen[s] = c.qlen[s] ? c.qlen[s] : 1;
    }
    const int bs = c.block_size;
    int max_blocks = 0, total_blocks = 0;
    for (int s = 0; s < c.n_seqs; s++) {
        int nb = (c.ctx[s] + bs - 1) / bs;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total_blocks += nb;
    }
    const int spare = 4, n_blocks = total_blocks + spare;
    int32_t *ids = xmalloc((size_t)n_blocks * 4);
    for (int i = 0; i < n_blocks; i++) {
        ids[i] = i;
    }
    if (c.permute) {
        for (int i = n_blocks - 1; i > 0; i--) {
            int j = (int)(rnd() % (uint32_t)(i + 1));
            int32_t x = ids[i];
            ids[i] = ids[j], ids[j] = x;
        }
    }
    int32_t **block_of = xmalloc((size_t)c.n_seqs * sizeof *block_of);
    int next = 0;
    for (int s = 0; s < c.n_seqs; s++) {
        block_of[s] = xmalloc((size_t)max_blocks * 4);
        int nb = (c.ctx[s] + bs - 1) / bs;
        for (int i = 0; i < max_blocks; i++) {
            block_of[s][i] = i < nb ? ids[next++] : 0;
        }
    }
    fy_attn_shape sh = {c.heads,  c.kv_heads, c.head_dim, bs, 1.0f / sqrtf((float)c.head_dim),
                        FY_DT_F32};
    size_t elems = (size_t)n_blocks * c.kv_heads * bs * c.head_dim;
    void *kc[2], *vc[2];
    fy_backend *bes[2] = {ref, dut};
    for (int i = 0; i < 2; i++) {
        size_t bytes = elems * fy_dtype_size(kv_of(bes[i]));
        kc[i] = put(bes[i], NULL, bytes);
        vc[i] = put(bes[i], NULL, bytes);
    }

    /* History, then this step's K/V, then attention. */
    host_batch hist = make_batch(&c, block_of, max_blocks, 1);
    run_cache_write(&hist, &sh, kc, vc);
    host_batch step = make_batch(&c, block_of, max_blocks, 0);
    run_cache_write(&step, &sh, kc, vc);

    size_t nq = (size_t)step.n_tokens * c.heads * c.head_dim;
    float *q = rand_floats(nq, 1.0f);
    float *out[2];
    for (int i = 0; i < 2; i++) {
        dev_batch d = put_batch(bes[i], &step);
        fy_attn_batch b = view(&step, &d);
        float *qd = put(bes[i], q, nq * 4), *od = put(bes[i], NULL, nq * 4);
        fy_attn_shape shi = sh;
        shi.kv_dtype = kv_of(bes[i]);
        bes[i]->ops->attention(bes[i], od, qd, kc[i], vc[i], &b, &shi);
        out[i] = xmalloc(nq * 4);
        get(bes[i], out[i], od, nq * 4);
        drop(bes[i], qd), drop(bes[i], od);
        drop_batch(bes[i], &d);
    }
    char name[128];
    snprintf(name, sizeof name, "attention %s kv %s (T %d, max ctx %d, max q %d)", c.name,
             fy_dtype_name(dut_kv), step.n_tokens, step.max_ctx, step.max_q);
    check(name, rel_err(out[1], out[0], nq), kv_tol(1));

    /* The caches agree on every written slot (padding never landed). */
    float *cr = cache_floats(ref, kc[0], elems), *cd = cache_floats(dut, kc[1], elems);
    float *vr = cache_floats(ref, vc[0], elems), *vd = cache_floats(dut, vc[1], elems);
    double worst = 0;
    size_t row = (size_t)c.head_dim;
    for (int s = 0; s < c.n_seqs; s++) {
        for (int p = 0; p < c.ctx[s]; p++) {
            for (int h = 0; h < c.kv_heads; h++) {
                size_t off = (((size_t)block_of[s][p / bs] * c.kv_heads + h) * bs + p % bs) * row;
                double ek = rel_err(cd + off, cr + off, row), ev = rel_err(vd + off, vr + off, row);
                worst = fmax(worst, fmax(ek, ev));
            }
        }
    }
    snprintf(name, sizeof name, "cache_write %s kv %s (%d history + %d new, padding skipped)",
             c.name, fy_dtype_name(dut_kv), hist.n_tokens, step.n_tokens);
    check(name, worst, kv_tol(0));

    /* Copy-on-write: the first block of each of up to 4 sequences goes to a
     * spare block; both backends then hold the source's values there. */
    int np = c.n_seqs < spare ? c.n_seqs : spare;
    int32_t src[4], dst[4];
    for (int i = 0; i < np; i++) {
        src[i] = block_of[i][0];
        dst[i] = ids[total_blocks + i];
    }
    size_t block_elems = (size_t)c.kv_heads * bs * c.head_dim;
    double cw = 0;
    for (int i = 0; i < 2; i++) {
        int32_t *sd = put(bes[i], src, sizeof src), *dd = put(bes[i], dst, sizeof dst);
        bes[i]->ops->block_copy(bes[i], kc[i], vc[i], sd, dd, np,
                                block_elems * fy_dtype_size(kv_of(bes[i])));
        must(bes[i]->ops->sync(bes[i]), bes[i], "block_copy");
        float *k2 = cache_floats(bes[i], kc[i], elems), *v2 = cache_floats(bes[i], vc[i], elems);
        for (int j = 0; j < np; j++) {
            cw = fmax(cw,
                      rel_err(k2 + dst[j] * block_elems, k2 + src[j] * block_elems, block_elems));
            cw = fmax(cw,
                      rel_err(v2 + dst[j] * block_elems, v2 + src[j] * block_elems, block_elems));
        }
        free(k2), free(v2);
        drop(bes[i], sd), drop(bes[i], dd);
    }
    snprintf(name, sizeof name, "block_copy %s (%d pairs)", c.name, np);
    check(name, cw, 0);

    free(cr), free(cd), free(vr), free(vd), free(out[0]), free(out[1]), free(q);
    free_batch(&hist), free_batch(&step);
    for (int i = 0; i < 2; i++) {
        drop(bes[i], kc[i]), drop(bes[i], vc[i]);
    }
    for (int s = 0; s < c.n_seqs; s++) {
        free(block_of[s]);
    }
    free(block_of), free(ids);
}

static void test_attention(void)
{
    static const attn_case cases[] = {
        /* GQA ratios 1, 2, 4, 8 on decode. */
        {"gqa 1 decode", 8, 8, 64, 16, 3, {1, 17, 100}, {0}, 1},
        {"gqa 2 decode", 8, 4, 64, 16, 3, {5, 33, 200}, {0}, 1},
        {"gqa 4 decode", 16, 4, 128, 16, 2, {64, 300}, {0}, 1},
        {"gqa 8 decode", 32, 4, 128, 16, 2, {129, 77}, {0}, 1},
        /* Around the partition size (512): single pass, then partitioned. */
        {"ctx 511", 8, 2, 128, 16, 1, {511}, {0}, 1},
        {"ctx 512", 8, 2, 128, 16, 1, {512}, {0}, 1},
        {"ctx 513 (v2, 2 partitions)", 8, 2, 128, 16, 1, {513}, {0}, 1},
        {"ctx 1024", 8, 2, 128, 16, 1, {1024}, {0}, 1},
        {"ctx 1025 (v2, 3 partitions)", 8, 2, 128, 16, 1, {1025}, {0}, 1},
        {"ctx 4097 + 700 + 1 (v2, uneven rows)", 8, 8, 64, 32, 3, {4097, 700, 1}, {0}, 1},
        /* Many rows: long contexts stay single-pass when the grid is full. */
        {"64 seqs x ctx 1025, 32 heads", 32, 4, 64, 16, 64, {1025}, {0}, 1},
        /* Head sizes: stories260K's 8, a non-power-of-two 80, the largest 256. */
        {"head_dim 8 (stories260K)", 8, 4, 8, 16, 2, {40, 300}, {0}, 1},
        {"head_dim 80", 8, 8, 80, 16, 2, {100, 600}, {0}, 1},
        {"head_dim 256", 8, 2, 256, 16, 2, {30, 530}, {0}, 1},
        {"block_size 8, sequential blocks", 8, 4, 64, 8, 2, {70, 9}, {0}, 0},
        /* Prefill, chunked prefill, and mixed batches. */
        {"prefill 37", 8, 4, 64, 16, 1, {37}, {37}, 1},
        {"prefill 300 gqa 8 hd 128", 32, 4, 128, 16, 1, {300}, {300}, 1},
        {"chunked prefill 45 after 255", 8, 2, 64, 16, 1, {300}, {45}, 1},
        {"mixed decode + chunk + prefill", 8, 4, 64, 16, 3, {600, 130, 20}, {1, 64, 20}, 1},
        {"short chunks (decode path) 3 + 1", 8, 4, 64, 16, 2, {700, 40}, {3, 1}, 1},
        {"prefill head_dim 256", 4, 2, 256, 16, 2, {50, 90}, {50, 17}, 1},
        {"prefill head_dim 8", 8, 4, 8, 16, 1, {200}, {200}, 1},
    };
    static const fy_dtype kv[] = {FY_DT_F16, FY_DT_BF16, FY_DT_F32};
    for (size_t k = 0; k < sizeof kv / sizeof kv[0]; k++) {
        if (!(dut->ops->kv_dtypes & (1u << kv[k]))) {
            continue;
        }
        dut_kv = kv[k];
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            attn_run(&cases[i]);
        }
    }
    dut_kv = FY_DT_COUNT;
}

/* --- CUDA-only: sampling filter and tensor parallelism ---------------------------- */

#ifdef FY_HAVE_CUDA
static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Smallest logit of the nucleus: the first value, walking SORTED (descending)
 * down, at which the mass reaches THRESHOLD. */
static float nucleus_cut(const float *sorted, int vocab, double m, double threshold)
{
    double acc = 0;
    for (int i = 0; i < vocab; i++) {
        acc += exp(sorted[i] - m);
        if (acc >= threshold) {
            return sorted[i];
        }
    }
    return sorted[vocab - 1];
}

/* The filter's reference on one row (kernels/cuda/cuda_api.h semantics).
 * Top-p's boundary depends on a float sum compared with top_p * total, so
 * values between the cuts for top_p * (1 -+ 1e-4) are marked NaN: either
 * answer is right for them. */
static void filter_ref(float *row, const int32_t *cnt, const fy_sample_params *p, int vocab)
{
    for (int i = 0; i < vocab; i++) {
        float x = row[i];
        if (cnt && cnt[i] > 0) {
            x = fy_logit_repetition(x, p->repetition);
            x = fy_logit_presence_frequency(x, cnt[i], p->presence, p->frequency);
        }
        row[i] = fy_logit_temperature(x, p->inv_temperature);
    }
    float *sorted = xmalloc((size_t)vocab * 4);
    if (p->top_k > 0 && p->top_k < vocab) {
        memcpy(sorted, row, (size_t)vocab * 4);
        qsort(sorted, (size_t)vocab, 4, cmp_desc);
        float kth = sorted[p->top_k - 1];
        for (int i = 0; i < vocab; i++) {
            row[i] = row[i] < kth ? -INFINITY : row[i];
        }
    }
    if (p->top_p > 0 && p->top_p < 1) {
        memcpy(sorted, row, (size_t)vocab * 4);
        qsort(sorted, (size_t)vocab, 4, cmp_desc);
        double m = sorted[0], total = 0;
        for (int i = 0; i < vocab; i++) {
            total += exp(sorted[i] - m);
        }
        float hi = nucleus_cut(sorted, vocab, m, p->top_p * total * (1 - 1e-4));
        float lo = nucleus_cut(sorted, vocab, m, p->top_p * total * (1 + 1e-4));
        for (int i = 0; i < vocab; i++) {
            row[i] = row[i] >= hi ? row[i] : row[i] < lo ? -INFINITY : NAN;
        }
    }
    free(sorted);
}

static void test_sampling(void)
{
    const int n = 4, vocab = 5000;
    fy_sample_params p[4] = {
        {1.0f, 1.0f, 0, 0, 1.0f, 0},               /* identity */
        {1.0f / 0.7f, 1.3f, 0.5f, 0.1f, 1.0f, 50}, /* penalties + top-k */
        {2.0f, 1.0f, 0, 0, 0.9f, 0},               /* top-p */
        {1.0f, 1.1f, 0, 0.2f, 0.5f, 200},          /* everything */
    };
    float *l = rand_floats((size_t)n * vocab, 5.0f);
    int32_t *cnt = xmalloc((size_t)n * vocab * 4);
    for (int i = 0; i < n * vocab; i++) {
        cnt[i] = rnd() % 10 == 0 ? (int32_t)(rnd() % 4) : 0;
    }
    float *ld = put(dut, l, (size_t)n * vocab * 4);
    int32_t *cd = put(dut, cnt, (size_t)n * vocab * 4);
    fy_sample_params *pd = put(dut, p, sizeof p);
    fy_cuda_sample_filter(dut, ld, cd, pd, n, vocab);
    float *a = xmalloc((size_t)n * vocab * 4);
    get(dut, a, ld, (size_t)n * vocab * 4);
    int bad = 0, kept_bad = 0;
    for (int r = 0; r < n; r++) {
        filter_ref(l + (size_t)r * vocab, cnt + (size_t)r * vocab, &p[r], vocab);
        for (int i = 0; i < vocab; i++) {
            float x = a[(size_t)r * vocab + i], y = l[(size_t)r * vocab + i];
            if (isnan(y)) {
                continue; /* on the top-p boundary: either answer */
            }
            if (isinf(x) != isinf(y)) {
                kept_bad++;
            } else if (!isinf(x) && fabsf(x - y) > 1e-5f * fmaxf(1.0f, fabsf(y))) {
                bad++;
            }
        }
    }
    check("sample filter: penalties, temperature values", bad, 0);
    check("sample filter: top-k / top-p kept sets", kept_bad, 0);
    drop(dut, ld), drop(dut, cd), drop(dut, pd);
    free(l), free(cnt), free(a);
}

/* Tensor parallelism on 2 GPUs: a column-parallel then a row-parallel matmul
 * with the all-reduce equals the unsplit pair on the CPU. */
typedef struct {
    fy_backend *be;
    int rank, n;
    const float *x, *w1, *w2; /* host: x [T x C], w1 [F x C], w2 [C x F] */
    int T, C, F;
    float *out; /* host [T x C] */
    int rc;
} tp_job;

static void *tp_rank(void *arg)
{
    tp_job *j = arg;
    fy_backend *be = j->be;
    char err[256];
    fy_tensor w1 = {j->w1, FY_DT_F32, j->F, j->C}, w2 = {j->w2, FY_DT_F32, j->C, j->F}, s1, s2;
    if ((j->rc = fy_cuda_tp_shard(be, &w1, 1, j->rank, j->n, &s1, err, sizeof err)) < 0 ||
        (j->rc = fy_cuda_tp_shard(be, &w2, 0, j->rank, j->n, &s2, err, sizeof err)) < 0) {
        fprintf(stderr, "rank %d: %s\n", j->rank, err);
        return NULL;
    }
    int Fr = j->F / j->n;
    float *x = put(be, j->x, (size_t)j->T * j->C * 4);
    float *h = put(be, NULL, (size_t)j->T * Fr * 4), *o = put(be, NULL, (size_t)j->T * j->C * 4);
    be->ops->matmul(be, h, x, &s1, NULL, j->T);
    be->ops->matmul(be, o, h, &s2, NULL, j->T);
    fy_cuda_tp_all_reduce(be, o, (size_t)j->T * j->C);
    j->rc = be->ops->download(be, j->out, o, (size_t)j->T * j->C * 4);
    drop(be, x), drop(be, h), drop(be, o), drop(be, (void *)s1.data), drop(be, (void *)s2.data);
    return NULL;
}

static void test_tensor_parallel(void)
{
    fy_cuda_tp *tp = NULL;
    char err[256];
    int rc = fy_cuda_tp_create(2, NULL, &tp, err, sizeof err);
    if (rc < 0) {
        printf("skip tensor parallel: %s\n", err);
        return;
    }
    const int T = 3, C = 256, F = 512;
    float *x = rand_floats((size_t)T * C, 1.0f), *w1 = rand_floats((size_t)F * C, 0.1f),
          *w2 = rand_floats((size_t)C * F, 0.1f);
    /* Reference on the CPU backend: (x . w1^T) . w2^T. */
    pair_tensor t1 = put_tensor(w1, FY_DT_F32, F, C), t2 = put_tensor(w2, FY_DT_F32, C, F);
    float *xr = put(ref, x, (size_t)T * C * 4), *hr = put(ref, NULL, (size_t)T * F * 4);
    float *orf = put(ref, NULL, (size_t)T * C * 4), *want = xmalloc((size_t)T * C * 4);
    ref->ops->matmul(ref, hr, xr, &t1.r, NULL, T);
    ref->ops->matmul(ref, orf, hr, &t2.r, NULL, T);
    get(ref, want, orf, (size_t)T * C * 4);
    tp_job jobs[2];
    pthread_t th[2];
    for (int r = 0; r < 2; r++) {
        jobs[r] = (tp_job){fy_cuda_tp_backend(tp, r),  r, 2, x, w1, w2, T, C, F,
                           xmalloc((size_t)T * C * 4), 0};
        pthread_create(&th[r], NULL, tp_rank, &jobs[r]);
    }
    for (int r = 0; r < 2; r++) {
        pthread_join(th[r], NULL);
    }
    for (int r = 0; r < 2; r++) {
        char name[96];
        snprintf(name, sizeof name, "tensor parallel 2 ranks: rank %d after all-reduce", r);
        check(name, jobs[r].rc < 0 ? INFINITY : rel_err(jobs[r].out, want, (size_t)T * C), 1e-5);
        free(jobs[r].out);
    }
    drop_tensor(&t1), drop_tensor(&t2);
    drop(ref, xr), drop(ref, hr), drop(ref, orf);
    free(x), free(w1), free(w2), free(want);
    fy_cuda_tp_destroy(tp);
}
#endif

int main(int argc, char **argv)
{
    char err[512] = "";
    self_check = argc > 1 && strcmp(argv[1], "--self-check") == 0;
    if (fy_backend_create("cpu", 2, &ref, err, sizeof err) != 0) {
        fprintf(stderr, "FAIL: CPU backend: %s\n", err);
        return 1;
    }
    const char *dev = getenv("FERRY_GPU_DEVICE");
    dev = dev && *dev ? dev : "cuda";
    int rc = fy_backend_create(self_check ? "cpu" : dev, 1, &dut, err, sizeof err);
    if (rc != 0) {
        fy_backend_destroy(ref);
        if (rc == FY_ENOTSUP) {
            printf("SKIPPED: no GPU to test: %s\n", err);
            return 77;
        }
        fprintf(stderr, "FAIL: %s backend: %s\n", dev, err);
        return 1;
    }
    printf("reference: cpu (kv %s); under test: %s (kv %s)\n", fy_dtype_name(kv_of(ref)),
           dut->ops->name, fy_dtype_name(kv_of(dut)));
    test_embed();
    test_embed_blocks();
    test_rmsnorm();
    test_matmul();
    test_qmatmul();
    test_rope();
    test_elementwise();
    test_argmax();
    test_attention();
#ifdef FY_HAVE_CUDA
    if (!self_check) {
        test_sampling();
        test_tensor_parallel();
    }
#endif
    must(dut->ops->sync(dut), dut, "final sync");
    fy_backend_destroy(dut);
    fy_backend_destroy(ref);
    printf("%d of %d checks passed\n", checks - failures, checks);
    return failures ? 1 : 0;
}
