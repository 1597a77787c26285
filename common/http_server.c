/* http_server.c: the HTTP/1.1 server (see http.h for the contract).
 *
 * One srv_conn per connection holds the llhttp parser, a timer and the one
 * request in progress (requests are answered in order, so a connection never
 * has two). The request's header block is copied into a per-connection arena
 * that keeps its allocation across requests, so the keep-alive hot path does
 * no allocation beyond the stream's own write request.
 *
 * Parsing pauses (llhttp returns HPE_PAUSED; unparsed bytes go to `pending`
 * and the stream stops reading) whenever the request in progress cannot take
 * more input: its message is complete but its response is not, the handler
 * has not yet decided what to do with a body, or the handler paused the body.
 * Work that must not run inside a caller's stack (resuming the parser after an
 * asynchronous response, a deferred end-of-body) goes through the server's
 * idle handle, so handlers never re-enter themselves.
 *
 * Lifetime: a connection dies only through conn_close (stream and timer
 * closed) and is freed when its last reference goes: the stream, the timer,
 * each write in flight, each deferral and the handler's hold on the request.
 */
#include "err.h"
#include "http.h"
#include "http_internal.h"
#include "log.h"

#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct srv_conn srv_conn;

typedef enum { TM_NONE = 0, TM_HEADER, TM_IDLE, TM_BODY, TM_LINGER } tmode;
typedef enum { BODY_NONE = 0, BODY_STREAM, BODY_BUFFER, BODY_DISCARD } body_mode;

struct fy_http_req {
    srv_conn *c;
    fy__http_hdrs hp; /* arena: target\0 headers... path\0; fields grown as needed */
    uint32_t url_len;
    size_t hdr_bytes; /* request line + header bytes seen, for the 431 cap */
    const char *method, *target, *path, *query;
    int version;
    int64_t content_length;
    uint64_t body_received;
    uint64_t discarded;
    fy_buf body;
    body_mode bmode;
    int64_t resp_remaining; /* bytes still owed for a Content-Length response */
    fy_http_body_cb on_data;
    fy_http_body_end_cb on_end;
    void *body_arg;
    fy_http_abort_cb on_abort;
    void *abort_arg;
    fy_http_drain_cb on_drain;
    void *drain_arg;
    unsigned in_msg : 1;          /* a message began */
    unsigned headers_done : 1;    /* header block complete */
    unsigned msg_done : 1;        /* llhttp reached on_message_complete */
    unsigned active : 1;          /* the handler owns the request */
    unsigned handler_called : 1;  /* on_request ran */
    unsigned handler_done : 1;    /* the handler finished it */
    unsigned resp_started : 1;    /* a response head was written */
    unsigned resp_chunked : 1;    /* streamed with chunked encoding */
    unsigned resp_no_body : 1;    /* HEAD, 204, 304: body writes are dropped */
    unsigned server_answered : 1; /* the server wrote an error response itself */
    unsigned expect_continue : 1;
    unsigned continue_sent : 1;
    unsigned keep_alive : 1; /* what the request allows */
    unsigned body_paused : 1;
    unsigned body_end_pending : 1; /* deliver on_end(0) from the idle handle */
    unsigned aborted : 1;
    unsigned is_head : 1;
};

typedef struct wbuf {
    srv_conn *c;
    fy_buf b;
} wbuf;

struct srv_conn {
    fy_http_server *srv;
    fy_stream *s;
    srv_conn *prev, *next; /* srv->conns */
    srv_conn *dnext;       /* srv->deferred */
    uv_timer_t timer;
    llhttp_t parser;
    fy_buf pending;
    wbuf *spare;
    wbuf *out; /* small writes of this loop turn, not yet written (conn_write) */
    uint64_t tmark, tdue, last_read;
    int refs;
    int in_parse;
    int writes; /* writes in flight */
    tmode tm;
    int err_status; /* set by a parser callback before it returns HPE_USER */
    const char *err_code;
    const char *err_msg;
    unsigned closing : 1;
    unsigned lingering : 1;
    unsigned close_after : 1; /* close once the current response is written */
    unsigned peer_eof : 1;
    unsigned deferred : 1;
    unsigned stop : 1; /* a callback asked llhttp to stop; not an error */
    unsigned req_bytes : 1;
    char peer[64];
    fy_http_req req;
};

struct fy_http_server {
    uv_loop_t *loop;
    fy_http_server_options o;
    uv_tcp_t listener;
    uv_idle_t idle;
    int listening;
    int port;
    int refs; /* listener + idle handle + connections */
    int closing;
    srv_conn *conns;
    srv_conn *deferred;
    fy_http_server_stats st;
    fy__http_date_cache date;
    fy_http_server_close_cb close_cb;
    void *close_arg;
    char server_header[128];
    char *extra; /* opts->extra_headers as "Name: value\r\n" lines, or NULL */
    size_t extra_len;
};

static const llhttp_settings_t srv_settings;

#define WBUF_KEEP (16 * 1024) /* a spare write buffer larger than this is freed */
/* Writes smaller than this are gathered per loop turn (see conn_write). */
#define OUT_GATHER (16 * 1024)

static void conn_close(srv_conn *c, int status);
static void conn_defer(srv_conn *c);
static void conn_timer_set(srv_conn *c, tmode tm, uint64_t mark);
static void conn_linger(srv_conn *c);
static void req_abort(srv_conn *c, int status);
static void req_finish(srv_conn *c);
static void conn_server_error(srv_conn *c, int status, const char *code, const char *msg,
                              int body_err);

/* --- lifetime -------------------------------------------------------------- */

static void srv_unref(fy_http_server *srv)
{
    if (--srv->refs > 0) {
        return;
    }
    if (srv->close_cb) {
        srv->close_cb(srv, srv->close_arg);
    }
    free(srv->extra);
    free(srv);
}

static void conn_free(srv_conn *c)
{
    fy_http_server *srv = c->srv;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    fy_buf_free(&c->req.hp.arena);
    fy__http_hdr_free(&c->req.hp);
    fy_buf_free(&c->req.body);
    fy_buf_free(&c->pending);
    if (c->spare) {
        fy_buf_free(&c->spare->b);
        free(c->spare);
    }
    if (c->out) {
        fy_buf_free(&c->out->b);
        free(c->out);
    }
    free(c);
    srv_unref(srv);
}

static void conn_unref(srv_conn *c)
{
    if (--c->refs == 0) {
        conn_free(c);
    }
}

static void conn_stream_closed(fy_stream *s)
{
    srv_conn *c = s->data;
    c->s = NULL;
    conn_unref(c);
}

static void conn_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static int conn_out_flush(srv_conn *c);

/* Closes the connection at once (writes the stream still queues are
 * dropped). A request the handler still owns gets its abort callback with
 * STATUS. */
static void conn_close(srv_conn *c, int status)
{
    if (c->closing) {
        return;
    }
    /* What was written before the close was made goes to the stream, as it
     * would have without the gathering (a cut-short response, say, so the
     * client sees how far it got). */
    conn_out_flush(c);
    c->closing = 1;
    c->srv->st.active--;
    c->refs++;
    req_abort(c, status);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
    fy_stream_close(c->s, conn_stream_closed);
    conn_unref(c);
}

/* --- writes -------------------------------------------------------------- */

static wbuf *wbuf_get(srv_conn *c, size_t need)
{
    wbuf *w = c->spare;
    if (w) {
        c->spare = NULL;
    } else {
        w = malloc(sizeof *w);
        if (!w) {
            return NULL;
        }
        w->c = c;
        fy_buf_init(&w->b, SIZE_MAX / 2); /* bounded by its writers */
    }
    fy_buf_reset(&w->b);
    if (fy_buf_reserve(&w->b, need)) {
        fy_buf_free(&w->b);
        free(w);
        return NULL;
    }
    return w;
}

static void wbuf_put(srv_conn *c, wbuf *w)
{
    if (!c->spare && w->b.cap <= WBUF_KEEP) {
        c->spare = w;
        return;
    }
    fy_buf_free(&w->b);
    free(w);
}

static void conn_check_drain(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (r->on_drain && r->active && !c->closing &&
        fy_stream_write_queue_size(c->s) < FY_STREAM_LOW_WATERMARK) {
        fy_http_drain_cb cb = r->on_drain;
        r->on_drain = NULL;
        cb(r, r->drain_arg);
    }
}

static void conn_write_done(fy_stream *s, int status, void *arg)
{
    wbuf *w = arg;
    srv_conn *c = w ? w->c : s->data;
    (void)s;
    c->writes--;
    if (w) {
        wbuf_put(c, w);
    }
    if (status && !c->closing) {
        conn_close(c, status);
    } else if (!c->closing) {
        if (c->lingering && c->peer_eof && c->writes == 0) {
            conn_close(c, 0);
        } else {
            conn_check_drain(c);
        }
    }
    conn_unref(c);
}

/* Hands SL[0..N) to the stream; W, when given, holds the bytes and is given
 * back when done (or now, on an error). Returns 0 or the write's error. */
static int conn_write_slices(srv_conn *c, const fy_slice *sl, size_t n, wbuf *w)
{
    int rc = fy_stream_write(c->s, sl, n, conn_write_done, w);
    if (rc) {
        if (w) {
            wbuf_put(c, w);
        }
        return rc;
    }
    c->writes++;
    c->refs++;
    return 0;
}

/* Hands W's bytes to the stream (W is given back when done). */
static int conn_write_now(srv_conn *c, wbuf *w)
{
    fy_slice sl = FY_SLICE(w->b.data, w->b.len);
    return conn_write_slices(c, &sl, 1, w);
}

/* Writes what conn_write gathered. Returns 0 or the write's error. */
static int conn_out_flush(srv_conn *c)
{
    wbuf *w = c->out;
    if (!w) {
        return 0;
    }
    c->out = NULL;
    return conn_write_now(c, w);
}

/* Writes W's bytes (W is given back), or a static slice when W is NULL.
 * Small writes made in one loop turn are gathered and leave together, from
 * the idle callback or when the response ends: a response head and a short
 * body are then one TLS record and one write(2), not two. Returns 0 or the
 * write's error (the caller closes). */
static int conn_write(srv_conn *c, wbuf *w, const char *stat, size_t statlen)
{
    const char *p = w ? w->b.data : stat;
    size_t n = w ? w->b.len : statlen;
    if (n >= OUT_GATHER) {
        int rc = conn_out_flush(c);
        if (rc) {
            if (w) {
                wbuf_put(c, w);
            }
            return rc;
        }
        if (!w) {
            fy_slice sl = FY_SLICE(stat, statlen);
            return conn_write_slices(c, &sl, 1, NULL);
        }
        return conn_write_now(c, w);
    }
    if (!c->out && w) {
        c->out = w;
    } else {
        if (!c->out && !(c->out = wbuf_get(c, n))) {
            return FY_ENOMEM;
        }
        int rc = fy_buf_append(&c->out->b, p, n);
        if (w) {
            wbuf_put(c, w);
        }
        if (rc) {
            return rc;
        }
    }
    if (c->out->b.len >= OUT_GATHER) {
        return conn_out_flush(c);
    }
    conn_defer(c);
    return 0;
}

/* --- response heads ------------------------------------------------------ */

static char *put_u64(char *w, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) {
        *w++ = tmp[--n];
    }
    return w;
}

#define PUT_LIT(w, s) (memcpy((w), (s), sizeof(s) - 1), (w) += sizeof(s) - 1)

/* Appends the status line, the server's own headers, HEADERS and the framing
 * headers. CLEN >= 0: Content-Length; -1: chunked; -2: none (close-delimited
 * or no body). */
static int build_head(srv_conn *c, fy_buf *b, int status, const fy_http_header *h, size_t n,
                      int64_t clen, int keep, const char *ctype)
{
    fy_http_server *srv = c->srv;
    const char *reason = fy_http_status_text(status);
    size_t rl = strlen(reason);
    int rc = fy_buf_reserve(b, 200 + rl + strlen(srv->server_header) + srv->extra_len);
    if (rc) {
        return rc;
    }
    char *w = b->data + b->len;
    PUT_LIT(w, "HTTP/1.1 ");
    w = put_u64(w, (uint64_t)status);
    *w++ = ' ';
    memcpy(w, reason, rl);
    w += rl;
    PUT_LIT(w, "\r\nDate: ");
    char date[32];
    fy__http_date(&srv->date, date);
    memcpy(w, date, srv->date.len);
    w += srv->date.len;
    PUT_LIT(w, "\r\n");
    if (srv->server_header[0]) {
        PUT_LIT(w, "Server: ");
        size_t sl = strlen(srv->server_header);
        memcpy(w, srv->server_header, sl);
        w += sl;
        PUT_LIT(w, "\r\n");
    }
    if (srv->extra_len) {
        memcpy(w, srv->extra, srv->extra_len);
        w += srv->extra_len;
    }
    if (ctype) {
        PUT_LIT(w, "Content-Type: ");
        size_t cl = strlen(ctype);
        memcpy(w, ctype, cl);
        w += cl;
        PUT_LIT(w, "\r\n");
    }
    b->len = (size_t)(w - b->data);
    rc = fy__http_append_headers(b, h, n, NULL);
    if (rc) {
        return rc;
    }
    rc = fy_buf_reserve(b, 96);
    if (rc) {
        return rc;
    }
    w = b->data + b->len;
    if (clen >= 0) {
        PUT_LIT(w, "Content-Length: ");
        w = put_u64(w, (uint64_t)clen);
        PUT_LIT(w, "\r\n");
    } else if (clen == -1) {
        PUT_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
    if (!keep) {
        PUT_LIT(w, "Connection: close\r\n");
    } else if (c->req.version == 10) {
        PUT_LIT(w, "Connection: keep-alive\r\n");
    }
    PUT_LIT(w, "\r\n");
    b->len = (size_t)(w - b->data);
    return 0;
}

/* Whether the connection can stay open after this response. */
static int resp_keep_alive(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (!r->keep_alive || c->srv->closing || c->peer_eof || c->close_after) {
        return 0;
    }
    if (!r->msg_done && r->bmode != BODY_STREAM && r->bmode != BODY_BUFFER) {
        /* The body will be discarded: only when the client is certainly
         * sending it and it is small. */
        if (r->expect_continue && !r->continue_sent) {
            return 0;
        }
        if (r->content_length < 0 ||
            (uint64_t)r->content_length - r->body_received > FY_HTTP_MAX_DISCARD_BYTES) {
            return 0;
        }
    }
    return 1;
}

static int status_has_body(int status)
{
    return !(status < 200 || status == 204 || status == 304);
}

/* --- timers ------------------------------------------------------------------ */

static uint64_t conn_timeout(srv_conn *c, tmode tm)
{
    const fy_http_server_options *o = &c->srv->o;
    switch (tm) {
    case TM_HEADER:
        return o->header_timeout_ms;
    case TM_IDLE:
        return o->idle_timeout_ms;
    case TM_BODY:
        return o->body_timeout_ms;
    case TM_LINGER:
        return FY_HTTP_LINGER_TIMEOUT_MS;
    case TM_NONE:
        break;
    }
    return 0;
}

static void conn_timer_cb(uv_timer_t *t);

static void conn_timer_arm(srv_conn *c, uint64_t due)
{
    uint64_t now = uv_now(c->srv->loop);
    if (c->tdue && c->tdue <= due) {
        return; /* an earlier firing re-checks and re-arms lazily */
    }
    c->tdue = due;
    uv_timer_start(&c->timer, conn_timer_cb, due > now ? due - now : 0, 0);
}

/* Switches the timer's meaning. The timer itself is moved only when the new
 * deadline is earlier than the armed one, so the keep-alive hot path touches
 * no timer at all. */
static void conn_timer_set(srv_conn *c, tmode tm, uint64_t mark)
{
    if (c->closing) {
        return;
    }
    c->tm = tm;
    c->tmark = mark;
    if (tm != TM_NONE) {
        conn_timer_arm(c, mark + conn_timeout(c, tm));
    }
}

static void conn_timer_cb(uv_timer_t *t)
{
    srv_conn *c = t->data;
    uint64_t now = uv_now(c->srv->loop);
    c->tdue = 0;
    if (c->closing || c->tm == TM_NONE) {
        return;
    }
    uint64_t mark = c->tmark;
    if (c->tm == TM_BODY && c->last_read > mark) {
        mark = c->last_read;
    }
    uint64_t due = mark + conn_timeout(c, c->tm);
    if (now < due) {
        conn_timer_arm(c, due);
        return;
    }
    switch (c->tm) {
    case TM_HEADER:
        if (c->req_bytes) {
            conn_server_error(c, 408, "request_timeout",
                              "the request header was not received in time", FY_ETIMEDOUT);
        } else {
            conn_close(c, FY_ETIMEDOUT);
        }
        break;
    case TM_BODY:
        conn_server_error(c, 408, "request_timeout", "the request body was not received in time",
                          FY_ETIMEDOUT);
        break;
    case TM_IDLE:
    case TM_LINGER:
    case TM_NONE:
        conn_close(c, FY_ETIMEDOUT);
        break;
    }
}

/* Arms the header timer when a request's header block is still incomplete
 * after a parse. */
static void conn_arm_header(srv_conn *c)
{
    if (!c->closing && !c->lingering && c->tm == TM_HEADER) {
        conn_timer_arm(c, c->tmark + c->srv->o.header_timeout_ms);
    }
}

/* --- request cycle ------------------------------------------------------------ */

static void req_reset(fy_http_req *r)
{
    fy__http_hdr_reset(&r->hp);
    if (r->body.cap > WBUF_KEEP) {
        fy_buf_free(&r->body);
    }
    fy_buf_reset(&r->body);
    r->url_len = 0;
    r->hdr_bytes = 0;
    r->method = r->target = r->path = r->query = NULL;
    r->version = 11;
    r->content_length = 0;
    r->body_received = 0;
    r->discarded = 0;
    r->bmode = BODY_NONE;
    r->resp_remaining = 0;
    r->on_data = NULL;
    r->on_end = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    r->in_msg = r->headers_done = r->msg_done = 0;
    r->active = r->handler_called = r->handler_done = 0;
    r->resp_started = r->resp_chunked = r->resp_no_body = r->server_answered = 0;
    r->expect_continue = r->continue_sent = r->keep_alive = 0;
    r->body_paused = r->body_end_pending = r->aborted = r->is_head = 0;
}

/* 1 when the parser must not consume more input now. */
static int conn_blocked(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return 1;
    }
    if (r->msg_done) {
        return 1; /* the response (or the handler) is not done yet */
    }
    if (r->headers_done && r->bmode == BODY_NONE && !r->handler_done && !(c->srv->o.buffer_body)) {
        return 1; /* the handler has not decided about the body */
    }
    return r->bmode == BODY_STREAM && r->body_paused;
}

/* Whether to keep reading from the stream. While the parser is blocked the
 * connection still reads (into `pending`, up to half its cap) so that a
 * client that goes away is noticed during a long response; only a handler's
 * pause on the body stops reading outright, since that is backpressure. */
static int conn_want_read(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (c->closing) {
        return 0;
    }
    if (c->lingering || !conn_blocked(c)) {
        return 1;
    }
    if (r->bmode == BODY_STREAM && r->body_paused) {
        return 0;
    }
    return c->pending.len <= FY_HTTP_MAX_PENDING_BYTES / 2;
}

static void conn_update_read(srv_conn *c)
{
    if (c->closing) {
        return;
    }
    if (!conn_want_read(c)) {
        fy_stream_read_stop(c->s);
    } else if (fy_stream_read_start(c->s)) {
        conn_close(c, FY_EIO);
    }
}

/* The request's message and its response are both complete. Returns 1 when
 * the connection goes on to the next request. */
static int req_cycle_done(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (!r->msg_done || (r->handler_called && !r->handler_done) || c->closing) {
        return 0;
    }
    if (c->close_after || c->lingering) {
        conn_linger(c);
        return 0;
    }
    req_reset(r);
    c->req_bytes = 0;
    conn_timer_set(c, TM_IDLE, uv_now(c->srv->loop));
    return 1;
}

/* Calls the handler's body-end callback once. */
static void req_body_end(srv_conn *c, int status)
{
    fy_http_req *r = &c->req;
    fy_http_body_end_cb cb = r->on_end;
    if (cb && r->active) {
        r->on_end = NULL;
        cb(r, status, r->body_arg);
    }
}

static void req_abort(srv_conn *c, int status)
{
    fy_http_req *r = &c->req;
    if (!r->active || r->aborted) {
        return;
    }
    r->aborted = 1;
    c->srv->st.aborted++;
    c->refs++;
    r->body_end_pending = 0;
    req_body_end(c, status ? status : FY_ECONNRESET); /* if the body was not yet ended */
    fy_http_abort_cb cb = r->on_abort;
    if (cb && r->active) {
        r->on_abort = NULL;
        cb(r, status ? status : FY_ECONNRESET, r->abort_arg);
    }
    conn_unref(c);
}

static void conn_call_handler(srv_conn *c)
{
    fy_http_req *r = &c->req;
    r->handler_called = 1;
    r->active = 1;
    c->refs++; /* the handler's hold, released by req_finish */
    c->srv->st.requests++;
    c->srv->o.on_request(r, c->srv->o.data);
}

/* The handler is done with the request (responded, ended or aborted). */
static void req_finish(srv_conn *c)
{
    fy_http_req *r = &c->req;
    if (!r->active) {
        return;
    }
    r->active = 0;
    r->handler_done = 1;
    r->on_data = NULL;
    r->on_end = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (!c->closing) {
        if (c->close_after) {
            conn_linger(c);
        } else if (!r->msg_done) {
            /* The rest of the body is read and dropped (bounded in on_body). */
            r->bmode = BODY_DISCARD;
            r->body_paused = 0;
            conn_timer_set(c, TM_BODY, uv_now(c->srv->loop));
            if (!c->in_parse) {
                conn_defer(c);
            }
        } else if (req_cycle_done(c) && !c->in_parse) {
            conn_defer(c);
        }
    }
    conn_unref(c);
}

/* Writes an error response the server produces itself (always with
 * Connection: close) and lingers; if a response already started, closes. A
 * handler holding the request learns through its body-end and abort
 * callbacks with BODY_ERR. */
static void conn_server_error(srv_conn *c, int status, const char *code, const char *msg,
                              int body_err)
{
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return;
    }
    c->srv->st.errors++;
    if (r->resp_started) {
        conn_close(c, body_err);
        return;
    }
    char body[512];
    size_t blen = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
    wbuf *w = wbuf_get(c, 512 + blen);
    if (!w) {
        conn_close(c, FY_ENOMEM);
        return;
    }
    if (build_head(c, &w->b, status, NULL, 0, (int64_t)blen, 0, "application/json") ||
        fy_buf_append(&w->b, body, blen)) {
        wbuf_put(c, w);
        conn_close(c, FY_ENOMEM);
        return;
    }
    r->resp_started = 1;
    r->server_answered = 1;
    c->close_after = 1;
    if (conn_write(c, w, NULL, 0)) {
        conn_close(c, FY_EIO);
        return;
    }
    conn_linger(c);
    req_abort(c, body_err);
}

/* After a final response: flush, send FIN, then read and drop whatever the
 * client still sends until it closes or FY_HTTP_LINGER_TIMEOUT_MS passes.
 * Closing at once could make the kernel answer the client's unread bytes
 * with a reset that destroys the response before the client reads it. */
static void conn_linger(srv_conn *c)
{
    if (c->closing || c->lingering) {
        return;
    }
    c->lingering = 1;
    if (conn_out_flush(c) || fy_stream_shutdown(c->s)) {
        conn_close(c, 0);
        return;
    }
    fy_buf_free(&c->pending);
    if (c->peer_eof) {
        if (c->writes == 0) {
            conn_close(c, 0);
        }
        return;
    }
    fy_stream_read_start(c->s);
    conn_timer_set(c, TM_LINGER, uv_now(c->srv->loop));
}

/* --- parsing -------------------------------------------------------------- */

static srv_conn *pconn(llhttp_t *p)
{
    return p->data;
}

/* Stops llhttp without an error of its own: closing, lingering or a server
 * error already answered. */
static int parse_stop(srv_conn *c)
{
    c->stop = 1;
    return HPE_USER;
}

static int parse_fail(srv_conn *c, int status, const char *code, const char *msg)
{
    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    return HPE_USER;
}

static int hdr_account(srv_conn *c, size_t len)
{
    fy_http_req *r = &c->req;
    r->hdr_bytes += len;
    if (r->hdr_bytes > FY_HTTP_MAX_HEADER_BYTES) {
        return parse_fail(c, 431, "request_header_fields_too_large",
                          "the request header block is too large");
    }
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    r->in_msg = 1;
    c->req_bytes = 1;
    if (c->tm == TM_IDLE) {
        /* Armed after the parse only if the header block is still
         * incomplete (conn_arm_header): most requests arrive whole. */
        c->tm = TM_HEADER;
        c->tmark = uv_now(c->srv->loop);
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    r->url_len += (uint32_t)len;
    if (r->url_len > FY_HTTP_MAX_URL_BYTES) {
        return parse_fail(c, 414, "uri_too_long", "the request target is too long");
    }
    int rc = hdr_account(c, len);
    if (rc) {
        return rc;
    }
    if (fy_buf_append(&r->hp.arena, at, len)) {
        return parse_fail(c, 431, "request_header_fields_too_large",
                          "the request header block is too large");
    }
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    if (fy_buf_append(&c->req.hp.arena, "", 1)) {
        return parse_fail(c, 431, "request_header_fields_too_large",
                          "the request header block is too large");
    }
    return 0;
}

static int on_span_count(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    return hdr_account(pconn(p), len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    if (r->headers_done) {
        return 0; /* chunked trailers are accepted and dropped */
    }
    int rc = hdr_account(c, len + (r->hp.state != 1 ? 4 : 0));
    if (rc) {
        return rc;
    }
    rc = fy__http_hdr_field(&r->hp, at, len);
    if (rc == FY_ELIMIT) {
        return parse_fail(c, 431, "request_header_fields_too_large",
                          "the request has too many header fields");
    }
    return rc ? parse_fail(c, 431, "request_header_fields_too_large",
                           "the request header block is too large")
              : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    if (c->req.headers_done) {
        return 0;
    }
    return fy__http_hdr_field_done(&c->req.hp) ? parse_fail(c, 400, "bad_request", "bad header")
                                               : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    if (r->headers_done) {
        return 0;
    }
    int rc = hdr_account(c, len);
    if (rc) {
        return rc;
    }
    return fy__http_hdr_value(&r->hp, at, len)
               ? parse_fail(c, 431, "request_header_fields_too_large",
                            "the request header block is too large")
               : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    if (c->req.headers_done) {
        return 0;
    }
    return fy__http_hdr_value_done(&c->req.hp) ? parse_fail(c, 400, "bad_request", "bad header")
                                               : 0;
}

static void send_continue(srv_conn *c)
{
    fy_http_req *r = &c->req;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (r->expect_continue && !r->continue_sent && !r->resp_started && !r->msg_done &&
        !c->closing && !c->lingering) {
        r->continue_sent = 1;
        if (conn_write(c, NULL, cont, sizeof cont - 1)) {
            conn_close(c, FY_EIO);
        }
    }
}

/* Checks Transfer-Encoding: only "chunked" is understood. */
static int check_te(srv_conn *c)
{
    fy_http_req *r = &c->req;
    size_t it = 0;
    const char *v;
    int other = 0;
    while ((v = fy_http_header_next(r->hp.h, r->hp.n, "transfer-encoding", &it))) {
        const char *q = v;
        while (*q) {
            while (*q == ' ' || *q == '\t' || *q == ',') {
                q++;
            }
            const char *s = q;
            while (*q && *q != ',' && *q != ' ' && *q != '\t' && *q != ';') {
                q++;
            }
            while (*q && *q != ',') {
                q++; /* parameters */
            }
            if (q > s && !(q - s == 7 && strncasecmp(s, "chunked", 7) == 0)) {
                other = 1;
            }
        }
    }
    if (!(c->parser.flags & F_CHUNKED)) {
        return parse_fail(c, 400, "bad_request",
                          "Transfer-Encoding must end with chunked in a request");
    }
    if (other) {
        return parse_fail(c, 501, "unsupported_transfer_encoding",
                          "only the chunked transfer coding is supported");
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    fy_http_server *srv = c->srv;
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    r->headers_done = 1;
    /* Upgrades (WebSocket, h2c) are not offered: the request is served as
     * plain HTTP/1.1 and the connection stays HTTP. */
    p->upgrade = 0;
    fy__http_hdr_fixup(&r->hp);
    r->method = llhttp_method_name((llhttp_method_t)p->method);
    r->is_head = p->method == HTTP_HEAD;
    r->version = p->http_major * 10 + p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;
    if (p->http_major != 1) {
        return parse_fail(c, 505, "http_version_not_supported", "only HTTP/1.x is supported");
    }
    if (p->method == HTTP_CONNECT) {
        return parse_fail(c, 405, "method_not_allowed", "CONNECT is not supported");
    }
    /* Split the target into path and query; the path copy lives in the arena. */
    r->target = r->hp.arena.data;
    if (r->url_len == 0) {
        return parse_fail(c, 400, "bad_request", "empty request target");
    }
    const char *qm = memchr(r->target, '?', r->url_len);
    size_t plen = qm ? (size_t)(qm - r->target) : r->url_len;
    size_t poff = r->hp.arena.len;
    /* Reserve first: the copy's source is the arena itself, which may move. */
    if (fy_buf_reserve(&r->hp.arena, plen + 1)) {
        return parse_fail(c, 431, "request_header_fields_too_large",
                          "the request header block is too large");
    }
    memcpy(r->hp.arena.data + poff, r->hp.arena.data, plen);
    r->hp.arena.data[poff + plen] = '\0';
    r->hp.arena.len += plen + 1;
    fy__http_hdr_fixup(&r->hp); /* the arena may have moved */
    r->target = r->hp.arena.data;
    r->path = r->hp.arena.data + poff;
    r->query = qm ? r->target + plen + 1 : "";
    if (p->flags & F_TRANSFER_ENCODING) {
        int rc = check_te(c);
        if (rc) {
            return rc;
        }
    }
    if (p->flags & F_CHUNKED) {
        r->content_length = -1;
    } else if (p->flags & F_CONTENT_LENGTH) {
        r->content_length = (int64_t)p->content_length;
    }
    const char *expect = fy_http_header_find(r->hp.h, r->hp.n, "expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) {
            return parse_fail(c, 417, "expectation_failed",
                              "only Expect: 100-continue is supported");
        }
        r->expect_continue = r->version >= 11 && r->content_length != 0;
    }
    if (r->content_length > 0 && (uint64_t)r->content_length > srv->o.max_body) {
        return parse_fail(c, 413, "payload_too_large", "the request body is too large");
    }
    int has_body = r->content_length != 0;
    conn_timer_set(c, has_body ? TM_BODY : TM_NONE, uv_now(srv->loop));
    if (srv->o.buffer_body && has_body) {
        r->bmode = BODY_BUFFER;
        send_continue(c);
        return c->closing ? parse_stop(c) : 0;
    }
    conn_call_handler(c);
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    if (has_body && r->bmode == BODY_NONE && !r->handler_done) {
        return HPE_PAUSED; /* wait for read_body / buffer_body / a response */
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    if (len == 0) {
        return 0; /* llhttp re-opens a span on resume: not data */
    }
    r->body_received += len;
    if (r->bmode == BODY_DISCARD) {
        r->discarded += len;
        if (r->discarded > FY_HTTP_MAX_DISCARD_BYTES) {
            c->close_after = 1;
            conn_linger(c);
            return parse_stop(c);
        }
        return 0;
    }
    if (r->body_received > c->srv->o.max_body) {
        return parse_fail(c, 413, "payload_too_large", "the request body is too large");
    }
    if (r->bmode == BODY_BUFFER) {
        if (fy_buf_append(&r->body, at, len)) {
            return parse_fail(c, 413, "payload_too_large", "the request body is too large");
        }
        return 0;
    }
    if (r->bmode == BODY_STREAM && r->on_data && r->active) {
        r->on_data(r, at, len, r->body_arg);
        if (c->closing || c->lingering) {
            return parse_stop(c);
        }
        if (r->bmode == BODY_STREAM && r->body_paused) {
            return HPE_PAUSED;
        }
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    srv_conn *c = pconn(p);
    fy_http_req *r = &c->req;
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    r->msg_done = 1;
    if (r->active || !r->handler_called) {
        conn_timer_set(c, TM_NONE, 0);
    }
    if (r->bmode == BODY_BUFFER && !r->handler_called) {
        conn_call_handler(c); /* server-side buffering finished */
    } else if (r->bmode == BODY_STREAM || r->bmode == BODY_BUFFER) {
        req_body_end(c, 0);
    }
    if (c->closing || c->lingering) {
        return parse_stop(c);
    }
    if (!r->msg_done) {
        return 0; /* the handler finished inside: the cycle is done, the request reset */
    }
    if (r->handler_called && !r->handler_done) {
        return HPE_PAUSED; /* answer in order: wait for this response */
    }
    return req_cycle_done(c) ? 0 : parse_stop(c);
}

static const llhttp_settings_t srv_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_method = on_span_count,
    .on_version = on_span_count,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_parse_error(srv_conn *c, llhttp_errno_t e)
{
    fy_http_req *r = &c->req;
    int status = c->err_status ? c->err_status : 400;
    const char *code = c->err_code ? c->err_code : "bad_request";
    const char *msg = c->err_msg ? c->err_msg : llhttp_get_error_reason(&c->parser);
    if (!msg) {
        msg = llhttp_errno_name(e);
    }
    int body_err = status == 413 ? FY_ETOOBIG : FY_EPROTO;
    if (r->handler_done && !r->msg_done) {
        /* A bad body after the response: nothing more to say. */
        c->close_after = 1;
        conn_linger(c);
        return;
    }
    conn_server_error(c, status, code, msg, body_err);
}

/* Feeds DATA to llhttp; returns how many bytes it consumed (fewer than LEN
 * when parsing paused). Handles parse errors itself. */
static size_t conn_parse(srv_conn *c, const char *data, size_t len)
{
    if (llhttp_get_errno(&c->parser) == HPE_PAUSED) {
        llhttp_resume(&c->parser);
    }
    c->in_parse++;
    llhttp_errno_t e = llhttp_execute(&c->parser, data, len);
    c->in_parse--;
    if (e == HPE_OK) {
        return len;
    }
    if (e == HPE_PAUSED) {
        const char *pos = llhttp_get_error_pos(&c->parser);
        return pos && pos >= data && pos <= data + len ? (size_t)(pos - data) : len;
    }
    if (!c->stop && !c->closing && !c->lingering) {
        conn_parse_error(c, e);
    }
    return len;
}

/* Parses what is pending and reads more, as far as the request in progress
 * allows. Never called from inside llhttp. */
static void conn_pump(srv_conn *c)
{
    while (!c->closing && !conn_blocked(c)) {
        if (c->pending.len == 0) {
            /* A parser paused right after the last body byte still owes
             * on_message_complete, which needs no input: run it. */
            if (llhttp_get_errno(&c->parser) == HPE_PAUSED) {
                static const char none[1];
                conn_parse(c, none, 0);
            }
            break;
        }
        size_t used = conn_parse(c, c->pending.data, c->pending.len);
        if (c->closing || c->lingering) {
            return;
        }
        fy_buf_consume(&c->pending, used);
    }
    conn_arm_header(c);
    if (c->closing || c->lingering) {
        return;
    }
    conn_update_read(c);
}

static void conn_on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    srv_conn *c = s->data;
    fy_http_req *r = &c->req;
    if (c->closing) {
        return;
    }
    if (n < 0) {
        c->peer_eof = 1;
        if (c->lingering) {
            if (c->writes == 0) {
                conn_close(c, 0);
            }
            return;
        }
        if (r->active) {
            /* A client that closes its side while its request is in
             * progress is treated as gone (as nginx does): the handler
             * learns at once instead of at its next write. */
            conn_close(c, (int)n);
        } else if (c->writes > 0 || c->out) {
            /* Let the last response flush, then close. */
            c->close_after = 1;
            conn_linger(c);
        } else {
            conn_close(c, (int)n);
        }
        return;
    }
    c->last_read = uv_now(c->srv->loop);
    if (c->lingering) {
        return; /* dropped */
    }
    if (c->pending.len > 0 || conn_blocked(c)) {
        if (fy_buf_append(&c->pending, buf->base, (size_t)n)) {
            conn_close(c, FY_ETOOBIG);
            return;
        }
        if (!conn_blocked(c)) {
            conn_pump(c);
        } else {
            conn_update_read(c);
        }
        return;
    }
    c->refs++;
    size_t used = conn_parse(c, buf->base, (size_t)n);
    if (!c->closing && !c->lingering) {
        if (used < (size_t)n && fy_buf_append(&c->pending, buf->base + used, (size_t)n - used)) {
            conn_close(c, FY_ETOOBIG);
        } else if (!conn_blocked(c) && c->pending.len) {
            conn_defer(c); /* unblocked by a callback during the parse */
        } else {
            conn_update_read(c);
        }
    }
    conn_arm_header(c);
    conn_unref(c);
}

/* --- deferral -------------------------------------------------------------- */

static void srv_idle_cb(uv_idle_t *h)
{
    fy_http_server *srv = h->data;
    srv_conn *list = srv->deferred;
    srv->deferred = NULL;
    uv_idle_stop(&srv->idle);
    while (list) {
        srv_conn *c = list;
        list = c->dnext;
        c->dnext = NULL;
        c->deferred = 0;
        fy_http_req *r = &c->req;
        if (!c->closing && conn_out_flush(c)) {
            conn_close(c, FY_EIO);
        }
        if (!c->closing && r->body_end_pending && r->active) {
            r->body_end_pending = 0;
            if (r->bmode == BODY_STREAM && r->body.len && r->on_data) {
                r->on_data(r, r->body.data, r->body.len, r->body_arg);
            }
            if (!c->closing && r->active) {
                req_body_end(c, 0);
            }
        }
        if (!c->closing && r->on_drain && r->active) {
            conn_check_drain(c);
        }
        if (!c->closing) {
            conn_pump(c);
        }
        conn_unref(c);
    }
}

static void conn_defer(srv_conn *c)
{
    fy_http_server *srv = c->srv;
    if (c->deferred || c->closing) {
        return;
    }
    c->deferred = 1;
    c->refs++;
    c->dnext = srv->deferred;
    srv->deferred = c;
    uv_idle_start(&srv->idle, srv_idle_cb);
}

/* --- connections ------------------------------------------------------------ */

static void conn_tls_done(fy_stream *s, int status, void *arg)
{
    srv_conn *c = arg;
    (void)s;
    if (status && !c->closing) {
        FY_DEBUG("http", "TLS handshake with %s failed: %s", c->peer, fy_strerror(status));
        conn_close(c, status);
    }
}

static int conn_new(fy_http_server *srv, fy_stream *s, int wrap_tls)
{
    srv_conn *c = calloc(1, sizeof *c);
    if (!c) {
        fy_stream_close(s, NULL);
        return FY_ENOMEM;
    }
    c->srv = srv;
    fy_stream_peer_name(s, c->peer, sizeof c->peer);
    if (wrap_tls) {
        s = fy_tls_stream_new(srv->o.tls, s, NULL, conn_tls_done, c);
        if (!s) {
            free(c);
            return FY_ENOMEM;
        }
    }
    c->s = s;
    s->data = c;
    s->on_read = conn_on_read;
    c->req.c = c;
    c->req.hp.max = FY_HTTP_MAX_HEADERS;
    fy_buf_init(&c->req.hp.arena, 2 * FY_HTTP_MAX_HEADER_BYTES + 64);
    fy_buf_init(&c->req.body, (size_t)srv->o.max_body);
    fy_buf_init(&c->pending, FY_HTTP_MAX_PENDING_BYTES);
    req_reset(&c->req);
    llhttp_init(&c->parser, HTTP_REQUEST, &srv_settings);
    c->parser.data = c;
    uv_timer_init(srv->loop, &c->timer);
    c->timer.data = c;
    c->refs = 2; /* stream + timer */
    srv->refs++;
    c->next = srv->conns;
    if (srv->conns) {
        srv->conns->prev = c;
    }
    srv->conns = c;
    srv->st.accepted++;
    srv->st.active++;
    conn_timer_set(c, TM_HEADER, uv_now(srv->loop));
    if (fy_stream_read_start(s)) {
        conn_close(c, FY_EIO);
    }
    return 0;
}

static void reject_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *ls, int status)
{
    fy_http_server *srv = ls->data;
    if (status < 0 || srv->closing) {
        return;
    }
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) {
        return;
    }
    uv_tcp_init(srv->loop, t);
    if (uv_accept(ls, (uv_stream_t *)t) != 0) {
        uv_close((uv_handle_t *)t, reject_closed);
        return;
    }
    if (srv->st.active >= srv->o.max_connections) {
        srv->st.rejected++;
        uv_close((uv_handle_t *)t, reject_closed);
        return;
    }
    fy_stream *s = fy_tcp_stream_wrap(t);
    if (!s) {
        return;
    }
    conn_new(srv, s, srv->o.tls != NULL);
}

/* --- server ------------------------------------------------------------------ */

/* Renders OPTS's extra headers into SRV->extra. Returns 0, or FY_EINVAL (a
 * header with CR or LF, or more than FY_HTTP_EXTRA_HEADERS_MAX bytes). */
static int extra_render(fy_http_server *srv, const fy_http_server_options *opts)
{
    fy_buf b;
    fy_buf_init(&b, FY_HTTP_EXTRA_HEADERS_MAX);
    int rc = 0;
    for (size_t i = 0; i < opts->n_extra_headers && !rc; i++) {
        const fy_http_header *h = &opts->extra_headers[i];
        size_t nl = h->name_len ? h->name_len : strlen(h->name);
        size_t vl = h->value_len ? h->value_len : strlen(h->value);
        if (!fy__http_header_ok(h->name, nl, h->value, vl)) {
            rc = FY_EINVAL;
            break;
        }
        rc = fy_buf_append(&b, h->name, nl) || fy_buf_append(&b, ": ", 2) ||
             fy_buf_append(&b, h->value, vl) || fy_buf_append(&b, "\r\n", 2);
    }
    if (rc) {
        fy_buf_free(&b);
        return FY_EINVAL;
    }
    srv->extra = b.data;
    srv->extra_len = b.len;
    return 0;
}

int fy_http_server_new(uv_loop_t *loop, const fy_http_server_options *opts, fy_http_server **out)
{
    int rc = 0;
    fy_http_server *srv = NULL;
    *out = NULL;
    if (!loop || !opts || !opts->on_request) {
        return FY_EINVAL;
    }
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        return FY_ENOMEM;
    }
    srv->loop = loop;
    srv->o = *opts;
    if (!srv->o.max_body) {
        srv->o.max_body = FY_HTTP_DEFAULT_MAX_BODY;
    }
    if (!srv->o.header_timeout_ms) {
        srv->o.header_timeout_ms = FY_HTTP_HEADER_TIMEOUT_MS;
    }
    if (!srv->o.idle_timeout_ms) {
        srv->o.idle_timeout_ms = FY_HTTP_IDLE_TIMEOUT_MS;
    }
    if (!srv->o.body_timeout_ms) {
        srv->o.body_timeout_ms = FY_HTTP_BODY_TIMEOUT_MS;
    }
    if (!srv->o.max_connections) {
        srv->o.max_connections = FY_HTTP_MAX_CONNECTIONS;
    }
    if (opts->server_header) {
        size_t sl = strlen(opts->server_header);
        if (sl >= sizeof srv->server_header ||
            !fy__http_header_ok("Server", 6, opts->server_header, sl)) {
            free(srv);
            return FY_EINVAL;
        }
        memcpy(srv->server_header, opts->server_header, sl + 1);
    }
    if (opts->n_extra_headers && extra_render(srv, opts)) {
        free(srv);
        return FY_EINVAL;
    }
    srv->o.extra_headers = NULL; /* not kept: rendered into srv->extra */
    srv->o.listen = NULL;        /* not kept: the caller's string may go away */
    uv_idle_init(loop, &srv->idle);
    srv->idle.data = srv;
    srv->refs = 1; /* the idle handle */
    if (opts->listen) {
        struct sockaddr_storage ss;
        if (fy_addr_parse(opts->listen, &ss)) {
            rc = FY_EINVAL;
            goto out;
        }
        uv_tcp_init(loop, &srv->listener);
        srv->listener.data = srv;
        srv->listening = 1;
        srv->refs++;
        rc = fy_err_from_uv(uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0));
        if (!rc) {
            rc = fy_err_from_uv(uv_listen((uv_stream_t *)&srv->listener, 511, on_connection));
        }
        if (rc) {
            goto out;
        }
        struct sockaddr_storage bound;
        int blen = sizeof bound;
        if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen) == 0) {
            srv->port =
                ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                  : ((struct sockaddr_in *)&bound)->sin_port);
        }
    }
out:
    if (rc) {
        fy_http_server_close(srv, NULL, NULL);
        return rc;
    }
    *out = srv;
    return 0;
}

int fy_http_server_port(const fy_http_server *srv)
{
    return srv ? srv->port : 0;
}

int fy_http_server_attach(fy_http_server *srv, fy_stream *s)
{
    if (!srv || srv->closing) {
        fy_stream_close(s, NULL);
        return FY_ECLOSED;
    }
    if (srv->st.active >= srv->o.max_connections) {
        srv->st.rejected++;
        fy_stream_close(s, NULL);
        return FY_ELIMIT;
    }
    return conn_new(srv, s, 0);
}

void fy_http_server_stats_get(const fy_http_server *srv, fy_http_server_stats *out)
{
    *out = srv->st;
}

static void srv_handle_closed(uv_handle_t *h)
{
    srv_unref(h->data);
}

void fy_http_server_close(fy_http_server *srv, fy_http_server_close_cb cb, void *arg)
{
    if (!srv || srv->closing) {
        return;
    }
    srv->closing = 1;
    srv->close_cb = cb;
    srv->close_arg = arg;
    if (srv->listening) {
        uv_close((uv_handle_t *)&srv->listener, srv_handle_closed);
    }
    /* conn_close never frees synchronously, so walking the list is safe. */
    for (srv_conn *c = srv->conns; c; c = c->next) {
        conn_close(c, FY_ECANCELED);
    }
    /* Deferred connections hold a reference that the idle callback drops; it
     * never runs once the handle is closed, so drop them now (every
     * connection is closing: the callback only releases them). */
    srv_idle_cb(&srv->idle);
    uv_close((uv_handle_t *)&srv->idle, srv_handle_closed);
}

/* --- request accessors ------------------------------------------------------ */

const char *fy_http_req_method(const fy_http_req *req)
{
    return req->method ? req->method : "";
}

const char *fy_http_req_target(const fy_http_req *req)
{
    return req->target ? req->target : "";
}

const char *fy_http_req_path(const fy_http_req *req)
{
    return req->path ? req->path : "";
}

const char *fy_http_req_query(const fy_http_req *req)
{
    return req->query ? req->query : "";
}

int fy_http_req_version(const fy_http_req *req)
{
    return req->version;
}

const fy_http_header *fy_http_req_headers(const fy_http_req *req, size_t *n)
{
    *n = req->hp.n;
    return req->hp.h;
}

const char *fy_http_req_header(const fy_http_req *req, const char *name)
{
    return fy_http_header_find(req->hp.h, req->hp.n, name);
}

int64_t fy_http_req_content_length(const fy_http_req *req)
{
    return req->content_length;
}

const char *fy_http_req_peer(const fy_http_req *req)
{
    return req->c->peer;
}

fy_stream *fy_http_req_stream(const fy_http_req *req)
{
    return req->c->s;
}

/* --- request body -------------------------------------------------------------- */

static int body_start(fy_http_req *r, body_mode mode, fy_http_body_cb on_data,
                      fy_http_body_end_cb on_end, void *arg)
{
    srv_conn *c = r->c;
    if (!r->active) {
        return FY_EINVAL;
    }
    if (r->bmode == BODY_STREAM || (r->bmode == BODY_BUFFER && !c->srv->o.buffer_body)) {
        return FY_EBUSY;
    }
    if (c->closing || c->lingering || r->server_answered) {
        return FY_ECLOSED;
    }
    int prebuffered = r->bmode == BODY_BUFFER; /* the server already read it */
    r->bmode = mode;
    r->on_data = on_data;
    r->on_end = on_end;
    r->body_arg = arg;
    if (r->msg_done || prebuffered) {
        r->body_end_pending = 1;
        conn_defer(c);
        return 0;
    }
    send_continue(c);
    if (c->closing) {
        return FY_ECLOSED;
    }
    conn_timer_set(c, TM_BODY, uv_now(c->srv->loop));
    if (!c->in_parse) {
        conn_defer(c);
    }
    return 0;
}

int fy_http_req_read_body(fy_http_req *req, fy_http_body_cb on_data, fy_http_body_end_cb on_end,
                          void *arg)
{
    if (!req || !on_data) {
        return FY_EINVAL;
    }
    return body_start(req, BODY_STREAM, on_data, on_end, arg);
}

int fy_http_req_buffer_body(fy_http_req *req, fy_http_body_end_cb on_end, void *arg)
{
    if (!req || !on_end) {
        return FY_EINVAL;
    }
    return body_start(req, BODY_BUFFER, NULL, on_end, arg);
}

fy_slice fy_http_req_body(const fy_http_req *req)
{
    if (!req->msg_done) {
        return FY_SLICE(NULL, 0);
    }
    return FY_SLICE(req->body.data, req->body.len);
}

void fy_http_req_pause(fy_http_req *req)
{
    srv_conn *c = req->c;
    if (!req->active || req->body_paused || req->bmode != BODY_STREAM) {
        return;
    }
    req->body_paused = 1;
    if (!req->msg_done) {
        conn_timer_set(c, TM_NONE, 0);
    }
    if (!c->in_parse && !c->lingering) {
        conn_update_read(c);
    }
}

void fy_http_req_resume(fy_http_req *req)
{
    srv_conn *c = req->c;
    if (!req->active || !req->body_paused) {
        return;
    }
    req->body_paused = 0;
    if (!req->msg_done) {
        conn_timer_set(c, TM_BODY, uv_now(c->srv->loop));
    }
    if (!c->in_parse) {
        conn_defer(c);
    }
}

void fy_http_req_on_abort(fy_http_req *req, fy_http_abort_cb cb, void *arg)
{
    if (req->active) {
        req->on_abort = cb;
        req->abort_arg = arg;
    }
}

/* --- responses -------------------------------------------------------------------- */

static int respond_common(fy_http_req *r, int status, const fy_http_header *h, size_t n,
                          const void *body, size_t len, const char *ctype)
{
    srv_conn *c = r->c;
    int rc = 0;
    if (!r->active) {
        return FY_EINVAL;
    }
    if (r->resp_started && !r->server_answered) {
        fy_http_res_abort(r);
        return FY_EBUSY;
    }
    if (c->closing || c->lingering || r->server_answered) {
        rc = FY_ECLOSED;
        goto out;
    }
    if (status < 200 || status > 999) {
        rc = FY_EINVAL;
        goto out;
    }
    int with_body = status_has_body(status);
    int keep = resp_keep_alive(c);
    wbuf *w = wbuf_get(c, 256 + (with_body && !r->is_head ? len : 0));
    if (!w) {
        rc = FY_ENOMEM;
        goto out;
    }
    rc = build_head(c, &w->b, status, h, n, with_body ? (int64_t)len : -2, keep, ctype);
    if (!rc && with_body && !r->is_head) {
        rc = fy_buf_append(&w->b, body, len);
    }
    if (rc) {
        wbuf_put(c, w);
        goto out;
    }
    r->resp_started = 1;
    if (!keep) {
        c->close_after = 1;
    }
    rc = conn_write(c, w, NULL, 0);
    if (rc) {
        conn_close(c, rc);
    }
out:
    req_finish(c);
    return rc;
}

int fy_http_respond(fy_http_req *req, int status, const fy_http_header *headers, size_t n,
                    const void *body, size_t len)
{
    if (!req || (len && !body)) {
        return FY_EINVAL;
    }
    return respond_common(req, status, headers, n, body, len, NULL);
}

int fy_http_respond_error(fy_http_req *req, int status, const char *code, const char *message)
{
    char body[1024];
    if (!req) {
        return FY_EINVAL;
    }
    size_t len = fy_http_error_json(body, sizeof body, status, code, NULL, message);
    return respond_common(req, status, NULL, 0, body, len, "application/json");
}

int fy_http_res_start(fy_http_req *req, int status, const fy_http_header *headers, size_t n,
                      int64_t content_length)
{
    if (!req || !req->active) {
        return FY_EINVAL;
    }
    srv_conn *c = req->c;
    if (req->resp_started) {
        return req->server_answered ? FY_ECLOSED : FY_EBUSY;
    }
    if (c->closing || c->lingering) {
        return FY_ECLOSED;
    }
    if (status < 200 || status > 999 || content_length < -1) {
        return FY_EINVAL;
    }
    int keep = resp_keep_alive(c);
    int64_t clen = content_length;
    req->resp_no_body = !status_has_body(status) || req->is_head;
    if (!status_has_body(status)) {
        clen = -2;
    } else if (clen == -1 && req->version < 11) {
        /* HTTP/1.0 has no chunked encoding: the end of the body is the
         * end of the connection. */
        clen = -2;
        keep = 0;
    }
    wbuf *w = wbuf_get(c, 256);
    if (!w) {
        return FY_ENOMEM;
    }
    int rc = build_head(c, &w->b, status, headers, n, clen, keep, NULL);
    if (rc) {
        wbuf_put(c, w);
        return rc;
    }
    req->resp_started = 1;
    req->resp_chunked = clen == -1;
    req->resp_remaining = clen >= 0 && !req->resp_no_body ? clen : (clen == -1 ? -1 : -2);
    if (!keep) {
        c->close_after = 1;
    }
    rc = conn_write(c, w, NULL, 0);
    if (rc) {
        conn_close(c, rc);
        return FY_ECLOSED;
    }
    return 0;
}

int fy_http_res_write(fy_http_req *req, const void *data, size_t len)
{
    if (!req || !req->active || !req->resp_started || (len && !data)) {
        return FY_EINVAL;
    }
    srv_conn *c = req->c;
    if (c->closing || c->lingering || req->server_answered) {
        return FY_ECLOSED;
    }
    if (len == 0 || req->resp_no_body) {
        return 0;
    }
    if (req->resp_remaining >= 0) {
        if ((uint64_t)req->resp_remaining < len) {
            return FY_EINVAL;
        }
        req->resp_remaining -= (int64_t)len;
    }
    if (len >= OUT_GATHER && c->s->write_copies) {
        /* The stream copies as it writes (TLS encrypts at once): the body
         * goes from the caller's memory, framed by two small slices. */
        char head[24];
        fy_slice sl[3] = {FY_SLICE(head, 0), FY_SLICE(data, len), FY_SLICE("\r\n", 0)};
        if (req->resp_chunked) {
            sl[0].len = fy__http_chunk_head(head, len);
            sl[2].len = 2;
        }
        int rc = conn_out_flush(c);
        if (!rc) {
            rc = conn_write_slices(c, sl, 3, NULL);
        }
        if (rc) {
            conn_close(c, rc);
            return FY_ECLOSED;
        }
        return fy_stream_write_queue_size(c->s) > FY_STREAM_HIGH_WATERMARK ? 1 : 0;
    }
    wbuf *w = wbuf_get(c, len + 32);
    if (!w) {
        return FY_ENOMEM;
    }
    if (req->resp_chunked) {
        w->b.len = fy__http_chunk_head(w->b.data, len);
    }
    memcpy(w->b.data + w->b.len, data, len);
    w->b.len += len;
    if (req->resp_chunked) {
        memcpy(w->b.data + w->b.len, "\r\n", 2);
        w->b.len += 2;
    }
    int rc = conn_write(c, w, NULL, 0);
    if (rc) {
        conn_close(c, rc);
        return FY_ECLOSED;
    }
    return fy_stream_write_queue_size(c->s) > FY_STREAM_HIGH_WATERMARK ? 1 : 0;
}

int fy_http_res_writable(const fy_http_req *req)
{
    const srv_conn *c = req->c;
    if (c->closing) {
        return 0;
    }
    return fy_stream_write_queue_size(c->s) <= FY_STREAM_HIGH_WATERMARK;
}

void fy_http_res_on_drain(fy_http_req *req, fy_http_drain_cb cb, void *arg)
{
    if (!req->active) {
        return;
    }
    req->on_drain = cb;
    req->drain_arg = arg;
    if (cb && !req->c->closing && fy_stream_write_queue_size(req->c->s) < FY_STREAM_LOW_WATERMARK) {
        conn_defer(req->c);
    }
}

int fy_http_res_end(fy_http_req *req)
{
    static const char last[] = "0\r\n\r\n";
    if (!req || !req->active) {
        return FY_EINVAL;
    }
    srv_conn *c = req->c;
    int rc = 0;
    if (!req->resp_started) {
        req_finish(c);
        return FY_EINVAL;
    }
    if (c->closing || c->lingering || req->server_answered) {
        rc = FY_ECLOSED;
    } else if (req->resp_remaining > 0) {
        rc = FY_EINVAL;
        conn_close(c, FY_EINVAL);
    } else if (req->resp_chunked && !req->resp_no_body) {
        rc = conn_write(c, NULL, last, sizeof last - 1);
        if (rc) {
            conn_close(c, rc);
        }
    }
    /* A whole response leaves now, not at the end of the turn. */
    if (!rc && !c->closing && (rc = conn_out_flush(c)) != 0) {
        conn_close(c, rc);
    }
    req_finish(c);
    return rc;
}

void fy_http_res_abort(fy_http_req *req)
{
    if (!req || !req->active) {
        return;
    }
    srv_conn *c = req->c;
    req->aborted = 1; /* the handler's own doing: no abort callback */
    conn_close(c, FY_ECANCELED);
    req_finish(c);
}
