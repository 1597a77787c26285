/* stream_pair.c: two connected in-memory fy_streams on one loop.
 *
 * Used by tests and fuzz drivers to run the HTTP and tunnel layers without
 * sockets. Delivery is always deferred to the loop (an idle handle per end),
 * so callers see the same re-entrancy rules as with TCP. */
#include "err.h"
#include "stream.h"

#include <stdlib.h>
#include <string.h>

#define PAIR_CHUNK   (16 * 1024)
#define PAIR_MAX_BUF (64u * 1024 * 1024)

typedef struct pair_write pair_write;
struct pair_write {
    pair_write *next;
    fy_stream_write_cb cb;
    void *arg;
    int status;
};

typedef struct pair_end pair_end;
struct pair_end {
    fy_stream base;
    pair_end *peer;
    uv_idle_t idle;
    fy_buf inbox; /* bytes written by the peer, not yet delivered */
    int reading;
    int peer_eof;   /* peer shut down its write side */
    int peer_reset; /* peer closed */
    int ended;      /* terminal read status delivered */
    int shut;
    pair_write *done_head, *done_tail; /* write callbacks to run */
    fy_stream_close_cb close_cb;
    char chunk[PAIR_CHUNK];
};

static void pair_kick(pair_end *e);

static void pair_idle_cb(uv_idle_t *h)
{
    pair_end *e = h->data;
    /* Run completed write callbacks first: they were queued before any read. */
    while (e->done_head && !e->base.closing) {
        pair_write *w = e->done_head;
        e->done_head = w->next;
        if (!e->done_head) {
            e->done_tail = NULL;
        }
        if (w->cb) {
            w->cb(&e->base, w->status, w->arg);
        }
        free(w);
    }
    while (!e->base.closing && e->reading && !e->ended && e->inbox.len > 0) {
        size_t n = e->inbox.len < PAIR_CHUNK ? e->inbox.len : PAIR_CHUNK;
        memcpy(e->chunk, e->inbox.data, n);
        fy_buf_consume(&e->inbox, n);
        fy_slice s = {e->chunk, n};
        if (e->base.on_read) {
            e->base.on_read(&e->base, (ssize_t)n, &s);
        }
    }
    if (!e->base.closing && e->reading && !e->ended && e->inbox.len == 0 &&
        (e->peer_eof || e->peer_reset)) {
        e->ended = 1;
        if (e->base.on_read) {
            e->base.on_read(&e->base, e->peer_reset ? FY_ECONNRESET : FY_EEOF, NULL);
        }
    }
    if (e->base.closing || (!e->done_head && (!e->reading || e->ended || e->inbox.len == 0))) {
        uv_idle_stop(&e->idle);
    }
}

static void pair_kick(pair_end *e)
{
    if (!e->base.closing) {
        uv_idle_start(&e->idle, pair_idle_cb);
    }
}

static int pair_read_start(fy_stream *s)
{
    pair_end *e = (pair_end *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    e->reading = 1;
    pair_kick(e);
    return 0;
}

static int pair_read_stop(fy_stream *s)
{
    ((pair_end *)s)->reading = 0;
    return 0;
}

static int pair_write_fn(fy_stream *s, const fy_slice *bufs, size_t nbufs, fy_stream_write_cb cb,
                         void *arg)
{
    pair_end *e = (pair_end *)s;
    if (s->closing || e->shut) {
        return FY_ECLOSED;
    }
    pair_write *w = calloc(1, sizeof *w);
    if (!w) {
        return FY_ENOMEM;
    }
    w->cb = cb;
    w->arg = arg;
    if (!e->peer) {
        w->status = FY_EPIPE;
    } else {
        for (size_t i = 0; i < nbufs; i++) {
            int rc = fy_buf_append(&e->peer->inbox, bufs[i].base, bufs[i].len);
            if (rc) {
                free(w);
                return rc;
            }
        }
        pair_kick(e->peer);
    }
    if (e->done_tail) {
        e->done_tail->next = w;
    } else {
        e->done_head = w;
    }
    e->done_tail = w;
    pair_kick(e);
    return 0;
}

static int pair_shutdown(fy_stream *s)
{
    pair_end *e = (pair_end *)s;
    if (s->closing) {
        return FY_ECLOSED;
    }
    e->shut = 1;
    if (e->peer) {
        e->peer->peer_eof = 1;
        pair_kick(e->peer);
    }
    return 0;
}

static void pair_closed(uv_handle_t *h)
{
    pair_end *e = h->data;
    while (e->done_head) {
        pair_write *w = e->done_head;
        e->done_head = w->next;
        if (w->cb) {
            w->cb(&e->base, FY_ECANCELED, w->arg);
        }
        free(w);
    }
    fy_buf_free(&e->inbox);
    if (e->close_cb) {
        e->close_cb(&e->base);
    }
    free(e);
}

static void pair_close(fy_stream *s, fy_stream_close_cb cb)
{
    pair_end *e = (pair_end *)s;
    if (s->closing) {
        return;
    }
    s->closing = 1;
    e->close_cb = cb;
    if (e->peer) {
        e->peer->peer_reset = !e->shut || e->peer->peer_reset;
        e->peer->peer_eof = 1;
        e->peer->peer = NULL;
        pair_kick(e->peer);
        e->peer = NULL;
    }
    uv_idle_stop(&e->idle);
    uv_close((uv_handle_t *)&e->idle, pair_closed);
}

static size_t pair_queue_size(const fy_stream *s)
{
    const pair_end *e = (const pair_end *)s;
    return e->peer ? e->peer->inbox.len : 0;
}

static void pair_peer_name(const fy_stream *s, char *out, size_t outlen)
{
    (void)s;
    if (outlen) {
        strncpy(out, "memory", outlen - 1);
        out[outlen - 1] = '\0';
    }
}

static const fy_stream_vtable pair_vtable = {
    .name = "pair",
    .read_start = pair_read_start,
    .read_stop = pair_read_stop,
    .write = pair_write_fn,
    .shutdown = pair_shutdown,
    .close = pair_close,
    .write_queue_size = pair_queue_size,
    .peer_name = pair_peer_name,
};

static pair_end *pair_end_new(uv_loop_t *loop)
{
    pair_end *e = calloc(1, sizeof *e);
    if (!e) {
        return NULL;
    }
    e->base.vt = &pair_vtable;
    e->base.loop = loop;
    fy_buf_init(&e->inbox, PAIR_MAX_BUF);
    uv_idle_init(loop, &e->idle);
    e->idle.data = e;
    return e;
}

int fy_stream_pair_new(uv_loop_t *loop, fy_stream **a, fy_stream **b)
{
    pair_end *x = pair_end_new(loop);
    pair_end *y = x ? pair_end_new(loop) : NULL;
    if (!y) {
        if (x) {
            pair_close(&x->base, NULL);
        }
        return FY_ENOMEM;
    }
    x->peer = y;
    y->peer = x;
    *a = &x->base;
    *b = &y->base;
    return 0;
}
