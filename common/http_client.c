/* http_client.c: the HTTP/1.1 client (see http_client.h for the contract).
 *
 * A call owns its serialized request head (and whole body, when given one) in
 * a reference-counted buffer, so a retry after a stale pooled connection can
 * resend the same bytes while the failed write may still hold them. A
 * connection (cl_conn) is either connecting, busy with one call, idle in its
 * origin's pool, or closing; it is freed when its last reference (connect in
 * progress, stream, timer, deferral) goes.
 */
#include "err.h"
#include "http_client.h"
#include "http_internal.h"
#include "log.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct cl_conn cl_conn;
typedef struct cl_origin cl_origin;

typedef enum { CT_NONE = 0, CT_READ, CT_POOL } ctmode;

typedef struct {
    int refs;
    size_t len;
    char data[];
} cwbuf;

struct cl_origin {
    cl_origin *next;
    int tls;
    int port;
    char host[256];
    cl_conn *idle; /* most recently used first */
    size_t nidle;
};

struct cl_conn {
    fy_http_client *cl;
    cl_origin *origin;
    fy_stream *s;
    cl_conn *prev, *next; /* cl->conns */
    cl_conn *inext;       /* origin->idle */
    cl_conn *dnext;       /* cl->deferred */
    uv_timer_t timer;
    llhttp_t parser;
    fy__http_hdrs hp;
    fy__http_hdr_off offs[FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS];
    fy_http_header hdrs[FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS];
    fy_buf pending;
    fy_http_call *call;
    uint64_t tmark, tdue, last_read;
    ctmode tm;
    int refs;
    int writes;
    int in_parse;
    int err;            /* set by a parser callback */
    unsigned ready : 1; /* connected (TLS handshake may still run) */
    unsigned closing : 1;
    unsigned pooled : 1;
    unsigned reused : 1; /* this call came from the pool */
    unsigned got_bytes : 1;
    unsigned interim : 1; /* parsing a 1xx response */
    unsigned resp_done : 1;
    unsigned keep : 1;
    unsigned deferred : 1;
};

struct fy_http_call {
    fy_http_client *cl;
    cl_conn *conn;
    cl_origin *origin;
    fy_http_call *prev, *next; /* cl->calls */
    fy_http_call_cbs cbs;
    void *arg;
    cwbuf *head; /* request head (+ whole body) */
    fy_buf pre;  /* streamed body written before the head went out */
    int64_t content_length;
    uint64_t body_written;
    unsigned stream_body : 1;
    unsigned body_ended : 1;
    unsigned sent : 1; /* head handed to a connection's stream */
    unsigned retried : 1;
    unsigned idempotent : 1;
    unsigned is_head : 1;
    unsigned paused : 1;
    unsigned want_drain : 1;
    unsigned responded : 1;
    unsigned linked : 1; /* in cl->calls */
};

struct fy_http_client {
    uv_loop_t *loop;
    fy_http_client_options o;
    cl_origin *origins;
    cl_conn *conns;
    fy_http_call *calls;
    cl_conn *deferred;
    uv_idle_t idle;
    int refs;
    int closing;
    fy_http_client_stats st;
};

static const llhttp_settings_t cl_settings;

static void conn_close(cl_conn *k);
static void call_fail(fy_http_call *call, int status);
static int conn_attach(cl_conn *k, fy_http_call *call);
static void cl_defer(cl_conn *k);

/* --- buffers ------------------------------------------------------------------ */

static cwbuf *cwbuf_new(size_t cap)
{
    cwbuf *b = malloc(sizeof *b + cap);
    if (b) {
        b->refs = 1;
        b->len = 0;
    }
    return b;
}

static void cwbuf_unref(cwbuf *b)
{
    if (b && --b->refs == 0) {
        free(b);
    }
}

/* --- lifetime -------------------------------------------------------------- */

static void cl_unref(fy_http_client *cl)
{
    if (--cl->refs > 0) {
        return;
    }
    while (cl->origins) {
        cl_origin *o = cl->origins;
        cl->origins = o->next;
        free(o);
    }
    free(cl);
}

static void conn_unref(cl_conn *k)
{
    if (--k->refs > 0) {
        return;
    }
    fy_http_client *cl = k->cl;
    if (k->prev) {
        k->prev->next = k->next;
    } else {
        cl->conns = k->next;
    }
    if (k->next) {
        k->next->prev = k->prev;
    }
    fy_buf_free(&k->hp.arena);
    fy_buf_free(&k->pending);
    free(k);
    cl_unref(cl);
}

static void pool_remove(cl_conn *k)
{
    if (!k->pooled) {
        return;
    }
    cl_origin *o = k->origin;
    for (cl_conn **pp = &o->idle; *pp; pp = &(*pp)->inext) {
        if (*pp == k) {
            *pp = k->inext;
            break;
        }
    }
    k->inext = NULL;
    k->pooled = 0;
    o->nidle--;
    k->cl->st.idle--;
}

static void conn_stream_closed(fy_stream *s)
{
    cl_conn *k = s->data;
    k->s = NULL;
    conn_unref(k);
}

static void conn_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* Closes K; it is never reused. A call still attached must have been
 * detached (failed, completed or cancelled) by the caller. */
static void conn_close(cl_conn *k)
{
    if (k->closing) {
        return;
    }
    k->closing = 1;
    pool_remove(k);
    uv_timer_stop(&k->timer);
    uv_close((uv_handle_t *)&k->timer, conn_timer_closed);
    if (k->s) {
        fy_stream_close(k->s, conn_stream_closed);
    }
}

/* --- timers --------------------------------------------------------------- */

static void conn_timer_cb(uv_timer_t *t);

static void conn_timer_arm(cl_conn *k, uint64_t due)
{
    uint64_t now = uv_now(k->cl->loop);
    if (k->tdue && k->tdue <= due) {
        return;
    }
    k->tdue = due;
    uv_timer_start(&k->timer, conn_timer_cb, due > now ? due - now : 0, 0);
}

static uint64_t conn_timeout(cl_conn *k)
{
    return k->tm == CT_READ ? k->cl->o.read_timeout_ms : k->cl->o.pool_idle_ms;
}

static void conn_timer_set(cl_conn *k, ctmode tm)
{
    if (k->closing) {
        return;
    }
    k->tm = tm;
    k->tmark = uv_now(k->cl->loop);
    if (tm != CT_NONE) {
        conn_timer_arm(k, k->tmark + conn_timeout(k));
    }
}

static void conn_timer_cb(uv_timer_t *t)
{
    cl_conn *k = t->data;
    uint64_t now = uv_now(k->cl->loop);
    k->tdue = 0;
    if (k->closing || k->tm == CT_NONE) {
        return;
    }
    if (k->tm == CT_READ && k->call && k->call->paused) {
        return; /* resume re-arms */
    }
    uint64_t mark = k->tmark;
    if (k->tm == CT_READ && k->last_read > mark) {
        mark = k->last_read;
    }
    uint64_t due = mark + conn_timeout(k);
    if (now < due) {
        conn_timer_arm(k, due);
        return;
    }
    if (k->tm == CT_READ && k->call) {
        call_fail(k->call, FY_ETIMEDOUT);
    } else {
        conn_close(k);
    }
}

/* --- calls ------------------------------------------------------------------ */

static void call_unlink(fy_http_call *call)
{
    fy_http_client *cl = call->cl;
    if (!call->linked) {
        return;
    }
    call->linked = 0;
    if (call->prev) {
        call->prev->next = call->next;
    } else {
        cl->calls = call->next;
    }
    if (call->next) {
        call->next->prev = call->prev;
    }
}

static void call_free(fy_http_call *call)
{
    call_unlink(call);
    cwbuf_unref(call->head);
    fy_buf_free(&call->pre);
    free(call);
}

static void call_done(fy_http_call *call, int status)
{
    void (*cb)(fy_http_call *, int, void *) = call->cbs.on_done;
    void *arg = call->arg;
    call->conn = NULL;
    /* Unlinked first, so on_done may close the client. */
    call_unlink(call);
    if (cb) {
        cb(call, status, arg);
    }
    call_free(call);
}

static cl_conn *conn_new(fy_http_client *cl, cl_origin *o)
{
    cl_conn *k = calloc(1, sizeof *k);
    if (!k) {
        return NULL;
    }
    k->cl = cl;
    k->origin = o;
    k->hp.offs = k->offs;
    k->hp.h = k->hdrs;
    k->hp.max = FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS;
    k->hp.cap = FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS;
    fy_buf_init(&k->hp.arena, FY_HTTP_CLIENT_MAX_RESPONSE_HEADER);
    fy_buf_init(&k->pending, FY_HTTP_MAX_PENDING_BYTES);
    uv_timer_init(cl->loop, &k->timer);
    k->timer.data = k;
    k->refs = 1; /* timer */
    cl->refs++;
    k->next = cl->conns;
    if (cl->conns) {
        cl->conns->prev = k;
    }
    cl->conns = k;
    return k;
}

static void conn_on_read(fy_stream *s, ssize_t n, const fy_slice *buf);
static void conn_on_connect(fy_stream *s, int status, void *arg);

/* Dials a new connection for CALL. */
static int call_dial(fy_http_call *call)
{
    fy_http_client *cl = call->cl;
    cl_conn *k = conn_new(cl, call->origin);
    if (!k) {
        return FY_ENOMEM;
    }
    k->refs++; /* the connect in progress */
    int rc = fy_tcp_connect(cl->loop, call->origin->host, call->origin->port,
                            cl->o.connect_timeout_ms, conn_on_connect, k);
    if (rc) {
        k->refs--;
        conn_close(k);
        return rc;
    }
    cl->st.connects++;
    k->call = call;
    call->conn = k;
    return 0;
}

/* Fails CALL (and closes its connection), or retries it once on a new
 * connection when it is safe to. */
static void call_fail(fy_http_call *call, int status)
{
    cl_conn *k = call->conn;
    int retry = k && k->reused && !k->got_bytes && !call->retried && call->idempotent &&
                !call->stream_body && !call->cl->closing &&
                (status == FY_EEOF || status == FY_ECONNRESET || status == FY_EPIPE ||
                 status == FY_ECANCELED);
    if (k) {
        k->call = NULL;
        conn_close(k);
    }
    call->conn = NULL;
    if (retry) {
        call->retried = 1;
        call->sent = 0;
        call->cl->st.retries++;
        if (call_dial(call) == 0) {
            return;
        }
    }
    call_done(call, status);
}

static void conn_write_done(fy_stream *s, int status, void *arg)
{
    cl_conn *k = s->data;
    cwbuf_unref(arg);
    k->writes--;
    if (k->closing) {
        return;
    }
    fy_http_call *call = k->call;
    if (status) {
        if (call) {
            call_fail(call, status);
        } else {
            conn_close(k);
        }
        return;
    }
    if (call && call->want_drain && fy_stream_write_queue_size(k->s) < FY_STREAM_LOW_WATERMARK) {
        call->want_drain = 0;
        if (call->cbs.on_drain) {
            call->cbs.on_drain(call, call->arg);
        }
    }
}

static int conn_write_buf(cl_conn *k, cwbuf *b)
{
    fy_slice sl = FY_SLICE(b->data, b->len);
    b->refs++;
    int rc = fy_stream_write(k->s, &sl, 1, conn_write_done, b);
    if (rc) {
        b->refs--;
        return rc;
    }
    k->writes++;
    return 0;
}

/* Sends CALL's head (and what was streamed so far) on ready connection K. */
static int conn_send(cl_conn *k, fy_http_call *call)
{
    int rc = conn_write_buf(k, call->head);
    if (!rc && call->pre.len) {
        cwbuf *b = cwbuf_new(call->pre.len);
        if (!b) {
            return FY_ENOMEM;
        }
        memcpy(b->data, call->pre.data, call->pre.len);
        b->len = call->pre.len;
        rc = conn_write_buf(k, b);
        cwbuf_unref(b);
        fy_buf_free(&call->pre);
    }
    if (!rc) {
        call->sent = 1;
        conn_timer_set(k, CT_READ);
    }
    return rc;
}

/* Puts CALL on connection K (ready or from the pool) and sends it. */
static int conn_attach(cl_conn *k, fy_http_call *call)
{
    k->call = call;
    call->conn = k;
    k->got_bytes = 0;
    k->interim = 0;
    k->resp_done = 0;
    k->keep = 0;
    k->err = 0;
    fy__http_hdr_reset(&k->hp);
    fy_buf_reset(&k->pending);
    llhttp_init(&k->parser, HTTP_RESPONSE, &cl_settings);
    k->parser.data = k;
    return conn_send(k, call);
}

static void conn_tls_done(fy_stream *s, int status, void *arg)
{
    cl_conn *k = arg;
    (void)s;
    if (status && !k->closing) {
        if (k->call) {
            k->reused = 0;
            call_fail(k->call, status);
        } else {
            conn_close(k);
        }
    }
}

static void conn_on_connect(fy_stream *s, int status, void *arg)
{
    cl_conn *k = arg;
    fy_http_call *call = k->call;
    if (status || k->closing || !call) {
        if (s) {
            fy_stream_close(s, NULL);
        }
        if (call && !k->closing) {
            k->call = NULL;
            call->conn = NULL;
            call_done(call, status ? status : FY_ECANCELED);
        }
        conn_close(k);
        conn_unref(k); /* the connect */
        return;
    }
    if (k->origin->tls) {
        s = fy_tls_stream_new(k->cl->o.tls, s, k->origin->host, conn_tls_done, k);
        if (!s) {
            k->call = NULL;
            call->conn = NULL;
            call_done(call, FY_ENOMEM);
            conn_close(k);
            conn_unref(k);
            return;
        }
    }
    k->s = s;
    s->data = k;
    s->on_read = conn_on_read;
    k->ready = 1;
    /* The connect's reference becomes the stream's. */
    int rc = fy_stream_read_start(s);
    if (!rc) {
        rc = conn_attach(k, call);
    }
    if (rc) {
        call_fail(call, rc);
    }
}

/* The response is complete: pool or close the connection, then tell. */
static void conn_complete(cl_conn *k)
{
    fy_http_call *call = k->call;
    k->call = NULL;
    fy_http_client *cl = k->cl;
    cl_origin *o = k->origin;
    int keep = k->keep && call->body_ended && k->pending.len == 0 && !cl->closing &&
               o->nidle < cl->o.max_idle;
    if (keep) {
        k->pooled = 1;
        k->inext = o->idle;
        o->idle = k;
        o->nidle++;
        cl->st.idle++;
        conn_timer_set(k, CT_POOL);
        if (fy_stream_read_start(k->s)) {
            conn_close(k);
        }
    } else {
        conn_close(k);
    }
    call_done(call, 0);
}

/* --- response parsing ------------------------------------------------------ */

static cl_conn *pconn(llhttp_t *p)
{
    return p->data;
}

static int stopped(cl_conn *k)
{
    return k->closing || !k->call;
}

static int on_message_begin(llhttp_t *p)
{
    cl_conn *k = pconn(p);
    if (stopped(k)) {
        return HPE_USER;
    }
    fy__http_hdr_reset(&k->hp);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    cl_conn *k = pconn(p);
    if (p->flags & F_TRAILING) {
        return 0;
    }
    int rc = fy__http_hdr_field(&k->hp, at, len);
    if (rc) {
        k->err = FY_ETOOBIG;
        return HPE_USER;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    cl_conn *k = pconn(p);
    if (p->flags & F_TRAILING) {
        return 0;
    }
    if (fy__http_hdr_field_done(&k->hp)) {
        k->err = FY_ETOOBIG;
        return HPE_USER;
    }
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    cl_conn *k = pconn(p);
    if (p->flags & F_TRAILING) {
        return 0;
    }
    if (fy__http_hdr_value(&k->hp, at, len)) {
        k->err = FY_ETOOBIG;
        return HPE_USER;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    cl_conn *k = pconn(p);
    if (p->flags & F_TRAILING) {
        return 0;
    }
    if (fy__http_hdr_value_done(&k->hp)) {
        k->err = FY_ETOOBIG;
        return HPE_USER;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    cl_conn *k = pconn(p);
    fy_http_call *call = k->call;
    if (stopped(k)) {
        return HPE_USER;
    }
    int status = p->status_code;
    if (status == 101) {
        k->err = FY_EPROTO;
        return HPE_USER;
    }
    if (status >= 100 && status < 200) {
        k->interim = 1; /* 100 Continue, 103 Early Hints: skipped */
        return 0;
    }
    fy__http_hdr_fixup(&k->hp);
    fy_http_response res = {
        .status = status,
        .version = p->http_major * 10 + p->http_minor,
        .headers = k->hdrs,
        .nheaders = k->hp.n,
    };
    call->responded = 1;
    if (call->cbs.on_response) {
        call->cbs.on_response(call, &res, call->arg);
    }
    if (stopped(k)) {
        return HPE_USER;
    }
    return call->is_head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    cl_conn *k = pconn(p);
    fy_http_call *call = k->call;
    if (stopped(k)) {
        return HPE_USER;
    }
    if (len == 0) {
        return 0; /* llhttp re-opens a span on resume: not data */
    }
    if (call->cbs.on_data) {
        call->cbs.on_data(call, at, len, call->arg);
    }
    if (stopped(k)) {
        return HPE_USER;
    }
    return call->paused ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    cl_conn *k = pconn(p);
    if (stopped(k)) {
        return HPE_USER;
    }
    if (k->interim) {
        k->interim = 0;
        return 0;
    }
    k->resp_done = 1;
    k->keep = llhttp_should_keep_alive(p) != 0;
    return HPE_PAUSED;
}

static const llhttp_settings_t cl_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Feeds DATA to the parser; returns bytes consumed, or -1 when K's call was
 * finished (completed, failed or cancelled) or K is closing. */
static ssize_t conn_parse(cl_conn *k, const char *data, size_t len)
{
    k->in_parse++;
    llhttp_errno_t e = llhttp_execute(&k->parser, data, len);
    k->in_parse--;
    if (k->closing || !k->call) {
        return -1;
    }
    if (e == HPE_OK) {
        return (ssize_t)len;
    }
    if (e == HPE_PAUSED) {
        size_t used = (size_t)(llhttp_get_error_pos(&k->parser) - data);
        if (k->resp_done) {
            if (used < len) {
                k->keep = 0; /* bytes after the response: not reusable */
            }
            conn_complete(k);
            return -1;
        }
        return (ssize_t)used;
    }
    call_fail(k->call, k->err ? k->err : FY_EPROTO);
    return -1;
}

static void conn_pump(cl_conn *k)
{
    fy_http_call *call = k->call;
    if (k->closing || !call || call->paused) {
        return;
    }
    if (llhttp_get_errno(&k->parser) == HPE_PAUSED) {
        llhttp_resume(&k->parser);
        /* Paused right after the last body byte, the parser still owes
         * on_message_complete, which needs no input: an empty execute runs
         * it (and is a no-op otherwise). */
        static const char none[1];
        const char *data = k->pending.len ? k->pending.data : none;
        ssize_t used = conn_parse(k, data, k->pending.len);
        if (used < 0) {
            return;
        }
        fy_buf_consume(&k->pending, (size_t)used);
        if (call->paused) {
            return;
        }
    } else if (k->pending.len) {
        ssize_t used = conn_parse(k, k->pending.data, k->pending.len);
        if (used < 0) {
            return;
        }
        fy_buf_consume(&k->pending, (size_t)used);
        if (call->paused) {
            return;
        }
    }
    if (fy_stream_read_start(k->s)) {
        call_fail(call, FY_EIO);
    }
}

static void conn_on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    cl_conn *k = s->data;
    fy_http_call *call = k->call;
    if (k->closing) {
        return;
    }
    if (!call) {
        /* Idle in the pool: the server closed it or sent garbage. */
        conn_close(k);
        return;
    }
    if (n < 0) {
        if (n == FY_EEOF && k->got_bytes && !k->resp_done) {
            /* A response delimited by the end of the connection. */
            k->in_parse++;
            llhttp_errno_t e = llhttp_finish(&k->parser);
            k->in_parse--;
            if (k->closing || !k->call) {
                return;
            }
            if (e == HPE_OK && k->resp_done) {
                k->keep = 0;
                conn_complete(k);
                return;
            }
            if (e == HPE_PAUSED && k->resp_done) {
                k->keep = 0;
                conn_complete(k);
                return;
            }
        }
        call_fail(call, (int)n);
        return;
    }
    k->got_bytes = 1;
    k->last_read = uv_now(k->cl->loop);
    if (k->pending.len || call->paused) {
        if (fy_buf_append(&k->pending, buf->base, (size_t)n)) {
            call_fail(call, FY_ETOOBIG);
            return;
        }
        fy_stream_read_stop(s);
        return;
    }
    k->refs++;
    ssize_t used = conn_parse(k, buf->base, (size_t)n);
    if (used >= 0 && (size_t)used < (size_t)n) {
        if (fy_buf_append(&k->pending, buf->base + used, (size_t)n - (size_t)used)) {
            call_fail(call, FY_ETOOBIG);
        } else {
            fy_stream_read_stop(s);
        }
    }
    conn_unref(k);
}

/* --- deferral ---------------------------------------------------------------- */

static void cl_idle_cb(uv_idle_t *h)
{
    fy_http_client *cl = h->data;
    cl_conn *list = cl->deferred;
    cl->deferred = NULL;
    uv_idle_stop(&cl->idle);
    while (list) {
        cl_conn *k = list;
        list = k->dnext;
        k->deferred = 0;
        conn_pump(k);
        conn_unref(k);
    }
}

static void cl_defer(cl_conn *k)
{
    if (k->deferred || k->closing) {
        return;
    }
    k->deferred = 1;
    k->refs++;
    k->dnext = k->cl->deferred;
    k->cl->deferred = k;
    uv_idle_start(&k->cl->idle, cl_idle_cb);
}

/* --- public API ------------------------------------------------------------------ */

int fy_http_client_new(uv_loop_t *loop, const fy_http_client_options *opts, fy_http_client **out)
{
    *out = NULL;
    if (!loop) {
        return FY_EINVAL;
    }
    fy_http_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        return FY_ENOMEM;
    }
    cl->loop = loop;
    if (opts) {
        cl->o = *opts;
    }
    if (!cl->o.connect_timeout_ms) {
        cl->o.connect_timeout_ms = FY_HTTP_CLIENT_CONNECT_TIMEOUT_MS;
    }
    if (!cl->o.read_timeout_ms) {
        cl->o.read_timeout_ms = FY_HTTP_CLIENT_READ_TIMEOUT_MS;
    }
    if (!cl->o.pool_idle_ms) {
        cl->o.pool_idle_ms = FY_HTTP_CLIENT_POOL_IDLE_MS;
    }
    if (!cl->o.max_idle) {
        cl->o.max_idle = FY_HTTP_CLIENT_POOL_MAX_IDLE;
    }
    uv_idle_init(loop, &cl->idle);
    cl->idle.data = cl;
    cl->refs = 1; /* the idle handle */
    *out = cl;
    return 0;
}

static void cl_idle_closed(uv_handle_t *h)
{
    cl_unref(h->data);
}

void fy_http_client_close(fy_http_client *cl)
{
    if (!cl || cl->closing) {
        return;
    }
    cl->closing = 1;
    while (cl->calls) {
        fy_http_call *call = cl->calls;
        cl_conn *k = call->conn;
        if (k) {
            k->call = NULL;
            conn_close(k);
        }
        call_done(call, FY_ECANCELED);
    }
    for (cl_conn *k = cl->conns; k; k = k->next) {
        conn_close(k);
    }
    uv_close((uv_handle_t *)&cl->idle, cl_idle_closed);
}

void fy_http_client_stats_get(const fy_http_client *cl, fy_http_client_stats *out)
{
    *out = cl->st;
}

static cl_origin *origin_get(fy_http_client *cl, const fy_http_url *u)
{
    for (cl_origin *o = cl->origins; o; o = o->next) {
        if (o->tls == u->tls && o->port == u->port && strcasecmp(o->host, u->host) == 0) {
            return o;
        }
    }
    cl_origin *o = calloc(1, sizeof *o);
    if (!o) {
        return NULL;
    }
    o->tls = u->tls;
    o->port = u->port;
    memcpy(o->host, u->host, sizeof o->host);
    o->next = cl->origins;
    cl->origins = o;
    return o;
}

static int method_ok(const char *m)
{
    if (!m[0] || strlen(m) > 32) {
        return 0;
    }
    for (const char *p = m; *p; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_')) {
            return 0;
        }
    }
    return 1;
}

static int idempotent(const char *m)
{
    static const char *const ms[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        if (strcmp(m, ms[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Serializes the request head (and a whole body) into a new cwbuf. */
static int build_request(const fy_http_call_options *o, const fy_http_url *u, cwbuf **out)
{
    int rc;
    fy_buf b;
    fy_buf_init(&b, FY_HTTP_MAX_HEADER_BYTES * 4 + o->body_len);
    rc = fy_buf_appendf(&b, "%s %s HTTP/1.1\r\n", o->method, u->target);
    if (rc) {
        goto out;
    }
    if (!fy_http_header_find(o->headers, o->nheaders, "host")) {
        int v6 = strchr(u->host, ':') != NULL;
        rc = u->default_port
                 ? fy_buf_appendf(&b, "Host: %s%s%s\r\n", v6 ? "[" : "", u->host, v6 ? "]" : "")
                 : fy_buf_appendf(&b, "Host: %s%s%s:%d\r\n", v6 ? "[" : "", u->host, v6 ? "]" : "",
                                  u->port);
        if (rc) {
            goto out;
        }
    }
    rc = fy__http_append_headers(&b, o->headers, o->nheaders, NULL);
    if (rc) {
        goto out;
    }
    if (o->stream_body) {
        rc = o->content_length >= 0
                 ? fy_buf_appendf(&b, "Content-Length: %lld\r\n", (long long)o->content_length)
                 : fy_buf_append_str(&b, "Transfer-Encoding: chunked\r\n");
    } else if (o->body_len || strcmp(o->method, "POST") == 0 || strcmp(o->method, "PUT") == 0 ||
               strcmp(o->method, "PATCH") == 0) {
        rc = fy_buf_appendf(&b, "Content-Length: %zu\r\n", o->body_len);
    }
    if (!rc) {
        rc = fy_buf_append(&b, "\r\n", 2);
    }
    if (!rc && !o->stream_body && o->body_len) {
        rc = fy_buf_append(&b, o->body, o->body_len);
    }
    if (rc) {
        goto out;
    }
    cwbuf *w = cwbuf_new(b.len);
    if (!w) {
        rc = FY_ENOMEM;
        goto out;
    }
    memcpy(w->data, b.data, b.len);
    w->len = b.len;
    *out = w;
out:
    fy_buf_free(&b);
    return rc;
}

int fy_http_call_start(fy_http_client *cl, const fy_http_call_options *o, fy_http_call **out)
{
    fy_http_url u;
    int rc;
    fy_http_call *call = NULL;
    if (out) {
        *out = NULL;
    }
    if (!cl || !o || !o->method || !method_ok(o->method) || cl->closing ||
        (o->body_len && !o->body) || (o->stream_body && o->content_length < -1)) {
        return FY_EINVAL;
    }
    rc = fy_http_url_parse(o->url, &u);
    if (rc) {
        return rc;
    }
    if (u.tls && !cl->o.tls) {
        return FY_ENOTSUP;
    }
    call = calloc(1, sizeof *call);
    if (!call) {
        return FY_ENOMEM;
    }
    call->cl = cl;
    call->cbs = o->cbs;
    call->arg = o->arg;
    call->stream_body = o->stream_body != 0;
    call->body_ended = !o->stream_body;
    call->content_length = o->stream_body ? o->content_length : (int64_t)o->body_len;
    call->idempotent = idempotent(o->method);
    call->is_head = strcmp(o->method, "HEAD") == 0;
    fy_buf_init(&call->pre, 4 * FY_STREAM_HIGH_WATERMARK);
    rc = build_request(o, &u, &call->head);
    if (rc) {
        goto out;
    }
    call->origin = origin_get(cl, &u);
    if (!call->origin) {
        rc = FY_ENOMEM;
        goto out;
    }
    call->next = cl->calls;
    if (cl->calls) {
        cl->calls->prev = call;
    }
    cl->calls = call;
    call->linked = 1;
    cl_conn *k = call->origin->idle;
    if (k) {
        pool_remove(k);
        k->reused = 1;
        cl->st.reused++;
        rc = conn_attach(k, call);
        if (rc) {
            /* The pooled connection is unusable: dial instead. */
            k->call = NULL;
            call->conn = NULL;
            conn_close(k);
            rc = call_dial(call);
        }
    } else {
        rc = call_dial(call);
    }
    if (rc) {
        call_free(call);
        return rc;
    }
    if (out) {
        *out = call;
    }
    return 0;
out:
    cwbuf_unref(call->head);
    fy_buf_free(&call->pre);
    free(call);
    return rc;
}

int fy_http_call_write(fy_http_call *call, const void *data, size_t len)
{
    if (!call || !call->stream_body || call->body_ended || (len && !data)) {
        return FY_EINVAL;
    }
    if (call->content_length >= 0 && call->body_written + len > (uint64_t)call->content_length) {
        return FY_EINVAL;
    }
    if (len == 0) {
        return 0;
    }
    int chunked = call->content_length < 0;
    cl_conn *k = call->conn;
    if (!k || k->closing) {
        return FY_ECLOSED;
    }
    if (!call->sent) {
        char ch[24] = {0};
        size_t hl = chunked ? fy__http_chunk_head(ch, len) : 0;
        int rc = fy_buf_append(&call->pre, ch, hl);
        if (!rc) {
            rc = fy_buf_append(&call->pre, data, len);
        }
        if (!rc && chunked) {
            rc = fy_buf_append(&call->pre, "\r\n", 2);
        }
        if (rc) {
            return rc == FY_ETOOBIG ? FY_EAGAIN : rc;
        }
        call->body_written += len;
        if (call->pre.len > FY_STREAM_HIGH_WATERMARK) {
            call->want_drain = 1;
            return 1;
        }
        return 0;
    }
    cwbuf *b = cwbuf_new(len + 32);
    if (!b) {
        return FY_ENOMEM;
    }
    if (chunked) {
        b->len = fy__http_chunk_head(b->data, len);
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    if (chunked) {
        memcpy(b->data + b->len, "\r\n", 2);
        b->len += 2;
    }
    int rc = conn_write_buf(k, b);
    cwbuf_unref(b);
    if (rc) {
        return rc == FY_ENOMEM ? rc : FY_ECLOSED;
    }
    call->body_written += len;
    if (fy_stream_write_queue_size(k->s) > FY_STREAM_HIGH_WATERMARK) {
        call->want_drain = 1;
        return 1;
    }
    return 0;
}

int fy_http_call_end(fy_http_call *call)
{
    static const char last[] = "0\r\n\r\n";
    if (!call || !call->stream_body || call->body_ended) {
        return FY_EINVAL;
    }
    if (call->content_length >= 0 && call->body_written != (uint64_t)call->content_length) {
        return FY_EINVAL;
    }
    cl_conn *k = call->conn;
    if (!k || k->closing) {
        return FY_ECLOSED;
    }
    call->body_ended = 1;
    if (call->content_length >= 0) {
        return 0;
    }
    if (!call->sent) {
        return fy_buf_append(&call->pre, last, sizeof last - 1);
    }
    cwbuf *b = cwbuf_new(sizeof last);
    if (!b) {
        return FY_ENOMEM;
    }
    memcpy(b->data, last, sizeof last - 1);
    b->len = sizeof last - 1;
    int rc = conn_write_buf(k, b);
    cwbuf_unref(b);
    return rc ? FY_ECLOSED : 0;
}

void fy_http_call_pause(fy_http_call *call)
{
    if (!call || call->paused) {
        return;
    }
    call->paused = 1;
    cl_conn *k = call->conn;
    if (k && k->ready && !k->closing && !k->in_parse) {
        fy_stream_read_stop(k->s);
    }
}

void fy_http_call_resume(fy_http_call *call)
{
    if (!call || !call->paused) {
        return;
    }
    call->paused = 0;
    cl_conn *k = call->conn;
    if (k && k->ready && !k->closing) {
        if (call->sent) {
            conn_timer_set(k, CT_READ);
        }
        if (!k->in_parse) {
            cl_defer(k);
        }
    }
}

void fy_http_call_cancel(fy_http_call *call)
{
    if (!call) {
        return;
    }
    cl_conn *k = call->conn;
    if (k) {
        k->call = NULL;
        conn_close(k);
    }
    call_free(call);
}
