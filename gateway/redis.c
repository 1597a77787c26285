/* redis.c: the asynchronous Redis client (see redis.h for the contract).
 *
 * Life of a request: fy_redis_cmd formats the command (RESP) at once, so the
 * caller's argv may go away; the request then sits in cl->queued (first
 * connect only) or goes to hiredis and sits in cl->inflight until its reply
 * trampoline runs. hiredis owns the trampoline call: it runs exactly once
 * per command, with a NULL reply when the context is freed. fy_redis_free
 * therefore delivers FY_ECANCELED itself and marks the request done; the
 * trampoline later only frees it. Client memory is released from the last
 * uv_close callback, after any deferred hiredis free (which happens when the
 * hiredis callback on the stack returns), so trampolines never see freed
 * memory. */
#include "gateway/redis.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"

#include <errno.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha1.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { ST_CONNECTING, ST_UP, ST_DOWN };
enum { HS_AUTH = 1, HS_SELECT, HS_PING };

typedef struct fy__rq fy__rq;
struct fy__rq {
    fy_redis *cl;
    fy__rq *prev, *next;
    fy_redis_reply_cb cb;
    void *data;
    int done;  /* callback delivered by fy_redis_free; hiredis still holds it */
    char *cmd; /* formatted command, while queued (and kept for an eval) */
    size_t cmdlen;
    fy_redis_script *script; /* an eval: NOSCRIPT means send once more as EVAL */
    int retried;
    uint64_t sent_ms; /* uv_now when written (in flight) */
};

typedef struct {
    fy__rq *head, *tail;
    unsigned n;
} fy__rq_list;

typedef struct fy__sub {
    struct fy__sub *next;
    fy_redis_message_cb cb;
    void *data;
    size_t len;
    char name[FY_REDIS_MAX_CHANNEL + 1];
} fy__sub;

typedef struct {
    fy_redis *cl;
    redisAsyncContext *ac;
    int is_sub;
    int hs_pending;   /* handshake replies still expected */
    int authed;       /* handshake done (pub/sub: SUBSCRIBEs may be sent) */
    int subs_pending; /* pub/sub: confirmations the handshake waits for */
    int ready;
} fy__conn;

struct fy_redis_script {
    fy_redis_script *next;
    fy_redis *cl;
    char sha[41];
    size_t len;
    char *src;
};

struct fy_redis {
    uv_loop_t *loop;
    fy_redis_config cfg;
    const fy_redis_ops *ops;
    void *data;
    int state;
    int closing;
    int reported_err; /* the last DOWN error reported (0: none yet) */
    unsigned backoff_ms;
    fy__conn cmd, sub;
    uv_timer_t retry_timer, hs_timer, watch_timer;
    int open_handles;
    fy__rq_list queued, inflight;
    fy__sub *subs;
    int nsubs;
    int confirmed; /* channels confirmed on the current pub/sub connection */
    fy_redis_script *scripts;
};

/* ---- configuration ----------------------------------------------------- */

static int parse_uint(const char *s, size_t n, long max, long *out)
{
    long v = 0;
    if (n == 0 || n > 9)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_tcp(const char *u, fy_redis_config *cfg, char *err, size_t errlen)
{
    const char *p = u, *host, *end;
    size_t hlen;
    long v;

    if (strchr(p, '@'))
        return fy_fail(err, errlen, FY_EINVAL,
                       "redis URL: user info is not allowed (the password comes from "
                       "--shared-password-file)");
    if (*p == '[') {
        host = p + 1;
        end = strchr(host, ']');
        if (!end)
            return fy_fail(err, errlen, FY_EINVAL, "redis URL: '[' without ']' around IPv6 host");
        hlen = (size_t)(end - host);
        p = end + 1;
    } else {
        host = p;
        hlen = strcspn(p, ":/?#");
        p += hlen;
    }
    if (hlen == 0)
        return fy_fail(err, errlen, FY_EINVAL, "redis URL: empty host");
    if (hlen > FY_REDIS_MAX_HOST)
        return fy_fail(err, errlen, FY_ETOOBIG, "redis URL: host over %d bytes", FY_REDIS_MAX_HOST);
    memcpy(cfg->host, host, hlen);
    cfg->host[hlen] = 0;
    if (strcmp(cfg->host, "localhost") == 0)
        snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
    {
        unsigned char a[16];
        if (uv_inet_pton(AF_INET, cfg->host, a) != 0 && uv_inet_pton(AF_INET6, cfg->host, a) != 0)
            return fy_fail(err, errlen, FY_EINVAL,
                           "redis URL: host '%s' is not an IP address or localhost (a name "
                           "lookup would block the event loop)",
                           cfg->host);
    }
    cfg->port = FY_REDIS_DEFAULT_PORT;
    if (*p == ':') {
        size_t n = strcspn(++p, "/?#");
        if (parse_uint(p, n, 65535, &v) != 0 || v == 0)
            return fy_fail(err, errlen, FY_EINVAL, "redis URL: port must be 1..65535");
        cfg->port = (int)v;
        p += n;
    }
    if (*p == '/' && p[1]) {
        size_t n = strlen(++p);
        if (parse_uint(p, n, FY_REDIS_MAX_DB, &v) != 0)
            return fy_fail(err, errlen, FY_EINVAL, "redis URL: database must be 0..%d",
                           FY_REDIS_MAX_DB);
        cfg->db = (int)v;
    } else if (*p == '/') {
        /* "redis://h:p/" is database 0. */
    } else if (*p) {
        return fy_fail(err, errlen, FY_EINVAL, "redis URL: unexpected '%c' after host and port",
                       *p);
    }
    return 0;
}

static int parse_unix(const char *u, fy_redis_config *cfg, char *err, size_t errlen)
{
    const char *q = strchr(u, '?');
    size_t plen = q ? (size_t)(q - u) : strlen(u);
    long v;

    cfg->is_unix = 1;
    if (plen == 0 || u[0] != '/')
        return fy_fail(err, errlen, FY_EINVAL,
                       "redis URL: unix socket path must be absolute (unix:///path)");
    if (plen > FY_REDIS_MAX_PATH)
        return fy_fail(err, errlen, FY_ETOOBIG, "redis URL: socket path over %d bytes",
                       FY_REDIS_MAX_PATH);
    memcpy(cfg->path, u, plen);
    cfg->path[plen] = 0;
    if (q) {
        if (strncmp(q, "?db=", 4) != 0)
            return fy_fail(err, errlen, FY_EINVAL,
                           "redis URL: the only unix query parameter is db=N");
        if (parse_uint(q + 4, strlen(q + 4), FY_REDIS_MAX_DB, &v) != 0)
            return fy_fail(err, errlen, FY_EINVAL, "redis URL: database must be 0..%d",
                           FY_REDIS_MAX_DB);
        cfg->db = (int)v;
    }
    return 0;
}

static int read_password(const char *file, fy_redis_config *cfg, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0, n;
    int rc = fy_file_read(file, FY_REDIS_MAX_PASSWORD_FILE, &buf, &len);

    if (rc == FY_ETOOBIG) {
        rc = fy_fail(err, errlen, rc, "redis password file %s: over %d bytes", file,
                     FY_REDIS_MAX_PASSWORD_FILE);
        goto out;
    }
    if (rc < 0) {
        rc = fy_fail(err, errlen, rc, "redis password file %s: %s", file, fy_strerror(rc));
        goto out;
    }
    n = strcspn(buf, "\r\n"); /* the first line (a NUL in the file ends it too) */
    if (n == 0) {
        rc = fy_fail(err, errlen, FY_EINVAL, "redis password file %s: empty first line", file);
        goto out;
    }
    if (n > FY_REDIS_MAX_PASSWORD) {
        rc = fy_fail(err, errlen, FY_ETOOBIG, "redis password file %s: password over %d bytes",
                     file, FY_REDIS_MAX_PASSWORD);
        goto out;
    }
    memcpy(cfg->password, buf, n);
    cfg->password[n] = 0;
    cfg->password_len = n;
out:
    if (buf) {
        mbedtls_platform_zeroize(buf, len);
        free(buf);
    }
    return rc;
}

int fy_redis_config_parse(const char *url, const char *password_file, fy_redis_config *cfg,
                          char *err, size_t errlen)
{
    int rc;
    size_t ulen;

    if (!url || !cfg)
        return fy_fail(err, errlen, FY_EINVAL, "redis URL: missing");
    memset(cfg, 0, sizeof *cfg);
    cfg->backoff_min_ms = FY_REDIS_DEFAULT_BACKOFF_MIN_MS;
    cfg->backoff_max_ms = FY_REDIS_DEFAULT_BACKOFF_MAX_MS;
    cfg->connect_timeout_ms = FY_REDIS_DEFAULT_CONNECT_TIMEOUT_MS;
    cfg->max_queued = FY_REDIS_DEFAULT_MAX_QUEUED;
    cfg->command_timeout_ms = FY_REDIS_DEFAULT_COMMAND_TIMEOUT_MS;
    ulen = strnlen(url, FY_REDIS_MAX_URL + 1);
    if (ulen > FY_REDIS_MAX_URL) {
        rc = fy_fail(err, errlen, FY_ETOOBIG, "redis URL: over %d bytes", FY_REDIS_MAX_URL);
        goto out;
    }
    if (strncmp(url, "redis://", 8) == 0)
        rc = parse_tcp(url + 8, cfg, err, errlen);
    else if (strncmp(url, "unix://", 7) == 0)
        rc = parse_unix(url + 7, cfg, err, errlen);
    else if (strncmp(url, "rediss://", 9) == 0)
        rc = fy_fail(err, errlen, FY_ENOTSUP, "redis URL: TLS (rediss://) is not supported");
    else
        rc = fy_fail(err, errlen, FY_EINVAL,
                     "redis URL: must start with redis:// or unix:// (got '%.16s')", url);
    if (rc == 0 && password_file && *password_file)
        rc = read_password(password_file, cfg, err, errlen);
out:
    if (rc < 0)
        fy_redis_config_wipe(cfg);
    return rc;
}

void fy_redis_config_wipe(fy_redis_config *cfg)
{
    if (cfg)
        mbedtls_platform_zeroize(cfg, sizeof *cfg);
}

/* ---- requests ---------------------------------------------------------- */

static void rq_push(fy__rq_list *l, fy__rq *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void rq_remove(fy__rq_list *l, fy__rq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static void rq_free(fy__rq *r)
{
    if (r) {
        free(r->cmd);
        free(r);
    }
}

static size_t reply_count(const redisReply *r, size_t n)
{
    n++;
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements && n <= FY_REDIS_MAX_REPLY_NODES; i++)
            n = reply_count(r->element[i], n);
    return n;
}

/* Fills NODE from R; children take nodes from POOL[*NEXT...). */
static void reply_fill(fy_redis_reply *node, const redisReply *r, fy_redis_reply *pool,
                       size_t *next)
{
    memset(node, 0, sizeof *node);
    switch (r->type) {
    case REDIS_REPLY_STRING:
        node->type = FY_REDIS_REPLY_STRING;
        break;
    case REDIS_REPLY_ARRAY:
        node->type = FY_REDIS_REPLY_ARRAY;
        break;
    case REDIS_REPLY_INTEGER:
        node->type = FY_REDIS_REPLY_INTEGER;
        break;
    case REDIS_REPLY_STATUS:
        node->type = FY_REDIS_REPLY_STATUS;
        break;
    case REDIS_REPLY_ERROR:
        node->type = FY_REDIS_REPLY_ERROR;
        break;
    default:
        node->type = FY_REDIS_REPLY_NIL;
        break;
    }
    node->integer = r->integer;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
        r->type == REDIS_REPLY_ERROR) {
        node->str = r->str;
        node->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        fy_redis_reply *kids = pool + *next;
        *next += r->elements;
        node->elem = kids;
        node->n = r->elements;
        for (size_t i = 0; i < r->elements; i++)
            reply_fill(&kids[i], r->element[i], pool, next);
    }
}

/* Converts R and calls the request's callback. */
static void rq_deliver(fy__rq *rq, const redisReply *r)
{
    fy_redis_reply one, *pool = NULL;
    size_t n, next = 0;
    int status;

    if (!r) {
        rq->cb(rq->data, FY_ECONNRESET, NULL);
        return;
    }
    n = reply_count(r, 0);
    if (n > FY_REDIS_MAX_REPLY_NODES) {
        rq->cb(rq->data, FY_ETOOBIG, NULL);
        return;
    }
    if (n > 1) {
        pool = calloc(n - 1, sizeof *pool);
        if (!pool) {
            rq->cb(rq->data, FY_ENOMEM, NULL);
            return;
        }
    }
    reply_fill(&one, r, pool, &next);
    status = one.type == FY_REDIS_REPLY_ERROR ? FY_EIO : 0;
    rq->cb(rq->data, status, &one);
    free(pool);
}

static int eval_retry(fy__rq *rq, redisAsyncContext *ac);

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    fy__rq *rq = privdata;
    const redisReply *r = reply;
    fy_redis *cl = rq->cl;

    if (rq->done) {
        rq_free(rq);
        return;
    }
    if (r && r->type == REDIS_REPLY_ERROR && rq->script && !rq->retried &&
        strncmp(r->str, "NOSCRIPT", 8) == 0 && eval_retry(rq, ac) == 0)
        return;
    rq_remove(&cl->inflight, rq);
    rq_deliver(rq, r);
    rq_free(rq);
}

static int rq_send(fy_redis *cl, fy__rq *rq)
{
    redisAsyncContext *ac = cl->cmd.ac;

    if (!ac || redisAsyncFormattedCommand(ac, on_reply, rq, rq->cmd, rq->cmdlen) != REDIS_OK)
        return FY_EUNREACH;
    rq->sent_ms = uv_now(cl->loop);
    rq_push(&cl->inflight, rq);
    if (!rq->script) {
        free(rq->cmd);
        rq->cmd = NULL;
    }
    return 0;
}

/* Takes ownership of CMD (freed on failure). */
static int rq_submit(fy_redis *cl, fy_redis_reply_cb cb, void *data, char *cmd, size_t len,
                     fy_redis_script *script)
{
    fy__rq *rq = NULL;
    int rc = 0;

    if (cl->state == ST_DOWN) {
        rc = FY_EUNREACH;
        goto out;
    }
    if (cl->state == ST_CONNECTING && cl->queued.n >= cl->cfg.max_queued) {
        rc = FY_ELIMIT;
        goto out;
    }
    rq = calloc(1, sizeof *rq);
    if (!rq) {
        rc = FY_ENOMEM;
        goto out;
    }
    rq->cl = cl;
    rq->cb = cb;
    rq->data = data;
    rq->cmd = cmd;
    rq->cmdlen = len;
    rq->script = script;
    cmd = NULL;
    if (cl->state == ST_CONNECTING) {
        rq_push(&cl->queued, rq);
        rq = NULL;
        goto out;
    }
    rc = rq_send(cl, rq);
    if (rc == 0)
        rq = NULL;
out:
    rq_free(rq);
    free(cmd);
    return rc;
}

int fy_redis_cmd(fy_redis *cl, fy_redis_reply_cb cb, void *data, int argc, const char *const *argv,
                 const size_t *argvlen)
{
    char *cmd = NULL;
    int len;

    if (!cl || !cb || argc < 1 || argc > FY_REDIS_MAX_ARGS || !argv)
        return FY_EINVAL;
    if (cl->closing)
        return FY_ECLOSED;
    if (cl->state == ST_DOWN)
        return FY_EUNREACH;
    len = redisFormatCommandArgv(&cmd, argc, (const char **)argv, argvlen);
    if (len < 0)
        return FY_ENOMEM;
    return rq_submit(cl, cb, data, cmd, (size_t)len, NULL);
}

/* ---- connections and states -------------------------------------------- */

static void report(fy_redis *cl, int up, int err, const char *reason)
{
    if (!cl->closing && cl->ops && cl->ops->on_state)
        cl->ops->on_state(cl->data, up, err, reason);
}

/* Detaches C's context from the client; returns it unless it is DYING (being
 * freed by hiredis already), so the caller can free it. */
static redisAsyncContext *conn_detach(fy__conn *c, const redisAsyncContext *dying)
{
    redisAsyncContext *ac = c->ac;

    c->ac = NULL;
    c->hs_pending = c->subs_pending = 0;
    c->authed = c->ready = 0;
    if (!ac)
        return NULL;
    ac->data = NULL;
    ac->onConnect = NULL;
    ac->onDisconnect = NULL;
    return ac == dying ? NULL : ac;
}

static unsigned next_delay(fy_redis *cl)
{
    unsigned d = cl->backoff_ms, half = d / 2, r = 0;

    if (cl->backoff_ms < cl->cfg.backoff_max_ms / 2)
        cl->backoff_ms *= 2;
    else
        cl->backoff_ms = cl->cfg.backoff_max_ms;
    if (fy_random_bytes(&r, sizeof r) != 0)
        return d;
    return half + (d - half ? r % (d - half + 1) : 0);
}

static void on_retry(uv_timer_t *t);

/* The current attempt or connection failed: both connections close, DOWN is
 * reported, queued commands fail and a retry is scheduled. Internal state is
 * settled before any user callback runs, and every callback is skipped once
 * the client is closing. */
static void client_fail(fy_redis *cl, const redisAsyncContext *dying, int err, const char *reason)
{
    redisAsyncContext *a, *b;
    int was = cl->state;
    char why[256];
    fy__rq *rq;

    if (cl->closing)
        return;
    snprintf(why, sizeof why, "%s", reason);
    cl->state = ST_DOWN;
    cl->confirmed = 0;
    uv_timer_stop(&cl->hs_timer);
    a = conn_detach(&cl->cmd, dying);
    b = conn_detach(&cl->sub, dying);
    uv_timer_start(&cl->retry_timer, on_retry, next_delay(cl), 0);
    if (was != ST_DOWN || err != cl->reported_err) {
        cl->reported_err = err;
        report(cl, 0, err, why);
    }
    if (a)
        redisAsyncFree(a);
    if (b)
        redisAsyncFree(b);
    while (!cl->closing && (rq = cl->queued.head)) {
        rq_remove(&cl->queued, rq);
        rq->cb(rq->data, FY_EUNREACH, NULL);
        rq_free(rq);
    }
}

static void client_check_up(fy_redis *cl)
{
    fy__rq *rq;

    if (!cl->cmd.ready || !cl->sub.ready || cl->state == ST_UP)
        return;
    uv_timer_stop(&cl->hs_timer);
    cl->state = ST_UP;
    cl->reported_err = 0;
    cl->backoff_ms = cl->cfg.backoff_min_ms;
    while ((rq = cl->queued.head)) {
        rq_remove(&cl->queued, rq);
        if (rq_send(cl, rq) != 0) {
            /* Written nowhere: the context is already going away. */
            rq->cb(rq->data, FY_EUNREACH, NULL);
            rq_free(rq);
            if (cl->closing)
                return;
        }
    }
    report(cl, 1, 0, "");
}

static void on_sub(redisAsyncContext *ac, void *reply, void *privdata);

static int sub_send(fy__conn *c, fy__sub *s)
{
    const char *argv[2] = {"SUBSCRIBE", s->name};
    size_t lens[2] = {9, s->len};

    if (redisAsyncCommandArgv(c->ac, on_sub, s, 2, argv, lens) != REDIS_OK)
        return FY_EUNREACH;
    return 0;
}

static void conn_authed(fy__conn *c)
{
    fy_redis *cl = c->cl;

    c->authed = 1;
    if (c->is_sub) {
        for (fy__sub *s = cl->subs; s; s = s->next) {
            if (sub_send(c, s) != 0) {
                client_fail(cl, NULL, FY_EIO, "redis pub/sub: SUBSCRIBE could not be sent");
                return;
            }
            c->subs_pending++;
        }
        if (c->subs_pending > 0)
            return;
    }
    c->ready = 1;
    client_check_up(cl);
}

static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata)
{
    fy__conn *c = ac->data;
    const redisReply *r = reply;
    int kind = (int)(intptr_t)privdata;
    char why[300];

    if (!c || c->ac != ac || !r)
        return; /* stale, or the connection is going away: on_disconnect reports it */
    if (r->type == REDIS_REPLY_ERROR) {
        int auth = kind == HS_AUTH || strncmp(r->str, "NOAUTH", 6) == 0 ||
                   strncmp(r->str, "WRONGPASS", 9) == 0;
        snprintf(why, sizeof why, "redis %s refused: %.200s",
                 kind == HS_AUTH     ? "AUTH"
                 : kind == HS_SELECT ? "SELECT"
                                     : "PING",
                 r->str);
        client_fail(c->cl, NULL, auth ? FY_EPERM : FY_EIO, why);
        return;
    }
    if (--c->hs_pending == 0)
        conn_authed(c);
}

static void on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
    fy__conn *c = ac->data;
    const redisReply *r = reply;
    fy__sub *s = privdata;
    fy_redis *cl;

    if (!c || c->ac != ac || !r || c->cl->closing)
        return;
    cl = c->cl;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[0]->type != REDIS_REPLY_STRING) {
        client_fail(cl, NULL, FY_EPROTO, "redis pub/sub: unexpected reply");
        return;
    }
    if (strcasecmp(r->element[0]->str, "subscribe") == 0) {
        cl->confirmed++;
        if (!c->ready && --c->subs_pending == 0) {
            c->ready = 1;
            client_check_up(cl);
        }
    } else if (strcasecmp(r->element[0]->str, "message") == 0 &&
               r->element[2]->type == REDIS_REPLY_STRING) {
        s->cb(s->data, s->name, s->len, r->element[2]->str, r->element[2]->len);
    }
}

static int err_from_errno(int e)
{
    switch (e) {
    case ENOENT:
        return FY_ENOENT;
    case ECONNREFUSED:
        return FY_ECONNREFUSED;
    case EACCES:
    case EPERM:
        return FY_EPERM;
    case ETIMEDOUT:
        return FY_ETIMEDOUT;
    case ENETUNREACH:
    case EHOSTUNREACH:
        return FY_EUNREACH;
    default:
        return FY_EIO;
    }
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    int e = errno;
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    fy__conn *c = ac->data;
    fy_redis *cl;
    char why[300];

    if (!c || c->ac != ac)
        return;
    cl = c->cl;
    if (status != REDIS_OK) {
        /* hiredis frees AC after this returns. */
        snprintf(why, sizeof why, "redis connect failed: %.200s", ac->errstr);
        client_fail(cl, ac, err_from_errno(e), why);
        return;
    }
    if (cl->cfg.password_len) {
        const char *argv[2] = {"AUTH", cl->cfg.password};
        size_t lens[2] = {4, cl->cfg.password_len};
        redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)HS_AUTH, 2, argv, lens);
        c->hs_pending++;
    }
    if (!c->is_sub && cl->cfg.db) {
        char db[16];
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)snprintf(db, sizeof db, "%d", cl->cfg.db)};
        redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)HS_SELECT, 2, argv, lens);
        c->hs_pending++;
    }
    /* PING proves the connection works and, without a password, that the
     * server does not want one (NOAUTH). */
    redisAsyncCommand(ac, on_handshake, (void *)(intptr_t)HS_PING, "PING");
    c->hs_pending++;
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    fy__conn *c = ac->data;
    char why[300];

    if (!c || c->ac != ac)
        return;
    snprintf(why, sizeof why, "redis %s connection lost: %.200s", c->is_sub ? "pub/sub" : "command",
             ac->errstr[0] ? ac->errstr : "closed");
    client_fail(c->cl, ac, FY_ECONNRESET, why);
}

static int conn_open(fy_redis *cl, fy__conn *c, char *why, size_t whylen)
{
    redisAsyncContext *ac;
    int rc;

    errno = 0;
    ac = cl->cfg.is_unix ? redisAsyncConnectUnix(cl->cfg.path)
                         : redisAsyncConnect(cl->cfg.host, cl->cfg.port);
    if (!ac)
        return fy_fail(why, whylen, FY_ENOMEM, "redis connect: out of memory");
    if (ac->err) {
        rc = err_from_errno(errno);
        fy_fail(why, whylen, rc, "redis connect to %s: %s",
                cl->cfg.is_unix ? cl->cfg.path : cl->cfg.host, ac->errstr);
        redisAsyncFree(ac);
        return rc;
    }
    if (redisLibuvAttach(ac, cl->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        return fy_fail(why, whylen, FY_EUV, "redis connect: libuv attach failed");
    }
    ac->data = c;
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return 0;
}

static void on_hs_timeout(uv_timer_t *t)
{
    fy_redis *cl = t->data;
    char why[128];

    snprintf(why, sizeof why, "redis connect and handshake took over %u ms",
             cl->cfg.connect_timeout_ms);
    client_fail(cl, NULL, FY_ETIMEDOUT, why);
}

static void on_retry(uv_timer_t *t)
{
    fy_redis *cl = t->data;
    char why[300] = "";
    int rc;

    uv_timer_start(&cl->hs_timer, on_hs_timeout, cl->cfg.connect_timeout_ms, 0);
    rc = conn_open(cl, &cl->cmd, why, sizeof why);
    if (rc == 0)
        rc = conn_open(cl, &cl->sub, why, sizeof why);
    if (rc < 0)
        client_fail(cl, NULL, rc, why);
}

/* ---- the client -------------------------------------------------------- */

/* A server that accepts commands but stops answering (stopped, swapping,
 * a long script) is as good as gone: the oldest command in flight bounds
 * how long anyone waits for it. */
static void on_watch(uv_timer_t *t)
{
    fy_redis *cl = t->data;
    fy__rq *rq = cl->inflight.head;
    char why[128];

    if (cl->state != ST_UP || !rq || uv_now(cl->loop) - rq->sent_ms <= cl->cfg.command_timeout_ms)
        return;
    snprintf(why, sizeof why, "Redis did not answer a command within %u ms",
             cl->cfg.command_timeout_ms);
    client_fail(cl, NULL, FY_ETIMEDOUT, why);
}

int fy_redis_new(uv_loop_t *loop, const fy_redis_config *cfg, const fy_redis_ops *ops, void *data,
                 fy_redis **out)
{
    fy_redis *cl;

    if (!loop || !cfg || !out || cfg->backoff_min_ms < 1 ||
        cfg->backoff_max_ms < cfg->backoff_min_ms || cfg->connect_timeout_ms < 1 ||
        (cfg->is_unix ? !cfg->path[0] : !cfg->host[0]))
        return FY_EINVAL;
    cl = calloc(1, sizeof *cl);
    if (!cl)
        return FY_ENOMEM;
    cl->loop = loop;
    cl->cfg = *cfg;
    cl->ops = ops;
    cl->data = data;
    cl->state = ST_CONNECTING;
    cl->backoff_ms = cfg->backoff_min_ms;
    cl->cmd.cl = cl->sub.cl = cl;
    cl->sub.is_sub = 1;
    uv_timer_init(loop, &cl->retry_timer);
    uv_timer_init(loop, &cl->hs_timer);
    uv_timer_init(loop, &cl->watch_timer);
    cl->retry_timer.data = cl->hs_timer.data = cl->watch_timer.data = cl;
    cl->open_handles = 3;
    if (cfg->command_timeout_ms) {
        unsigned every = cfg->command_timeout_ms / 4 ? cfg->command_timeout_ms / 4 : 1;
        uv_timer_start(&cl->watch_timer, on_watch, every, every);
    }
    /* From the loop, so no callback runs inside fy_redis_new. */
    uv_timer_start(&cl->retry_timer, on_retry, 0, 0);
    *out = cl;
    return 0;
}

int fy_redis_is_up(const fy_redis *cl)
{
    return cl && !cl->closing && cl->state == ST_UP;
}

static void on_handle_closed(uv_handle_t *h)
{
    fy_redis *cl = h->data;

    if (--cl->open_handles > 0)
        return;
    while (cl->scripts) {
        fy_redis_script *s = cl->scripts;
        cl->scripts = s->next;
        free(s->src);
        free(s);
    }
    while (cl->subs) {
        fy__sub *s = cl->subs;
        cl->subs = s->next;
        free(s);
    }
    fy_redis_config_wipe(&cl->cfg);
    free(cl);
}

void fy_redis_free(fy_redis *cl)
{
    redisAsyncContext *a, *b;
    fy__rq *rq;

    if (!cl || cl->closing)
        return;
    cl->closing = 1;
    uv_close((uv_handle_t *)&cl->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&cl->hs_timer, on_handle_closed);
    uv_close((uv_handle_t *)&cl->watch_timer, on_handle_closed);
    while ((rq = cl->queued.head)) {
        rq_remove(&cl->queued, rq);
        rq->cb(rq->data, FY_ECANCELED, NULL);
        rq_free(rq);
    }
    while ((rq = cl->inflight.head)) {
        rq_remove(&cl->inflight, rq);
        rq->done = 1; /* hiredis still holds it: on_reply frees it */
        rq->cb(rq->data, FY_ECANCELED, NULL);
    }
    a = conn_detach(&cl->cmd, NULL);
    b = conn_detach(&cl->sub, NULL);
    if (a)
        redisAsyncFree(a);
    if (b)
        redisAsyncFree(b);
}

/* ---- scripts ----------------------------------------------------------- */

int fy_redis_script_new(fy_redis *cl, const char *source, fy_redis_script **out)
{
    fy_redis_script *s = NULL;
    unsigned char sha[20];
    size_t len;
    int rc = 0;

    if (!cl || !source || !out)
        return FY_EINVAL;
    if (cl->closing)
        return FY_ECLOSED;
    len = strnlen(source, FY_REDIS_MAX_SCRIPT + 1);
    if (len > FY_REDIS_MAX_SCRIPT)
        return FY_ETOOBIG;
    s = calloc(1, sizeof *s);
    if (!s || !(s->src = malloc(len + 1))) {
        rc = FY_ENOMEM;
        goto out;
    }
    memcpy(s->src, source, len + 1);
    s->len = len;
    s->cl = cl;
    if (mbedtls_sha1_ret((const unsigned char *)source, len, sha) != 0) {
        rc = FY_ECRYPTO;
        goto out;
    }
    rc = fy_hex_encode(sha, sizeof sha, s->sha, sizeof s->sha);
    if (rc < 0)
        goto out;
    s->next = cl->scripts;
    cl->scripts = s;
    *out = s;
    s = NULL;
out:
    if (s) {
        free(s->src);
        free(s);
    }
    return rc;
}

const char *fy_redis_script_sha(const fy_redis_script *s)
{
    return s->sha;
}

int fy_redis_eval(fy_redis_script *s, fy_redis_reply_cb cb, void *data, int nkeys,
                  const char *const *keys, const size_t *keylens, int nargs,
                  const char *const *args, const size_t *arglens)
{
    const char **argv = NULL;
    size_t *lens = NULL;
    char nk[16], *cmd = NULL;
    int argc, len, rc;

    if (!s || !cb || nkeys < 0 || nargs < 0 || (nkeys && !keys) || (nargs && !args) ||
        nkeys > FY_REDIS_MAX_ARGS || nargs > FY_REDIS_MAX_ARGS - 3 - nkeys)
        return FY_EINVAL;
    if (s->cl->closing)
        return FY_ECLOSED;
    if (s->cl->state == ST_DOWN)
        return FY_EUNREACH;
    argc = 3 + nkeys + nargs;
    argv = calloc((size_t)argc, sizeof *argv);
    lens = calloc((size_t)argc, sizeof *lens);
    if (!argv || !lens) {
        rc = FY_ENOMEM;
        goto out;
    }
    argv[0] = "EVALSHA";
    lens[0] = 7;
    argv[1] = s->sha;
    lens[1] = 40;
    lens[2] = (size_t)snprintf(nk, sizeof nk, "%d", nkeys);
    argv[2] = nk;
    for (int i = 0; i < nkeys; i++) {
        argv[3 + i] = keys[i];
        lens[3 + i] = keylens ? keylens[i] : strlen(keys[i]);
    }
    for (int i = 0; i < nargs; i++) {
        argv[3 + nkeys + i] = args[i];
        lens[3 + nkeys + i] = arglens ? arglens[i] : strlen(args[i]);
    }
    len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0) {
        rc = FY_ENOMEM;
        goto out;
    }
    rc = rq_submit(s->cl, cb, data, cmd, (size_t)len, s);
out:
    free(argv);
    free(lens);
    return rc;
}

/* Rewrites the request's EVALSHA into EVAL with the script's source and
 * sends it on AC. The formatted EVALSHA is "*N\r\n" "$7\r\nEVALSHA\r\n"
 * "$40\r\n<sha>\r\n" and then the rest, which EVAL shares. */
static int eval_retry(fy__rq *rq, redisAsyncContext *ac)
{
    fy_redis_script *s = rq->script;
    const char *nl = memchr(rq->cmd, '\n', rq->cmdlen);
    size_t hdr, rest_off, restlen, cap, n;
    char *cmd = NULL;
    int rc = 0;

    if (!nl || ac->data == NULL) {
        rc = FY_EUNREACH;
        goto out;
    }
    hdr = (size_t)(nl + 1 - rq->cmd);
    rest_off = hdr + 13 + 5 + 42;
    if (rest_off > rq->cmdlen) {
        rc = FY_EPROTO;
        goto out;
    }
    restlen = rq->cmdlen - rest_off;
    cap = hdr + 10 + 32 + s->len + 2 + restlen;
    cmd = malloc(cap);
    if (!cmd) {
        rc = FY_ENOMEM;
        goto out;
    }
    memcpy(cmd, rq->cmd, hdr);
    n = hdr + (size_t)snprintf(cmd + hdr, cap - hdr, "$4\r\nEVAL\r\n$%zu\r\n", s->len);
    memcpy(cmd + n, s->src, s->len);
    n += s->len;
    memcpy(cmd + n, "\r\n", 2);
    n += 2;
    memcpy(cmd + n, rq->cmd + rest_off, restlen);
    n += restlen;
    if (redisAsyncFormattedCommand(ac, on_reply, rq, cmd, n) != REDIS_OK) {
        rc = FY_EUNREACH;
        goto out;
    }
    rq->retried = 1;
out:
    free(cmd);
    return rc;
}

/* ---- pub/sub ----------------------------------------------------------- */

int fy_redis_subscribe(fy_redis *cl, const char *channel, size_t channel_len,
                       fy_redis_message_cb cb, void *data)
{
    fy__sub *s, **tail;

    if (!cl || !channel || !cb || channel_len == 0)
        return FY_EINVAL;
    if (cl->closing)
        return FY_ECLOSED;
    if (channel_len > FY_REDIS_MAX_CHANNEL)
        return FY_ETOOBIG;
    for (tail = &cl->subs; *tail; tail = &(*tail)->next)
        if ((*tail)->len == channel_len && memcmp((*tail)->name, channel, channel_len) == 0)
            return FY_EEXIST;
    if (cl->nsubs >= FY_REDIS_MAX_CHANNELS)
        return FY_ELIMIT;
    s = calloc(1, sizeof *s);
    if (!s)
        return FY_ENOMEM;
    memcpy(s->name, channel, channel_len);
    s->len = channel_len;
    s->cb = cb;
    s->data = data;
    *tail = s;
    cl->nsubs++;
    /* A connection past its handshake gets the channel now; one still in it
     * sends every channel when AUTH is done. */
    if (cl->sub.ac && cl->sub.authed && sub_send(&cl->sub, s) == 0 && !cl->sub.ready)
        cl->sub.subs_pending++;
    /* A failed send means the connection is going away: the reconnect
     * subscribes to every channel. */
    return 0;
}

int fy_redis_subscribed(const fy_redis *cl)
{
    return cl ? cl->confirmed : 0;
}
