/* runner/engine/sampler and stop: each transform on small hand-computed
 * logits, the seeded draw (reproducible, independent of anything but seed,
 * sample index and position), logprobs, parameter validation, and stop
 * strings matched across pieces, never emitted, cut on UTF-8 boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runner/engine/sampler.h"
#include "runner/engine/stop.h"

#include "common/err.h"

#include <math.h>
#include <string.h>

static fy_sampler *sampler(int vocab)
{
    fy_sampler *sm = NULL;
    assert_int_equal(fy_sampler_new(vocab, &sm), 0);
    return sm;
}

static int32_t pick(fy_sampler *sm, const fy_sampling *s, const float *in, int vocab, int pos,
                    fy_gen_token *g)
{
    float l[16];
    memcpy(l, in, (size_t)vocab * sizeof *l);
    int32_t tok[64] = {0};
    return fy_sampler_pick(sm, s, 42, 0, l, tok, pos, pos, g);
}

static fy_sampling greedy(void)
{
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.temperature = 0;
    return s;
}

static void test_greedy_ties(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(5);
    fy_sampling s = greedy();
    float l[5] = {1, 3, 2, 3, -1};
    fy_gen_token g;
    assert_int_equal(pick(sm, &s, l, 5, 1, &g), 1);
    assert_int_equal(g.id, 1);
    assert_int_equal(g.n_top, 0);
    fy_sampler_free(sm);
}

/* p = (1/4, 3/4): with the draw u, id 0 is picked exactly when u < 1/4 (the
 * unsorted path walks ids in order). Temperature 2 gives (1/(1+sqrt 3), ...). */
static void test_temperature(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(2);
    fy_sampling s;
    fy_sampling_defaults(&s);
    float l[2] = {0, logf(3)};
    fy_gen_token g;
    int zeros = 0;
    for (int pos = 0; pos < 2000; pos++) {
        double u = fy_sampler_uniform(42, 0, pos);
        int32_t id = pick(sm, &s, l, 2, pos, &g);
        if (fabs(u - 0.25) > 1e-4) {
            assert_int_equal(id, u < 0.25 ? 0 : 1);
        }
        zeros += id == 0;
    }
    assert_true(zeros > 400 && zeros < 600); /* the draws are roughly uniform */
    s.temperature = 2;
    double p0 = 1.0 / (1.0 + sqrt(3.0));
    for (int pos = 0; pos < 500; pos++) {
        double u = fy_sampler_uniform(42, 0, pos);
        int32_t id = pick(sm, &s, l, 2, pos, &g);
        if (fabs(u - p0) > 1e-4) {
            assert_int_equal(id, u < p0 ? 0 : 1);
        }
    }
    fy_sampler_free(sm);
}

/* top-k 2 of (1,2,3,4): sorted 3, 2 with weights 1 and e^-1. */
static void test_top_k(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(4);
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.top_k = 2;
    float l[4] = {1, 2, 3, 4};
    double p3 = 1.0 / (1.0 + exp(-1.0));
    fy_gen_token g;
    for (int pos = 0; pos < 500; pos++) {
        double u = fy_sampler_uniform(42, 0, pos);
        int32_t id = pick(sm, &s, l, 4, pos, &g);
        assert_true(id == 2 || id == 3);
        if (fabs(u - p3) > 1e-4) {
            assert_int_equal(id, u < p3 ? 3 : 2);
        }
    }
    s.top_k = 1;
    assert_int_equal(pick(sm, &s, l, 4, 3, &g), 3);
    fy_sampler_free(sm);
}

/* Probabilities (0.5, 0.3, 0.2) on ids (2, 0, 1). */
static void test_top_p_min_p(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(3);
    fy_sampling s;
    fy_sampling_defaults(&s);
    float l[3] = {logf(0.3f), logf(0.2f), logf(0.5f)};
    fy_gen_token g;
    int seen[3];
    s.top_p = 0.45f; /* only the top token */
    for (int pos = 0; pos < 200; pos++) {
        assert_int_equal(pick(sm, &s, l, 3, pos, &g), 2);
    }
    s.top_p = 0.79f; /* the top two: 0.5/0.8 and 0.3/0.8 */
    memset(seen, 0, sizeof seen);
    for (int pos = 0; pos < 400; pos++) {
        double u = fy_sampler_uniform(42, 0, pos);
        int32_t id = pick(sm, &s, l, 3, pos, &g);
        seen[id]++;
        if (fabs(u - 0.625) > 1e-4) {
            assert_int_equal(id, u < 0.625 ? 2 : 0);
        }
    }
    assert_int_equal(seen[1], 0);
    assert_true(seen[0] > 0 && seen[2] > 0);
    s.top_p = 1;
    s.min_p = 0.5f; /* relative 1, 0.6, 0.4: keeps ids 2 and 0 */
    memset(seen, 0, sizeof seen);
    for (int pos = 0; pos < 400; pos++) {
        seen[pick(sm, &s, l, 3, pos, &g)]++;
    }
    assert_int_equal(seen[1], 0);
    assert_true(seen[0] > 0 && seen[2] > 0);
    s.min_p = 1; /* only the maximum */
    for (int pos = 0; pos < 100; pos++) {
        assert_int_equal(pick(sm, &s, l, 3, pos, &g), 2);
    }
    fy_sampler_free(sm);
}

static void test_penalties(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(5);
    fy_sampling s = greedy();
    /* Presence 0.5, frequency 0.25 over the generated tokens only: prompt
     * [1], generated [2, 2, 3]. */
    s.presence_penalty = 0.5f;
    s.frequency_penalty = 0.25f;
    float l[5] = {0, 0, 0, 0, -2};
    int32_t tok[4] = {1, 2, 2, 3};
    fy_gen_token g;
    assert_int_equal(fy_sampler_pick(sm, &s, 1, 0, l, tok, 4, 1, &g), 0);
    assert_float_equal(l[0], 0, 1e-6);
    assert_float_equal(l[1], 0, 1e-6);
    assert_float_equal(l[2], -1.0, 1e-6);
    assert_float_equal(l[3], -0.75, 1e-6);
    assert_float_equal(l[4], -2, 1e-6);
    /* Repetition 2 over prompt and generated: positive / 2, negative * 2,
     * each token once however often it appears. */
    fy_sampling_defaults(&s);
    s.temperature = 0;
    s.repetition_penalty = 2;
    float r[5] = {2, -2, 1, 4, 3};
    int32_t tok2[5] = {0, 1, 3, 3, 0};
    assert_int_equal(fy_sampler_pick(sm, &s, 1, 0, r, tok2, 5, 2, &g), 4);
    assert_float_equal(r[0], 1, 1e-6);
    assert_float_equal(r[1], -4, 1e-6);
    assert_float_equal(r[2], 1, 1e-6);
    assert_float_equal(r[3], 2, 1e-6);
    assert_float_equal(r[4], 3, 1e-6);
    /* The scratch is clean afterwards: no penalty without history. */
    float z[5] = {0, 0, 0, 0, 1};
    assert_int_equal(fy_sampler_pick(sm, &s, 1, 0, z, tok2, 0, 0, &g), 4);
    assert_float_equal(z[4], 1, 1e-6);
    fy_sampler_free(sm);
}

static void test_seed(void **state)
{
    (void)state;
    enum { V = 16, N = 64 };
    fy_sampler *sm = sampler(V);
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.temperature = 1.5f;
    s.top_p = 0.95f;
    float l[V];
    for (int i = 0; i < V; i++) {
        l[i] = (float)(i % 5) * 0.3f;
    }
    int32_t a[N], b[N], c[N], d[N];
    int32_t hist[N + 1] = {0};
    for (int pos = 0; pos < N; pos++) {
        float x[V];
        fy_gen_token g;
        memcpy(x, l, sizeof x);
        a[pos] = fy_sampler_pick(sm, &s, 7, 0, x, hist, pos, 0, &g);
        memcpy(x, l, sizeof x);
        c[pos] = fy_sampler_pick(sm, &s, 8, 0, x, hist, pos, 0, &g);
        memcpy(x, l, sizeof x);
        d[pos] = fy_sampler_pick(sm, &s, 7, 1, x, hist, pos, 0, &g);
    }
    /* Again, in reverse order (another "batch composition"). */
    for (int pos = N - 1; pos >= 0; pos--) {
        float x[V];
        fy_gen_token g;
        memcpy(x, l, sizeof x);
        b[pos] = fy_sampler_pick(sm, &s, 7, 0, x, hist, pos, 0, &g);
    }
    assert_memory_equal(a, b, sizeof a);
    assert_memory_not_equal(a, c, sizeof a);
    assert_memory_not_equal(a, d, sizeof a); /* another sample index, another stream */
    fy_sampler_free(sm);
}

static void test_logprobs(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(4);
    fy_sampling s = greedy();
    s.logprobs = 2;
    s.presence_penalty = 2; /* logprobs are of the raw logits, before penalties */
    float l[4] = {logf(0.1f), logf(0.6f), logf(0.2f), logf(0.1f)};
    int32_t tok[2] = {1, 1};
    fy_gen_token g;
    assert_int_equal(fy_sampler_pick(sm, &s, 1, 0, l, tok, 2, 1, &g), 2);
    assert_float_equal(g.logprob, logf(0.2f), 1e-5);
    assert_int_equal(g.n_top, 2);
    assert_int_equal(g.top[0].id, 1);
    assert_float_equal(g.top[0].logprob, logf(0.6f), 1e-5);
    assert_int_equal(g.top[1].id, 2);
    assert_float_equal(g.top[1].logprob, logf(0.2f), 1e-5);
    s.logprobs = 0;
    float m[4] = {0, 0, 0, 0};
    assert_int_equal(fy_sampler_pick(sm, &s, 1, 0, m, tok, 0, 0, &g), 0);
    assert_int_equal(g.n_top, 0);
    assert_float_equal(g.logprob, logf(0.25f), 1e-5);
    fy_sampler_free(sm);
}

/* logit_bias is added to the logits before anything else: -100 bans a
 * token, 100 forces it, greedy and sampled; logprobs stay of the raw
 * logits; a request with a bias is not plain argmax. */
static void test_logit_bias(void **state)
{
    (void)state;
    fy_sampler *sm = sampler(4);
    fy_sampling s = greedy();
    const float l[4] = {1, 3, 2, 0};
    fy_gen_token g;
    assert_true(fy_sampling_is_plain_argmax(&s));
    fy_logit_bias ban = {1, -100}, force = {3, 100}, nudge[2] = {{2, 0.5f}, {1, -0.6f}};
    s.logit_bias = &ban;
    s.n_logit_bias = 1;
    assert_false(fy_sampling_is_plain_argmax(&s));
    assert_int_equal(pick(sm, &s, l, 4, 1, &g), 2);
    s.logit_bias = &force;
    s.logprobs = 1;
    assert_int_equal(pick(sm, &s, l, 4, 1, &g), 3);
    /* Raw logprobs: id 3's own (the least likely), the top is still id 1. */
    double lse = log(exp(1.0) + exp(3.0) + exp(2.0) + exp(0.0));
    assert_float_equal(g.logprob, 0.0 - lse, 1e-5);
    assert_int_equal(g.top[0].id, 1);
    s.logprobs = -1;
    s.logit_bias = nudge;
    s.n_logit_bias = 2;
    assert_int_equal(pick(sm, &s, l, 4, 1, &g), 2); /* 2.5 > 2.4 */
    /* Sampled: the banned argmax never comes, the forced token always does. */
    s.temperature = 1;
    s.logit_bias = &ban;
    s.n_logit_bias = 1;
    for (int pos = 0; pos < 200; pos++) {
        assert_int_not_equal(pick(sm, &s, l, 4, pos, &g), 1);
    }
    s.logit_bias = &force;
    for (int pos = 0; pos < 200; pos++) {
        assert_int_equal(pick(sm, &s, l, 4, pos, &g), 3);
    }
    fy_sampler_free(sm);
}

static void test_validate(void **state)
{
    (void)state;
    fy_sampling s;
    char err[128];
    fy_sampling_defaults(&s);
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), 0);
    assert_int_equal(s.max_tokens, 16);
    assert_int_equal(s.logprobs, -1);
    s.top_p = 0;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "top_p"));
    fy_sampling_defaults(&s);
    s.temperature = NAN;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "temperature"));
    fy_sampling_defaults(&s);
    s.logprobs = 21;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    fy_sampling_defaults(&s);
    s.repetition_penalty = 0;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    fy_sampling_defaults(&s);
    s.max_tokens = 0; /* the prompt only (prompt_logprobs) */
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), 0);
    s.max_tokens = -1;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    fy_sampling_defaults(&s);
    assert_int_equal(s.prompt_logprobs, -1);
    s.prompt_logprobs = 21;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "prompt_logprobs"));
    fy_sampling_defaults(&s);
    fy_logit_bias b[2] = {{0, 100}, {1, 100.5f}};
    s.logit_bias = b;
    s.n_logit_bias = 1;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), 0);
    s.n_logit_bias = 2;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "logit_bias"));
    b[1].bias = NAN;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
    s.n_logit_bias = FY_MAX_LOGIT_BIAS + 1;
    assert_int_equal(fy_sampling_validate(&s, err, sizeof err), FY_EINVAL);
}

/* --- Stop strings ----------------------------------------------------------------------- */

typedef struct {
    const char *stops[3];
    int n_stop;
    const char *pieces[6];
    const char *want; /* everything emitted */
    int stopped;      /* 1: a stop string matched */
} stop_case;

static const stop_case stop_cases[] = {
    {{"o W"}, 1, {"Hel", "lo Wo", "rld"}, "Hell", 1},
    {{"World"}, 1, {"Hello ", "Wor", "ld!"}, "Hello ", 1},
    {{"xyz"}, 1, {"ab x", "y1", "z"}, "ab xy1z", 0},
    {{"\n\n", "END"}, 2, {"one\n", "two E", "N", "D more"}, "one\ntwo ", 1},
    {{"\n\n", "END"}, 2, {"one\n", "\ntwo"}, "one", 1},
    {{"本語"}, 1, {"日本", "人", "日本", "語です"}, "日本人日", 1},
    {{"aab"}, 1, {"a", "a", "a", "b"}, "a", 1},
    {{"abc", "b"}, 2, {"ab", "c"}, "a", 1},
    {{"stop"}, 1, {"sto", "p"}, "", 1},
    {{"x"}, 0, {"no ", "stops"}, "no stops", 0},
};

static void test_stop_strings(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof stop_cases / sizeof stop_cases[0]; c++) {
        const stop_case *k = &stop_cases[c];
        fy_stop st;
        assert_int_equal(fy_stop_init(&st, k->stops, k->n_stop), 0);
        fy_buf out;
        fy_buf_init(&out, 1 << 16);
        int stopped = 0;
        for (int i = 0; i < 6 && k->pieces[i] && !stopped; i++) {
            size_t before = out.len;
            int rc = fy_stop_push(&st, k->pieces[i], strlen(k->pieces[i]), &out);
            assert_true(rc == 0 || rc == 1);
            stopped = rc;
            /* Every emitted chunk is valid UTF-8 and never holds a stop string. */
            assert_true(out.len == before || fy_utf8_valid(out.data + before, out.len - before));
            for (int s = 0; s < k->n_stop; s++) {
                assert_null(
                    memmem(out.data ? out.data : "", out.len, k->stops[s], strlen(k->stops[s])));
            }
        }
        if (!stopped) {
            assert_int_equal(fy_stop_flush(&st, &out), 0);
        }
        assert_int_equal(stopped, k->stopped);
        assert_int_equal(out.len, strlen(k->want));
        assert_memory_equal(out.data ? out.data : "", k->want, out.len);
        fy_buf_free(&out);
        fy_stop_free(&st);
    }
}

static void test_stop_init_errors(void **state)
{
    (void)state;
    fy_stop st;
    const char *empty[1] = {""};
    assert_int_equal(fy_stop_init(&st, empty, 1), FY_EINVAL);
    const char *bad[1] = {"\xc3("};
    assert_int_equal(fy_stop_init(&st, bad, 1), FY_EINVAL);
    char big[FY_STOP_MAX_BYTES + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    const char *lng[1] = {big};
    assert_int_equal(fy_stop_init(&st, lng, 1), FY_EINVAL);
    const char *many[FY_STOP_MAX + 1];
    for (int i = 0; i <= FY_STOP_MAX; i++) {
        many[i] = "s";
    }
    assert_int_equal(fy_stop_init(&st, many, FY_STOP_MAX + 1), FY_EINVAL);
    assert_int_equal(fy_stop_init(&st, many, FY_STOP_MAX), 0);
    fy_stop_free(&st);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    assert_true(fy_utf8_valid("", 0));
    assert_true(fy_utf8_valid("a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80", 10));
    assert_false(fy_utf8_valid("\xc3", 1));             /* truncated */
    assert_false(fy_utf8_valid("\xc0\xaf", 2));         /* overlong */
    assert_false(fy_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(fy_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(fy_utf8_valid("\x80", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_ties),
        cmocka_unit_test(test_temperature),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_top_p_min_p),
        cmocka_unit_test(test_penalties),
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_logprobs),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_logit_bias),
        cmocka_unit_test(test_stop_strings),
        cmocka_unit_test(test_stop_init_errors),
        cmocka_unit_test(test_utf8_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
