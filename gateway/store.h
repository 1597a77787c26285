/* store.h: the gateway's durable state (runners, enrollment tokens; keys and
 * usage join in the keys milestone).
 *
 * The default backend is one SQLite file in the data dir, in WAL mode with
 * synchronous=FULL: when a write call returns 0 the change is on disk and
 * survives kill -9 or power loss. The schema is versioned and migrated
 * forward on open. Callers never see SQL: everything goes through these
 * functions, so another backend (Redis, for several gateway replicas) can be
 * added behind the same interface.
 *
 * Secrets never reach the store in clear: enrollment tokens are stored as
 * their SHA-256. All functions run on the caller's thread; a store is used
 * from one thread at a time. */
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

/* Fetches runner NAME. Returns 0 or FY_ENOENT. */
int fy_store_runner_get(fy_store *st, const char *name, fy_store_runner *out);

/* Marks runner NAME revoked at NOW. Returns 0 or FY_ENOENT. */
int fy_store_runner_revoke(fy_store *st, const char *name, int64_t now);

/* Calls CB for every runner, by name. */
int fy_store_runner_list(fy_store *st, void (*cb)(const fy_store_runner *r, void *arg), void *arg);

#endif
