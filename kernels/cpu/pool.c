/* pool.c: a small fork-join thread pool (see pool.h).
 *
 * A job is published by bumping GEN; its items are claimed from NEXT, which
 * holds the job's generation in its high 32 bits and the next item in the
 * low 32, so a claim (a compare-and-swap) succeeds only for the job it was
 * read for. The caller returns once DONE counts every item, not once every
 * worker has checked in: a worker that another process keeps off its core
 * simply takes no part (its late claims fail on the generation), where
 * waiting for it would cost a scheduler time slice (milliseconds) on jobs of
 * a few microseconds. fn, ctx and the sizes are atomics because a late
 * worker may read them while the caller writes the next job's; it only acts
 * on them after a claim succeeds, and a claim succeeds only while the job it
 * read them for is unfinished, so before the caller writes new ones. */
#include "kernels/cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

/* Spins before a worker sleeps: about 50-100 us, longer than the gap between
 * two ops of one forward pass, far shorter than the gap between steps. */
#define POOL_SPINS 20000

typedef struct {
    fy_pool *pool;
    int tid;
    pthread_t th;
} pool_worker;

struct fy_pool {
    int n; /* threads including the caller */
    pool_worker *w;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;        /* bumped (under mu) for each job */
    _Atomic uint64_t next;  /* gen << 32 | next item to claim */
    atomic_size_t done;     /* items of the current job finished */
    _Atomic(fy_pool_fn) fn; /* the current job (written before gen is bumped) */
    _Atomic(void *) ctx;
    atomic_size_t n_items, grain;
    int stop;
};

/* Claims and runs chunks of job G until none is left (or G is over). */
static void pool_run(fy_pool *p, int tid, uint32_t g, fy_pool_fn fn, void *ctx, size_t n,
                     size_t grain)
{
    uint64_t v = atomic_load_explicit(&p->next, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(v >> 32) != g || (uint32_t)v >= n) {
            return;
        }
        size_t b = (uint32_t)v, e = b + grain < n ? b + grain : n;
        if (!atomic_compare_exchange_weak_explicit(&p->next, &v, (uint64_t)g << 32 | e,
                                                   memory_order_acq_rel, memory_order_acquire)) {
            continue; /* v holds the new value */
        }
        fn(ctx, b, e, tid);
        atomic_fetch_add_explicit(&p->done, e - b, memory_order_release);
        v = atomic_load_explicit(&p->next, memory_order_acquire);
    }
}

static void *pool_main(void *arg)
{
    pool_worker *w = arg;
    fy_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load_explicit(&p->gen, memory_order_acquire);
        for (int i = 0; g == seen && i < POOL_SPINS; i++) {
            POOL_PAUSE();
            g = atomic_load_explicit(&p->gen, memory_order_acquire);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !p->stop) {
                pthread_cond_wait(&p->cv, &p->mu);
            }
            int stop = p->stop;
            pthread_mutex_unlock(&p->mu);
            if (stop) {
                return NULL;
            }
        }
        seen = g;
        pool_run(p, w->tid, g, atomic_load_explicit(&p->fn, memory_order_relaxed),
                 atomic_load_explicit(&p->ctx, memory_order_relaxed),
                 atomic_load_explicit(&p->n_items, memory_order_relaxed),
                 atomic_load_explicit(&p->grain, memory_order_relaxed));
    }
}

fy_pool *fy_pool_new(int threads)
{
    fy_pool *p = calloc(1, sizeof *p);
    if (!p) {
        return NULL;
    }
    p->n = threads < 1 ? 1 : threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->w = calloc((size_t)p->n, sizeof *p->w);
    if (!p->w) {
        fy_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < p->n; i++) {
        p->w[i].pool = p;
        p->w[i].tid = i;
        if (pthread_create(&p->w[i].th, NULL, pool_main, &p->w[i]) != 0) {
            p->n = i; /* only the started ones are joined */
            fy_pool_free(p);
            return NULL;
        }
    }
    return p;
}

void fy_pool_free(fy_pool *p)
{
    if (!p) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; p->w && i < p->n; i++) {
        pthread_join(p->w[i].th, NULL);
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->w);
    free(p);
}

int fy_pool_size(const fy_pool *p)
{
    return p->n;
}

void fy_pool_for(fy_pool *p, size_t n, size_t grain, fy_pool_fn fn, void *ctx)
{
    if (n == 0) {
        return;
    }
    if (grain == 0) {
        grain = 1;
    }
    /* Item indices live in 32 bits of NEXT; a larger job runs on the caller. */
    if (p->n == 1 || n <= grain || n > UINT32_MAX / 2 || grain > UINT32_MAX / 2) {
        fn(ctx, 0, n, 0);
        return;
    }
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&p->n_items, n, memory_order_relaxed);
    atomic_store_explicit(&p->grain, grain, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->next, (uint64_t)g << 32, memory_order_release);
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->gen, g, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pool_run(p, 0, g, fn, ctx, n, grain);
    /* Chunks other threads claimed finish; yield if one was descheduled. */
    for (unsigned i = 0; atomic_load_explicit(&p->done, memory_order_acquire) < n; i++) {
        if (i > 1000) {
            sched_yield();
        } else {
            POOL_PAUSE();
        }
    }
}
