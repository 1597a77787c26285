/* comm_cpu.c: a tensor-parallel group of CPU backends in one process (see
 * the communicator in kernels/backend.h).
 *
 * All-reduce: each rank publishes its buffer, waits at a barrier, then sums
 * its own share of the elements over every rank's buffer (always in rank
 * order 0..N-1, so the result is the same bits on every rank) and writes the
 * sum back into every buffer; a second barrier keeps any rank from reusing
 * its buffer before the others are done reading it. This is the reduce-scatter
 * + all-gather that NCCL's ring does, with shared memory for the ring. */
#include "kernels/backend.h"

#include "common/err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy__cpu_backend_threads(const fy_backend *be, int *avx2);

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, waiting;
    unsigned long gen;
} cpu_barrier;

typedef struct {
    cpu_barrier bar;
    float *buf[FY_COMM_MAX]; /* each rank's buffer in the current all-reduce */
    size_t len[FY_COMM_MAX];
} cpu_comm;

static void barrier_wait(cpu_barrier *b)
{
    pthread_mutex_lock(&b->mu);
    unsigned long gen = b->gen;
    if (++b->waiting == b->n) {
        b->waiting = 0;
        b->gen++;
        pthread_cond_broadcast(&b->cv);
    } else {
        while (gen == b->gen) {
            pthread_cond_wait(&b->cv, &b->mu);
        }
    }
    pthread_mutex_unlock(&b->mu);
}

static void cpu_comm_all_reduce(fy_comm *c, int rank, float *buf, size_t n)
{
    cpu_comm *cc = c->impl;
    int N = c->size;
    if (N <= 1 || rank < 0 || rank >= N) {
        return;
    }
    cc->buf[rank] = buf;
    cc->len[rank] = n;
    barrier_wait(&cc->bar);
    /* A rank that disagrees on N would read past a shorter buffer: every rank
     * sees the same lengths, so all skip the sum together (a caller bug,
     * caught by the forward pass's own shape checks long before). */
    int same = 1;
    for (int r = 1; r < N; r++) {
        same &= cc->len[r] == cc->len[0];
    }
    if (same) {
        size_t b = n * (size_t)rank / (size_t)N, e = n * (size_t)(rank + 1) / (size_t)N;
        for (size_t i = b; i < e; i++) {
            float s = cc->buf[0][i];
            for (int r = 1; r < N; r++) {
                s += cc->buf[r][i];
            }
            for (int r = 0; r < N; r++) {
                cc->buf[r][i] = s;
            }
        }
    }
    barrier_wait(&cc->bar);
}

static void cpu_comm_destroy(fy_comm *c)
{
    if (!c) {
        return;
    }
    for (int r = 1; r < c->size; r++) {
        fy_backend_destroy(c->be[r]);
    }
    cpu_comm *cc = c->impl;
    if (cc) {
        pthread_cond_destroy(&cc->bar.cv);
        pthread_mutex_destroy(&cc->bar.mu);
        free(cc);
    }
    free(c);
}

static const fy_comm_ops cpu_comm_ops = {
    .name = "cpu",
    .destroy = cpu_comm_destroy,
    .all_reduce = cpu_comm_all_reduce,
    .shard = NULL, /* host memory: the forward pass slices the weights itself */
};

int fy_cpu_comm_create(fy_backend *rank0, int n, int threads, fy_comm **out, char *err,
                       size_t errlen)
{
    *out = NULL;
    if (!rank0 || strcmp(rank0->ops->name, "cpu") != 0) {
        snprintf(err, errlen, "cpu tensor-parallel group: rank 0 is not a CPU backend");
        return FY_EINVAL;
    }
    if (n < 1 || n > FY_COMM_MAX || threads < 0 || threads > 1024) {
        snprintf(err, errlen,
                 "cpu tensor-parallel group: %d ranks of %d threads (ranks must be 1..%d)", n,
                 threads, FY_COMM_MAX);
        return FY_EINVAL;
    }
    fy_comm *c = calloc(1, sizeof *c);
    cpu_comm *cc = calloc(1, sizeof *cc);
    if (!c || !cc) {
        free(c);
        free(cc);
        snprintf(err, errlen, "cpu tensor-parallel group: out of memory");
        return FY_ENOMEM;
    }
    pthread_mutex_init(&cc->bar.mu, NULL);
    pthread_cond_init(&cc->bar.cv, NULL);
    cc->bar.n = n;
    c->ops = &cpu_comm_ops;
    c->impl = cc;
    c->be[0] = rank0;
    c->size = 1;
    if (threads == 0) {
        threads = fy__cpu_backend_threads(rank0, NULL);
    }
    for (int r = 1; r < n; r++) {
        int rc = fy_cpu_backend_create(threads, &c->be[r], err, errlen);
        if (rc < 0) {
            cpu_comm_destroy(c);
            return rc;
        }
        c->size = r + 1;
    }
    *out = c;
    return 0;
}
