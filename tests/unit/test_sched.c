/* runner/engine/sched: the step planner driven directly (no model): the
 * token and sequence budgets, chunked prefill interleaved with decodes,
 * preemption of the newest sequence and its recompute, round-robin
 * admission across keys, the bounded queue, removal freeing blocks at once,
 * and the fork of parallel samples. A "step" here commits the batch and
 * appends a made-up token to every sequence that reached its last token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runner/engine/sched.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

#define MAXQ 32

typedef struct {
    fy_kv *kv;
    fy_sched *s;
    fy_seq q[MAXQ];
    int32_t tok[MAXQ][256];
} rig;

static void rig_init(rig *r, int nb, int bs, int max_seqs, int budget, int max_waiting)
{
    memset(r, 0, sizeof *r);
    fy_kv_options ko = {.num_blocks = nb, .block_size = bs, .block_bytes = 64, .prefix_caching = 1};
    assert_int_equal(fy_kv_new(&ko, &r->kv), 0);
    fy_sched_options so = {
        .max_seqs = max_seqs, .max_step_tokens = budget, .max_waiting = max_waiting};
    assert_int_equal(fy_sched_new(&so, r->kv, &r->s), 0);
}

static void rig_free(rig *r)
{
    fy_sched_free(r->s);
    fy_kv_stats ks;
    fy_kv_get_stats(r->kv, &ks);
    assert_int_equal(ks.used, 0);
    fy_kv_free(r->kv);
}

/* Sequence I with a prompt of N tokens (distinct per sequence unless SAME). */
static fy_seq *mkseq(rig *r, int i, int n, int same)
{
    fy_seq *q = &r->q[i];
    memset(q, 0, sizeof *q);
    q->tokens = r->tok[i];
    q->cap = 256;
    for (int k = 0; k < n; k++) {
        q->tokens[k] = same ? 1000 + k : i * 1000 + k;
    }
    q->n_tokens = q->n_prompt = n;
    q->n_group = 1;
    return q;
}

static int add(rig *r, int i, int n, const char *key)
{
    return fy_sched_add(r->s, mkseq(r, i, n, 0), key);
}

/* Plans and "runs" one step. */
static fy_sched_batch *step(rig *r)
{
    fy_sched_batch *b;
    fy_sched_step(r->s, &b);
    fy_kv_cow_done(r->kv, &b->cow);
    fy_sched_commit(r->s);
    for (int i = 0; i < b->n; i++) {
        fy_seq *q = b->seqs[i];
        if (q->want_logits) {
            q->tokens[q->n_tokens] = 7 + q->n_tokens;
            q->n_tokens++;
        }
    }
    return b;
}

static int in_batch(const fy_sched_batch *b, const fy_seq *q)
{
    for (int i = 0; i < b->n; i++) {
        if (b->seqs[i] == q) {
            return q->step_tokens;
        }
    }
    return 0;
}

static void test_budget(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 2, 8, 16);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(add(&r, i, 5, NULL), 0);
    }
    fy_sched_batch *b = step(&r);
    assert_int_equal(b->n_tokens, 8);
    assert_int_equal(in_batch(b, &r.q[0]), 5);
    assert_int_equal(in_batch(b, &r.q[1]), 3); /* a chunk: the budget is spent */
    assert_int_equal(r.q[2].state, FY_SEQ_WAITING);
    /* Step 2: q0 decodes, q1 finishes its prompt; max_seqs 2 keeps q2 out. */
    b = step(&r);
    assert_int_equal(b->n, 2);
    assert_int_equal(in_batch(b, &r.q[0]), 1);
    assert_int_equal(in_batch(b, &r.q[1]), 2);
    assert_int_equal(r.q[2].state, FY_SEQ_WAITING);
    for (int k = 0; k < 10; k++) {
        b = step(&r);
        assert_true(b->n <= 2 && b->n_tokens <= 8);
    }
    fy_sched_remove(r.s, &r.q[0]);
    b = step(&r);
    assert_int_equal(in_batch(b, &r.q[2]), 5);
    rig_free(&r);
}

/* A long prompt is cut in chunks while a running sequence decodes every step. */
static void test_chunked_prefill(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 4, 8, 16);
    assert_int_equal(add(&r, 0, 3, NULL), 0);
    step(&r); /* q0 prefilled; decoding from now on */
    assert_int_equal(add(&r, 1, 30, NULL), 0);
    int chunks = 0;
    while (r.q[1].n_computed < 30) {
        int before0 = r.q[0].n_tokens;
        fy_sched_batch *b = step(&r);
        assert_int_equal(in_batch(b, &r.q[0]), 1);
        assert_int_equal(b->seqs[0], &r.q[0]); /* decodes first */
        assert_int_equal(r.q[0].n_tokens, before0 + 1);
        assert_true(in_batch(b, &r.q[1]) >= 1 && in_batch(b, &r.q[1]) <= 7);
        assert_true(b->n_tokens <= 8);
        chunks++;
    }
    assert_int_equal(chunks, 5); /* 30 tokens at 7 a step (1 of 8 is the decode) */
    assert_int_equal(r.q[1].n_tokens, 31);
    rig_free(&r);
}

/* When blocks run out, the newest sequence is preempted (blocks freed) and
 * later recomputed in full: prompt and generated tokens. */
static void test_preempt_newest(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 6, 4, 4, 64, 16);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(add(&r, i, 7, NULL), 0); /* 2 blocks each */
    }
    step(&r);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(r.q[i].state, FY_SEQ_RUNNING);
    }
    /* Each now has 8 tokens, 7 computed; the 9th position needs a third block. */
    fy_sched_batch *b = step(&r); /* decodes fill the blocks (8 computed) */
    assert_int_equal(b->n_preempted, 0);
    b = step(&r);
    assert_int_equal(b->n_preempted, 1);
    assert_int_equal(r.q[2].state, FY_SEQ_PREEMPTED);
    assert_int_equal(r.q[2].table.n_blocks, 0);
    assert_int_equal(r.q[2].n_computed, 0);
    assert_int_equal(in_batch(b, &r.q[0]), 1);
    assert_int_equal(in_batch(b, &r.q[1]), 1);
    fy_sched_stats st;
    fy_sched_get_stats(r.s, &st);
    assert_int_equal(st.preemptions, 1);
    assert_int_equal(st.running, 2);
    int n2 = r.q[2].n_tokens;
    /* When q1 leaves, q2 comes back: its prompt and generated tokens are
     * prefilled again. */
    fy_sched_remove(r.s, &r.q[1]);
    b = step(&r);
    assert_int_equal(r.q[2].state, FY_SEQ_RUNNING);
    assert_int_equal(r.q[2].n_computed, n2);
    assert_int_equal(r.q[2].n_tokens, n2 + 1);
    assert_int_equal(r.q[2].preemptions, 1);
    assert_int_equal(r.q[2].cached_tokens, 0); /* reported at first admission only */
    fy_sched_remove(r.s, &r.q[0]);
    fy_sched_remove(r.s, &r.q[2]);
    rig_free(&r);
}

/* A sequence that can't fit even alone is failed, not preempted forever. */
static void test_fail_alone(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 2, 4, 4, 64, 16);
    assert_int_equal(add(&r, 0, 7, NULL), 0);
    step(&r);
    fy_sched_batch *b = step(&r);
    assert_int_equal(b->n_failed, 0);
    b = step(&r);
    assert_int_equal(b->n_failed, 1);
    assert_ptr_equal(b->failed[0], &r.q[0]);
    assert_int_equal(r.q[0].state, FY_SEQ_DONE);
    rig_free(&r);
}

/* Keys a (4 requests), b (2), c (1) submitted in that order are admitted
 * a b c a b a a. */
static void test_round_robin(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 8, 4, 16);
    const char *keys[7] = {"a", "a", "a", "a", "b", "b", "c"};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(add(&r, i, 4, keys[i]), 0);
    }
    int want[7] = {0, 4, 6, 1, 5, 2, 3};
    for (int k = 0; k < 7; k++) {
        fy_sched_batch *b = step(&r);
        assert_int_equal(b->n, 1);
        assert_ptr_equal(b->seqs[0], &r.q[want[k]]);
        fy_sched_remove(r.s, b->seqs[0]);
    }
    fy_sched_stats st;
    fy_sched_get_stats(r.s, &st);
    assert_int_equal(st.waiting, 0);
    assert_false(fy_sched_has_work(r.s));
    rig_free(&r);
}

static void test_bounded_queue(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 8, 64, 2);
    assert_int_equal(add(&r, 0, 4, "x"), 0);
    assert_int_equal(add(&r, 1, 4, "y"), 0);
    assert_int_equal(add(&r, 2, 4, "z"), FY_ELIMIT);
    assert_int_equal(r.q[2].state, FY_SEQ_NEW);
    /* Aborting a waiting one makes room. */
    fy_sched_remove(r.s, &r.q[0]);
    assert_int_equal(add(&r, 2, 4, "z"), 0);
    mkseq(&r, 3, 0, 0);
    r.q[3].n_tokens = 0;
    assert_int_equal(fy_sched_add(r.s, &r.q[3], NULL), FY_EINVAL);
    fy_sched_free(r.s);
    fy_kv_free(r.kv);
}

static void test_remove_frees_blocks(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 8, 64, 16);
    assert_int_equal(add(&r, 0, 10, NULL), 0);
    step(&r);
    fy_kv_stats ks;
    fy_kv_get_stats(r.kv, &ks);
    assert_int_equal(ks.used, 3);
    fy_sched_remove(r.s, &r.q[0]);
    fy_kv_get_stats(r.kv, &ks);
    assert_int_equal(ks.used, 0);
    assert_int_equal(r.q[0].state, FY_SEQ_DONE);
    fy_sched_remove(r.s, &r.q[0]); /* twice is harmless */
    assert_int_equal(step(&r)->n, 0);
    rig_free(&r);
}

/* n = 3 samples: the group reserves three slots at admission; the children
 * share the prompt blocks and copy the partial last block on write. */
static void test_fork(void **state)
{
    (void)state;
    rig r;
    rig_init(&r, 64, 4, 3, 64, 16);
    fy_seq *p = mkseq(&r, 0, 6, 0);
    p->n_group = 3;
    assert_int_equal(fy_sched_add(r.s, p, NULL), 0);
    assert_int_equal(add(&r, 5, 2, NULL), 0); /* no room next to the group */
    fy_sched_batch *b;
    fy_sched_step(r.s, &b);
    assert_int_equal(b->n, 1);
    fy_kv_cow_done(r.kv, &b->cow);
    fy_sched_commit(r.s);
    for (int c = 1; c <= 2; c++) {
        fy_seq *q = mkseq(&r, c, 6, 0);
        memcpy(q->tokens, p->tokens, 6 * sizeof *q->tokens);
        assert_int_equal(fy_sched_fork(r.s, p, q), 0);
        q->tokens[q->n_tokens++] = 100 + c;
    }
    p->tokens[p->n_tokens++] = 100;
    fy_kv_stats ks;
    fy_kv_get_stats(r.kv, &ks);
    assert_int_equal(ks.used, 2);
    fy_sched_step(r.s, &b);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->cow.n, 2); /* the last to write keeps the original */
    assert_int_equal(r.q[5].state, FY_SEQ_WAITING);
    fy_kv_cow_done(r.kv, &b->cow);
    fy_sched_commit(r.s);
    fy_kv_get_stats(r.kv, &ks);
    assert_int_equal(ks.used, 4);
    for (int c = 0; c <= 2; c++) {
        fy_sched_remove(r.s, &r.q[c]);
    }
    fy_sched_remove(r.s, &r.q[5]);
    rig_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_chunked_prefill),
        cmocka_unit_test(test_preempt_newest),
        cmocka_unit_test(test_fail_alone),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_bounded_queue),
        cmocka_unit_test(test_remove_frees_blocks),
        cmocka_unit_test(test_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
