/* link.c: see link.h. A link has four things to close (the stream, the tick
 * timer, and the check and idle handles of the end-of-turn flush); its
 * memory goes when the last of them has. */
#include "common/link/link.h"

#include "common/err.h"
#include "common/limits.h"

#include <stdlib.h>
#include <string.h>

#define LINK_TICK_MIN_MS 50
#define LINK_LINGER_MS   1000
#define LINK_HANDLES     4
#define LINK_BULK_READ   (16 * 1024) /* a read this large writes what it freed at once */

struct fy_link {
    uv_loop_t *loop;
    fy_stream *s;
    fyp_session *sess;
    const fy_link_ops *ops;
    void *data;
    uv_timer_t timer; /* session ticks, then the linger once ended */
    uv_check_t check; /* runs the end-of-turn flush */
    uv_idle_t idle;   /* active while a flush is due: poll must not block before it */
    uint64_t linger_ms;
    unsigned tick_ms;
    int handles; /* still to close */
    unsigned kicked : 1;
    unsigned ended : 1;
    unsigned shut : 1;     /* our close_notify + FIN are queued */
    unsigned released : 1; /* the handles are closing */
    unsigned paused : 1;   /* reading stopped for backpressure */
};

static void link_release(fy_link *l);

/* A session with heartbeat interval HB_MS is ticked every quarter of it. */
static unsigned link_tick_ms(uint32_t hb_ms)
{
    return hb_ms / 4 < LINK_TICK_MIN_MS ? LINK_TICK_MIN_MS : hb_ms / 4;
}
static void link_end(fy_link *l, fy_link_reason reason, int err, const char *msg, uint32_t code);

/* --- lifetime ------------------------------------------------------------------------ */

static void link_unref(fy_link *l)
{
    if (--l->handles > 0) {
        return;
    }
    l->ops->on_free(l);
    fyp_session_free(l->sess);
    free(l);
}

static void link_handle_closed(uv_handle_t *h)
{
    link_unref(h->data);
}

static void link_stream_closed(fy_stream *s)
{
    link_unref(s->data);
}

/* Closes everything now; pending writes fail with FY_ECANCELED first. */
static void link_release(fy_link *l)
{
    if (l->released) {
        return;
    }
    l->released = 1;
    uv_close((uv_handle_t *)&l->timer, link_handle_closed);
    uv_close((uv_handle_t *)&l->check, link_handle_closed);
    uv_close((uv_handle_t *)&l->idle, link_handle_closed);
    fy_stream_close(l->s, link_stream_closed);
}

/* --- writing -------------------------------------------------------------------------- */

static void link_on_write(fy_stream *s, int status, void *arg)
{
    fy_link *l = s->data;
    free(arg);
    if (l->released) {
        return;
    }
    if (status < 0) {
        link_end(l, FY_LINK_WRITE_FAILED, status, fy_strerror(status), FYP_ERR_INTERNAL);
        return;
    }
    if (l->paused && fy_stream_write_queue_size(l->s) < FY_STREAM_HIGH_WATERMARK) {
        l->paused = 0;
        if (fy_stream_read_start(l->s)) {
            link_end(l, FY_LINK_READ_FAILED, FY_EIO, "cannot read again", FYP_ERR_INTERNAL);
            return;
        }
    }
    fy_link_kick(l);
}

/* Hands pending output to the stream, FY_LINK_WRITE_CAP at a time, while its
 * queue is below the high watermark. The session's buffer moves on its next
 * call: a stream that copies on write (TLS) is given the session's bytes
 * themselves, any other a copy of its own. Returns 0 or the write error. */
static int link_write(fy_link *l)
{
    while (fy_stream_write_queue_size(l->s) < FY_STREAM_HIGH_WATERMARK) {
        fy_slice out;
        size_t n = fyp_session_output(l->sess, &out);
        if (n == 0) {
            return 0;
        }
        if (n > FY_LINK_WRITE_CAP) {
            n = FY_LINK_WRITE_CAP;
        }
        char *copy = NULL;
        if (!l->s->write_copies) {
            if (!(copy = malloc(n))) {
                return FY_ENOMEM;
            }
            memcpy(copy, out.base, n);
        }
        fy_slice sl = {copy ? copy : out.base, n};
        int rc = fy_stream_write(l->s, &sl, 1, link_on_write, copy);
        if (rc == FY_EAGAIN) {
            free(copy);
            return 0; /* the stream's own cap: a write callback comes first */
        }
        if (rc) {
            free(copy);
            return rc;
        }
        fyp_session_output_consume(l->sess, n);
    }
    if (!l->paused && !l->ended && fyp_session_output_size(l->sess) >= FY_LINK_READ_PAUSE) {
        l->paused = 1;
        fy_stream_read_stop(l->s);
    }
    return 0;
}

/* The end-of-turn work: write, then end or shut down as the session says. */
static void link_service(fy_link *l)
{
    if (l->released) {
        return;
    }
    int rc = link_write(l);
    if (rc) {
        link_end(l, FY_LINK_WRITE_FAILED, rc, fy_strerror(rc), FYP_ERR_INTERNAL);
        return;
    }
    if (!l->ended && fyp_session_want_close(l->sess)) {
        link_end(l, FY_LINK_FINISHED, 0, fyp_session_error_msg(l->sess), FYP_ERR_NONE);
        return;
    }
    if (l->ended && !l->shut && fyp_session_output_size(l->sess) == 0) {
        l->shut = 1;
        if (fy_stream_shutdown(l->s) != 0) {
            link_release(l);
        }
    }
}

static void link_on_check(uv_check_t *h)
{
    fy_link *l = h->data;
    uv_check_stop(&l->check);
    uv_idle_stop(&l->idle);
    l->kicked = 0;
    link_service(l);
}

static void link_on_idle(uv_idle_t *h)
{
    (void)h; /* only there to make the poll phase return at once */
}

void fy_link_kick(fy_link *l)
{
    if (!l || l->kicked || l->released) {
        return;
    }
    l->kicked = 1;
    uv_check_start(&l->check, link_on_check);
    /* A kick from a timer, idle or pending callback comes before the poll
     * phase: an active idle handle keeps poll from blocking until then. */
    uv_idle_start(&l->idle, link_on_idle);
}

/* --- ending ----------------------------------------------------------------------------- */

static void link_on_linger(uv_timer_t *t)
{
    link_release(t->data); /* the peer's end did not come in time */
}

/* Ends L once: the owner hears first, then the session's streams are reset
 * (by the transport's end, or by GOAWAY CODE unless the session is already
 * done), then the transport goes now or after the linger. */
static void link_end(fy_link *l, fy_link_reason reason, int err, const char *msg, uint32_t code)
{
    if (l->ended) {
        return;
    }
    l->ended = 1;
    fy_link_end end = {reason, err, msg ? msg : ""};
    l->ops->on_end(l, &end);
    int gone = reason == FY_LINK_PEER_CLOSED || reason == FY_LINK_READ_FAILED ||
               reason == FY_LINK_WRITE_FAILED;
    if (reason == FY_LINK_PEER_CLOSED || reason == FY_LINK_READ_FAILED) {
        fyp_session_recv_eof(l->sess); /* streams get their resets */
    } else if (!fyp_session_dead(l->sess) && !fyp_session_want_close(l->sess)) {
        fyp_session_terminate(l->sess, code, end.msg);
    }
    if (gone) {
        link_release(l);
        return;
    }
    uv_timer_stop(&l->timer);
    uv_timer_start(&l->timer, link_on_linger, l->linger_ms, 0);
    fy_link_kick(l);
}

void fy_link_close(fy_link *l, uint32_t code, const char *reason)
{
    if (!l || l->ended) {
        return;
    }
    link_end(l, FY_LINK_LOCAL, 0, reason, code);
}

void fy_link_abort(fy_link *l, const char *reason)
{
    if (!l) {
        return;
    }
    link_end(l, FY_LINK_LOCAL, 0, reason, FYP_ERR_INTERNAL);
    link_release(l);
}

void fy_link_goaway(fy_link *l, const char *debug)
{
    if (!l || l->ended) {
        return;
    }
    fyp_session_goaway(l->sess, FYP_ERR_NONE, debug);
    fy_link_kick(l);
}

/* --- reading and ticking ------------------------------------------------------------- */

static void link_on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    fy_link *l = s->data;
    if (l->released) {
        return;
    }
    if (n < 0) {
        if (l->ended) {
            link_release(l); /* the peer's end after ours */
            return;
        }
        int peer = n == FY_EEOF || n == FY_ECONNRESET;
        link_end(l, peer ? FY_LINK_PEER_CLOSED : FY_LINK_READ_FAILED, (int)n, fy_strerror((int)n),
                 FYP_ERR_INTERNAL);
        return;
    }
    if (l->ended) {
        return; /* nothing more is served; the bytes go unread */
    }
    int rc = fyp_session_recv(l->sess, buf->base, (size_t)n);
    if (l->ops->on_recv) {
        l->ops->on_recv(l, rc);
    }
    if ((size_t)n >= LINK_BULK_READ && !l->released && fyp_session_output_size(l->sess) > 0) {
        /* Bulk data is coming in (libuv reads up to 32 times per socket in
         * one turn): the credit it freed leaves now, not after the whole
         * window was read, so the sender refills while we work on the rest
         * instead of waiting for us. */
        link_service(l);
        return;
    }
    fy_link_kick(l);
}

static void link_on_tick(uv_timer_t *t)
{
    fy_link *l = t->data;
    if (fyp_session_tick(l->sess) == FY_ETIMEDOUT) {
        link_end(l, FY_LINK_HEARTBEAT, FY_ETIMEDOUT, fyp_session_error_msg(l->sess), FYP_ERR_NONE);
        return;
    }
    /* The interval follows what HELLO negotiated. */
    unsigned every = link_tick_ms(fyp_session_heartbeat_ms(l->sess));
    if (every != l->tick_ms) {
        l->tick_ms = every;
        uv_timer_set_repeat(t, every);
    }
    fy_link_kick(l);
}

static void link_on_event(fyp_session *s, const fyp_event *ev, void *data)
{
    fy_link *l = data;
    (void)s;
    l->ops->on_event(l, ev);
    fy_link_kick(l);
}

int fy_link_start(const fy_link_config *cfg, fy_link **out)
{
    *out = NULL;
    if (!cfg->loop || !cfg->stream || !cfg->ops || !cfg->ops->on_event || !cfg->ops->on_end ||
        !cfg->ops->on_free) {
        return FY_EINVAL;
    }
    fy_link *l = calloc(1, sizeof *l);
    if (!l) {
        return FY_ENOMEM;
    }
    l->loop = cfg->loop;
    l->s = cfg->stream;
    l->ops = cfg->ops;
    l->data = cfg->data;
    l->linger_ms = cfg->linger_ms ? cfg->linger_ms : LINK_LINGER_MS;
    fyp_session_config sc = cfg->session;
    sc.on_event = link_on_event;
    sc.data = l;
    int rc = fyp_session_new(&sc, &l->sess);
    if (rc) {
        free(l);
        return rc;
    }
    l->s->data = l;
    l->s->on_read = link_on_read;
    rc = fy_stream_read_start(l->s);
    if (rc) {
        fyp_session_free(l->sess);
        free(l);
        return rc;
    }
    /* These cannot fail once the loop exists (libuv only fills them in). */
    uv_timer_init(l->loop, &l->timer);
    uv_check_init(l->loop, &l->check);
    uv_idle_init(l->loop, &l->idle);
    l->timer.data = l->check.data = l->idle.data = l;
    l->handles = LINK_HANDLES;
    l->tick_ms = link_tick_ms(sc.settings.heartbeat_ms);
    uv_timer_start(&l->timer, link_on_tick, l->tick_ms, l->tick_ms);
    fy_link_kick(l);
    *out = l;
    return 0;
}

fyp_session *fy_link_session(const fy_link *l)
{
    return l->sess;
}

void *fy_link_data(const fy_link *l)
{
    return l->data;
}
