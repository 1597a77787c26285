/* Tensor parallelism in the forward pass, on CPU ranks (kernels/cpu/comm_cpu.c):
 * stories260K's greedy decode with 2 and 4 ranks gives the ids of
 * expected_greedy.json and logits within a stated tolerance of one rank;
 * chunked prefill, mixed batches, copy-on-write and the argmax-only step
 * agree with one rank; Qwen2-style biases and 16-bit weights are sliced
 * right; a rank count that does not divide the heads or the MLP is refused;
 * --gpu-memory-utilization sizing (kv_mem_fraction) and its refusal on the
 * CPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/engine/forward.h"
#include "support/model_fixture.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BS 16

/* Largest |a - b| over the largest |b| that the TP logits may differ from one
 * rank's: only the order of float additions in the o/down projections and
 * the all-reduce differs, which moves logits by a few ulps of the largest
 * partial sums (measured ~1e-7; see the printed figures). */
#define TP_REL_TOL 1e-5

typedef struct {
    fy_model *m;
    fy_backend *be;
    fy_fwd *f;
} rig;

static int rig_try(rig *r, const char *dir, int tp, int max_tokens, int max_seqs, char *err,
                   size_t errlen)
{
    memset(r, 0, sizeof *r);
    if (fy_model_load(dir, &r->m, err, errlen) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_backend_create("cpu", 1, &r->be, err, errlen), 0);
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(r->m, r->be, BS) * 1024,
                        .max_batch_tokens = max_tokens,
                        .max_seqs = max_seqs,
                        .tensor_parallel = tp};
    return fy_fwd_create(r->m, r->be, &o, &r->f, err, errlen);
}

static void rig_open(rig *r, const char *dir, int tp, int max_tokens, int max_seqs)
{
    char err[512] = "";
    if (rig_try(r, dir, tp, max_tokens, max_seqs, err, sizeof err) != 0) {
        fail_msg("tensor_parallel %d: %s", tp, err);
    }
    assert_int_equal(fy_fwd_num_blocks(r->f), 1024);
    assert_int_equal(fy_fwd_tensor_parallel(r->f), tp > 1 ? tp : 1);
}

static void rig_close(rig *r)
{
    fy_fwd_destroy(r->f);
    fy_backend_destroy(r->be);
    fy_model_free(r->m);
}

/* max |a - b| / max |b| over N floats. */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double mx = 0, md = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(b[i]));
        md = fmax(md, fabs((double)a[i] - b[i]));
    }
    return mx > 0 ? md / mx : md;
}

static void expect_close(const float *a, const float *b, size_t n, const char *what)
{
    double d = rel_diff(a, b, n);
    if (!(d <= TP_REL_TOL)) {
        fail_msg("%s: relative difference %g > %g", what, d, TP_REL_TOL);
    }
}

/* Greedy decode with TP ranks next to one rank, step by step. */
static void greedy_tp(const char *dir, int tp)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/expected_greedy.json", dir);
    json_error_t jerr;
    json_t *exp = json_load_file(path, 0, &jerr);
    assert_non_null(exp);
    json_t *pj = json_object_get(exp, "prompt_ids_with_bos"),
           *cj = json_object_get(exp, "completion_ids");
    int np = (int)json_array_size(pj), nc = (int)json_array_size(cj);
    assert_int_equal(nc, 196);
    rig one, par;
    rig_open(&one, dir, 1, 64, 4);
    rig_open(&par, dir, tp, 64, 4);
    int32_t toks[256], bt[256];
    for (int i = 0; i < 256; i++) {
        bt[i] = i;
    }
    for (int i = 0; i < np; i++) {
        toks[i] = (int32_t)json_integer_value(json_array_get(pj, (size_t)i));
    }
    float l1[512], lp[512];
    double worst = 0;
    fy_fwd_seq s = {toks, np, 0, bt, 256, 1};
    assert_int_equal(fy_fwd_step(one.f, &s, 1, l1), 0);
    assert_int_equal(fy_fwd_step(par.f, &s, 1, lp), 0);
    for (int i = 0; i < nc; i++) {
        double d = rel_diff(lp, l1, 512);
        worst = fmax(worst, d);
        if (!(d <= TP_REL_TOL)) {
            fail_msg("tp %d, token %d: logits differ from one rank by %g (> %g)", tp, i, d,
                     TP_REL_TOL);
        }
        int id = fx_argmax(lp, 512);
        int want = (int)json_integer_value(json_array_get(cj, (size_t)i));
        if (id != want) {
            fail_msg("tp %d: token %d is %d, expected %d", tp, i, id, want);
        }
        toks[np + i] = id;
        fy_fwd_seq d1 = {&toks[np + i], 1, np + i, bt, 256, 1};
        assert_int_equal(fy_fwd_step(one.f, &d1, 1, l1), 0);
        assert_int_equal(fy_fwd_step(par.f, &d1, 1, lp), 0);
    }
    printf("tensor_parallel %d: 196 greedy ids match; max relative logit difference to one "
           "rank %.3g (tolerance %g)\n",
           tp, worst, TP_REL_TOL);
    rig_close(&par);
    rig_close(&one);
    json_decref(exp);
}

static void test_stories_greedy_tp2(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    greedy_tp(dir, 2);
}

static void test_stories_greedy_tp4(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    greedy_tp(dir, 4);
}

/* Block table where sequence SEQ owns blocks SEQ*64 .. SEQ*64+63, reversed. */
static void table_for(int seq, int32_t *bt)
{
    for (int i = 0; i < 64; i++) {
        bt[i] = seq * 64 + (63 - i);
    }
}

/* The same schedule of steps on one rank and on TP ranks: chunked prefill of
 * several sequences in one mixed step, decode steps, a copy-on-write fork,
 * and the argmax-only step. */
static void schedule_tp(const char *dir, int tp)
{
    rig one, par;
    rig_open(&one, dir, 1, 128, 8);
    rig_open(&par, dir, tp, 128, 8);
    int V = one.m->cfg.vocab_size;
    enum { S = 4 };
    static const int plen[S] = {1, 9, 33, 50};
    int32_t prompts[S][64], bts[S][64];
    uint32_t seed = 17;
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < 64; i++) {
            prompts[s][i] = (int32_t)(fx_rand(&seed) % (uint32_t)V);
        }
        table_for(s, bts[s]);
    }
    float *a = calloc((size_t)S * V, sizeof *a), *b = calloc((size_t)S * V, sizeof *b);
    /* Step 1: sequences 2 and 3 prefill a first chunk (no logits). */
    fy_fwd_seq c1[2] = {{prompts[2], 20, 0, bts[2], 64, 0}, {prompts[3], 30, 0, bts[3], 64, 0}};
    assert_int_equal(fy_fwd_step(one.f, c1, 2, a), 0);
    assert_int_equal(fy_fwd_step(par.f, c1, 2, b), 0);
    /* Step 2: everyone, mixing whole prefills and the rest of chunked ones. */
    fy_fwd_seq c2[S] = {
        {prompts[0], plen[0], 0, bts[0], 64, 1},
        {prompts[1], plen[1], 0, bts[1], 64, 1},
        {prompts[2] + 20, plen[2] - 20, 20, bts[2], 64, 1},
        {prompts[3] + 30, plen[3] - 30, 30, bts[3], 64, 1},
    };
    assert_int_equal(fy_fwd_step(one.f, c2, S, a), 0);
    assert_int_equal(fy_fwd_step(par.f, c2, S, b), 0);
    expect_close(b, a, (size_t)S * V, "mixed prefill step");
    /* Step 3: sequence 3's blocks are forked into sequence 4's (copy-on-write of
     * its last, partial block; the full ones are shared), then both decode. */
    int32_t fork_bt[64];
    memcpy(fork_bt, bts[3], sizeof fork_bt);
    int last = (plen[3] - 1) / BS;
    fork_bt[last] = 1000;
    int32_t src[1] = {bts[3][last]}, dst[1] = {1000};
    assert_int_equal(fy_fwd_copy_blocks(one.f, src, dst, 1), 0);
    assert_int_equal(fy_fwd_copy_blocks(par.f, src, dst, 1), 0);
    int32_t next[S + 1];
    for (int s = 0; s < S; s++) {
        next[s] = (int32_t)fx_argmax(a + (size_t)s * V, V);
    }
    next[S] = (int32_t)((next[S - 1] + 1) % V);
    fy_fwd_seq d[S + 1];
    for (int s = 0; s < S; s++) {
        d[s] = (fy_fwd_seq){&next[s], 1, plen[s], bts[s], 64, 1};
    }
    d[S] = (fy_fwd_seq){&next[S], 1, plen[3], fork_bt, 64, 1};
    float *a5 = calloc((size_t)(S + 1) * V, sizeof *a5);
    float *b5 = calloc((size_t)(S + 1) * V, sizeof *b5);
    assert_int_equal(fy_fwd_step(one.f, d, S + 1, a5), 0);
    assert_int_equal(fy_fwd_step(par.f, d, S + 1, b5), 0);
    expect_close(b5, a5, (size_t)(S + 1) * V, "decode step after a fork");
    /* Step 4: the argmax-only step gives the argmax of the full logits. */
    int32_t ids_one[S + 1], ids_par[S + 1], nn[S + 1];
    for (int s = 0; s <= S; s++) {
        nn[s] = (int32_t)fx_argmax(a5 + (size_t)s * V, V);
        d[s].tokens = &nn[s];
        d[s].start++;
    }
    d[1].want_logits = 0;
    float *a6 = calloc((size_t)(S + 1) * V, sizeof *a6);
    assert_int_equal(fy_fwd_step(one.f, d, S + 1, a6), 0);
    /* Rewrite the same slots with the same tokens: K/V are identical, so the
     * argmax-only step sees the cache the full-logits step saw. */
    assert_int_equal(fy_fwd_step_argmax(one.f, d, S + 1, ids_one), 0);
    assert_int_equal(fy_fwd_step_argmax(par.f, d, S + 1, ids_par), 0);
    for (int r = 0; r < S; r++) { /* S rows: sequence 1 asked for none */
        int want = fx_argmax(a6 + (size_t)r * V, V);
        assert_int_equal(ids_one[r], want);
        assert_int_equal(ids_par[r], want);
    }
    free(a);
    free(b);
    free(a5);
    free(b5);
    free(a6);
    rig_close(&par);
    rig_close(&one);
}

static void test_stories_schedule_tp(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    schedule_tp(dir, 2);
    schedule_tp(dir, 4);
}

/* A fixture model in a fresh directory. */
static char *fixture(const fx_shape *s, uint32_t seed)
{
    char *d = strdup("/tmp/fy_test_fwd_tp_XXXXXX");
    assert_non_null(mkdtemp(d));
    assert_int_equal(fx_write_model(d, s, seed), 0);
    return d;
}

static void fixture_free(char *d)
{
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    rmdir(d);
    free(d);
}

/* Qwen2 q/k/v biases (column-parallel 1-D slices) and 16-bit weights (row
 * slices of 2-byte elements) on random models, TP 2 against one rank. */
static void test_fixture_tp(void **state)
{
    (void)state;
    static const fx_shape shapes[] = {
        {.vocab = 40,
         .hidden = 32,
         .inter = 48,
         .layers = 2,
         .heads = 4,
         .kv_heads = 2,
         .qwen = 1,
         .dt = FY_DT_F32},
        {.vocab = 40,
         .hidden = 32,
         .inter = 48,
         .layers = 2,
         .heads = 4,
         .kv_heads = 2,
         .qwen = 1,
         .tied = 1,
         .dt = FY_DT_BF16},
        {.vocab = 40,
         .hidden = 32,
         .inter = 24,
         .layers = 3,
         .heads = 4,
         .kv_heads = 4,
         .head_dim = 16,
         .dt = FY_DT_F16},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char *d = fixture(&shapes[i], 7 + (uint32_t)i);
        for (int tp = 2; tp <= 4; tp += 2) {
            if (shapes[i].kv_heads % tp) {
                continue;
            }
            rig one, par;
            rig_open(&one, d, 1, 32, 4);
            rig_open(&par, d, tp, 32, 4);
            int32_t toks[40], bt[4] = {2, 0, 3, 1};
            uint32_t seed = 3;
            for (int k = 0; k < 40; k++) {
                toks[k] = (int32_t)(fx_rand(&seed) % 40u);
            }
            float la[40], lb[40];
            fy_fwd_seq s = {toks, 30, 0, bt, 4, 1};
            assert_int_equal(fy_fwd_step(one.f, &s, 1, la), 0);
            assert_int_equal(fy_fwd_step(par.f, &s, 1, lb), 0);
            char what[64];
            snprintf(what, sizeof what, "shape %zu, tp %d, prefill", i, tp);
            expect_close(lb, la, 40, what);
            for (int k = 30; k < 40; k++) {
                fy_fwd_seq q = {&toks[k], 1, k, bt, 4, 1};
                assert_int_equal(fy_fwd_step(one.f, &q, 1, la), 0);
                assert_int_equal(fy_fwd_step(par.f, &q, 1, lb), 0);
                snprintf(what, sizeof what, "shape %zu, tp %d, decode %d", i, tp, k);
                expect_close(lb, la, 40, what);
            }
            rig_close(&par);
            rig_close(&one);
        }
        fixture_free(d);
    }
}

/* Rank counts that do not split the model are refused with a message. */
static void test_bad_split(void **state)
{
    (void)state;
    fx_shape s = {.vocab = 32,
                  .hidden = 24,
                  .inter = 36,
                  .layers = 1,
                  .heads = 6,
                  .kv_heads = 2,
                  .dt = FY_DT_F32};
    char *d = fixture(&s, 5);
    static const struct {
        int tp;
        const char *why;
    } cases[] = {
        {3, "divide by 3"}, /* kv heads 2 */
        {4, "divide by 4"}, /* heads 6 */
        {5, "divide by 5"}, /* everything */
        {17, "between 1 and 16"}, {-1, "between 1 and 16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rig r;
        char err[512] = "";
        assert_int_equal(rig_try(&r, d, cases[i].tp, 8, 2, err, sizeof err), FY_EINVAL);
        assert_null(r.f);
        if (!strstr(err, cases[i].why)) {
            fail_msg("tp %d: message '%s' lacks '%s'", cases[i].tp, err, cases[i].why);
        }
        rig_close(&r);
    }
    /* 2 divides everything (intermediate 36 too). */
    rig ok;
    rig_open(&ok, d, 2, 8, 2);
    rig_close(&ok);
    fixture_free(d);

    /* stories260K: 8 heads, 4 kv heads, intermediate 172; 8 ranks split the
     * query heads but not the kv heads. */
    const char *dir = fx_stories_dir();
    if (dir) {
        rig r;
        char err[512] = "";
        assert_int_equal(rig_try(&r, dir, 8, 8, 2, err, sizeof err), FY_EINVAL);
        assert_non_null(strstr(err, "key/value heads (4)"));
        rig_close(&r);
    }
}

/* --- --gpu-memory-utilization ---------------------------------------------------- */

static size_t fake_free;

static size_t fake_mem_free(fy_backend *be)
{
    (void)be;
    return fake_free;
}

static void test_kv_fraction(void **state)
{
    (void)state;
    fx_shape s = {.vocab = 32,
                  .hidden = 16,
                  .inter = 24,
                  .layers = 2,
                  .heads = 2,
                  .kv_heads = 2,
                  .dt = FY_DT_F32};
    char *d = fixture(&s, 9);
    fy_model *m = NULL;
    fy_backend *be = NULL;
    fy_fwd *f = NULL;
    char err[512] = "";
    assert_int_equal(fy_model_load(d, &m, err, sizeof err), 0);
    assert_int_equal(fy_backend_create("cpu", 1, &be, err, sizeof err), 0);
    fy_fwd_options o = {
        .block_size = 16, .max_batch_tokens = 8, .max_seqs = 2, .kv_mem_fraction = 0.9};
    /* The CPU has no device memory to take a fraction of. */
    assert_int_equal(fy_fwd_create(m, be, &o, &f, err, sizeof err), FY_EINVAL);
    assert_null(f);
    assert_non_null(strstr(err, "--gpu-memory-utilization needs a GPU backend; use "
                                "--kv-cache-memory"));
    static const double bad[] = {-0.1, 1.5, NAN};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.kv_mem_fraction = bad[i];
        assert_int_equal(fy_fwd_create(m, be, &o, &f, err, sizeof err), FY_EINVAL);
        assert_non_null(strstr(err, "must be in (0, 1]"));
    }

    /* A backend that reports free memory: the cache takes the fraction of it,
     * whatever kv_bytes says. */
    static fy_backend_ops dev_ops;
    dev_ops = *be->ops;
    dev_ops.mem_free = fake_mem_free;
    fy_backend dev = {&dev_ops, be->impl};
    size_t bb = fy_fwd_block_bytes(m, be, 16); /* 2 layers x K,V x 16 slots x 16 x 4 bytes */
    assert_int_equal(bb, 4096);
    fake_free = 1000 * bb + 123;
    o.kv_mem_fraction = 0.25;
    o.kv_bytes = 1; /* ignored */
    assert_int_equal(fy_fwd_create(m, &dev, &o, &f, err, sizeof err), 0);
    assert_int_equal(fy_fwd_num_blocks(f), 250);
    int32_t toks[4] = {1, 2, 3, 4}, bt[1] = {249};
    float l[32];
    fy_fwd_seq q = {toks, 4, 0, bt, 1, 1};
    assert_int_equal(fy_fwd_step(f, &q, 1, l), 0);
    bt[0] = 250;
    assert_int_equal(fy_fwd_step(f, &q, 1, l), FY_EINVAL);
    fy_fwd_destroy(f);
    f = NULL;
    /* Less than one block's worth: refused, naming the sizes. */
    fake_free = bb;
    o.kv_mem_fraction = 0.5;
    assert_int_equal(fy_fwd_create(m, &dev, &o, &f, err, sizeof err), FY_ENOMEM);
    assert_null(f);
    assert_non_null(strstr(err, "too little for one KV block"));
    /* With ranks, every rank's free memory counts: rank 1 is a plain CPU
     * backend made by the group, with none to size its cache from. */
    fake_free = 1 << 30;
    o.tensor_parallel = 2;
    assert_int_equal(fy_fwd_create(m, &dev, &o, &f, err, sizeof err), FY_ENOMEM);
    assert_null(f);
    assert_non_null(strstr(err, "rank 1 (cpu) has 0 bytes free"));
    fy_backend_destroy(be);
    fy_model_free(m);
    fixture_free(d);
}

/* --- The CPU communicator on its own ---------------------------------------------- */

typedef struct {
    fy_comm *c;
    int rank;
    float *buf;
    size_t n;
} comm_arg;

static void *comm_rank(void *p)
{
    comm_arg *a = p;
    for (int round = 0; round < 3; round++) { /* back to back: the second barrier matters */
        for (size_t i = 0; i < a->n; i++) {
            a->buf[i] = (float)(a->rank + 1) * 0.1f + (float)i + (float)round;
        }
        a->c->ops->all_reduce(a->c, a->rank, a->buf, a->n);
    }
    return NULL;
}

static void test_cpu_comm(void **state)
{
    (void)state;
    fy_backend *be = NULL;
    fy_comm *c = NULL;
    char err[256] = "";
    assert_int_equal(fy_backend_create("cpu", 1, &be, err, sizeof err), 0);
    assert_int_equal(fy_cpu_comm_create(be, 17, 1, &c, err, sizeof err), FY_EINVAL);
    assert_int_equal(fy_cpu_comm_create(be, 3, 1, &c, err, sizeof err), 0);
    assert_int_equal(c->size, 3);
    assert_ptr_equal(c->be[0], be);
    enum { N = 3, LEN = 1001 };
    float bufs[N][LEN];
    comm_arg args[N];
    pthread_t th[N];
    for (int r = 0; r < N; r++) {
        args[r] = (comm_arg){c, r, bufs[r], LEN};
        if (r > 0) {
            assert_int_equal(pthread_create(&th[r], NULL, comm_rank, &args[r]), 0);
        }
    }
    comm_rank(&args[0]);
    for (int r = 1; r < N; r++) {
        pthread_join(th[r], NULL);
    }
    for (size_t i = 0; i < LEN; i++) {
        float want = 0.0f; /* the last round's values, summed in rank order */
        for (int r = 0; r < N; r++) {
            want += (float)(r + 1) * 0.1f + (float)i + 2.0f;
        }
        assert_true(bufs[0][i] == want);
        assert_memory_equal(&bufs[1][i], &bufs[0][i], sizeof(float));
        assert_memory_equal(&bufs[2][i], &bufs[0][i], sizeof(float));
    }
    fy_comm_destroy(c);
    /* Rank 0 is adopted, not destroyed: it still works. */
    assert_int_equal(be->ops->sync(be), 0);
    /* Rank 0 must be a CPU backend. */
    static fy_backend_ops other;
    other = *be->ops;
    other.name = "cuda";
    fy_backend fake = {&other, be->impl};
    assert_int_equal(fy_cpu_comm_create(&fake, 2, 1, &c, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "not a CPU backend"));
    fy_backend_destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_greedy_tp2),
        cmocka_unit_test(test_stories_greedy_tp4),
        cmocka_unit_test(test_stories_schedule_tp),
        cmocka_unit_test(test_fixture_tp),
        cmocka_unit_test(test_bad_split),
        cmocka_unit_test(test_kv_fraction),
        cmocka_unit_test(test_cpu_comm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
