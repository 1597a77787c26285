/* pool.c: a small fork-join thread pool (see pool.h). */
#include "kernels/cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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
    atomic_uint gen;    /* bumped (under mu) for each job */
    atomic_int pending; /* workers still inside the current job */
    atomic_size_t next; /* next item to take */
    int stop;
    /* The current job (written before gen is bumped). */
    fy_pool_fn fn;
    void *ctx;
    size_t n_items, grain;
};

static void pool_run(fy_pool *p, int tid)
{
    for (;;) {
        size_t b = atomic_fetch_add_explicit(&p->next, p->grain, memory_order_relaxed);
        if (b >= p->n_items) {
            return;
        }
        size_t e = b + p->grain < p->n_items ? b + p->grain : p->n_items;
        p->fn(p->ctx, b, e, tid);
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
        pool_run(p, w->tid);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel);
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
    if (p->n == 1 || n <= grain) {
        fn(ctx, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n;
    p->grain = grain;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pool_run(p, 0);
    /* Workers finish their last chunk; yield if one was descheduled. */
    for (unsigned i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        if (i > 1000) {
            sched_yield();
        } else {
            POOL_PAUSE();
        }
    }
}
