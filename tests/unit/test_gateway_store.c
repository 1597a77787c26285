/* gateway/store: schema migration (also from an existing version-1 file, and
 * from the previous gateway's version 3 with its keys working as before),
 * token consumption rules, runner enrollment and revocation, API key CRUD and
 * validation, batched usage, and durability of acknowledged writes (tokens,
 * key creations and revocations, flushed usage) across a kill -9 of the
 * writing process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

/* The store's own code, to reach its migrations: a version-3 file is made
 * with migrations 1..3 exactly as shipped (append-only, so the first three
 * entries are the previous gateway's schema word for word). */
#include "gateway/store.c"

#include "common/crypto.h"
#include "common/err.h"
#include "common/secret.h"
#include "gateway/keys.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/fy-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ferry.db", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static void hash_of(int i, uint8_t h[32])
{
    memset(h, 0, 32);
    memcpy(h, &i, sizeof i);
    h[31] = 0xAB;
}

static void test_open_and_migrate(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 4);
    fy_store_close(st);
    /* Reopening an up-to-date store is a no-op migration. */
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 4);
    fy_store_close(st);
    assert_int_equal(fy_store_open("/nonexistent-dir/x.db", &st, err, sizeof err), FY_EIO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.db"));
}

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ok;
    } cases[] = {
        {"runner-1", 1},
        {"a", 1},
        {"gpu0", 1},
        {"", 0},
        {"-x", 0},
        {"UPPER", 0},
        {"a_b", 0},
        {"a/b", 0},
        {"a b", 0},
        {"é", 0},
        {"0123456789012345678901234567890123456789012345678901234567890123", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_store_valid_name(cases[i].name), cases[i].ok);
    }
    assert_false(fy_store_valid_name(NULL));
}

static void test_tokens(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    uint8_t h1[32], h2[32], h3[32];
    hash_of(1, h1);
    hash_of(2, h2);
    hash_of(3, h3);
    assert_int_equal(fy_store_token_add(st, "tok_1", h1, "alpha", 1000, 2000), 0);
    assert_int_equal(fy_store_token_add(st, "tok_2", h2, "beta", 1000, 1500), 0);
    /* The same secret twice is refused by the unique hash. */
    assert_int_equal(fy_store_token_add(st, "tok_x", h1, "alpha", 1000, 2000), FY_EEXIST);

    assert_int_equal(fy_store_token_consume(st, h3, 1100, name), FY_ENOENT);
    assert_int_equal(fy_store_token_consume(st, h2, 1500, name), FY_ETIMEDOUT);
    assert_int_equal(fy_store_token_consume(st, h1, 1100, name), 0);
    assert_string_equal(name, "alpha");
    assert_int_equal(fy_store_token_consume(st, h1, 1101, name), FY_EEXIST);
    fy_store_close(st);
}

static void test_runners(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    fy_store_runner r;
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), FY_ENOENT);
    assert_int_equal(fy_store_runner_enroll(st, "alpha", "sha256:aa", "01", 10), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_string_equal(r.fingerprint, "sha256:aa");
    assert_int_equal(r.revoked_at, 0);
    assert_int_equal(fy_store_runner_revoke(st, "alpha", 20), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_int_equal(r.revoked_at, 20);
    assert_int_equal(fy_store_runner_revoke(st, "nobody", 20), FY_ENOENT);
    /* Re-enrollment replaces the certificate and lifts the revocation. */
    assert_int_equal(fy_store_runner_enroll(st, "alpha", "sha256:bb", "02", 30), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_string_equal(r.fingerprint, "sha256:bb");
    assert_int_equal(r.revoked_at, 0);
    fy_store_close(st);
}

/* A child acknowledges each write through a pipe, then is killed with
 * SIGKILL at an arbitrary point; every acknowledged write must be there. */
static void test_durable_across_kill9(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        fy_store *st = NULL;
        char err[256];
        if (fy_store_open(path, &st, err, sizeof err)) {
            _exit(1);
        }
        for (int i = 100;; i++) {
            uint8_t h[32];
            char id[24];
            hash_of(i, h);
            snprintf(id, sizeof id, "tok_%d", i);
            if (fy_store_token_add(st, id, h, "gamma", 1, 1 << 30)) {
                _exit(1);
            }
            if (write(fds[1], &i, sizeof i) != sizeof i) {
                _exit(1);
            }
        }
    }
    close(fds[1]);
    int acked = -1, v;
    for (int n = 0; n < 40 && read(fds[0], &v, sizeof v) == sizeof v; n++) {
        acked = v;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(fds[0], &v, sizeof v) == sizeof v) {
        acked = v;
    }
    close(fds[0]);
    assert_true(acked >= 100);

    fy_store *st = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    for (int i = 100; i <= acked; i++) {
        uint8_t h[32];
        hash_of(i, h);
        assert_int_equal(fy_store_token_consume(st, h, 2, name), 0);
        assert_string_equal(name, "gamma");
    }
    fy_store_close(st);
}

/* Version 1 exactly as shipped (migration 1's text), with rows in it. */
static void make_v1_store(void)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    const char *sql = "PRAGMA journal_mode=WAL;"
                      "BEGIN;"
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
                      ");"
                      "INSERT INTO runners VALUES('old-runner', 'sha256:cc', '07', 5, 0);"
                      "INSERT INTO enroll_tokens VALUES('tok_old', x'"
                      "01"
                      "000000000000000000000000000000000000000000000000000000000000AB"
                      "', 'old-runner', 1, 100000, 0);"
                      "PRAGMA user_version = 1;"
                      "COMMIT;";
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "v1 setup: %s\n", msg);
    }
    assert_int_equal(rc, SQLITE_OK);
    sqlite3_close(db);
}

static void key_template(fy_store_key *k, int i)
{
    memset(k, 0, sizeof *k);
    snprintf(k->id, sizeof k->id, "key_%d", i);
    snprintf(k->name, sizeof k->name, "key number %d", i);
    snprintf(k->prefix, sizeof k->prefix, "fy_%05u", (unsigned)i % 100000u);
    hash_of(1000000 + i, k->hash);
    k->rpm = 60;
    k->created_at = 1000 + i;
}

static void test_migrate_v1_to_v2(void **state)
{
    (void)state;
    make_v1_store();
    fy_store *st = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 4);
    /* The version-1 rows survive and behave as before. */
    fy_store_runner r;
    assert_int_equal(fy_store_runner_get(st, "old-runner", &r), 0);
    assert_string_equal(r.fingerprint, "sha256:cc");
    uint8_t h[32];
    hash_of(1, h);
    assert_int_equal(fy_store_token_consume(st, h, 50, name), 0);
    assert_string_equal(name, "old-runner");
    /* The version-2 tables are there. */
    fy_store_key k, got;
    key_template(&k, 1);
    assert_int_equal(fy_store_key_create(st, &k), 0);
    assert_int_equal(fy_store_key_get(st, "key_1", &got), 0);
    fy_store_close(st);
    /* A store from a newer gateway is refused, not damaged. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), FY_ENOTSUP);
    assert_non_null(strstr(err, "newer"));
}

#define PREV_VERSION 3

/* A key row as the version-3 gateway wrote it (its columns, no burst). */
static void insert_v3_key(sqlite3 *db, const char *id, const char *secret, int64_t rpm)
{
    uint8_t h[32];
    fy_secret_hash(secret, strlen(secret), h);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO api_keys(id, name, owner, prefix, hash, rpm, "
                                        "tpm, concurrency, models, runners, hooks, created_at, "
                                        "expires_at) VALUES(?1, 'old key', '', 'fy_old00', ?2, "
                                        "?3, 0, 0, '[]', '[]', '[]', 100, 0)",
                                        -1, &q, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 2, h, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, rpm);
    assert_int_equal(sqlite3_step(q), SQLITE_DONE);
    sqlite3_finalize(q);
}

static void make_v3_store(const char *secret20, const char *secret0)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL), SQLITE_OK);
    for (int v = 0; v < PREV_VERSION; v++) {
        assert_int_equal(sqlite3_exec(db, migrations[v], NULL, NULL, NULL), SQLITE_OK);
    }
    char bump[40];
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d;", PREV_VERSION);
    assert_int_equal(sqlite3_exec(db, bump, NULL, NULL, NULL), SQLITE_OK);
    insert_v3_key(db, "key_old20", secret20, 20);
    insert_v3_key(db, "key_old0", secret0, 0);
    sqlite3_close(db);
}

static fy_key *auth(fy_keys *kr, const char *secret)
{
    fy_key *k = NULL;
    assert_int_equal(fy_keys_lookup(kr, secret, strlen(secret), 200, &k), FY_AUTH_OK);
    return k;
}

/* Admissions at one instant: the burst in force. */
static int burst_of(fy_key *k)
{
    int64_t now = fy_rl_now();
    int n = 0;
    while (n < 1000 && fy_rl_acquire(fy_key_rl(k), now, NULL)) {
        fy_rl_release(fy_key_rl(k));
        n++;
    }
    return n;
}

static void test_v3_keys_keep_working(void **state)
{
    (void)state;
    char s20[FY_SECRET_MAX], s0[FY_SECRET_MAX], err[256];
    assert_int_equal(fy_secret_new(FY_KEY_PREFIX, s20, sizeof s20), 0);
    assert_int_equal(fy_secret_new(FY_KEY_PREFIX, s0, sizeof s0), 0);
    make_v3_store(s20, s0);

    fy_store *st = NULL;
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 4);
    fy_store_key got;
    assert_int_equal(fy_store_key_get(st, "key_old20", &got), 0);
    assert_int_equal(got.rpm, 20);
    assert_int_equal(got.burst, 0);
    assert_string_equal(got.name, "old key");

    /* Loaded and enforced as before: rpm 20 admits ceil(20/6) = 4 at once;
     * the key without limits admits anything. */
    fy_keys *kr = NULL;
    assert_int_equal(fy_keys_new(st, &kr), 0);
    assert_int_equal(fy_keys_count(kr), 2);
    fy_key *k = auth(kr, s20);
    assert_int_equal(burst_of(k), 4);
    fy_key_release(k);
    k = auth(kr, s0);
    assert_int_equal(burst_of(k), 1000);
    fy_key_release(k);

    /* The new column takes a burst, durably. */
    got.burst = 2;
    assert_int_equal(fy_keys_update(kr, &got), 0);
    fy_keys_free(kr);
    fy_store_close(st);
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 4);
    assert_int_equal(fy_store_key_get(st, "key_old20", &got), 0);
    assert_int_equal(got.burst, 2);
    assert_int_equal(fy_keys_new(st, &kr), 0);
    k = auth(kr, s20);
    assert_int_equal(burst_of(k), 2);
    fy_key_release(k);
    fy_keys_free(kr);
    fy_store_close(st);
    fy_secure_zero(s20, sizeof s20);
    fy_secure_zero(s0, sizeof s0);
}

static void test_scope_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
    } cases[] = {
        {"", 1},     {"llama", 1},       {"a,b,c", 1}, {"meta-llama/Llama-3-8B:q4_0", 1},
        {"a,,b", 0}, {",a", 0},          {"a,", 0},    {"a b", 0},
        {"a\tb", 0}, {"caf\xc3\xa9", 0}, {"x\x01", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_store_scope_valid(cases[i].s), cases[i].ok);
    }
    /* As large as a scope may be, so gcc -O3 sees strnlen's bound fit. */
    char big[FY_STORE_SCOPE_MAX] = "";
    memset(big, 'm', FY_STORE_SCOPE_ITEM_MAX + 1);
    assert_false(fy_store_scope_valid(big));
    big[FY_STORE_SCOPE_ITEM_MAX] = 0;
    assert_true(fy_store_scope_valid(big));
    assert_false(fy_store_scope_valid(NULL));
}

static void count_key(const fy_store_key *k, void *arg)
{
    (void)k;
    (*(int *)arg)++;
}

static void test_keys_crud(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    fy_store_key k, got;
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);

    key_template(&k, 7);
    strcpy(k.owner, "ops team");
    strcpy(k.models, "llama,qwen/Qwen2-7B");
    strcpy(k.runners, "gpu0");
    k.tpm = 10000;
    k.concurrency = 4;
    k.burst = 5;
    k.expires_at = 99999;
    assert_int_equal(fy_store_key_create(st, &k), 0);
    /* Same id, or same hash under a new id: refused. */
    assert_int_equal(fy_store_key_create(st, &k), FY_EEXIST);
    strcpy(k.id, "key_other");
    assert_int_equal(fy_store_key_create(st, &k), FY_EEXIST);
    strcpy(k.id, "key_7");

    assert_int_equal(fy_store_key_get(st, "key_7", &got), 0);
    assert_string_equal(got.name, "key number 7");
    assert_string_equal(got.owner, "ops team");
    assert_string_equal(got.prefix, k.prefix);
    assert_memory_equal(got.hash, k.hash, 32);
    assert_int_equal(got.rpm, 60);
    assert_int_equal(got.tpm, 10000);
    assert_int_equal(got.concurrency, 4);
    assert_int_equal(got.burst, 5);
    assert_string_equal(got.models, "llama,qwen/Qwen2-7B");
    assert_string_equal(got.runners, "gpu0");
    assert_string_equal(got.hooks, "");
    assert_int_equal(got.created_at, 1007);
    assert_int_equal(got.expires_at, 99999);
    assert_int_equal(got.revoked_at, 0);
    assert_int_equal(fy_store_key_get_by_hash(st, k.hash, &got), 0);
    assert_string_equal(got.id, "key_7");
    uint8_t h[32];
    hash_of(424242, h);
    assert_int_equal(fy_store_key_get_by_hash(st, h, &got), FY_ENOENT);
    assert_int_equal(fy_store_key_get(st, "key_nope", &got), FY_ENOENT);
    assert_int_equal(fy_store_key_get(st, "bad id!", &got), FY_ENOENT);

    /* Update changes the mutable fields only. */
    k.rpm = 5;
    k.burst = 0;
    k.models[0] = 0;
    strcpy(k.hooks, "github");
    strcpy(k.name, "renamed");
    k.created_at = 1;         /* ignored */
    memset(k.prefix, 'x', 8); /* ignored */
    assert_int_equal(fy_store_key_update(st, &k), 0);
    assert_int_equal(fy_store_key_get(st, "key_7", &got), 0);
    assert_string_equal(got.name, "renamed");
    assert_int_equal(got.rpm, 5);
    assert_int_equal(got.burst, 0);
    assert_string_equal(got.models, "");
    assert_string_equal(got.hooks, "github");
    assert_int_equal(got.created_at, 1007);
    assert_memory_equal(got.prefix, "fy_00007", 8);
    strcpy(k.id, "key_missing");
    assert_int_equal(fy_store_key_update(st, &k), FY_ENOENT);
    strcpy(k.id, "key_7");

    /* Revoke keeps the first time. */
    assert_int_equal(fy_store_key_revoke(st, "key_7", 500), 0);
    assert_int_equal(fy_store_key_revoke(st, "key_7", 600), 0);
    assert_int_equal(fy_store_key_get(st, "key_7", &got), 0);
    assert_int_equal(got.revoked_at, 500);
    assert_int_equal(fy_store_key_revoke(st, "key_missing", 600), FY_ENOENT);

    /* Validation, table-driven: each case breaks one field. */
    static const struct {
        const char *what;
        int field;
    } bad[] = {{"empty name", 0},    {"control char in name", 1},
               {"bad scope", 2},     {"negative rpm", 3},
               {"huge tpm", 4},      {"bad id", 5},
               {"empty prefix", 6},  {"negative expiry", 7},
               {"negative burst", 8}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fy_store_key b;
        key_template(&b, 100 + (int)i);
        switch (bad[i].field) {
        case 0:
            b.name[0] = 0;
            break;
        case 1:
            b.name[2] = '\n';
            break;
        case 2:
            strcpy(b.runners, "a,,b");
            break;
        case 3:
            b.rpm = -1;
            break;
        case 4:
            b.tpm = (int64_t)1 << 50;
            break;
        case 5:
            strcpy(b.id, "key/1");
            break;
        case 6:
            b.prefix[0] = 0;
            break;
        case 7:
            b.expires_at = -5;
            break;
        case 8:
            b.burst = -1;
            break;
        }
        assert_int_equal(fy_store_key_create(st, &b), FY_EINVAL);
    }

    int n = 0;
    key_template(&k, 8);
    assert_int_equal(fy_store_key_create(st, &k), 0);
    assert_int_equal(fy_store_key_list(st, count_key, &n), 0);
    assert_int_equal(n, 2);
    fy_store_close(st);
}

typedef struct {
    int n;
    fy_store_usage_row rows[16];
} usage_rows;

static void collect_usage(const fy_store_usage_row *r, void *arg)
{
    usage_rows *u = arg;
    if (u->n < 16) {
        u->rows[u->n++] = *r;
    }
}

static void test_usage_batched(void **state)
{
    (void)state;
    fy_store *st = NULL, *other = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_open(path, &other, err, sizeof err), 0);
    fy_store_key k;
    key_template(&k, 1);
    assert_int_equal(fy_store_key_create(st, &k), 0);

    const int64_t h0 = 1700000000 / 3600 * 3600;
    fy_store_usage d = {.requests = 1,
                        .prompt_tokens = 10,
                        .completion_tokens = 20,
                        .bytes_in = 100,
                        .bytes_out = 200};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(fy_store_usage_add(st, "key_1", h0 + 10 * i, &d), 0);
    }
    assert_int_equal(fy_store_usage_add(st, "key_1", h0 + 3600 + 5, &d), 0);
    assert_int_equal(fy_store_usage_add(st, "key_2", h0 + 1, &d), 0);
    assert_int_equal(fy_store_usage_add(st, "bad id!", h0, &d), FY_EINVAL);
    assert_int_equal(fy_store_usage_pending(st), 3);

    /* Nothing reaches the file before a flush. */
    usage_rows u = {0};
    assert_int_equal(fy_store_usage_list(other, NULL, 0, INT64_MAX, 1, collect_usage, &u), 0);
    assert_int_equal(u.n, 0);

    assert_int_equal(fy_store_usage_flush(st), 0);
    assert_int_equal(fy_store_usage_pending(st), 0);
    assert_int_equal(fy_store_usage_flush(st), 0); /* nothing pending: no-op */

    memset(&u, 0, sizeof u);
    assert_int_equal(fy_store_usage_list(other, NULL, 0, INT64_MAX, 1, collect_usage, &u), 0);
    assert_int_equal(u.n, 3);
    assert_string_equal(u.rows[0].key_id, "key_1");
    assert_int_equal(u.rows[0].hour, h0);
    assert_int_equal(u.rows[0].u.requests, 5);
    assert_int_equal(u.rows[0].u.prompt_tokens, 50);
    assert_int_equal(u.rows[0].u.completion_tokens, 100);
    assert_int_equal(u.rows[0].u.bytes_in, 500);
    assert_int_equal(u.rows[0].u.bytes_out, 1000);
    assert_int_equal(u.rows[1].hour, h0 + 3600);
    assert_int_equal(u.rows[1].u.requests, 1);
    assert_string_equal(u.rows[2].key_id, "key_2");

    /* A second batch adds to the same cells. */
    assert_int_equal(fy_store_usage_add(st, "key_1", h0 + 50, &d), 0);
    memset(&u, 0, sizeof u);
    /* Listing flushes what is pending first. */
    assert_int_equal(fy_store_usage_list(st, "key_1", 0, INT64_MAX, 0, collect_usage, &u), 0);
    assert_int_equal(u.n, 1);
    assert_int_equal(u.rows[0].hour, 0);
    assert_int_equal(u.rows[0].u.requests, 7);
    memset(&u, 0, sizeof u);
    assert_int_equal(fy_store_usage_list(st, "key_1", h0 + 3600, h0 + 7200, 1, collect_usage, &u),
                     0);
    assert_int_equal(u.n, 1);
    assert_int_equal(u.rows[0].u.requests, 1);

    /* Flushes also record the last use. */
    fy_store_key got;
    assert_int_equal(fy_store_key_get(other, "key_1", &got), 0);
    assert_int_equal(got.last_used_at, h0 + 3600 + 5);
    fy_store_close(other);
    fy_store_close(st);
}

/* Close flushes what is pending. */
static void test_usage_close_flushes(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    fy_store_usage d = {.requests = 3};
    assert_int_equal(fy_store_usage_add(st, "key_x", 7200, &d), 0);
    fy_store_close(st);
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    usage_rows u = {0};
    assert_int_equal(fy_store_usage_list(st, NULL, 0, INT64_MAX, 0, collect_usage, &u), 0);
    assert_int_equal(u.n, 1);
    assert_int_equal(u.rows[0].u.requests, 3);
    fy_store_close(st);
}

/* Many distinct keys: the pending table stays bounded by flushing inline. */
static void test_usage_pending_bounded(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    fy_store_usage d = {.requests = 1};
    for (int i = 0; i < FY_STORE_USAGE_MAX_PENDING + 10; i++) {
        char id[24];
        snprintf(id, sizeof id, "key_%d", i);
        assert_int_equal(fy_store_usage_add(st, id, 3600, &d), 0);
        assert_true(fy_store_usage_pending(st) <= FY_STORE_USAGE_MAX_PENDING);
    }
    assert_int_equal(fy_store_usage_pending(st), 10);
    fy_store_close(st);
}

/* The writer acknowledges each key creation and each revocation through a
 * pipe (record: +i created, -i revoked) and is killed at an arbitrary
 * point; every acknowledged creation must exist and every acknowledged
 * revocation must hold. Usage flushed and acknowledged must be there too. */
static void test_keys_durable_across_kill9(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        fy_store *st = NULL;
        char err[256];
        if (fy_store_open(path, &st, err, sizeof err)) {
            _exit(1);
        }
        for (int i = 1;; i++) {
            fy_store_key k;
            key_template(&k, i);
            if (fy_store_key_create(st, &k)) {
                _exit(1);
            }
            int rec = i;
            if (write(fds[1], &rec, sizeof rec) != sizeof rec) {
                _exit(1);
            }
            if (i % 3 == 0) {
                char id[24];
                snprintf(id, sizeof id, "key_%d", i - 1);
                if (fy_store_key_revoke(st, id, 42)) {
                    _exit(1);
                }
                rec = -(i - 1);
                if (write(fds[1], &rec, sizeof rec) != sizeof rec) {
                    _exit(1);
                }
            }
            fy_store_usage d = {.requests = 1};
            fy_store_usage_add(st, "key_1", 3600, &d);
            if (i % 5 == 0) {
                if (fy_store_usage_flush(st)) {
                    _exit(1);
                }
                rec = 1000000 + i; /* usage through i acknowledged */
                if (write(fds[1], &rec, sizeof rec) != sizeof rec) {
                    _exit(1);
                }
            }
        }
    }
    close(fds[1]);
    static int created[100000], revoked[100000];
    int max_created = 0, usage_acked = 0, v, n = 0;
    memset(created, 0, sizeof created);
    memset(revoked, 0, sizeof revoked);
    for (;;) {
        if (n == 60) {
            kill(pid, SIGKILL);
        }
        if (read(fds[0], &v, sizeof v) != sizeof v) {
            break;
        }
        n++;
        if (v >= 1000000) {
            usage_acked = v - 1000000;
        } else if (v > 0 && v < 100000) {
            created[v] = 1;
            if (v > max_created) {
                max_created = v;
            }
        } else if (v < 0 && -v < 100000) {
            revoked[-v] = 1;
        }
    }
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    assert_true(max_created >= 10);

    fy_store *st = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    for (int i = 1; i <= max_created; i++) {
        fy_store_key got;
        assert_true(created[i]);
        assert_int_equal(fy_store_key_get(st, (snprintf(err, sizeof err, "key_%d", i), err), &got),
                         0);
        if (revoked[i]) {
            assert_int_equal(got.revoked_at, 42);
        }
    }
    usage_rows u = {0};
    assert_int_equal(fy_store_usage_list(st, "key_1", 0, INT64_MAX, 0, collect_usage, &u), 0);
    assert_int_equal(u.n, 1);
    assert_true(u.rows[0].u.requests >= (uint64_t)usage_acked);
    fy_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_and_migrate, setup, teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_across_kill9, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrate_v1_to_v2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v3_keys_keep_working, setup, teardown),
        cmocka_unit_test(test_scope_valid),
        cmocka_unit_test_setup_teardown(test_keys_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_close_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_pending_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_durable_across_kill9, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
