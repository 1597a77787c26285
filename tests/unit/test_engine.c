/* runner/engine/engine: the whole engine on the real stories260K model
 * (CPU backend), driven from a libuv loop the way the API layer drives it.
 *   - greedy "Once upon a time" gives expected_greedy.json's 196 ids and text;
 *   - batch invariance: the same greedy request gives the same ids alone, in
 *     a batch of 32 mixed requests, after preemptions (a tiny KV pool), and
 *     on a prefix-cache hit;
 *   - n = 4 seeded samples are reproducible (whatever runs beside them) and
 *     differ from each other;
 *   - after requests finish or are aborted (some mid-way, some from inside
 *     their own callback) the pool is back to all blocks free and no
 *     callback runs for an aborted id;
 *   - the bounded queue gives FY_ELIMIT; stop strings, stop ids and
 *     max_tokens end requests with the right finish reason; event text is
 *     always valid UTF-8.
 * Skips with a message when $FERRY_TESTDATA/models/stories260K is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/api/jsonschema.h"
#include "runner/engine/engine.h"
#include "runner/engine/grammar.h"
#include "support/grammar_support.h"
#include "runner/engine/stop.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAXN    4
#define MAXTOK  512
#define MAXTEXT 8192
#define MAXREQ  64

typedef struct ctx ctx;

typedef struct {
    ctx *c;
    uint64_t id;
    int n;
    int32_t ids[MAXN][MAXTOK];
    size_t offs[MAXN][MAXTOK]; /* the tokens' text offsets */
    fy_gen_token tok0[MAXN];   /* the first generated token, with its logprobs */
    float lp[MAXN][MAXTOK];    /* the generated tokens' logprobs */
    fy_gen_token plp[MAXTOK];  /* prompt_logprobs, in order */
    int n_plp;
    int plp_late; /* prompt logprobs after a generated token, or not on sample 0 */
    int n_ids[MAXN];
    char text[MAXN][MAXTEXT];
    size_t text_len[MAXN];
    fy_finish finish[MAXN];
    int completion[MAXN];
    int cached;
    int prompt_tokens;
    int events;
    int finals;
    int aborted;     /* fy_engine_abort was called */
    int late;        /* events after the abort (must stay 0) */
    int abort_after; /* abort from inside the callback after this many events (0: never) */
} coll;

struct ctx {
    uv_loop_t loop;
    fy_engine *e;
    int pending; /* requests not finished nor aborted */
    int bad_utf8;
};

static char g_dir[1024];
static json_t *g_expected;
static int32_t g_prompt[16];
static int g_n_prompt;
static int32_t g_ids[256];
static int g_n_ids;
static const char *g_text;

static int setup(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    if (!td) {
        return 0;
    }
    snprintf(g_dir, sizeof g_dir, "%s/models/stories260K", td);
    char path[1100];
    snprintf(path, sizeof path, "%s/expected_greedy.json", g_dir);
    json_error_t je;
    g_expected = json_load_file(path, 0, &je);
    if (!g_expected) {
        g_dir[0] = 0;
        return 0;
    }
    json_t *p = json_object_get(g_expected, "prompt_ids_with_bos");
    json_t *c = json_object_get(g_expected, "completion_ids");
    assert_true(json_array_size(p) <= 16 && json_array_size(c) <= 256);
    for (size_t i = 0; i < json_array_size(p); i++) {
        g_prompt[g_n_prompt++] = (int32_t)json_integer_value(json_array_get(p, i));
    }
    for (size_t i = 0; i < json_array_size(c); i++) {
        g_ids[g_n_ids++] = (int32_t)json_integer_value(json_array_get(c, i));
    }
    g_text = json_string_value(json_object_get(g_expected, "completion_text"));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(g_expected);
    return 0;
}

static void need_model(void)
{
    struct stat st;
    if (!g_dir[0] || stat(g_dir, &st) != 0 || !g_text) {
        print_message("skipped: $FERRY_TESTDATA/models/stories260K (with expected_greedy.json) "
                      "is not available\n");
        skip();
    }
}

static void on_event(const fy_engine_event *ev, void *arg)
{
    coll *k = arg;
    if (k->aborted) {
        k->late++;
        return;
    }
    assert_int_equal(ev->request_id, k->id);
    assert_true(ev->index >= 0 && ev->index < k->n);
    int i = ev->index;
    k->events++;
    for (int t = 0; t < ev->n_prompt_logprobs && k->n_plp < MAXTOK; t++) {
        k->plp[k->n_plp++] = ev->prompt_logprobs[t];
        for (int j = 0; j < k->n; j++) {
            k->plp_late += k->n_ids[j] > 0;
        }
        k->plp_late += i != 0;
    }
    for (int t = 0; t < ev->n_tokens && k->n_ids[i] < MAXTOK; t++) {
        if (k->n_ids[i] == 0) {
            k->tok0[i] = ev->tokens[t];
        }
        k->offs[i][k->n_ids[i]] = ev->tokens[t].text_offset;
        k->lp[i][k->n_ids[i]] = ev->tokens[t].logprob;
        k->ids[i][k->n_ids[i]++] = ev->tokens[t].id;
    }
    if (ev->text_len && !fy_utf8_valid(ev->text, ev->text_len)) {
        k->c->bad_utf8++;
    }
    if (k->text_len[i] + ev->text_len < MAXTEXT) {
        memcpy(k->text[i] + k->text_len[i], ev->text, ev->text_len);
        k->text_len[i] += ev->text_len;
    }
    k->completion[i] = ev->completion_tokens;
    k->cached = ev->cached_tokens;
    k->prompt_tokens = ev->prompt_tokens;
    if (ev->finish != FY_FINISH_NONE) {
        k->finish[i] = ev->finish;
        if (++k->finals == k->n) {
            k->c->pending--;
        }
        return;
    }
    if (k->abort_after && k->events >= k->abort_after) {
        k->aborted = 1;
        k->c->pending--;
        fy_engine_abort(k->c->e, k->id);
    }
}

/* Opens an engine with a KV cache of KV_DTYPE (NULL: auto). Returns what
 * fy_engine_create returned, its message in ERR. */
static int ctx_open_kv(ctx *c, size_t kv_bytes, int max_seqs, int max_waiting, int step_tokens,
                       const char *kv_dtype, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    fy_engine_options o = {.model_dir = g_dir,
                           .threads = 1,
                           .kv_bytes = kv_bytes,
                           .max_seqs = max_seqs,
                           .max_step_tokens = step_tokens,
                           .max_waiting = max_waiting,
                           .kv_dtype = kv_dtype,
                           .loop = &c->loop};
    return fy_engine_create(&o, &c->e, err, errlen);
}

static void ctx_open_steps(ctx *c, size_t kv_bytes, int max_seqs, int max_waiting, int step_tokens)
{
    char err[512] = "";
    if (ctx_open_kv(c, kv_bytes, max_seqs, max_waiting, step_tokens, NULL, err, sizeof err)) {
        fail_msg("fy_engine_create: %s", err);
    }
}

static void ctx_open(ctx *c, size_t kv_bytes, int max_seqs, int max_waiting)
{
    ctx_open_steps(c, kv_bytes, max_seqs, max_waiting, 256);
}

static void ctx_close(ctx *c)
{
    fy_engine_destroy(c->e);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
}

/* Runs the loop until every submitted request has finished. A request that
 * never finishes fails the test with the engine's state after 200 s (far
 * beyond any run on a loaded machine, well inside ctest's timeout), so a
 * stuck engine says where it stuck instead of timing out silently. */
static void run(ctx *c)
{
    uv_timer_t tick; /* wakes the loop to look at the clock */
    uv_timer_init(&c->loop, &tick);
    uv_timer_start(&tick, NULL, 1000, 1000);
    uint64_t deadline = uv_hrtime() + 200 * (uint64_t)1000000000;
    while (c->pending > 0 && uv_hrtime() < deadline) {
        uv_run(&c->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    if (c->pending > 0) {
        fy_engine_stats s;
        fy_engine_get_stats(c->e, &s);
        fail_msg("%d requests still pending after 200 s: running %d waiting %d steps %llu "
                 "blocks used %d cached %d free %d",
                 c->pending, (int)s.running, (int)s.waiting, (unsigned long long)s.steps,
                 (int)s.blocks_used, (int)s.blocks_cached, (int)s.blocks_free);
    }
}

static fy_sampling greedy(int max_tokens)
{
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = max_tokens;
    return s;
}

/* Sampling at temperature 1 from SEED. */
static fy_sampling seeded(int max_tokens, uint64_t seed)
{
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.max_tokens = max_tokens;
    s.has_seed = 1;
    s.seed = seed;
    return s;
}

static void submit(ctx *c, coll *k, const int32_t *prompt, int n_prompt, int n,
                   const fy_sampling *s, const char *key)
{
    memset(k, 0, sizeof *k);
    k->c = c;
    k->n = n;
    fy_engine_request r = {.prompt = prompt,
                           .n_prompt = n_prompt,
                           .n = n,
                           .sampling = *s,
                           .key_id = key,
                           .cb = on_event,
                           .arg = k};
    char err[256] = "";
    int rc = fy_engine_submit(c->e, &r, &k->id, err, sizeof err);
    if (rc != 0) {
        fail_msg("submit: %s (%s)", fy_strerror(rc), err);
    }
    c->pending++;
}

static fy_engine_stats stats(ctx *c)
{
    fy_engine_stats s;
    fy_engine_get_stats(c->e, &s);
    assert_int_equal(s.blocks_used + s.blocks_cached + s.blocks_free, s.blocks_total);
    return s;
}

/* The bytes of one KV block of stories260K (from a throwaway engine). */
static size_t stats_block_bytes(void)
{
    ctx c;
    ctx_open(&c, 0, 1, 1);
    size_t n = stats(&c).block_bytes;
    ctx_close(&c);
    return n;
}

/* Runs the loop until the engine has nothing running or waiting (aborts
 * are applied at the engine's next iteration). */
static fy_engine_stats settle(ctx *c)
{
    uv_timer_t t;
    uv_timer_init(&c->loop, &t);
    fy_engine_stats s = stats(c);
    /* Bounded by time, not by turns: a turn on a busy machine can take far
     * longer than its 1 ms timer. */
    uint64_t deadline = uv_hrtime() + 100 * (uint64_t)1000000000;
    while ((s.running || s.waiting || s.blocks_used) && uv_hrtime() < deadline) {
        uv_timer_start(&t, NULL, 1, 0);
        uv_run(&c->loop, UV_RUN_ONCE);
        s = stats(c);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&c->loop, UV_RUN_NOWAIT);
    return s;
}

/* A made-up prompt of N tokens from SEED: BOS then ids in 3..511. */
static void mkprompt(int32_t *p, int n, uint32_t seed)
{
    p[0] = 1;
    for (int i = 1; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = 3 + (int32_t)((seed >> 8) % 509);
    }
}

/* Decodes the greedy reference's prompt into K and checks its ids. */
static void run_greedy_reference(ctx *c, coll *k)
{
    fy_sampling s = greedy(g_n_ids);
    submit(c, k, g_prompt, g_n_prompt, 1, &s, NULL);
    run(c);
    assert_int_equal(k->n_ids[0], g_n_ids);
    assert_memory_equal(k->ids[0], g_ids, (size_t)g_n_ids * sizeof *g_ids);
}

static void test_greedy_expected(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 8, 16);
    assert_string_equal(fy_engine_model_name(c.e), "stories260K");
    assert_true(fy_engine_max_context(c.e) >= 512);
    static coll k;
    run_greedy_reference(&c, &k);
    assert_int_equal(k.text_len[0], strlen(g_text));
    assert_memory_equal(k.text[0], g_text, k.text_len[0]);
    assert_int_equal(k.finish[0], FY_FINISH_LENGTH);
    assert_int_equal(k.completion[0], g_n_ids);
    assert_int_equal(k.prompt_tokens, g_n_prompt);
    assert_int_equal(c.bad_utf8, 0);
    fy_engine_stats st = settle(&c);
    assert_int_equal(st.blocks_used, 0);
    assert_int_equal(st.generated_tokens, (uint64_t)g_n_ids);
    ctx_close(&c);
}

/* --kv-cache-dtype: auto is F32 on the CPU; F16 and BF16 blocks take half
 * the bytes, so the same kv_bytes holds twice the blocks, and with F16 the
 * greedy reference still comes out id for id. An unknown type is refused. */
static void test_kv_dtype(void **state)
{
    (void)state;
    need_model();
    static const struct {
        const char *name, *want;
        int per; /* blocks per f32 block's bytes, x2 */
    } cases[] = {{NULL, "F32", 2}, {"f32", "F32", 2}, {"f16", "F16", 4}, {"BF16", "BF16", 4}};
    size_t bb = stats_block_bytes(), kv = bb * 40;
    char err[512] = "";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ctx c;
        if (ctx_open_kv(&c, kv, 8, 16, 256, cases[i].name, err, sizeof err)) {
            fail_msg("fy_engine_create(%s): %s", cases[i].name, err);
        }
        fy_engine_stats st = stats(&c);
        assert_string_equal(st.kv_dtype, cases[i].want);
        assert_int_equal(st.blocks_total, 20 * cases[i].per);
        assert_int_equal(st.block_bytes, bb * 2 / (size_t)cases[i].per);
        if (strcmp(cases[i].want, "F16") == 0) {
            static coll k;
            run_greedy_reference(&c, &k);
            settle(&c);
        }
        ctx_close(&c);
    }
    ctx c;
    assert_int_equal(ctx_open_kv(&c, kv, 8, 16, 256, "q8_0", err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "--kv-cache-dtype 'q8_0' is unknown (auto, f32, f16 or bf16)"));
    fy_engine_destroy(c.e);
    assert_int_equal(uv_loop_close(&c.loop), 0);
}

/* 32 mixed requests: request 0 is the greedy reference. */
static void test_batch_of_32(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 32, 64);
    static coll k[32];
    static int32_t prompts[32][64];
    fy_sampling s = greedy(g_n_ids);
    submit(&c, &k[0], g_prompt, g_n_prompt, 1, &s, "ref");
    for (int i = 1; i < 32; i++) {
        int n = 1 + (i * 7) % 60;
        mkprompt(prompts[i], n, (uint32_t)i);
        fy_sampling o;
        fy_sampling_defaults(&o);
        o.max_tokens = 20 + (i * 13) % 150;
        o.has_seed = 1;
        o.seed = (uint64_t)i;
        switch (i % 4) {
        case 0:
            o.temperature = 0;
            break;
        case 1:
            o.temperature = 0.8f;
            o.top_k = 40;
            break;
        case 2:
            o.top_p = 0.9f;
            o.presence_penalty = 0.5f;
            break;
        default:
            o.min_p = 0.05f;
            o.repetition_penalty = 1.2f;
            o.logprobs = 3;
            break;
        }
        submit(&c, &k[i], prompts[i], n, 1, &o, i % 2 ? "a" : "b");
    }
    run(&c);
    assert_int_equal(k[0].n_ids[0], g_n_ids);
    assert_memory_equal(k[0].ids[0], g_ids, (size_t)g_n_ids * sizeof *g_ids);
    for (int i = 1; i < 32; i++) {
        assert_true(k[i].finish[0] == FY_FINISH_LENGTH || k[i].finish[0] == FY_FINISH_STOP);
        assert_int_equal(k[i].completion[0], k[i].n_ids[0]);
    }
    assert_int_equal(c.bad_utf8, 0);
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);
}

/* Eight greedy requests alone, then all together in a pool too small for
 * them: preemptions happen and every output is unchanged. */
static void test_preemption_invariance(void **state)
{
    (void)state;
    need_model();
    enum { N = 8, LEN = 150 };
    static int32_t prompts[N][64];
    static coll solo[N], together[N];
    int lens[N];
    ctx c;
    ctx_open(&c, 0, 8, 16);
    size_t block_bytes = stats(&c).block_bytes;
    for (int i = 0; i < N; i++) {
        lens[i] = i == N - 1 ? g_n_prompt : 5 + i * 6;
        if (i == N - 1) {
            memcpy(prompts[i], g_prompt, (size_t)g_n_prompt * sizeof *g_prompt);
        } else {
            mkprompt(prompts[i], lens[i], 100u + (uint32_t)i);
        }
        fy_sampling s = greedy(LEN);
        s.ignore_eos = 1;
        submit(&c, &solo[i], prompts[i], lens[i], 1, &s, NULL);
        run(&c);
    }
    ctx_close(&c);

    /* Each needs up to 13 blocks of 16; 40 blocks hold three of them. */
    ctx_open(&c, block_bytes * 40, 8, 16);
    for (int i = 0; i < N; i++) {
        fy_sampling s = greedy(LEN);
        s.ignore_eos = 1;
        submit(&c, &together[i], prompts[i], lens[i], 1, &s, NULL);
    }
    run(&c);
    fy_engine_stats st = settle(&c);
    assert_true(st.preemptions > 0);
    assert_int_equal(st.blocks_used, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(together[i].n_ids[0], LEN);
        assert_int_equal(solo[i].n_ids[0], LEN);
        assert_memory_equal(together[i].ids[0], solo[i].ids[0], LEN * sizeof(int32_t));
        assert_int_equal(together[i].text_len[0], solo[i].text_len[0]);
        assert_memory_equal(together[i].text[0], solo[i].text[0], solo[i].text_len[0]);
    }
    assert_memory_equal(together[N - 1].ids[0], g_ids, LEN * sizeof(int32_t));
    ctx_close(&c);
}

/* The same 40-token prompt twice: the second finds 32 tokens in the prefix
 * cache and decodes the same ids. */
static void test_prefix_cache_hit(void **state)
{
    (void)state;
    need_model();
    int32_t prompt[40];
    memcpy(prompt, g_prompt, (size_t)g_n_prompt * sizeof *g_prompt);
    memcpy(prompt + g_n_prompt, g_ids, (size_t)(40 - g_n_prompt) * sizeof *g_ids);
    ctx c;
    ctx_open(&c, 0, 8, 16);
    static coll a, b;
    fy_sampling s = greedy(100);
    submit(&c, &a, prompt, 40, 1, &s, NULL);
    run(&c);
    assert_int_equal(a.cached, 0);
    fy_engine_stats st1 = settle(&c);
    assert_int_equal(st1.prefix_hits, 0);
    assert_true(st1.blocks_cached > 0);
    submit(&c, &b, prompt, 40, 1, &s, NULL);
    run(&c);
    fy_engine_stats st2 = settle(&c);
    assert_int_equal(b.cached, 32);
    assert_int_equal(st2.prefix_hits, 2);
    assert_true(st2.prefix_hit_rate > 0.49);
    assert_int_equal(b.n_ids[0], a.n_ids[0]);
    assert_memory_equal(b.ids[0], a.ids[0], (size_t)a.n_ids[0] * sizeof(int32_t));
    /* The greedy continuation of the expected text is the expected text. */
    assert_memory_equal(a.ids[0], g_ids + 40 - g_n_prompt, 100 * sizeof(int32_t));
    assert_int_equal(st2.blocks_used, 0);
    ctx_close(&c);
}

static void run_n4(coll *k, int with_others)
{
    ctx c;
    ctx_open(&c, 0, 16, 16);
    static coll other[4];
    static int32_t op[4][32];
    fy_sampling s = seeded(60, 1234);
    s.top_p = 0.95f;
    if (with_others) {
        for (int i = 0; i < 4; i++) {
            mkprompt(op[i], 10 + i, 7u + (uint32_t)i);
            fy_sampling o = s;
            o.seed = 99 + (uint64_t)i;
            submit(&c, &other[i], op[i], 10 + i, 1, &o, NULL);
        }
    }
    submit(&c, k, g_prompt, g_n_prompt, 4, &s, NULL);
    run(&c);
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);
}

static void test_parallel_samples(void **state)
{
    (void)state;
    need_model();
    static coll a, b;
    run_n4(&a, 0);
    run_n4(&b, 1);
    int differ = 0;
    for (int i = 0; i < 4; i++) {
        assert_true(a.n_ids[i] > 0);
        assert_int_equal(a.n_ids[i], b.n_ids[i]);
        assert_memory_equal(a.ids[i], b.ids[i], (size_t)a.n_ids[i] * sizeof(int32_t));
        assert_int_equal(a.text_len[i], b.text_len[i]);
        assert_memory_equal(a.text[i], b.text[i], a.text_len[i]);
        assert_int_equal(a.finish[i], b.finish[i]);
        for (int j = 0; j < i; j++) {
            differ += a.n_ids[i] != a.n_ids[j] ||
                      memcmp(a.ids[i], a.ids[j], (size_t)a.n_ids[i] * sizeof(int32_t)) != 0;
        }
    }
    assert_true(differ >= 5); /* of the 6 pairs, at most one pair equal by chance */
}

/* Ten requests (two of them n = 2): one aborted at once, three aborted from
 * their callback mid-way, the rest finish. No callback after an abort; the
 * pool ends with no block used. */
static void test_abort_and_pool(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 16, 32);
    static coll k[10];
    static int32_t p[10][40];
    for (int i = 0; i < 10; i++) {
        mkprompt(p[i], 20 + i, 500u + (uint32_t)i);
        fy_sampling s = seeded(200, (uint64_t)i);
        s.ignore_eos = 1;
        submit(&c, &k[i], p[i], 20 + i, i % 5 == 1 ? 2 : 1, &s, NULL);
        if (i == 3 || i == 5 || i == 6) {
            k[i].abort_after = 2 + i;
        }
    }
    k[9].aborted = 1;
    c.pending--;
    fy_engine_abort(c.e, k[9].id);
    fy_engine_abort(c.e, k[9].id); /* twice is harmless */
    fy_engine_abort(c.e, 123456);  /* unknown ids too */
    run(&c);
    fy_engine_stats st = settle(&c);
    assert_int_equal(st.blocks_used, 0);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.waiting, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(k[i].late, 0);
        if (!k[i].aborted) {
            for (int j = 0; j < k[i].n; j++) {
                assert_int_equal(k[i].finish[j], FY_FINISH_LENGTH);
                assert_int_equal(k[i].n_ids[j], 200);
            }
        }
    }
    assert_true(k[3].aborted && k[5].aborted && k[6].aborted);
    assert_int_equal(k[9].events, 0);
    ctx_close(&c);
}

static void test_bounded_queue(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 1, 2);
    static coll k[50];
    fy_sampling s = greedy(400);
    s.ignore_eos = 1;
    int accepted = 0, limited = 0;
    for (int i = 0; i < 50; i++) {
        memset(&k[i], 0, sizeof k[i]);
        k[i].c = &c;
        k[i].n = 1;
        fy_engine_request r = {.prompt = g_prompt,
                               .n_prompt = g_n_prompt,
                               .n = 1,
                               .sampling = s,
                               .cb = on_event,
                               .arg = &k[i]};
        char err[256] = "";
        int rc = fy_engine_submit(c.e, &r, &k[i].id, err, sizeof err);
        if (rc == 0) {
            accepted++;
            c.pending++;
        } else {
            assert_int_equal(rc, FY_ELIMIT);
            assert_non_null(strstr(err, "waiting queue is full"));
            limited++;
        }
    }
    assert_true(limited > 0);
    assert_true(accepted >= 2);
    /* Bad requests are refused with the field named. */
    fy_engine_request bad = {.prompt = g_prompt, .n_prompt = g_n_prompt, .n = 1, .cb = on_event};
    fy_sampling_defaults(&bad.sampling);
    bad.sampling.top_p = 2;
    char err[256] = "";
    uint64_t id;
    assert_int_equal(fy_engine_submit(c.e, &bad, &id, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "top_p"));
    fy_sampling_defaults(&bad.sampling);
    int32_t oob = 100000;
    bad.prompt = &oob;
    bad.n_prompt = 1;
    assert_int_equal(fy_engine_submit(c.e, &bad, &id, err, sizeof err), FY_EINVAL);
    static int32_t longp[600];
    mkprompt(longp, 600, 3);
    bad.prompt = longp;
    bad.n_prompt = 600;
    assert_int_equal(fy_engine_submit(c.e, &bad, &id, err, sizeof err), FY_ETOOBIG);
    run(&c);
    ctx_close(&c);
}

static void test_stops_and_length(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 8, 16);
    static coll a, b, d, f, g;
    /* A stop string inside one token's text and one spanning tokens. */
    const char *s1[] = {"Lily"};
    fy_sampling s = greedy(196);
    s.stop = s1;
    s.n_stop = 1;
    submit(&c, &a, g_prompt, g_n_prompt, 1, &s, NULL);
    const char *s2[] = {"zzz", "little girl"};
    s.stop = s2;
    s.n_stop = 2;
    submit(&c, &b, g_prompt, g_n_prompt, 1, &s, NULL);
    /* A stop token id: the 4th generated token. */
    fy_sampling t = greedy(196);
    int32_t sid = g_ids[3];
    t.stop_ids = &sid;
    t.n_stop_ids = 1;
    submit(&c, &d, g_prompt, g_n_prompt, 1, &t, NULL);
    fy_sampling m = greedy(5);
    submit(&c, &f, g_prompt, g_n_prompt, 1, &m, NULL);
    /* A stop string that never matches: all the text, finish length. */
    const char *s3[] = {"qqqq"};
    fy_sampling u = greedy(60);
    u.stop = s3;
    u.n_stop = 1;
    submit(&c, &g, g_prompt, g_n_prompt, 1, &u, NULL);
    run(&c);

    const char *at = strstr(g_text, "Lily");
    assert_non_null(at);
    assert_int_equal(a.finish[0], FY_FINISH_STOP);
    assert_int_equal(a.text_len[0], (size_t)(at - g_text));
    assert_memory_equal(a.text[0], g_text, a.text_len[0]);

    at = strstr(g_text, "little girl");
    assert_int_equal(b.finish[0], FY_FINISH_STOP);
    assert_int_equal(b.text_len[0], (size_t)(at - g_text));
    assert_memory_equal(b.text[0], g_text, b.text_len[0]);

    int first = 0;
    while (g_ids[first] != sid) {
        first++;
    }
    assert_int_equal(d.finish[0], FY_FINISH_STOP);
    assert_int_equal(d.n_ids[0], first + 1); /* the stop token is reported ... */
    assert_int_equal(d.completion[0], first + 1);
    fy_engine_stats st0 = stats(&c);
    (void)st0;

    assert_int_equal(f.finish[0], FY_FINISH_LENGTH);
    assert_int_equal(f.n_ids[0], 5);
    assert_int_equal(f.completion[0], 5);
    assert_memory_equal(f.ids[0], g_ids, 5 * sizeof(int32_t));
    /* ... but not its text: D's text is F's-style prefix of the expected text. */
    assert_true(d.text_len[0] < strlen(g_text));
    assert_memory_equal(d.text[0], g_text, d.text_len[0]);

    assert_int_equal(g.finish[0], FY_FINISH_LENGTH);
    assert_int_equal(g.n_ids[0], 60);
    assert_true(g.text_len[0] > 100);
    assert_memory_equal(g.text[0], g_text, g.text_len[0]);
    assert_int_equal(c.bad_utf8, 0);
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);
}

/* The completion is the text the model wrote after the prompt: for prompts
 * that end in a word, a space, the middle of a word or a multi-byte
 * character, prompt + the concatenated event texts == decode(prompt ids +
 * generated ids), greedy and sampled (n = 2); each token's text offset is
 * where its text starts in that completion; a stop string matches that text
 * (leading space and all). */
static void test_completion_text(void **state)
{
    (void)state;
    need_model();
    static const char *const prompts[] = {
        "Once upon a",  "Once upon a ", "Once upon a ti",
        "Lily and Tom", "She said, \"", "caf\xc3\xa9",
        "\xe6\x97\xa5", "The end.\n",   "",
    };
    enum { NP = sizeof prompts / sizeof prompts[0] };
    ctx c;
    ctx_open(&c, 0, 16, 64);
    const fy_tokenizer *tok = fy_engine_tokenizer(c.e);
    static coll k[NP][2];
    static int32_t *pids[NP];
    static size_t np[NP];
    fy_encode_options eo = {.add_special = 1};
    for (int i = 0; i < NP; i++) {
        assert_int_equal(
            fy_tokenizer_encode(tok, prompts[i], strlen(prompts[i]), &eo, &pids[i], &np[i]), 0);
        fy_sampling g = greedy(24);
        submit(&c, &k[i][0], pids[i], (int)np[i], 1, &g, NULL);
        fy_sampling r = seeded(24, 7 + (uint64_t)i);
        submit(&c, &k[i][1], pids[i], (int)np[i], 2, &r, NULL);
    }
    /* The case: a stop string that starts with a space. */
    static coll st;
    const char *stops[] = {" there"};
    fy_sampling sg = greedy(24);
    sg.stop = stops;
    sg.n_stop = 1;
    submit(&c, &st, pids[0], (int)np[0], 1, &sg, NULL);
    run(&c);
    for (int i = 0; i < NP; i++) {
        for (int v = 0; v < 2; v++) {
            for (int j = 0; j < k[i][v].n; j++) {
                coll *q = &k[i][v];
                int32_t all[64 + MAXTOK];
                memcpy(all, pids[i], np[i] * sizeof *all);
                memcpy(all + np[i], q->ids[j], (size_t)q->n_ids[j] * sizeof *all);
                char *full;
                size_t flen, pl = strlen(prompts[i]);
                assert_int_equal(
                    fy_tokenizer_decode(tok, all, np[i] + (size_t)q->n_ids[j], 1, &full, &flen), 0);
                if (flen != pl + q->text_len[j] || memcmp(full, prompts[i], pl) != 0 ||
                    memcmp(full + pl, q->text[j], q->text_len[j]) != 0) {
                    fail_msg("\"%s\" (%s, sample %d): decode(all) \"%s\", completion \"%.*s\"",
                             prompts[i], v ? "sampled" : "greedy", j, full, (int)q->text_len[j],
                             q->text[j]);
                }
                free(full);
                /* Offsets: the text of tokens before token t, decoded after the prompt. */
                for (int t = 0; t < q->n_ids[j]; t++) {
                    char *pre;
                    size_t prl;
                    assert_int_equal(
                        fy_tokenizer_decode(tok, all, np[i] + (size_t)t, 1, &pre, &prl), 0);
                    if (fy_utf8_valid(pre, prl)) {
                        assert_int_equal(q->offs[j][t], prl - pl);
                    }
                    free(pre);
                }
            }
        }
    }
    /* "Once upon a" greedily goes on " time, there ...": the completion
     * begins with the space of "▁time". */
    assert_true(k[0][0].text_len[0] > 12);
    assert_memory_equal(k[0][0].text[0], " time, there", 12);
    assert_int_equal(st.finish[0], FY_FINISH_STOP);
    assert_int_equal(st.text_len[0], 6);
    assert_memory_equal(st.text[0], " time,", 6);
    for (int i = 0; i < NP; i++) {
        free(pids[i]);
    }
    assert_int_equal(c.bad_utf8, 0);
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);
}

/* logit_bias: -100 on the greedy first token makes the runner-up come
 * first; 100 on a token makes greedy decoding repeat it; logprobs are of
 * the raw distribution either way; ids outside the vocabulary are refused. */
static void test_logit_bias(void **state)
{
    (void)state;
    need_model();
    ctx c;
    ctx_open(&c, 0, 8, 16);
    static coll plain, banned, forced;
    fy_sampling s = greedy(5);
    s.logprobs = 3;
    submit(&c, &plain, g_prompt, g_n_prompt, 1, &s, NULL);
    fy_logit_bias ban = {g_ids[0], -100}, force = {300, 100};
    s.logit_bias = &ban;
    s.n_logit_bias = 1;
    submit(&c, &banned, g_prompt, g_n_prompt, 1, &s, NULL);
    s.logit_bias = &force;
    submit(&c, &forced, g_prompt, g_n_prompt, 1, &s, NULL);
    run(&c);
    assert_memory_equal(plain.ids[0], g_ids, 5 * sizeof *g_ids);
    assert_int_equal(plain.tok0[0].top[0].id, g_ids[0]);
    assert_int_equal(banned.ids[0][0], plain.tok0[0].top[1].id);
    assert_int_equal(banned.tok0[0].top[0].id, g_ids[0]); /* raw: still the likeliest */
    assert_float_equal(banned.tok0[0].logprob, plain.tok0[0].top[1].logprob, 1e-4);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(forced.ids[0][i], 300);
    }
    assert_true(forced.tok0[0].logprob < plain.tok0[0].top[2].logprob);
    fy_logit_bias oob = {512, 1};
    s.logit_bias = &oob;
    fy_engine_request bad = {
        .prompt = g_prompt, .n_prompt = g_n_prompt, .n = 1, .sampling = s, .cb = on_event};
    char err[256] = "";
    uint64_t id;
    assert_int_equal(fy_engine_submit(c.e, &bad, &id, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "logit_bias"));
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);
}

/* Scores SEQ[0..N) (max_tokens 0, prompt_logprobs 2) in C and checks the
 * shape: N - 1 rows in order, for tokens 1.., nothing generated. */
static void score(ctx *c, coll *k, const int32_t *seq, int n)
{
    fy_sampling s = greedy(0);
    s.prompt_logprobs = 2;
    submit(c, k, seq, n, 1, &s, NULL);
}

static void check_scored(const coll *k, const int32_t *seq, int n)
{
    assert_int_equal(k->n_plp, n - 1);
    assert_int_equal(k->plp_late, 0);
    for (int t = 0; t < n - 1; t++) {
        assert_int_equal(k->plp[t].id, seq[t + 1]);
        assert_int_equal(k->plp[t].n_top, 2);
        assert_true(k->plp[t].logprob <= 0);
        assert_true(k->plp[t].top[0].logprob >= k->plp[t].logprob);
    }
    assert_int_equal(k->finish[0], FY_FINISH_LENGTH);
    assert_int_equal(k->n_ids[0], 0);
    assert_int_equal(k->completion[0], 0);
    assert_int_equal(k->text_len[0], 0);
}

/* Prompt logprobs (how lm-evaluation-harness scores a continuation): the
 * greedy reference's 5 + 60 ids scored with max_tokens 0 give each
 * generated token the logprob the engine gave it while generating (within
 * 1e-4: prefill and decode attention add in different orders), and each is
 * its row's argmax (greedy). The same with 16-token chunks (chunked
 * prefill), after a prefix-cache hit on the same ids (the positions are
 * computed, not skipped), alongside other requests in a pool small enough
 * to preempt, and with n = 2 (the prompt's rows come once, on sample 0,
 * before any generated token). */
static void test_prompt_logprobs(void **state)
{
    (void)state;
    need_model();
    enum { G = 60, N = 5 + G };
    static int32_t seq[N];
    static coll gen, a, b, warm, chunked, pre[4], other[4], two;
    memcpy(seq, g_prompt, (size_t)g_n_prompt * sizeof *seq);
    memcpy(seq + g_n_prompt, g_ids, (size_t)G * sizeof *seq);
    ctx c;
    ctx_open(&c, 0, 8, 16);
    fy_sampling s = greedy(G);
    s.logprobs = 1;
    submit(&c, &gen, g_prompt, g_n_prompt, 1, &s, NULL);
    run(&c);
    assert_memory_equal(gen.ids[0], g_ids, (size_t)G * sizeof *g_ids);
    score(&c, &a, seq, N);
    run(&c);
    check_scored(&a, seq, N);
    for (int t = 0; t < G; t++) {
        const fy_gen_token *p = &a.plp[g_n_prompt - 1 + t];
        assert_float_equal(p->logprob, gen.lp[0][t], 1e-4);
        assert_int_equal(p->top[0].id, g_ids[t]);
    }
    /* A prefix-cache hit on the whole sequence does not skip positions. */
    fy_sampling w = greedy(1);
    submit(&c, &warm, seq, N, 1, &w, NULL);
    run(&c);
    assert_true(warm.cached >= 32);
    score(&c, &b, seq, N);
    run(&c);
    check_scored(&b, seq, N);
    assert_int_equal(b.cached, 0);
    for (int t = 0; t < N - 1; t++) {
        assert_float_equal(b.plp[t].logprob, a.plp[t].logprob, 1e-4);
    }
    /* n = 2 with 5 tokens to generate: the rows once, ahead of the tokens. */
    fy_sampling s2 = seeded(5, 3);
    s2.prompt_logprobs = 0;
    submit(&c, &two, seq, 20, 2, &s2, NULL);
    run(&c);
    assert_int_equal(two.n_plp, 19);
    assert_int_equal(two.plp_late, 0);
    assert_int_equal(two.n_ids[0], 5);
    assert_int_equal(two.n_ids[1], 5);
    for (int t = 0; t < 19; t++) {
        assert_int_equal(two.plp[t].n_top, 0);
        assert_float_equal(two.plp[t].logprob, a.plp[t].logprob, 1e-4);
    }
    assert_int_equal(settle(&c).blocks_used, 0);
    ctx_close(&c);

    /* Chunked prefill: 16 tokens a step. */
    ctx_open_steps(&c, 0, 8, 16, 16);
    score(&c, &chunked, seq, N);
    run(&c);
    check_scored(&chunked, seq, N);
    for (int t = 0; t < N - 1; t++) {
        assert_float_equal(chunked.plp[t].logprob, a.plp[t].logprob, 1e-4);
    }
    ctx_close(&c);

    /* A pool of 12 blocks: four scorings and four long generations. */
    ctx_open(&c, stats_block_bytes() * 12, 8, 16);
    for (int i = 0; i < 4; i++) {
        fy_sampling o = greedy(100);
        o.ignore_eos = 1;
        submit(&c, &other[i], g_prompt, g_n_prompt, 1, &o, NULL);
        score(&c, &pre[i], seq, N);
    }
    run(&c);
    fy_engine_stats st = settle(&c);
    assert_true(st.preemptions > 0);
    assert_int_equal(st.blocks_used, 0);
    for (int i = 0; i < 4; i++) {
        check_scored(&pre[i], seq, N);
        for (int t = 0; t < N - 1; t++) {
            assert_float_equal(pre[i].plp[t].logprob, a.plp[t].logprob, 1e-4);
        }
        assert_int_equal(other[i].n_ids[0], 100);
    }
    ctx_close(&c);
}

/* A grammar from a JSON Schema (the test's own, compiled or failed). */
static fy_grammar *schema_grammar(const char *text)
{
    json_t *schema = json_loads(text, 0, NULL);
    assert_non_null(schema);
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    fy_jsonschema_error je;
    int root = fy_jsonschema_compile(b, schema, 1, &je);
    if (root < 0) {
        fail_msg("schema: %s at %s", je.message, je.pointer);
    }
    fy_grammar *g = NULL;
    char err[256];
    assert_int_equal(fy_gbuild_finish(b, root, &g, err, sizeof err), 0);
    fy_gbuild_free(b);
    json_decref(schema);
    return g;
}

static const char constrained_schema[] =
    "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"maxLength\":6},"
    "\"age\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":120},\"pet\":{\"enum\":[\"cat\","
    "\"dog\",null]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"boolean\"},"
    "\"maxItems\":3}},\"required\":[\"name\",\"age\",\"pet\",\"tags\"]}";

/* Constrained decoding in the engine: n = 4 samples at temperature 1 of a
 * model that knows nothing of JSON, in a batch with unconstrained requests,
 * in a KV pool small enough to preempt. Every sample's text is a whole
 * sentence of the schema's grammar, parses, and ends with STOP; the same
 * request alone gives the same texts (the parse state survives preemption
 * and batching); a max_tokens cut gives LENGTH and a prefix. */
static void test_constrained(void **state)
{
    (void)state;
    need_model();
    enum { N = 4, LEN = 400 };
    fy_grammar *g = schema_grammar(constrained_schema);
    static coll alone, together, other[6], cut, stopped;
    static int32_t op[6][64];
    fy_sampling s = seeded(LEN, 77);
    s.grammar = g;
    ctx c;
    ctx_open(&c, 0, 16, 16);
    size_t block_bytes = stats(&c).block_bytes;
    submit(&c, &alone, g_prompt, g_n_prompt, N, &s, NULL);
    run(&c);
    ctx_close(&c);

    ctx_open(&c, block_bytes * 40, 16, 16);
    for (int i = 0; i < 6; i++) {
        mkprompt(op[i], 20 + i, 300u + (uint32_t)i);
        fy_sampling o = greedy(150);
        o.ignore_eos = 1;
        submit(&c, &other[i], op[i], 20 + i, 1, &o, NULL);
    }
    submit(&c, &together, g_prompt, g_n_prompt, N, &s, NULL);
    fy_sampling sc = s;
    sc.max_tokens = 3;
    submit(&c, &cut, g_prompt, g_n_prompt, 1, &sc, NULL);
    /* A stop string inside the constrained text ends it there. */
    fy_sampling ss = s;
    const char *stops[] = {":"};
    ss.stop = stops;
    ss.n_stop = 1;
    submit(&c, &stopped, g_prompt, g_n_prompt, 1, &ss, NULL);
    run(&c);
    fy_engine_stats st = settle(&c);
    assert_true(st.preemptions > 0);
    ctx_close(&c);
    fy_grammar_unref(g); /* the engine's references are gone with it */

    g = schema_grammar(constrained_schema);
    for (int i = 0; i < N; i++) {
        const char *t = alone.text[i];
        size_t n = alone.text_len[i];
        assert_int_equal(alone.finish[i], FY_FINISH_STOP);
        if (!grammar_accepts(g, t, n)) {
            fail_msg("sample %d: not a sentence: [%.*s]", i, (int)n, t);
        }
        json_error_t je;
        json_t *v = json_loadb(t, n, 0, &je);
        if (!v) {
            fail_msg("sample %d: [%.*s] is not JSON: %s", i, (int)n, t, je.text);
        }
        json_int_t age = json_integer_value(json_object_get(v, "age"));
        assert_true(age >= 0 && age <= 120);
        assert_true(json_array_size(json_object_get(v, "tags")) <= 3);
        json_decref(v);
        assert_int_equal(together.text_len[i], n);
        assert_memory_equal(together.text[i], t, n);
        assert_int_equal(together.finish[i], FY_FINISH_STOP);
    }
    assert_int_equal(stopped.finish[0], FY_FINISH_STOP);
    assert_null(memchr(stopped.text[0], ':', stopped.text_len[0]));
    assert_non_null(memchr(stopped.text[0], '"', stopped.text_len[0])); /* a key began */
    assert_int_equal(cut.finish[0], FY_FINISH_LENGTH);
    assert_int_equal(cut.n_ids[0], 3);
    fy_gstate *gs = NULL;
    assert_int_equal(fy_gstate_new(g, &gs), 0);
    assert_int_equal(fy_gstate_feed(gs, cut.text[0], cut.text_len[0]), 0);
    fy_gstate_free(gs);
    fy_grammar_unref(g);
}

/* A lazy grammar (grammar_trigger): greedy text is the model's own until
 * the marker ("named", in the expected greedy text), then a sentence of the
 * grammar (" <" [a-z]{2,4} ">"), then free again: the text goes on past the
 * sentence to max_tokens, and its start is the expected text's. */
static void test_lazy_grammar(void **state)
{
    (void)state;
    need_model();
    fy_gbuild *b = NULL;
    assert_int_equal(fy_gbuild_new(&b), 0);
    int letter = fy_gb_rule(b), root = fy_gb_rule(b);
    fy_gb_byte_range(b, letter, 'a', 'z');
    fy_gb_lit(b, root, " <", 2);
    fy_gb_repeat(b, root, letter, 2, 4);
    fy_gb_lit(b, root, ">", 1);
    fy_grammar *g = NULL;
    char err[256];
    assert_int_equal(fy_gbuild_finish(b, root, &g, err, sizeof err), 0);
    fy_gbuild_free(b);
    static coll k;
    ctx c;
    ctx_open(&c, 0, 4, 4);
    fy_sampling s = greedy(60);
    s.ignore_eos = 1;
    s.grammar = g;
    s.grammar_trigger = "named";
    submit(&c, &k, g_prompt, g_n_prompt, 1, &s, NULL);
    run(&c);
    ctx_close(&c);
    fy_grammar_unref(g);
    const char *at = strstr(g_text, "named");
    assert_non_null(at);
    size_t pre = (size_t)(at - g_text) + 5;
    char *t = k.text[0];
    t[k.text_len[0]] = 0;
    if (strncmp(t, g_text, pre) != 0) {
        fail_msg("before the marker the text is the model's own: [%s]", t);
    }
    const char *p = t + pre;
    size_t letters = 0;
    assert_true(p[0] == ' ' && p[1] == '<');
    for (p += 2; *p >= 'a' && *p <= 'z'; p++) {
        letters++;
    }
    if (letters < 2 || letters > 4 || *p != '>') {
        fail_msg("after the marker: [%s]", t + pre);
    }
    assert_true(strlen(p + 1) > 0); /* free text after the sentence */
    assert_int_equal(k.finish[0], FY_FINISH_LENGTH);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_expected),       cmocka_unit_test(test_batch_of_32),
        cmocka_unit_test(test_preemption_invariance), cmocka_unit_test(test_prefix_cache_hit),
        cmocka_unit_test(test_parallel_samples),      cmocka_unit_test(test_abort_and_pool),
        cmocka_unit_test(test_bounded_queue),         cmocka_unit_test(test_stops_and_length),
        cmocka_unit_test(test_completion_text),       cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_prompt_logprobs),       cmocka_unit_test(test_kv_dtype),
        cmocka_unit_test(test_constrained),           cmocka_unit_test(test_lazy_grammar),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
