/* bench_auth: the cost of the gateway's per-request key check and the memory
 * of its key index, against a named peer.
 *
 *   build-dir/bench/bench_auth [N_KEYS] [CHECKS]     (defaults 100000, 2000000)
 *
 * Check = what the proxy does per request before routing: parse the
 * Authorization header, SHA-256 the key, probe the index, compare the full
 * digest in constant time, take a reference, GCRA + token + concurrency
 * update (acquire and release) on the key's limiter. Two patterns: every
 * key in a scrambled order (no locality: the index is cold in cache, as with
 * many clients) and one key repeatedly (hot). The header value is copied
 * into a local buffer first, as a server has it in its read buffer. Peer: a
 * plain SHA-256 of the same key text (the least any hash-based check must
 * do); the ratio says what parsing, the index and the limits add.
 * Memory: heap bytes the keyring holds for N keys (mallinfo2 delta), the
 * RSS delta, and the keyring's own accounting. Median of 5 runs. */
#include "common/crypto.h"
#include "common/secret.h"
#include "gateway/keys.h"
#include "gateway/ratelimit.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RUNS 5

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
            rss = 0;
        }
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, RUNS, sizeof *v, cmp_double);
    return v[RUNS / 2];
}

/* Visits 0..n-1 in a scrambled order: i * step mod n with step coprime to n. */
static size_t step_for(size_t n)
{
    size_t step = n / 2 + 7919;
    while (1) {
        size_t a = step, b = n;
        while (b) {
            size_t t = a % b;
            a = b, b = t;
        }
        if (a == 1) {
            return step % n ? step % n : 1;
        }
        step++;
    }
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t checks = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000000;
    if (n == 0 || checks == 0) {
        fprintf(stderr, "usage: %s [N_KEYS] [CHECKS]\n", argv[0]);
        return 2;
    }
    /* The bench's own copies of the keys (as clients would send them) are
     * allocated before the memory baseline. */
    char(*headers)[FY_SECRET_MAX + 8] = malloc(n * (FY_SECRET_MAX + 8));
    char secret[FY_SECRET_MAX];
    if (!headers) {
        return 1;
    }
    struct mallinfo2 m0 = mallinfo2();
    long rss0 = rss_bytes();
    fy_keys *kr = NULL;
    if (fy_keys_new(NULL, &kr)) {
        return 1;
    }
    fy_store_key t;
    memset(&t, 0, sizeof t);
    strcpy(t.name, "bench");
    /* Limits high enough never to deny, so every check does the full update. */
    t.rpm = (int64_t)1 << 36;
    t.tpm = (int64_t)1 << 36;
    t.concurrency = 1000;
    double c0 = now_s();
    for (size_t i = 0; i < n; i++) {
        if (fy_keys_create(kr, &t, 1, secret, NULL)) {
            fprintf(stderr, "create failed\n");
            return 1;
        }
        snprintf(headers[i], sizeof headers[i], "Bearer %s", secret);
    }
    double create_s = now_s() - c0;
    fy_secure_zero(secret, sizeof secret);
    struct mallinfo2 m1 = mallinfo2();
    long rss1 = rss_bytes();
    /* Small blocks (uordblks) plus mmapped large ones (hblkhd: the table). */
    size_t heap = (m1.uordblks + m1.hblkhd) - (m0.uordblks + m0.hblkhd);

    double res_ns[2][4][RUNS];
    volatile uint8_t sink = 0;
    int64_t clock_ns = 0;
    /* Pattern 0: every key in scrambled order (the index is cold in cache);
     * pattern 1: one key over and over (everything hot). */
    for (int pat = 0; pat < 2; pat++) {
        size_t step = pat == 0 ? step_for(n) : 0;
        for (int r = 0; r < RUNS; r++) {
            for (int v = 0; v < 4; v++) {
                size_t idx = 0;
                double s0 = now_s();
                for (size_t i = 0; i < checks; i++) {
                    /* The request head was just read: the header value is hot
                     * in the server's buffer, for the peer and the check alike. */
                    char hv[FY_SECRET_MAX + 8];
                    memcpy(hv, headers[idx], 7 + FY_KEY_LEN);
                    idx = (idx + step) % n;
                    if (v == 0) {
                        uint8_t h[32];
                        fy_sha256(hv + 7, FY_KEY_LEN, h);
                        sink ^= h[0];
                        continue;
                    }
                    fy_http_header hd = {"authorization", hv, 13, 7 + FY_KEY_LEN};
                    fy_key *k = NULL;
                    if (fy_keys_authenticate(kr, &hd, 1, 2, &k) != FY_AUTH_OK) {
                        return 1;
                    }
                    if (v >= 2) {
                        fy_rl_result res;
                        clock_ns += 1000; /* a steady arrival, 1 per µs */
                        if (!fy_rl_acquire(fy_key_rl(k), clock_ns, &res)) {
                            return 1;
                        }
                        if (v == 3) {
                            fy_rl_header_buf hb;
                            sink ^= (uint8_t)fy_rl_headers(&res, &hb);
                        }
                        fy_rl_release(fy_key_rl(k));
                    }
                    fy_key_release(k);
                }
                res_ns[pat][v][r] = (now_s() - s0) * 1e9 / checks;
            }
        }
    }

    printf("bench_auth: %zu keys, %zu checks per run, median of %d runs\n", n, checks, RUNS);
    static const char *const what[4] = {
        "peer: plain SHA-256 of the key",
        "authenticate (parse+hash+lookup+ct cmp)",
        "full check (+ GCRA, tokens, concurrency)",
        "full check + x-ratelimit-* headers",
    };
    for (int pat = 0; pat < 2; pat++) {
        printf(" %s:\n", pat == 0 ? "all keys, scrambled order (index cold in cache)"
                                  : "one key repeatedly (index hot in cache)");
        double peer = median(res_ns[pat][0]);
        for (int v = 0; v < 4; v++) {
            double x = median(res_ns[pat][v]);
            printf("  %-42s %8.1f ns  %5.2fx peer\n", what[v], x, x / peer);
        }
    }
    printf(" memory for %zu keys: heap %zu bytes (%.0f B/key), RSS delta %ld bytes (%.0f "
           "B/key), index accounting %zu bytes\n",
           n, heap, (double)heap / n, rss1 - rss0, (double)(rss1 - rss0) / n, fy_keys_memory(kr));
    printf(" key creation: %.2f us/key (CSPRNG + SHA-256 + index insert; no store)\n",
           create_s * 1e6 / n);
    fy_keys_free(kr);
    free(headers);
    return sink == 255 ? 0 : 0; /* sink keeps the peer's hashing from being elided */
}
