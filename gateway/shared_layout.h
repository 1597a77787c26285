/* shared_layout.h: where the shared state of several gateway replicas lives
 * in Redis (`ferry-gateway run --shared URL`), and how each record is spelt.
 * Every module that reads or writes the shared state names keys through
 * these macros only, so the layout is written down once.
 *
 * Hash tags. Redis Cluster puts a key in the slot of the text between its
 * first '{' and the next '}'. Everything one command or script touches
 * shares a tag:
 *   {cat}       the catalog: the deployment seed and every record the
 *               SQLite store holds (keys, runners, tokens, hooks), the
 *               replica registry. Admin-rate traffic; one slot, so a record
 *               and its indexes change in one MULTI or script.
 *   {k:KEYID}   one API key's hot state: its live limits and revocation
 *               (read by every admission), GCRA and token-bucket state,
 *               concurrency leases, usage per hour. Request-rate traffic,
 *               spread over the slots by key.
 *   {h:HOOKID}  one hook's replay guard and delivery stream.
 * The tests run a single node; the layout is the one a cluster needs.
 *
 * Records are JSON objects (gateway/shared_codec.h), one per hash field, so
 * a record changes as a whole; counters and limiter state are plain hash
 * fields so scripts can update them in place.
 *
 * Times: unix seconds in records (as in the SQLite store); the limiter
 * scripts use Redis's own clock (TIME) in microseconds, so replicas whose
 * clocks differ still share one timeline. */
#ifndef FY_GATEWAY_SHARED_LAYOUT_H
#define FY_GATEWAY_SHARED_LAYOUT_H

#define FY_SH_PREFIX "ferry:"

/* --- the catalog ({cat}) ------------------------------------------------------ */

/* Hash: the deployment seed `ferry-gateway init --shared` writes once:
 * runner-ca.crt, runner-ca.key, ca.crt, ca.key, server.crt, server.key,
 * admin.token, gateway.json (field = the data-dir file name, value = its
 * text), plus "created_at". Replicas materialise it into their data dir. */
#define FY_SH_DEPLOY FY_SH_PREFIX "{cat}:deploy"

/* Hash: key id -> key record (JSON, fy_store_key without last_used_at). */
#define FY_SH_KEYS FY_SH_PREFIX "{cat}:keys"
/* Hash: lowercase hex SHA-256 of a key's text -> key id. */
#define FY_SH_KEYHASH FY_SH_PREFIX "{cat}:keyhash"
/* Hash: runner name -> runner record (JSON, fy_store_runner). */
#define FY_SH_RUNNERS FY_SH_PREFIX "{cat}:runners"
/* Hash: lowercase hex SHA-256 of an enrollment token -> token record (JSON,
 * fy_store_token). Consumed by a script: check and mark in one step. */
#define FY_SH_TOKENS FY_SH_PREFIX "{cat}:tokens"
/* Hash: hook id -> hook record (JSON, fy_store_hook with its secrets in
 * base64, without the counters). */
#define FY_SH_HOOKS FY_SH_PREFIX "{cat}:hooks"
/* Sorted set: replica id -> time of its last heartbeat (unix ms). */
#define FY_SH_REPLICAS FY_SH_PREFIX "{cat}:replicas"
/* Hash: replica id -> what it announces (JSON: listeners, runners connected
 * to it with their connections), rewritten with every heartbeat. */
#define FY_SH_REPLICA_INFO FY_SH_PREFIX "{cat}:replica-info"

/* --- one API key ({k:KEYID}); ID is the key's public id "key_..." ---------------- */

/* Hash: the key's live state, which every admission reads: rpm, tpm, cc
 * (concurrency), burst, exp (expires_at, 0 never), rev (revoked_at, 0
 * active), ver (bumped by every change); and its limiter state, written by
 * the admissions: rl_tat (GCRA theoretical arrival time, µs), rl_tfull
 * (time the token bucket is full again, µs), and the limits they were
 * computed for: rl_t (the emission interval, µs), rl_tpm
 * (gateway/shared_limits.h). */
#define FY_SH_KEY_LIVE_FMT FY_SH_PREFIX "{k:%s}:live"
/* Sorted set: concurrency leases: lease id -> expiry (Redis time, ms). */
#define FY_SH_KEY_LEASES_FMT FY_SH_PREFIX "{k:%s}:cc"
/* Hash: usage: "HOUR:r|p|c|i|o" (HOUR the unix second the UTC hour starts;
 * requests, prompt and completion tokens, bytes in and out) -> count, and
 * "last" -> the key's last use (unix seconds). */
#define FY_SH_KEY_USAGE_FMT FY_SH_PREFIX "{k:%s}:usage"

/* --- one hook ({h:HOOKID}) ------------------------------------------------------- */

/* String, SET NX EX: a GitHub delivery id seen (the replay guard). */
#define FY_SH_HOOK_SEEN_FMT FY_SH_PREFIX "{h:%s}:seen:%s"
/* Stream: the hook's queued deliveries, consumed by group FY_SH_HOOK_GROUP. */
#define FY_SH_HOOK_STREAM_FMT FY_SH_PREFIX "{h:%s}:q"
#define FY_SH_HOOK_GROUP      "ferry"
/* String, SET NX PX: the replica delivering the hook's stream now (its
 * replica id), renewed while it delivers; one at a time keeps the order. */
#define FY_SH_HOOK_OWNER_FMT FY_SH_PREFIX "{h:%s}:owner"
/* Hash: stream entry id -> "ATTEMPTS NEXT_AT" (failed attempts so far, unix
 * second of the next one) for entries that failed at least once. */
#define FY_SH_HOOK_TRIES_FMT FY_SH_PREFIX "{h:%s}:tries"
/* Stream: the entries given up on (the fields of the queue's, plus
 * "attempts" and "error"). */
#define FY_SH_HOOK_DEAD_FMT FY_SH_PREFIX "{h:%s}:dead"

/* --- pub/sub channels -------------------------------------------------------------- */

/* Message: a key id whose record changed (created, updated, revoked). */
#define FY_SH_CHAN_KEYS FY_SH_PREFIX "keys"
/* Message: a runner name whose record changed (enrolled, revoked). */
#define FY_SH_CHAN_RUNNERS FY_SH_PREFIX "runners"
/* Message: a hook id whose record changed (created, rotated, deleted). */
#define FY_SH_CHAN_HOOKS FY_SH_PREFIX "hooks"

/* Longest key name these formats produce, with its NUL. */
#define FY_SH_KEYNAME_MAX 160

#endif
