/* pool.h: the CPU backend's thread pool.
 *
 * fy_pool_for() splits [0, n) into chunks of GRAIN items that the calling
 * thread and the workers take in turn (an atomic counter, so a core slowed
 * by another process does not hold up the rest), and returns when all are
 * done: a worker that has not claimed a chunk is not waited for. Workers spin briefly between calls before sleeping, because a
 * forward pass issues hundreds of small parallel ops per token and a
 * condition-variable wake-up per op would cost more than the op. One caller
 * at a time. */
#ifndef FY_CPU_POOL_H
#define FY_CPU_POOL_H

#include <stddef.h>

typedef struct fy_pool fy_pool;

/* Runs items [begin, end) on thread TID (0 = the caller, < fy_pool_size()). */
typedef void (*fy_pool_fn)(void *ctx, size_t begin, size_t end, int tid);

/* THREADS: total threads including the caller (>= 1). Returns NULL on failure. */
fy_pool *fy_pool_new(int threads);
void fy_pool_free(fy_pool *p);
int fy_pool_size(const fy_pool *p);
void fy_pool_for(fy_pool *p, size_t n, size_t grain, fy_pool_fn fn, void *ctx);

#endif
