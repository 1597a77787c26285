#include "gateway/store.h"

#include "common/err.h"
#include "common/log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fy_store {
    sqlite3 *db;
    int version;
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

int fy_store_token_list(fy_store *st, void (*cb)(const fy_store_token *t, void *arg), void *arg)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(st,
                     "SELECT id, runner_name, created_at, expires_at, used_at FROM enroll_tokens "
                     "ORDER BY created_at DESC, id",
                     &q);
    if (rc) {
        return rc;
    }
    int step;
    while ((step = sqlite3_step(q)) == SQLITE_ROW) {
        fy_store_token t;
        copy_text(t.id, sizeof t.id, q, 0);
        copy_text(t.runner_name, sizeof t.runner_name, q, 1);
        t.created_at = sqlite3_column_int64(q, 2);
        t.expires_at = sqlite3_column_int64(q, 3);
        t.used_at = sqlite3_column_int64(q, 4);
        cb(&t, arg);
    }
    rc = step == SQLITE_DONE ? 0 : db_err(st, "token list");
    sqlite3_finalize(q);
    return rc;
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
