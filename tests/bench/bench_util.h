/* bench_util.h: what the CPU benchmarks share (header only): a monotonic
 * clock and the read-bandwidth peer every engine figure is compared with.
 *
 * bench_read_bandwidth() reads BYTES (one buffer, split between THREADS
 * threads that start each pass together at a barrier) RUNS times and
 * returns the best pass in bytes/s. TUNED 0 is a plain summing loop (8
 * independent 64-bit sums); TUNED 1 is four streams per thread, each two
 * 32-byte AVX2 loads a step with software prefetch 1 KiB ahead, the best a
 * read loop reaches here (falls back to the plain loop on a CPU without
 * AVX2). */
#ifndef FY_BENCH_UTIL_H
#define FY_BENCH_UTIL_H

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_RUNS    16

typedef struct {
    const uint8_t *p;
    size_t n; /* bytes, a multiple of 256 */
    int tuned;
    uint64_t sum;
    pthread_barrier_t *bar;
    int runs;
    double *secs; /* [runs], written by thread 0 */
} bench_bw_arg;

static inline uint64_t bench_read_plain(const uint8_t *p, size_t n)
{
    const uint64_t *w = (const uint64_t *)(const void *)p;
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= n / 8; i += 8) {
        for (int j = 0; j < 8; j++) {
            s[j] += w[i + j];
        }
    }
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static inline uint64_t bench_read_avx2(const uint8_t *p, size_t n)
{
    /* Four streams, one per quarter, two 32-byte loads each per step. */
    size_t q = n / 4;
    const uint8_t *s0 = p, *s1 = p + q, *s2 = p + 2 * q, *s3 = p + 3 * q;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i + 64 <= q; i += 64) {
        _mm_prefetch((const char *)s0 + i + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)s1 + i + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)s2 + i + 1024, _MM_HINT_T0);
        _mm_prefetch((const char *)s3 + i + 1024, _MM_HINT_T0);
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(s0 + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(s1 + i)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(s2 + i)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(s3 + i)));
        a0 = _mm256_add_epi64(a0, _mm256_load_si256((const __m256i *)(s0 + i + 32)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256((const __m256i *)(s1 + i + 32)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256((const __m256i *)(s2 + i + 32)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256((const __m256i *)(s3 + i + 32)));
    }
    __m256i a = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    uint64_t v[4];
    _mm256_storeu_si256((__m256i *)v, a);
    return v[0] + v[1] + v[2] + v[3];
}
#endif

static inline void *bench_bw_main(void *arg)
{
    bench_bw_arg *a = arg;
    for (int r = 0; r < a->runs; r++) {
        pthread_barrier_wait(a->bar);
        double t0 = bench_now_s();
#if defined(__x86_64__)
        a->sum += a->tuned ? bench_read_avx2(a->p, a->n) : bench_read_plain(a->p, a->n);
#else
        a->sum += bench_read_plain(a->p, a->n);
#endif
        pthread_barrier_wait(a->bar);
        if (a->secs) {
            a->secs[r] = bench_now_s() - t0;
        }
    }
    return NULL;
}

/* Bytes/s reading BYTES with THREADS threads, best of RUNS passes (see the
 * top); 0 when the buffer cannot be had or the counts are out of range. */
static inline double bench_read_bandwidth(size_t bytes, int threads, int runs, int tuned)
{
    if (threads < 1 || threads > BENCH_MAX_THREADS || runs < 1 || runs > BENCH_MAX_RUNS) {
        return 0;
    }
#if defined(__x86_64__)
    __builtin_cpu_init();
    tuned = tuned && __builtin_cpu_supports("avx2");
#else
    tuned = 0;
#endif
    uint8_t *buf = aligned_alloc(64, bytes);
    if (!buf) {
        return 0;
    }
    for (size_t i = 0; i + 8 <= bytes; i += 8) {
        uint64_t v = i * 0x9e3779b97f4a7c15ull;
        memcpy(buf + i, &v, 8);
    }
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    pthread_t th[BENCH_MAX_THREADS];
    bench_bw_arg args[BENCH_MAX_THREADS];
    double secs[BENCH_MAX_RUNS];
    size_t part = bytes / (size_t)threads / 256 * 256;
    for (int i = 0; i < threads; i++) {
        args[i] = (bench_bw_arg){buf + part * (size_t)i, part, tuned, 0, &bar, runs,
                                 i == 0 ? secs : NULL};
        if (i > 0) {
            pthread_create(&th[i], NULL, bench_bw_main, &args[i]);
        }
    }
    bench_bw_main(&args[0]);
    uint64_t check = args[0].sum;
    for (int i = 1; i < threads; i++) {
        pthread_join(th[i], NULL);
        check += args[i].sum;
    }
    pthread_barrier_destroy(&bar);
    free(buf);
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        best = secs[r] < best ? secs[r] : best;
    }
    if (check == 42) { /* keeps the sums (and the reads) alive */
        printf(" ");
    }
    return (double)(part * (size_t)threads) / best;
}

#endif
