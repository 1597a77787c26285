/* shared_limits.h: per-key limits shared by several gateway replicas, exact
 * across them: each admission, charge and lease renewal is one atomic Lua
 * script in Redis (one round trip, EVALSHA), on the key's {k:KEYID} slot
 * (gateway/shared_layout.h).
 *
 * Semantics: exactly those of the local limiter (gateway/ratelimit.h):
 * GCRA for requests per minute with its burst, a token bucket charged
 * after the response for tokens per minute, a cap on requests in flight;
 * the same admission condition, the same choice of the limit reported when
 * several deny, the same header values. The differences are only where the
 * state lives:
 *   - Time is Redis's clock (TIME) in microseconds, so replicas whose clocks
 *     differ share one timeline. Durations are whole microseconds: an
 *     emission interval T = ceil(60 s / rpm) and a refill time
 *     ceil(tokens * 60 s / tpm) are rounded up to the microsecond (the
 *     local limiter rounds to the nanosecond), so the two agree to the
 *     nanosecond whenever rpm and tpm divide 60,000,000, and otherwise the
 *     shared limit is the stricter by less than a microsecond per request.
 *   - Limits are read at every admission from the key's live hash
 *     (FY_SH_KEY_LIVE_FMT: rpm, tpm, cc, burst, exp, rev, ver), written by
 *     whoever creates, updates or revokes keys (fy_shl_live_write). The
 *     limiter state records the limits it was last computed for, and the
 *     first admission or charge that sees new ones carries the history over
 *     as fy_rl_set_limits does, at that moment: a change written by any
 *     replica applies to the very next admission anywhere.
 *   - Requests in flight are leases (FY_SH_KEY_LEASES_FMT: lease id ->
 *     expiry, Redis time in ms) instead of a counter, so a replica that dies
 *     gives its slots back: a replica renews every lease it holds (every
 *     ttl/3, say) and releases each exactly once; a lease not renewed
 *     expires after its TTL. Every admission takes a lease, the concurrency
 *     limit on or off, as the local limiter counts in_flight either way.
 *   - Keys unknown (no live hash), revoked (rev > 0) or expired (exp > 0
 *     and exp <= now in unix seconds) are refused by the script itself, so a
 *     revocation written anywhere stops the next admission everywhere.
 *
 * Redis state per key: the limiter state sits in the key's live hash beside
 * its limits (rl_tat, rl_tfull in µs; rl_t, rl_tpm the limits they were
 * computed for), so one HMGET reads both and one HSET writes it back; it
 * is four fields per key, kept as long as the key. The lease set expires a
 * minute after its last lease (PEXPIRE ... GT); expired leases never count
 * and every FY_SHL_SWEEP_EVERY-th admission drops them.
 *
 * Errors. Every call returns 0, and then CB runs exactly once (on the loop,
 * never before the call returns), or a negative code, and then CB never
 * runs: FY_EINVAL (a key id that is not 1..FY_SHL_KEY_ID_MAX bytes of
 * [A-Za-z0-9_-], a lease id that is not 1..FY_SHL_LEASE_ID_MAX bytes, a
 * bad count or TTL), or what fy_redis_eval / fy_redis_cmd return
 * (FY_EUNREACH while the client is DOWN, FY_ELIMIT, FY_ECLOSED, FY_ENOMEM).
 * ERR in a callback is 0, a code of the Redis client (redis.h: FY_EIO when
 * the server or the script answered with an error, e.g. a live hash whose
 * fields are not integers; FY_ECONNRESET, FY_EUNREACH, FY_ECANCELED, ...),
 * or FY_EPROTO when the reply is not the shape the script returns.
 *
 * Time arguments: NOW_US < 0 means Redis's clock (production); a value >= 0
 * is used instead (tests: deterministic time). NOW_S likewise for the
 * expiry check, in unix seconds. A key's calls must all use one clock.
 *
 * Redis: 7.0 or later (PEXPIRE GT; scripts replicate their effects, so a
 * script may read TIME and then write); every key one script touches shares the {k:KEYID}
 * tag, so the layout works on a cluster.
 *
 * Ownership and life: fy_shl_new registers the scripts on CL, which owns
 * them. fy_shl must not outlive CL. Operations in flight when fy_shl_free
 * runs still call back, exactly once, as CL delivers their replies (or
 * FY_ECANCELED from fy_redis_free). All strings are copied before a call
 * returns. Threads: as the client, the loop's thread only. */
#ifndef FY_GATEWAY_SHARED_LIMITS_H
#define FY_GATEWAY_SHARED_LIMITS_H

#include "gateway/ratelimit.h"
#include "gateway/redis.h"

#include <stddef.h>
#include <stdint.h>

#define FY_SHL_KEY_ID_MAX    64   /* bytes in a key id ("key_" + 16 chars in practice) */
#define FY_SHL_LEASE_ID_MAX  128  /* bytes in a lease id */
#define FY_SHL_RENEW_MAX     1000 /* lease ids per fy_shl_renew call */
#define FY_SHL_RELEASE_MAX   256  /* lease ids per fy_shl_release call */
#define FY_SHL_ADMIT_MAX     64   /* requests per fy_shl_admit_many call */
#define FY_SHL_SWEEP_EVERY   64   /* admissions per sweep of expired leases */
#define FY_SHL_LEASE_TTL_MAX (7 * 24 * 3600 * 1000LL) /* ms: a week at most */
#define FY_SHL_LIMIT_MAX     ((int64_t)1 << 40)       /* rpm, tpm, cc, burst (as the store) */

typedef enum {
    FY_SHL_OK = 0,  /* admitted: the lease is held, release it exactly once */
    FY_SHL_DENIED,  /* a limit refused: rr says which and for how long */
    FY_SHL_UNKNOWN, /* no live hash for this key */
    FY_SHL_REVOKED,
    FY_SHL_EXPIRED,
} fy_shl_status;

typedef struct {
    fy_shl_status status;
    /* For OK and DENIED: what fy_rl_acquire would have filled (times in ns,
     * ready for fy_rl_headers). Zero for the other statuses. */
    fy_rl_result rr;
    int64_t ver; /* the live hash's ver (0 for UNKNOWN): a cached key record
                    older than this is stale */
} fy_shl_admission;

/* A key's live limits, as fy_shl_live_write stores them. */
typedef struct {
    int64_t rpm, tpm, concurrency, burst; /* 0..FY_SHL_LIMIT_MAX; 0 = off (burst: default) */
    int64_t expires_at;                   /* unix seconds, 0 = never */
    int64_t revoked_at;                   /* unix seconds, 0 = active */
} fy_shl_live;

typedef struct fy_shl fy_shl;

/* An admission's outcome: A is NULL unless ERR is 0, and valid only until
 * the callback returns. */
typedef void (*fy_shl_admit_cb)(void *data, int err, const fy_shl_admission *a);
/* The other calls' outcome: N as each says; 0 when ERR is not 0. */
typedef void (*fy_shl_count_cb)(void *data, int err, int64_t n);

/* Registers the scripts on CL. Returns 0 with *OUT set, or FY_ENOMEM,
 * FY_ECLOSED (CL is being freed). */
int fy_shl_new(fy_redis *cl, fy_shl **out);

/* Frees L (NULL is ok); see "Ownership and life" above. */
void fy_shl_free(fy_shl *l);

/* Decides whether a request on KEY_ID may start, taking lease LEASE_ID (a
 * string unique among the key's leases in flight, e.g. replica id and a
 * counter) for LEASE_TTL_MS (1..FY_SHL_LEASE_TTL_MAX) when it may. CB gets
 * the admission. */
int fy_shl_admit(fy_shl *l, const char *key_id, const char *lease_id, int64_t lease_ttl_ms,
                 int64_t now_us, int64_t now_s, fy_shl_admit_cb cb, void *data);

/* One request of an admission call. */
typedef struct {
    const char *lease_id;
    fy_shl_admit_cb cb;
    void *data;
} fy_shl_ask;

/* fy_shl_admit for N requests of KEY_ID at once (1..FY_SHL_ADMIT_MAX), in
 * one script: each is decided in turn, at the same instant, exactly as N
 * fy_shl_admit calls in a row would decide them. Each ask's CB runs once
 * with its own admission. */
int fy_shl_admit_many(fy_shl *l, const char *key_id, const fy_shl_ask *asks, size_t n,
                      int64_t lease_ttl_ms, int64_t now_us, int64_t now_s);

/* Takes TOKENS from KEY_ID's token bucket at NOW_US, as fy_rl_charge (a
 * no-op when tpm is off, TOKENS <= 0 or the key is unknown; a revoked key
 * is still charged for what it used). N is 1 when the bucket was charged,
 * else 0. CB may be NULL (the outcome is ignored). */
int fy_shl_charge(fy_shl *l, const char *key_id, int64_t tokens, int64_t now_us, fy_shl_count_cb cb,
                  void *data);

/* Gives back leases LEASE_IDS[0..N) of KEY_ID (1..FY_SHL_RELEASE_MAX, one
 * ZREM). The count is how many were in the lease set (an expired lease may
 * be there until a sweep drops it). CB may be NULL. */
int fy_shl_release(fy_shl *l, const char *key_id, const char *const *lease_ids, size_t n,
                   fy_shl_count_cb cb, void *data);

/* Extends each of LEASE_IDS[0..N) (1..FY_SHL_RENEW_MAX) still held by
 * KEY_ID to expire TTL_MS (1..FY_SHL_LEASE_TTL_MAX) after NOW_US; expired
 * and released ones are not brought back. CB's N: how many were renewed
 * (an id given twice counts twice). CB may be NULL. */
int fy_shl_renew(fy_shl *l, const char *key_id, const char *const *lease_ids, size_t n,
                 int64_t ttl_ms, int64_t now_us, fy_shl_count_cb cb, void *data);

/* For the key writers (and tests): sets KEY_ID's live hash to LV and bumps
 * its ver, in one atomic step. CB's N: the new ver. CB may be NULL.
 * FY_EINVAL as above, or for values out of range. */
int fy_shl_live_write(fy_shl *l, const char *key_id, const fy_shl_live *lv, fy_shl_count_cb cb,
                      void *data);

#endif
