/* The CPU backend's thread pool (kernels/cpu/pool.h): every item of every
 * job runs exactly once, jobs back to back (where a worker may still be in
 * the previous one), a claimed chunk that is slow is waited for, and the
 * single-thread and large-grain paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "kernels/cpu/pool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    atomic_int *hits; /* [n] */
    size_t n;
    atomic_int bad_tid;
    int threads;
    int slow_tid; /* >= 0: that thread sleeps 5 ms in its first chunk */
    atomic_int slept;
} job;

static void count(void *ctx, size_t b, size_t e, int tid)
{
    job *j = ctx;
    if (tid < 0 || tid >= j->threads || b >= e || e > j->n) {
        atomic_fetch_add(&j->bad_tid, 1);
        return;
    }
    if (tid == j->slow_tid && atomic_exchange(&j->slept, 1) == 0) {
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (size_t i = b; i < e; i++) {
        atomic_fetch_add_explicit(&j->hits[i], 1, memory_order_relaxed);
    }
}

static void run_jobs(int threads, int rounds, int slow)
{
    fy_pool *p = fy_pool_new(threads);
    assert_non_null(p);
    assert_int_equal(fy_pool_size(p), threads);
    enum { MAXN = 3000 };
    atomic_int *hits = calloc(MAXN, sizeof *hits);
    uint32_t r = 7;
    for (int k = 0; k < rounds; k++) {
        r = r * 1103515245u + 12345u;
        size_t n = 1 + (r >> 8) % MAXN, grain = 1 + (r >> 20) % 7;
        for (size_t i = 0; i < n; i++) {
            atomic_store(&hits[i], 0);
        }
        job j = {hits, n, 0, threads, slow ? 1 + k % (threads > 1 ? threads - 1 : 1) : -1, 0};
        fy_pool_for(p, n, grain, count, &j);
        /* On return every item has run once, and nothing runs later. */
        for (size_t i = 0; i < n; i++) {
            if (atomic_load(&hits[i]) != 1) {
                fail_msg("threads %d round %d: item %zu of %zu ran %d times", threads, k, i, n,
                         atomic_load(&hits[i]));
            }
        }
        assert_int_equal(atomic_load(&j.bad_tid), 0);
    }
    fy_pool_free(p);
    free(hits);
}

static void test_exactly_once(void **state)
{
    (void)state;
    run_jobs(1, 50, 0);
    run_jobs(2, 3000, 0);
    run_jobs(3, 3000, 0);
}

/* A worker sleeps inside a chunk it claimed while the caller, having waited
 * until that chunk was claimed, finishes the rest: fy_pool_for must not
 * return before the sleeper's items are done. */
typedef struct {
    atomic_int hits[64];
    atomic_int claimed; /* a worker is inside a chunk */
} sleeper;

static void sleepy(void *ctx, size_t b, size_t e, int tid)
{
    sleeper *s = ctx;
    if (tid != 0 && atomic_exchange(&s->claimed, 1) == 0) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } else if (tid == 0) {
        /* Wait (at most 2 s) for a worker to be inside a chunk. */
        for (int i = 0; i < 2000 && !atomic_load(&s->claimed); i++) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (size_t i = b; i < e; i++) {
        atomic_fetch_add(&s->hits[i], 1);
    }
}

static void test_slow_worker(void **state)
{
    (void)state;
    fy_pool *p = fy_pool_new(3);
    assert_non_null(p);
    for (int k = 0; k < 5; k++) {
        sleeper s;
        memset(&s, 0, sizeof s);
        fy_pool_for(p, 64, 1, sleepy, &s);
        for (int i = 0; i < 64; i++) {
            assert_int_equal(atomic_load(&s.hits[i]), 1);
        }
    }
    fy_pool_free(p);
    run_jobs(3, 40, 1);
}

static void test_edges(void **state)
{
    (void)state;
    fy_pool *p = fy_pool_new(0); /* at least the caller */
    assert_non_null(p);
    assert_int_equal(fy_pool_size(p), 1);
    fy_pool_free(p);
    p = fy_pool_new(3);
    atomic_int hits[10];
    memset(hits, 0, sizeof hits);
    job j = {hits, 10, 0, 3, -1, 0};
    fy_pool_for(p, 0, 1, count, &j);    /* nothing */
    fy_pool_for(p, 10, 0, count, &j);   /* grain 0 means 1 */
    fy_pool_for(p, 10, 100, count, &j); /* one chunk, on the caller */
    for (int i = 0; i < 10; i++) {
        assert_int_equal(atomic_load(&hits[i]), 2);
    }
    fy_pool_free(p);
    fy_pool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exactly_once),
        cmocka_unit_test(test_slow_worker),
        cmocka_unit_test(test_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
