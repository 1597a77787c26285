/* The forward pass on the CPU backend: stories260K's greedy decode matches
 * an independent implementation id for id; chunked prefill, all-at-once
 * prefill and mixed batches give the same logits; copy-on-write copies
 * blocks; bad steps are refused. */
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BS 16

typedef struct {
    fy_model *m;
    fy_backend *be;
    fy_fwd *f;
} rig;

static int rig_open(rig *r, const char *dir, int threads, int max_tokens, int max_seqs)
{
    char err[512] = "";
    memset(r, 0, sizeof *r);
    if (fy_model_load(dir, &r->m, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_backend_create("cpu", threads, &r->be, err, sizeof err), 0);
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(r->m, r->be, BS) * 1024,
                        .max_batch_tokens = max_tokens,
                        .max_seqs = max_seqs};
    if (fy_fwd_create(r->m, r->be, &o, &r->f, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_fwd_num_blocks(r->f), 1024);
    return 0;
}

static void rig_close(rig *r)
{
    fy_fwd_destroy(r->f);
    fy_backend_destroy(r->be);
    fy_model_free(r->m);
}

/* Block table where sequence SEQ owns blocks SEQ*64 .. SEQ*64+63 (in reverse
 * order, so neighbouring positions never sit in neighbouring blocks). */
static void table_for(int seq, int32_t *bt)
{
    for (int i = 0; i < 64; i++) {
        bt[i] = seq * 64 + (63 - i);
    }
}

static void test_stories_greedy(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    fx_greedy g;
    assert_int_equal(fx_greedy_load(dir, &g), 0);
    assert_int_equal(g.n_ids, 196);
    for (int threads = 1; threads <= 2; threads++) {
        rig r;
        rig_open(&r, dir, threads, 64, 4);
        int got, bad = fx_greedy_run(r.f, 512, &g, BS, &got);
        if (bad >= 0) {
            fail_msg("threads %d: token %d is %d, expected %d", threads, bad, got, g.ids[bad]);
        }
        rig_close(&r);
    }
}

static void expect_close(const float *a, const float *b, int n, double rel, const char *what)
{
    double mx = 0, md = 0;
    for (int i = 0; i < n; i++) {
        mx = fmax(mx, fabs(b[i]));
        md = fmax(md, fabs((double)a[i] - b[i]));
    }
    if (md > rel * mx) {
        fail_msg("%s: max |diff| %g > %g x max %g", what, md, rel, mx);
    }
}

/* Logits for every position of PROMPT, prefilled in chunks of CHUNK, into OUT[n x vocab]. */
static void prefill_chunked(rig *r, const int32_t *prompt, int n, int chunk, int seq, float *out)
{
    int32_t bt[64];
    table_for(seq, bt);
    int V = r->m->cfg.vocab_size;
    float *tmp = malloc((size_t)V * sizeof *tmp);
    for (int p = 0; p < n; p += chunk) {
        int k = n - p < chunk ? n - p : chunk;
        /* Per-position logits: run the chunk's tokens one sub-step at a time when
         * chunk is 1, otherwise only the chunk's last logits are compared. */
        fy_fwd_seq s = {prompt + p, k, p, bt, 64, 1};
        assert_int_equal(fy_fwd_step(r->f, &s, 1, tmp), 0);
        memcpy(out + (size_t)(p + k - 1) * V, tmp, (size_t)V * sizeof *tmp);
    }
    free(tmp);
}

static void test_chunked_prefill(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    rig r;
    rig_open(&r, dir, 2, 128, 8);
    enum { N = 100 };
    int V = r.m->cfg.vocab_size;
    int32_t prompt[N];
    uint32_t seed = 99;
    for (int i = 0; i < N; i++) {
        prompt[i] = (int32_t)(fx_rand(&seed) % (uint32_t)V);
    }
    float *one = calloc((size_t)N * V, sizeof(float)), *ch = calloc((size_t)N * V, sizeof(float));
    prefill_chunked(&r, prompt, N, 1, 0, one); /* token by token: every position */
    static const int chunks[] = {3, 16, 17, 100};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        prefill_chunked(&r, prompt, N, chunks[c], 1, ch);
        for (int p = chunks[c] - 1; p < N; p += chunks[c]) {
            char what[64];
            snprintf(what, sizeof what, "chunk %d, position %d", chunks[c], p);
            expect_close(ch + (size_t)p * V, one + (size_t)p * V, V, 1e-5, what);
        }
        expect_close(ch + (size_t)(N - 1) * V, one + (size_t)(N - 1) * V, V, 1e-5, "last");
    }
    free(one);
    free(ch);
    rig_close(&r);
}

/* Several sequences at different stages in one step equal each run alone. */
static void test_mixed_batch(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    rig r;
    rig_open(&r, dir, 2, 256, 8);
    enum { S = 5 };
    int V = r.m->cfg.vocab_size;
    static const int plen[S] = {7, 1, 30, 16, 50};
    int32_t prompts[S][64], bts[S][64];
    uint32_t seed = 5;
    float alone[S][512], batched[S][512];
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < 64; i++) {
            prompts[s][i] = (int32_t)(fx_rand(&seed) % (uint32_t)V);
        }
        table_for(s, bts[s]);
    }
    /* Alone: prefill plen-1 tokens, then the last one as a decode step. */
    for (int s = 0; s < S; s++) {
        float tmp[512];
        if (plen[s] > 1) {
            fy_fwd_seq a = {prompts[s], plen[s] - 1, 0, bts[s], 64, 0};
            assert_int_equal(fy_fwd_step(r.f, &a, 1, tmp), 0);
        }
        fy_fwd_seq d = {prompts[s] + plen[s] - 1, 1, plen[s] - 1, bts[s], 64, 1};
        assert_int_equal(fy_fwd_step(r.f, &d, 1, alone[s]), 0);
    }
    /* Batched (fresh caches in other blocks): seqs 0, 2 prefill whole; 1, 3, 4 were
     * prefilled up to their last token and decode it in the same step. */
    int32_t bt2[S][64];
    for (int s = 0; s < S; s++) {
        table_for(s + S, bt2[s]);
    }
    for (int s = 3; s < S; s++) {
        float tmp[512];
        fy_fwd_seq a = {prompts[s], plen[s] - 1, 0, bt2[s], 64, 0};
        assert_int_equal(fy_fwd_step(r.f, &a, 1, tmp), 0);
    }
    fy_fwd_seq b[S] = {
        {prompts[0], plen[0], 0, bt2[0], 64, 1},
        {prompts[1], 1, 0, bt2[1], 64, 1},
        {prompts[2], plen[2], 0, bt2[2], 64, 1},
        {prompts[3] + plen[3] - 1, 1, plen[3] - 1, bt2[3], 64, 1},
        {prompts[4] + plen[4] - 1, 1, plen[4] - 1, bt2[4], 64, 1},
    };
    assert_int_equal(fy_fwd_step(r.f, b, S, &batched[0][0]), 0);
    for (int s = 0; s < S; s++) {
        char what[32];
        snprintf(what, sizeof what, "sequence %d", s);
        expect_close(batched[s], alone[s], V, 1e-5, what);
    }
    /* want_logits = 0 rows are skipped in the output. */
    b[1].want_logits = 0;
    b[0] = (fy_fwd_seq){prompts[0] + plen[0], 1, plen[0], bt2[0], 64, 1};
    b[2] = (fy_fwd_seq){prompts[2] + plen[2], 1, plen[2], bt2[2], 64, 1};
    b[3] = (fy_fwd_seq){prompts[3] + plen[3], 1, plen[3], bt2[3], 64, 1};
    b[4] = (fy_fwd_seq){prompts[4] + plen[4], 1, plen[4], bt2[4], 64, 1};
    float four[4][512];
    b[1] = (fy_fwd_seq){prompts[1] + 1, 1, 1, bt2[1], 64, 0};
    assert_int_equal(fy_fwd_step(r.f, b, S, &four[0][0]), 0);
    float ref[512];
    fy_fwd_seq solo = {prompts[4] + plen[4], 1, plen[4], bts[4], 64, 1};
    assert_int_equal(fy_fwd_step(r.f, &solo, 1, ref), 0);
    expect_close(four[3], ref, V, 1e-5, "row order with a skipped row");
    rig_close(&r);
}

/* Copy-on-write: a copied block serves a second sequence like the original. */
static void test_copy_blocks(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    rig r;
    rig_open(&r, dir, 2, 64, 4);
    int32_t toks[20], bt_a[2] = {3, 4}, bt_b[2] = {9, 10};
    uint32_t seed = 11;
    for (int i = 0; i < 20; i++) {
        toks[i] = (int32_t)(fx_rand(&seed) % 512);
    }
    float la[512], lb[512];
    fy_fwd_seq a = {toks, 19, 0, bt_a, 2, 0};
    assert_int_equal(fy_fwd_step(r.f, &a, 1, la), 0);
    int32_t src[2] = {3, 4}, dst[2] = {9, 10};
    assert_int_equal(fy_fwd_copy_blocks(r.f, src, dst, 2), 0);
    fy_fwd_seq da = {toks + 19, 1, 19, bt_a, 2, 1}, db = {toks + 19, 1, 19, bt_b, 2, 1};
    assert_int_equal(fy_fwd_step(r.f, &da, 1, la), 0);
    assert_int_equal(fy_fwd_step(r.f, &db, 1, lb), 0);
    assert_memory_equal(la, lb, sizeof la);
    int32_t bad[1] = {1024};
    assert_int_equal(fy_fwd_copy_blocks(r.f, bad, dst, 1), FY_EINVAL);
    rig_close(&r);
}

static void test_bad_steps(void **state)
{
    (void)state;
    char *d = strdup("/tmp/fy_test_fwd_XXXXXX");
    assert_non_null(mkdtemp(d));
    fx_shape s = {.vocab = 32,
                  .hidden = 16,
                  .inter = 24,
                  .layers = 1,
                  .heads = 2,
                  .kv_heads = 1,
                  .dt = FY_DT_BF16};
    assert_int_equal(fx_write_model(d, &s, 3), 0);
    rig r;
    rig_open(&r, d, 1, 8, 2);
    int32_t toks[16] = {0}, bt[4] = {0, 1, 2, 3};
    float l[64];
    fy_fwd_seq q = {toks, 9, 0, bt, 4, 1};
    assert_int_equal(fy_fwd_step(r.f, &q, 1, l), FY_EINVAL); /* > max_batch_tokens */
    q.n_tokens = 4;
    q.start = 61;
    assert_int_equal(fy_fwd_step(r.f, &q, 1, l), FY_EINVAL); /* blocks don't cover */
    q.start = 0;
    bt[0] = 1024;
    assert_int_equal(fy_fwd_step(r.f, &q, 1, l), FY_EINVAL); /* block out of range */
    bt[0] = 0;
    toks[1] = 32;
    assert_int_equal(fy_fwd_step(r.f, &q, 1, l), FY_EINVAL); /* token out of vocab */
    toks[1] = 0;
    fy_fwd_seq three[3] = {q, q, q};
    assert_int_equal(fy_fwd_step(r.f, three, 3, l), FY_EINVAL); /* > max_seqs */
    assert_int_equal(fy_fwd_step(r.f, &q, 1, l), 0);
    rig_close(&r);

    /* Too little KV memory for one block names what is needed. */
    fy_model *m = NULL;
    fy_backend *be = NULL;
    fy_fwd *f = NULL;
    char err[256] = "";
    assert_int_equal(fy_model_load(d, &m, err, sizeof err), 0);
    assert_int_equal(fy_backend_create("cpu", 1, &be, err, sizeof err), 0);
    fy_fwd_options o = {.block_size = 16, .kv_bytes = 100, .max_batch_tokens = 4, .max_seqs = 1};
    assert_int_equal(fy_fwd_create(m, be, &o, &f, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "needs 1024 bytes"));
    fy_backend_destroy(be);
    fy_model_free(m);
    char p[512];
    snprintf(p, sizeof p, "%s/config.json", d);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unlink(p);
    rmdir(d);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_greedy), cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_mixed_batch),    cmocka_unit_test(test_copy_blocks),
        cmocka_unit_test(test_bad_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
