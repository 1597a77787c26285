/* ratelimit.h: per-key rate limits: requests per minute (GCRA), tokens per
 * minute (a token bucket charged after the response) and requests in flight.
 *
 * Integration (gateway/px.c), one limiter per key, reached through
 * fy_key_rl() (gateway/keys.h):
 *   1. after authentication, before routing:
 *        fy_rl_result rr;
 *        if (!fy_rl_acquire(fy_key_rl(k), fy_rl_now(), &rr)) {
 *            fy_rl_header_buf hb;
 *            size_t n = fy_rl_headers(&rr, &hb);
 *            ... 429 with hb.h[0..n), code fy_rl_kind_code(rr.denied_by),
 *            message fy_rl_kind_message(rr.denied_by);
 *            fy_metrics_gw_ratelimited(&gw->metrics,
 *                                      fy_rl_kind_name(rr.denied_by)) ...
 *        }
 *   2. on the response head (fy_http_respond / fy_http_res_start, so the
 *      headers precede the first byte of a streamed body): append the
 *      fy_rl_headers(&rr, &hb) array from step 1;
 *   3. when the runner's usage trailer arrives:
 *        fy_rl_charge(fy_key_rl(k), fy_rl_now(), prompt + completion);
 *   4. exactly once when the request ends (finished, failed or aborted):
 *        fy_rl_release(fy_key_rl(k));
 *
 * Semantics.
 *   Requests: GCRA with emission interval T = ceil(60 s / rpm) and a burst
 *   of B requests: the key's own burst when set (1..rpm, fy_rl_check_burst),
 *   else ceil(rpm / 6), ten seconds' worth, at least 1 (fy_rl_burst). B is
 *   how many requests a rested key may send at once; after that it gets one
 *   every T, and B*T of rest fills the burst again. The cap at rpm keeps
 *   "per minute" meaningful: a burst larger than a minute's worth would let
 *   a key spend more than its rpm in one go. A request is admitted when it
 *   fits (the "theoretical arrival time" stays within B*T of now); a denied
 *   request costs nothing. Under
 *   a steady arrival faster than the limit, admissions settle to one per T
 *   (exactly T apart when arrivals fall on T's grid, and then every 60 s
 *   window holds exactly rpm). Over any interval of length W at most
 *   B + ceil(W / T) - 1 requests are admitted, whatever the arrivals: the
 *   burst plus the rate. Rounding T up means the rate never exceeds rpm.
 *   Tokens: a bucket of tpm tokens refilled at tpm per minute. A request is
 *   admitted while the bucket is not negative (its cost is unknown until the
 *   runner reports usage); fy_rl_charge then takes the real count, which may
 *   leave the bucket negative: that debt carries over and blocks the key
 *   until the refill has paid it back.
 *   Concurrency: at most `concurrency` requests between acquire and release.
 *   A limit of 0 turns that check off (and its headers are not sent).
 *
 * Header values (OpenAI's): x-ratelimit-limit-requests = rpm,
 * x-ratelimit-remaining-requests = requests admissible right now (after this
 * one, 0..B-1): it counts against the burst, not against rpm, so a rested
 * key with rpm 60 and burst 5 reads limit 60, remaining 4 after its first
 * request. x-ratelimit-reset-requests = time until the limiter is back to
 * its initial state (a full burst), formatted like Go durations ("1s",
 * "6m0s", "250ms"; rounded up to the millisecond so it never understates).
 * OpenAI sends nothing for the burst; ferry adds it the way the IETF
 * RateLimit draft's policy field carries extra parameters:
 * ratelimit-policy: "requests";q=RPM;w=60;burst=B, on every response that has the requests group. The -tokens
 * variants likewise (remaining = tokens left in the bucket, never negative;
 * reset = time until the bucket is full). The token values describe the
 * bucket at admission, before this request is charged. Denials add
 * Retry-After (whole seconds, rounded up, >= 1) and retry-after-ms (which
 * the OpenAI SDKs prefer).
 *
 * State lives in memory only: a gateway restart gives every key an empty
 * history (a full burst, a full token bucket). Limits shared by several
 * gateway replicas need the shared store (a later milestone); per-replica
 * limiters would multiply the limit by the number of replicas.
 *
 * Time: every call takes NOW, a monotonic clock in nanoseconds
 * (fy_rl_now(), or any other source in tests). Calls on one limiter must
 * use the same clock.
 *
 * Threads: every function on a limiter is atomic with respect to the others
 * (a tiny spinlock per limiter: the critical sections are a few arithmetic
 * operations and never block), so a limiter can be shared by any number of
 * threads and the limits stay exact. The whole state is sizeof(fy_rl)
 * bytes (64), with no allocation. */
#ifndef FY_GATEWAY_RATELIMIT_H
#define FY_GATEWAY_RATELIMIT_H

#include "common/http.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define FY_RL_WINDOW_NS     60000000000LL /* limits are per minute */
#define FY_RL_BURST_DIVISOR 6             /* default burst: rpm / 6, ten seconds' worth */

typedef struct {
    int64_t rpm;         /* requests per minute; 0 = unlimited */
    int64_t tpm;         /* tokens per minute; 0 = unlimited */
    int64_t concurrency; /* requests in flight; 0 = unlimited */
    int64_t burst;       /* requests admissible at once; 0 = ceil(rpm / 6) */
} fy_rl_limits;

typedef enum {
    FY_RL_NONE = 0,    /* admitted */
    FY_RL_REQUESTS,    /* requests per minute */
    FY_RL_TOKENS,      /* tokens per minute (the bucket is in debt) */
    FY_RL_CONCURRENCY, /* too many requests in flight */
} fy_rl_kind;

typedef struct {
    int allowed;
    fy_rl_kind denied_by;   /* FY_RL_NONE when allowed */
    int64_t retry_after_ns; /* when denied: time until that limit would admit */
    /* Header values; a limit of 0 means "off" and its headers are omitted. */
    int64_t limit_requests, remaining_requests, reset_requests_ns, burst_requests;
    int64_t limit_tokens, remaining_tokens, reset_tokens_ns;
    int64_t limit_concurrency, in_flight;
} fy_rl_result;

/* One key's limiter. Plain struct so it can be embedded (gateway/keys.c);
 * touch it only through the functions below. */
typedef struct {
    atomic_flag lock;
    int32_t in_flight;    /* requests between acquire and release */
    int64_t interval_ns;  /* GCRA emission interval T; 0 when rpm is off */
    int64_t tolerance_ns; /* B * T */
    int64_t tat;          /* GCRA theoretical arrival time */
    int64_t tokens_full;  /* time at which the token bucket is full again */
    int64_t rpm, tpm;
    int64_t concurrency; /* clamped to INT32_MAX */
} fy_rl;

/* Monotonic time in nanoseconds (CLOCK_MONOTONIC). */
int64_t fy_rl_now(void);

/* Initialises RL with LIM (NULL: no limits): empty history, a full bucket. */
void fy_rl_init(fy_rl *rl, const fy_rl_limits *lim);

/* The burst B of a requests limit of RPM with the key's BURST setting:
 * BURST when > 0 (capped at RPM), else ceil(RPM / FY_RL_BURST_DIVISOR);
 * 0 when RPM is 0 (off). */
int64_t fy_rl_burst(int64_t rpm, int64_t burst);

/* Whether BURST is a valid setting next to RPM: 0 (the default) always; else
 * 1..RPM with RPM on. Returns 0, or FY_EINVAL with a sentence for the user
 * in MSG (MSGLEN bytes; MSG may be NULL) naming the allowed range. */
int fy_rl_check_burst(int64_t rpm, int64_t burst, char *msg, size_t msglen);

/* Changes the limits of a live limiter at NOW, keeping its history as
 * counts: the requests admitted lately and the tokens owed count against
 * the new limits as the same numbers (so raising rpm from 60 to 120 right
 * after a burst of 10 leaves 10 of the new burst of 20; cutting a limit
 * forgives nothing). A new burst at the same rpm likewise: after 5 requests
 * at once, raising the burst from 5 to 8 admits 3 more at once, and cutting
 * it to 2 refuses until the refill has brought the 5 below 2. Requests in
 * flight stay in flight. A limit that was off starts from an empty
 * history. */
void fy_rl_set_limits(fy_rl *rl, const fy_rl_limits *lim, int64_t now);

/* Decides whether a request may start at NOW. When it may, records it
 * (GCRA step, one concurrency slot taken) and returns 1: the caller must
 * call fy_rl_release exactly once later. When it may not, changes nothing
 * and returns 0. Either way fills RES (may be NULL). When several limits
 * deny, RES names the one with the longest wait (ties: requests, tokens,
 * concurrency); a concurrency denial has no known end and reports 1 s. */
int fy_rl_acquire(fy_rl *rl, int64_t now, fy_rl_result *res);

/* Gives back the concurrency slot taken by a successful fy_rl_acquire. */
void fy_rl_release(fy_rl *rl);

/* Takes TOKENS (>= 0; the runner's prompt + completion usage) from the
 * token bucket at NOW; the bucket may go negative (debt). No-op when tpm is
 * off. */
void fy_rl_charge(fy_rl *rl, int64_t now, int64_t tokens);

/* Fills RES with the current values without admitting anything
 * (allowed = 1 when a request would be admitted now). */
void fy_rl_peek(fy_rl *rl, int64_t now, fy_rl_result *res);

/* --- headers ----------------------------------------------------------------- */

#define FY_RL_MAX_HEADERS 9
#define FY_RL_VALUE_MAX   64

/* Storage for the headers of one response: H points into TEXT. */
typedef struct {
    fy_http_header h[FY_RL_MAX_HEADERS];
    char text[FY_RL_MAX_HEADERS][FY_RL_VALUE_MAX];
} fy_rl_header_buf;

/* Fills BUF with the x-ratelimit-* headers for RES (the requests group, with
 * ratelimit-policy, when limit_requests > 0; the tokens group when
 * limit_tokens > 0) and, when RES
 * is a denial, Retry-After and retry-after-ms. Returns the number of headers
 * in BUF->h (0..FY_RL_MAX_HEADERS). Header names are lowercase. */
size_t fy_rl_headers(const fy_rl_result *res, fy_rl_header_buf *buf);

/* Writes NS as an OpenAI-style duration ("0s", "250ms", "1s", "1.5s",
 * "6m0s", "1h2m3s"), rounded up to the millisecond. Returns the length
 * (snprintf-like: truncated when OUTLEN is too small). */
size_t fy_rl_format_duration(int64_t ns, char *out, size_t outlen);

/* Whole seconds for Retry-After: NS rounded up, at least 1. */
int64_t fy_rl_retry_after_s(int64_t ns);

/* For the 429 body: the error code ("rate_limit_exceeded" for every kind,
 * as OpenAI does) and a message naming the limit, e.g. "Rate limit reached
 * for requests per minute". Never NULL. */
const char *fy_rl_kind_code(fy_rl_kind kind);
const char *fy_rl_kind_message(fy_rl_kind kind);
/* Short label for metrics and logs: "requests", "tokens", "concurrency". */
const char *fy_rl_kind_name(fy_rl_kind kind);

#endif
