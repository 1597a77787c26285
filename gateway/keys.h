/* keys.h: API keys: creation, the in-memory index the request path checks,
 * credential parsing and the outcome of every check.
 *
 * A key is "fy_" + 43 base64url characters (256 random bits, common/secret.h).
 * The store keeps only its SHA-256 and its first FY_STORE_KEY_PREFIX_LEN
 * characters. At start-up every key (revoked ones too, so their use can be
 * told apart in metrics) is loaded into an open-addressing hash table keyed
 * by that SHA-256: a lookup hashes the presented key once, probes a slot by
 * the first 8 bytes of the digest and compares the full 32 bytes in
 * constant time, so a check costs the same with 10 or 100,000 keys.
 *
 * Create, update and revoke write the store first (durable when they return
 * 0) and then change the index in the same call, so a revocation applies to
 * the very next request and an acknowledged key works at once.
 *
 * Secrets: the key text is only read where the caller's header value lies;
 * nothing here copies, logs or keeps it, and the digest computed from it is
 * wiped after the lookup. fy_keys_create hands the new key to the caller
 * once; the caller shows it and wipes its buffer (fy_secure_zero).
 *
 * Integration (gateway/px.c, for every kind of public request):
 *   fy_key *k = NULL;
 *   size_t nh; const fy_http_header *h = fy_http_req_headers(req, &nh);
 *   fy_auth_outcome o = fy_keys_authenticate(gw->keys, h, nh, time(NULL), &k);
 *   if (o == FY_AUTH_OK)   // once the runner (/r/<name>/) or model is known
 *       o = fy_keys_authorize(gw->keys, k, FY_SCOPE_RUNNER, name);
 *   if (o != FY_AUTH_OK) {
 *       const char *code, *msg;
 *       int status = fy_auth_error(o, &code, &msg);
 *       fy_metrics_gw_auth_failure(&gw->metrics, fy_auth_reason(o));
 *       fy_key_release(k);                      // NULL is fine
 *       fy_http_respond_error(req, status, code, msg);
 *       return;
 *   }
 *   ... fy_rl_acquire(fy_key_rl(k), ...) (gateway/ratelimit.h),
 *   ... fy_key_id(k) in the access log and usage,
 *   fy_key_release(k) when the request ends.
 * Admin API (gateway/admin.c): fy_keys_create / fy_keys_update /
 * fy_keys_revoke; listings read the store (fy_store_key_list).
 *
 * Threads: every function may be called from any thread; the index is
 * guarded by one mutex held only for a probe or an update, entries are
 * reference-counted, and each key's limiter has its own lock. */
#ifndef FY_GATEWAY_KEYS_H
#define FY_GATEWAY_KEYS_H

#include "common/http.h"
#include "common/secret.h"
#include "gateway/ratelimit.h"
#include "gateway/store.h"

#include <stddef.h>
#include <stdint.h>

#define FY_KEY_PREFIX "fy"
#define FY_KEY_LEN    46 /* "fy_" + 43 */

typedef struct fy_keys fy_keys; /* the keyring: store + index */
typedef struct fy_key fy_key;   /* one key in the index, reference-counted */

/* Every outcome of a check. The public answer (status, code, message) is
 * the same for MALFORMED, UNKNOWN, REVOKED and EXPIRED apart from the
 * message of MALFORMED, which describes the expected shape (a caller knows
 * the shape of what they sent): a caller cannot probe whether a well-formed
 * key exists, was revoked or expired. fy_auth_reason tells them apart for
 * metrics and logs. */
typedef enum {
    FY_AUTH_OK = 0,
    FY_AUTH_MISSING,          /* no credential at all: 401 missing_api_key */
    FY_AUTH_MALFORMED,        /* wrong scheme, bad shape, ambiguous: 401 invalid_api_key */
    FY_AUTH_UNKNOWN,          /* well formed, not ours: 401 invalid_api_key */
    FY_AUTH_REVOKED,          /* 401 invalid_api_key */
    FY_AUTH_EXPIRED,          /* 401 invalid_api_key */
    FY_AUTH_FORBIDDEN_MODEL,  /* outside the key's models: 403 permission_denied */
    FY_AUTH_FORBIDDEN_RUNNER, /* outside the key's runners: 403 permission_denied */
    FY_AUTH_FORBIDDEN_HOOK,   /* outside the key's hooks: 403 permission_denied */
} fy_auth_outcome;

typedef enum { FY_SCOPE_MODEL = 0, FY_SCOPE_RUNNER, FY_SCOPE_HOOK } fy_scope_kind;

/* The HTTP status of outcome O (200 for FY_AUTH_OK, 401, 403) and, through
 * CODE and MESSAGE (either may be NULL), the OpenAI-style error code and
 * message to send with fy_http_respond_error. Static strings; never NULL. */
int fy_auth_error(fy_auth_outcome o, const char **code, const char **message);

/* A short label for metrics and logs: "ok", "missing", "malformed",
 * "unknown", "revoked", "expired", "forbidden_model", "forbidden_runner",
 * "forbidden_hook". */
const char *fy_auth_reason(fy_auth_outcome o);

/* --- credential parsing (pure; fuzzed by tests/fuzz/fuzz_auth_header.c) --- */

/* Finds the credential in headers H[0..N): "Authorization: Bearer KEY"
 * (scheme case-insensitive, one or more spaces) or "x-api-key: KEY", with
 * surrounding spaces and tabs ignored. Rules, in order:
 *   - more than one Authorization or more than one x-api-key field,
 *     an Authorization with another scheme (or no scheme), or both headers
 *     carrying different keys:                         FY_AUTH_MALFORMED;
 *   - neither header, or only empty values ("Bearer" with nothing after it
 *     counts as empty):                                FY_AUTH_MISSING;
 *   - a value that is not FY_KEY_PREFIX "_" + 43 base64url characters:
 *                                                      FY_AUTH_MALFORMED;
 *   - otherwise FY_AUTH_OK, with *KEY and *LEN pointing into the header
 *     value (nothing is copied).
 * *KEY and *LEN are set only on FY_AUTH_OK. */
fy_auth_outcome fy_keys_parse(const fy_http_header *h, size_t n, const char **key, size_t *len);

/* --- the keyring ------------------------------------------------------------------ */

/* Creates a keyring over ST and loads every key from it. ST NULL makes an
 * index-only keyring (nothing durable: for tests, fuzzing and benchmarks).
 * ST must outlive the keyring. Returns 0, FY_ENOMEM or the store's error. */
int fy_keys_new(fy_store *st, fy_keys **out);

/* Frees the keyring. Keys still held (fy_key_release not yet called) stay
 * valid until released. NULL is ok. */
void fy_keys_free(fy_keys *kr);

/* Number of keys in the index (revoked ones included). */
size_t fy_keys_count(fy_keys *kr);

/* Creates a key from the template T (name, owner, rpm, tpm, concurrency,
 * burst, models, runners, hooks, expires_at; the other fields are ignored) at NOW
 * (unix seconds): makes the secret, its id ("key_" + 16 base64url chars),
 * prefix and hash, writes the store (durable) and adds it to the index.
 * On success the key text (NUL-terminated, FY_KEY_LEN chars) is in SECRET,
 * which the caller must wipe once shown, and the record in OUT (may be
 * NULL). Returns 0, FY_EINVAL (bad template: scopes, expiry, or a burst
 * fy_rl_check_burst refuses), FY_ENOMEM, FY_ECRYPTO or
 * FY_EIO; on error SECRET holds nothing. */
int fy_keys_create(fy_keys *kr, const fy_store_key *t, int64_t now, char secret[FY_SECRET_MAX],
                   fy_store_key *out);

/* Makes a new key from the template T at NOW without storing it: checks T
 * as fy_keys_create does, then fills OUT (id, prefix, hash, created_at; no
 * revocation) and SECRET (the key text, to show once and wipe). For a
 * keyring whose records are written elsewhere first (gateway/shared.h),
 * which then calls fy_keys_apply. Returns 0, FY_EINVAL, FY_ECRYPTO. */
int fy_keys_mint(const fy_store_key *t, int64_t now, char secret[FY_SECRET_MAX], fy_store_key *out);

/* Takes record R as it is, revocation included: written to the store
 * (fy_store_key_put) and then to the index, inserted or replacing the
 * entry with R's hash (its limiter keeps its history, as with update). How
 * a replica follows keys another replica created or changed. Returns 0,
 * FY_EINVAL, FY_ENOMEM or the store's error. */
int fy_keys_apply(fy_keys *kr, const fy_store_key *r);

/* Makes every limiter enforce each limit / SHARE (rounded down, at least 1
 * for a limit that is on): with SHARE replicas limiting one key each on
 * their own, together they admit no more than the key's limit. A replica
 * sets this to the number of live replicas while the shared limiter is
 * unreachable (gateway/shared.h); 1 restores the whole limits. History is
 * kept as with an update. */
void fy_keys_set_share(fy_keys *kr, int64_t share);

/* Applies the mutable fields of K (as fy_store_key_update) to the store and
 * then to the index: new limits apply to the next request (the limiter keeps
 * its history), new scopes and expiry likewise. Returns 0, FY_EINVAL,
 * FY_ENOENT or FY_EIO (the index is unchanged on error). */
int fy_keys_update(fy_keys *kr, const fy_store_key *k);

/* Revokes key ID at NOW in the store and then in the index: the next check
 * with that key gives FY_AUTH_REVOKED. Requests already admitted finish.
 * Returns 0, FY_ENOENT or FY_EIO (the index is unchanged on error). */
int fy_keys_revoke(fy_keys *kr, const char *id, int64_t now);

/* Looks up the key text (KEY, LEN) at NOW (unix seconds, for expiry). On
 * FY_AUTH_OK *OUT holds a reference the caller gives back with
 * fy_key_release; on any other outcome *OUT is NULL. Outcomes: OK,
 * MALFORMED, UNKNOWN, REVOKED, EXPIRED. */
fy_auth_outcome fy_keys_lookup(fy_keys *kr, const char *key, size_t len, int64_t now, fy_key **out);

/* fy_keys_parse + fy_keys_lookup: the whole credential check of a request. */
fy_auth_outcome fy_keys_authenticate(fy_keys *kr, const fy_http_header *h, size_t n, int64_t now,
                                     fy_key **out);

/* Whether key K may use NAME of kind KIND (a model name, runner name or hook
 * id): FY_AUTH_OK when the key's list for KIND is empty (any) or contains
 * NAME exactly, else the matching FY_AUTH_FORBIDDEN_*. A NULL or empty NAME
 * is allowed only by an empty list. */
fy_auth_outcome fy_keys_authorize(fy_keys *kr, fy_key *k, fy_scope_kind kind, const char *name);

/* The key's public id ("key_..."), for logs, metrics-free accounting and
 * usage. Valid while the reference is held. */
const char *fy_key_id(const fy_key *k);

/* The key's rate limiter (gateway/ratelimit.h). Valid while the reference
 * is held. */
fy_rl *fy_key_rl(fy_key *k);

/* Gives back a reference from fy_keys_lookup/authenticate. NULL is ok. */
void fy_key_release(fy_key *k);

/* Bytes the index uses now: table plus entries plus scope lists (what the
 * memory benchmark reports next to the RSS delta). */
size_t fy_keys_memory(fy_keys *kr);

#endif
