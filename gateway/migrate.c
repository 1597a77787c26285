/* migrate.c: `ferry-gateway migrate --data-dir DIR --to URL`, which copies a
 * data dir's SQLite store into the shared Redis layout
 * (gateway/shared_layout.h), so a single gateway can become the first
 * replica of a shared deployment.
 *
 * Idempotent: every value is SET (never added to), so running it twice
 * leaves the same Redis contents. A record already in Redis counts as
 * unchanged when it decodes to the same record (it is compared by its
 * canonical encoding, not its bytes); a changed key record also bumps the
 * key's live "ver" and is announced on FY_SH_CHAN_KEYS, as every change
 * must be for running replicas to pick it up. Commands are pipelined. */
#include "common/args.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "gateway/datadir.h"
#include "gateway/redis_sync.h"
#include "gateway/shared_codec.h"
#include "gateway/shared_layout.h"
#include "gateway/shared_seed.h"
#include "gateway/store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ST_NEW, ST_UPDATED, ST_UNCHANGED };

/* One record to copy: hash field FIELD gets REC. */
typedef struct {
    char *field;
    char *rec;
    int state;
    /* keys only */
    char hex[65];
    int64_t live[6]; /* rpm, tpm, cc, burst, exp, rev */
    int64_t last_used;
} item;

typedef struct {
    item *v;
    size_t n, cap;
    int failed; /* out of memory in a callback */
    int secret; /* records hold secrets: wipe them */
} items;

static item *items_push(items *it, const char *field, char *rec)
{
    if (it->n == it->cap) {
        size_t cap = it->cap ? it->cap * 2 : 64;
        item *v = realloc(it->v, cap * sizeof *v);
        if (!v) {
            it->failed = 1;
            return NULL;
        }
        it->v = v;
        it->cap = cap;
    }
    item *e = &it->v[it->n];
    memset(e, 0, sizeof *e);
    e->field = strdup(field);
    e->rec = rec;
    if (!e->field || !rec) {
        free(e->field);
        free(rec);
        it->failed = 1;
        return NULL;
    }
    it->n++;
    return e;
}

static void items_free(items *it)
{
    for (size_t i = 0; i < it->n; i++) {
        if (it->secret) {
            fy_secure_zero(it->v[i].rec, strlen(it->v[i].rec));
        }
        free(it->v[i].field);
        free(it->v[i].rec);
    }
    free(it->v);
    memset(it, 0, sizeof *it);
}

/* --- reading the store ------------------------------------------------------------ */

static void on_key(const fy_store_key *k, void *arg)
{
    items *it = arg;
    item *e = items_push(it, k->id, fy_shc_key_encode(k));
    if (e) {
        fy_shc_hex(k->hash, e->hex);
        int64_t live[6] = {k->rpm, k->tpm, k->concurrency, k->burst, k->expires_at, k->revoked_at};
        memcpy(e->live, live, sizeof live);
        e->last_used = k->last_used_at;
    }
}

static void on_runner(const fy_store_runner *r, void *arg)
{
    items_push(arg, r->name, fy_shc_runner_encode(r));
}

static void on_token(const fy_store_token *t, const uint8_t hash[32], void *arg)
{
    char hex[65];
    fy_shc_hex(hash, hex);
    items_push(arg, hex, fy_shc_token_encode(t));
}

/* Hook listings carry no secrets: each hook is fetched whole. */
typedef struct {
    fy_store *st;
    items *it;
} hook_ctx;

static void on_hook(const fy_store_hook *h, void *arg)
{
    hook_ctx *hc = arg;
    fy_store_hook *full = malloc(sizeof *full);
    if (!full || fy_store_hook_get(hc->st, h->id, full) != 0) {
        hc->it->failed = 1;
        free(full);
        return;
    }
    items_push(hc->it, full->id, fy_shc_hook_encode(full));
    fy_secure_zero(full, sizeof *full);
    free(full);
}

typedef struct {
    fy_store_usage_row *v;
    size_t n, cap;
    int failed;
} rows;

static void on_usage(const fy_store_usage_row *row, void *arg)
{
    rows *r = arg;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        fy_store_usage_row *v = realloc(r->v, cap * sizeof *v);
        if (!v) {
            r->failed = 1;
            return;
        }
        r->v = v;
        r->cap = cap;
    }
    r->v[r->n++] = *row;
}

/* --- canonical forms of what Redis holds -------------------------------------------- */

#define CANON(kind, type)                                             \
    static char *canon_##kind(const char *s, size_t n)                \
    {                                                                 \
        type *rec = malloc(sizeof *rec);                              \
        char *out = NULL;                                             \
        if (rec && fy_shc_##kind##_decode(s, n, rec, NULL, 0) == 0) { \
            out = fy_shc_##kind##_encode(rec);                        \
        }                                                             \
        if (rec) {                                                    \
            fy_secure_zero(rec, sizeof *rec);                         \
        }                                                             \
        free(rec);                                                    \
        return out;                                                   \
    }
CANON(key, fy_store_key)
CANON(runner, fy_store_runner)
CANON(token, fy_store_token)
CANON(hook, fy_store_hook)

/* --- writing Redis ------------------------------------------------------------------ */

typedef struct {
    fy_redis_sync *c;
    size_t pending; /* appended commands whose replies are not read yet */
    int rc;
    char err[512];
} pipe_t;

static void pipe_cmd(pipe_t *p, int argc, const char *const *argv, const size_t *lens)
{
    if (p->rc == 0) {
        p->rc = fy_redis_sync_append(p->c, argc, argv, lens);
        if (p->rc) {
            snprintf(p->err, sizeof p->err, "redis: out of memory");
        } else {
            p->pending++;
        }
    }
}

/* Reads every pending reply; the first failure sticks. */
static int pipe_drain(pipe_t *p)
{
    for (; p->pending > 0; p->pending--) {
        redisReply *r = NULL;
        int rc = fy_redis_sync_get(p->c, &r, p->err, sizeof p->err);
        freeReplyObject(r);
        if (rc && p->rc == 0) {
            p->rc = rc;
        }
        if (rc && rc != FY_EIO) {
            break; /* the connection is gone */
        }
    }
    return p->rc;
}

/* Classifies every item of IT against HASH's current fields. */
static int classify(pipe_t *p, const char *hash, items *it, char *(*canon)(const char *, size_t),
                    int counts[3])
{
    for (size_t i = 0; i < it->n; i++) {
        const char *argv[3] = {"HGET", hash, it->v[i].field};
        pipe_cmd(p, 3, argv, NULL);
    }
    for (size_t i = 0; i < it->n && p->rc == 0; i++, p->pending--) {
        redisReply *r = NULL;
        p->rc = fy_redis_sync_get(p->c, &r, p->err, sizeof p->err);
        if (p->rc) {
            break;
        }
        item *e = &it->v[i];
        e->state = ST_NEW;
        if (r->type == REDIS_REPLY_STRING) {
            char *now = canon(r->str, r->len);
            e->state = now && strcmp(now, e->rec) == 0 ? ST_UNCHANGED : ST_UPDATED;
            if (now && it->secret) {
                fy_secure_zero(now, strlen(now));
            }
            free(now);
            if (it->secret) {
                fy_secure_zero(r->str, r->len);
            }
        }
        freeReplyObject(r);
        counts[e->state]++;
    }
    return p->rc;
}

/* Writes the items of IT that are new or changed into HASH, announcing
 * each on CHANNEL (NULL: none). */
static int write_records(pipe_t *p, const char *hash, const items *it, const char *channel)
{
    for (size_t i = 0; i < it->n; i++) {
        const item *e = &it->v[i];
        if (e->state == ST_UNCHANGED) {
            continue;
        }
        const char *argv[4] = {"HSET", hash, e->field, e->rec};
        pipe_cmd(p, 4, argv, NULL);
        if (channel) {
            const char *pub[3] = {"PUBLISH", channel, e->field};
            pipe_cmd(p, 3, pub, NULL);
        }
    }
    return pipe_drain(p);
}

/* A key's live hash, hash index and last use; before its record, so a
 * replica that sees the record finds its live state. */
static int write_key_state(pipe_t *p, const items *keys)
{
    static const char *const names[6] = {"rpm", "tpm", "cc", "burst", "exp", "rev"};
    for (size_t i = 0; i < keys->n; i++) {
        const item *e = &keys->v[i];
        char live[FY_SH_KEYNAME_MAX], usage[FY_SH_KEYNAME_MAX], v[6][24], last[24];
        snprintf(live, sizeof live, FY_SH_KEY_LIVE_FMT, e->field);
        snprintf(usage, sizeof usage, FY_SH_KEY_USAGE_FMT, e->field);
        const char *argv[2 + 12];
        int argc = 0;
        argv[argc++] = "HSET";
        argv[argc++] = live;
        for (int f = 0; f < 6; f++) {
            snprintf(v[f], sizeof v[f], "%" PRId64, e->live[f]);
            argv[argc++] = names[f];
            argv[argc++] = v[f];
        }
        pipe_cmd(p, argc, argv, NULL);
        /* ver: 1 for a key new to Redis; bumped when its record changed,
         * so replicas reload it; else left as it is. */
        const char *ver[4] = {e->state == ST_UPDATED ? "HINCRBY" : "HSETNX", live, "ver", "1"};
        pipe_cmd(p, 4, ver, NULL);
        const char *idx[4] = {"HSET", FY_SH_KEYHASH, e->hex, e->field};
        pipe_cmd(p, 4, idx, NULL);
        if (e->last_used > 0) {
            snprintf(last, sizeof last, "%" PRId64, e->last_used);
            const char *lu[4] = {"HSET", usage, "last", last};
            pipe_cmd(p, 4, lu, NULL);
        }
    }
    return pipe_drain(p);
}

/* Usage per key per hour: the five counters of each row, SET. */
static int write_usage(pipe_t *p, const rows *u, int counts[3])
{
    static const char suffix[5] = {'r', 'p', 'c', 'i', 'o'};
    char(*f)[5][32] = calloc(u->n ? u->n : 1, sizeof *f);
    char(*v)[5][24] = calloc(u->n ? u->n : 1, sizeof *v);
    char(*keys)[FY_SH_KEYNAME_MAX] = calloc(u->n ? u->n : 1, sizeof *keys);
    if (!f || !v || !keys) {
        free(f);
        free(v);
        free(keys);
        p->rc = FY_ENOMEM;
        snprintf(p->err, sizeof p->err, "out of memory");
        return p->rc;
    }
    for (size_t i = 0; i < u->n; i++) {
        const fy_store_usage_row *r = &u->v[i];
        uint64_t val[5] = {r->u.requests, r->u.prompt_tokens, r->u.completion_tokens, r->u.bytes_in,
                           r->u.bytes_out};
        snprintf(keys[i], sizeof keys[i], FY_SH_KEY_USAGE_FMT, r->key_id);
        const char *argv[2 + 5];
        argv[0] = "HMGET";
        argv[1] = keys[i];
        for (int j = 0; j < 5; j++) {
            snprintf(f[i][j], sizeof f[i][j], "%" PRId64 ":%c", r->hour, suffix[j]);
            snprintf(v[i][j], sizeof v[i][j], "%" PRIu64, val[j]);
            argv[2 + j] = f[i][j];
        }
        pipe_cmd(p, 7, argv, NULL);
    }
    for (size_t i = 0; i < u->n && p->rc == 0; i++, p->pending--) {
        redisReply *r = NULL;
        if ((p->rc = fy_redis_sync_get(p->c, &r, p->err, sizeof p->err)) != 0) {
            break;
        }
        int absent = 0, same = 0;
        for (size_t j = 0; r->type == REDIS_REPLY_ARRAY && j < r->elements && j < 5; j++) {
            const redisReply *x = r->element[j];
            absent += x->type == REDIS_REPLY_NIL;
            same += x->type == REDIS_REPLY_STRING && strcmp(x->str, v[i][j]) == 0;
        }
        freeReplyObject(r);
        counts[absent == 5 ? ST_NEW : same == 5 ? ST_UNCHANGED : ST_UPDATED]++;
    }
    for (size_t i = 0; i < u->n; i++) {
        const char *argv[2 + 10] = {"HSET", keys[i]};
        for (int j = 0; j < 5; j++) {
            argv[2 + 2 * j] = f[i][j];
            argv[3 + 2 * j] = v[i][j];
        }
        pipe_cmd(p, 12, argv, NULL);
    }
    int rc = pipe_drain(p);
    free(f);
    free(v);
    free(keys);
    return rc;
}

/* --- the command -------------------------------------------------------------------- */

static const char migrate_help[] =
    "Usage: ferry-gateway migrate --data-dir DIR --to URL [--shared-password-file "
    "FILE]\n\n"
    "Copies the store of the data directory DIR (API keys with their limits and\n"
    "usage, runners, enrollment tokens, webhooks) into the shared Redis at URL, so\n"
    "gateways started with `run --shared URL` share them. When Redis holds no\n"
    "deployment seed yet, DIR's certificates and admin token become it (as\n"
    "`init --shared` does); a Redis holding another deployment is refused. Running\n"
    "it again changes nothing: it prints what it copied (new, updated, unchanged).\n"
    "Stop the gateway on DIR first: what it writes afterwards is not copied.\n\n"
    "Options:\n";

typedef struct {
    const char *data_dir, *to, *password_file;
    int help;
} migrate_opts;

static int migrate_parse(int argc, char **argv, migrate_opts *o)
{
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &o->data_dir, "DIR", "the data directory to copy (required)"},
        {"to", FY_OPT_STR, &o->to, "URL", "the shared Redis (required)"},
        {"shared-password-file", FY_OPT_STR, &o->password_file, "FILE",
         "the Redis password: the first line of FILE"},
        {"help", FY_OPT_FLAG, &o->help, NULL, "show this help"},
        {0},
    };
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    int status = fy_args_command(opts, argc, argv, pos, &npos, "ferry-gateway migrate", &o->help,
                                 migrate_help);
    if (status >= 0) {
        return status;
    }
    const char *why = !o->data_dir ? "--data-dir DIR is required"
                      : !o->to     ? "--to URL is required"
                      : npos       ? "unexpected argument (see --help)"
                                   : NULL;
    if (why) {
        fprintf(stderr, "ferry-gateway migrate: %s\n", why);
        return 2;
    }
    return -1;
}

/* Reads the whole store of DIR. */
static int read_store(const char *dir, items it[4], rows *u, char *err, size_t errlen)
{
    char path[4096];
    fy_store *st = NULL;
    int rc = fy_path_join(path, sizeof path, dir, FY_GW_DB);
    if (rc == 0 && !fy_file_exists(path)) {
        return fy_fail(err, errlen, FY_ENOENT, "%s has no store (%s)", dir, FY_GW_DB);
    }
    if (rc == 0) {
        rc = fy_store_open(path, &st, err, errlen);
    }
    hook_ctx hc = {st, &it[3]};
    it[3].secret = 1;
    if (rc == 0 && ((rc = fy_store_key_list(st, on_key, &it[0])) ||
                    (rc = fy_store_runner_list(st, on_runner, &it[1])) ||
                    (rc = fy_store_token_list_hashed(st, on_token, &it[2])) ||
                    (rc = fy_store_hook_list(st, on_hook, &hc)) ||
                    (rc = fy_store_usage_list(st, NULL, 0, INT64_MAX, 1, on_usage, u)))) {
        fy_fail(err, errlen, rc, "reading %s: %s", path, fy_strerror(rc));
    }
    if (rc == 0 && (it[0].failed || it[1].failed || it[2].failed || it[3].failed || u->failed)) {
        rc = fy_fail(err, errlen, FY_ENOMEM, "reading %s: out of memory or a bad record", path);
    }
    fy_store_close(st);
    return rc;
}

int fy_gw_migrate_main(int argc, char **argv)
{
    migrate_opts o = {0};
    int status = migrate_parse(argc, argv, &o);
    if (status >= 0) {
        return status;
    }
    status = 1;
    fy_redis_config cfg;
    pipe_t p = {0};
    items it[4] = {{0}};
    rows u = {0};
    int counts[5][3] = {{0}};
    char err[4400], fp[72];
    fy_seed_outcome outcome;
    int rc = fy_redis_config_parse(o.to, o.password_file, &cfg, err, sizeof err);
    if (rc == 0) {
        rc = read_store(o.data_dir, it, &u, err, sizeof err);
    }
    if (rc == 0) {
        rc = fy_redis_sync_connect(&cfg, &p.c, err, sizeof err);
    }
    if (rc == 0) {
        rc = fy_shared_seed_sync(p.c, o.data_dir, 0, &outcome, fp, err, sizeof err);
    }
    if (rc) {
        fprintf(stderr, "ferry-gateway migrate: %s\n", err);
        goto out;
    }
    static const char *const hashes[4] = {FY_SH_KEYS, FY_SH_RUNNERS, FY_SH_TOKENS, FY_SH_HOOKS};
    static const char *const chans[4] = {FY_SH_CHAN_KEYS, FY_SH_CHAN_RUNNERS, NULL,
                                         FY_SH_CHAN_HOOKS};
    char *(*const canons[4])(const char *, size_t) = {canon_key, canon_runner, canon_token,
                                                      canon_hook};
    for (int k = 0; k < 4 && p.rc == 0; k++) {
        if (classify(&p, hashes[k], &it[k], canons[k], counts[k]) == 0 && k == 0) {
            write_key_state(&p, &it[0]);
        }
        if (p.rc == 0) {
            write_records(&p, hashes[k], &it[k], chans[k]);
        }
    }
    if (p.rc == 0) {
        write_usage(&p, &u, counts[4]);
    }
    if (p.rc) {
        fprintf(stderr, "ferry-gateway migrate: %s\n", p.err);
        goto out;
    }
    printf("%s: deployment seed %s (runner CA %s)\n", o.to,
           outcome == FY_SEED_UPLOADED ? "uploaded from the data dir" : "already there", fp);
    static const char *const kinds[5] = {"keys", "runners", "tokens", "hooks", "usage hours"};
    printf("copied %s to %s:\n", o.data_dir, o.to);
    for (int k = 0; k < 5; k++) {
        printf("  %-12s %d new, %d updated, %d unchanged\n", kinds[k], counts[k][ST_NEW],
               counts[k][ST_UPDATED], counts[k][ST_UNCHANGED]);
    }
    status = 0;
out:
    for (int k = 0; k < 4; k++) {
        items_free(&it[k]);
    }
    free(u.v);
    fy_redis_sync_free(p.c);
    fy_redis_config_wipe(&cfg);
    return status;
}
