/* gateway/shared_limits: the shared per-key limits, as Lua scripts in a real
 * redis-server (support/redis_server.h), checked against the local limiter
 * (gateway/ratelimit.h) on the same random arrivals, value for value; two
 * replicas racing on one key; unknown, revoked and expired keys; limit
 * changes; leases that expire, renew and release; malformed state and
 * replies; a flushed script cache; Redis's own clock.
 *
 * Time is explicit everywhere (now_us, now_s) but in the one test of the
 * TIME path, whose checks do not depend on what the clock reads. The file
 * includes the module so the reply parser can be fed crafted replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/shared_limits.c"
#include "support/redis_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define US  1000LL             /* ns per µs: the local limiter's clock is ns */
#define SEC 1000000LL          /* µs per s */
#define T0  1800000000000000LL /* a unix time in µs (2027), where the tests start */

/* ---- fixture ----------------------------------------------------------- */

typedef struct {
    redis_env e;
    fy_redis *cl[2];
    fy_shl *shl[2];
    int ups[2];
} fx;

static void on_state(void *data, int up, int err, const char *reason)
{
    int *ups = data;
    (void)err;
    (void)reason;
    if (up)
        (*ups)++;
}

static const fy_redis_ops ops = {.on_state = on_state};

#define WAIT_UNTIL(f, cond) REDIS_WAIT_UNTIL(&(f)->e.loop, cond)

static void connect_replica(fx *f, int i)
{
    char url[200], err[256];
    fy_redis_config cfg;

    snprintf(url, sizeof url, "unix://%s", f->e.s.sock);
    assert_int_equal(fy_redis_config_parse(url, NULL, &cfg, err, sizeof err), 0);
    assert_int_equal(fy_redis_new(&f->e.loop, &cfg, &ops, &f->ups[i], &f->cl[i]), 0);
    fy_redis_config_wipe(&cfg);
    WAIT_UNTIL(f, f->ups[i] == 1);
    assert_int_equal(fy_shl_new(f->cl[i], &f->shl[i]), 0);
}

static int setup(void **state)
{
    fx *f;

    redis_srv_need();
    f = calloc(1, sizeof *f);
    assert_non_null(f);
    redis_env_init(&f->e);
    *state = f;
    redis_srv_start(&f->e.s);
    connect_replica(f, 0);
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;

    if (!f)
        return 0;
    for (int i = 0; i < 2; i++) {
        fy_shl_free(f->shl[i]);
        fy_redis_free(f->cl[i]);
    }
    redis_env_close(&f->e);
    free(f);
    return 0;
}

/* ---- synchronous wrappers ---------------------------------------------- */

typedef struct {
    int calls, err;
    fy_shl_admission a;
    int64_t n;
} res;

static void on_admission(void *data, int err, const fy_shl_admission *a)
{
    res *r = data;
    r->calls++;
    r->err = err;
    if (a)
        r->a = *a;
    else
        assert_int_not_equal(err, 0);
}

static void on_n(void *data, int err, int64_t n)
{
    res *r = data;
    r->calls++;
    r->err = err;
    r->n = n;
}

/* Admits on replica I and waits; returns the callback's ERR. */
static int admit(fx *f, int i, const char *key, const char *lease, int64_t ttl_ms, int64_t now_us,
                 int64_t now_s, fy_shl_admission *out)
{
    res r = {0};
    assert_int_equal(fy_shl_admit(f->shl[i], key, lease, ttl_ms, now_us, now_s, on_admission, &r),
                     0);
    WAIT_UNTIL(f, r.calls == 1);
    if (out)
        *out = r.a;
    return r.err;
}

/* Admits on replica 0, requiring status WANT; returns the admission. */
static fy_shl_admission admit_as(fx *f, const char *key, const char *lease, int64_t ttl_ms,
                                 int64_t now_us, int64_t now_s, fy_shl_status want)
{
    fy_shl_admission a;
    assert_int_equal(admit(f, 0, key, lease, ttl_ms, now_us, now_s, &a), 0);
    assert_int_equal(a.status, want);
    return a;
}

/* Waits for the count call just issued (RC its return) and returns N. */
static int64_t count_wait(fx *f, int rc, res *r)
{
    assert_int_equal(rc, 0);
    WAIT_UNTIL(f, r->calls == 1);
    assert_int_equal(r->err, 0);
    return r->n;
}

static int64_t charge(fx *f, int i, const char *key, int64_t tokens, int64_t now_us)
{
    res r = {0};
    return count_wait(f, fy_shl_charge(f->shl[i], key, tokens, now_us, on_n, &r), &r);
}

static int64_t release(fx *f, int i, const char *key, const char *lease)
{
    res r = {0};
    const char *ids[] = {lease};
    return count_wait(f, fy_shl_release(f->shl[i], key, ids, 1, on_n, &r), &r);
}

static int64_t renew(fx *f, const char *key, const char *const *ids, size_t n, int64_t ttl_ms,
                     int64_t now_us)
{
    res r = {0};
    return count_wait(f, fy_shl_renew(f->shl[0], key, ids, n, ttl_ms, now_us, on_n, &r), &r);
}

static int64_t live_write(fx *f, const char *key, int64_t rpm, int64_t tpm, int64_t cc,
                          int64_t burst, int64_t exp, int64_t rev)
{
    fy_shl_live lv = {rpm, tpm, cc, burst, exp, rev};
    res r = {0};
    return count_wait(f, fy_shl_live_write(f->shl[0], key, &lv, on_n, &r), &r);
}

typedef struct {
    int calls, status, type;
    long long integer;
    char str[256];
} raw;

static void on_raw(void *data, int status, const fy_redis_reply *r)
{
    raw *p = data;
    p->calls++;
    p->status = status;
    p->type = r ? (int)r->type : 0;
    if (r) {
        p->integer = r->integer;
        snprintf(p->str, sizeof p->str, "%.*s", (int)r->len, r->str ? r->str : "");
    }
}

/* A plain command of NUL-terminated words on replica 0. */
static raw cmd(fx *f, int argc, const char *const *argv)
{
    raw r = {0};
    assert_int_equal(fy_redis_cmd(f->cl[0], on_raw, &r, argc, argv, NULL), 0);
    WAIT_UNTIL(f, r.calls == 1);
    return r;
}

static long long exists(fx *f, const char *name)
{
    const char *argv[] = {"EXISTS", name};
    return cmd(f, 2, argv).integer;
}

/* ---- the cross-check with the local limiter ---------------------------- */

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: reproducible from the seed, the same on every machine. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

static int64_t rng_below(uint64_t *s, int64_t n)
{
    return n > 0 ? (int64_t)(rng_next(s) % (uint64_t)n) : 0;
}

typedef struct {
    int64_t rpm, burst, tpm, cc;
} limits;

static void expect_same(const fy_rl_result *want, int ok, const fy_shl_admission *got,
                        const char *ctx, int step)
{
#define SAME(field)                                                          \
    if (want->field != got->rr.field)                                        \
        fail_msg("%s step %d: " #field " local %lld shared %lld", ctx, step, \
                 (long long)want->field, (long long)got->rr.field);
    assert_int_equal(got->status, ok ? FY_SHL_OK : FY_SHL_DENIED);
    SAME(allowed);
    SAME(denied_by);
    SAME(retry_after_ns);
    SAME(limit_requests);
    SAME(remaining_requests);
    SAME(reset_requests_ns);
    SAME(burst_requests);
    SAME(limit_tokens);
    SAME(remaining_tokens);
    SAME(reset_tokens_ns);
    SAME(limit_concurrency);
    SAME(in_flight);
#undef SAME
    assert_int_equal(ok, got->rr.allowed);
}

static void set_both(fx *f, const char *key, fy_rl *rl, const limits *l, int64_t now_us, int init)
{
    fy_rl_limits lim = {.rpm = l->rpm, .tpm = l->tpm, .concurrency = l->cc, .burst = l->burst};
    live_write(f, key, l->rpm, l->tpm, l->cc, l->burst, 0, 0);
    if (init)
        fy_rl_init(rl, &lim);
    else
        fy_rl_set_limits(rl, &lim, now_us * US);
}

#define MAX_HELD 64

/* Runs STEPS random operations (admit, charge, release; with CHANGES, limit
 * changes among CHANGES[0..NCHANGES)) through both limiters at the same
 * times and requires identical answers. With a grid (CHANGES set), times
 * fall on multiples of GRID µs so that rescaling a history to new limits is
 * exact in µs too (see shared_limits.h on rounding). */
static int run_sequence(fx *f, const char *key, const limits *start, const limits *changes,
                        size_t nchanges, int64_t grid, uint64_t seed, int steps, int denied[4])
{
    fy_rl rl;
    char held[MAX_HELD][32];
    int nheld = 0, admitted = 0, lease_no = 0;
    int64_t now = T0 + (int64_t)(seed % 1000) * SEC;
    limits cur = *start;
    char ctx[128];

    snprintf(ctx, sizeof ctx, "rpm %lld burst %lld tpm %lld cc %lld seed %llu",
             (long long)start->rpm, (long long)start->burst, (long long)start->tpm,
             (long long)start->cc, (unsigned long long)seed);
    set_both(f, key, &rl, start, now, 1);
    int64_t t = cur.rpm ? (60 * SEC + cur.rpm - 1) / cur.rpm : SEC;
    for (int step = 0; step < steps; step++) {
        int64_t pick = rng_below(&seed, 100);
        /* Time: mostly bursts (no gap) and gaps around the interval, now
         * and then a long rest. */
        if (grid) {
            int64_t g = rng_below(&seed, 10);
            now += g < 6 ? 0 : g < 9 ? grid : grid * rng_below(&seed, 40);
        } else {
            int64_t g = rng_below(&seed, 20);
            now += g < 6    ? 0
                   : g < 12 ? rng_below(&seed, t)
                   : g < 19 ? rng_below(&seed, 3 * t)
                            : rng_below(&seed, 90 * SEC);
        }
        int do_change = changes && pick < 6;
        if (do_change) {
            cur = changes[rng_below(&seed, (int64_t)nchanges)];
            set_both(f, key, &rl, &cur, now, 0);
            t = cur.rpm ? (60 * SEC + cur.rpm - 1) / cur.rpm : SEC;
        }
        if (do_change || pick < 60 || nheld == 0) {
            fy_rl_result want;
            fy_shl_admission got;
            char lease[32];
            if (nheld == MAX_HELD) { /* keep the bookkeeping bounded */
                assert_int_equal(release(f, 0, key, held[0]), 1);
                fy_rl_release(&rl);
                memmove(held[0], held[1], (size_t)(--nheld) * sizeof held[0]);
            }
            snprintf(lease, sizeof lease, "r0-%d", lease_no++);
            int ok = fy_rl_acquire(&rl, now * US, &want);
            assert_int_equal(admit(f, 0, key, lease, FY_SHL_LEASE_TTL_MAX, now, now / SEC, &got),
                             0);
            expect_same(&want, ok, &got, ctx, step);
            denied[want.denied_by]++;
            if (ok) {
                snprintf(held[nheld++], sizeof held[0], "%s", lease);
                admitted++;
            }
        } else if (pick < 80) {
            /* Usage reports, some of them large enough to leave a debt. */
            int64_t cap = cur.tpm ? cur.tpm : 1000;
            int64_t tokens = rng_below(&seed, 10) == 0 ? rng_below(&seed, 2 * cap)
                                                       : rng_below(&seed, cap / 8 + 1);
            fy_rl_charge(&rl, now * US, tokens);
            assert_int_equal(charge(f, 0, key, tokens, now), cur.tpm && tokens > 0);
        } else {
            int k = (int)rng_below(&seed, nheld);
            assert_int_equal(release(f, 0, key, held[k]), 1);
            fy_rl_release(&rl);
            memmove(held[k], held[k + 1], (size_t)(nheld - k - 1) * sizeof held[0]);
            nheld--;
        }
    }
    return admitted;
}

/* Prints what a cross-check saw and requires more than MIN denials of
 * every kind, so the sequences really reach each limit. */
static void report(const char *what, int admitted, const int denied[4], int min)
{
    print_message("%s: %d admitted, denied %d by requests, %d by tokens, %d by concurrency; "
                  "every answer identical\n",
                  what, admitted, denied[FY_RL_REQUESTS], denied[FY_RL_TOKENS],
                  denied[FY_RL_CONCURRENCY]);
    for (int k = FY_RL_REQUESTS; k <= FY_RL_CONCURRENCY; k++)
        assert_true(denied[k] > min);
}

static void test_crosscheck(void **state)
{
    fx *f = *state;
    /* rpm and tpm divide 60,000,000, so µs and ns agree exactly. */
    static const limits cases[] = {
        {60, 0, 0, 0},         {600, 5, 0, 0}, {100, 1, 6000, 0},       {6000, 0, 60000, 3},
        {0, 0, 1000, 2},       {0, 0, 0, 2},   {120, 120, 600, 0},      {1, 0, 0, 0},
        {1000, 50, 100000, 5}, {3, 2, 10, 1},  {600000, 0, 6000000, 0}, {0, 0, 0, 0},
    };
    int total = 0, denied[4] = {0};

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (uint64_t seed = 1; seed <= 4; seed++) {
            char key[32];
            snprintf(key, sizeof key, "key_x%zu_%llu", c, (unsigned long long)seed);
            total += run_sequence(f, key, &cases[c], NULL, 0, 0, seed * 7919 + c, 300, denied);
        }
    }
    report("cross-check", total, denied, 50);
}

/* The same with the limits changing under way (rpm, burst, tpm, cc, off and
 * on again): the history carries over as fy_rl_set_limits does. */
static void test_crosscheck_changes(void **state)
{
    fx *f = *state;
    /* Every interval and refill step divides the 2 s grid. */
    static const limits changes[] = {
        {60, 2, 600, 0}, {120, 3, 6000, 0}, {600, 4, 0, 0}, {0, 0, 1200, 1},
        {30, 1, 600, 3}, {60, 0, 6000, 0},  {0, 0, 0, 0},   {600, 2, 1200, 4},
    };
    int total = 0, denied[4] = {0};

    for (uint64_t seed = 1; seed <= 12; seed++) {
        char key[32];
        snprintf(key, sizeof key, "key_chg%llu", (unsigned long long)seed);
        total += run_sequence(f, key, &changes[seed % 8], changes, 8, 2 * SEC, seed * 104729, 400,
                              denied);
    }
    report("cross-check with limit changes", total, denied, 20);
}

/* Ties: waits of exactly one second on every limit that denies, so the
 * order requests, tokens, concurrency decides which one is reported. */
static void test_ties(void **state)
{
    fx *f = *state;
    static const limits cases[] = {
        {60, 1, 60, 1}, /* all three: requests */
        {0, 0, 60, 1},  /* tokens and concurrency: tokens */
        {60, 1, 0, 1},  /* requests and concurrency: requests */
        {60, 1, 60, 0}, /* requests and tokens: requests */
    };
    static const fy_rl_kind want_kind[] = {FY_RL_REQUESTS, FY_RL_TOKENS, FY_RL_REQUESTS,
                                           FY_RL_REQUESTS};

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char key[32];
        fy_rl rl;
        fy_rl_result want;
        fy_shl_admission got;
        int ok;

        snprintf(key, sizeof key, "key_tie%zu", c);
        set_both(f, key, &rl, &cases[c], T0, 1);
        ok = fy_rl_acquire(&rl, T0 * US, &want);
        assert_int_equal(admit(f, 0, key, "a", 60000, T0, T0 / SEC, &got), 0);
        expect_same(&want, ok, &got, key, 0);
        /* 61 tokens at 60 per minute: one second of debt. */
        fy_rl_charge(&rl, T0 * US, 61);
        charge(f, 0, key, 61, T0);
        ok = fy_rl_acquire(&rl, T0 * US, &want);
        assert_int_equal(admit(f, 0, key, "b", 60000, T0, T0 / SEC, &got), 0);
        expect_same(&want, ok, &got, key, 1);
        assert_int_equal(got.rr.denied_by, want_kind[c]);
        assert_int_equal(got.rr.retry_after_ns, 1000000000LL);
    }
}

/* Where µs and ns part: an interval or a refill that is not a whole number
 * of µs is rounded up to the next µs (the shared limit is the stricter, by
 * less than 1 µs); the bucket's edges; products past 2^53; the debt caps. */
static void test_rounding(void **state)
{
    fx *f = *state;
    fy_shl_admission a;
    fy_rl rl;
    fy_rl_result want;
    const int64_t w = 60 * SEC;

    /* rpm 7: T = 8571428.57 µs. */
    live_write(f, "key_r7", 7, 7, 0, 0, 0, 0);
    fy_rl_init(&rl, &(fy_rl_limits){.rpm = 7, .tpm = 7});
    fy_rl_acquire(&rl, T0 * US, &want);
    assert_int_equal(admit(f, 0, "key_r7", "a", 1000, T0, T0 / SEC, &a), 0);
    assert_int_equal(a.rr.reset_requests_ns, 8571429 * US);
    assert_int_equal(want.reset_requests_ns, 8571428572LL);
    /* One token at 7 per minute: 8571428.57 µs of refill, rounded up. */
    charge(f, 0, "key_r7", 1, T0);
    fy_rl_charge(&rl, T0 * US, 1);
    fy_rl_acquire(&rl, T0 * US, &want);
    assert_int_equal(admit(f, 0, "key_r7", "b", 1000, T0, T0 / SEC, &a), 0);
    assert_int_equal(a.rr.reset_tokens_ns, 8571429 * US);
    assert_int_equal(want.reset_tokens_ns, 8571428572LL);
    assert_int_equal(a.rr.remaining_tokens, want.remaining_tokens);

    /* An empty bucket admits; a bucket one token in debt does not. */
    live_write(f, "key_edge", 0, 60, 0, 0, 0, 0);
    charge(f, 0, "key_edge", 60, T0);
    a = admit_as(f, "key_edge", "a", 1000, T0, T0 / SEC, FY_SHL_OK);
    assert_int_equal(a.rr.remaining_tokens, 0);
    assert_int_equal(a.rr.reset_tokens_ns, w * US);
    charge(f, 0, "key_edge", 1, T0);
    a = admit_as(f, "key_edge", "b", 1000, T0, T0 / SEC, FY_SHL_DENIED);
    assert_int_equal(a.rr.denied_by, FY_RL_TOKENS);
    assert_int_equal(a.rr.retry_after_ns, SEC * US);
    a = admit_as(f, "key_edge", "b", 1000, T0 + SEC, T0 / SEC, FY_SHL_OK);

    /* The largest tpm: tokens * window and tpm * (window - owed) pass 2^53,
     * and stay exact. */
    /* (TOKENS leaves 3514 µs owed, where a product in doubles would round
     * across a multiple of the window.) */
    const int64_t tpm = FY_SHL_LIMIT_MAX - 1, tokens = 64394731;
    live_write(f, "key_big", 0, tpm, 0, 0, 0, 0);
    charge(f, 0, "key_big", tokens, T0);
    assert_int_equal(admit(f, 0, "key_big", "a", 1000, T0, T0 / SEC, &a), 0);
    unsigned __int128 p = (unsigned __int128)tokens * (uint64_t)w;
    int64_t owed = (int64_t)((p + (uint64_t)tpm - 1) / (uint64_t)tpm);
    int64_t left = (int64_t)((unsigned __int128)tpm * (uint64_t)(w - owed) / (uint64_t)w);
    assert_int_equal(a.rr.reset_tokens_ns, owed * US);
    assert_int_equal(a.rr.remaining_tokens, left);
    /* A debt whose tokens * window is far past 2^53. */
    const int64_t many = 3000000000007LL;
    live_write(f, "key_big2", 0, tpm, 0, 0, 0, 0);
    charge(f, 0, "key_big2", many, T0);
    assert_int_equal(admit(f, 0, "key_big2", "a", 1000, T0, T0 / SEC, &a), 0);
    p = (unsigned __int128)many * (uint64_t)w;
    owed = (int64_t)((p + (uint64_t)tpm - 1) / (uint64_t)tpm);
    assert_int_equal(a.rr.reset_tokens_ns, owed * US);
    assert_int_equal(a.rr.retry_after_ns, (owed - w) * US);

    /* The caps: one charge adds at most CAPQ, the bucket's end stays below
     * CAPH (the local limiter's, in µs). */
    live_write(f, "key_cap", 0, 1, 0, 0, 0, 0);
    charge(f, 0, "key_cap", INT64_MAX, T0);
    assert_int_equal(admit(f, 0, "key_cap", "a", 1000, T0, T0 / SEC, &a), 0);
    assert_int_equal(a.rr.reset_tokens_ns, 2305843009213693LL * US);
    charge(f, 0, "key_cap", INT64_MAX, T0);
    assert_int_equal(admit(f, 0, "key_cap", "a", 1000, T0, T0 / SEC, &a), 0);
    assert_int_equal(a.rr.reset_tokens_ns, (4611686018427387LL - T0) * US);
}

/* ---- two replicas ------------------------------------------------------ */

static void test_two_replicas(void **state)
{
    fx *f = *state;
    enum { PER = 6, STEPS = 60 };
    fy_rl rl;
    fy_rl_limits lim = {.rpm = 600, .burst = 10, .tpm = 60000};
    int64_t now = T0;
    int total = 0, local_total = 0, lease_no = 0;

    connect_replica(f, 1);
    live_write(f, "key_two", lim.rpm, lim.tpm, 0, lim.burst, 0, 0);
    fy_rl_init(&rl, &lim);
    for (int step = 0; step < STEPS; step++) {
        static res r[2][PER];
        char lease[2][PER][32];
        int admitted = 0, local = 0;
        memset(r, 0, sizeof r);
        /* Both replicas fire at once, pipelined, over two connections: Redis
         * runs the scripts in some interleaving, each one atomic. */
        for (int k = 0; k < PER; k++) {
            for (int i = 0; i < 2; i++) {
                snprintf(lease[i][k], sizeof lease[i][k], "r%d-%d", i, lease_no++);
                assert_int_equal(fy_shl_admit(f->shl[i], "key_two", lease[i][k], 60000, now,
                                              now / SEC, on_admission, &r[i][k]),
                                 0);
            }
        }
        for (int k = 0; k < PER; k++) {
            for (int i = 0; i < 2; i++) {
                WAIT_UNTIL(f, r[i][k].calls == 1);
                assert_int_equal(r[i][k].err, 0);
                admitted += r[i][k].a.status == FY_SHL_OK;
            }
        }
        for (int k = 0; k < 2 * PER; k++)
            local += fy_rl_acquire(&rl, now * US, NULL);
        /* Arrivals at one instant are interchangeable: the count is exact. */
        assert_int_equal(admitted, local);
        total += admitted;
        local_total += local;
        if (step % 10 == 9) {
            charge(f, step / 10 % 2, "key_two", 20000, now);
            fy_rl_charge(&rl, now * US, 20000);
        }
        now += 50000 + (step % 7) * 130000;
    }
    assert_true(total <= local_total);
    assert_int_equal(total, local_total);

    /* Concurrency across replicas: 5 slots, 12 racing requests, 5 admitted;
     * two released (one on each replica), two more. */
    live_write(f, "key_cc", 0, 0, 5, 0, 0, 0);
    for (int round = 0; round < 2; round++) {
        static res r[12];
        char lease[12][32];
        int admitted = 0;
        memset(r, 0, sizeof r);
        for (int k = 0; k < 12; k++) {
            snprintf(lease[k], sizeof lease[k], "cc%d-%d", round, k);
            assert_int_equal(fy_shl_admit(f->shl[k % 2], "key_cc", lease[k], 60000, now, now / SEC,
                                          on_admission, &r[k]),
                             0);
        }
        for (int k = 0; k < 12; k++) {
            WAIT_UNTIL(f, r[k].calls == 1);
            if (r[k].a.status == FY_SHL_OK)
                admitted++;
            else
                assert_int_equal(r[k].a.rr.denied_by, FY_RL_CONCURRENCY);
        }
        assert_int_equal(admitted, round == 0 ? 5 : 2);
        if (round == 0) {
            int released = 0;
            for (int k = 0; k < 12 && released < 2; k++) {
                if (r[k].a.status == FY_SHL_OK)
                    released += (int)release(f, released, "key_cc", lease[k]);
            }
            assert_int_equal(released, 2);
        }
    }
}

/* ---- key states and limit changes -------------------------------------- */

static void test_key_states(void **state)
{
    fx *f = *state;
    fy_shl_admission a;
    int64_t now = T0, now_s = T0 / SEC;

    /* Unknown: no live hash; nothing is written. */
    a = admit_as(f, "key_none", "l1", 1000, now, now_s, FY_SHL_UNKNOWN);
    assert_int_equal(a.ver, 0);
    assert_false(a.rr.allowed);
    assert_int_equal(exists(f, "ferry:{k:key_none}:live"), 0);
    assert_int_equal(exists(f, "ferry:{k:key_none}:cc"), 0);
    assert_int_equal(charge(f, 0, "key_none", 100, now), 0);
    assert_int_equal(exists(f, "ferry:{k:key_none}:live"), 0);

    /* A limit change applies to the very next admission. */
    assert_int_equal(live_write(f, "key_s", 60, 0, 0, 1, 0, 0), 1);
    a = admit_as(f, "key_s", "l1", 1000, now, now_s, FY_SHL_OK);
    assert_int_equal(a.ver, 1);
    assert_int_equal(a.rr.limit_requests, 60);
    assert_int_equal(a.rr.remaining_requests, 0);
    a = admit_as(f, "key_s", "l2", 1000, now, now_s, FY_SHL_DENIED);
    assert_int_equal(a.rr.denied_by, FY_RL_REQUESTS);
    assert_int_equal(a.rr.retry_after_ns, 1000000000LL);
    assert_int_equal(live_write(f, "key_s", 120, 0, 0, 2, 0, 0), 2);
    a = admit_as(f, "key_s", "l3", 1000, now, now_s, FY_SHL_OK);
    assert_int_equal(a.ver, 2);
    assert_int_equal(a.rr.limit_requests, 120);
    assert_int_equal(a.rr.burst_requests, 2);
    assert_int_equal(a.rr.remaining_requests, 0);

    /* Expired: exp <= now; one second before, still fine. */
    assert_int_equal(live_write(f, "key_s", 0, 0, 0, 0, now_s + 1, 0), 3);
    admit_as(f, "key_s", "l4", 1000, now, now_s, FY_SHL_OK);
    a = admit_as(f, "key_s", "l5", 1000, now, now_s + 1, FY_SHL_EXPIRED);
    assert_int_equal(a.ver, 3);
    assert_false(a.rr.allowed);
    assert_int_equal(a.rr.in_flight, 0);

    /* Revoked wins over everything; nothing changes (no lease taken). */
    assert_int_equal(live_write(f, "key_s", 0, 0, 0, 0, 0, now_s - 5), 4);
    const char *zc[] = {"ZCARD", "ferry:{k:key_s}:cc"};
    long long before = cmd(f, 2, zc).integer;
    a = admit_as(f, "key_s", "l6", 1000, now, now_s, FY_SHL_REVOKED);
    assert_int_equal(a.ver, 4);
    assert_int_equal(cmd(f, 2, zc).integer, before);
    /* What a revoked key used is still charged. */
    assert_int_equal(live_write(f, "key_s", 0, 600, 0, 0, 0, now_s - 5), 5);
    assert_int_equal(charge(f, 0, "key_s", 10, now), 1);

    /* The state lives in the key's own hash, as long as the key: 10 tokens
     * at 600/min are 1 s of refill after now. */
    const char *pttl[] = {"PTTL", "ferry:{k:key_s}:live"};
    assert_int_equal(cmd(f, 2, pttl).integer, -1);
    const char *tf[] = {"HGET", "ferry:{k:key_s}:live", "rl_tfull"};
    raw v = cmd(f, 3, tf);
    assert_int_equal(v.type, FY_REDIS_REPLY_STRING);
    assert_int_equal(strtoll(v.str, NULL, 10), now + SEC);
}

/* ---- leases ------------------------------------------------------------ */

static void test_leases(void **state)
{
    fx *f = *state;
    fy_shl_admission a;
    int64_t t = T0, s = T0 / SEC;
    const char *a_id[] = {"A"}, *both[] = {"A", "nope"};

    live_write(f, "key_l", 0, 0, 1, 0, 0, 0);
    a = admit_as(f, "key_l", "A", 10000, t, s, FY_SHL_OK);
    assert_int_equal(a.rr.in_flight, 1);
    assert_int_equal(a.rr.limit_concurrency, 1);
    a = admit_as(f, "key_l", "B", 10000, t + 5 * SEC, s, FY_SHL_DENIED);
    assert_int_equal(a.rr.denied_by, FY_RL_CONCURRENCY);
    assert_int_equal(a.rr.retry_after_ns, 1000000000LL);
    /* Not renewed: one ms before its expiry A still holds the slot, at its
     * expiry it is gone. */
    admit_as(f, "key_l", "B", 10000, t + 10 * SEC - 1000, s, FY_SHL_DENIED);
    a = admit_as(f, "key_l", "B", 10000, t + 10 * SEC, s, FY_SHL_OK);
    assert_int_equal(a.rr.in_flight, 1);
    assert_int_equal(renew(f, "key_l", a_id, 1, 10000, t + 11 * SEC), 0); /* A is not back */
    assert_int_equal(release(f, 0, "key_l", "A"), 0);

    /* Renewed: B (expiring at t+20 s) renewed at t+16 s lasts until t+26 s. */
    assert_int_equal(renew(f, "key_l", both, 2, 10000, t + 16 * SEC), 0);
    const char *b_id[] = {"B", "nope"};
    assert_int_equal(renew(f, "key_l", b_id, 2, 10000, t + 16 * SEC), 1);
    admit_as(f, "key_l", "C", 10000, t + 25 * SEC, s, FY_SHL_DENIED);
    const char *pttl[] = {"PTTL", "ferry:{k:key_l}:cc"};
    raw p = cmd(f, 2, pttl);
    assert_true(p.integer > 60000 && p.integer <= 70000); /* a minute after the last lease */

    /* Released: the slot is free at once. */
    assert_int_equal(release(f, 0, "key_l", "B"), 1);
    assert_int_equal(release(f, 0, "key_l", "B"), 0);
    admit_as(f, "key_l", "C", 10000, t + 25 * SEC, s, FY_SHL_OK);
    /* The callback is optional. */
    const char *c_id[] = {"C"};
    assert_int_equal(fy_shl_release(f->shl[0], "key_l", c_id, 1, NULL, NULL), 0);
    admit_as(f, "key_l", "D", 10000, t + 25 * SEC, s, FY_SHL_OK);
}

/* ---- batched admissions ------------------------------------------------- */

/* N admissions in one call decide exactly what N calls in a row decide:
 * two keys with the same limits, one asked one at a time, the other all at
 * once, at the same instants; every field of every admission agrees, and
 * the rejections (rpm, then concurrency) come where they must. */
static void test_admit_many(void **state)
{
    fx *f = *state;
    enum { N = 12 };
    int64_t now = T0, s = T0 / SEC;
    live_write(f, "key_one", 6, 600, 3, 4, 0, 0);
    live_write(f, "key_all", 6, 600, 3, 4, 0, 0);
    for (int round = 0; round < 3; round++, now += 7 * SEC) {
        char ids[N][16];
        fy_shl_ask asks[N];
        res r[N];
        memset(r, 0, sizeof r);
        for (int i = 0; i < N; i++) {
            snprintf(ids[i], sizeof ids[i], "r%d-%d", round, i);
            asks[i] = (fy_shl_ask){ids[i], on_admission, &r[i]};
        }
        assert_int_equal(fy_shl_admit_many(f->shl[0], "key_all", asks, N, 60000, now, s), 0);
        int admitted = 0;
        for (int i = 0; i < N; i++) {
            fy_shl_admission one;
            assert_int_equal(admit(f, 0, "key_one", ids[i], 60000, now, s, &one), 0);
            WAIT_UNTIL(f, r[i].calls == 1);
            assert_int_equal(r[i].err, 0);
            assert_int_equal(r[i].a.status, one.status);
            assert_memory_equal(&r[i].a.rr, &one.rr, sizeof one.rr);
            assert_int_equal(r[i].a.ver, one.ver);
            admitted += one.status == FY_SHL_OK;
        }
        /* Round 0: the burst (4) is capped by concurrency (3); later rounds
         * add one request's worth of rpm each 7 s, still under the cap. */
        assert_int_equal(admitted, round == 0 ? 3 : 0);
        if (round == 0) {
            assert_int_equal(r[N - 1].a.rr.denied_by, FY_RL_CONCURRENCY);
        }
    }
    /* Released, both keys admit again the same way. */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "r0-%d", i);
        assert_int_equal(release(f, 0, "key_one", id), 1);
        assert_int_equal(release(f, 0, "key_all", id), 1);
    }
    const char *two[] = {"r0-0", "r0-1"};
    res rr = {0};
    assert_int_equal(fy_shl_release(f->shl[0], "key_one", two, 2, on_n, &rr), 0);
    WAIT_UNTIL(f, rr.calls == 1);
    assert_int_equal(rr.n, 0); /* already released */

    /* Arguments: none, too many, or a bad one among good ones. */
    fy_shl_ask asks[FY_SHL_ADMIT_MAX + 1];
    res r = {0};
    for (size_t i = 0; i < FY_SHL_ADMIT_MAX + 1; i++) {
        asks[i] = (fy_shl_ask){"x", on_admission, &r};
    }
    assert_int_equal(fy_shl_admit_many(f->shl[0], "key_all", asks, 0, 1000, now, s), FY_EINVAL);
    assert_int_equal(
        fy_shl_admit_many(f->shl[0], "key_all", asks, FY_SHL_ADMIT_MAX + 1, 1000, now, s),
        FY_EINVAL);
    asks[3].lease_id = "";
    assert_int_equal(fy_shl_admit_many(f->shl[0], "key_all", asks, 5, 1000, now, s), FY_EINVAL);
    asks[3] = (fy_shl_ask){"x", NULL, &r};
    assert_int_equal(fy_shl_admit_many(f->shl[0], "key_all", asks, 5, 1000, now, s), FY_EINVAL);
    assert_int_equal(fy_shl_release(f->shl[0], "key_all", two, 0, NULL, NULL), FY_EINVAL);
    assert_int_equal(r.calls, 0);
}

/* ---- malformed state, replies and arguments ---------------------------- */

static void test_malformed(void **state)
{
    fx *f = *state;
    fy_shl_admission a;
    res r = {0};
    static const char *garbage[][4] = {
        {"HSET", "ferry:{k:key_g}:live", "rpm", "sixty"},
        {"HSET", "ferry:{k:key_g}:live", "rpm", "-5"},
        {"HSET", "ferry:{k:key_g}:live", "rpm", "99999999999999999999"},
        {"HSET", "ferry:{k:key_g}:live", "rpm", ""},
        {"HSET", "ferry:{k:key_g}:live", "cc", "1.5"},
    };

    /* A live hash holding garbage: the script refuses it with an error. */
    for (size_t i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        const char *del[] = {"DEL", "ferry:{k:key_g}:live"};
        cmd(f, 2, del);
        assert_int_equal(cmd(f, 4, garbage[i]).status, 0);
        assert_int_equal(admit(f, 0, "key_g", "l", 1000, T0, T0 / SEC, &a), FY_EIO);
        memset(&r, 0, sizeof r);
        assert_int_equal(fy_shl_charge(f->shl[0], "key_g", 5, T0, on_n, &r), 0);
        WAIT_UNTIL(f, r.calls == 1);
        assert_int_equal(r.err, FY_EIO);
    }
    /* Garbage in the limiter state, and a key of the wrong type. */
    live_write(f, "key_g2", 60, 0, 0, 0, 0, 0);
    const char *bad_rl[] = {"HSET", "ferry:{k:key_g2}:live", "rl_tat", "x"};
    cmd(f, 4, bad_rl);
    assert_int_equal(admit(f, 0, "key_g2", "l", 1000, T0, T0 / SEC, &a), FY_EIO);
    const char *str_live[] = {"SET", "ferry:{k:key_g3}:live", "v"};
    cmd(f, 3, str_live);
    assert_int_equal(admit(f, 0, "key_g3", "l", 1000, T0, T0 / SEC, &a), FY_EIO);

    /* Arguments: refused at once, no callback. */
    memset(&r, 0, sizeof r);
    char long_id[FY_SHL_KEY_ID_MAX + 2], long_lease[FY_SHL_LEASE_ID_MAX + 2];
    memset(long_id, 'k', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = 0;
    memset(long_lease, 'l', sizeof long_lease - 1);
    long_lease[sizeof long_lease - 1] = 0;
    static const char *const bad_keys[] = {"", "key_{x}", "key x", "key:1", NULL};
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++)
        assert_int_equal(fy_shl_admit(f->shl[0], bad_keys[i], "l", 1000, T0, 0, on_admission, &r),
                         FY_EINVAL);
    assert_int_equal(fy_shl_admit(f->shl[0], long_id, "l", 1000, T0, 0, on_admission, &r),
                     FY_EINVAL);
    long_id[FY_SHL_KEY_ID_MAX] = 0; /* exactly the maximum is fine */
    admit_as(f, long_id, "l", 1000, T0, 0, FY_SHL_UNKNOWN);
    assert_int_equal(fy_shl_admit(f->shl[0], "key_a", long_lease, 1000, T0, 0, on_admission, &r),
                     FY_EINVAL);
    assert_int_equal(fy_shl_admit(f->shl[0], "key_a", "", 1000, T0, 0, on_admission, &r),
                     FY_EINVAL);
    assert_int_equal(fy_shl_admit(f->shl[0], "key_a", "l", 0, T0, 0, on_admission, &r), FY_EINVAL);
    assert_int_equal(
        fy_shl_admit(f->shl[0], "key_a", "l", FY_SHL_LEASE_TTL_MAX + 1, T0, 0, on_admission, &r),
        FY_EINVAL);
    assert_int_equal(fy_shl_admit(f->shl[0], "key_a", "l", 1000, MAX53 + 1, 0, on_admission, &r),
                     FY_EINVAL);
    assert_int_equal(fy_shl_admit(f->shl[0], "key_a", "l", 1000, T0, 0, NULL, NULL), FY_EINVAL);
    const char *ids[] = {"a", ""};
    assert_int_equal(fy_shl_renew(f->shl[0], "key_a", ids, 0, 1000, T0, NULL, NULL), FY_EINVAL);
    assert_int_equal(fy_shl_renew(f->shl[0], "key_a", ids, 2, 1000, T0, NULL, NULL), FY_EINVAL);
    assert_int_equal(
        fy_shl_renew(f->shl[0], "key_a", ids, FY_SHL_RENEW_MAX + 1, 1000, T0, NULL, NULL),
        FY_EINVAL);
    fy_shl_live lv = {.rpm = FY_SHL_LIMIT_MAX + 1};
    assert_int_equal(fy_shl_live_write(f->shl[0], "key_a", &lv, NULL, NULL), FY_EINVAL);
    lv = (fy_shl_live){.revoked_at = -1};
    assert_int_equal(fy_shl_live_write(f->shl[0], "key_a", &lv, NULL, NULL), FY_EINVAL);
    assert_int_equal(r.calls, 0);
}

/* The reply parser on replies the script never sends. */
static void test_parse(void **state)
{
    fy_redis_reply el[R_COUNT + 1], top;
    fy_shl_admission a;
    (void)state;

    for (int i = 0; i <= R_COUNT; i++)
        el[i] = (fy_redis_reply){.type = FY_REDIS_REPLY_INTEGER};
    top = (fy_redis_reply){.type = FY_REDIS_REPLY_ARRAY, .elem = el, .n = R_COUNT};
    assert_int_equal(parse_admission(&top, &a), 0);
    assert_int_equal(a.status, FY_SHL_OK);
    assert_true(a.rr.allowed);

    el[R_STATUS].integer = FY_SHL_DENIED;
    el[R_DENIED_BY].integer = FY_RL_TOKENS;
    el[R_RETRY].integer = 1500;
    el[R_VER].integer = 7;
    assert_int_equal(parse_admission(&top, &a), 0);
    assert_int_equal(a.rr.denied_by, FY_RL_TOKENS);
    assert_int_equal(a.rr.retry_after_ns, 1500000);
    assert_int_equal(a.ver, 7);

    struct {
        int idx;
        long long v;
    } bad[] = {
        {R_STATUS, 5}, {R_STATUS, -1},     {R_DENIED_BY, 4},  {R_DENIED_BY, 0},
        {R_RETRY, -1}, {R_VER, MAX53 + 1}, {R_IN_FLIGHT, -3},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long keep = el[bad[i].idx].integer;
        el[bad[i].idx].integer = bad[i].v;
        assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
        el[bad[i].idx].integer = keep;
    }
    /* OK with a denial named. */
    el[R_STATUS].integer = FY_SHL_OK;
    assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
    el[R_STATUS].integer = FY_SHL_DENIED;
    /* Shapes: a count off by one either way, a string element, a nil, not
     * an array, an array without elements. */
    top.n = R_COUNT - 1;
    assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
    top.n = R_COUNT + 1;
    assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
    top.n = R_COUNT;
    el[3] = (fy_redis_reply){.type = FY_REDIS_REPLY_STRING, .str = "1", .len = 1};
    assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
    el[3] = (fy_redis_reply){.type = FY_REDIS_REPLY_NIL};
    assert_int_equal(parse_admission(&top, &a), FY_EPROTO);
    el[3] = (fy_redis_reply){.type = FY_REDIS_REPLY_INTEGER};
    assert_int_equal(parse_admission(&top, &a), 0);
    fy_redis_reply i = {.type = FY_REDIS_REPLY_INTEGER, .integer = 1};
    assert_int_equal(parse_admission(&i, &a), FY_EPROTO);
    fy_redis_reply empty = {.type = FY_REDIS_REPLY_ARRAY, .n = R_COUNT};
    assert_int_equal(parse_admission(&empty, &a), FY_EPROTO);
    assert_int_equal(parse_admission(NULL, &a), FY_EPROTO);

    /* The count reply: a negative or non-integer reply is FY_EPROTO. */
    res r = {0};
    fy_redis_reply s = {.type = FY_REDIS_REPLY_STATUS, .str = "OK", .len = 2};
    on_count(rq_new(on_n, &r), 0, &s);
    assert_int_equal(r.err, FY_EPROTO);
    fy_redis_reply neg = {.type = FY_REDIS_REPLY_INTEGER, .integer = -1};
    on_count(rq_new(on_n, &r), 0, &neg);
    assert_int_equal(r.err, FY_EPROTO);
    on_count(rq_new(on_n, &r), FY_ECONNRESET, NULL);
    assert_int_equal(r.err, FY_ECONNRESET);
    assert_int_equal(r.calls, 3);
}

/* ---- the script cache and the clock ------------------------------------ */

static void test_noscript(void **state)
{
    fx *f = *state;
    fy_shl_admission a;
    const char *flush[] = {"SCRIPT", "FLUSH"};

    live_write(f, "key_n", 60, 600, 0, 0, 0, 0);
    admit_as(f, "key_n", "l1", 1000, T0, T0 / SEC, FY_SHL_OK);
    assert_int_equal(cmd(f, 2, flush).status, 0);
    a = admit_as(f, "key_n", "l2", 1000, T0, T0 / SEC, FY_SHL_OK);
    assert_int_equal(a.rr.remaining_requests, 8); /* the state survived: 2 of 10 used */
    assert_int_equal(cmd(f, 2, flush).status, 0);
    assert_int_equal(charge(f, 0, "key_n", 60, T0), 1);
    assert_int_equal(cmd(f, 2, flush).status, 0);
    const char *ids[] = {"l1"};
    assert_int_equal(renew(f, "key_n", ids, 1, 1000, T0), 1);
    assert_int_equal(cmd(f, 2, flush).status, 0);
    assert_int_equal(live_write(f, "key_n", 60, 600, 0, 0, 0, 0), 2);
}

/* Redis's own clock: the answers that do not depend on what it reads. */
static void test_redis_time(void **state)
{
    fx *f = *state;
    fy_shl_admission a;

    live_write(f, "key_t", 60, 600, 0, 5, 0, 0);
    a = admit_as(f, "key_t", "l1", 30000, -1, -1, FY_SHL_OK);
    /* A rested key's first request: one interval used, a full bucket. */
    assert_int_equal(a.rr.reset_requests_ns, 1000000000LL);
    assert_int_equal(a.rr.remaining_requests, 4);
    assert_int_equal(a.rr.remaining_tokens, 600);
    assert_int_equal(a.rr.reset_tokens_ns, 0);
    assert_int_equal(a.rr.in_flight, 1);
    assert_int_equal(charge(f, 0, "key_t", 6000, -1), 1); /* ten minutes of debt */
    a = admit_as(f, "key_t", "l2", 30000, -1, -1, FY_SHL_DENIED);
    assert_int_equal(a.rr.denied_by, FY_RL_TOKENS);
    assert_true(a.rr.retry_after_ns > 8 * 60 * 1000000000LL);
    const char *ids[] = {"l1"};
    assert_int_equal(renew(f, "key_t", ids, 1, 30000, -1), 1);

    /* Expiry against Redis's seconds: long past, far ahead. */
    live_write(f, "key_t2", 0, 0, 0, 0, 1, 0);
    admit_as(f, "key_t2", "l1", 30000, -1, -1, FY_SHL_EXPIRED);
    live_write(f, "key_t2", 0, 0, 0, 0, (int64_t)1 << 40, 0);
    admit_as(f, "key_t2", "l1", 30000, -1, -1, FY_SHL_OK);
    /* Explicit µs with Redis's seconds, and the other way round. */
    admit_as(f, "key_t2", "l2", 30000, T0, -1, FY_SHL_OK);
    admit_as(f, "key_t2", "l3", 30000, -1, 2, FY_SHL_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_crosscheck, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crosscheck_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rounding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_replicas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leases, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admit_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_noscript, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_time, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
