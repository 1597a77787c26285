/* store.h: the gateway's durable state: runners, enrollment tokens, API keys
 * and usage.
 *
 * The default backend is one SQLite file in the data dir, in WAL mode with
 * synchronous=FULL: when a write call returns 0 the change is on disk and
 * survives kill -9 or power loss. The schema is versioned and migrated
 * forward on open. Callers never see SQL: everything goes through these
 * functions, so another backend (Redis, for several gateway replicas) can be
 * added behind the same interface.
 *
 * Secrets never reach the store in clear: enrollment tokens and API keys are
 * stored as their SHA-256. All functions run on the caller's thread; a store
 * is used from one thread at a time.
 *
 * Durability, per kind of write:
 *   - runners, tokens, key create/update/revoke: durable before the call
 *     returns 0 (one fsync each; these are admin operations);
 *   - usage (fy_store_usage_add): accumulated in memory and written by
 *     fy_store_usage_flush in one transaction (one fsync per flush). The
 *     request path never waits for a disk. A kill -9 loses at most what was
 *     added since the last successful flush: with the intended 1 s flush
 *     timer, at most the last second of usage.
 *
 * Integration (gateway/run.c, admin.c):
 *   open:      fy_store_open (already done by run.c and init.c);
 *   timer:     uv_timer every FY_STORE_USAGE_FLUSH_MS calling
 *              fy_store_usage_flush; call it once more before fy_store_close
 *              on a graceful stop (close also flushes, as a last resort);
 *   requests:  when a request with a key ends (gateway/px.c):
 *                fy_store_usage_add(gw->store, fy_key_id(k), time(NULL),
 *                  &(fy_store_usage){1, prompt, completion, in, out});
 *              memory only, so it is safe on the loop thread;
 *   keys:      through gateway/keys.h (which keeps its in-memory index in
 *              step with the store), never fy_store_key_* directly from the
 *              request path;
 *   admin:     fy_store_key_list / fy_store_key_get for listings,
 *              fy_store_usage_list for `ferry keys list` and usage reports. */
#ifndef FY_GATEWAY_STORE_H
#define FY_GATEWAY_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct fy_store fy_store;

#define FY_STORE_NAME_MAX 64 /* runner names: [a-z0-9][a-z0-9-]{0,62} */

/* Opens (creating when absent) the store at PATH and migrates its schema.
 * Returns 0 or an FY_E* code with a message in ERR. */
int fy_store_open(const char *path, fy_store **out, char *err, size_t errlen);
void fy_store_close(fy_store *st);

/* Schema version after migrations (for tests and `ferry --version`). */
int fy_store_schema_version(fy_store *st);

/* 1 when NAME is a valid runner name: 1..63 chars of [a-z0-9-], starting
 * with a letter or digit. Names appear in URLs (/r/<name>/) and certificates. */
int fy_store_valid_name(const char *name);

/* --- enrollment tokens ----------------------------------------------------- */

typedef struct {
    char id[24]; /* public id for listings, "tok_..." */
    char runner_name[FY_STORE_NAME_MAX];
    int64_t created_at, expires_at, used_at; /* unix seconds; used_at 0 = unused */
} fy_store_token;

/* Records a token bound to RUNNER_NAME, identified by HASH (SHA-256 of the
 * secret) and a public ID. */
int fy_store_token_add(fy_store *st, const char *id, const uint8_t hash[32],
                       const char *runner_name, int64_t now, int64_t expires_at);

/* Atomically consumes the token with HASH at time NOW: it must exist, be
 * unused and unexpired. On success copies the bound runner name into NAME.
 * Returns 0, FY_ENOENT (unknown), FY_EEXIST (already used) or FY_ETIMEDOUT
 * (expired). A consumed token stays recorded so reuse is reported as such. */
int fy_store_token_consume(fy_store *st, const uint8_t hash[32], int64_t now,
                           char name[FY_STORE_NAME_MAX]);

/* Calls CB for every token, newest first. */
int fy_store_token_list(fy_store *st, void (*cb)(const fy_store_token *t, void *arg), void *arg);

/* The same, with each token's HASH (the SHA-256 of its secret, which
 * identifies it): for copying the store elsewhere (`ferry-gateway migrate`). */
int fy_store_token_list_hashed(fy_store *st,
                               void (*cb)(const fy_store_token *t, const uint8_t hash[32],
                                          void *arg),
                               void *arg);

/* --- runners ---------------------------------------------------------------- */

typedef struct {
    char name[FY_STORE_NAME_MAX];
    char fingerprint[72]; /* "sha256:<hex>" of the runner's current certificate */
    char serial[64];
    int64_t enrolled_at;
    int64_t revoked_at; /* 0 = active */
} fy_store_runner;

/* Records (or re-records, after a new enrollment) the certificate of runner
 * NAME; clears any revocation. */
int fy_store_runner_enroll(fy_store *st, const char *name, const char *fingerprint,
                           const char *serial, int64_t now);

/* Writes runner R as it is, revocation included, creating or replacing the
 * record of R->name: how a replica's store, a cache of the shared state
 * (gateway/shared.h), takes a record another replica wrote. Returns 0
 * (durable), FY_EINVAL or FY_EIO. */
int fy_store_runner_put(fy_store *st, const fy_store_runner *r);

/* Fetches runner NAME. Returns 0 or FY_ENOENT. */
int fy_store_runner_get(fy_store *st, const char *name, fy_store_runner *out);

/* Marks runner NAME revoked at NOW. Returns 0 or FY_ENOENT. */
int fy_store_runner_revoke(fy_store *st, const char *name, int64_t now);

/* Calls CB for every runner, by name. */
int fy_store_runner_list(fy_store *st, void (*cb)(const fy_store_runner *r, void *arg), void *arg);

/* --- API keys ------------------------------------------------------------------
 *
 * A key record. The key text itself is never stored: HASH is its SHA-256 and
 * PREFIX its first FY_STORE_KEY_PREFIX_LEN characters, shown in listings so
 * people can tell keys apart. Scope lists are comma-separated names ("" = any):
 * each name is 1..FY_STORE_SCOPE_ITEM_MAX bytes of printable ASCII without
 * ',' or spaces (model names like "meta-llama/Llama-3-8B:q4" fit). */

#define FY_STORE_KEY_ID_MAX     24   /* "key_" + 16 base64url chars + NUL */
#define FY_STORE_KEY_PREFIX_LEN 8    /* "fy_" + 5 chars of the key */
#define FY_STORE_KEY_NAME_MAX   128  /* name and owner: 0..127 bytes, no control chars */
#define FY_STORE_SCOPE_MAX      1024 /* bytes of one comma-separated scope list, with NUL */
#define FY_STORE_SCOPE_ITEM_MAX 128  /* bytes of one name in a scope list */

typedef struct {
    char id[FY_STORE_KEY_ID_MAX];
    char name[FY_STORE_KEY_NAME_MAX];
    char owner[FY_STORE_KEY_NAME_MAX]; /* free text, "" when unset */
    char prefix[FY_STORE_KEY_PREFIX_LEN + 1];
    uint8_t hash[32];
    int64_t rpm;         /* requests per minute, 0 = unlimited */
    int64_t tpm;         /* tokens per minute, 0 = unlimited */
    int64_t concurrency; /* requests in flight, 0 = unlimited */
    int64_t burst;       /* requests admitted at once (1..rpm), 0 = the default
                          * ceil(rpm / 6) of gateway/ratelimit.h (schema 4) */
    char models[FY_STORE_SCOPE_MAX];
    char runners[FY_STORE_SCOPE_MAX];
    char hooks[FY_STORE_SCOPE_MAX];
    int64_t created_at;   /* unix seconds */
    int64_t expires_at;   /* unix seconds, 0 = never */
    int64_t revoked_at;   /* unix seconds, 0 = active */
    int64_t last_used_at; /* unix seconds, 0 = never; updated by usage flushes */
} fy_store_key;

/* 1 when the scope list S is valid (see above); "" is valid (any). */
int fy_store_scope_valid(const char *s);

/* The name of the first field of K that fy_store_key_create would refuse
 * ("id", "name", "owner", "prefix", "rpm", "tpm", "concurrency", "burst",
 * "expires_at", "models", "runners", "hooks"), or NULL when K is valid. The
 * hash and the timestamps other than expires_at are not checked. */
const char *fy_store_key_check(const fy_store_key *k);

/* Records key K (all fields but revoked_at and last_used_at, stored as 0).
 * Returns 0 (durable), FY_EINVAL (bad id, name, limits or scopes), FY_EEXIST
 * (same id or same hash) or FY_EIO. */
int fy_store_key_create(fy_store *st, const fy_store_key *k);

/* Writes key K as it is (every field but last_used_at, revoked_at included),
 * creating or replacing the record of K->id: how a replica's store, a cache
 * of the shared state (gateway/shared.h), takes a record another replica
 * wrote. Returns 0 (durable), FY_EINVAL, FY_EEXIST (another id has K's hash)
 * or FY_EIO. */
int fy_store_key_put(fy_store *st, const fy_store_key *k);

/* Fetches the key with ID or with HASH. Revoked keys are returned too (with
 * revoked_at set). Returns 0 or FY_ENOENT (or FY_EIO). */
int fy_store_key_get(fy_store *st, const char *id, fy_store_key *out);
int fy_store_key_get_by_hash(fy_store *st, const uint8_t hash[32], fy_store_key *out);

/* Rewrites the mutable fields of key K->id: name, owner, rpm, tpm,
 * concurrency, burst, models, runners, hooks, expires_at (the id, hash, prefix and
 * timestamps are kept). Returns 0 (durable), FY_EINVAL, FY_ENOENT or
 * FY_EIO. A revoked key can be updated but stays revoked. */
int fy_store_key_update(fy_store *st, const fy_store_key *k);

/* Marks key ID revoked at NOW. Revoking a revoked key keeps its first
 * revocation time and returns 0. Returns 0 (durable), FY_ENOENT or FY_EIO. */
int fy_store_key_revoke(fy_store *st, const char *id, int64_t now);

/* Calls CB for every key (revoked ones too), oldest first. The record is
 * valid only during the call. */
int fy_store_key_list(fy_store *st, void (*cb)(const fy_store_key *k, void *arg), void *arg);

/* --- usage ---------------------------------------------------------------------
 *
 * Usage is aggregated per key per hour (hour = start of the UTC hour, unix
 * seconds): enough resolution for "last 24 hours" reports and bills, with one
 * row per active key per hour whatever the traffic. */

#define FY_STORE_USAGE_FLUSH_MS    1000  /* intended flush period */
#define FY_STORE_USAGE_MAX_PENDING 65536 /* pending (key, hour) cells before add flushes inline */

typedef struct {
    uint64_t requests;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    uint64_t bytes_in;
    uint64_t bytes_out;
} fy_store_usage;

/* Adds DELTA to key KEY_ID's usage in the hour of NOW (unix seconds) and
 * notes NOW as the key's last use. Memory only: nothing is written until the
 * next fy_store_usage_flush (or until FY_STORE_USAGE_MAX_PENDING cells are
 * pending, when this call flushes inline). Returns 0, FY_EINVAL (bad key id)
 * or FY_ENOMEM (DELTA is then dropped). Never blocks on a disk otherwise. */
int fy_store_usage_add(fy_store *st, const char *key_id, int64_t now, const fy_store_usage *delta);

/* Writes every pending usage cell and last-use time in one transaction.
 * Returns 0 (durable; nothing pending) or FY_EIO (everything stays pending
 * and the next flush tries again). */
int fy_store_usage_flush(fy_store *st);

/* Number of (key, hour) cells waiting for a flush. */
size_t fy_store_usage_pending(const fy_store *st);

typedef struct {
    char key_id[FY_STORE_KEY_ID_MAX];
    int64_t hour; /* start of the hour; 0 in totals */
    fy_store_usage u;
} fy_store_usage_row;

/* Flushes, then calls CB for the usage of KEY_ID (NULL: every key) in hours
 * [FROM, TO) (unix seconds; 0, INT64_MAX for all time): one row per key per
 * hour when PER_HOUR, else one total per key (hour 0). Rows come by key id,
 * then hour. Returns 0 or FY_EIO. */
int fy_store_usage_list(fy_store *st, const char *key_id, int64_t from, int64_t to, int per_hour,
                        void (*cb)(const fy_store_usage_row *row, void *arg), void *arg);

/* --- webhooks ------------------------------------------------------------------
 *
 * A hook is a public endpoint /hooks/<id> that verifies a SaaS tool's
 * signature and forwards to a runner's path (gateway/hooks.h). Its signing
 * secrets must be usable for HMAC, so unlike API keys they are stored as they
 * are (the data dir, and the store file in it, is mode 0700/0600: protect it
 * as you would the admin token). They are never logged, listed or returned by
 * the admin API. During a rotation the previous secret is kept, and accepted,
 * until PREV_UNTIL. */

#define FY_STORE_HOOK_ID_MAX     32   /* "hk_" + 22 base64url chars + NUL */
#define FY_STORE_HOOK_SECRET_MAX 1024 /* bytes of one signing secret */
#define FY_STORE_HOOK_PATH_MAX   1024 /* runner-side path, with NUL */
#define FY_STORE_HOOK_HDR_MAX    64   /* a header name, with NUL */

typedef struct {
    char id[FY_STORE_HOOK_ID_MAX];
    char name[FY_STORE_KEY_NAME_MAX];
    char runner[FY_STORE_NAME_MAX];
    char path[FY_STORE_HOOK_PATH_MAX];
    char verify[16];                       /* github, stripe, slack, hmac-sha256, none */
    char header[FY_STORE_HOOK_HDR_MAX];    /* hmac-sha256: the signature header */
    char encoding[8];                      /* hmac-sha256: hex or base64 */
    char ts_header[FY_STORE_HOOK_HDR_MAX]; /* hmac-sha256: optional timestamp header */
    int64_t tolerance_s;                   /* timestamp tolerance */
    int async;                             /* answer 202 and deliver from the queue */
    int64_t rpm;                           /* verified requests per minute, 0 = no limit */
    int64_t max_body;                      /* bytes */
    uint8_t secret[FY_STORE_HOOK_SECRET_MAX];
    size_t secret_len;
    uint8_t prev_secret[FY_STORE_HOOK_SECRET_MAX];
    size_t prev_len;    /* 0 = none */
    int64_t prev_until; /* unix seconds the previous secret stays valid */
    int64_t created_at;
    int64_t delivered; /* async events delivered */
    int64_t queued;    /* async events waiting (listings only) */
    int64_t dead;      /* async events given up on (listings only) */
} fy_store_hook;

/* Records hook H (validated: id, name, runner name, path starting with '/',
 * verify kind). Returns 0 (durable), FY_EINVAL, FY_EEXIST or FY_EIO. */
int fy_store_hook_create(fy_store *st, const fy_store_hook *h);

/* Records hook H whole, as fy_store_hook_create checks it, replacing the
 * record of the same id if there is one (its secrets, previous secret and
 * times included) but keeping that hook's queue and delivered count: the
 * local cache of a record that lives in the shared state (gateway/shared.h).
 * Returns 0 (durable), FY_EINVAL or FY_EIO. */
int fy_store_hook_put(fy_store *st, const fy_store_hook *h);

/* The name of the first field of H that fy_store_hook_create would refuse
 * ("id", "name", "runner", "path", "verify", "header", "ts_header",
 * "encoding", "tolerance_s", "rpm", "max_body", "secret"), or NULL when H is
 * valid. The previous secret, times and counters are not checked. */
const char *fy_store_hook_check(const fy_store_hook *h);

/* Fetches hook ID, secrets included (wipe OUT after use). Returns 0 or
 * FY_ENOENT (or FY_EIO). */
int fy_store_hook_get(fy_store *st, const char *id, fy_store_hook *out);

/* Calls CB for every hook, oldest first, with the secrets wiped and the
 * queue counts filled in. */
int fy_store_hook_list(fy_store *st, void (*cb)(const fy_store_hook *h, void *arg), void *arg);

/* Deletes hook ID with its queued events and replay records. Returns 0,
 * FY_ENOENT or FY_EIO. */
int fy_store_hook_delete(fy_store *st, const char *id);

/* Makes SECRET the hook's secret; the current one becomes the previous one,
 * accepted until PREV_UNTIL. Returns 0 (durable), FY_EINVAL, FY_ENOENT or
 * FY_EIO. */
int fy_store_hook_rotate(fy_store *st, const char *id, const void *secret, size_t len,
                         int64_t prev_until);

/* Records delivery id DELIVERY of hook HOOK_ID seen at NOW, after pruning
 * records older than NOW - WINDOW. Returns 0 (new, durable), FY_EEXIST (seen
 * within the window: a replay) or FY_EIO. */
int fy_store_hook_seen(fy_store *st, const char *hook_id, const char *delivery, int64_t now,
                       int64_t window);

/* --- the durable delivery queue of async hooks ---------------------------------- */

typedef struct {
    int64_t seq; /* global order of acceptance */
    char hook_id[FY_STORE_HOOK_ID_MAX];
    char delivery_id[40]; /* "dlv_..." sent to the runner as x-ferry-delivery */
    char target[FY_STORE_HOOK_PATH_MAX + 1024];
    char *headers; /* JSON [[name, value], ...] (malloc'd) */
    char *body;    /* malloc'd */
    size_t body_len;
    int64_t accepted_at, attempts, next_at;
} fy_store_hookq_item;

/* Appends an event (durable when 0 is returned). HEADERS_JSON as above. */
int fy_store_hookq_add(fy_store *st, const fy_store_hookq_item *it, int64_t *seq);

/* Calls CB(hook_id, seq) for the oldest pending event of every hook. */
int fy_store_hookq_heads(fy_store *st, void (*cb)(const char *hook_id, int64_t seq, void *arg),
                         void *arg);

/* Loads pending event SEQ into OUT (free with fy_store_hookq_item_free).
 * Returns 0, FY_ENOENT or FY_EIO. */
int fy_store_hookq_get(fy_store *st, int64_t seq, fy_store_hookq_item *out);
void fy_store_hookq_item_free(fy_store_hookq_item *it);

/* Delivered: removes SEQ and counts it on its hook. */
int fy_store_hookq_done(fy_store *st, int64_t seq);

/* Not delivered: records the attempt and when to try again; DEAD gives up
 * on it (kept for inspection, no longer delivered). */
int fy_store_hookq_retry(fy_store *st, int64_t seq, int64_t attempts, int64_t next_at, int dead,
                         const char *error);

#endif
