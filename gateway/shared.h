/* shared.h: a gateway replica's side of the state several replicas share in
 * Redis (`ferry-gateway run --shared URL`; the layout is shared_layout.h).
 *
 * What is shared, and where each replica keeps its copy:
 *   - keys and runners: the records live in Redis; each replica keeps a
 *     cache of them in its own store and keyring (gateway/store.h,
 *     keys.h), which the request path reads without waiting for anything.
 *     A write (create, update, revoke, enroll) goes to Redis first, then to
 *     the local cache, then is published on a channel; every other replica
 *     re-reads the record when it hears of it. On every (re)connection the
 *     whole catalog is read again, so a message lost while a replica was
 *     cut off changes nothing for long. A key this replica has never seen
 *     is looked up in Redis before it is refused (fy_shared_key_lookup), so
 *     a key created on one replica works at once on every other.
 *   - limits: every admission is one script in Redis (gateway/
 *     shared_limits.h) that reads the key's live state there (limits,
 *     revocation, expiry), so a revocation or a new limit written by any
 *     replica applies to the very next request anywhere, and rpm, tpm and
 *     concurrency stay exact however many replicas there are.
 *     Concurrency slots are leases: this replica renews its own every
 *     lease_ttl / 3, and a replica that dies gives its slots back within
 *     lease_ttl.
 *   - usage per key per hour: added in memory, written to Redis once a
 *     second, as the SQLite store does locally.
 *   - enrollment tokens: consumed by one script (check and mark in one
 *     step), so a token is good for one enrollment across all replicas.
 *   - hooks: their records as keys' (written to Redis, cached in the local
 *     store, published, re-read, read whole on every connection, where a
 *     cached hook Redis no longer has is deleted here); GitHub delivery ids
 *     seen (the replay guard) as one SET NX EX per id, so a replay is
 *     refused on any replica; async hooks' events in one Redis Stream per
 *     hook (gateway/shared_hookq.h), delivered by one replica at a time.
 *   - replicas: each writes a heartbeat; the number alive (heard from in
 *     the last 3 heartbeats) is what limits are divided by while Redis is
 *     unreachable.
 *
 * When Redis is unreachable (the client is DOWN, gateway/redis.h):
 *   - keys already cached keep authenticating;
 *   - limits fall back to this replica's own limiters at limit / N, N the
 *     replicas alive at the last heartbeat (fy_keys_set_share);
 *   - writes get FY_EUNREACH at once, which the admin API answers with 503;
 *   - a key not in the cache is refused with 503 (shared_state_unavailable)
 *     under --shared-failure closed (the default), or as unknown (401) under
 *     open;
 *   - the gauge ferry_gateway_shared_up reads 0 and one log line says why;
 *   - on recovery the catalog is read again and the limits are whole again,
 *     without a restart.
 *
 * Calls go one way: the gateway (px.c, admin.c, enroll.c, run.c) calls
 * this module; this module reaches the gateway only through the ops it was
 * given. Everything runs on the gateway's loop thread. */
#ifndef FY_GATEWAY_SHARED_H
#define FY_GATEWAY_SHARED_H

#include "gateway/keys.h"
#include "gateway/metrics.h"
#include "gateway/ratelimit.h"
#include "gateway/redis.h"
#include "gateway/store.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#define FY_SHARED_HEARTBEAT_MS    1000 /* replica heartbeat */
#define FY_SHARED_LEASE_TTL_MS    30000 /* a dead replica's concurrency slots come back within this */
#define FY_SHARED_MAX_LOOKUPS     256   /* key lookups in flight (unknown keys) */
#define FY_SHARED_SCAN_COUNT      256   /* records per HSCAN page while reading the catalog */
#define FY_SHARED_MAX_USAGE_CELLS 65536 /* (key, hour) cells waiting to be written */
#define FY_SHARED_REPLICA_ID_MAX  32
#define FY_SHARED_DELIVERY_MAX    100 /* bytes of a delivery id in a key name */

typedef struct fy_shared fy_shared;

/* What the gateway is told about. Each may be NULL. */
typedef struct {
    /* Runner R's record changed in the shared state (another replica enrolled
     * or revoked it) and is now in the local store: a revoked or re-enrolled
     * runner's connections to this replica must go. */
    void (*on_runner)(void *data, const fy_store_runner *r);
    /* What this replica announces with its heartbeat (a JSON object, taken
     * over by the caller): listeners and the runners connected here. */
    json_t *(*announce)(void *data);
    /* Hook ID was deleted in the shared state (by another replica) and is
     * now gone from the local store too. */
    void (*on_hook_gone)(void *data, const char *id);
} fy_shared_ops;

typedef struct {
    uv_loop_t *loop;
    fy_store *store; /* the local cache */
    fy_keys *keys;
    fy_metrics_gw *metrics;
    const fy_shared_ops *ops;
    void *data;
    int fail_open; /* --shared-failure open */
    unsigned heartbeat_ms, lease_ttl_ms;
} fy_shared_options;

/* Starts the shared state on CFG (copied): connects, then reads the catalog
 * into the local cache. Returns 0, or FY_EINVAL / FY_ENOMEM with ERR. */
int fy_shared_new(const fy_shared_options *o, const fy_redis_config *cfg, fy_shared **out,
                  char *err, size_t errlen);

/* Writes the usage still pending (when up), then closes. Every callback
 * still owed runs before this returns (with FY_ECANCELED); the loop must run
 * on for the client's handles to close. NULL is ok. */
void fy_shared_free(fy_shared *sh);

/* 1 while Redis is reachable. */
int fy_shared_is_up(const fy_shared *sh);

/* Replicas alive at the last heartbeat, this one included (>= 1). */
int64_t fy_shared_replicas(const fy_shared *sh);

/* This replica's id ("rep_..."), in heartbeats and lease ids. */
const char *fy_shared_replica_id(const fy_shared *sh);

/* --- admission ------------------------------------------------------------------ */

typedef struct fy_shared_lease fy_shared_lease;

typedef struct {
    fy_auth_outcome auth;   /* FY_AUTH_OK, or REVOKED / EXPIRED / UNKNOWN from Redis */
    int unavailable;        /* neither Redis nor a local limiter could decide: 503 */
    fy_rl_result rr;        /* the limits (rr.allowed) when AUTH is FY_AUTH_OK */
    fy_shared_lease *lease; /* when admitted: give it back with fy_shared_release */
} fy_shared_admission;

typedef void (*fy_shared_admit_cb)(void *data, const fy_shared_admission *a);

/* Decides whether key K may start a request now: in Redis while it is up,
 * else on K's local limiter at its share. CB runs exactly once, later or
 * (local decision) before this returns. K must stay referenced until CB. */
void fy_shared_admit(fy_shared *sh, fy_key *k, fy_shared_admit_cb cb, void *data);

/* Charges TOKENS (the usage trailer's prompt + completion) to the limiter
 * that admitted L (the key's local one when SH is NULL or down). */
void fy_shared_charge(fy_shared *sh, fy_shared_lease *l, int64_t tokens);

/* Gives L's concurrency slot back and frees L. Exactly once per lease. SH
 * may be NULL once the shared state was freed (a request that outlived it):
 * L is then freed, and its slot in Redis expires with its TTL. */
void fy_shared_release(fy_shared *sh, fy_shared_lease *l);

/* --- the catalog ---------------------------------------------------------------- */

/* A write's end: 0, FY_EUNREACH (Redis went down), FY_EEXIST, FY_ENOENT... */
typedef void (*fy_shared_done_cb)(void *data, int err);

/* Looks the key whose SHA-256 is HASH up in Redis and, when it exists, puts
 * it in the local cache (fy_keys_apply). CB(DATA, 0) when found, FY_ENOENT
 * when Redis has no such key. Returns 0 (CB will run), FY_EUNREACH (down)
 * or FY_ELIMIT (FY_SHARED_MAX_LOOKUPS in flight): then CB never runs. */
int fy_shared_key_lookup(fy_shared *sh, const uint8_t hash[32], fy_shared_done_cb cb, void *data);

/* Writes key record K (created, updated or revoked) to Redis, then to the
 * local cache, then tells the other replicas. CB(DATA, 0) once all of it is
 * done. Returns 0 (CB will run) or FY_EUNREACH / FY_ENOMEM (CB never runs).
 * K is copied. */
int fy_shared_key_put(fy_shared *sh, const fy_store_key *k, fy_shared_done_cb cb, void *data);

/* Reads key ID's record from Redis into *OUT (the local cache may lag a
 * write made elsewhere by a few milliseconds; updates start from this).
 * CB(DATA, 0 or FY_ENOENT). Returns as fy_shared_key_put. */
int fy_shared_key_get(fy_shared *sh, const char *id, fy_store_key *out, fy_shared_done_cb cb,
                      void *data);

/* Records enrollment token T (HASH: the SHA-256 of its secret). Returns and
 * calls back as fy_shared_key_put. */
int fy_shared_token_add(fy_shared *sh, const fy_store_token *t, const uint8_t hash[32],
                        fy_shared_done_cb cb, void *data);

/* Consumes the token with HASH at NOW, atomically across replicas, copying
 * its runner name into NAME (which must stay valid until CB). CB(DATA, 0,
 * FY_ENOENT, FY_EEXIST (used) or FY_ETIMEDOUT (expired)). Returns as
 * fy_shared_key_put. */
int fy_shared_token_consume(fy_shared *sh, const uint8_t hash[32], int64_t now,
                            char name[FY_STORE_NAME_MAX], fy_shared_done_cb cb, void *data);

/* Every enrollment token in Redis, newest first: CB(DATA, 0, T, N) (T
 * valid during the call), or an error. Returns as fy_shared_key_put. */
typedef void (*fy_shared_tokens_cb)(void *data, int err, const fy_store_token *t, size_t n);
int fy_shared_token_list(fy_shared *sh, fy_shared_tokens_cb cb, void *data);

/* Writes runner record R (enrolled or revoked) as fy_shared_key_put does. */
int fy_shared_runner_put(fy_shared *sh, const fy_store_runner *r, fy_shared_done_cb cb, void *data);

/* What every live replica announced with its last heartbeat: CB(DATA, 0,
 * {replica id: {public, tunnel, admin, runners: {name: connections},
 * heartbeat_at}}) (the object is the callee's; CB must not keep it), or an
 * error and NULL. Returns as fy_shared_key_put. */
typedef void (*fy_shared_json_cb)(void *data, int err, json_t *o);
int fy_shared_replicas_info(fy_shared *sh, fy_shared_json_cb cb, void *data);

/* --- hooks -------------------------------------------------------------------------- */

/* Writes hook record H (created or rotated: secrets included) as
 * fy_shared_key_put does: Redis, then the local cache (fy_store_hook_put),
 * then the other replicas are told. Returns and calls back as
 * fy_shared_key_put. H is copied. */
int fy_shared_hook_put(fy_shared *sh, const fy_store_hook *h, fy_shared_done_cb cb, void *data);

/* Reads hook ID's record from Redis into *OUT (secrets included: the
 * caller wipes it), which must stay valid until CB(DATA, 0 or FY_ENOENT).
 * Returns as fy_shared_key_put. */
int fy_shared_hook_get(fy_shared *sh, const char *id, fy_store_hook *out, fy_shared_done_cb cb,
                       void *data);

/* Deletes hook ID from Redis with its queue (stream, attempts, owner, dead
 * events), then from the local cache, then tells the other replicas.
 * CB(DATA, 0, or FY_ENOENT when Redis had no such hook). Returns as
 * fy_shared_key_put. */
int fy_shared_hook_delete(fy_shared *sh, const char *id, fy_shared_done_cb cb, void *data);

/* 1 when DELIVERY may go into a key name: 1..FY_SHARED_DELIVERY_MAX bytes
 * of [A-Za-z0-9._-] (GitHub's are GUIDs). */
int fy_shared_delivery_valid(const char *delivery);

/* The replay guard: records delivery id DELIVERY of hook HOOK_ID for
 * WINDOW_S seconds (SET NX EX). CB(DATA, 0) when it is new, FY_EEXIST when
 * it was seen within the window (on any replica), or a Redis error. Returns
 * 0 (CB will run), FY_EINVAL (DELIVERY not valid, see above), FY_EUNREACH
 * (down) or FY_ENOMEM; then CB never runs. */
int fy_shared_hook_seen(fy_shared *sh, const char *hook_id, const char *delivery, int64_t window_s,
                        fy_shared_done_cb cb, void *data);

/* The client (for gateway/shared_hookq.h) and the lease TTL of the options. */
fy_redis *fy_shared_redis(fy_shared *sh);
unsigned fy_shared_lease_ttl_ms(const fy_shared *sh);

/* Events waiting (or being delivered) and given up on, from Redis, for the
 * async hooks IDS[0..N): CB(DATA, 0, QUEUED, DEAD) (arrays of N, valid
 * during the call), or an error. Returns as fy_shared_key_put. */
typedef void (*fy_shared_counts_cb)(void *data, int err, const int64_t *queued,
                                    const int64_t *dead);
int fy_shared_hook_counts(fy_shared *sh, const char *const *ids, size_t n, fy_shared_counts_cb cb,
                          void *data);

/* --- usage ------------------------------------------------------------------------ */

/* Adds DELTA to key KEY_ID's usage in the hour of NOW (memory only; written
 * to Redis within FY_STORE_USAGE_FLUSH_MS while it is up, and kept while it
 * is down, up to FY_SHARED_MAX_USAGE_CELLS cells). */
int fy_shared_usage_add(fy_shared *sh, const char *key_id, int64_t now,
                        const fy_store_usage *delta);

/* The usage in Redis (every replica's) of KEY_ID (NULL: every key this
 * replica knows) in hours [FROM, TO), as fy_store_usage_list gives it: one
 * row per key per hour when PER_HOUR, else one total per key (hour 0), by
 * key id then hour; what this replica added in the last second may not be
 * there yet. CB(DATA, 0, ROWS, N) (ROWS valid during the call), or an error;
 * it may run before this returns (nothing to read). Returns 0, or
 * FY_EUNREACH / FY_ENOMEM / FY_EIO, and then CB never runs. */
typedef void (*fy_shared_usage_cb)(void *data, int err, const fy_store_usage_row *rows, size_t n);
int fy_shared_usage_list(fy_shared *sh, const char *key_id, int64_t from, int64_t to, int per_hour,
                         fy_shared_usage_cb cb, void *data);

#endif
