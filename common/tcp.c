/* tcp.c: fy_stream over a libuv TCP handle, plus connect-with-timeout and
 * address helpers. */
#include "err.h"
#include "stream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TCP_READ_BUF  (64 * 1024)
#define TCP_FREE_REQS 4 /* write requests kept per stream for reuse */

/* One read buffer per thread, not per connection: on_read consumes the bytes
 * before returning (stream.h), and a loop delivers one read at a time, so a
 * gateway holding 10,000 idle connections does not hold 10,000 buffers. */
static _Thread_local char tcp_rbuf[TCP_READ_BUF];

typedef struct tcp_wreq tcp_wreq;

typedef struct {
    fy_stream base;
    uv_tcp_t *tcp;
    uv_idle_t idle; /* runs completions of writes that finished at once */
    fy_stream_close_cb close_cb;
    int shut;
    int closes_pending;
    /* Every write, in order; callbacks are delivered from the head only, so
     * writes that completed inside uv_try_write and writes that went through
     * uv_write report in the order they were made. */
    tcp_wreq *head, *tail;
    tcp_wreq *free_reqs;
    int nfree;
    unsigned inflight; /* of them, gone to uv_write and not yet done */
} tcp_stream;

struct tcp_wreq {
    uv_write_t req;
    tcp_wreq *next;
    tcp_stream *ts;
    fy_stream_write_cb cb;
    void *arg;
    int done;
    int status;
};

static void tcp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = tcp_rbuf;
    buf->len = sizeof tcp_rbuf;
}

static void tcp_read_cb(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    tcp_stream *ts = h->data;
    if (nread == 0 || ts->base.closing) {
        return;
    }
    if (nread < 0) {
        uv_read_stop(h);
        if (ts->base.on_read) {
            ts->base.on_read(&ts->base, fy_err_from_uv((int)nread), NULL);
        }
        return;
    }
    fy_slice s = {buf->base, (size_t)nread};
    if (ts->base.on_read) {
        ts->base.on_read(&ts->base, nread, &s);
    }
}

static int tcp_read_start(fy_stream *s)
{
    tcp_stream *ts = (tcp_stream *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    int rc = uv_read_start((uv_stream_t *)ts->tcp, tcp_alloc_cb, tcp_read_cb);
    return rc == UV_EALREADY ? 0 : fy_err_from_uv(rc);
}

static int tcp_read_stop(fy_stream *s)
{
    tcp_stream *ts = (tcp_stream *)s;
    if (s->closing) {
        return 0;
    }
    return fy_err_from_uv(uv_read_stop((uv_stream_t *)ts->tcp));
}

static tcp_wreq *wreq_get(tcp_stream *ts)
{
    tcp_wreq *w = ts->free_reqs;
    if (w) {
        ts->free_reqs = w->next;
        ts->nfree--;
    } else if (!(w = malloc(sizeof *w))) {
        return NULL;
    }
    memset(w, 0, sizeof *w);
    w->ts = ts;
    return w;
}

static void wreq_put(tcp_stream *ts, tcp_wreq *w)
{
    if (ts->nfree < TCP_FREE_REQS) {
        w->next = ts->free_reqs;
        ts->free_reqs = w;
        ts->nfree++;
    } else {
        free(w);
    }
}

/* Runs the callbacks of the finished writes at the head of the queue. A
 * callback may write again or close the stream. */
static void tcp_drain(tcp_stream *ts)
{
    while (ts->head && ts->head->done) {
        tcp_wreq *w = ts->head;
        ts->head = w->next;
        if (!ts->head) {
            ts->tail = NULL;
        }
        fy_stream_write_cb cb = w->cb;
        void *arg = w->arg;
        int status = w->status;
        wreq_put(ts, w);
        if (cb) {
            cb(&ts->base, status, arg);
        }
    }
}

static void tcp_idle_cb(uv_idle_t *h)
{
    tcp_stream *ts = h->data;
    uv_idle_stop(h);
    tcp_drain(ts);
}

static void tcp_write_done(uv_write_t *req, int status)
{
    tcp_wreq *w = (tcp_wreq *)req;
    w->done = 1;
    w->ts->inflight--;
    w->status = fy_err_from_uv(status);
    if (!w->ts->base.closing) {
        tcp_drain(w->ts);
    }
}

static int tcp_write(fy_stream *s, const fy_slice *bufs, size_t nbufs, fy_stream_write_cb cb,
                     void *arg)
{
    tcp_stream *ts = (tcp_stream *)s;
    if (s->closing || ts->shut) {
        return FY_ECLOSED;
    }
    tcp_wreq *w = wreq_get(ts);
    if (!w) {
        return FY_ENOMEM;
    }
    w->cb = cb;
    w->arg = arg;
    /* fy_slice and uv_buf_t have different member order; uv copies the array. */
    uv_buf_t stackbufs[16] = {{0}};
    uv_buf_t *ub = nbufs <= 16 ? stackbufs : malloc(nbufs * sizeof *ub);
    if (!ub) {
        wreq_put(ts, w);
        return FY_ENOMEM;
    }
    size_t total = 0;
    for (size_t i = 0; i < nbufs; i++) {
        ub[i] = uv_buf_init(bufs[i].base, (unsigned)bufs[i].len);
        total += bufs[i].len;
    }
    int rc = 0;
    uv_buf_t *rest = ub;
    size_t nrest = nbufs;
    /* With nothing in flight, write straight to the socket: a small response
     * then costs one write(2) and no poll-for-writable round trip. The
     * callback still runs later, from the idle handle. Writes that finished
     * this way but whose callbacks have not run yet are no reason to queue:
     * their bytes are in the kernel already, and a uv_write would cost an
     * epoll_ctl (libuv re-arms the watcher when its queue drains). */
    if (ts->inflight == 0 && ts->tcp->write_queue_size == 0 && total > 0) {
        int n = uv_try_write((uv_stream_t *)ts->tcp, ub, (unsigned)nbufs);
        if (n == (int)total) {
            w->done = 1;
            uv_idle_start(&ts->idle, tcp_idle_cb);
            goto queue;
        }
        if (n > 0) {
            size_t skip = (size_t)n;
            while (skip >= rest->len) {
                skip -= rest->len;
                rest++;
                nrest--;
            }
            rest->base += skip;
            rest->len -= skip;
        } else if (n != UV_EAGAIN) {
            rc = fy_err_from_uv(n);
            goto fail;
        }
    }
    rc = uv_write(&w->req, (uv_stream_t *)ts->tcp, rest, (unsigned)nrest, tcp_write_done);
    if (rc) {
        rc = fy_err_from_uv(rc);
        goto fail;
    }
    ts->inflight++;
queue:
    if (ts->tail) {
        ts->tail->next = w;
    } else {
        ts->head = w;
    }
    ts->tail = w;
    if (ub != stackbufs) {
        free(ub);
    }
    return 0;
fail:
    if (ub != stackbufs) {
        free(ub);
    }
    wreq_put(ts, w);
    return rc;
}

static void tcp_shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

static int tcp_shutdown(fy_stream *s)
{
    tcp_stream *ts = (tcp_stream *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    if (ts->shut) {
        return 0;
    }
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req) {
        return FY_ENOMEM;
    }
    int rc = uv_shutdown(req, (uv_stream_t *)ts->tcp, tcp_shutdown_done);
    if (rc) {
        free(req);
        return fy_err_from_uv(rc);
    }
    ts->shut = 1;
    return 0;
}

static void tcp_closed(uv_handle_t *h)
{
    tcp_stream *ts = h->data;
    if (--ts->closes_pending > 0) {
        return;
    }
    /* uv_close has run every uv_write callback (ECANCELED for unsent ones);
     * writes still in the queue report now, in order: those that reached the
     * socket with their status, the rest as canceled. */
    while (ts->head) {
        if (!ts->head->done) {
            ts->head->done = 1;
            ts->head->status = FY_ECANCELED;
        }
        tcp_drain(ts);
    }
    while (ts->free_reqs) {
        tcp_wreq *w = ts->free_reqs;
        ts->free_reqs = w->next;
        free(w);
    }
    free(ts->tcp);
    if (ts->close_cb) {
        ts->close_cb(&ts->base);
    }
    free(ts);
}

static void tcp_close(fy_stream *s, fy_stream_close_cb cb)
{
    tcp_stream *ts = (tcp_stream *)s;
    if (s->closing) {
        return;
    }
    s->closing = 1;
    ts->close_cb = cb;
    ts->closes_pending = 2;
    uv_close((uv_handle_t *)&ts->idle, tcp_closed);
    uv_close((uv_handle_t *)ts->tcp, tcp_closed);
}

static size_t tcp_write_queue_size(const fy_stream *s)
{
    const tcp_stream *ts = (const tcp_stream *)s;
    return ts->tcp->write_queue_size;
}

static void tcp_peer_name(const fy_stream *s, char *out, size_t outlen)
{
    const tcp_stream *ts = (const tcp_stream *)s;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (outlen == 0) {
        return;
    }
    out[0] = '\0';
    if (uv_tcp_getpeername(ts->tcp, (struct sockaddr *)&ss, &len) == 0) {
        fy_addr_format((struct sockaddr *)&ss, out, outlen);
    }
}

static const fy_stream_vtable tcp_vtable = {
    .name = "tcp",
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .write = tcp_write,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
    .write_queue_size = tcp_write_queue_size,
    .peer_name = tcp_peer_name,
};

static void free_handle(uv_handle_t *h)
{
    free(h);
}

fy_stream *fy_tcp_stream_wrap(uv_tcp_t *tcp)
{
    tcp_stream *ts = calloc(1, sizeof *ts);
    if (!ts) {
        uv_close((uv_handle_t *)tcp, free_handle);
        return NULL;
    }
    ts->base.vt = &tcp_vtable;
    ts->base.loop = tcp->loop;
    ts->tcp = tcp;
    tcp->data = ts;
    uv_idle_init(tcp->loop, &ts->idle);
    ts->idle.data = ts;
    uv_tcp_nodelay(tcp, 1);
    return &ts->base;
}

/* --- connect with timeout ------------------------------------------------ */

typedef struct {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_getaddrinfo_t gai;
    uv_connect_t creq;
    uv_tcp_t *tcp;
    struct addrinfo *res, *next;
    fy_tcp_connect_cb cb;
    void *arg;
    int pending; /* outstanding libuv requests/handles that reference ctx */
    int done;    /* the user callback has run */
    int last_err;
} connect_ctx;

static void connect_release(connect_ctx *c)
{
    if (--c->pending == 0) {
        if (c->res) {
            uv_freeaddrinfo(c->res);
        }
        free(c);
    }
}

static void connect_timer_closed(uv_handle_t *h)
{
    connect_release(h->data);
}

static void connect_finish(connect_ctx *c, fy_stream *s, int status)
{
    if (c->done) {
        return;
    }
    c->done = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, connect_timer_closed);
    c->cb(s, status, c->arg);
}

static void connect_next(connect_ctx *c);

static void connect_tcp_closed(uv_handle_t *h)
{
    connect_ctx *c = h->data;
    free(h);
    if (!c->done) {
        connect_next(c);
    }
    connect_release(c);
}

static void connect_done(uv_connect_t *req, int status)
{
    connect_ctx *c = req->data;
    uv_tcp_t *tcp = c->tcp;
    c->tcp = NULL;
    if (!tcp) {
        /* The timeout already closed this socket. */
        connect_release(c);
        return;
    }
    if (status == 0 && !c->done) {
        fy_stream *s = fy_tcp_stream_wrap(tcp);
        connect_finish(c, s, s ? 0 : FY_ENOMEM);
        connect_release(c);
        return;
    }
    if (status) {
        c->last_err = fy_err_from_uv(status);
    }
    /* Failed or timed out: close this socket; its close callback tries the
     * next address (unless the user was already told). */
    tcp->data = c;
    c->pending++;
    uv_close((uv_handle_t *)tcp, connect_tcp_closed);
    connect_release(c);
}

static void connect_next(connect_ctx *c)
{
    while (c->next) {
        struct addrinfo *ai = c->next;
        c->next = ai->ai_next;
        uv_tcp_t *tcp = malloc(sizeof *tcp);
        if (!tcp) {
            connect_finish(c, NULL, FY_ENOMEM);
            return;
        }
        uv_tcp_init(c->loop, tcp);
        c->creq.data = c;
        int rc = uv_tcp_connect(&c->creq, tcp, ai->ai_addr, connect_done);
        if (rc == 0) {
            c->tcp = tcp;
            c->pending++;
            return;
        }
        c->last_err = fy_err_from_uv(rc);
        uv_close((uv_handle_t *)tcp, free_handle);
    }
    connect_finish(c, NULL, c->last_err ? c->last_err : FY_EUNREACH);
}

static void connect_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    connect_ctx *c = req->data;
    c->res = res;
    c->next = res;
    if (!c->done) {
        if (status < 0) {
            connect_finish(c, NULL, status == UV_ECANCELED ? FY_ETIMEDOUT : FY_EUNREACH);
        } else {
            connect_next(c);
        }
    }
    connect_release(c);
}

static void connect_timeout(uv_timer_t *t)
{
    connect_ctx *c = t->data;
    if (c->tcp) {
        /* Closing the socket makes connect_done run with UV_ECANCELED. */
        uv_tcp_t *tcp = c->tcp;
        c->tcp = NULL;
        tcp->data = c;
        c->pending++;
        uv_close((uv_handle_t *)tcp, connect_tcp_closed);
    } else if (!c->res) {
        uv_cancel((uv_req_t *)&c->gai);
    }
    connect_finish(c, NULL, FY_ETIMEDOUT);
}

int fy_tcp_connect(uv_loop_t *loop, const char *host, int port, unsigned timeout_ms,
                   fy_tcp_connect_cb cb, void *arg)
{
    if (!host || port <= 0 || port > 65535 || !cb) {
        return FY_EINVAL;
    }
    connect_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        return FY_ENOMEM;
    }
    c->loop = loop;
    c->cb = cb;
    c->arg = arg;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->pending = 1; /* the timer */
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    c->gai.data = c;
    int rc = uv_getaddrinfo(loop, &c->gai, connect_resolved, host, portstr, &hints);
    if (rc) {
        c->done = 1;
        uv_close((uv_handle_t *)&c->timer, connect_timer_closed);
        return fy_err_from_uv(rc);
    }
    c->pending++;
    uv_timer_start(&c->timer, connect_timeout, timeout_ms, 0);
    return 0;
}

int fy_addr_parse(const char *text, struct sockaddr_storage *out)
{
    char host[64];
    const char *colon;
    if (!text) {
        return FY_EINVAL;
    }
    memset(out, 0, sizeof *out);
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':' || (size_t)(end - text - 1) >= sizeof host) {
            return FY_EINVAL;
        }
        memcpy(host, text + 1, (size_t)(end - text - 1));
        host[end - text - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host) {
            return FY_EINVAL;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        if (host[0] == '\0') {
            strcpy(host, "0.0.0.0");
        }
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || port < 0 || port > 65535) {
        return FY_EINVAL;
    }
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0) {
        return 0;
    }
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0) {
        return 0;
    }
    return FY_EINVAL;
}

void fy_addr_format(const struct sockaddr *sa, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (outlen == 0) {
        return;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        uv_ip4_name(in, ip, sizeof ip);
        snprintf(out, outlen, "%s:%d", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(in6, ip, sizeof ip);
        snprintf(out, outlen, "[%s]:%d", ip, ntohs(in6->sin6_port));
    } else {
        out[0] = '\0';
    }
}
