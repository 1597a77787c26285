/* gateway/ratelimit: GCRA (steady rate, burst default and explicit, window bound, retry-after),
 * the token bucket with debt, concurrency slots, header formatting, limit
 * changes, and exactness with 50 threads on one limiter. Time is injected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S  1000000000LL
#define MS 1000000LL

static void init(fy_rl *rl, int64_t rpm, int64_t tpm, int64_t conc, int64_t burst)
{
    fy_rl_limits lim = {.rpm = rpm, .tpm = tpm, .concurrency = conc, .burst = burst};
    fy_rl_init(rl, &lim);
}

/* Admits and releases at once (a request that ends immediately). */
static int take(fy_rl *rl, int64_t now, fy_rl_result *res)
{
    int ok = fy_rl_acquire(rl, now, res);
    if (ok) {
        fy_rl_release(rl);
    }
    return ok;
}

static void test_size(void **state)
{
    (void)state;
    assert_true(sizeof(fy_rl) <= 64);
}

/* Requests arriving faster than the limit: after the burst, exactly one per
 * interval gets through, so every 60 s window holds exactly rpm admissions
 * (when 60 s is a whole number of intervals) and never more. */
static void test_gcra_steady(void **state)
{
    (void)state;
    static const int64_t rpms[] = {1, 6, 7, 60, 600, 6000};
    for (size_t c = 0; c < sizeof rpms / sizeof rpms[0]; c++) {
        int64_t rpm = rpms[c];
        int64_t t = (FY_RL_WINDOW_NS + rpm - 1) / rpm;
        /* Arrivals on a grid that divides T, so admissions are exactly T apart. */
        int64_t div = t % 8 == 0 ? 8 : t % 4 == 0 ? 4 : t % 2 == 0 ? 2 : 1;
        int64_t period = t / div;
        fy_rl rl;
        init(&rl, rpm, 0, 0, 0);
        int64_t horizon = 5 * FY_RL_WINDOW_NS;
        size_t cap = (size_t)(horizon / period) + 8, n = 0;
        int64_t *adm = malloc(cap * sizeof *adm);
        assert_non_null(adm);
        for (int64_t now = 0; now < horizon; now += period) {
            if (take(&rl, now, NULL)) {
                adm[n++] = now;
            }
        }
        /* Windows starting at each admission after the first minute. */
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            if (adm[i] < FY_RL_WINDOW_NS || adm[i] + FY_RL_WINDOW_NS > horizon) {
                continue;
            }
            while (j < n && adm[j] < adm[i] + FY_RL_WINDOW_NS) {
                j++;
            }
            int64_t count = (int64_t)(j - i);
            assert_int_equal(count, rpm);
        }
        free(adm);
    }
}

/* Any arrival pattern: in any window of length W at most B + ceil(W/T) - 1
 * admissions (the documented bound), checked on a random bursty pattern. */
static void test_gcra_window_bound(void **state)
{
    (void)state;
    static const struct {
        int64_t rpm, burst;
    } cases[] = {{60, 0}, {10, 0}, {600, 0}, {120, 1}, {30, 30}};
    uint64_t seed = 12345;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        fy_rl rl;
        init(&rl, cases[c].rpm, 0, 0, cases[c].burst);
        int64_t t = (FY_RL_WINDOW_NS + cases[c].rpm - 1) / cases[c].rpm;
        int64_t b = rl.tolerance_ns / t;
        int64_t adm[20000];
        size_t n = 0;
        int64_t now = 0;
        while (n < 2000 && now < 20 * FY_RL_WINDOW_NS) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            /* Mostly tight bursts, sometimes long pauses. */
            int64_t gap = (seed >> 33) % 8 == 0 ? (int64_t)((seed >> 20) % (20 * S))
                                                : (int64_t)((seed >> 20) % (50 * MS));
            now += gap;
            if (take(&rl, now, NULL)) {
                adm[n++] = now;
            }
        }
        static const int64_t windows[] = {1 * S, 10 * S, 60 * S, 300 * S};
        for (size_t w = 0; w < 4; w++) {
            int64_t bound = b + (windows[w] + t - 1) / t - 1;
            size_t j = 0;
            for (size_t i = 0; i < n; i++) {
                while (j < n && adm[j] < adm[i] + windows[w]) {
                    j++;
                }
                assert_true((int64_t)(j - i) <= bound);
            }
        }
    }
}

static void test_gcra_burst(void **state)
{
    (void)state;
    static const struct {
        int64_t rpm, burst, expect;
    } cases[] = {{1, 0, 1},     {5, 0, 1},  {6, 0, 1},  {7, 0, 2},    {20, 0, 4},   {60, 0, 10},
                 {600, 0, 100}, {60, 1, 1}, {60, 5, 5}, {60, 60, 60}, {60, 61, 60}, {60, 500, 60}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_int_equal(fy_rl_burst(cases[c].rpm, cases[c].burst), cases[c].expect);
        fy_rl rl;
        fy_rl_result r;
        init(&rl, cases[c].rpm, 0, 0, cases[c].burst);
        int64_t n = 0;
        while (take(&rl, 1000 * S, &r)) {
            n++;
            assert_int_equal(r.remaining_requests, cases[c].expect - n);
        }
        assert_int_equal(n, cases[c].expect);
        assert_int_equal(r.denied_by, FY_RL_REQUESTS);
    }

    /* rpm 60, burst 10: after the burst one per second; an idle 10 s
     * refills the whole burst. */
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 60, 0, 0, 0);
    for (int i = 0; i < 10; i++) {
        assert_true(take(&rl, 0, &r));
    }
    assert_int_equal(r.reset_requests_ns, 10 * S);
    assert_false(take(&rl, 0, &r));
    assert_int_equal(r.retry_after_ns, 1 * S);
    assert_false(take(&rl, 999 * MS, &r));
    assert_int_equal(r.retry_after_ns, 1 * MS);
    assert_true(take(&rl, 1 * S, &r));
    assert_int_equal(r.remaining_requests, 0);
    assert_false(take(&rl, 1 * S, &r));
    int admitted = 0;
    for (int64_t now = 12 * S; now < 12 * S + 100 * MS; now += MS) {
        admitted += take(&rl, now, NULL);
    }
    assert_int_equal(admitted, 10);
}

/* The burst setting: its default, its bounds and the user's message. */
static void test_burst_setting(void **state)
{
    (void)state;
    /* fy_rl_burst's values with rpm on are test_gcra_burst's table. */
    assert_int_equal(fy_rl_burst(0, 0), 0);
    assert_int_equal(fy_rl_burst(0, 5), 0);
    static const struct {
        int64_t rpm, burst;
        int ok;
    } chk[] = {{0, 0, 1},   {60, 0, 1}, {60, 1, 1}, {60, 60, 1}, {60, 61, 0},
               {60, -1, 0}, {0, 1, 0},  {1, 1, 1},  {1, 2, 0}};
    for (size_t i = 0; i < sizeof chk / sizeof chk[0]; i++) {
        char msg[200] = "";
        int rc = fy_rl_check_burst(chk[i].rpm, chk[i].burst, msg, sizeof msg);
        assert_int_equal(rc == 0, chk[i].ok);
        assert_int_equal(msg[0] == 0, chk[i].ok); /* a message exactly when refused */
    }
    char msg[200];
    assert_int_not_equal(fy_rl_check_burst(60, 61, msg, sizeof msg), 0);
    assert_non_null(strstr(msg, "1..rpm"));
    assert_non_null(strstr(msg, "= 10)"));
    assert_int_not_equal(fy_rl_check_burst(0, 5, msg, sizeof msg), 0);
    assert_non_null(strstr(msg, "needs a requests-per-minute limit"));
    assert_int_not_equal(fy_rl_check_burst(0, 5, NULL, 0), 0);
}

static void test_retry_after(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 2, 0, 0, 0); /* one per 30 s, burst 1 */
    assert_true(take(&rl, 0, &r));
    assert_int_equal(r.reset_requests_ns, 30 * S);
    static const struct {
        int64_t at, retry_ns, header_s;
    } cases[] = {
        {0, 30 * S, 30}, {1, 30 * S - 1, 30}, {10 * S + 1, 20 * S - 1, 20},
        {29 * S, S, 1},  {30 * S - 1, 1, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        assert_false(take(&rl, cases[c].at, &r));
        assert_int_equal(r.denied_by, FY_RL_REQUESTS);
        assert_int_equal(r.retry_after_ns, cases[c].retry_ns);
        assert_int_equal(fy_rl_retry_after_s(r.retry_after_ns), cases[c].header_s);
    }
    assert_true(take(&rl, 30 * S, &r));
}

static void test_tokens_debt(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 0, 1000, 0, 0); /* 1000 tokens per minute */
    assert_true(take(&rl, 0, &r));
    assert_int_equal(r.limit_tokens, 1000);
    assert_int_equal(r.remaining_tokens, 1000);
    assert_int_equal(r.reset_tokens_ns, 0);
    assert_int_equal(r.limit_requests, 0);

    fy_rl_charge(&rl, 0, 500);
    fy_rl_peek(&rl, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining_tokens, 500);
    assert_int_equal(r.reset_tokens_ns, 30 * S);

    /* Admitted while not negative, even with 1 token left; the charge
     * then puts the bucket 2,500 tokens in debt. */
    fy_rl_charge(&rl, 0, 499);
    assert_true(take(&rl, 0, &r));
    assert_int_equal(r.remaining_tokens, 1);
    fy_rl_charge(&rl, 0, 2501);
    assert_false(take(&rl, 0, &r));
    assert_int_equal(r.denied_by, FY_RL_TOKENS);
    assert_int_equal(r.remaining_tokens, 0);
    assert_int_equal(r.retry_after_ns, 150 * S); /* 2,500 tokens at 1,000/min */
    assert_int_equal(r.reset_tokens_ns, 210 * S);
    /* The debt carries over until it is repaid. */
    assert_false(take(&rl, 150 * S - 1, &r));
    assert_int_equal(r.retry_after_ns, 1);
    assert_true(take(&rl, 150 * S, &r));
    assert_int_equal(r.remaining_tokens, 0);
    /* Long after: full again, never more than full. */
    fy_rl_peek(&rl, 3600 * S, &r);
    assert_int_equal(r.remaining_tokens, 1000);
    /* Odd rates round the refill time up, never down. */
    init(&rl, 0, 7, 0, 0);
    fy_rl_charge(&rl, 0, 7);
    fy_rl_peek(&rl, 0, &r);
    assert_true(r.allowed); /* all 7 tokens used: exactly 0, not negative */
    fy_rl_charge(&rl, 0, 1);
    fy_rl_peek(&rl, 0, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_ns, (60 * S + 6) / 7); /* 8.571428572 s: rounded up */
    /* Zero or negative charges do nothing; huge ones saturate. */
    init(&rl, 0, 100, 0, 0);
    fy_rl_charge(&rl, 0, 0);
    fy_rl_charge(&rl, 0, -5);
    assert_true(take(&rl, 0, NULL));
    fy_rl_charge(&rl, 0, INT64_MAX);
    assert_false(take(&rl, 0, &r));
    assert_true(r.retry_after_ns > 0);
}

static void test_concurrency(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 0, 0, 2, 0);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(r.in_flight, 1);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    assert_false(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(r.denied_by, FY_RL_CONCURRENCY);
    assert_int_equal(r.retry_after_ns, 1 * S);
    assert_int_equal(r.in_flight, 2);
    fy_rl_release(&rl);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    fy_rl_release(&rl);
    fy_rl_release(&rl);
    fy_rl_release(&rl); /* one too many: stays at 0 */
    fy_rl_peek(&rl, 0, &r);
    assert_int_equal(r.in_flight, 0);
    /* A denied request takes no slot. */
    init(&rl, 60, 0, 1, 1);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    fy_rl_release(&rl);
    assert_false(fy_rl_acquire(&rl, 0, &r));
    fy_rl_peek(&rl, 0, &r);
    assert_int_equal(r.in_flight, 0);
}

/* Several limits deny: the longest wait is reported. */
static void test_longest_wait_wins(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 1, 60, 1, 0); /* 1 request/min, 60 tokens/min, 1 in flight */
    assert_true(fy_rl_acquire(&rl, 0, &r));
    assert_false(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(r.denied_by, FY_RL_REQUESTS); /* 60 s beats concurrency's 1 s */
    assert_int_equal(r.retry_after_ns, 60 * S);
    fy_rl_charge(&rl, 0, 600); /* 540 tokens of debt: 9 min */
    assert_false(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(r.denied_by, FY_RL_TOKENS);
    assert_int_equal(r.retry_after_ns, 540 * S);
    fy_rl_release(&rl);
    init(&rl, 0, 0, 1, 0);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    assert_false(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(r.denied_by, FY_RL_CONCURRENCY);
    fy_rl_release(&rl);
}

static void test_unlimited(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    fy_rl_init(&rl, NULL);
    for (int i = 0; i < 100000; i++) {
        assert_true(fy_rl_acquire(&rl, 0, &r));
    }
    fy_rl_header_buf hb;
    assert_int_equal(fy_rl_headers(&r, &hb), 0);
}

static void test_set_limits_keeps_history(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 60, 0, 0, 0);
    for (int i = 0; i < 10; i++) {
        assert_true(take(&rl, 0, NULL));
    }
    /* Raising the limit: the 10 requests count as 10 of the new burst of 20. */
    fy_rl_limits lim = {.rpm = 120};
    fy_rl_set_limits(&rl, &lim, 0);
    int n = 0;
    while (take(&rl, 0, NULL)) {
        n++;
    }
    assert_int_equal(n, 10);
    /* Cutting it forgives nothing: 20 requests at 6/min (burst 1) take 200 s
     * of the new history, so the next one waits 200 s. */
    lim.rpm = 6;
    fy_rl_set_limits(&rl, &lim, 0);
    assert_false(take(&rl, 0, &r));
    assert_int_equal(r.remaining_requests, 0);
    assert_int_equal(r.retry_after_ns, 200 * S);
    /* Token debt is kept as tokens owed: 120 tokens at 60/min is 2 min, at
     * 120/min 1 min (exactly 0 left: admitted). */
    fy_rl_limits tl = {.tpm = 60};
    fy_rl_set_limits(&rl, &tl, 0);
    fy_rl_charge(&rl, 0, 120);
    fy_rl_peek(&rl, 0, &r);
    assert_false(r.allowed);
    tl.tpm = 120;
    fy_rl_set_limits(&rl, &tl, 0);
    fy_rl_peek(&rl, 0, &r);
    assert_true(r.allowed);
    assert_int_equal(r.reset_tokens_ns, 60 * S);
    lim.rpm = 6;
    fy_rl_set_limits(&rl, &lim, 0); /* tpm off, rpm back on from a fresh history */
    assert_true(take(&rl, 0, &r));
    /* Turning it off admits everything. */
    lim.rpm = 0;
    fy_rl_set_limits(&rl, &lim, 0);
    assert_true(take(&rl, 0, &r));
}

/* A new burst at the same rpm keeps the requests used as a count. */
static void test_set_limits_burst(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    init(&rl, 60, 0, 0, 5); /* T = 1 s */
    int n = 0;
    while (take(&rl, 0, NULL)) {
        n++;
    }
    assert_int_equal(n, 5);
    /* Raised to 8: 3 more at once. */
    fy_rl_limits lim = {.rpm = 60, .burst = 8};
    fy_rl_set_limits(&rl, &lim, 0);
    fy_rl_peek(&rl, 0, &r);
    assert_int_equal(r.burst_requests, 8);
    assert_int_equal(r.remaining_requests, 3);
    for (n = 0; take(&rl, 0, NULL); n++) {
    }
    assert_int_equal(n, 3);
    /* Cut to 2 with 8 in use: refused until 7 have refilled (7 s). */
    lim.burst = 2;
    fy_rl_set_limits(&rl, &lim, 0);
    assert_false(take(&rl, 0, &r));
    assert_int_equal(r.retry_after_ns, 7 * S);
    assert_int_equal(r.burst_requests, 2);
    assert_false(take(&rl, 7 * S - 1, &r));
    assert_true(take(&rl, 7 * S, &r));
    assert_int_equal(r.remaining_requests, 0);
    /* Back to the default (0): ceil(60/6) = 10, the 8 s of history kept. */
    lim.burst = 0;
    fy_rl_set_limits(&rl, &lim, 7 * S);
    fy_rl_peek(&rl, 7 * S, &r);
    assert_int_equal(r.burst_requests, 10);
    assert_int_equal(r.remaining_requests, 8);
}

static void test_format_duration(void **state)
{
    (void)state;
    static const struct {
        int64_t ns;
        const char *text;
    } cases[] = {
        {-5, "0s"},
        {0, "0s"},
        {1, "1ms"},
        {MS, "1ms"},
        {MS + 1, "2ms"},
        {250 * MS, "250ms"},
        {999 * MS, "999ms"},
        {999 * MS + 1, "1s"},
        {S, "1s"},
        {1500 * MS, "1.5s"},
        {1250 * MS, "1.25s"},
        {8640 * MS, "8.64s"},
        {59 * S + 1, "59.001s"},
        {60 * S, "1m0s"},
        {360 * S, "6m0s"},
        {90500 * MS, "1m30.5s"},
        {3600 * S, "1h0m0s"},
        {3723 * S, "1h2m3s"},
        {100 * 3600 * S, "100h0m0s"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char buf[32];
        size_t n = fy_rl_format_duration(cases[i].ns, buf, sizeof buf);
        assert_string_equal(buf, cases[i].text);
        assert_int_equal(n, strlen(cases[i].text));
    }
    char small[4];
    assert_int_equal(fy_rl_format_duration(6 * 60 * S, small, sizeof small), 4);
    assert_string_equal(small, "6m0");
}

static const char *hval(const fy_http_header *h, size_t n, const char *name)
{
    const char *v = fy_http_header_find(h, n, name);
    return v ? v : "(absent)";
}

static void test_headers(void **state)
{
    (void)state;
    fy_rl rl;
    fy_rl_result r;
    fy_rl_header_buf hb;
    init(&rl, 60, 1000, 0, 0);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    fy_rl_release(&rl);
    size_t n = fy_rl_headers(&r, &hb);
    assert_int_equal(n, 7);
    assert_string_equal(hval(hb.h, n, "ratelimit-policy"), "\"requests\";q=60;w=60;burst=10");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-limit-requests"), "60");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-remaining-requests"), "9");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-reset-requests"), "1s");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-limit-tokens"), "1000");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-remaining-tokens"), "1000");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-reset-tokens"), "0s");
    assert_string_equal(hval(hb.h, n, "retry-after"), "(absent)");
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(hb.h[i].name_len, strlen(hb.h[i].name));
        assert_int_equal(hb.h[i].value_len, strlen(hb.h[i].value));
    }

    fy_rl_charge(&rl, 0, 1360); /* 360 tokens of debt: 6 minutes */
    assert_false(fy_rl_acquire(&rl, 0, &r));
    n = fy_rl_headers(&r, &hb);
    assert_int_equal(n, 9);
    assert_string_equal(hval(hb.h, n, "x-ratelimit-remaining-tokens"), "0");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-reset-tokens"), "1m21.6s");
    assert_string_equal(hval(hb.h, n, "retry-after"), "22");
    assert_string_equal(hval(hb.h, n, "retry-after-ms"), "21600");

    /* Only the groups whose limit is set. */
    init(&rl, 0, 0, 3, 0);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    assert_int_equal(fy_rl_headers(&r, &hb), 0);
    init(&rl, 30, 0, 0, 0);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    n = fy_rl_headers(&r, &hb);
    assert_int_equal(n, 4);
    assert_string_equal(hval(hb.h, n, "x-ratelimit-reset-requests"), "2s");
    assert_string_equal(hval(hb.h, n, "ratelimit-policy"), "\"requests\";q=30;w=60;burst=5");
    /* An explicit burst, and the widest values fit the buffer. */
    init(&rl, 60, 0, 0, 5);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    n = fy_rl_headers(&r, &hb);
    assert_string_equal(hval(hb.h, n, "ratelimit-policy"), "\"requests\";q=60;w=60;burst=5");
    assert_string_equal(hval(hb.h, n, "x-ratelimit-remaining-requests"), "4");
    init(&rl, (int64_t)1 << 40, 0, 0, (int64_t)1 << 40);
    assert_true(fy_rl_acquire(&rl, 0, &r));
    n = fy_rl_headers(&r, &hb);
    assert_string_equal(hval(hb.h, n, "ratelimit-policy"),
                        "\"requests\";q=1099511627776;w=60;burst=1099511627776");

    assert_string_equal(fy_rl_kind_code(FY_RL_TOKENS), "rate_limit_exceeded");
    assert_non_null(strstr(fy_rl_kind_message(FY_RL_REQUESTS), "requests per minute"));
    assert_non_null(strstr(fy_rl_kind_message(FY_RL_TOKENS), "tokens per minute"));
    assert_string_equal(fy_rl_kind_name(FY_RL_CONCURRENCY), "concurrency");
}

/* --- 50 threads on one limiter ------------------------------------------------- */

#define N_THREADS 50

typedef struct {
    fy_rl *rl;
    _Atomic int64_t *clock; /* shared fake time, or NULL for the real clock */
    atomic_int *go;
    atomic_int *stop;
    int attempts; /* 0: until *stop */
    int hold;     /* keep the slot while checking the in-flight maximum */
    atomic_int *inflight, *max_inflight;
    int64_t admitted;
} worker;

static void *work(void *arg)
{
    worker *w = arg;
    while (!atomic_load(w->go)) {
    }
    for (int i = 0; w->attempts ? i < w->attempts : !atomic_load(w->stop); i++) {
        int64_t now = w->clock ? atomic_load(w->clock) : fy_rl_now();
        if (fy_rl_acquire(w->rl, now, NULL)) {
            w->admitted++;
            if (w->hold) {
                int cur = atomic_fetch_add(w->inflight, 1) + 1;
                int m = atomic_load(w->max_inflight);
                while (cur > m && !atomic_compare_exchange_weak(w->max_inflight, &m, cur)) {
                }
                atomic_fetch_sub(w->inflight, 1);
            }
            fy_rl_release(w->rl);
        }
    }
    return NULL;
}

static int64_t run_workers(worker *proto, int64_t *elapsed)
{
    pthread_t th[N_THREADS];
    worker w[N_THREADS];
    atomic_int go = 0, stop = 0;
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = *proto;
        w[i].go = &go;
        w[i].stop = &stop;
        w[i].admitted = 0;
        assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
    }
    int64_t t0 = fy_rl_now();
    atomic_store(&go, 1);
    if (!proto->attempts) {
        struct timespec ts = {0, 300 * MS};
        nanosleep(&ts, NULL);
        atomic_store(&stop, 1);
    }
    int64_t total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += w[i].admitted;
    }
    if (elapsed) {
        *elapsed = fy_rl_now() - t0;
    }
    return total;
}

static void test_threads_exact(void **state)
{
    (void)state;
    fy_rl rl;
    _Atomic int64_t clock = 5 * S;
    atomic_int inflight = 0, max_inflight = 0;

    /* Frozen time: exactly the burst gets through, whatever the race. */
    init(&rl, 600, 0, 0, 0); /* burst 100 */
    worker w = {.rl = &rl, .clock = &clock, .attempts = 2000};
    assert_int_equal(run_workers(&w, NULL), 100);
    /* An explicit burst: 50 threads x 2000 attempts at once, exactly 5 in. */
    init(&rl, 60, 0, 0, 5);
    assert_int_equal(run_workers(&w, NULL), 5);

    /* Real time: no more than the burst plus one per interval elapsed. */
    init(&rl, 6000, 0, 0, 0); /* T = 10 ms, burst 1000 */
    w = (worker){.rl = &rl};
    int64_t elapsed;
    int64_t total = run_workers(&w, &elapsed);
    int64_t bound = 1000 + elapsed / (10 * MS) + 1;
    fprintf(stderr, "# 50 threads, 6000 rpm: %lld admitted in %.3f s (bound %lld)\n",
            (long long)total, elapsed / 1e9, (long long)bound);
    assert_true(total <= bound);
    assert_true(total >= 1000);

    /* Concurrency: never more than 5 in flight at once. */
    init(&rl, 0, 0, 5, 0);
    w = (worker){.rl = &rl,
                 .clock = &clock,
                 .attempts = 2000,
                 .hold = 1,
                 .inflight = &inflight,
                 .max_inflight = &max_inflight};
    assert_true(run_workers(&w, NULL) > 0);
    assert_true(atomic_load(&max_inflight) <= 5);
    fy_rl_result r;
    fy_rl_peek(&rl, 0, &r);
    assert_int_equal(r.in_flight, 0);

    /* Tokens: 50 threads charging at once lose no charge. */
    init(&rl, 0, 60, 0, 0);
    w = (worker){.rl = &rl, .clock = &clock, .attempts = 1};
    run_workers(&w, NULL);
    for (int i = 0; i < 6000; i++) {
        fy_rl_charge(&rl, 5 * S, 1);
    }
    fy_rl_peek(&rl, 5 * S, &r);
    assert_int_equal(r.reset_tokens_ns, 6000 * S);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_gcra_steady),
        cmocka_unit_test(test_gcra_window_bound),
        cmocka_unit_test(test_gcra_burst),
        cmocka_unit_test(test_burst_setting),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_tokens_debt),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_longest_wait_wins),
        cmocka_unit_test(test_unlimited),
        cmocka_unit_test(test_set_limits_keeps_history),
        cmocka_unit_test(test_set_limits_burst),
        cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_threads_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
