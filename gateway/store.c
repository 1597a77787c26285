#include "gateway/store.h"

#include "common/err.h"
#include "common/log.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One pending usage cell: a key's usage in one hour, not yet flushed. */
typedef struct {
    char key_id[FY_STORE_KEY_ID_MAX]; /* "" = free slot */
    int64_t hour;
    int64_t last_used;
    fy_store_usage u;
} usage_cell;

struct fy_store {
    sqlite3 *db;
    int version;
    /* Pending usage: open addressing on (key_id, hour), linear probing,
     * capacity a power of two kept at most half full. Emptied by a flush. */
    usage_cell *cells;
    size_t ncells, capcells;
};

/* Each entry moves the schema from version i to i+1. Append only: a shipped
 * migration is never edited, so every existing store upgrades the same way. */
static const char *const migrations[] = {
    /* 1: runners and enrollment tokens. */
    "CREATE TABLE runners ("
    "  name TEXT PRIMARY KEY,"
    "  fingerprint TEXT NOT NULL,"
    "  serial TEXT NOT NULL,"
    "  enrolled_at INTEGER NOT NULL,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE enroll_tokens ("
    "  id TEXT PRIMARY KEY,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  runner_name TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL,"
    "  used_at INTEGER NOT NULL DEFAULT 0"
    ");",
    /* 2: API keys (hashed; scopes as JSON arrays of names) and usage per key
     * per hour. No foreign key from usage to api_keys: usage rows outlive
     * nothing we delete, and a flush must never fail on one odd row. */
    "CREATE TABLE api_keys ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  owner TEXT NOT NULL DEFAULT '',"
    "  prefix TEXT NOT NULL,"
    "  hash BLOB NOT NULL UNIQUE,"
    "  rpm INTEGER NOT NULL DEFAULT 0,"
    "  tpm INTEGER NOT NULL DEFAULT 0,"
    "  concurrency INTEGER NOT NULL DEFAULT 0,"
    "  models TEXT NOT NULL DEFAULT '[]',"
    "  runners TEXT NOT NULL DEFAULT '[]',"
    "  hooks TEXT NOT NULL DEFAULT '[]',"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL DEFAULT 0,"
    "  revoked_at INTEGER NOT NULL DEFAULT 0,"
    "  last_used_at INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE usage ("
    "  key_id TEXT NOT NULL,"
    "  hour INTEGER NOT NULL,"
    "  requests INTEGER NOT NULL DEFAULT 0,"
    "  prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    "  completion_tokens INTEGER NOT NULL DEFAULT 0,"
    "  bytes_in INTEGER NOT NULL DEFAULT 0,"
    "  bytes_out INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (key_id, hour)"
    ") WITHOUT ROWID;"
    "CREATE INDEX usage_by_hour ON usage(hour);",
    /* 3: webhooks, their replay records (GitHub delivery ids) and the durable
     * queue of async events. Secrets are kept as they are: HMAC needs them. */
    "CREATE TABLE hooks ("
    "  id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL,"
    "  runner TEXT NOT NULL,"
    "  path TEXT NOT NULL,"
    "  verify TEXT NOT NULL,"
    "  header TEXT NOT NULL DEFAULT '',"
    "  encoding TEXT NOT NULL DEFAULT 'hex',"
    "  ts_header TEXT NOT NULL DEFAULT '',"
    "  tolerance INTEGER NOT NULL,"
    "  async INTEGER NOT NULL DEFAULT 0,"
    "  rpm INTEGER NOT NULL DEFAULT 0,"
    "  max_body INTEGER NOT NULL,"
    "  secret BLOB NOT NULL,"
    "  prev_secret BLOB NOT NULL DEFAULT x'',"
    "  prev_until INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  delivered INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE hook_seen ("
    "  hook_id TEXT NOT NULL,"
    "  delivery TEXT NOT NULL,"
    "  seen_at INTEGER NOT NULL,"
    "  PRIMARY KEY (hook_id, delivery)"
    ") WITHOUT ROWID;"
    "CREATE INDEX hook_seen_by_time ON hook_seen(seen_at);"
    "CREATE TABLE hook_queue ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  hook_id TEXT NOT NULL,"
    "  delivery_id TEXT NOT NULL,"
    "  target TEXT NOT NULL,"
    "  headers TEXT NOT NULL,"
    "  body BLOB NOT NULL,"
    "  accepted_at INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER NOT NULL DEFAULT 0,"
    "  dead INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT ''"
    ");"
    "CREATE INDEX hook_queue_by_hook ON hook_queue(hook_id, dead, seq);",
    /* 4: a key's burst (requests admitted at once). 0 keeps the default of
     * gateway/ratelimit.h, ceil(rpm / 6), so existing keys behave as before. */
    "ALTER TABLE api_keys ADD COLUMN burst INTEGER NOT NULL DEFAULT 0;",
};
#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static int db_err(fy_store *st, const char *what)
{
    FY_ERROR("store", "%s: %s", what, sqlite3_errmsg(st->db));
    return FY_EIO;
}

static int exec(fy_store *st, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        FY_ERROR("store", "%s", msg ? msg : "exec failed");
        sqlite3_free(msg);
        return FY_EIO;
    }
    return 0;
}

static int migrate(fy_store *st, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int v = 0;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        v = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    if (v > N_MIGRATIONS) {
        snprintf(err, errlen, "store schema version %d is newer than this gateway (%d)", v,
                 N_MIGRATIONS);
        return FY_ENOTSUP;
    }
    for (; v < N_MIGRATIONS; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version = %d;", v + 1);
        /* Each step and its version bump commit together or not at all. */
        if (exec(st, "BEGIN IMMEDIATE;") || exec(st, migrations[v]) || exec(st, bump) ||
            exec(st, "COMMIT;")) {
            exec(st, "ROLLBACK;");
            snprintf(err, errlen, "store migration to version %d failed: %s", v + 1,
                     sqlite3_errmsg(st->db));
            return FY_EIO;
        }
    }
    st->version = v;
    return 0;
}

int fy_store_open(const char *path, fy_store **out, char *err, size_t errlen)
{
    fy_store *st = calloc(1, sizeof *st);
    if (!st) {
        return FY_ENOMEM;
    }
    int rc = sqlite3_open_v2(
        path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "store %s: %s", path,
                 st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        fy_store_close(st);
        return FY_EIO;
    }
    sqlite3_busy_timeout(st->db, 5000);
    /* WAL + FULL: a commit is fsynced before sqlite3_step returns. */
    if (exec(st, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")) {
        snprintf(err, errlen, "store %s: cannot enable WAL: %s", path, sqlite3_errmsg(st->db));
        fy_store_close(st);
        return FY_EIO;
    }
    rc = migrate(st, err, errlen);
    if (rc) {
        fy_store_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

void fy_store_close(fy_store *st)
{
    if (!st) {
        return;
    }
    if (st->ncells && fy_store_usage_flush(st)) {
        FY_WARN("store", "closing with %zu usage cells unflushed", st->ncells);
    }
    free(st->cells);
    sqlite3_close_v2(st->db);
    free(st);
}

int fy_store_schema_version(fy_store *st)
{
    return st->version;
}

int fy_store_valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= FY_STORE_NAME_MAX || name[0] == '-') {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return 0;
        }
    }
    return 1;
}

static int prepare(fy_store *st, const char *sql, sqlite3_stmt **q)
{
    if (sqlite3_prepare_v2(st->db, sql, -1, q, NULL) != SQLITE_OK) {
        return db_err(st, "prepare");
    }
    return 0;
}

static void copy_text(char *dst, size_t n, sqlite3_stmt *q, int col)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

int fy_store_token_add(fy_store *st, const char *id, const uint8_t hash[32],
                       const char *runner_name, int64_t now, int64_t expires_at)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO enroll_tokens(id, hash, runner_name, created_at, expires_at)"
                     " VALUES(?, ?, ?, ?, ?)",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 2, hash, 32, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, runner_name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, now);
    sqlite3_bind_int64(q, 5, expires_at);
    int step = sqlite3_step(q);
    if (step == SQLITE_DONE) {
        rc = 0;
    } else if (step == SQLITE_CONSTRAINT) {
        rc = FY_EEXIST; /* same id or same secret hash */
    } else {
        rc = db_err(st, "token add");
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_token_consume(fy_store *st, const uint8_t hash[32], int64_t now,
                           char name[FY_STORE_NAME_MAX])
{
    sqlite3_stmt *q = NULL;
    int rc = 0;
    /* One statement decides and marks, so two racing enrollments cannot both
     * succeed; RETURNING tells us which row (if any) was consumed. */
    rc = prepare(st,
                 "UPDATE enroll_tokens SET used_at = ?2 WHERE hash = ?1 AND used_at = 0 AND "
                 "expires_at > ?2 RETURNING runner_name",
                 &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        copy_text(name, FY_STORE_NAME_MAX, q, 0);
        step = sqlite3_step(q);
        sqlite3_finalize(q);
        return step == SQLITE_DONE ? 0 : db_err(st, "token consume");
    }
    sqlite3_finalize(q);
    if (step != SQLITE_DONE) {
        return db_err(st, "token consume");
    }
    /* Nothing consumed: say why. */
    rc = prepare(st, "SELECT used_at, expires_at FROM enroll_tokens WHERE hash = ?", &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_ROW) {
        rc = FY_ENOENT;
    } else if (sqlite3_column_int64(q, 0) != 0) {
        rc = FY_EEXIST;
    } else {
        rc = FY_ETIMEDOUT;
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_token_list_hashed(
    fy_store *st, void (*cb)(const fy_store_token *t, const uint8_t hash[32], void *arg), void *arg)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "SELECT id, runner_name, created_at, expires_at, used_at, hash "
                     "FROM enroll_tokens ORDER BY created_at DESC, id",
                     &q);
    if (rc) {
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        fy_store_token t;
        uint8_t hash[32] = {0};
        copy_text(t.id, sizeof t.id, q, 0);
        copy_text(t.runner_name, sizeof t.runner_name, q, 1);
        t.created_at = sqlite3_column_int64(q, 2);
        t.expires_at = sqlite3_column_int64(q, 3);
        t.used_at = sqlite3_column_int64(q, 4);
        if (sqlite3_column_bytes(q, 5) == 32) {
            memcpy(hash, sqlite3_column_blob(q, 5), 32);
        }
        cb(&t, hash, arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "token list");
    sqlite3_finalize(q);
    return rc;
}

typedef struct {
    void (*cb)(const fy_store_token *t, void *arg);
    void *arg;
} token_list_ctx;

static void token_list_unhashed(const fy_store_token *t, const uint8_t hash[32], void *arg)
{
    (void)hash;
    token_list_ctx *c = arg;
    c->cb(t, c->arg);
}

int fy_store_token_list(fy_store *st, void (*cb)(const fy_store_token *t, void *arg), void *arg)
{
    token_list_ctx c = {cb, arg};
    return fy_store_token_list_hashed(st, token_list_unhashed, &c);
}

int fy_store_runner_enroll(fy_store *st, const char *name, const char *fingerprint,
                           const char *serial, int64_t now)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO runners(name, fingerprint, serial, enrolled_at, revoked_at) "
                     "VALUES(?1, ?2, ?3, ?4, 0) ON CONFLICT(name) DO UPDATE SET "
                     "fingerprint = ?2, serial = ?3, enrolled_at = ?4, revoked_at = 0",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, fingerprint, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, serial, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, now);
    rc = sqlite3_step(q) == SQLITE_DONE ? 0 : db_err(st, "runner enroll");
    sqlite3_finalize(q);
    return rc;
}

int fy_store_runner_put(fy_store *st, const fy_store_runner *r)
{
    if (!r || !fy_store_valid_name(r->name) || r->revoked_at < 0) {
        return FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO runners(name, fingerprint, serial, enrolled_at, revoked_at) "
                     "VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(name) DO UPDATE SET "
                     "fingerprint = ?2, serial = ?3, enrolled_at = ?4, revoked_at = ?5",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, r->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->fingerprint, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, r->serial, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, r->enrolled_at);
    sqlite3_bind_int64(q, 5, r->revoked_at);
    rc = sqlite3_step(q) == SQLITE_DONE ? 0 : db_err(st, "runner put");
    sqlite3_finalize(q);
    return rc;
}

static void read_runner(sqlite3_stmt *q, fy_store_runner *r)
{
    copy_text(r->name, sizeof r->name, q, 0);
    copy_text(r->fingerprint, sizeof r->fingerprint, q, 1);
    copy_text(r->serial, sizeof r->serial, q, 2);
    r->enrolled_at = sqlite3_column_int64(q, 3);
    r->revoked_at = sqlite3_column_int64(q, 4);
}

int fy_store_runner_get(fy_store *st, const char *name, fy_store_runner *out)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "SELECT name, fingerprint, serial, enrolled_at, revoked_at FROM runners "
                     "WHERE name = ?",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        read_runner(q, out);
        rc = 0;
    } else {
        rc = step == SQLITE_DONE ? FY_ENOENT : db_err(st, "runner get");
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_runner_revoke(fy_store *st, const char *name, int64_t now)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st, "UPDATE runners SET revoked_at = ? WHERE name = ?", &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(q, 1, now);
    sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    if (sqlite3_step(q) != SQLITE_DONE) {
        rc = db_err(st, "runner revoke");
    } else {
        rc = sqlite3_changes(st->db) == 1 ? 0 : FY_ENOENT;
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_runner_list(fy_store *st, void (*cb)(const fy_store_runner *r, void *arg), void *arg)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "SELECT name, fingerprint, serial, enrolled_at, revoked_at FROM runners "
                     "ORDER BY name",
                     &q);
    if (rc) {
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        fy_store_runner r;
        read_runner(q, &r);
        cb(&r, arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "runner list");
    sqlite3_finalize(q);
    return rc;
}

/* --- API keys --------------------------------------------------------------- */

static int valid_key_id(const char *id)
{
    size_t n = id ? strnlen(id, FY_STORE_KEY_ID_MAX) : 0;
    if (n == 0 || n >= FY_STORE_KEY_ID_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

/* Free text (names, owners): MIN..MAX-1 bytes, no ASCII control characters;
 * UTF-8 passes through untouched. */
static int valid_text(const char *s, size_t min, size_t max)
{
    size_t n = strnlen(s, max);
    if (n < min || n >= max) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

int fy_store_scope_valid(const char *s)
{
    if (!s) {
        return 0;
    }
    size_t n = strnlen(s, FY_STORE_SCOPE_MAX);
    if (n >= FY_STORE_SCOPE_MAX) {
        return 0;
    }
    size_t item = 0;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == ',' || c == 0) {
            /* An empty item is only allowed as the whole (empty) list. */
            if (item == 0 && n > 0) {
                return 0;
            }
            item = 0;
            continue;
        }
        if (c <= 0x20 || c >= 0x7f || ++item > FY_STORE_SCOPE_ITEM_MAX) {
            return 0;
        }
    }
    return 1;
}

#define LIMIT_MAX ((int64_t)1 << 40) /* far above any real limit; keeps rate math in range */

static int limit_ok(int64_t v)
{
    return v >= 0 && v <= LIMIT_MAX;
}

const char *fy_store_key_check(const fy_store_key *k)
{
    return !valid_key_id(k->id)                          ? "id"
           : !valid_text(k->name, 1, sizeof k->name)     ? "name"
           : !valid_text(k->owner, 0, sizeof k->owner)   ? "owner"
           : !valid_text(k->prefix, 1, sizeof k->prefix) ? "prefix"
           : !limit_ok(k->rpm)                           ? "rpm"
           : !limit_ok(k->tpm)                           ? "tpm"
           : !limit_ok(k->concurrency)                   ? "concurrency"
           : !limit_ok(k->burst)                         ? "burst"
           : k->expires_at < 0                           ? "expires_at"
           : !fy_store_scope_valid(k->models)            ? "models"
           : !fy_store_scope_valid(k->runners)           ? "runners"
           : !fy_store_scope_valid(k->hooks)             ? "hooks"
                                                         : NULL;
}

static int valid_key(const fy_store_key *k)
{
    return fy_store_key_check(k) == NULL;
}

/* "a,b" -> "[\"a\",\"b\"]" (malloc'd), "" -> "[]". NULL when out of memory. */
static char *scope_to_json(const char *list)
{
    json_t *arr = json_array();
    char *out = NULL;
    if (!arr) {
        return NULL;
    }
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (json_array_append_new(arr, json_stringn(p, n))) {
            goto out;
        }
        p += n + (e ? 1 : 0);
    }
    out = json_dumps(arr, JSON_COMPACT);
out:
    json_decref(arr);
    return out;
}

/* The reverse; fails (FY_EIO) on anything that is not an array of valid
 * names, so a damaged row never widens a key's scopes. */
static int scope_from_json(const char *text, char out[FY_STORE_SCOPE_MAX])
{
    json_error_t jerr;
    json_t *arr = text ? json_loads(text, 0, &jerr) : NULL;
    size_t len = 0, i;
    json_t *v;
    int rc = FY_EIO;
    out[0] = 0;
    if (!json_is_array(arr)) {
        goto out;
    }
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(v);
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || len + n + 2 > FY_STORE_SCOPE_MAX) {
            goto out;
        }
        if (len) {
            out[len++] = ',';
        }
        memcpy(out + len, s, n);
        len += n;
        out[len] = 0;
    }
    rc = fy_store_scope_valid(out) ? 0 : FY_EIO;
out:
    if (rc) {
        out[0] = 0;
    }
    json_decref(arr);
    return rc;
}

#define KEY_COLUMNS                                                                  \
    "id, name, owner, prefix, hash, rpm, tpm, concurrency, models, runners, hooks, " \
    "created_at, expires_at, revoked_at, last_used_at, burst"

static int read_key(sqlite3_stmt *q, fy_store_key *k)
{
    memset(k, 0, sizeof *k);
    copy_text(k->id, sizeof k->id, q, 0);
    copy_text(k->name, sizeof k->name, q, 1);
    copy_text(k->owner, sizeof k->owner, q, 2);
    copy_text(k->prefix, sizeof k->prefix, q, 3);
    if (sqlite3_column_bytes(q, 4) != 32) {
        return FY_EIO;
    }
    memcpy(k->hash, sqlite3_column_blob(q, 4), 32);
    k->rpm = sqlite3_column_int64(q, 5);
    k->tpm = sqlite3_column_int64(q, 6);
    k->concurrency = sqlite3_column_int64(q, 7);
    if (scope_from_json((const char *)sqlite3_column_text(q, 8), k->models) ||
        scope_from_json((const char *)sqlite3_column_text(q, 9), k->runners) ||
        scope_from_json((const char *)sqlite3_column_text(q, 10), k->hooks)) {
        return FY_EIO;
    }
    k->created_at = sqlite3_column_int64(q, 11);
    k->expires_at = sqlite3_column_int64(q, 12);
    k->revoked_at = sqlite3_column_int64(q, 13);
    k->last_used_at = sqlite3_column_int64(q, 14);
    k->burst = sqlite3_column_int64(q, 15);
    return 0;
}

/* Binds the three scope lists as JSON to parameters FIRST..FIRST+2. */
static int bind_scopes(sqlite3_stmt *q, int first, const fy_store_key *k)
{
    const char *lists[3] = {k->models, k->runners, k->hooks};
    for (int i = 0; i < 3; i++) {
        char *j = scope_to_json(lists[i]);
        if (!j) {
            return FY_ENOMEM;
        }
        sqlite3_bind_text(q, first + i, j, -1, free);
    }
    return 0;
}

int fy_store_key_create(fy_store *st, const fy_store_key *k)
{
    if (!k || !valid_key(k)) {
        return FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO api_keys(id, name, owner, prefix, hash, rpm, tpm, concurrency, "
                     "models, runners, hooks, created_at, expires_at, burst) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, k->owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, k->prefix, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 5, k->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, k->rpm);
    sqlite3_bind_int64(q, 7, k->tpm);
    sqlite3_bind_int64(q, 8, k->concurrency);
    sqlite3_bind_int64(q, 12, k->created_at);
    sqlite3_bind_int64(q, 13, k->expires_at);
    sqlite3_bind_int64(q, 14, k->burst);
    if ((rc = bind_scopes(q, 9, k)) == 0) {
        int step = sqlite3_step(q);
        if (step == SQLITE_DONE) {
            rc = 0;
        } else if (step == SQLITE_CONSTRAINT) {
            rc = FY_EEXIST; /* same id or same key hash */
        } else {
            rc = db_err(st, "key create");
        }
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_key_put(fy_store *st, const fy_store_key *k)
{
    if (!k || !valid_key(k) || k->revoked_at < 0) {
        return FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO api_keys(id, name, owner, prefix, hash, rpm, tpm, concurrency, "
                     "models, runners, hooks, created_at, expires_at, burst, revoked_at) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
                     "ON CONFLICT(id) DO UPDATE SET name = ?2, owner = ?3, prefix = ?4, "
                     "hash = ?5, rpm = ?6, tpm = ?7, concurrency = ?8, models = ?9, "
                     "runners = ?10, hooks = ?11, created_at = ?12, expires_at = ?13, "
                     "burst = ?14, revoked_at = ?15",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, k->owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, k->prefix, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 5, k->hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, k->rpm);
    sqlite3_bind_int64(q, 7, k->tpm);
    sqlite3_bind_int64(q, 8, k->concurrency);
    sqlite3_bind_int64(q, 12, k->created_at);
    sqlite3_bind_int64(q, 13, k->expires_at);
    sqlite3_bind_int64(q, 14, k->burst);
    sqlite3_bind_int64(q, 15, k->revoked_at);
    if ((rc = bind_scopes(q, 9, k)) == 0) {
        int step = sqlite3_step(q);
        rc = step == SQLITE_DONE         ? 0
             : step == SQLITE_CONSTRAINT ? FY_EEXIST /* another id has this hash */
                                         : db_err(st, "key put");
    }
    sqlite3_finalize(q);
    return rc;
}

static int key_get(fy_store *st, const char *sql, const char *id, const uint8_t *hash,
                   fy_store_key *out)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st, sql, &q);
    if (rc) {
        return rc;
    }
    if (id) {
        sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
    }
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        rc = read_key(q, out);
    } else {
        rc = step == SQLITE_DONE ? FY_ENOENT : db_err(st, "key get");
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_key_get(fy_store *st, const char *id, fy_store_key *out)
{
    if (!valid_key_id(id)) {
        return FY_ENOENT;
    }
    return key_get(st, "SELECT " KEY_COLUMNS " FROM api_keys WHERE id = ?", id, NULL, out);
}

int fy_store_key_get_by_hash(fy_store *st, const uint8_t hash[32], fy_store_key *out)
{
    return key_get(st, "SELECT " KEY_COLUMNS " FROM api_keys WHERE hash = ?", NULL, hash, out);
}

int fy_store_key_update(fy_store *st, const fy_store_key *k)
{
    if (!k || !valid_key(k)) {
        return k && !valid_key_id(k->id) ? FY_ENOENT : FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "UPDATE api_keys SET name = ?2, owner = ?3, rpm = ?4, tpm = ?5, "
                     "concurrency = ?6, models = ?7, runners = ?8, hooks = ?9, expires_at = ?10, "
                     "burst = ?11 WHERE id = ?1",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, k->owner, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, k->rpm);
    sqlite3_bind_int64(q, 5, k->tpm);
    sqlite3_bind_int64(q, 6, k->concurrency);
    sqlite3_bind_int64(q, 10, k->expires_at);
    sqlite3_bind_int64(q, 11, k->burst);
    if ((rc = bind_scopes(q, 7, k)) == 0) {
        if (sqlite3_step(q) != SQLITE_DONE) {
            rc = db_err(st, "key update");
        } else {
            rc = sqlite3_changes(st->db) == 1 ? 0 : FY_ENOENT;
        }
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_key_revoke(fy_store *st, const char *id, int64_t now)
{
    if (!valid_key_id(id)) {
        return FY_ENOENT;
    }
    sqlite3_stmt *q = NULL;
    /* CASE keeps the first revocation time; the row still counts as changed,
     * so sqlite3_changes tells "exists" from "unknown". */
    int rc = prepare(st,
                     "UPDATE api_keys SET revoked_at = CASE WHEN revoked_at = 0 THEN ?2 "
                     "ELSE revoked_at END WHERE id = ?1",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now);
    if (sqlite3_step(q) != SQLITE_DONE) {
        rc = db_err(st, "key revoke");
    } else {
        rc = sqlite3_changes(st->db) == 1 ? 0 : FY_ENOENT;
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_key_list(fy_store *st, void (*cb)(const fy_store_key *k, void *arg), void *arg)
{
    sqlite3_stmt *q = NULL;
    fy_store_key *k = malloc(sizeof *k); /* 3.5 KiB: not on a callback-heavy stack */
    int rc = k ? prepare(st, "SELECT " KEY_COLUMNS " FROM api_keys ORDER BY created_at, id", &q)
               : FY_ENOMEM;
    if (rc) {
        free(k);
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        if ((rc = read_key(q, k)) != 0) {
            FY_ERROR("store", "key list: damaged row for key %s", k->id);
            break;
        }
        cb(k, arg);
    }
    if (!rc) {
        rc = step == SQLITE_DONE ? 0 : db_err(st, "key list");
    }
    sqlite3_finalize(q);
    free(k);
    return rc;
}

/* --- usage -------------------------------------------------------------------- */

static uint64_t cell_hash(const char *key_id, int64_t hour)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = key_id; *p; p++) {
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    }
    return (h ^ (uint64_t)hour) * 1099511628211ull;
}

static usage_cell *cell_find(usage_cell *cells, size_t cap, const char *key_id, int64_t hour)
{
    size_t i = cell_hash(key_id, hour) & (cap - 1);
    while (cells[i].key_id[0] && !(cells[i].hour == hour && strcmp(cells[i].key_id, key_id) == 0)) {
        i = (i + 1) & (cap - 1);
    }
    return &cells[i];
}

static int cells_grow(fy_store *st)
{
    size_t cap = st->capcells ? st->capcells * 2 : 64;
    usage_cell *cells = calloc(cap, sizeof *cells);
    if (!cells) {
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < st->capcells; i++) {
        if (st->cells[i].key_id[0]) {
            *cell_find(cells, cap, st->cells[i].key_id, st->cells[i].hour) = st->cells[i];
        }
    }
    free(st->cells);
    st->cells = cells;
    st->capcells = cap;
    return 0;
}

int fy_store_usage_add(fy_store *st, const char *key_id, int64_t now, const fy_store_usage *delta)
{
    if (!valid_key_id(key_id) || !delta) {
        return FY_EINVAL;
    }
    int64_t hour = now - ((now % 3600) + 3600) % 3600;
    if (st->ncells >= FY_STORE_USAGE_MAX_PENDING) {
        /* A flood of distinct keys: pay one transaction now rather than
         * grow without bound. On failure the cells stay and we keep going
         * while memory allows. */
        fy_store_usage_flush(st);
    }
    if ((st->ncells + 1) * 2 > st->capcells && cells_grow(st)) {
        return FY_ENOMEM;
    }
    usage_cell *c = cell_find(st->cells, st->capcells, key_id, hour);
    if (!c->key_id[0]) {
        snprintf(c->key_id, sizeof c->key_id, "%s", key_id);
        c->hour = hour;
        st->ncells++;
    }
    c->u.requests += delta->requests;
    c->u.prompt_tokens += delta->prompt_tokens;
    c->u.completion_tokens += delta->completion_tokens;
    c->u.bytes_in += delta->bytes_in;
    c->u.bytes_out += delta->bytes_out;
    if (now > c->last_used) {
        c->last_used = now;
    }
    return 0;
}

size_t fy_store_usage_pending(const fy_store *st)
{
    return st->ncells;
}

int fy_store_usage_flush(fy_store *st)
{
    if (st->ncells == 0) {
        return 0;
    }
    sqlite3_stmt *add = NULL, *used = NULL;
    int rc = prepare(st,
                     "INSERT INTO usage(key_id, hour, requests, prompt_tokens, completion_tokens, "
                     "bytes_in, bytes_out) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) "
                     "ON CONFLICT(key_id, hour) DO UPDATE SET "
                     "requests = requests + excluded.requests, "
                     "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
                     "completion_tokens = completion_tokens + excluded.completion_tokens, "
                     "bytes_in = bytes_in + excluded.bytes_in, "
                     "bytes_out = bytes_out + excluded.bytes_out",
                     &add);
    if (!rc) {
        rc = prepare(st, "UPDATE api_keys SET last_used_at = MAX(last_used_at, ?2) WHERE id = ?1",
                     &used);
    }
    if (!rc) {
        rc = exec(st, "BEGIN IMMEDIATE;");
    }
    if (rc) {
        goto out;
    }
    for (size_t i = 0; i < st->capcells && !rc; i++) {
        const usage_cell *c = &st->cells[i];
        if (!c->key_id[0]) {
            continue;
        }
        sqlite3_bind_text(add, 1, c->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(add, 2, c->hour);
        sqlite3_bind_int64(add, 3, (int64_t)c->u.requests);
        sqlite3_bind_int64(add, 4, (int64_t)c->u.prompt_tokens);
        sqlite3_bind_int64(add, 5, (int64_t)c->u.completion_tokens);
        sqlite3_bind_int64(add, 6, (int64_t)c->u.bytes_in);
        sqlite3_bind_int64(add, 7, (int64_t)c->u.bytes_out);
        sqlite3_bind_text(used, 1, c->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(used, 2, c->last_used);
        if (sqlite3_step(add) != SQLITE_DONE || sqlite3_step(used) != SQLITE_DONE) {
            rc = db_err(st, "usage flush");
        }
        sqlite3_reset(add);
        sqlite3_reset(used);
    }
    /* One fsync for the whole batch; on any failure nothing is committed and
     * every cell stays pending for the next flush. */
    if (rc || exec(st, "COMMIT;")) {
        exec(st, "ROLLBACK;");
        rc = FY_EIO;
        goto out;
    }
    memset(st->cells, 0, st->capcells * sizeof *st->cells);
    st->ncells = 0;
out:
    sqlite3_finalize(add);
    sqlite3_finalize(used);
    return rc;
}

int fy_store_usage_list(fy_store *st, const char *key_id, int64_t from, int64_t to, int per_hour,
                        void (*cb)(const fy_store_usage_row *row, void *arg), void *arg)
{
    int rc = fy_store_usage_flush(st);
    if (rc) {
        return rc;
    }
    sqlite3_stmt *q = NULL;
    rc = prepare(st,
                 per_hour ? "SELECT key_id, hour, requests, prompt_tokens, completion_tokens, "
                            "bytes_in, bytes_out FROM usage WHERE (?1 IS NULL OR key_id = ?1) "
                            "AND hour >= ?2 AND hour < ?3 ORDER BY key_id, hour"
                          : "SELECT key_id, 0, SUM(requests), SUM(prompt_tokens), "
                            "SUM(completion_tokens), SUM(bytes_in), SUM(bytes_out) FROM usage "
                            "WHERE (?1 IS NULL OR key_id = ?1) AND hour >= ?2 AND hour < ?3 "
                            "GROUP BY key_id ORDER BY key_id",
                 &q);
    if (rc) {
        return rc;
    }
    if (key_id) {
        sqlite3_bind_text(q, 1, key_id, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(q, 1);
    }
    sqlite3_bind_int64(q, 2, from);
    sqlite3_bind_int64(q, 3, to);
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        fy_store_usage_row r;
        copy_text(r.key_id, sizeof r.key_id, q, 0);
        r.hour = sqlite3_column_int64(q, 1);
        r.u.requests = (uint64_t)sqlite3_column_int64(q, 2);
        r.u.prompt_tokens = (uint64_t)sqlite3_column_int64(q, 3);
        r.u.completion_tokens = (uint64_t)sqlite3_column_int64(q, 4);
        r.u.bytes_in = (uint64_t)sqlite3_column_int64(q, 5);
        r.u.bytes_out = (uint64_t)sqlite3_column_int64(q, 6);
        cb(&r, arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "usage list");
    sqlite3_finalize(q);
    return rc;
}

/* --- webhooks ------------------------------------------------------------------- */

static int valid_hook_id(const char *id)
{
    size_t n = id ? strnlen(id, FY_STORE_HOOK_ID_MAX) : 0;
    if (n < 4 || n >= FY_STORE_HOOK_ID_MAX || strncmp(id, "hk_", 3) != 0) {
        return 0;
    }
    for (size_t i = 3; i < n; i++) {
        char c = id[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

static int valid_header_name(const char *s, int optional)
{
    size_t n = strnlen(s, FY_STORE_HOOK_HDR_MAX);
    if (n == 0 || n >= FY_STORE_HOOK_HDR_MAX) {
        return optional && n == 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

const char *fy_store_hook_check(const fy_store_hook *h)
{
    static const char *const kinds[] = {"github", "stripe", "slack", "hmac-sha256", "none"};
    int kind_ok = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        kind_ok |= strncmp(h->verify, kinds[i], sizeof h->verify) == 0;
    }
    int generic = strncmp(h->verify, "hmac-sha256", sizeof h->verify) == 0;
    size_t pl = strnlen(h->path, sizeof h->path);
    int path_ok = pl > 0 && pl < sizeof h->path && h->path[0] == '/';
    for (size_t i = 0; path_ok && i < pl; i++) {
        path_ok = h->path[i] > 0x20 && h->path[i] < 0x7f && h->path[i] != '#';
    }
    int enc_ok = strncmp(h->encoding, "hex", sizeof h->encoding) == 0 ||
                 strncmp(h->encoding, "base64", sizeof h->encoding) == 0;
    return !valid_hook_id(h->id)                                                ? "id"
           : !valid_text(h->name, 1, sizeof h->name)                            ? "name"
           : !fy_store_valid_name(h->runner)                                    ? "runner"
           : !path_ok                                                           ? "path"
           : !kind_ok                                                           ? "verify"
           : generic && !valid_header_name(h->header, 0)                        ? "header"
           : generic && !valid_header_name(h->ts_header, 1)                     ? "ts_header"
           : generic && !enc_ok                                                 ? "encoding"
           : h->tolerance_s < 1 || h->tolerance_s > 86400 * 7                   ? "tolerance_s"
           : !limit_ok(h->rpm)                                                  ? "rpm"
           : h->max_body < 1 || h->max_body > (int64_t)1 << 40                  ? "max_body"
           : h->secret_len > FY_STORE_HOOK_SECRET_MAX                           ? "secret"
           : h->secret_len == 0 && strncmp(h->verify, "none", sizeof h->verify) ? "secret"
                                                                                : NULL;
}

static int valid_hook(const fy_store_hook *h)
{
    return fy_store_hook_check(h) == NULL;
}

#define HOOK_INSERT                                                                   \
    "INSERT INTO hooks(id, name, runner, path, verify, header, encoding, ts_header, " \
    "tolerance, async, rpm, max_body, secret, prev_secret, prev_until, created_at) "  \
    "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"

/* Runs SQL (HOOK_INSERT and what follows) with H's record fields bound. */
static int hook_write(fy_store *st, const char *sql, const fy_store_hook *h, const char *what)
{
    if (!h || !valid_hook(h) || h->prev_len > FY_STORE_HOOK_SECRET_MAX) {
        return FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st, sql, &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, h->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, h->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, h->runner, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, h->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, h->verify, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, h->header, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 7, h->encoding[0] ? h->encoding : "hex", -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 8, h->ts_header, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 9, h->tolerance_s);
    sqlite3_bind_int(q, 10, h->async ? 1 : 0);
    sqlite3_bind_int64(q, 11, h->rpm);
    sqlite3_bind_int64(q, 12, h->max_body);
    sqlite3_bind_blob(q, 13, h->secret, (int)h->secret_len, SQLITE_STATIC);
    sqlite3_bind_blob(q, 14, h->prev_secret, (int)h->prev_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 15, h->prev_until);
    sqlite3_bind_int64(q, 16, h->created_at);
    int step = sqlite3_step(q);
    rc = step == SQLITE_DONE ? 0 : step == SQLITE_CONSTRAINT ? FY_EEXIST : db_err(st, what);
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hook_create(fy_store *st, const fy_store_hook *h)
{
    return hook_write(st, HOOK_INSERT, h, "hook create");
}

int fy_store_hook_put(fy_store *st, const fy_store_hook *h)
{
    return hook_write(st,
                      HOOK_INSERT " ON CONFLICT(id) DO UPDATE SET name = ?2, runner = ?3, "
                                  "path = ?4, verify = ?5, header = ?6, encoding = ?7, "
                                  "ts_header = ?8, tolerance = ?9, async = ?10, rpm = ?11, "
                                  "max_body = ?12, secret = ?13, prev_secret = ?14, "
                                  "prev_until = ?15, created_at = ?16",
                      h, "hook put");
}

#define HOOK_COLUMNS                                                                   \
    "h.id, h.name, h.runner, h.path, h.verify, h.header, h.encoding, h.ts_header, "    \
    "h.tolerance, h.async, h.rpm, h.max_body, h.secret, h.prev_secret, h.prev_until, " \
    "h.created_at, h.delivered"

static void copy_blob(uint8_t *dst, size_t *len, sqlite3_stmt *q, int col)
{
    int n = sqlite3_column_bytes(q, col);
    const void *p = sqlite3_column_blob(q, col);
    *len = 0;
    if (p && n > 0 && (size_t)n <= FY_STORE_HOOK_SECRET_MAX) {
        memcpy(dst, p, (size_t)n);
        *len = (size_t)n;
    }
}

static void read_hook(sqlite3_stmt *q, fy_store_hook *h, int secrets)
{
    memset(h, 0, sizeof *h);
    copy_text(h->id, sizeof h->id, q, 0);
    copy_text(h->name, sizeof h->name, q, 1);
    copy_text(h->runner, sizeof h->runner, q, 2);
    copy_text(h->path, sizeof h->path, q, 3);
    copy_text(h->verify, sizeof h->verify, q, 4);
    copy_text(h->header, sizeof h->header, q, 5);
    copy_text(h->encoding, sizeof h->encoding, q, 6);
    copy_text(h->ts_header, sizeof h->ts_header, q, 7);
    h->tolerance_s = sqlite3_column_int64(q, 8);
    h->async = sqlite3_column_int(q, 9);
    h->rpm = sqlite3_column_int64(q, 10);
    h->max_body = sqlite3_column_int64(q, 11);
    if (secrets) {
        copy_blob(h->secret, &h->secret_len, q, 12);
        copy_blob(h->prev_secret, &h->prev_len, q, 13);
    }
    h->prev_until = sqlite3_column_int64(q, 14);
    h->created_at = sqlite3_column_int64(q, 15);
    h->delivered = sqlite3_column_int64(q, 16);
}

int fy_store_hook_get(fy_store *st, const char *id, fy_store_hook *out)
{
    if (!valid_hook_id(id)) {
        return FY_ENOENT;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st, "SELECT " HOOK_COLUMNS " FROM hooks h WHERE h.id = ?", &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        read_hook(q, out, 1);
        rc = 0;
    } else {
        rc = step == SQLITE_DONE ? FY_ENOENT : db_err(st, "hook get");
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hook_list(fy_store *st, void (*cb)(const fy_store_hook *h, void *arg), void *arg)
{
    sqlite3_stmt *q = NULL;
    fy_store_hook *h = malloc(sizeof *h);
    int rc = h ? prepare(st,
                         "SELECT " HOOK_COLUMNS ", "
                         "(SELECT COUNT(*) FROM hook_queue k WHERE k.hook_id = h.id AND "
                         "k.dead = 0), "
                         "(SELECT COUNT(*) FROM hook_queue k WHERE k.hook_id = h.id AND "
                         "k.dead = 1) FROM hooks h ORDER BY h.created_at, h.id",
                         &q)
               : FY_ENOMEM;
    if (rc) {
        free(h);
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        read_hook(q, h, 0);
        h->queued = sqlite3_column_int64(q, 17);
        h->dead = sqlite3_column_int64(q, 18);
        cb(h, arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "hook list");
    sqlite3_finalize(q);
    free(h);
    return rc;
}

/* Runs one statement binding ID as ?1; returns sqlite3_changes or FY_EIO. */
static int exec_id(fy_store *st, const char *sql, const char *id)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st, sql, &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(q) == SQLITE_DONE ? sqlite3_changes(st->db) : db_err(st, sql);
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hook_delete(fy_store *st, const char *id)
{
    if (!valid_hook_id(id)) {
        return FY_ENOENT;
    }
    int rc = exec(st, "BEGIN IMMEDIATE;");
    if (rc) {
        return rc;
    }
    int n = exec_id(st, "DELETE FROM hooks WHERE id = ?1", id);
    if (n >= 0 && exec_id(st, "DELETE FROM hook_queue WHERE hook_id = ?1", id) >= 0 &&
        exec_id(st, "DELETE FROM hook_seen WHERE hook_id = ?1", id) >= 0 &&
        exec(st, "COMMIT;") == 0) {
        return n == 1 ? 0 : FY_ENOENT;
    }
    exec(st, "ROLLBACK;");
    return FY_EIO;
}

int fy_store_hook_rotate(fy_store *st, const char *id, const void *secret, size_t len,
                         int64_t prev_until)
{
    if (!valid_hook_id(id)) {
        return FY_ENOENT;
    }
    if (!secret || len == 0 || len > FY_STORE_HOOK_SECRET_MAX) {
        return FY_EINVAL;
    }
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "UPDATE hooks SET prev_secret = secret, secret = ?2, prev_until = ?3 "
                     "WHERE id = ?1",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 2, secret, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, prev_until);
    if (sqlite3_step(q) != SQLITE_DONE) {
        rc = db_err(st, "hook rotate");
    } else {
        rc = sqlite3_changes(st->db) == 1 ? 0 : FY_ENOENT;
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hook_seen(fy_store *st, const char *hook_id, const char *delivery, int64_t now,
                       int64_t window)
{
    sqlite3_stmt *prune = NULL, *q = NULL;
    int rc = prepare(st, "DELETE FROM hook_seen WHERE seen_at < ?1", &prune);
    if (!rc) {
        rc =
            prepare(st, "INSERT INTO hook_seen(hook_id, delivery, seen_at) VALUES(?1, ?2, ?3)", &q);
    }
    if (rc) {
        sqlite3_finalize(prune);
        return rc;
    }
    sqlite3_bind_int64(prune, 1, now - window);
    if (sqlite3_step(prune) != SQLITE_DONE) {
        rc = db_err(st, "hook seen prune");
    } else {
        sqlite3_bind_text(q, 1, hook_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 2, delivery, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 3, now);
        int step = sqlite3_step(q);
        rc = step == SQLITE_DONE         ? 0
             : step == SQLITE_CONSTRAINT ? FY_EEXIST
                                         : db_err(st, "hook seen");
    }
    sqlite3_finalize(prune);
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hookq_add(fy_store *st, const fy_store_hookq_item *it, int64_t *seq)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "INSERT INTO hook_queue(hook_id, delivery_id, target, headers, body, "
                     "accepted_at, next_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_text(q, 1, it->hook_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, it->delivery_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, it->target, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, it->headers ? it->headers : "[]", -1, SQLITE_STATIC);
    sqlite3_bind_blob64(q, 5, it->body ? it->body : "", it->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, it->accepted_at);
    if (sqlite3_step(q) != SQLITE_DONE) {
        rc = db_err(st, "hook queue add");
    } else if (seq) {
        *seq = sqlite3_last_insert_rowid(st->db);
    }
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hookq_heads(fy_store *st, void (*cb)(const char *hook_id, int64_t seq, void *arg),
                         void *arg)
{
    sqlite3_stmt *q = NULL;
    int rc =
        prepare(st, "SELECT hook_id, MIN(seq) FROM hook_queue WHERE dead = 0 GROUP BY hook_id", &q);
    if (rc) {
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        cb((const char *)sqlite3_column_text(q, 0), sqlite3_column_int64(q, 1), arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "hook queue heads");
    sqlite3_finalize(q);
    return rc;
}

int fy_store_hookq_get(fy_store *st, int64_t seq, fy_store_hookq_item *out)
{
    sqlite3_stmt *q = NULL;
    memset(out, 0, sizeof *out);
    int rc = prepare(st,
                     "SELECT seq, hook_id, delivery_id, target, headers, body, accepted_at, "
                     "attempts, next_at FROM hook_queue WHERE seq = ? AND dead = 0",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(q, 1, seq);
    int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
        out->seq = sqlite3_column_int64(q, 0);
        copy_text(out->hook_id, sizeof out->hook_id, q, 1);
        copy_text(out->delivery_id, sizeof out->delivery_id, q, 2);
        copy_text(out->target, sizeof out->target, q, 3);
        const unsigned char *hj = sqlite3_column_text(q, 4);
        out->headers = strdup(hj ? (const char *)hj : "[]");
        size_t n = (size_t)sqlite3_column_bytes(q, 5);
        out->body = malloc(n ? n : 1);
        if (out->body && n) {
            memcpy(out->body, sqlite3_column_blob(q, 5), n);
        }
        out->body_len = n;
        out->accepted_at = sqlite3_column_int64(q, 6);
        out->attempts = sqlite3_column_int64(q, 7);
        out->next_at = sqlite3_column_int64(q, 8);
        rc = out->headers && out->body ? 0 : FY_ENOMEM;
        if (rc) {
            fy_store_hookq_item_free(out);
        }
    } else {
        rc = step == SQLITE_DONE ? FY_ENOENT : db_err(st, "hook queue get");
    }
    sqlite3_finalize(q);
    return rc;
}

void fy_store_hookq_item_free(fy_store_hookq_item *it)
{
    if (it) {
        free(it->headers);
        free(it->body);
        it->headers = it->body = NULL;
    }
}

int fy_store_hookq_done(fy_store *st, int64_t seq)
{
    sqlite3_stmt *q = NULL, *count = NULL;
    int rc = exec(st, "BEGIN IMMEDIATE;");
    if (rc) {
        return rc;
    }
    rc = prepare(st,
                 "UPDATE hooks SET delivered = delivered + 1 WHERE id = "
                 "(SELECT hook_id FROM hook_queue WHERE seq = ?1)",
                 &count);
    if (!rc) {
        rc = prepare(st, "DELETE FROM hook_queue WHERE seq = ?1", &q);
    }
    if (!rc) {
        sqlite3_bind_int64(count, 1, seq);
        sqlite3_bind_int64(q, 1, seq);
        if (sqlite3_step(count) != SQLITE_DONE || sqlite3_step(q) != SQLITE_DONE) {
            rc = db_err(st, "hook queue done");
        }
    }
    sqlite3_finalize(count);
    sqlite3_finalize(q);
    if (rc || exec(st, "COMMIT;")) {
        exec(st, "ROLLBACK;");
        return FY_EIO;
    }
    return 0;
}

int fy_store_hookq_retry(fy_store *st, int64_t seq, int64_t attempts, int64_t next_at, int dead,
                         const char *error)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "UPDATE hook_queue SET attempts = ?2, next_at = ?3, dead = ?4, "
                     "last_error = ?5 WHERE seq = ?1",
                     &q);
    if (rc) {
        return rc;
    }
    sqlite3_bind_int64(q, 1, seq);
    sqlite3_bind_int64(q, 2, attempts);
    sqlite3_bind_int64(q, 3, next_at);
    sqlite3_bind_int(q, 4, dead ? 1 : 0);
    sqlite3_bind_text(q, 5, error ? error : "", -1, SQLITE_STATIC);
    rc = sqlite3_step(q) == SQLITE_DONE ? 0 : db_err(st, "hook queue retry");
    sqlite3_finalize(q);
    return rc;
}
