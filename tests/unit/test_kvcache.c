/* runner/engine/kvcache: reference counts, fork and copy-on-write, prefix
 * hits, the last-token rule, LRU eviction order, the hash collision and
 * parent-generation guards, waste accounting and the pool returning to
 * all free. The .c is included to reach the hash for the collision test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runner/engine/kvcache.c"

#include "common/err.h"

static fy_kv *mk(int nb, int bs, int prefix)
{
    fy_kv_options o = {.num_blocks = nb,
                       .block_size = bs,
                       .block_bytes = (size_t)bs * 100,
                       .prefix_caching = prefix};
    fy_kv *kv = NULL;
    assert_int_equal(fy_kv_new(&o, &kv), 0);
    return kv;
}

static fy_kv_stats st(const fy_kv *kv)
{
    fy_kv_stats s;
    fy_kv_get_stats(kv, &s);
    assert_int_equal(s.used + s.cached + s.free, s.total);
    return s;
}

/* Reserves and commits TOK[0..N) on T (no copies expected). */
static void fill(fy_kv *kv, fy_kv_table *t, const int32_t *tok, int n)
{
    assert_int_equal(fy_kv_reserve(kv, t, n, NULL), 0);
    fy_kv_commit(kv, t, tok, n);
}

static void test_options(void **state)
{
    (void)state;
    fy_kv *kv = NULL;
    fy_kv_options o = {.num_blocks = 0, .block_size = 16};
    assert_int_equal(fy_kv_new(&o, &kv), FY_EINVAL);
    o.num_blocks = 4;
    o.block_size = 0;
    assert_int_equal(fy_kv_new(&o, &kv), FY_EINVAL);
    assert_null(kv);
}

static void test_refcount_fork_cow(void **state)
{
    (void)state;
    fy_kv *kv = mk(8, 4, 0);
    int32_t tok[16] = {1, 2, 3, 4, 5, 6, 7, 8};
    fy_kv_table a, b;
    fy_kv_table_init(&a);
    fill(kv, &a, tok, 6);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(st(kv).used, 2);
    assert_int_equal(fy_kv_fork(kv, &a, &b), 0);
    assert_int_equal(st(kv).used, 2); /* shared, not copied */
    assert_int_equal(kv->ref[a.blocks[0]], 2);
    assert_int_equal(kv->ref[a.blocks[1]], 2);

    /* A appends into the shared partial block: one copy, A gets a new block. */
    int32_t src[4], dst[4];
    fy_kv_cow cow = {src, dst, 0, 4};
    assert_int_equal(fy_kv_blocks_needed(kv, &a, 7), 1);
    int32_t old = a.blocks[1];
    assert_int_equal(fy_kv_reserve(kv, &a, 7, &cow), 0);
    assert_int_equal(cow.n, 1);
    assert_int_equal(cow.src[0], old);
    assert_int_equal(cow.dst[0], a.blocks[1]);
    assert_int_not_equal(a.blocks[1], b.blocks[1]);
    assert_int_equal(a.blocks[0], b.blocks[0]);
    assert_int_equal(kv->ref[old], 2); /* B's and the pending copy's */
    fy_kv_cow_done(kv, &cow);
    assert_int_equal(cow.n, 0);
    assert_int_equal(kv->ref[old], 1);
    fy_kv_commit(kv, &a, tok, 7);

    /* B is the sole owner now: no copy. */
    assert_int_equal(fy_kv_blocks_needed(kv, &b, 7), 0);
    assert_int_equal(fy_kv_reserve(kv, &b, 7, &cow), 0);
    assert_int_equal(cow.n, 0);
    /* A full block is never copied: writing past it takes a new block. */
    fill(kv, &b, tok, 8);
    fy_kv_table_release(kv, &a);
    assert_int_equal(fy_kv_fork(kv, &b, &a), 0);
    assert_int_equal(fy_kv_blocks_needed(kv, &a, 9), 1);
    assert_int_equal(fy_kv_reserve(kv, &a, 9, &cow), 0);
    assert_int_equal(cow.n, 0);
    fy_kv_table_release(kv, &a);
    fy_kv_table_release(kv, &b);
    fy_kv_stats s = st(kv);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.free, 8);
    fy_kv_free(kv);
}

static void test_reserve_eagain(void **state)
{
    (void)state;
    fy_kv *kv = mk(3, 4, 0);
    int32_t tok[16] = {0};
    fy_kv_table a, b;
    fy_kv_table_init(&a);
    fy_kv_table_init(&b);
    fill(kv, &a, tok, 8);
    assert_int_equal(fy_kv_available(kv), 1);
    assert_int_equal(fy_kv_reserve(kv, &b, 5, NULL), FY_EAGAIN);
    assert_int_equal(b.n_blocks, 0);
    assert_int_equal(fy_kv_reserve(kv, &b, 4, NULL), 0);
    assert_int_equal(fy_kv_available(kv), 0);
    /* A copy is needed but there is no room for it. */
    fy_kv_table c;
    fy_kv_table_release(kv, &b);
    fill(kv, &b, tok, 2);
    assert_int_equal(fy_kv_fork(kv, &b, &c), 0);
    fy_kv_table d;
    fy_kv_table_init(&d);
    assert_int_equal(fy_kv_reserve(kv, &d, 1, NULL), FY_EAGAIN);
    int32_t src[1], dst[1];
    fy_kv_cow cow = {src, dst, 0, 1};
    assert_int_equal(fy_kv_reserve(kv, &c, 3, &cow), FY_EAGAIN);
    fy_kv_table_release(kv, &a);
    assert_int_equal(fy_kv_reserve(kv, &c, 3, NULL), FY_ELIMIT); /* copy needs a COW list */
    assert_int_equal(fy_kv_reserve(kv, &c, 3, &cow), 0);
    fy_kv_cow_done(kv, &cow);
    fy_kv_table_release(kv, &b);
    fy_kv_table_release(kv, &c);
    assert_int_equal(st(kv).free, 3);
    fy_kv_free(kv);
}

static void test_prefix_hit(void **state)
{
    (void)state;
    fy_kv *kv = mk(16, 4, 1);
    int32_t p1[12] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19};
    int32_t p2[12] = {10, 11, 12, 13, 14, 15, 16, 17, 90, 91, 92, 93};
    fy_kv_table a, b, c;
    fy_kv_table_init(&a);
    fy_kv_table_init(&b);
    fy_kv_table_init(&c);
    assert_int_equal(fy_kv_match_prefix(kv, &a, p1, 10), 0);
    fill(kv, &a, p1, 10);
    /* A second sequence with the same first 8 tokens shares both blocks
     * while A still runs. */
    assert_int_equal(fy_kv_match_prefix(kv, &b, p2, 12), 8);
    fy_kv_count_prefix(kv, 12, 8);
    assert_int_equal(b.n_tokens, 8);
    assert_int_equal(b.blocks[0], a.blocks[0]);
    assert_int_equal(b.blocks[1], a.blocks[1]);
    assert_int_equal(kv->ref[a.blocks[0]], 2);
    fill(kv, &b, p2, 12);
    fy_kv_stats s = st(kv);
    assert_int_equal(s.queries, 2);
    assert_int_equal(s.hits, 2);
    assert_int_equal(s.used, 4);

    /* After both leave, the full blocks stay cached (not free) and a third
     * sequence finds them; the block holding its last token is recomputed. */
    int32_t ablk0 = a.blocks[0], ablk1 = a.blocks[1];
    fy_kv_table_release(kv, &a);
    fy_kv_table_release(kv, &b);
    s = st(kv);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.cached, 3); /* A's two and B's third block */
    assert_int_equal(fy_kv_match_prefix(kv, &c, p1, 8), 4);
    assert_int_equal(c.blocks[0], ablk0);
    fy_kv_table_release(kv, &c);
    assert_int_equal(fy_kv_match_prefix(kv, &c, p1, 9), 8);
    assert_int_equal(c.blocks[1], ablk1);
    fy_kv_table_release(kv, &c);
    /* A different first block: nothing, even if later blocks are equal. */
    int32_t p3[12] = {99, 11, 12, 13, 14, 15, 16, 17, 18};
    assert_int_equal(fy_kv_match_prefix(kv, &c, p3, 9), 0);
    fy_kv_table_release(kv, &c);
    /* Prefix caching off: no match ever. */
    fy_kv *off = mk(4, 4, 0);
    fill(off, &a, p1, 10);
    fy_kv_table_release(off, &a);
    assert_int_equal(fy_kv_match_prefix(off, &c, p1, 10), 0);
    assert_int_equal(st(off).free, 4);
    fy_kv_free(off);
    fy_kv_free(kv);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    fy_kv *kv = mk(4, 2, 1);
    int32_t p[3][3] = {{1, 2, 0}, {3, 4, 0}, {5, 6, 0}};
    fy_kv_table t[3], x, y, z;
    fy_kv_table_init(&x);
    fy_kv_table_init(&y);
    fy_kv_table_init(&z);
    for (int i = 0; i < 3; i++) {
        fy_kv_table_init(&t[i]);
        fill(kv, &t[i], p[i], 2);
    }
    for (int i = 0; i < 3; i++) {
        fy_kv_table_release(kv, &t[i]); /* LRU order: 0, 1, 2 */
    }
    assert_int_equal(st(kv).cached, 3);
    /* Touch 0: it becomes the most recent (order 1, 2, 0). */
    assert_int_equal(fy_kv_match_prefix(kv, &x, p[0], 3), 2);
    fy_kv_table_release(kv, &x);
    /* Two new blocks: the free one, then the least recently used (1). */
    int32_t other[4] = {7, 8, 9, 9};
    fy_kv_table_init(&x);
    fill(kv, &x, other, 4);
    assert_int_equal(fy_kv_match_prefix(kv, &y, p[1], 3), 0);
    fy_kv_table_release(kv, &y);
    assert_int_equal(fy_kv_match_prefix(kv, &y, p[2], 3), 2);
    fy_kv_table_release(kv, &y);
    assert_int_equal(fy_kv_match_prefix(kv, &y, p[0], 3), 2);
    fy_kv_table_release(kv, &y);
    /* One more: 2 is now the oldest (0 was touched after it). */
    fill(kv, &z, other, 2);
    assert_int_equal(fy_kv_match_prefix(kv, &y, p[2], 3), 0);
    fy_kv_table_release(kv, &y);
    assert_int_equal(fy_kv_match_prefix(kv, &y, p[0], 3), 2);
    fy_kv_table_release(kv, &y);
    fy_kv_table_release(kv, &x);
    fy_kv_table_release(kv, &z);
    assert_int_equal(st(kv).used, 0);
    fy_kv_free(kv);
}

/* A forced 64-bit hash collision (a cached block relabelled with another
 * chain's hash) must not be taken: its tokens differ. */
static void test_collision_guard(void **state)
{
    (void)state;
    fy_kv *kv = mk(8, 2, 1);
    int32_t a_tok[3] = {1, 2, 0}, b_tok[3] = {3, 4, 0};
    fy_kv_table a, b;
    fy_kv_table_init(&a);
    fy_kv_table_init(&b);
    fill(kv, &a, a_tok, 2);
    int32_t blk = a.blocks[0];
    fy_kv_table_release(kv, &a);
    uint64_t hb = block_hash(0, b_tok, 2);
    hash_remove(kv, blk);
    kv->gen[blk]--; /* keep its identity: only the label changes */
    hash_insert(kv, blk, hb);
    assert_int_equal(fy_kv_match_prefix(kv, &b, b_tok, 3), 0);
    fy_kv_table_release(kv, &b);
    assert_int_equal(fy_kv_match_prefix(kv, &b, a_tok, 3), 0); /* its own hash is gone too */
    fy_kv_table_release(kv, &b);
    fy_kv_free(kv);
}

/* A child block whose parent left the cache and whose id was reused for
 * other content is not reachable through the new block. */
static void test_parent_generation_guard(void **state)
{
    (void)state;
    fy_kv *kv = mk(3, 2, 1);
    int32_t t1[5] = {1, 2, 3, 4, 0};
    fy_kv_table a, b, c, d;
    fy_kv_table_init(&a);
    fy_kv_table_init(&b);
    fy_kv_table_init(&c);
    fy_kv_table_init(&d);
    fill(kv, &a, t1, 4); /* blocks P (1,2) and C (3,4) */
    int32_t parent = a.blocks[0], child = a.blocks[1];
    fy_kv_table_release(kv, &a); /* LRU: C then P (tail first) */
    /* Take 2 blocks: the free one, then C, then ... only P's turn next. */
    int32_t other[4] = {8, 8, 9, 9};
    fy_kv_table_init(&b);
    fill(kv, &b, other, 4);
    assert_true(b.blocks[0] != parent && b.blocks[1] != parent);
    assert_true(b.blocks[0] == child || b.blocks[1] == child);
    fy_kv_table_release(kv, &b);
    /* Still hit P alone. */
    assert_int_equal(fy_kv_match_prefix(kv, &c, t1, 5), 2);
    fy_kv_table_release(kv, &c);
    /* Recompute the chain: P is found, C's successor block registers again. */
    fy_kv_table_init(&c);
    assert_int_equal(fy_kv_match_prefix(kv, &c, t1, 5), 2);
    fill(kv, &c, t1, 4);
    fy_kv_table_release(kv, &c);
    assert_int_equal(fy_kv_match_prefix(kv, &c, t1, 5), 4);
    fy_kv_table_release(kv, &c);
    /* Evict P by hand (as allocation would) and check the child is unreachable
     * even with the exact tokens and the same hash chain. */
    lru_remove(kv, parent);
    hash_remove(kv, parent);
    kv->free_stack[kv->n_free++] = parent;
    assert_int_equal(fy_kv_match_prefix(kv, &c, t1, 5), 0);
    fy_kv_table_release(kv, &c);
    fy_kv_table_init(&c);
    fill(kv, &c, t1, 2); /* P's content again, maybe in another block */
    fy_kv_table_release(kv, &c);
    assert_int_equal(fy_kv_match_prefix(kv, &d, t1, 5), 2);
    fy_kv_table_release(kv, &d);
    fy_kv_free(kv);
}

static void test_waste_and_all_free(void **state)
{
    (void)state;
    fy_kv *kv = mk(10, 4, 1);
    int32_t tok[40];
    for (int i = 0; i < 40; i++) {
        tok[i] = i;
    }
    fy_kv_table a, b;
    fy_kv_table_init(&a);
    fill(kv, &a, tok, 5); /* 2 blocks, 3 slots empty */
    fy_kv_stats s = st(kv);
    assert_int_equal(s.wasted_bytes, 3 * 100);
    assert_int_equal(s.used_bytes, 8 * 100);
    assert_int_equal(fy_kv_fork(kv, &a, &b), 0);
    assert_int_equal(st(kv).wasted_bytes, 3 * 100); /* shared blocks count once */
    int32_t src[2], dst[2];
    fy_kv_cow cow = {src, dst, 0, 2};
    assert_int_equal(fy_kv_reserve(kv, &b, 6, &cow), 0);
    fy_kv_cow_done(kv, &cow);
    fy_kv_commit(kv, &b, tok, 6);
    /* A: 3 empty in its block; B's copy: 2 empty. */
    assert_int_equal(st(kv).wasted_bytes, (3 + 2) * 100);
    fill(kv, &a, tok, 16);
    fy_kv_table_release(kv, &b);
    assert_int_equal(st(kv).wasted_bytes, 0);
    fy_kv_table_release(kv, &a);
    s = st(kv);
    assert_int_equal(s.used, 0);
    assert_int_equal(s.wasted_bytes, 0);
    assert_int_equal(s.cached + s.free, 10);
    fy_kv_free(kv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_options),
        cmocka_unit_test(test_refcount_fork_cow),
        cmocka_unit_test(test_reserve_eagain),
        cmocka_unit_test(test_prefix_hit),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_collision_guard),
        cmocka_unit_test(test_parent_generation_guard),
        cmocka_unit_test(test_waste_and_all_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
