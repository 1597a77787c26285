/* tunnel.c: the runner's outbound connections to its gateways.
 *
 * The tunnel keeps `connections` slots, assigned round-robin to the gateways'
 * addresses (slot i dials target i % n; a name that resolves to several
 * addresses, several replicas behind one name, is one target per address),
 * so every gateway has a way down to this runner. A slot's connection goes TCP connect -> TLS (client certificate,
 * ALPN ferry/1) -> proto session (HELLO, heartbeats) -> ready. When it ends,
 * the slot dials again after a full-jitter exponential backoff:
 * wait = random(0, min(max, base * 2^n)), n counting failed attempts and
 * reset once a connection stayed up for stable_ms, so a fleet of runners
 * never reconnects in lockstep after a gateway restart.
 *
 * A graceful GOAWAY from the gateway detaches the connection from its slot:
 * it keeps serving its streams until they finish while the slot dials a
 * replacement at once. A connection is a small state machine whose memory is
 * freed only once nothing holds it (refs: the connect in flight, then its
 * stream, then its link). Once TLS chose ferry/1 the session runs on a link
 * (common/link): end-of-turn writes, backpressure, ticks and the close.
 *
 * The stream helper (fy_rn_stream_*) is how upstream.c and apistream.c
 * reach a connection: calls go from them to here, and from here to them
 * only through their stream's ops table. */
#include "runner/runner.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/limits.h"
#include "common/link/link.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TN_CONNECT_TIMEOUT_MS 10000
#define TN_CLOSE_GRACE_MS     1000 /* a closing connection's last writes get this long */

typedef enum { C_CONNECTING = 0, C_TLS, C_HELLO, C_READY, C_CLOSING } conn_state;

/* One place a slot dials: HOST is the name TLS verifies, ADDR (when set)
 * the address it connects to, one of several HOST resolved to. */
typedef struct {
    char host[256];
    int port;
    char addr[INET6_ADDRSTRLEN];
    char text[320];
} gw_addr;

typedef struct slot slot;

struct fy_rn_conn {
    fy_rn_tunnel *t;
    slot *slot; /* NULL once detached (gateway drain) */
    fy_rn_conn *prev, *next;
    const gw_addr *gw;
    unsigned seq;
    unsigned gen; /* the tunnel's models_gen when this connection's HELLO was made */
    char label[340];
    conn_state state;
    fy_stream *s;      /* TCP, then TLS, until the link takes it */
    fy_link *link;     /* once TLS chose ferry/1 */
    fyp_session *sess; /* the link's */
    fy_rn_link streams;
    int refs;          /* the connect in flight, then the stream, then the link */
    uint64_t ready_at; /* ms, uv_now */
    uint64_t rtt_us;
    int close_level; /* conn_close's, for the log line the link's end makes */
    unsigned connecting : 1;
    unsigned closing : 1;
};

struct slot {
    fy_rn_tunnel *t;
    unsigned idx;
    const gw_addr *gw;
    fy_rn_conn *conn;
    uv_timer_t backoff;
    unsigned attempts;
};

struct fy_rn_tunnel {
    uv_loop_t *loop;
    fy_rn_tunnel_options o;
    char name[FY_RN_NAME_MAX];
    gw_addr *gws;
    size_t ngws;
    slot *slots;
    unsigned nslots;
    fy_rn_conn *conns; /* every live connection, attached or not */
    unsigned nconns;   /* allocated connections (freed when their refs end) */
    unsigned seq;
    fy_rn_model_list *models; /* announced in HELLO; o.models points into it */
    unsigned models_gen;      /* bumped when the list changes */
    uv_timer_t drain_timer;
    int handles; /* tunnel-owned handles not yet closed */
    unsigned draining : 1;
    unsigned done : 1;
    fy_rn_tunnel_done_cb done_cb;
    void *done_arg;
};

static void conn_close(fy_rn_conn *c, int level, const char *why);
static void slot_connect(slot *sl);
static void tunnel_check_done(fy_rn_tunnel *t);
static void conn_recycle(fy_rn_conn *c);

uint64_t fy_rn_backoff_ms(uint64_t base, uint64_t max, unsigned n, double r)
{
    uint64_t cap = base;
    for (unsigned i = 0; i < n && cap < max; i++) {
        cap *= 2;
    }
    if (cap > max) {
        cap = max;
    }
    if (r < 0) {
        r = 0;
    }
    if (r >= 1) {
        r = 0.999999;
    }
    return (uint64_t)(r * (double)cap);
}

static double random_unit(void)
{
    uint32_t x = 0;
    if (fy_random_bytes(&x, sizeof x)) {
        x = (uint32_t)uv_hrtime();
    }
    return (double)x / 4294967296.0;
}

/* --- connection memory ---------------------------------------------------------- */

static void conn_unref(fy_rn_conn *c)
{
    if (--c->refs > 0) {
        return;
    }
    fy_rn_tunnel *t = c->t;
    free(c);
    t->nconns--;
    tunnel_check_done(t);
}

static void conn_stream_closed(fy_stream *s)
{
    conn_unref(s->data);
}

static void json_add_common(json_t *f, fy_rn_conn *c)
{
    json_object_set_new(f, "gateway", json_string(c->gw->text));
    json_object_set_new(f, "conn", json_integer(c->seq));
}

static void conn_kick(fy_rn_conn *c)
{
    fy_link_kick(c->link);
}

/* --- streams ---------------------------------------------------------------------- */

fy_rn_stream_base *fy_rn_stream_new(fy_rn_conn *c, uint32_t id, size_t size,
                                    const fy_rn_stream_ops *ops, size_t out_max)
{
    fy_rn_stream_base *sb = calloc(1, size);
    if (!sb) {
        fyp_session_reset(c->sess, id, FYP_ERR_INTERNAL);
        conn_kick(c);
        return NULL;
    }
    sb->ops = ops;
    sb->conn = c;
    sb->id = id;
    fy_buf_init(&sb->out, out_max);
    sb->link.next = c->streams.next;
    sb->link.prev = &c->streams;
    c->streams.next->prev = &sb->link;
    c->streams.next = &sb->link;
    fyp_session_set_stream_data(c->sess, id, sb);
    return sb;
}

void fy_rn_stream_free(fy_rn_stream_base *sb)
{
    if (!sb) {
        return;
    }
    sb->link.prev->next = sb->link.next;
    sb->link.next->prev = sb->link.prev;
    fyp_session_set_stream_data(sb->conn->sess, sb->id, NULL);
    fy_buf_free(&sb->out);
    free(sb);
}

int fy_rn_stream_respond(fy_rn_stream_base *sb, const fyp_response *r)
{
    int rc = fyp_session_respond(sb->conn->sess, sb->id, r, 0);
    conn_kick(sb->conn);
    return rc;
}

int fy_rn_stream_write(fy_rn_stream_base *sb, const char *data, size_t len)
{
    if (sb->out.len == 0) {
        ssize_t n = fyp_session_send_data(sb->conn->sess, sb->id, data, len, 0);
        if (n < 0) {
            return FY_ECLOSED;
        }
        conn_kick(sb->conn);
        data += n;
        len -= (size_t)n;
        if (len == 0) {
            return 0;
        }
    }
    int rc = fy_buf_append(&sb->out, data, len);
    return rc ? rc : 1;
}

int fy_rn_stream_queue(fy_rn_stream_base *sb, const char *data, size_t len)
{
    if (sb->out.len + len >= sb->out.max) {
        sb->out.max = sb->out.len + len + 1;
    }
    return len ? fy_buf_append(&sb->out, data, len) : 0;
}

/* The upstream's and the API's streams had one rule here: the end leaves only
 * once the queue is empty, on the last DATA unless TRAILERS follow. They
 * differ in the end's frame (the API's usage goes as TRAILERS: TRAILERS) and
 * in what an emptied queue lets go on (the upstream resumes its paused call):
 * that stays with them. */
int fy_rn_stream_flush(fy_rn_stream_base *sb, int end, const fyp_trailers *trailers)
{
    fyp_session *s = sb->conn->sess;
    if (sb->out.len) {
        /* END_STREAM rides on the last bytes, unless TRAILERS end the half. */
        int end_now = end && !trailers;
        ssize_t n = fyp_session_send_data(s, sb->id, sb->out.data, sb->out.len, end_now);
        if (n < 0) {
            return FY_ECLOSED;
        }
        fy_buf_consume(&sb->out, (size_t)n);
        conn_kick(sb->conn);
        if (sb->out.len) {
            return 0;
        }
        sb->ended |= end_now;
    }
    if (end && !sb->ended) {
        int rc = trailers ? fyp_session_send_trailers(s, sb->id, trailers)
                          : (int)fyp_session_send_data(s, sb->id, "", 0, 1);
        if (rc < 0) {
            return FY_ECLOSED;
        }
        sb->ended = 1;
        conn_kick(sb->conn);
    }
    return 1;
}

void fy_rn_stream_consume(fy_rn_stream_base *sb, size_t len)
{
    fyp_session_consume(sb->conn->sess, sb->id, len);
    conn_kick(sb->conn);
}

void fy_rn_stream_reset(fy_rn_stream_base *sb, uint32_t code)
{
    fyp_session_reset(sb->conn->sess, sb->id, code);
    conn_kick(sb->conn);
}

const char *fy_rn_stream_label(const fy_rn_stream_base *sb)
{
    return sb->conn->label;
}

/* --- closing ---------------------------------------------------------------------- */

static void slot_schedule(slot *sl, int was_stable);

/* What ending C means to the tunnel, whatever ended it: the log line, its
 * streams released (upstream calls cancelled), out of the tunnel's list, and
 * its slot, if it still had one, dialling again after the backoff. */
static void conn_ended(fy_rn_conn *c, int level, const char *why)
{
    fy_rn_tunnel *t = c->t;
    int was_ready = c->state == C_READY;
    uint64_t up_ms = was_ready ? uv_now(t->loop) - c->ready_at : 0;
    c->closing = 1;
    c->state = C_CLOSING;
    json_t *f = json_object();
    json_add_common(f, c);
    json_object_set_new(f, "reason", json_string(why));
    if (was_ready) {
        json_object_set_new(f, "up_ms", json_integer((json_int_t)up_ms));
    }
    fy_log_event((fy_log_level)level, "tunnel", was_ready ? "disconnected" : "connection failed",
                 f);
    /* Every stream goes now, before the session resets what it still
     * knows of (they find no stream data then), including those finished
     * on the wire but still held here. */
    while (c->streams.next != &c->streams) {
        fy_rn_stream_base *sb = (fy_rn_stream_base *)c->streams.next;
        sb->ops->on_reset(sb, FYP_ERR_INTERNAL, 0);
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        t->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    c->prev = c->next = NULL;
    slot *sl = c->slot;
    if (sl) {
        sl->conn = NULL;
        c->slot = NULL;
        slot_schedule(sl, was_ready && up_ms >= t->o.stable_ms);
    }
    tunnel_check_done(t);
}

/* Ends C. A session gets GOAWAY INTERNAL_ERROR with WHY (unless it ended
 * gracefully) and its last output a short grace to leave; a connection
 * still dialling or shaking hands is closed at once. */
static void conn_close(fy_rn_conn *c, int level, const char *why)
{
    if (c->closing) {
        return;
    }
    if (c->link) {
        c->close_level = level;
        fy_link_close(c->link, FYP_ERR_INTERNAL, why); /* its on_end calls conn_ended */
        return;
    }
    conn_ended(c, level, why);
    if (c->s) {
        fy_stream_close(c->s, conn_stream_closed);
        c->s = NULL;
    } else if (!c->connecting) {
        conn_unref(c); /* nothing in flight holds it */
    }
}

/* --- the session ----------------------------------------------------------------- */

static void conn_on_goaway(fy_rn_conn *c, const fyp_goaway *g)
{
    fy_rn_tunnel *t = c->t;
    char dbg[200];
    snprintf(dbg, sizeof dbg, "%.*s", (int)(g->debug.len < 190 ? g->debug.len : 190),
             g->debug.base ? g->debug.base : "");
    json_t *f = json_object();
    json_add_common(f, c);
    json_object_set_new(f, "code", json_string(fyp_errcode_name(g->error_code)));
    json_object_set_new(f, "message", json_string(dbg));
    if (g->error_code == FYP_ERR_NONE) {
        /* The gateway drains: finish here, take new work elsewhere. */
        fy_log_event(FY_LOG_INFO, "tunnel", "gateway draining this connection", f);
        slot *sl = c->slot;
        if (sl && !t->draining) {
            /* Through the backoff: a gateway that keeps sending GOAWAY
             * right after the handshake must not make us spin. */
            uint64_t up_ms = uv_now(t->loop) - c->ready_at;
            sl->conn = NULL;
            c->slot = NULL;
            slot_schedule(sl, up_ms >= t->o.stable_ms);
        }
    } else if (g->error_code == FYP_ERR_REJECTED) {
        fy_log_event(FY_LOG_ERROR, "tunnel",
                     "the gateway rejected this runner (revoked, or enrolled again "
                     "elsewhere?); retrying with backoff",
                     f);
    } else {
        fy_log_event(FY_LOG_WARN, "tunnel", "the gateway ended the connection", f);
    }
}

static void conn_on_hello(fy_rn_conn *c, const fyp_event *ev)
{
    fy_rn_tunnel *t = c->t;
    c->state = C_READY;
    c->ready_at = uv_now(t->loop);
    json_t *f = json_object();
    json_add_common(f, c);
    json_object_set_new(f, "runner", json_string(t->name));
    json_object_set_new(f, "version", json_integer(ev->version));
    json_object_set_new(f, "heartbeat_ms", json_integer(fyp_session_heartbeat_ms(c->sess)));
    json_object_set_new(f, "models", json_integer(t->o.n_models));
    fy_log_event(FY_LOG_INFO, "tunnel", "connected", f);
    if (c->gen != t->models_gen) {
        conn_recycle(c); /* the models changed while it shook hands */
    }
}

/* The session's events: requests to the opener, the rest to their stream. */
static void conn_event(fy_rn_conn *c, const fyp_event *ev)
{
    fy_rn_tunnel *t = c->t;
    fy_rn_stream_base *st = ev->stream_data;
    switch (ev->type) {
    case FYP_EV_HELLO:
        conn_on_hello(c, ev);
        break;
    case FYP_EV_REQUEST:
        t->o.opener.open(t->o.opener.arg, c, ev->stream_id, ev->u.request, ev->end_stream);
        break;
    case FYP_EV_DATA:
        if (st) {
            st->ops->on_data(st, ev->u.data.base, ev->u.data.len, ev->end_stream);
        } else if (ev->u.data.len) {
            fyp_session_consume(c->sess, ev->stream_id, ev->u.data.len);
        }
        break;
    case FYP_EV_TRAILERS:
        /* Request trailers end the body; their fields are not forwarded. */
        if (st) {
            st->ops->on_data(st, NULL, 0, 1);
        }
        break;
    case FYP_EV_WRITABLE:
        if (st) {
            st->ops->on_writable(st);
        }
        break;
    case FYP_EV_STREAM_RESET:
        if (st) {
            /* A connection that ended released its streams (conn_ended)
             * before the session's own resets, so a reset seen here is the
             * gateway's when it says so. */
            st->ops->on_reset(st, ev->error_code, ev->remote);
        }
        break;
    case FYP_EV_GOAWAY:
        conn_on_goaway(c, ev->u.goaway);
        break;
    case FYP_EV_PING_RTT:
        c->rtt_us = ev->rtt_us;
        break;
    default:
        break;
    }
}

static void link_on_event(fy_link *l, const fyp_event *ev)
{
    conn_event(fy_link_data(l), ev);
}

static void link_on_recv(fy_link *l, int rc)
{
    fy_rn_conn *c = fy_link_data(l);
    if (rc < 0 && rc != FY_ECLOSED) {
        /* GOAWAY with the error is queued: the link flushes, then ends. */
        json_t *f = json_object();
        json_add_common(f, c);
        json_object_set_new(f, "error", json_string(fyp_session_error_msg(c->sess)));
        fy_log_event(FY_LOG_WARN, "tunnel", "protocol error from the gateway", f);
    }
}

static void link_on_end(fy_link *l, const fy_link_end *end)
{
    fy_rn_conn *c = fy_link_data(l);
    if (c->closing) {
        return;
    }
    char why[320];
    int level = FY_LOG_WARN;
    switch (end->reason) {
    case FY_LINK_PEER_CLOSED:
        snprintf(why, sizeof why, "the gateway closed the connection%s",
                 end->err == FY_ECONNRESET ? " (reset)" : "");
        break;
    case FY_LINK_READ_FAILED:
        snprintf(why, sizeof why, "read failed: %s", end->msg);
        break;
    case FY_LINK_WRITE_FAILED:
        snprintf(why, sizeof why, "write to the gateway failed: %s", end->msg);
        break;
    case FY_LINK_HEARTBEAT:
        snprintf(why, sizeof why, "heartbeat timeout: %s", end->msg);
        break;
    case FY_LINK_FINISHED:
        if (fyp_session_dead(c->sess)) {
            snprintf(why, sizeof why, "session ended: %s", end->msg);
        } else {
            level = FY_LOG_INFO;
            snprintf(why, sizeof why, "drained");
        }
        break;
    default:
        level = c->close_level;
        snprintf(why, sizeof why, "%s", end->msg);
        break;
    }
    conn_ended(c, level, why);
}

static void link_on_free(fy_link *l)
{
    fy_rn_conn *c = fy_link_data(l);
    c->link = NULL;
    c->sess = NULL;
    conn_unref(c);
}

static const fy_link_ops conn_link_ops = {
    .on_event = link_on_event,
    .on_recv = link_on_recv,
    .on_end = link_on_end,
    .on_free = link_on_free,
};

/* --- dialing ---------------------------------------------------------------------- */

static void on_handshake(fy_stream *s, int status, void *arg)
{
    fy_rn_conn *c = arg;
    fy_rn_tunnel *t = c->t;
    if (c->closing) {
        return;
    }
    if (status) {
        char why[600];
        if (status == FY_ECERT) {
            snprintf(why, sizeof why,
                     "TLS handshake failed: certificate rejected (this runner's certificate was "
                     "refused by the gateway, or the gateway's does not chain to the enrolled "
                     "CA or is not valid for %s)",
                     c->gw->host);
        } else {
            snprintf(why, sizeof why, "TLS handshake failed: %s", fy_strerror(status));
        }
        conn_close(c, FY_LOG_WARN, why);
        return;
    }
    const char *alpn = fy_tls_alpn(s);
    if (!alpn || strcmp(alpn, "ferry/1") != 0) {
        conn_close(c, FY_LOG_ERROR,
                   "the gateway did not agree to the ferry/1 protocol (ALPN): is this its "
                   "tunnel listener?");
        return;
    }
    /* An upstream that lists models speaks the OpenAI API too. */
    static const char *const caps_up[] = {"upstream", "openai"};
    static const char *const caps_api[] = {"openai"};
    fy_link_config lc = {
        .loop = t->loop,
        .stream = s,
        .linger_ms = TN_CLOSE_GRACE_MS,
        .ops = &conn_link_ops,
        .data = c,
    };
    fyp_session_config *sc = &lc.session;
    sc->role = FYP_ROLE_RUNNER;
    fyp_settings_default(&sc->settings);
    uint64_t hb = t->o.heartbeat_timeout_ms / FYP_HEARTBEAT_MISSES;
    if (hb < FYP_MIN_HEARTBEAT_MS) {
        hb = FYP_MIN_HEARTBEAT_MS;
    }
    if (hb > FYP_MAX_HEARTBEAT_MS) {
        hb = FYP_MAX_HEARTBEAT_MS;
    }
    sc->settings.heartbeat_ms = (uint32_t)hb;
    sc->settings.initial_stream_window = FY_LINK_STREAM_WINDOW;
    if (t->o.max_streams) {
        sc->settings.max_concurrent_streams = t->o.max_streams;
    }
    sc->name = t->name;
    sc->caps = t->o.api ? caps_api : caps_up;
    sc->n_caps = t->o.api || t->o.n_models == 0 ? 1 : 2;
    c->gen = t->models_gen;
    sc->models = t->o.models;
    sc->n_models = t->o.n_models;
    int rc = fy_link_start(&lc, &c->link);
    if (rc) {
        s->data = c; /* still ours: conn_close closes it */
        conn_close(c, FY_LOG_ERROR, "cannot start the tunnel session");
        return;
    }
    c->s = NULL; /* the link's now, with the reference it held */
    c->sess = fy_link_session(c->link);
    c->state = C_HELLO;
}

static void on_tcp(fy_stream *s, int status, void *arg)
{
    fy_rn_conn *c = arg;
    fy_rn_tunnel *t = c->t;
    c->connecting = 0;
    if (c->closing) {
        if (s) {
            fy_stream_close(s, NULL);
        }
        conn_unref(c); /* the connect's reference */
        return;
    }
    if (status) {
        char why[160];
        snprintf(why, sizeof why, "cannot connect: %s", fy_strerror(status));
        conn_close(c, FY_LOG_WARN, why);
        return;
    }
    c->state = C_TLS;
    /* The connect's reference passes to the stream. */
    c->s = fy_tls_stream_new(t->o.tls, s, c->gw->host, on_handshake, c);
    if (!c->s) {
        conn_close(c, FY_LOG_ERROR, "out of memory");
        return;
    }
    c->s->data = c;
}

static void slot_connect(slot *sl)
{
    fy_rn_tunnel *t = sl->t;
    fy_rn_conn *c = calloc(1, sizeof *c);
    if (!c) {
        slot_schedule(sl, 0);
        return;
    }
    c->t = t;
    c->slot = sl;
    c->gw = sl->gw;
    c->seq = ++t->seq;
    snprintf(c->label, sizeof c->label, "%s#%u", c->gw->text, c->seq);
    c->streams.next = c->streams.prev = &c->streams;
    c->refs = 1; /* the connect in flight, then the stream, then the link */
    c->connecting = 1;
    t->nconns++;
    c->next = t->conns;
    if (t->conns) {
        t->conns->prev = c;
    }
    t->conns = c;
    sl->conn = c;
    const char *to = c->gw->addr[0] ? c->gw->addr : c->gw->host;
    int rc = fy_tcp_connect(t->loop, to, c->gw->port, TN_CONNECT_TIMEOUT_MS, on_tcp, c);
    if (rc) {
        char why[160];
        snprintf(why, sizeof why, "cannot connect: %s", fy_strerror(rc));
        c->connecting = 0;
        conn_close(c, FY_LOG_WARN, why);
    }
}

static void on_backoff(uv_timer_t *tm)
{
    slot *sl = tm->data;
    if (!sl->t->draining && !sl->conn) {
        slot_connect(sl);
    }
}

static void slot_schedule(slot *sl, int was_stable)
{
    fy_rn_tunnel *t = sl->t;
    if (t->draining) {
        return;
    }
    if (was_stable) {
        sl->attempts = 0;
    }
    uint64_t wait =
        fy_rn_backoff_ms(t->o.backoff_base_ms, t->o.backoff_max_ms, sl->attempts, random_unit());
    if (sl->attempts < 64) {
        sl->attempts++;
    }
    json_t *f = json_object();
    json_object_set_new(f, "gateway", json_string(sl->gw->text));
    json_object_set_new(f, "slot", json_integer(sl->idx));
    json_object_set_new(f, "attempt", json_integer(sl->attempts));
    json_object_set_new(f, "wait_ms", json_integer((json_int_t)wait));
    fy_log_event(FY_LOG_INFO, "tunnel", "reconnecting", f);
    uv_timer_start(&sl->backoff, on_backoff, wait, 0);
}

/* --- models ------------------------------------------------------------------------ */

/* A copy of V[0..N) in a new list. Returns 0, FY_EINVAL (an id breaking
 * HELLO's rules, a repeated one, or too many) or FY_ENOMEM. */
static int models_new(const char *const *v, size_t n, fy_rn_model_list **out)
{
    *out = NULL;
    fy_rn_model_list *l = calloc(1, sizeof *l);
    if (!l) {
        return FY_ENOMEM;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = v[i] ? strlen(v[i]) : 0;
        int ok =
            len >= 1 && len <= 255 && l->n < FYP_MAX_MODELS && used + len + 1 <= sizeof l->text;
        for (size_t j = 0; ok && j < len; j++) {
            ok = (unsigned char)v[i][j] >= 0x21 && (unsigned char)v[i][j] <= 0x7e;
        }
        for (size_t j = 0; ok && j < l->n; j++) {
            ok = strcmp(l->v[j], v[i]) != 0;
        }
        if (!ok) {
            free(l);
            return FY_EINVAL;
        }
        memcpy(l->text + used, v[i], len + 1);
        l->v[l->n++] = l->text + used;
        used += len + 1;
    }
    *out = l;
    return 0;
}

/* Replaces C (ready, announcing an old model list) by a new connection of its
 * slot, dialled now; C gets GOAWAY so the gateway routes nothing new to it,
 * and closes once its streams finished. */
static void conn_recycle(fy_rn_conn *c)
{
    fy_rn_tunnel *t = c->t;
    slot *sl = c->slot;
    if (!sl || t->draining || c->closing || !c->sess || fyp_session_dead(c->sess)) {
        return;
    }
    sl->conn = NULL;
    c->slot = NULL;
    fy_link_goaway(c->link, "the runner's models changed");
    json_t *f = json_object();
    json_add_common(f, c);
    fy_log_event(FY_LOG_INFO, "tunnel", "reconnecting to announce the new models", f);
    slot_connect(sl);
}

int fy_rn_tunnel_set_models(fy_rn_tunnel *t, const char *const *models, size_t n)
{
    fy_rn_model_list *l;
    int rc = models_new(models, n, &l);
    if (rc) {
        return rc;
    }
    int same = l->n == t->models->n;
    for (size_t i = 0; same && i < l->n; i++) {
        same = strcmp(l->v[i], t->models->v[i]) == 0;
    }
    if (same) {
        free(l);
        return 0;
    }
    free(t->models);
    t->models = l;
    t->o.models = l->v;
    t->o.n_models = l->n;
    t->models_gen++;
    if (t->draining) {
        return 0;
    }
    /* New connections go to the head of the list: walk the old ones only. */
    fy_rn_conn *next;
    for (fy_rn_conn *c = t->conns; c; c = next) {
        next = c->next;
        if (c->state == C_READY && c->gen != t->models_gen) {
            conn_recycle(c);
        }
    }
    return 0;
}

/* --- the tunnel ------------------------------------------------------------------ */

/* Appends HOST:PORT with ADDR ("" to dial by name) to the list. */
static int gws_add(gw_addr **v, size_t *n, const char *host, int port, const char *addr)
{
    if (*n >= FY_RN_MAX_GATEWAY_ADDRS) {
        return 0; /* enough ways down: the rest are not dialled */
    }
    gw_addr *nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (!nv) {
        return FY_ENOMEM;
    }
    *v = nv;
    gw_addr *g = &nv[(*n)++];
    memset(g, 0, sizeof *g);
    snprintf(g->host, sizeof g->host, "%s", host);
    g->port = port;
    size_t na = strnlen(addr, sizeof g->addr - 1);
    memcpy(g->addr, addr, na);
    g->addr[na] = '\0';
    if (na) {
        snprintf(g->text, sizeof g->text, "%.255s:%d (%.45s)", host, port, g->addr);
    } else {
        snprintf(g->text, sizeof g->text, "%.255s:%d", host, port);
    }
    return 0;
}

/* The distinct addresses NAME resolves to now, as text, in resolver order;
 * returns how many (0: it does not resolve now). */
static size_t resolve_all(const char *name, char (*out)[INET6_ADDRSTRLEN], size_t max)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    size_t n = 0;
    if (getaddrinfo(name, NULL, &hints, &res) != 0) {
        return 0;
    }
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        char text[INET6_ADDRSTRLEN];
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            !inet_ntop(ai->ai_family, a, text, sizeof text)) {
            continue;
        }
        size_t j = 0;
        while (j < n && strcmp(out[j], text) != 0) {
            j++;
        }
        if (j == n) {
            memcpy(out[n++], text, sizeof text);
        }
    }
    freeaddrinfo(res);
    return n;
}

/* One dial target per gateway address: a --gateway whose name resolves to
 * several addresses (several replicas behind one name) gets one for each,
 * so every replica has connections down to this runner. A name with one
 * address, or none right now, is dialled by name, resolved at each dial.
 * Resolved once, at start (the runner's start may wait on DNS; requests
 * never do). */
static int gws_expand(const char *const *gateways, size_t n, gw_addr **out, size_t *nout)
{
    gw_addr *v = NULL;
    size_t nv = 0;
    int rc = n ? 0 : FY_EINVAL;
    for (size_t i = 0; !rc && i < n; i++) {
        char host[256], addrs[FY_RN_MAX_GATEWAY_ADDRS][INET6_ADDRSTRLEN];
        unsigned char bin[16];
        int port;
        if (fy_rn_hostport_parse(gateways[i], host, sizeof host, &port)) {
            rc = FY_EINVAL;
            break;
        }
        size_t na = inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1
                        ? 0
                        : resolve_all(host, addrs, FY_RN_MAX_GATEWAY_ADDRS);
        if (na < 2) {
            rc = gws_add(&v, &nv, host, port, "");
        }
        for (size_t j = 0; na >= 2 && !rc && j < na; j++) {
            rc = gws_add(&v, &nv, host, port, addrs[j]);
        }
    }
    if (rc) {
        free(v);
        return rc;
    }
    *out = v;
    *nout = nv;
    return 0;
}

int fy_rn_tunnel_new(uv_loop_t *loop, const fy_rn_tunnel_options *o, fy_rn_tunnel **out)
{
    *out = NULL;
    if (!o->name || !*o->name || strlen(o->name) >= FY_RN_NAME_MAX || o->ngateways == 0 ||
        !o->tls || !o->opener.open) {
        return FY_EINVAL;
    }
    fy_rn_tunnel *t = calloc(1, sizeof *t);
    if (!t) {
        return FY_ENOMEM;
    }
    t->loop = loop;
    t->o = *o;
    snprintf(t->name, sizeof t->name, "%s", o->name);
    int rc = models_new(o->models, o->n_models, &t->models);
    if (rc) {
        free(t);
        return rc;
    }
    t->o.models = t->models->v;
    t->o.n_models = t->models->n;
    if (!t->o.backoff_base_ms) {
        t->o.backoff_base_ms = 500;
    }
    if (!t->o.backoff_max_ms) {
        t->o.backoff_max_ms = 30000;
    }
    if (!t->o.stable_ms) {
        t->o.stable_ms = 10000;
    }
    if (!t->o.heartbeat_timeout_ms) {
        t->o.heartbeat_timeout_ms = 30000;
    }
    t->nslots = o->connections ? o->connections : 2;
    if ((rc = gws_expand(o->gateways, o->ngateways, &t->gws, &t->ngws))) {
        free(t->models);
        free(t);
        return rc;
    }
    if (t->nslots < t->ngws) {
        t->nslots = (unsigned)t->ngws; /* at least one per gateway address */
    }
    t->slots = calloc(t->nslots, sizeof *t->slots);
    if (!t->slots) {
        free(t->gws);
        free(t->models);
        free(t);
        return FY_ENOMEM;
    }
    uv_timer_init(loop, &t->drain_timer);
    t->drain_timer.data = t;
    t->handles = 1;
    for (unsigned i = 0; i < t->nslots; i++) {
        slot *sl = &t->slots[i];
        sl->t = t;
        sl->idx = i;
        sl->gw = &t->gws[i % t->ngws];
        uv_timer_init(loop, &sl->backoff);
        sl->backoff.data = sl;
        t->handles++;
    }
    for (unsigned i = 0; i < t->nslots; i++) {
        slot_connect(&t->slots[i]);
    }
    *out = t;
    return 0;
}

unsigned fy_rn_tunnel_ready_count(const fy_rn_tunnel *t)
{
    unsigned n = 0;
    for (const fy_rn_conn *c = t->conns; c; c = c->next) {
        n += c->state == C_READY && c->slot && c->sess && fyp_session_ready(c->sess);
    }
    return n;
}

static void tunnel_handle_closed(fy_rn_tunnel *t)
{
    t->handles--;
    tunnel_check_done(t);
}

static void drain_timer_closed(uv_handle_t *h)
{
    tunnel_handle_closed(h->data);
}

static void backoff_timer_closed(uv_handle_t *h)
{
    tunnel_handle_closed(((slot *)h->data)->t);
}

static void tunnel_check_done(fy_rn_tunnel *t)
{
    if (!t->draining || t->done) {
        return;
    }
    if (t->conns == NULL && t->handles > 0 && !uv_is_closing((uv_handle_t *)&t->drain_timer)) {
        uv_close((uv_handle_t *)&t->drain_timer, drain_timer_closed);
        for (unsigned i = 0; i < t->nslots; i++) {
            uv_close((uv_handle_t *)&t->slots[i].backoff, backoff_timer_closed);
        }
        return;
    }
    if (t->conns == NULL && t->nconns == 0 && t->handles == 0) {
        t->done = 1;
        if (t->done_cb) {
            t->done_cb(t, t->done_arg);
        }
    }
}

static void on_drain_timeout(uv_timer_t *tm)
{
    fy_rn_tunnel *t = tm->data;
    fy_log_event(FY_LOG_WARN, "tunnel", "drain timeout: cancelling the streams still running",
                 NULL);
    while (t->conns) {
        conn_close(t->conns, FY_LOG_INFO, "drain timeout");
    }
}

void fy_rn_tunnel_drain(fy_rn_tunnel *t, uint64_t timeout_ms, fy_rn_tunnel_done_cb cb, void *arg)
{
    if (t->draining) {
        /* Asked again (a second signal): cut the wait short. */
        if (!t->done && !uv_is_closing((uv_handle_t *)&t->drain_timer)) {
            uv_timer_stop(&t->drain_timer);
            uv_timer_start(&t->drain_timer, on_drain_timeout, timeout_ms, 0);
        }
        return;
    }
    t->draining = 1;
    t->done_cb = cb;
    t->done_arg = arg;
    for (unsigned i = 0; i < t->nslots; i++) {
        uv_timer_stop(&t->slots[i].backoff);
    }
    fy_rn_conn *next;
    for (fy_rn_conn *c = t->conns; c; c = next) {
        next = c->next;
        if (c->state == C_READY && !fyp_session_dead(c->sess)) {
            fy_link_goaway(c->link, "runner shutting down");
        } else {
            conn_close(c, FY_LOG_INFO, "shutting down");
        }
    }
    uv_timer_start(&t->drain_timer, on_drain_timeout, timeout_ms, 0);
    tunnel_check_done(t);
}

void fy_rn_tunnel_free(fy_rn_tunnel *t)
{
    if (!t) {
        return;
    }
    free(t->gws);
    free(t->slots);
    free(t->models);
    free(t);
}
