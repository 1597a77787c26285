/* shared_hookq.c: async hooks' events in Redis Streams (see shared_hookq.h).
 *
 * Every reply carries a small call that points at Q; Q counts them and is
 * freed by the last one after fy_shq_free, so a reply that comes after the
 * free (or is cancelled by the client's free) touches live memory only. */
#include "gateway/shared_hookq.h"

#include "common/err.h"
#include "common/log.h"
#include "gateway/shared_layout.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHQ_LOG "hookq"

/* Takes (or extends) the owner lease and hands out the oldest entry.
 * KEYS: owner, stream, tries. ARGV: replica id, ttl ms, group.
 * Returns {0} (another replica owns the hook), {1} (nothing waiting) or
 * {2, entry id, {field, value...}, "ATTEMPTS NEXT_AT" or ""}. */
static const char take_lua[] =
    "local o = redis.call('GET', KEYS[1])\n"
    "if o and o ~= ARGV[1] then return {0} end\n"
    "if redis.call('EXISTS', KEYS[2]) == 0 then return {1} end\n"
    "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])\n"
    "pcall(redis.call, 'XGROUP', 'CREATE', KEYS[2], ARGV[3], '0')\n"
    "local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[3], ARGV[1], 0, '0-0', 'COUNT', 1)\n"
    "local e = r[2][1]\n"
    "if not e then\n"
    "  local x = redis.call('XREADGROUP', 'GROUP', ARGV[3], ARGV[1], 'COUNT', 1, 'STREAMS',\n"
    "                       KEYS[2], '>')\n"
    "  if x then e = x[1][2][1] end\n"
    "end\n"
    "if not e then return {1} end\n"
    "return {2, e[1], e[2], redis.call('HGET', KEYS[3], e[1]) or ''}\n";

/* Compare and extend: the lease is renewed only while this replica holds it.
 * KEYS: owner. ARGV: replica id, ttl ms. Returns 1 (renewed) or 0. */
static const char renew_lua[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
                                "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                                "end\n"
                                "return 0\n";

/* A hook with an event out: its lease is renewed until done or retry. */
typedef struct held {
    struct held *next;
    char hook_id[FY_STORE_HOOK_ID_MAX];
} held;

struct fy_shq {
    fy_shared *sh;
    fy_redis *cl;
    fy_redis_script *take, *renew;
    unsigned ttl_ms;
    uv_timer_t *timer;
    held *held;
    size_t calls; /* replies owed */
    int closed;
};

typedef struct {
    fy_shq *q;
    fy_shared_done_cb cb;
    void *data;
    fy_store_hookq_item *out;
    char *entry;
    char hook_id[FY_STORE_HOOK_ID_MAX];
} call;

static void q_release(fy_shq *q)
{
    if (q->closed && q->calls == 0) {
        free(q);
    }
}

static call *call_new(fy_shq *q, fy_shared_done_cb cb, void *data)
{
    call *c = calloc(1, sizeof *c);
    if (c) {
        c->q = q;
        c->cb = cb;
        c->data = data;
        q->calls++;
    }
    return c;
}

/* Ends C with ERR: its callback (unless Q was freed), then C. */
static void call_end(call *c, int err)
{
    fy_shq *q = c->q;
    if (c->cb && !q->closed) {
        c->cb(c->data, err);
    }
    free(c);
    q->calls--;
    q_release(q);
}

/* Sends through C (which ends with the reply in CB); undoes C when sending
 * failed. */
static int call_send(call *c, fy_redis_reply_cb cb, int argc, const char *const *argv,
                     const size_t *lens)
{
    int rc = fy_redis_cmd(c->q->cl, cb, c, argc, argv, lens);
    if (rc) {
        c->cb = NULL;
        call_end(c, rc);
    }
    return rc;
}

static void hkey(char *out, const char *fmt, const char *id)
{
    snprintf(out, FY_SH_KEYNAME_MAX, fmt, id);
}

/* --- leases ------------------------------------------------------------------------- */

static void hold(fy_shq *q, const char *hook_id)
{
    for (held *h = q->held; h; h = h->next) {
        if (strcmp(h->hook_id, hook_id) == 0) {
            return;
        }
    }
    held *h = calloc(1, sizeof *h);
    if (h) {
        snprintf(h->hook_id, sizeof h->hook_id, "%s", hook_id);
        h->next = q->held;
        q->held = h;
    }
}

static void unhold(fy_shq *q, const char *hook_id)
{
    for (held **p = &q->held; *p; p = &(*p)->next) {
        if (strcmp((*p)->hook_id, hook_id) == 0) {
            held *h = *p;
            *p = h->next;
            free(h);
            return;
        }
    }
}

static void on_renewed(void *data, int status, const fy_redis_reply *r)
{
    call *c = data;
    if (!c->q->closed && !status && r && r->type == FY_REDIS_REPLY_INTEGER && r->integer == 0) {
        /* Lost (expired while Redis was away, or the hook was deleted): the
         * next owner delivers the event again; this attempt still ends. */
        FY_WARN(SHQ_LOG, "hook %s: the delivery lease was lost", c->hook_id);
        unhold(c->q, c->hook_id);
    }
    call_end(c, status);
}

static void on_renew_timer(uv_timer_t *t)
{
    fy_shq *q = t->data;
    if (!fy_shared_is_up(q->sh)) {
        return;
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%u", q->ttl_ms);
    for (held *h = q->held; h; h = h->next) {
        call *c = call_new(q, NULL, NULL);
        if (!c) {
            return;
        }
        snprintf(c->hook_id, sizeof c->hook_id, "%s", h->hook_id);
        char owner[FY_SH_KEYNAME_MAX];
        hkey(owner, FY_SH_HOOK_OWNER_FMT, h->hook_id);
        const char *keys[] = {owner};
        const char *args[] = {fy_shared_replica_id(q->sh), ttl};
        if (fy_redis_eval(q->renew, on_renewed, c, 1, keys, NULL, 2, args, NULL)) {
            call_end(c, 0);
        }
    }
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

int fy_shq_new(uv_loop_t *loop, fy_shared *sh, unsigned owner_ttl_ms, fy_shq **out)
{
    if (!sh || owner_ttl_ms < 3) {
        return FY_EINVAL;
    }
    fy_shq *q = calloc(1, sizeof *q);
    uv_timer_t *t = malloc(sizeof *t);
    int rc = q && t ? 0 : FY_ENOMEM;
    if (!rc) {
        q->sh = sh;
        q->cl = fy_shared_redis(sh);
        q->ttl_ms = owner_ttl_ms;
        rc = fy_redis_script_new(q->cl, take_lua, &q->take);
    }
    if (!rc) {
        rc = fy_redis_script_new(q->cl, renew_lua, &q->renew);
    }
    if (rc) {
        free(q);
        free(t);
        return rc;
    }
    uv_timer_init(loop, t);
    t->data = q;
    uv_timer_start(t, on_renew_timer, owner_ttl_ms / 3, owner_ttl_ms / 3);
    q->timer = t;
    *out = q;
    return 0;
}

void fy_shq_free(fy_shq *q)
{
    if (!q) {
        return;
    }
    uv_close((uv_handle_t *)q->timer, timer_closed);
    while (q->held) {
        unhold(q, q->held->hook_id);
    }
    q->closed = 1;
    q_release(q);
}

/* --- accepting ----------------------------------------------------------------------- */

static void on_group(void *data, int status, const fy_redis_reply *r)
{
    (void)r; /* BUSYGROUP: it exists already, as it should */
    call_end(data, status == FY_EIO ? 0 : status);
}

static void on_added(void *data, int status, const fy_redis_reply *r)
{
    (void)r;
    call_end(data, status);
}

int fy_shq_add(fy_shq *q, const fy_store_hookq_item *it, fy_shared_done_cb cb, void *data)
{
    if (!fy_shared_is_up(q->sh)) {
        return FY_EUNREACH;
    }
    if (!it->headers || strlen(it->hook_id) >= FY_STORE_HOOK_ID_MAX) {
        return FY_EINVAL;
    }
    call *g = call_new(q, NULL, NULL), *c = g ? call_new(q, cb, data) : NULL;
    if (!c) {
        if (g) {
            call_end(g, 0);
        }
        return FY_ENOMEM;
    }
    char key[FY_SH_KEYNAME_MAX], at[24];
    hkey(key, FY_SH_HOOK_STREAM_FMT, it->hook_id);
    snprintf(at, sizeof at, "%" PRId64, it->accepted_at);
    /* The group first, from the stream's start, so no entry precedes it. */
    const char *grp[] = {"XGROUP", "CREATE", key, FY_SH_HOOK_GROUP, "0", "MKSTREAM"};
    const char *add[] = {"XADD",     key, "*",         "d", it->delivery_id,          "t",
                         it->target, "h", it->headers, "b", it->body ? it->body : "", "a",
                         at};
    size_t lens[13];
    for (int i = 0; i < 13; i++) {
        lens[i] = i == 10 ? it->body_len : strlen(add[i]); /* the body: bytes, no NUL */
    }
    int rc = call_send(g, on_group, 6, grp, NULL);
    if (rc) {
        c->cb = NULL;
        call_end(c, rc);
        return rc;
    }
    return call_send(c, on_added, 13, add, lens);
}

/* --- delivering ------------------------------------------------------------------------ */

static int text_of(const fy_redis_reply *v, char *out, size_t cap)
{
    if (v->type != FY_REDIS_REPLY_STRING || v->len >= cap) {
        return FY_EPROTO;
    }
    memcpy(out, v->str, v->len);
    out[v->len] = 0;
    return 0;
}

static char *dup_of(const fy_redis_reply *v)
{
    char *p = v->type == FY_REDIS_REPLY_STRING ? malloc(v->len + 1) : NULL;
    if (p) {
        memcpy(p, v->str, v->len);
        p[v->len] = 0;
    }
    return p;
}

/* The entry's fields into C->out. */
static int entry_take(call *c, const fy_redis_reply *fields, const fy_redis_reply *tries)
{
    fy_store_hookq_item *it = c->out;
    memset(it, 0, sizeof *it);
    snprintf(it->hook_id, sizeof it->hook_id, "%s", c->hook_id);
    int rc = fields->type == FY_REDIS_REPLY_ARRAY && fields->n % 2 == 0 ? 0 : FY_EPROTO;
    for (size_t i = 0; !rc && i < fields->n; i += 2) {
        const fy_redis_reply *f = &fields->elem[i], *v = &fields->elem[i + 1];
        if (f->type != FY_REDIS_REPLY_STRING || f->len != 1 || v->type != FY_REDIS_REPLY_STRING) {
            continue; /* a field of a newer version */
        }
        switch (f->str[0]) {
        case 'd':
            rc = text_of(v, it->delivery_id, sizeof it->delivery_id);
            break;
        case 't':
            rc = text_of(v, it->target, sizeof it->target);
            break;
        case 'h':
            free(it->headers);
            rc = (it->headers = dup_of(v)) ? 0 : FY_ENOMEM;
            break;
        case 'b':
            free(it->body);
            rc = (it->body = dup_of(v)) ? 0 : FY_ENOMEM;
            it->body_len = v->len;
            break;
        case 'a':
            it->accepted_at = strtoll(v->str, NULL, 10);
            break;
        default:
            break;
        }
    }
    if (!rc && (!it->delivery_id[0] || !it->target[0] || !it->headers)) {
        rc = FY_EPROTO;
    }
    if (!rc && tries->type == FY_REDIS_REPLY_STRING && tries->len) {
        long long a = 0, at = 0;
        if (sscanf(tries->str, "%lld %lld", &a, &at) == 2 && a >= 0) {
            it->attempts = a;
            it->next_at = at;
        }
    }
    if (rc) {
        fy_store_hookq_item_free(it);
    }
    return rc;
}

static void on_taken(void *data, int status, const fy_redis_reply *r)
{
    call *c = data;
    int rc = status;
    if (!rc && (!r || r->type != FY_REDIS_REPLY_ARRAY || r->n < 1 ||
                r->elem[0].type != FY_REDIS_REPLY_INTEGER)) {
        rc = FY_EPROTO;
    }
    if (!rc && r->elem[0].integer != 2) {
        rc = FY_ENOENT;
    }
    if (!rc && (r->n != 4 || text_of(&r->elem[1], c->entry, FY_SHQ_ENTRY_MAX))) {
        rc = FY_EPROTO;
    }
    if (!rc && !c->q->closed) {
        rc = entry_take(c, &r->elem[2], &r->elem[3]);
        if (rc == FY_EPROTO) {
            FY_ERROR(SHQ_LOG, "hook %s: stream entry %s is malformed", c->hook_id, c->entry);
        }
        if (!rc) {
            hold(c->q, c->hook_id);
        }
    }
    call_end(c, rc);
}

int fy_shq_next(fy_shq *q, const char *hook_id, fy_store_hookq_item *out,
                char entry[FY_SHQ_ENTRY_MAX], fy_shared_done_cb cb, void *data)
{
    if (!fy_shared_is_up(q->sh)) {
        return FY_EUNREACH;
    }
    if (strlen(hook_id) >= FY_STORE_HOOK_ID_MAX) {
        return FY_ENOENT;
    }
    call *c = call_new(q, cb, data);
    if (!c) {
        return FY_ENOMEM;
    }
    c->out = out;
    c->entry = entry;
    snprintf(c->hook_id, sizeof c->hook_id, "%s", hook_id);
    char owner[FY_SH_KEYNAME_MAX], key[FY_SH_KEYNAME_MAX], tries[FY_SH_KEYNAME_MAX], ttl[24];
    hkey(owner, FY_SH_HOOK_OWNER_FMT, hook_id);
    hkey(key, FY_SH_HOOK_STREAM_FMT, hook_id);
    hkey(tries, FY_SH_HOOK_TRIES_FMT, hook_id);
    snprintf(ttl, sizeof ttl, "%u", q->ttl_ms);
    const char *keys[] = {owner, key, tries};
    const char *args[] = {fy_shared_replica_id(q->sh), ttl, FY_SH_HOOK_GROUP};
    int rc = fy_redis_eval(q->take, on_taken, c, 3, keys, NULL, 3, args, NULL);
    if (rc) {
        c->cb = NULL;
        call_end(c, rc);
    }
    return rc;
}

static void on_written(void *data, int status, const fy_redis_reply *r)
{
    call *c = data;
    if (status && status != FY_ECANCELED) {
        FY_WARN(SHQ_LOG,
                "hook %s: the queue could not be updated (%s): the event is delivered "
                "again",
                c->hook_id, status == FY_EIO && r ? r->str : fy_strerror(status));
    }
    call_end(c, status);
}

/* Sends one write of hook HOOK_ID's queue. */
static int queue_write(fy_shq *q, const char *hook_id, int argc, const char *const *argv,
                       const size_t *lens)
{
    call *c = call_new(q, NULL, NULL);
    if (!c) {
        return FY_ENOMEM;
    }
    snprintf(c->hook_id, sizeof c->hook_id, "%s", hook_id);
    return call_send(c, on_written, argc, argv, lens);
}

/* The entry leaves the stream (delivered or dead) with its attempts. */
static int entry_drop(fy_shq *q, const char *hook_id, const char *entry)
{
    char key[FY_SH_KEYNAME_MAX], tries[FY_SH_KEYNAME_MAX];
    hkey(key, FY_SH_HOOK_STREAM_FMT, hook_id);
    hkey(tries, FY_SH_HOOK_TRIES_FMT, hook_id);
    const char *ack[] = {"XACK", key, FY_SH_HOOK_GROUP, entry};
    const char *del[] = {"XDEL", key, entry};
    const char *forget[] = {"HDEL", tries, entry};
    int rc = queue_write(q, hook_id, 4, ack, NULL);
    if (!rc) {
        rc = queue_write(q, hook_id, 3, del, NULL);
    }
    if (!rc) {
        rc = queue_write(q, hook_id, 3, forget, NULL);
    }
    return rc;
}

int fy_shq_done(fy_shq *q, const char *hook_id, const char *entry)
{
    unhold(q, hook_id);
    if (!fy_shared_is_up(q->sh)) {
        return FY_EUNREACH;
    }
    return entry_drop(q, hook_id, entry);
}

int fy_shq_retry(fy_shq *q, const fy_store_hookq_item *it, const char *entry, int64_t attempts,
                 int64_t next_at, int dead, const char *error)
{
    unhold(q, it->hook_id);
    if (!fy_shared_is_up(q->sh)) {
        return FY_EUNREACH;
    }
    char tries[FY_SH_KEYNAME_MAX], val[48], at[24], n[24];
    if (!dead) {
        hkey(tries, FY_SH_HOOK_TRIES_FMT, it->hook_id);
        snprintf(val, sizeof val, "%" PRId64 " %" PRId64, attempts, next_at);
        const char *argv[] = {"HSET", tries, entry, val};
        return queue_write(q, it->hook_id, 4, argv, NULL);
    }
    char key[FY_SH_KEYNAME_MAX];
    hkey(key, FY_SH_HOOK_DEAD_FMT, it->hook_id);
    snprintf(at, sizeof at, "%" PRId64, it->accepted_at);
    snprintf(n, sizeof n, "%" PRId64, attempts);
    const char *add[] = {
        "XADD", key, "*", "d", it->delivery_id,   "t", it->target, "h", it->headers, "b", "", "a",
        at,     "n", n,   "e", error ? error : ""};
    size_t lens[17];
    add[10] = it->body ? it->body : "";
    for (int i = 0; i < 17; i++) {
        lens[i] = i == 10 ? it->body_len : strlen(add[i]); /* the body: bytes, no NUL */
    }
    int rc = queue_write(q, it->hook_id, 17, add, lens);
    return rc ? rc : entry_drop(q, it->hook_id, entry);
}
