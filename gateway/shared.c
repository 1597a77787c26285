/* shared.c: a replica's side of the shared state (see shared.h).
 *
 * Every operation that needs several commands pipelines them (one write,
 * replies in order) and finishes in one place, op_done, when the last reply
 * is in. Commands are only sent while the client is UP, so an operation
 * either starts whole or returns FY_EUNREACH at once. */
#include "gateway/shared.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway/shared_codec.h"
#include "gateway/shared_layout.h"
#include "gateway/shared_limits.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SH_LOG "shared"

/* The replica heartbeat: prunes replicas silent for FORGET ms, records this
 * one, and counts those heard from in the last ALIVE ms. Redis's clock, so
 * replicas whose clocks differ agree on who is alive.
 * KEYS: replicas zset, replica-info hash. ARGV: id, info, alive ms, forget ms. */
static const char heartbeat_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local cut = now - tonumber(ARGV[4])\n"
    "for _, r in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cut)) do\n"
    "  redis.call('HDEL', KEYS[2], r)\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cut)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[3]), '+inf')\n";

/* One use of an enrollment token across all replicas: check and mark in one
 * step. KEYS: tokens hash. ARGV: hex hash, now (unix s). Returns {0, record}
 * (marked used), {1} unknown, {2} used, {3} expired. */
static const char consume_lua[] = "local v = redis.call('HGET', KEYS[1], ARGV[1])\n"
                                  "if not v then return {1} end\n"
                                  "local ok, t = pcall(cjson.decode, v)\n"
                                  "if not ok or type(t) ~= 'table' then return {1} end\n"
                                  "local now = tonumber(ARGV[2])\n"
                                  "if (tonumber(t.used_at) or 0) ~= 0 then return {2} end\n"
                                  "if (tonumber(t.expires_at) or 0) <= now then return {3} end\n"
                                  "t.used_at = now\n"
                                  "local out = cjson.encode(t)\n"
                                  "redis.call('HSET', KEYS[1], ARGV[1], out)\n"
                                  "return {0, out}\n";

typedef struct usage_cell {
    char key_id[FY_STORE_KEY_ID_MAX];
    int64_t hour, last;
    fy_store_usage u;
    int used;
} usage_cell;

typedef struct {
    usage_cell *v;
    size_t cap, n; /* cap a power of two; at most 3/4 full */
} usage_table;

struct fy_shared_lease {
    fy_shared_lease *prev, *next; /* in sh->asking, then sh->leases, then sh->released */
    fy_shared *sh;
    fy_shared_admit_cb cb; /* while asking: whom to tell */
    void *data;
    int local; /* decided by the local limiter */
    fy_rl *rl; /* the key's local limiter (charges while down) */
    char key_id[FY_STORE_KEY_ID_MAX];
    char id[FY_SHARED_REPLICA_ID_MAX + 24];
};

struct fy_shared {
    fy_shared_options o;
    fy_redis *cl;
    fy_shl *lim;
    fy_redis_script *heartbeat, *consume;
    char replica[FY_SHARED_REPLICA_ID_MAX];
    uint64_t lease_seq;
    int64_t replicas;
    int up, ever_up, closing;
    unsigned lookups;
    fy_shared_lease leases;   /* sentinel of the shared leases held, for renewal */
    fy_shared_lease released; /* sentinel of those released this loop turn */
    fy_shared_lease asking;   /* sentinel of the admissions asked this loop turn */
    uv_prepare_t *batch;      /* sends both batches before the loop next waits */
    uv_timer_t *hb, *renew, *usage;
    usage_table pending;
};

/* --- timers ----------------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    free(h);
}

static uv_timer_t *timer_new(fy_shared *sh, uv_timer_cb cb, uint64_t every)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        return NULL;
    }
    uv_timer_init(sh->o.loop, t);
    t->data = sh;
    uv_timer_start(t, cb, every, every);
    return t;
}

static void timer_free(uv_timer_t *t)
{
    if (t) {
        uv_close((uv_handle_t *)t, handle_closed);
    }
}

/* --- pipelined operations ---------------------------------------------------------- */

typedef struct op op;
/* Runs once every reply of O is in (ERR the first failure, 0 when none). */
typedef void (*op_finish)(op *o, int err);

struct op {
    fy_shared *sh;
    int pending, err;
    op_finish finish;
    fy_shared_done_cb cb;
    void *data;
    /* What the operation carries. */
    fy_store_key key;
    fy_store_runner runner;
    fy_store_key *out_key;
    fy_store_hook hook;
    fy_store_hook *out_hook;
    char *name_out;
    uint8_t hash[32];
    int step;
};

static op *op_new(fy_shared *sh, op_finish finish, fy_shared_done_cb cb, void *data)
{
    op *o = calloc(1, sizeof *o);
    if (o) {
        *o = (op){.sh = sh, .finish = finish, .cb = cb, .data = data};
    }
    return o;
}

static void op_end(op *o, int err)
{
    if (o->cb) {
        o->cb(o->data, err);
    }
    fy_secure_zero(&o->key, sizeof o->key);
    fy_secure_zero(&o->hook, sizeof o->hook);
    free(o);
}

/* Per reply of a command of O. */
static void op_reply(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    if (status == FY_EIO && r) {
        FY_WARN(SH_LOG, "Redis refused a command: %.*s", (int)(r->len > 200 ? 200 : r->len),
                r->str);
    }
    if (status && !o->err) {
        o->err = status == FY_EIO ? FY_EIO : status;
    }
    if (--o->pending == 0) {
        o->finish(o, o->err);
    }
}

/* The reply of a limiter call (shared_limits.h) of O. */
static void op_counted(void *data, int err, int64_t n)
{
    (void)n;
    op_reply(data, err, NULL);
}

/* Sends one command of O whose reply CB reads before it calls op_reply. A
 * failure to send counts as that command's reply. */
static void op_cmd_cb(op *o, fy_redis_reply_cb cb, int argc, const char *const *argv,
                      const size_t *lens)
{
    o->pending++;
    int rc = fy_redis_cmd(o->sh->cl, cb, o, argc, argv, lens);
    if (rc) {
        o->pending--;
        if (!o->err) {
            o->err = rc;
        }
    }
}

/* After the commands of O were sent: finishes O now when none went out. */
static void op_cmd(op *o, int argc, const char *const *argv, const size_t *lens)
{
    op_cmd_cb(o, op_reply, argc, argv, lens);
}

static int op_sent(op *o)
{
    if (o->pending == 0) {
        int err = o->err ? o->err : FY_EIO;
        free(o);
        return err;
    }
    return 0;
}

static void fmt_key(char *out, const char *fmt, const char *id)
{
    snprintf(out, FY_SH_KEYNAME_MAX, fmt, id);
}

/* --- the catalog: keys ---------------------------------------------------------------- */

/* Takes key record TEXT (from Redis) into the local cache, unless the cache
 * already holds exactly it. */
static int key_take(fy_shared *sh, const char *text, size_t len, fy_store_key *out)
{
    char err[160];
    fy_store_key *k = calloc(1, sizeof *k), *have = calloc(1, sizeof *have);
    int rc = !k || !have ? FY_ENOMEM : fy_shc_key_decode(text, len, k, err, sizeof err);
    if (rc == FY_EINVAL) {
        FY_WARN(SH_LOG, "skipping a malformed key record in Redis: %s", err);
    }
    if (!rc) {
        int same = 0;
        if (fy_store_key_get(sh->o.store, k->id, have) == 0) {
            char *mine = fy_shc_key_encode(have);
            same = mine && strlen(mine) == len && memcmp(mine, text, len) == 0;
            free(mine);
        }
        rc = same ? 0 : fy_keys_apply(sh->o.keys, k);
        if (rc) {
            FY_WARN(SH_LOG, "cannot cache key %s: %s", k->id, fy_strerror(rc));
        }
        if (out) {
            *out = *k;
        }
    }
    if (k) {
        fy_secure_zero(k, sizeof *k);
    }
    free(k);
    free(have);
    return rc;
}

static int runner_take(fy_shared *sh, const char *text, size_t len)
{
    char err[160];
    fy_store_runner r, have;
    int rc = fy_shc_runner_decode(text, len, &r, err, sizeof err);
    if (rc) {
        FY_WARN(SH_LOG, "skipping a malformed runner record in Redis: %s", err);
        return rc;
    }
    if (fy_store_runner_get(sh->o.store, r.name, &have) == 0 &&
        strcmp(have.fingerprint, r.fingerprint) == 0 && strcmp(have.serial, r.serial) == 0 &&
        have.enrolled_at == r.enrolled_at && have.revoked_at == r.revoked_at) {
        return 0;
    }
    if ((rc = fy_store_runner_put(sh->o.store, &r))) {
        FY_WARN(SH_LOG, "cannot cache runner %s: %s", r.name, fy_strerror(rc));
        return rc;
    }
    if (sh->o.ops && sh->o.ops->on_runner) {
        sh->o.ops->on_runner(sh->o.data, &r);
    }
    return 0;
}

static int hook_take(fy_shared *sh, const char *text, size_t len);
static void hook_gone(fy_shared *sh, const char *id);
static void hooks_prune(fy_shared *sh, const char (*ids)[FY_STORE_HOOK_ID_MAX], size_t n);

/* --- reading the whole catalog (on every connection) ------------------------------------ */

typedef struct {
    fy_shared *sh;
    const char *hash; /* FY_SH_KEYS, FY_SH_RUNNERS or FY_SH_HOOKS */
    size_t seen;
    char (*ids)[FY_STORE_HOOK_ID_MAX]; /* hooks: the ids read, to prune the cache after */
    size_t cap;
    int lost; /* an id could not be kept: no prune this time */
} scan;

static void scan_free(scan *s)
{
    free(s->ids);
    free(s);
}

/* Remembers hook ID (the field of a record read) for the prune at the end. */
static void scan_note(scan *s, const char *id, size_t len)
{
    if (len >= FY_STORE_HOOK_ID_MAX || s->lost) {
        s->lost = 1;
        return;
    }
    if (s->seen == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        void *p = realloc(s->ids, cap * sizeof *s->ids);
        if (!p) {
            s->lost = 1;
            return;
        }
        s->ids = p;
        s->cap = cap;
    }
    memcpy(s->ids[s->seen], id, len);
    s->ids[s->seen][len] = 0;
}

static void scan_next(scan *s, const char *cursor, size_t len);

static void on_scan(void *data, int status, const fy_redis_reply *r)
{
    scan *s = data;
    if (status || !r || r->type != FY_REDIS_REPLY_ARRAY || r->n != 2 ||
        r->elem[0].type != FY_REDIS_REPLY_STRING || r->elem[1].type != FY_REDIS_REPLY_ARRAY ||
        r->elem[1].n % 2) {
        if (status != FY_ECANCELED) {
            FY_WARN(SH_LOG, "reading %s stopped: %s", s->hash,
                    status ? fy_strerror(status) : "unexpected reply");
        }
        scan_free(s);
        return;
    }
    const fy_redis_reply *kv = r->elem[1].elem;
    for (size_t i = 0; i + 1 < r->elem[1].n; i += 2) {
        if (kv[i + 1].type != FY_REDIS_REPLY_STRING) {
            continue;
        }
        if (strcmp(s->hash, FY_SH_KEYS) == 0) {
            key_take(s->sh, kv[i + 1].str, kv[i + 1].len, NULL);
        } else if (strcmp(s->hash, FY_SH_HOOKS) == 0) {
            scan_note(s, kv[i].str, kv[i].len);
            hook_take(s->sh, kv[i + 1].str, kv[i + 1].len);
        } else {
            runner_take(s->sh, kv[i + 1].str, kv[i + 1].len);
        }
        s->seen++;
    }
    if (r->elem[0].len == 1 && r->elem[0].str[0] == '0') {
        FY_INFO(SH_LOG, "read %zu records of %s", s->seen, s->hash);
        if (strcmp(s->hash, FY_SH_HOOKS) == 0 && !s->lost) {
            hooks_prune(s->sh, (const char(*)[FY_STORE_HOOK_ID_MAX])s->ids, s->seen);
        }
        scan_free(s);
        return;
    }
    scan_next(s, r->elem[0].str, r->elem[0].len);
}

static void scan_next(scan *s, const char *cursor, size_t len)
{
    char count[16];
    snprintf(count, sizeof count, "%d", FY_SHARED_SCAN_COUNT);
    const char *argv[] = {"HSCAN", s->hash, cursor, "COUNT", count};
    size_t lens[] = {5, strlen(s->hash), len, 5, strlen(count)};
    if (fy_redis_cmd(s->sh->cl, on_scan, s, 5, argv, lens)) {
        scan_free(s);
    }
}

static void catalog_read(fy_shared *sh, const char *hash)
{
    scan *s = calloc(1, sizeof *s);
    if (s) {
        *s = (scan){.sh = sh, .hash = hash};
        scan_next(s, "0", 1);
    }
}

/* --- one record, re-read when a replica says it changed -------------------------------- */

enum { REC_KEY, REC_RUNNER, REC_HOOK };

typedef struct {
    fy_shared *sh;
    int runner;                    /* REC_... */
    char id[FY_STORE_HOOK_ID_MAX]; /* REC_HOOK: deleted here when Redis has none */
} reread;

static void on_reread(void *data, int status, const fy_redis_reply *r)
{
    reread *x = data;
    if (!status && r && r->type == FY_REDIS_REPLY_STRING) {
        if (x->runner == REC_RUNNER) {
            runner_take(x->sh, r->str, r->len);
        } else if (x->runner == REC_HOOK) {
            hook_take(x->sh, r->str, r->len);
        } else {
            key_take(x->sh, r->str, r->len, NULL);
        }
    } else if (!status && r && r->type == FY_REDIS_REPLY_NIL && x->runner == REC_HOOK) {
        hook_gone(x->sh, x->id);
    }
    free(x);
}

static void record_reread(fy_shared *sh, const char *hash, int runner, const char *id, size_t len)
{
    reread *x = calloc(1, sizeof *x);
    if (!x) {
        return;
    }
    *x = (reread){.sh = sh, .runner = runner};
    if (runner == REC_HOOK) {
        if (len >= sizeof x->id) {
            free(x);
            return;
        }
        memcpy(x->id, id, len);
    }
    const char *argv[] = {"HGET", hash, id};
    size_t lens[] = {4, strlen(hash), len};
    if (fy_redis_cmd(sh->cl, on_reread, x, 3, argv, lens)) {
        free(x);
    }
}

static void on_message(void *data, const char *chan, size_t chan_len, const char *msg,
                       size_t msg_len)
{
    fy_shared *sh = data;
    int runner =
        chan_len == strlen(FY_SH_CHAN_RUNNERS) && memcmp(chan, FY_SH_CHAN_RUNNERS, chan_len) == 0;
    int hook =
        chan_len == strlen(FY_SH_CHAN_HOOKS) && memcmp(chan, FY_SH_CHAN_HOOKS, chan_len) == 0;
    if (msg_len == 0 || msg_len >= FY_STORE_HOOK_PATH_MAX) {
        return;
    }
    record_reread(sh,
                  hook     ? FY_SH_HOOKS
                  : runner ? FY_SH_RUNNERS
                           : FY_SH_KEYS,
                  hook     ? REC_HOOK
                  : runner ? REC_RUNNER
                           : REC_KEY,
                  msg, msg_len);
}

/* --- replicas ---------------------------------------------------------------------------- */

static void set_replicas(fy_shared *sh, int64_t n)
{
    sh->replicas = n < 1 ? 1 : n;
    fy_metric_set(sh->o.metrics->shared_replicas, NULL, (double)sh->replicas);
    /* While down, each replica limits alone at its share of every limit. */
    fy_keys_set_share(sh->o.keys, sh->up ? 1 : sh->replicas);
}

static void on_heartbeat_reply(void *data, int status, const fy_redis_reply *r)
{
    fy_shared *sh = data;
    if (!status && r && r->type == FY_REDIS_REPLY_INTEGER && !sh->closing) {
        set_replicas(sh, r->integer);
    }
}

static void heartbeat(fy_shared *sh)
{
    json_t *info = sh->o.ops && sh->o.ops->announce ? sh->o.ops->announce(sh->o.data) : NULL;
    if (!info) {
        info = json_object();
    }
    json_object_set_new(info, "heartbeat_at", json_integer((json_int_t)time(NULL)));
    char *text = json_dumps(info, JSON_COMPACT);
    json_decref(info);
    if (!text) {
        return;
    }
    char alive[24], forget[24];
    snprintf(alive, sizeof alive, "%u", 3 * sh->o.heartbeat_ms);
    snprintf(forget, sizeof forget, "%u", 60 * sh->o.heartbeat_ms);
    const char *keys[] = {FY_SH_REPLICAS, FY_SH_REPLICA_INFO};
    const char *args[] = {sh->replica, text, alive, forget};
    fy_redis_eval(sh->heartbeat, on_heartbeat_reply, sh, 2, keys, NULL, 4, args, NULL);
    free(text);
}

static void on_hb_timer(uv_timer_t *t)
{
    fy_shared *sh = t->data;
    if (sh->up) {
        heartbeat(sh);
    }
}

/* --- usage ------------------------------------------------------------------------------ */

static uint64_t cell_hash(const char *id, int64_t hour)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)hour;
    for (const char *p = id; *p; p++) {
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    }
    return h;
}

static usage_cell *cell_find(usage_table *t, const char *id, int64_t hour)
{
    size_t i = cell_hash(id, hour) & (t->cap - 1);
    while (t->v[i].used && !(t->v[i].hour == hour && strcmp(t->v[i].key_id, id) == 0)) {
        i = (i + 1) & (t->cap - 1);
    }
    return &t->v[i];
}

static int table_grow(usage_table *t)
{
    if (t->cap && (t->n + 1) * 4 <= t->cap * 3) {
        return 0;
    }
    usage_table nt = {calloc(t->cap ? t->cap * 2 : 64, sizeof *nt.v), t->cap ? t->cap * 2 : 64, 0};
    if (!nt.v) {
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->v[i].used) {
            *cell_find(&nt, t->v[i].key_id, t->v[i].hour) = t->v[i];
            nt.n++;
        }
    }
    free(t->v);
    *t = nt;
    return 0;
}

static int table_add(usage_table *t, const char *id, int64_t hour, int64_t last,
                     const fy_store_usage *d)
{
    if (t->n >= FY_SHARED_MAX_USAGE_CELLS) {
        return FY_ELIMIT;
    }
    int rc = table_grow(t);
    if (rc) {
        return rc;
    }
    usage_cell *c = cell_find(t, id, hour);
    if (!c->used) {
        *c = (usage_cell){.hour = hour, .used = 1};
        snprintf(c->key_id, sizeof c->key_id, "%s", id);
        t->n++;
    }
    c->u.requests += d->requests;
    c->u.prompt_tokens += d->prompt_tokens;
    c->u.completion_tokens += d->completion_tokens;
    c->u.bytes_in += d->bytes_in;
    c->u.bytes_out += d->bytes_out;
    c->last = last > c->last ? last : c->last;
    return 0;
}

int fy_shared_usage_add(fy_shared *sh, const char *key_id, int64_t now, const fy_store_usage *delta)
{
    if (!key_id || strlen(key_id) >= FY_STORE_KEY_ID_MAX) {
        return FY_EINVAL;
    }
    return table_add(&sh->pending, key_id, now - now % 3600, now, delta);
}

typedef struct {
    fy_shared *sh;
    usage_table batch;
    int pending, err;
} usage_flush;

static void on_usage_reply(void *data, int status, const fy_redis_reply *r)
{
    usage_flush *f = data;
    (void)r;
    if (status && !f->err) {
        f->err = status;
    }
    if (--f->pending) {
        return;
    }
    if (f->err && f->err != FY_ECANCELED) {
        /* Not written (or not known to be): back into the pending table. */
        for (size_t i = 0; i < f->batch.cap; i++) {
            usage_cell *c = &f->batch.v[i];
            if (c->used && table_add(&f->sh->pending, c->key_id, c->hour, c->last, &c->u)) {
                FY_WARN(SH_LOG, "usage of %s dropped: too much pending", c->key_id);
            }
        }
    }
    free(f->batch.v);
    free(f);
}

static void usage_flush_now(fy_shared *sh)
{
    if (!sh->up || sh->pending.n == 0) {
        return;
    }
    usage_flush *f = calloc(1, sizeof *f);
    if (!f) {
        return;
    }
    f->sh = sh;
    f->batch = sh->pending;
    sh->pending = (usage_table){0};
    static const char suffix[] = "rpcio";
    for (size_t i = 0; i < f->batch.cap; i++) {
        usage_cell *c = &f->batch.v[i];
        if (!c->used) {
            continue;
        }
        char key[FY_SH_KEYNAME_MAX], field[5][40], val[5][24], last[24];
        uint64_t v[5] = {c->u.requests, c->u.prompt_tokens, c->u.completion_tokens, c->u.bytes_in,
                         c->u.bytes_out};
        fmt_key(key, FY_SH_KEY_USAGE_FMT, c->key_id);
        for (int j = 0; j < 5; j++) {
            if (!v[j]) {
                continue;
            }
            snprintf(field[j], sizeof field[j], "%" PRId64 ":%c", c->hour, suffix[j]);
            snprintf(val[j], sizeof val[j], "%" PRIu64, v[j]);
            const char *argv[] = {"HINCRBY", key, field[j], val[j]};
            f->pending++;
            if (fy_redis_cmd(sh->cl, on_usage_reply, f, 4, argv, NULL)) {
                f->pending--;
                f->err = FY_EUNREACH;
            }
        }
        /* "last" only moves forward. */
        snprintf(last, sizeof last, "%" PRId64, c->last);
        const char *argv[] = {"HSET", key, "last", last};
        f->pending++;
        if (fy_redis_cmd(sh->cl, on_usage_reply, f, 4, argv, NULL)) {
            f->pending--;
            f->err = FY_EUNREACH;
        }
    }
    if (f->pending == 0) {
        f->pending = 1;
        on_usage_reply(f, f->err ? f->err : FY_EUNREACH, NULL);
    }
}

static void on_usage_timer(uv_timer_t *t)
{
    usage_flush_now(t->data);
}

/* --- usage reports ---------------------------------------------------------------------- */

typedef struct usage_list usage_list;
typedef struct {
    usage_list *ul;
    char key_id[FY_STORE_KEY_ID_MAX];
} usage_part;

struct usage_list {
    fy_shared_usage_cb cb;
    void *data;
    int per_hour, err;
    int64_t from, to;
    size_t pending, nparts;
    usage_part *parts;
    fy_store_usage_row *rows;
    size_t n, cap;
};

static int row_cmp(const void *a, const void *b)
{
    const fy_store_usage_row *x = a, *y = b;
    int c = strcmp(x->key_id, y->key_id);
    return c ? c : (x->hour > y->hour) - (x->hour < y->hour);
}

/* One counter FIELD ("HOUR:r") = VALUE of key ID into UL's rows. */
static void usage_cell_add(usage_list *ul, const char *id, const fy_redis_reply *f,
                           const fy_redis_reply *v)
{
    char text[48], *end;
    if (f->len >= sizeof text || v->type != FY_REDIS_REPLY_STRING || v->len > 20) {
        return;
    }
    memcpy(text, f->str, f->len);
    text[f->len] = 0;
    long long hour = strtoll(text, &end, 10);
    if (end == text || end[0] != ':' || !end[1] || end[2] || hour < 0 || hour < ul->from ||
        hour >= ul->to) {
        return; /* "last", or outside the range */
    }
    char num[24];
    memcpy(num, v->str, v->len);
    num[v->len] = 0;
    unsigned long long n = strtoull(num, NULL, 10);
    if (ul->n == ul->cap) {
        size_t cap = ul->cap ? ul->cap * 2 : 64;
        fy_store_usage_row *r = realloc(ul->rows, cap * sizeof *r);
        if (!r) {
            ul->err = FY_ENOMEM;
            return;
        }
        ul->rows = r;
        ul->cap = cap;
    }
    fy_store_usage_row *row = &ul->rows[ul->n++];
    memset(row, 0, sizeof *row);
    snprintf(row->key_id, sizeof row->key_id, "%s", id);
    row->hour = ul->per_hour ? hour : 0;
    static const char kinds[] = "rpcio"; /* the suffixes of FY_SH_KEY_USAGE_FMT's fields */
    const char *kind = strchr(kinds, end[1]);
    uint64_t *counter[] = {&row->u.requests, &row->u.prompt_tokens, &row->u.completion_tokens,
                           &row->u.bytes_in, &row->u.bytes_out};
    if (kind) {
        *counter[kind - kinds] = n;
    } else {
        ul->n--;
    }
}

static void usage_list_end(usage_list *ul)
{
    size_t m = 0;
    if (!ul->err && ul->n) { /* none: rows may be NULL */
        qsort(ul->rows, ul->n, sizeof *ul->rows, row_cmp);
        for (size_t i = 0; i < ul->n; i++) {
            fy_store_usage_row *a = &ul->rows[i];
            fy_store_usage_row *last = m ? &ul->rows[m - 1] : NULL;
            if (last && last->hour == a->hour && strcmp(last->key_id, a->key_id) == 0) {
                last->u.requests += a->u.requests;
                last->u.prompt_tokens += a->u.prompt_tokens;
                last->u.completion_tokens += a->u.completion_tokens;
                last->u.bytes_in += a->u.bytes_in;
                last->u.bytes_out += a->u.bytes_out;
            } else {
                ul->rows[m++] = *a;
            }
        }
    }
    ul->cb(ul->data, ul->err, ul->err ? NULL : ul->rows, ul->err ? 0 : m);
    free(ul->rows);
    free(ul->parts);
    free(ul);
}

static void on_usage_hash(void *data, int status, const fy_redis_reply *r)
{
    usage_part *p = data;
    usage_list *ul = p->ul;
    if (status && !ul->err) {
        ul->err = status;
    }
    if (!status && r && r->type == FY_REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i + 1 < r->n; i += 2) {
            usage_cell_add(ul, p->key_id, &r->elem[i], &r->elem[i + 1]);
        }
    }
    if (--ul->pending == 0) {
        usage_list_end(ul);
    }
}

static void usage_key_row(const fy_store_key *k, void *arg)
{
    usage_list *ul = arg;
    if (ul->nparts < ul->pending) {
        snprintf(ul->parts[ul->nparts++].key_id, FY_STORE_KEY_ID_MAX, "%s", k->id);
    }
}

int fy_shared_usage_list(fy_shared *sh, const char *key_id, int64_t from, int64_t to, int per_hour,
                         fy_shared_usage_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    usage_list *ul = calloc(1, sizeof *ul);
    if (!ul) {
        return FY_ENOMEM;
    }
    *ul = (usage_list){.cb = cb, .data = data, .per_hour = per_hour, .from = from, .to = to};
    ul->pending = key_id ? 1 : fy_keys_count(sh->o.keys);
    ul->parts = calloc(ul->pending ? ul->pending : 1, sizeof *ul->parts);
    if (!ul->parts) {
        free(ul);
        return FY_ENOMEM;
    }
    if (key_id) {
        snprintf(ul->parts[0].key_id, FY_STORE_KEY_ID_MAX, "%s", key_id);
        ul->nparts = 1;
    } else if (fy_store_key_list(sh->o.store, usage_key_row, ul)) {
        free(ul->parts);
        free(ul);
        return FY_EIO;
    }
    ul->pending = ul->nparts + 1; /* + 1: held until every command went out */
    for (size_t i = 0; i < ul->nparts; i++) {
        usage_part *p = &ul->parts[i];
        char key[FY_SH_KEYNAME_MAX];
        p->ul = ul;
        fmt_key(key, FY_SH_KEY_USAGE_FMT, p->key_id);
        const char *argv[] = {"HGETALL", key};
        if (fy_redis_cmd(sh->cl, on_usage_hash, p, 2, argv, NULL)) {
            ul->pending--;
            ul->err = FY_EUNREACH;
        }
    }
    if (--ul->pending == 0) {
        usage_list_end(ul); /* nothing to read, or nothing went out */
    }
    return 0;
}

/* --- leases ------------------------------------------------------------------------------ */

static void lease_link(fy_shared_lease *head, fy_shared_lease *l)
{
    l->next = head->next;
    l->prev = head;
    head->next->prev = l;
    head->next = l;
}

static void lease_unlink(fy_shared_lease *l)
{
    if (l->next) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
        l->next = l->prev = NULL;
    }
}

/* Takes from list HEAD up to MAX leases of the key of its last lease (the
 * oldest) into OUT, oldest first, unlinked; returns how many. */
static size_t leases_of_one_key(fy_shared_lease *head, fy_shared_lease **out, size_t max)
{
    const char *key = head->prev->key_id;
    size_t n = 0;
    for (fy_shared_lease *l = head->prev, *prev; l != head && n < max; l = prev) {
        prev = l->prev;
        if (strcmp(l->key_id, key) == 0) {
            lease_unlink(l);
            out[n++] = l;
        }
    }
    return n;
}

/* Renews every lease held, one script per key (ttl/3 after the last time). */
static void on_renew_timer(uv_timer_t *t)
{
    fy_shared *sh = t->data;
    if (!sh->up || sh->leases.next == &sh->leases) {
        return;
    }
    fy_shared_lease done = {.prev = &done, .next = &done}, *batch[FY_SHL_RENEW_MAX];
    const char *ids[FY_SHL_RENEW_MAX];
    while (sh->leases.next != &sh->leases) {
        size_t n = leases_of_one_key(&sh->leases, batch, FY_SHL_RENEW_MAX);
        for (size_t i = 0; i < n; i++) {
            ids[i] = batch[i]->id;
            lease_link(&done, batch[i]);
        }
        fy_shl_renew(sh->lim, batch[0]->key_id, ids, n, sh->o.lease_ttl_ms, -1, NULL, NULL);
    }
    /* Back on the held list, in the order they were. */
    while (done.prev != &done) {
        fy_shared_lease *l = done.prev;
        lease_unlink(l);
        lease_link(&sh->leases, l);
    }
}

/* Releases wait for the end of the loop turn, so those of one turn go out
 * as one ZREM per key. Down: they expire with their TTL. */
static void flush_releases(fy_shared *sh)
{
    fy_shared_lease *batch[FY_SHL_RELEASE_MAX];
    const char *ids[FY_SHL_RELEASE_MAX];
    while (sh->released.next != &sh->released) {
        size_t n = leases_of_one_key(&sh->released, batch, FY_SHL_RELEASE_MAX);
        for (size_t i = 0; i < n; i++) {
            ids[i] = batch[i]->id;
        }
        if (sh->up) {
            fy_shl_release(sh->lim, batch[0]->key_id, ids, n, NULL, NULL);
        }
        for (size_t i = 0; i < n; i++) {
            free(batch[i]);
        }
    }
}

static void flush_asks(fy_shared *sh);

/* Runs before the loop waits for I/O again: whatever this turn released or
 * asked for goes out then, releases first, so their slots are free for the
 * admissions. */
static void on_batch(uv_prepare_t *p)
{
    fy_shared *sh = p->data;
    uv_prepare_stop(p);
    flush_releases(sh);
    flush_asks(sh);
}

/* --- admission ----------------------------------------------------------------------------- */

static void admit_local(fy_shared *sh, fy_shared_lease *l)
{
    fy_shared_admission a = {.auth = FY_AUTH_OK};
    fy_shared_admit_cb cb = l->cb;
    void *data = l->data;
    fy_metric_add(sh->o.metrics->shared_local, NULL, 1);
    if (fy_rl_acquire(l->rl, fy_rl_now(), &a.rr)) {
        l->local = 1;
        a.lease = l;
    } else {
        free(l);
    }
    cb(data, &a);
}

static void on_admit(void *data, int err, const fy_shl_admission *r)
{
    fy_shared_lease *l = data;
    fy_shared *sh = l->sh;
    fy_shared_admission a = {.auth = FY_AUTH_OK};
    fy_shared_admit_cb cb = l->cb;
    void *cb_data = l->data;
    if (err == FY_ECANCELED) {
        free(l);
        a.unavailable = 1;
        cb(cb_data, &a);
        return;
    }
    if (err) {
        /* Redis went away with the script in flight (it may or may not have
         * run: a lease it took expires with its TTL). Decide here. */
        admit_local(sh, l);
        return;
    }
    a.rr = r->rr;
    switch (r->status) {
    case FY_SHL_OK:
        a.lease = l;
        lease_link(&sh->leases, l);
        break;
    case FY_SHL_DENIED:
        free(l);
        break;
    default:
        a.auth = r->status == FY_SHL_REVOKED   ? FY_AUTH_REVOKED
                 : r->status == FY_SHL_EXPIRED ? FY_AUTH_EXPIRED
                                               : FY_AUTH_UNKNOWN;
        /* The cache was behind: bring it up to date for the next request. */
        record_reread(sh, FY_SH_KEYS, REC_KEY, l->key_id, strlen(l->key_id));
        free(l);
        break;
    }
    cb(cb_data, &a);
}

/* The admissions asked this turn, one script per key; those that cannot be
 * sent are decided locally. */
static void flush_asks(fy_shared *sh)
{
    fy_shared_lease *batch[FY_SHL_ADMIT_MAX];
    fy_shl_ask asks[FY_SHL_ADMIT_MAX];
    while (sh->asking.next != &sh->asking) {
        size_t n = leases_of_one_key(&sh->asking, batch, FY_SHL_ADMIT_MAX);
        for (size_t i = 0; i < n; i++) {
            asks[i] = (fy_shl_ask){batch[i]->id, on_admit, batch[i]};
        }
        if (!sh->up || fy_shl_admit_many(sh->lim, batch[0]->key_id, asks, n, sh->o.lease_ttl_ms, -1,
                                         -1) != 0) {
            for (size_t i = 0; i < n; i++) {
                admit_local(sh, batch[i]);
            }
        }
    }
}

void fy_shared_admit(fy_shared *sh, fy_key *k, fy_shared_admit_cb cb, void *data)
{
    fy_shared_lease *l = calloc(1, sizeof *l);
    if (!l) {
        fy_shared_admission a = {.auth = FY_AUTH_OK, .unavailable = 1};
        cb(data, &a);
        return;
    }
    l->sh = sh;
    l->rl = fy_key_rl(k);
    l->cb = cb;
    l->data = data;
    snprintf(l->key_id, sizeof l->key_id, "%s", fy_key_id(k));
    snprintf(l->id, sizeof l->id, "%s:%" PRIu64, sh->replica, ++sh->lease_seq);
    if (!sh->up) {
        admit_local(sh, l);
        return;
    }
    /* Decided with the others of this loop turn on the same key. */
    lease_link(&sh->asking, l);
    uv_prepare_start(sh->batch, on_batch);
}

void fy_shared_charge(fy_shared *sh, fy_shared_lease *l, int64_t tokens)
{
    if (tokens <= 0) {
        return;
    }
    if (l->local || !sh || !sh->up ||
        fy_shl_charge(sh->lim, l->key_id, tokens, -1, NULL, NULL) != 0) {
        fy_rl_charge(l->rl, fy_rl_now(), tokens);
    }
}

void fy_shared_release(fy_shared *sh, fy_shared_lease *l)
{
    if (!l) {
        return;
    }
    if (l->local || !sh) { /* NULL: the shared state closed first (it expires by TTL) */
        if (l->local) {
            fy_rl_release(l->rl);
        }
        free(l);
        return;
    }
    lease_unlink(l);
    lease_link(&sh->released, l);
    uv_prepare_start(sh->batch, on_batch);
}

/* --- key lookup ---------------------------------------------------------------------------- */

static void on_lookup_record(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    o->sh->lookups--;
    int err = status                                   ? status
              : !r || r->type != FY_REDIS_REPLY_STRING ? FY_ENOENT
                                                       : key_take(o->sh, r->str, r->len, NULL);
    op_end(o, err);
}

static void on_lookup_id(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    if (status || !r || r->type != FY_REDIS_REPLY_STRING || r->len >= FY_STORE_KEY_ID_MAX) {
        o->sh->lookups--;
        op_end(o, status ? status : FY_ENOENT);
        return;
    }
    const char *argv[] = {"HGET", FY_SH_KEYS, r->str};
    size_t lens[] = {4, strlen(FY_SH_KEYS), r->len};
    int rc = fy_redis_cmd(o->sh->cl, on_lookup_record, o, 3, argv, lens);
    if (rc) {
        o->sh->lookups--;
        op_end(o, rc);
    }
}

int fy_shared_key_lookup(fy_shared *sh, const uint8_t hash[32], fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    if (sh->lookups >= FY_SHARED_MAX_LOOKUPS) {
        return FY_ELIMIT;
    }
    op *o = op_new(sh, NULL, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    char hex[65];
    fy_shc_hex(hash, hex);
    const char *argv[] = {"HGET", FY_SH_KEYHASH, hex};
    int rc = fy_redis_cmd(sh->cl, on_lookup_id, o, 3, argv, NULL);
    if (rc) {
        free(o);
        return rc;
    }
    sh->lookups++;
    return 0;
}

/* --- writes -------------------------------------------------------------------------------- */

static void key_put_done(op *o, int err)
{
    if (!err) {
        err = fy_keys_apply(o->sh->o.keys, &o->key);
    }
    op_end(o, err);
}

int fy_shared_key_put(fy_shared *sh, const fy_store_key *k, fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, key_put_done, cb, data);
    char *text = o ? fy_shc_key_encode(k) : NULL;
    if (!text) {
        free(o);
        return FY_ENOMEM;
    }
    o->key = *k;
    char hex[65];
    fy_shc_hex(k->hash, hex);
    /* The live state first, in one step: the next admission anywhere reads it. */
    fy_shl_live lv = {.rpm = k->rpm,
                      .tpm = k->tpm,
                      .concurrency = k->concurrency,
                      .burst = k->burst,
                      .expires_at = k->expires_at,
                      .revoked_at = k->revoked_at};
    o->pending++;
    int rc = fy_shl_live_write(sh->lim, k->id, &lv, op_counted, o);
    if (rc) {
        free(text);
        free(o);
        return rc;
    }
    const char *rec[] = {"HSET", FY_SH_KEYS, k->id, text};
    const char *idx[] = {"HSET", FY_SH_KEYHASH, hex, k->id};
    const char *pub[] = {"PUBLISH", FY_SH_CHAN_KEYS, k->id};
    op_cmd(o, 4, rec, NULL);
    op_cmd(o, 4, idx, NULL);
    op_cmd(o, 3, pub, NULL);
    free(text);
    return op_sent(o);
}

/* Sends O's HGET of ID in HASH, whose reply ON_REPLY reads; frees O when
 * it could not be sent. */
static int record_get(op *o, const char *hash, const char *id, fy_redis_reply_cb on_reply)
{
    const char *argv[] = {"HGET", hash, id};
    int rc = fy_redis_cmd(o->sh->cl, on_reply, o, 3, argv, NULL);
    if (rc) {
        free(o);
    }
    return rc;
}

static void on_key_get(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    char err[160];
    int rc = status ? status
             : !r || r->type != FY_REDIS_REPLY_STRING
                 ? FY_ENOENT
                 : fy_shc_key_decode(r->str, r->len, o->out_key, err, sizeof err);
    op_end(o, rc);
}

int fy_shared_key_get(fy_shared *sh, const char *id, fy_store_key *out, fy_shared_done_cb cb,
                      void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, NULL, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    o->out_key = out;
    return record_get(o, FY_SH_KEYS, id, on_key_get);
}

static void plain_done(op *o, int err)
{
    op_end(o, err);
}

int fy_shared_token_add(fy_shared *sh, const fy_store_token *t, const uint8_t hash[32],
                        fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, plain_done, cb, data);
    char *text = o ? fy_shc_token_encode(t) : NULL;
    if (!text) {
        free(o);
        return FY_ENOMEM;
    }
    char hex[65];
    fy_shc_hex(hash, hex);
    const char *argv[] = {"HSET", FY_SH_TOKENS, hex, text};
    op_cmd(o, 4, argv, NULL);
    free(text);
    return op_sent(o);
}

static void on_consume(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    int rc = status;
    if (!rc && (!r || r->type != FY_REDIS_REPLY_ARRAY || r->n < 1 ||
                r->elem[0].type != FY_REDIS_REPLY_INTEGER)) {
        rc = FY_EPROTO;
    }
    if (!rc) {
        long long c = r->elem[0].integer;
        rc = c == 1   ? FY_ENOENT
             : c == 2 ? FY_EEXIST
             : c == 3 ? FY_ETIMEDOUT
             : c == 0 ? 0
                      : FY_EPROTO;
    }
    if (!rc) {
        fy_store_token t;
        char err[160];
        rc = r->n == 2 && r->elem[1].type == FY_REDIS_REPLY_STRING
                 ? fy_shc_token_decode(r->elem[1].str, r->elem[1].len, &t, err, sizeof err)
                 : FY_EPROTO;
        if (!rc) {
            snprintf(o->name_out, FY_STORE_NAME_MAX, "%s", t.runner_name);
        }
    }
    op_end(o, rc);
}

int fy_shared_token_consume(fy_shared *sh, const uint8_t hash[32], int64_t now,
                            char name[FY_STORE_NAME_MAX], fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, NULL, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    o->name_out = name;
    char hex[65], when[24];
    fy_shc_hex(hash, hex);
    snprintf(when, sizeof when, "%" PRId64, now);
    const char *keys[] = {FY_SH_TOKENS};
    const char *args[] = {hex, when};
    int rc = fy_redis_eval(sh->consume, on_consume, o, 1, keys, NULL, 2, args, NULL);
    if (rc) {
        free(o);
    }
    return rc;
}

/* Sends O's HSET of record TEXT (O's, wiped and freed here; NULL: out of
 * memory) as field ID of HASH, then the PUBLISH of ID on CHAN. */
static int record_put(op *o, const char *hash, const char *chan, const char *id, char *text)
{
    if (!text) {
        free(o);
        return FY_ENOMEM;
    }
    const char *rec[] = {"HSET", hash, id, text};
    const char *pub[] = {"PUBLISH", chan, id};
    op_cmd(o, 4, rec, NULL);
    op_cmd(o, 3, pub, NULL);
    fy_secure_zero(text, strlen(text));
    free(text);
    return op_sent(o);
}

/* A whole-hash read (HGETALL) answered to a caller's typed callback. */
typedef struct {
    fy_shared *sh;
    void (*cb)(void);
    void *data;
} hash_call;

/* Sends HGETALL HASH; ON gets a hash_call carrying CB and DATA. */
static int hash_read(fy_shared *sh, const char *hash, fy_redis_reply_cb on, void (*cb)(void),
                     void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    hash_call *x = malloc(sizeof *x);
    if (!x) {
        return FY_ENOMEM;
    }
    *x = (hash_call){sh, cb, data};
    const char *argv[] = {"HGETALL", hash};
    int rc = fy_redis_cmd(sh->cl, on, x, 2, argv, NULL);
    if (rc) {
        free(x);
    }
    return rc;
}

static int token_newer(const void *a, const void *b)
{
    const fy_store_token *x = a, *y = b;
    return (x->created_at < y->created_at) - (x->created_at > y->created_at);
}

static void on_tokens(void *data, int status, const fy_redis_reply *r)
{
    hash_call *x = data;
    fy_store_token *t = NULL;
    size_t n = 0;
    if (!status && (!r || r->type != FY_REDIS_REPLY_ARRAY || r->n % 2)) {
        status = FY_EPROTO;
    }
    if (!status && r->n && !(t = calloc(r->n / 2, sizeof *t))) {
        status = FY_ENOMEM;
    }
    for (size_t i = 1; !status && i < r->n; i += 2) {
        char err[160];
        const fy_redis_reply *v = &r->elem[i];
        if (v->type == FY_REDIS_REPLY_STRING &&
            fy_shc_token_decode(v->str, v->len, &t[n], err, sizeof err) == 0) {
            n++;
        }
    }
    if (!status && n) { /* none: t may be NULL */
        qsort(t, n, sizeof *t, token_newer);
    }
    ((fy_shared_tokens_cb)x->cb)(x->data, status, t, n);
    free(t);
    free(x);
}

int fy_shared_token_list(fy_shared *sh, fy_shared_tokens_cb cb, void *data)
{
    return hash_read(sh, FY_SH_TOKENS, on_tokens, (void (*)(void))cb, data);
}

static void runner_put_done(op *o, int err)
{
    if (!err) {
        err = fy_store_runner_put(o->sh->o.store, &o->runner);
    }
    op_end(o, err);
}

int fy_shared_runner_put(fy_shared *sh, const fy_store_runner *r, fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, runner_put_done, cb, data);
    if (o) {
        o->runner = *r;
    }
    return record_put(o, FY_SH_RUNNERS, FY_SH_CHAN_RUNNERS, r->name,
                      o ? fy_shc_runner_encode(r) : NULL);
}

/* --- hooks ---------------------------------------------------------------------------------- */

/* Takes hook record TEXT (from Redis) into the local cache, unless the cache
 * already holds exactly it. */
static int hook_take(fy_shared *sh, const char *text, size_t len)
{
    char err[160];
    fy_store_hook *h = calloc(1, sizeof *h), *have = calloc(1, sizeof *have);
    int rc = !h || !have ? FY_ENOMEM : fy_shc_hook_decode(text, len, h, err, sizeof err);
    if (rc == FY_EINVAL) {
        FY_WARN(SH_LOG, "skipping a malformed hook record in Redis: %s", err);
    }
    if (!rc) {
        int same = 0;
        if (fy_store_hook_get(sh->o.store, h->id, have) == 0) {
            char *mine = fy_shc_hook_encode(have);
            same = mine && strlen(mine) == len && memcmp(mine, text, len) == 0;
            if (mine) {
                fy_secure_zero(mine, strlen(mine));
            }
            free(mine);
        }
        if (!same && (rc = fy_store_hook_put(sh->o.store, h))) {
            FY_WARN(SH_LOG, "cannot cache hook %s: %s", h->id, fy_strerror(rc));
        }
    }
    if (h) {
        fy_secure_zero(h, sizeof *h);
    }
    if (have) {
        fy_secure_zero(have, sizeof *have);
    }
    free(h);
    free(have);
    return rc;
}

/* Redis has no hook ID (any more): neither has the cache. */
static void hook_gone(fy_shared *sh, const char *id)
{
    if (fy_store_hook_delete(sh->o.store, id) == 0) {
        FY_INFO(SH_LOG, "hook %s deleted (by another replica)", id);
        if (sh->o.ops && sh->o.ops->on_hook_gone) {
            sh->o.ops->on_hook_gone(sh->o.data, id);
        }
    }
}

typedef struct {
    fy_shared *sh;
    const char (*ids)[FY_STORE_HOOK_ID_MAX];
    size_t n;
} prune_ctx;

static void prune_row(const fy_store_hook *h, void *arg)
{
    prune_ctx *x = arg;
    for (size_t i = 0; i < x->n; i++) {
        if (strcmp(x->ids[i], h->id) == 0) {
            return;
        }
    }
    /* Not in the full read: asked once more, since a hook created while
     * the read went on may have been missed by it; the answer decides. */
    record_reread(x->sh, FY_SH_HOOKS, REC_HOOK, h->id, strlen(h->id));
}

/* After a full read of FY_SH_HOOKS that returned IDS[0..N): the cached
 * hooks Redis did not return are checked, and deleted when it has none. */
static void hooks_prune(fy_shared *sh, const char (*ids)[FY_STORE_HOOK_ID_MAX], size_t n)
{
    prune_ctx x = {sh, ids, n};
    int rc = fy_store_hook_list(sh->o.store, prune_row, &x);
    if (rc) {
        FY_WARN(SH_LOG, "cannot list the cached hooks: %s", fy_strerror(rc));
    }
}

static void hook_put_done(op *o, int err)
{
    if (!err) {
        err = fy_store_hook_put(o->sh->o.store, &o->hook);
    }
    op_end(o, err);
}

int fy_shared_hook_put(fy_shared *sh, const fy_store_hook *h, fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, hook_put_done, cb, data);
    if (o) {
        o->hook = *h;
    }
    return record_put(o, FY_SH_HOOKS, FY_SH_CHAN_HOOKS, h->id, o ? fy_shc_hook_encode(h) : NULL);
}

static void on_hook_get(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    char err[160];
    int rc = status ? status
             : !r || r->type != FY_REDIS_REPLY_STRING
                 ? FY_ENOENT
                 : fy_shc_hook_decode(r->str, r->len, o->out_hook, err, sizeof err);
    op_end(o, rc);
}

int fy_shared_hook_get(fy_shared *sh, const char *id, fy_store_hook *out, fy_shared_done_cb cb,
                       void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, NULL, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    o->out_hook = out;
    return record_get(o, FY_SH_HOOKS, id, on_hook_get);
}

/* HDEL's reply: how many records went (0: Redis had no such hook). */
static void on_hook_hdel(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    o->step = !status && r && r->type == FY_REDIS_REPLY_INTEGER && r->integer > 0;
    op_reply(data, status, r);
}

static void hook_delete_done(op *o, int err)
{
    if (!err) {
        /* The cache follows Redis, whatever it held. */
        int rc = fy_store_hook_delete(o->sh->o.store, o->hook.id);
        err = rc && rc != FY_ENOENT ? rc : o->step ? 0 : FY_ENOENT;
    }
    op_end(o, err);
}

int fy_shared_hook_delete(fy_shared *sh, const char *id, fy_shared_done_cb cb, void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    if (strlen(id) >= FY_STORE_HOOK_ID_MAX) {
        return FY_ENOENT;
    }
    op *o = op_new(sh, hook_delete_done, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    snprintf(o->hook.id, sizeof o->hook.id, "%s", id);
    char q[FY_SH_KEYNAME_MAX], tries[FY_SH_KEYNAME_MAX], owner[FY_SH_KEYNAME_MAX],
        dead[FY_SH_KEYNAME_MAX];
    fmt_key(q, FY_SH_HOOK_STREAM_FMT, id);
    fmt_key(tries, FY_SH_HOOK_TRIES_FMT, id);
    fmt_key(owner, FY_SH_HOOK_OWNER_FMT, id);
    fmt_key(dead, FY_SH_HOOK_DEAD_FMT, id);
    const char *rec[] = {"HDEL", FY_SH_HOOKS, id};
    /* Its queue goes with it, as in the SQLite store (one slot per key:
     * the hook's keys share {h:ID}, the record is in {cat}). */
    const char *del[] = {"DEL", q, tries, owner, dead};
    const char *pub[] = {"PUBLISH", FY_SH_CHAN_HOOKS, id};
    op_cmd_cb(o, on_hook_hdel, 3, rec, NULL);
    op_cmd(o, 5, del, NULL);
    op_cmd(o, 3, pub, NULL);
    return op_sent(o);
}

int fy_shared_delivery_valid(const char *delivery)
{
    size_t n = strlen(delivery);
    if (n == 0 || n > FY_SHARED_DELIVERY_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = delivery[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.')) {
            return 0;
        }
    }
    return 1;
}

/* SET NX's answer: OK (new) or nil (already there: a replay). */
static void on_seen(void *data, int status, const fy_redis_reply *r)
{
    op *o = data;
    op_end(o, status ? status : r && r->type == FY_REDIS_REPLY_NIL ? FY_EEXIST : 0);
}

int fy_shared_hook_seen(fy_shared *sh, const char *hook_id, const char *delivery, int64_t window_s,
                        fy_shared_done_cb cb, void *data)
{
    if (!fy_shared_delivery_valid(delivery) || strlen(hook_id) >= FY_STORE_HOOK_ID_MAX ||
        window_s < 1) {
        return FY_EINVAL;
    }
    if (!sh->up) {
        return FY_EUNREACH;
    }
    op *o = op_new(sh, NULL, cb, data);
    if (!o) {
        return FY_ENOMEM;
    }
    char key[FY_SH_KEYNAME_MAX], ex[24];
    snprintf(key, sizeof key, FY_SH_HOOK_SEEN_FMT, hook_id, delivery);
    snprintf(ex, sizeof ex, "%" PRId64, window_s);
    const char *argv[] = {"SET", key, "1", "NX", "EX", ex};
    int rc = fy_redis_cmd(sh->cl, on_seen, o, 6, argv, NULL);
    if (rc) {
        free(o);
    }
    return rc;
}

fy_redis *fy_shared_redis(fy_shared *sh)
{
    return sh->cl;
}

unsigned fy_shared_lease_ttl_ms(const fy_shared *sh)
{
    return sh->o.lease_ttl_ms;
}

/* --- replicas' announcements -------------------------------------------------------------- */

static void on_info(void *data, int status, const fy_redis_reply *r)
{
    hash_call *x = data;
    json_t *o = NULL;
    if (!status && (!r || r->type != FY_REDIS_REPLY_ARRAY || r->n % 2)) {
        status = FY_EPROTO;
    }
    if (!status) {
        /* Only replicas heard from lately: a dead one's last word stays in
         * Redis until the others forget it (60 heartbeats). A few seconds
         * of slack for clocks that differ between hosts. */
        json_int_t alive =
            (json_int_t)time(NULL) - 3 * (json_int_t)x->sh->o.heartbeat_ms / 1000 - 2;
        o = json_object();
        for (size_t i = 0; i + 1 < r->n; i += 2) {
            const fy_redis_reply *f = &r->elem[i], *v = &r->elem[i + 1];
            json_t *j = f->type == FY_REDIS_REPLY_STRING && v->type == FY_REDIS_REPLY_STRING
                            ? json_loadb(v->str, v->len, 0, NULL)
                            : NULL;
            if (json_is_object(j) && f->len < FY_SHARED_REPLICA_ID_MAX &&
                json_integer_value(json_object_get(j, "heartbeat_at")) >= alive) {
                json_object_setn_new(o, f->str, f->len, j);
            } else {
                json_decref(j);
            }
        }
    }
    ((fy_shared_json_cb)x->cb)(x->data, status, o);
    json_decref(o);
    free(x);
}

int fy_shared_replicas_info(fy_shared *sh, fy_shared_json_cb cb, void *data)
{
    return hash_read(sh, FY_SH_REPLICA_INFO, on_info, (void (*)(void))cb, data);
}

/* --- hook queue lengths ------------------------------------------------------------------- */

typedef struct {
    fy_shared_counts_cb cb;
    void *data;
    size_t pending, n;
    int err;
    int64_t *len; /* queued[0..n), then dead[0..n) */
} counts_call;

typedef struct {
    counts_call *c;
    size_t i;
} counts_part;

static void counts_release(counts_call *c)
{
    if (--c->pending) {
        return;
    }
    c->cb(c->data, c->err, c->err ? NULL : c->len, c->err ? NULL : c->len + c->n);
    free(c->len);
    free(c);
}

static void on_xlen(void *data, int status, const fy_redis_reply *r)
{
    counts_part *p = data;
    counts_call *c = p->c;
    if (status && !c->err) {
        c->err = status;
    } else if (!status && r && r->type == FY_REDIS_REPLY_INTEGER) {
        c->len[p->i] = r->integer;
    }
    free(p);
    counts_release(c);
}

int fy_shared_hook_counts(fy_shared *sh, const char *const *ids, size_t n, fy_shared_counts_cb cb,
                          void *data)
{
    if (!sh->up) {
        return FY_EUNREACH;
    }
    counts_call *c = calloc(1, sizeof *c);
    if (!c || !(c->len = calloc(2 * n + 1, sizeof *c->len))) {
        free(c);
        return FY_ENOMEM;
    }
    *c = (counts_call){.cb = cb, .data = data, .pending = 1, .n = n, .len = c->len};
    for (size_t i = 0; i < 2 * n; i++) {
        char key[FY_SH_KEYNAME_MAX];
        counts_part *p = malloc(sizeof *p);
        fmt_key(key, i < n ? FY_SH_HOOK_STREAM_FMT : FY_SH_HOOK_DEAD_FMT, ids[i % n]);
        const char *argv[] = {"XLEN", key};
        if (!p) {
            c->err = FY_ENOMEM;
            break;
        }
        *p = (counts_part){c, i};
        c->pending++;
        if (fy_redis_cmd(sh->cl, on_xlen, p, 2, argv, NULL)) {
            free(p);
            c->pending--;
            c->err = FY_EUNREACH;
            break;
        }
    }
    counts_release(c); /* may answer now, when nothing went out */
    return 0;
}

/* --- life ------------------------------------------------------------------------------------ */

static void on_state(void *data, int up, int err, const char *reason)
{
    fy_shared *sh = data;
    if (sh->closing) {
        return;
    }
    sh->up = up;
    fy_metric_set(sh->o.metrics->shared_up, NULL, up);
    if (up) {
        fy_log_event(FY_LOG_INFO, SH_LOG,
                     sh->ever_up ? "shared state reachable again: reconciling"
                                 : "shared state reachable",
                     json_pack("{s:s}", "replica", sh->replica));
        sh->ever_up = 1;
        /* Whatever changed while this replica could not hear it. */
        catalog_read(sh, FY_SH_KEYS);
        catalog_read(sh, FY_SH_RUNNERS);
        catalog_read(sh, FY_SH_HOOKS);
        heartbeat(sh);
        usage_flush_now(sh);
    } else {
        fy_log_event(FY_LOG_ERROR, SH_LOG,
                     "shared state unreachable: cached keys only, limits at limit / replicas, "
                     "writes refused",
                     json_pack("{s:s,s:s,s:I}", "error", fy_strerror(err), "reason",
                               reason ? reason : "", "replicas", (json_int_t)sh->replicas));
    }
    set_replicas(sh, sh->replicas);
}

static const fy_redis_ops redis_ops = {.on_state = on_state};

int fy_shared_new(const fy_shared_options *o, const fy_redis_config *cfg, fy_shared **out,
                  char *err, size_t errlen)
{
    fy_shared *sh = calloc(1, sizeof *sh);
    if (!sh) {
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    sh->o = *o;
    if (!sh->o.heartbeat_ms) {
        sh->o.heartbeat_ms = FY_SHARED_HEARTBEAT_MS;
    }
    if (!sh->o.lease_ttl_ms) {
        sh->o.lease_ttl_ms = FY_SHARED_LEASE_TTL_MS;
    }
    sh->leases.next = sh->leases.prev = &sh->leases;
    sh->released.next = sh->released.prev = &sh->released;
    sh->asking.next = sh->asking.prev = &sh->asking;
    sh->replicas = 1;
    uint8_t raw[9];
    int rc = fy_random_bytes(raw, sizeof raw);
    memcpy(sh->replica, "rep_", 4);
    if (!rc) {
        rc = fy_b64url_encode(raw, sizeof raw, sh->replica + 4, sizeof sh->replica - 4);
    }
    if (!rc) {
        rc = fy_redis_new(o->loop, cfg, &redis_ops, sh, &sh->cl);
    }
    if (!rc) {
        rc = fy_shl_new(sh->cl, &sh->lim);
    }
    if (!rc) {
        rc = fy_redis_script_new(sh->cl, heartbeat_lua, &sh->heartbeat);
    }
    if (!rc) {
        rc = fy_redis_script_new(sh->cl, consume_lua, &sh->consume);
    }
    if (!rc) {
        rc = fy_redis_subscribe(sh->cl, FY_SH_CHAN_KEYS, strlen(FY_SH_CHAN_KEYS), on_message, sh);
    }
    if (!rc) {
        rc = fy_redis_subscribe(sh->cl, FY_SH_CHAN_RUNNERS, strlen(FY_SH_CHAN_RUNNERS), on_message,
                                sh);
    }
    if (!rc) {
        rc = fy_redis_subscribe(sh->cl, FY_SH_CHAN_HOOKS, strlen(FY_SH_CHAN_HOOKS), on_message, sh);
    }
    if (!rc) {
        sh->hb = timer_new(sh, on_hb_timer, sh->o.heartbeat_ms);
        sh->renew = timer_new(sh, on_renew_timer, sh->o.lease_ttl_ms / 3);
        sh->usage = timer_new(sh, on_usage_timer, FY_STORE_USAGE_FLUSH_MS);
        if ((sh->batch = malloc(sizeof *sh->batch))) {
            uv_prepare_init(o->loop, sh->batch);
            sh->batch->data = sh;
        }
        rc = sh->hb && sh->renew && sh->usage && sh->batch ? 0 : FY_ENOMEM;
    }
    if (rc) {
        snprintf(err, errlen, "shared state: %s", fy_strerror(rc));
        fy_shared_free(sh);
        return rc;
    }
    fy_metric_set(o->metrics->shared_replicas, NULL, 1);
    *out = sh;
    return 0;
}

void fy_shared_free(fy_shared *sh)
{
    if (!sh) {
        return;
    }
    usage_flush_now(sh); /* written if the loop runs on long enough; else lost */
    flush_releases(sh);  /* likewise */
    flush_asks(sh);      /* answered by fy_redis_free below (unavailable) */
    sh->closing = 1;
    timer_free(sh->hb);
    timer_free(sh->renew);
    timer_free(sh->usage);
    if (sh->batch) {
        uv_close((uv_handle_t *)sh->batch, handle_closed);
    }
    /* Leases still held (none once every request ended) expire by TTL. */
    while (sh->leases.next != &sh->leases) {
        lease_unlink(sh->leases.next);
    }
    fy_shl_free(sh->lim);
    fy_redis_free(sh->cl); /* every callback owed runs now, with FY_ECANCELED */
    free(sh->pending.v);
    free(sh);
}

int fy_shared_is_up(const fy_shared *sh)
{
    return sh && sh->up;
}

int64_t fy_shared_replicas(const fy_shared *sh)
{
    return sh ? sh->replicas : 1;
}

const char *fy_shared_replica_id(const fy_shared *sh)
{
    return sh->replica;
}
