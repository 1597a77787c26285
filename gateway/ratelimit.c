#include "gateway/ratelimit.h"

#include "common/err.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define NS_PER_S  1000000000LL
#define NS_PER_MS 1000000LL

int64_t fy_rl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* The critical sections are a handful of instructions, so spinning beats a
 * mutex (and keeps the limiter at 64 bytes); yielding after a few spins
 * keeps a preempted holder from being starved when threads outnumber CPUs. */
static void rl_lock(fy_rl *rl)
{
    int spins = 0;
    while (atomic_flag_test_and_set_explicit(&rl->lock, memory_order_acquire)) {
        if (++spins >= 64) {
            sched_yield();
            spins = 0;
        }
    }
}

static void rl_unlock(fy_rl *rl)
{
    atomic_flag_clear_explicit(&rl->lock, memory_order_release);
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* A + B, saturating at INT64_MAX (both non-negative). */
static int64_t add_sat(int64_t a, int64_t b)
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

int64_t fy_rl_burst(int64_t rpm, int64_t burst)
{
    if (rpm <= 0) {
        return 0;
    }
    int64_t b = burst > 0 ? burst : rpm / FY_RL_BURST_DIVISOR + (rpm % FY_RL_BURST_DIVISOR != 0);
    return b > rpm ? rpm : b;
}

int fy_rl_check_burst(int64_t rpm, int64_t burst, char *msg, size_t msglen)
{
    if (burst == 0 || (rpm > 0 && burst >= 1 && burst <= rpm)) {
        return 0;
    }
    if (msg && msglen && rpm > 0) {
        snprintf(msg, msglen,
                 "burst %lld does not fit rpm %lld: a burst is 1..rpm, at most a minute's "
                 "worth (0: the default, ceil(rpm/6) = %lld)",
                 (long long)burst, (long long)rpm, (long long)fy_rl_burst(rpm, 0));
    } else if (msg && msglen) {
        snprintf(msg, msglen,
                 "burst %lld needs a requests-per-minute limit: set rpm with it (or burst 0)",
                 (long long)burst);
    }
    return FY_EINVAL;
}

static void apply_limits(fy_rl *rl, const fy_rl_limits *lim)
{
    fy_rl_limits none = {0};
    if (!lim) {
        lim = &none;
    }
    rl->rpm = lim->rpm > 0 ? lim->rpm : 0;
    rl->tpm = lim->tpm > 0 ? lim->tpm : 0;
    rl->concurrency = lim->concurrency <= 0          ? 0
                      : lim->concurrency > INT32_MAX ? INT32_MAX
                                                     : lim->concurrency;
    if (rl->rpm) {
        /* Rounded up: the admitted rate never exceeds rpm. */
        int64_t t = (FY_RL_WINDOW_NS + rl->rpm - 1) / rl->rpm;
        int64_t b = fy_rl_burst(rl->rpm, lim->burst);
        rl->interval_ns = t;
        rl->tolerance_ns = b > INT64_MAX / t ? INT64_MAX : b * t;
    } else {
        rl->interval_ns = rl->tolerance_ns = 0;
    }
}

/* (END - NOW) * NUM / DEN, added back to NOW: the same amount of use
 * expressed in the new limit's time. */
static int64_t rescale(int64_t end, int64_t now, int64_t num, int64_t den)
{
    if (end <= now || den <= 0) {
        return end;
    }
    unsigned __int128 d = (unsigned __int128)(uint64_t)(end - now) * (uint64_t)num / (uint64_t)den;
    return add_sat(now, d > (unsigned __int128)(INT64_MAX / 4) ? INT64_MAX / 4 : (int64_t)d);
}

void fy_rl_init(fy_rl *rl, const fy_rl_limits *lim)
{
    memset(rl, 0, sizeof *rl);
    atomic_flag_clear(&rl->lock);
    apply_limits(rl, lim);
}

void fy_rl_set_limits(fy_rl *rl, const fy_rl_limits *lim, int64_t now)
{
    rl_lock(rl);
    int64_t old_t = rl->interval_ns, old_tpm = rl->tpm;
    apply_limits(rl, lim);
    /* Keep the recent use as a count: requests admitted (and tokens owed)
     * lately count against the new limits as the same number of requests
     * (tokens), so raising a limit gives room at once and cutting it does
     * not forgive anything. A limit that was off starts fresh. */
    if (rl->rpm) {
        rl->tat = old_t ? rescale(rl->tat, now, rl->interval_ns, old_t) : 0;
    }
    if (rl->tpm) {
        rl->tokens_full = old_tpm ? rescale(rl->tokens_full, now, old_tpm, rl->tpm) : 0;
    }
    rl_unlock(rl);
}

/* Time the token bucket needs to refill TOKENS: tokens * 60 s / tpm, rounded
 * up, saturating (a huge report must not wrap the clock). */
static int64_t token_time(const fy_rl *rl, int64_t tokens)
{
    unsigned __int128 t = (unsigned __int128)tokens * FY_RL_WINDOW_NS;
    t = (t + (unsigned __int128)rl->tpm - 1) / (unsigned __int128)rl->tpm;
    return t > (unsigned __int128)(INT64_MAX / 4) ? INT64_MAX / 4 : (int64_t)t;
}

/* Fills RES from the state at NOW; when ADMIT, also performs the admission
 * if every limit allows it. Called with the lock held. Returns RES->allowed. */
static int evaluate(fy_rl *rl, int64_t now, int admit, fy_rl_result *res)
{
    memset(res, 0, sizeof *res);
    int64_t wait_req = 0, wait_tok = 0, wait_conc = 0;
    int deny_req = 0, deny_tok = 0, deny_conc = 0;
    int64_t tat = max64(rl->tat, now);

    if (rl->rpm) {
        int64_t next = add_sat(tat, rl->interval_ns) - now;
        if (next > rl->tolerance_ns) {
            deny_req = 1;
            wait_req = next - rl->tolerance_ns;
        }
    }
    int64_t full = max64(rl->tokens_full, now);
    if (rl->tpm) {
        int64_t debt = full - now - FY_RL_WINDOW_NS; /* > 0: the bucket is negative */
        if (debt > 0) {
            deny_tok = 1;
            wait_tok = debt;
        }
    }
    if (rl->concurrency && rl->in_flight >= rl->concurrency) {
        deny_conc = 1;
        wait_conc = NS_PER_S;
    }

    res->allowed = !(deny_req || deny_tok || deny_conc);
    if (res->allowed && admit) {
        if (rl->rpm) {
            tat = add_sat(tat, rl->interval_ns);
            rl->tat = tat;
        }
        rl->in_flight++;
    }
    if (!res->allowed) {
        /* The longest wait, ties broken in the order requests, tokens,
         * concurrency. */
        if (deny_req) {
            res->denied_by = FY_RL_REQUESTS;
            res->retry_after_ns = wait_req;
        }
        if (deny_tok && (!res->denied_by || wait_tok > res->retry_after_ns)) {
            res->denied_by = FY_RL_TOKENS;
            res->retry_after_ns = wait_tok;
        }
        if (deny_conc && (!res->denied_by || wait_conc > res->retry_after_ns)) {
            res->denied_by = FY_RL_CONCURRENCY;
            res->retry_after_ns = wait_conc;
        }
    }
    if (rl->rpm) {
        int64_t used = tat - now; /* 0..tolerance (more only after a limit cut) */
        int64_t left = rl->tolerance_ns - used;
        res->limit_requests = rl->rpm;
        res->remaining_requests = left > 0 ? left / rl->interval_ns : 0;
        res->reset_requests_ns = used;
        res->burst_requests = rl->tolerance_ns / rl->interval_ns;
    }
    if (rl->tpm) {
        int64_t owed = full - now; /* time to full: 0 = full, > window = debt */
        res->limit_tokens = rl->tpm;
        if (owed >= FY_RL_WINDOW_NS) {
            res->remaining_tokens = 0;
        } else {
            /* floor(tpm * (window - owed) / window) */
            unsigned __int128 r = (unsigned __int128)rl->tpm * (uint64_t)(FY_RL_WINDOW_NS - owed);
            res->remaining_tokens = (int64_t)(r / FY_RL_WINDOW_NS);
        }
        res->reset_tokens_ns = owed;
    }
    res->limit_concurrency = rl->concurrency;
    res->in_flight = rl->in_flight;
    return res->allowed;
}

int fy_rl_acquire(fy_rl *rl, int64_t now, fy_rl_result *res)
{
    fy_rl_result tmp;
    rl_lock(rl);
    int ok = evaluate(rl, now, 1, res ? res : &tmp);
    rl_unlock(rl);
    return ok;
}

void fy_rl_peek(fy_rl *rl, int64_t now, fy_rl_result *res)
{
    rl_lock(rl);
    evaluate(rl, now, 0, res);
    rl_unlock(rl);
}

void fy_rl_release(fy_rl *rl)
{
    rl_lock(rl);
    if (rl->in_flight > 0) {
        rl->in_flight--;
    }
    rl_unlock(rl);
}

void fy_rl_charge(fy_rl *rl, int64_t now, int64_t tokens)
{
    if (tokens <= 0) {
        return;
    }
    rl_lock(rl);
    if (rl->tpm) {
        int64_t full = max64(rl->tokens_full, now);
        /* Debt is capped a long way out (a year at most matters in practice)
         * only so the clock arithmetic can never overflow. */
        rl->tokens_full = add_sat(full, token_time(rl, tokens));
        if (rl->tokens_full > INT64_MAX / 2) {
            rl->tokens_full = INT64_MAX / 2;
        }
    }
    rl_unlock(rl);
}

/* --- formatting ------------------------------------------------------------------ */

/* Decimal text of V (>= 0) into OUT; returns the length. The headers go on
 * every response, so this avoids snprintf's cost. */
static size_t put_int(char *out, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    for (size_t i = 0; i < n; i++) {
        out[i] = tmp[n - 1 - i];
    }
    out[n] = 0;
    return n;
}

/* Appends S (LEN bytes) at *O in OUT (OUTLEN bytes), truncating like
 * snprintf; *O counts what would have been written. */
static void emit(char *out, size_t outlen, size_t *o, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++, (*o)++) {
        if (*o + 1 < outlen) {
            out[*o] = s[i];
        }
    }
}

static void emit_int(char *out, size_t outlen, size_t *o, int64_t v)
{
    char t[24];
    emit(out, outlen, o, t, put_int(t, v));
}

size_t fy_rl_format_duration(int64_t ns, char *out, size_t outlen)
{
    size_t o = 0;
    if (ns <= 0) {
        emit(out, outlen, &o, "0s", 2);
    } else {
        int64_t ms = ns / NS_PER_MS + (ns % NS_PER_MS ? 1 : 0);
        if (ms < 1000) {
            emit_int(out, outlen, &o, ms);
            emit(out, outlen, &o, "ms", 2);
        } else {
            int64_t h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
            if (h) {
                emit_int(out, outlen, &o, h);
                emit(out, outlen, &o, "h", 1);
            }
            if (h || m) {
                emit_int(out, outlen, &o, m);
                emit(out, outlen, &o, "m", 1);
            }
            emit_int(out, outlen, &o, s);
            if (frac) {
                /* "1.500" -> "1.5", as Go prints it */
                char f[4] = {(char)('0' + frac / 100), (char)('0' + frac / 10 % 10),
                             (char)('0' + frac % 10), 0};
                size_t fl = f[2] != '0' ? 3 : f[1] != '0' ? 2 : 1;
                emit(out, outlen, &o, ".", 1);
                emit(out, outlen, &o, f, fl);
            }
            emit(out, outlen, &o, "s", 1);
        }
    }
    if (outlen) {
        out[o < outlen ? o : outlen - 1] = 0;
    }
    return o;
}

int64_t fy_rl_retry_after_s(int64_t ns)
{
    int64_t s = ns / NS_PER_S + (ns % NS_PER_S > 0 ? 1 : 0);
    return s < 1 ? 1 : s;
}

static void put(fy_rl_header_buf *buf, size_t *n, const char *name, size_t name_len, int64_t v)
{
    size_t len = put_int(buf->text[*n], v);
    buf->h[*n] = (fy_http_header){name, buf->text[*n], name_len, len};
    (*n)++;
}

static void put_duration(fy_rl_header_buf *buf, size_t *n, const char *name, size_t name_len,
                         int64_t ns)
{
    size_t len = fy_rl_format_duration(ns, buf->text[*n], FY_RL_VALUE_MAX);
    buf->h[*n] = (fy_http_header){name, buf->text[*n], name_len, len};
    (*n)++;
}

#define NAME(s) s, sizeof(s) - 1

/* ratelimit-policy: "requests";q=RPM;w=60;burst=B (the IETF RateLimit
 * draft's quota policy item with a burst parameter). */
static void put_policy(fy_rl_header_buf *buf, size_t *n, int64_t rpm, int64_t burst)
{
    char *t = buf->text[*n];
    size_t o = 0;
    emit(t, FY_RL_VALUE_MAX, &o, NAME("\"requests\";q="));
    emit_int(t, FY_RL_VALUE_MAX, &o, rpm);
    emit(t, FY_RL_VALUE_MAX, &o, NAME(";w="));
    emit_int(t, FY_RL_VALUE_MAX, &o, FY_RL_WINDOW_NS / NS_PER_S);
    emit(t, FY_RL_VALUE_MAX, &o, NAME(";burst="));
    emit_int(t, FY_RL_VALUE_MAX, &o, burst);
    t[o < FY_RL_VALUE_MAX ? o : FY_RL_VALUE_MAX - 1] = 0;
    buf->h[*n] = (fy_http_header){"ratelimit-policy", t, sizeof "ratelimit-policy" - 1, strlen(t)};
    (*n)++;
}

size_t fy_rl_headers(const fy_rl_result *res, fy_rl_header_buf *buf)
{
    size_t n = 0;
    if (res->limit_requests > 0) {
        put(buf, &n, NAME("x-ratelimit-limit-requests"), res->limit_requests);
        put(buf, &n, NAME("x-ratelimit-remaining-requests"), res->remaining_requests);
        put_duration(buf, &n, NAME("x-ratelimit-reset-requests"), res->reset_requests_ns);
        put_policy(buf, &n, res->limit_requests, res->burst_requests);
    }
    if (res->limit_tokens > 0) {
        put(buf, &n, NAME("x-ratelimit-limit-tokens"), res->limit_tokens);
        put(buf, &n, NAME("x-ratelimit-remaining-tokens"), res->remaining_tokens);
        put_duration(buf, &n, NAME("x-ratelimit-reset-tokens"), res->reset_tokens_ns);
    }
    if (!res->allowed) {
        put(buf, &n, NAME("retry-after"), fy_rl_retry_after_s(res->retry_after_ns));
        int64_t ms = res->retry_after_ns / NS_PER_MS + (res->retry_after_ns % NS_PER_MS ? 1 : 0);
        put(buf, &n, NAME("retry-after-ms"), ms < 1 ? 1 : ms);
    }
    return n;
}

const char *fy_rl_kind_code(fy_rl_kind kind)
{
    (void)kind;
    return "rate_limit_exceeded";
}

const char *fy_rl_kind_message(fy_rl_kind kind)
{
    switch (kind) {
    case FY_RL_REQUESTS:
        return "Rate limit reached for requests per minute on this API key; retry after the "
               "time in the Retry-After header.";
    case FY_RL_TOKENS:
        return "Rate limit reached for tokens per minute on this API key; retry after the "
               "time in the Retry-After header.";
    case FY_RL_CONCURRENCY:
        return "Too many concurrent requests on this API key; retry when one of them has "
               "finished.";
    default:
        return "Rate limit reached.";
    }
}

const char *fy_rl_kind_name(fy_rl_kind kind)
{
    switch (kind) {
    case FY_RL_REQUESTS:
        return "requests";
    case FY_RL_TOKENS:
        return "tokens";
    case FY_RL_CONCURRENCY:
        return "concurrency";
    default:
        return "none";
    }
}
