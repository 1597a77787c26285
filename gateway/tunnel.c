/* tunnel.c: runners' tunnel connections, their sessions and the registry.
 *
 * A connection on the tunnel listener is TLS with an optional client
 * certificate. ALPN ferry/1 with a certificate from the runner CA becomes a
 * tunnel session (proto/session.h); anything else is handed to the
 * enrollment HTTP server. A session's runner is accepted at HELLO: its name
 * must be the certificate's CN, and the certificate must be the one the store
 * holds for that runner, not revoked. Accepted connections join the registry
 * (runner name -> connections), which the public proxy picks from.
 *
 * Output: session calls queue frames into the session's output buffer; the
 * connection is marked dirty and a uv_check handle writes every dirty
 * connection's output once per loop turn (a copy per write, since the
 * session's buffer moves on its next call). Writes stop above the stream's
 * high watermark and resume from the write callback, so a runner that does
 * not read makes the session output grow only as far as the flow-control
 * windows allow. */
#include "gateway/gateway.h"
#include "gateway/tstream.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/limits.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TUN_LOG "tunnel"

typedef struct {
    gw_conn *c;
    char data[];
} conn_wbuf;

static void conn_hard_close(gw_conn *c);
static void conn_on_tick(uv_timer_t *t);
static void conn_begin_close(gw_conn *c, uint32_t code, const char *reason);

/* --- lifetime ---------------------------------------------------------------- */

static void conn_unref(gw_conn *c)
{
    if (--c->refs > 0) {
        return;
    }
    fy_gw *gw = c->gw;
    if (c->prev) {
        c->prev->next = c->next;
    } else if (gw->conns == c) {
        gw->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    fyp_session_free(c->sess);
    gw->n_tunnel--;
    free(c);
}

static void conn_stream_closed(fy_stream *s)
{
    conn_unref(s->data);
}

static void conn_timer_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

/* --- registry ------------------------------------------------------------------ */

gw_runner *fy_gw_runner_find(fy_gw *gw, const char *name)
{
    for (gw_runner *r = gw->runners; r; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            return r;
        }
    }
    return NULL;
}

static int registry_add(gw_conn *c)
{
    fy_gw *gw = c->gw;
    gw_runner *r = fy_gw_runner_find(gw, c->cn);
    if (!r) {
        size_t n = strlen(c->cn); /* a runner name (checked at the handshake) */
        if (n >= sizeof r->name) {
            return FY_EINVAL;
        }
        r = calloc(1, sizeof *r);
        if (!r) {
            return FY_ENOMEM;
        }
        memcpy(r->name, c->cn, n + 1);
        r->next = gw->runners;
        gw->runners = r;
        fy_metric_add(gw->metrics.connected_runners, NULL, 1);
    }
    c->rnext = r->conns;
    r->conns = c;
    r->n_conns++;
    c->runner = r;
    fy_metric_add(gw->metrics.tunnel_connections, NULL, 1);
    return 0;
}

static void registry_remove(gw_conn *c)
{
    gw_runner *r = c->runner;
    if (!r) {
        return;
    }
    c->runner = NULL;
    for (gw_conn **pp = &r->conns; *pp; pp = &(*pp)->rnext) {
        if (*pp == c) {
            *pp = c->rnext;
            break;
        }
    }
    c->rnext = NULL;
    fy_gw_models_remove(c);
    fy_gw *gw = c->gw;
    fy_metric_add(gw->metrics.tunnel_connections, NULL, -1);
    if (--r->n_conns > 0) {
        return;
    }
    fy_metric_add(gw->metrics.connected_runners, NULL, -1);
    for (gw_runner **pp = &gw->runners; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    free(r);
}

void fy_gw_tunnel_subscribe(fy_gw *gw, gw_tun_sub *sub)
{
    sub->next = gw->tun_subs;
    gw->tun_subs = sub;
}

void fy_gw_tunnel_publish(fy_gw *gw, gw_tun_news news)
{
    for (gw_tun_sub *s = gw->tun_subs; s; s = s->next) {
        s->fn(gw, news, s->arg);
    }
}

size_t fy_gw_tunnel_connected(const fy_gw *gw)
{
    size_t n = 0;
    for (const gw_runner *r = gw->runners; r; r = r->next) {
        n += r->n_conns;
    }
    return n;
}

static json_t *conn_fields(const gw_conn *c)
{
    return json_pack("{s:s,s:I,s:s}", "runner", c->cn[0] ? c->cn : "-", "conn", (json_int_t)c->id,
                     "peer", c->peer);
}

/* --- output ----------------------------------------------------------------------- */

static void conn_write_done(fy_stream *s, int status, void *arg)
{
    conn_wbuf *w = arg;
    gw_conn *c = w->c;
    (void)s;
    free(w);
    if (status < 0 && !c->hard) {
        if (!c->closing) {
            fy_log_event(FY_LOG_INFO, TUN_LOG, "tunnel write failed",
                         json_pack("{s:s,s:I,s:s}", "runner", c->cn, "conn", (json_int_t)c->id,
                                   "error", fy_err_name(status)));
        }
        conn_hard_close(c);
    } else if (!c->hard) {
        fy_gw_conn_kick(c);
    }
    conn_unref(c);
}

/* Writes as much pending output as the stream's watermark allows. */
static void conn_flush(gw_conn *c)
{
    while (!c->hard && !c->closing && c->sess && fyp_session_output_size(c->sess) > 0) {
        if (fy_stream_write_queue_size(c->s) >= FY_STREAM_HIGH_WATERMARK) {
            return; /* conn_write_done flushes again */
        }
        fy_slice out;
        size_t n = fyp_session_output(c->sess, &out);
        conn_wbuf *w = malloc(sizeof *w + n);
        if (!w) {
            conn_hard_close(c);
            return;
        }
        w->c = c;
        memcpy(w->data, out.base, n);
        fy_slice sl = {w->data, n};
        int rc = fy_stream_write(c->s, &sl, 1, conn_write_done, w);
        if (rc == FY_EAGAIN) {
            free(w);
            return;
        }
        if (rc) {
            free(w);
            conn_hard_close(c);
            return;
        }
        c->refs++;
        fyp_session_output_consume(c->sess, n);
    }
}

/* Flushes, then closes when the session is done. */
static void conn_service(gw_conn *c)
{
    if (c->hard || !c->sess) {
        return;
    }
    conn_flush(c);
    if (!c->hard && !c->closing && fyp_session_want_close(c->sess)) {
        conn_begin_close(c, FYP_ERR_NONE, NULL);
    }
}

static void on_flush_check(uv_check_t *h)
{
    fy_gw *gw = h->data;
    while (gw->dirty) {
        gw_conn *c = gw->dirty;
        gw->dirty = c->dnext;
        c->dnext = NULL;
        c->dirty = 0;
        conn_service(c);
        conn_unref(c);
    }
    uv_check_stop(h);
    uv_idle_stop(&gw->flush_idle);
}

static void on_flush_idle(uv_idle_t *h)
{
    (void)h; /* only there to make the poll phase return at once */
}

void fy_gw_conn_kick(gw_conn *c)
{
    if (!c || c->dirty || c->hard || !c->sess) {
        return;
    }
    fy_gw *gw = c->gw;
    c->dirty = 1;
    c->refs++;
    c->dnext = gw->dirty;
    gw->dirty = c;
    uv_check_start(&gw->flush_check, on_flush_check);
    /* A kick from a timer, idle or pending callback comes before the poll
     * phase: an active idle handle keeps poll from blocking until then. */
    uv_idle_start(&gw->flush_idle, on_flush_idle);
}

/* --- closing ------------------------------------------------------------------------ */

/* Closes the handles now; streams still open get their reset events first. */
static void conn_hard_close(gw_conn *c)
{
    if (c->hard) {
        return;
    }
    c->hard = 1;
    c->closing = 1;
    c->draining = 1;
    registry_remove(c);
    if (c->sess && !fyp_session_dead(c->sess)) {
        fyp_session_terminate(c->sess, FYP_ERR_INTERNAL, "connection closed");
    }
    if (c->timer_init) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, conn_timer_closed);
    }
    if (c->s) {
        fy_stream_close(c->s, conn_stream_closed);
    }
}

/* Graceful close: ends the session (GOAWAY CODE unless NONE), flushes, sends
 * close_notify + FIN, then waits briefly for the runner's end. */
static void conn_begin_close(gw_conn *c, uint32_t code, const char *reason)
{
    if (c->closing || c->hard) {
        return;
    }
    c->draining = 1;
    registry_remove(c);
    if (c->sess && code != FYP_ERR_NONE) {
        fyp_session_terminate(c->sess, code, reason);
    }
    conn_flush(c);
    if (c->hard) {
        return;
    }
    c->closing = 1;
    if (!c->timer_init || fy_stream_shutdown(c->s) != 0) {
        conn_hard_close(c);
        return;
    }
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, conn_on_tick, FY_GW_CLOSE_LINGER_MS, 0);
}

/* --- sessions ---------------------------------------------------------------------- */

static const char *hello_refusal(gw_conn *c, const fyp_hello *h)
{
    if (h->name.len != strlen(c->cn) || memcmp(h->name.base, c->cn, h->name.len) != 0) {
        return "HELLO name does not match the client certificate";
    }
    fy_store_runner r;
    int rc = fy_store_runner_get(c->gw->store, c->cn, &r);
    if (rc == FY_ENOENT) {
        return "runner is not enrolled";
    }
    if (rc) {
        return "store error";
    }
    if (r.revoked_at) {
        return "runner is revoked";
    }
    if (strcmp(r.fingerprint, c->fingerprint) != 0) {
        return "certificate is not the runner's current one (enrolled again?)";
    }
    return NULL;
}

static void conn_on_hello(gw_conn *c, const fyp_event *ev)
{
    const char *why = c->gw->draining ? "gateway is shutting down" : hello_refusal(c, ev->u.hello);
    if (why) {
        json_t *f = conn_fields(c);
        json_object_set_new(f, "reason", json_string(why));
        fy_log_event(FY_LOG_WARN, TUN_LOG, "runner refused", f);
        fyp_session_terminate(c->sess, FYP_ERR_REJECTED, why);
        return;
    }
    const fyp_hello *h = ev->u.hello;
    if (registry_add(c) || fy_gw_models_add(c, h->models, h->n_models)) {
        fyp_session_terminate(c->sess, FYP_ERR_INTERNAL, "out of memory");
        return;
    }
    fy_gw_tunnel_publish(c->gw, GW_TUN_RUNNER_CONNECTED); /* work may wait for it */
    json_t *f = conn_fields(c);
    json_t *models = json_array();
    for (size_t i = 0; i < c->n_models; i++) {
        json_array_append_new(models, json_string(c->models[i]));
    }
    json_object_set_new(f, "models", json_integer((json_int_t)h->n_models));
    json_object_set_new(f, "model_names", models);
    json_object_set_new(f, "version", json_integer(ev->version));
    fy_log_event(FY_LOG_INFO, TUN_LOG, "runner connected", f);
}

static void conn_on_event(fyp_session *s, const fyp_event *ev, void *data)
{
    gw_conn *c = data;
    switch (ev->type) {
    case FYP_EV_HELLO:
        conn_on_hello(c, ev);
        break;
    case FYP_EV_GOAWAY: {
        c->draining = 1;
        json_t *f = conn_fields(c);
        json_object_set_new(f, "code", json_string(fyp_errcode_name(ev->u.goaway->error_code)));
        fy_log_event(FY_LOG_INFO, TUN_LOG, "runner sent GOAWAY", f);
        break;
    }
    case FYP_EV_PING_RTT:
        c->rtt_us = ev->rtt_us;
        break;
    case FYP_EV_REQUEST:
        break; /* runner-side event; the session never emits it here */
    default:
        if (ev->stream_data) {
            gw_ts *ts = ev->stream_data;
            if (ts->conn == c && ts->id == ev->stream_id) {
                ts->ops->on_event(ts, ev);
            }
        } else if (ev->type == FYP_EV_DATA && ev->u.data.len) {
            /* A stream whose public side is gone: return the credit. */
            fyp_session_consume(s, ev->stream_id, ev->u.data.len);
        }
        break;
    }
    fy_gw_conn_kick(c);
}

static void conn_on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    gw_conn *c = s->data;
    if (c->hard || !c->sess) {
        return;
    }
    if (n < 0) {
        if (!c->closing) {
            int had = c->runner != NULL;
            json_t *f = conn_fields(c);
            json_object_set_new(f, "reason", json_string(fy_err_name((int)n)));
            fy_log_event(had ? FY_LOG_INFO : FY_LOG_DEBUG, TUN_LOG, "tunnel connection ended", f);
        }
        fyp_session_recv_eof(c->sess);
        conn_hard_close(c);
        return;
    }
    int rc = fyp_session_recv(c->sess, buf->base, (size_t)n);
    fy_gw_tunnel_publish(c->gw, GW_TUN_SLOT_FREED); /* an RST ACK, say, frees one */
    if (rc < 0 && rc != FY_ECLOSED && !c->closing) {
        json_t *f = conn_fields(c);
        json_object_set_new(f, "error", json_string(fyp_session_error_msg(c->sess)));
        fy_log_event(FY_LOG_WARN, TUN_LOG, "tunnel protocol error", f);
    }
    fy_gw_conn_kick(c);
}

static void conn_on_tick(uv_timer_t *t)
{
    gw_conn *c = t->data;
    if (c->closing) {
        conn_hard_close(c); /* the linger after our FIN ran out */
        return;
    }
    int rc = fyp_session_tick(c->sess);
    if (rc == FY_ETIMEDOUT) {
        json_t *f = conn_fields(c);
        json_object_set_new(f, "error", json_string(fyp_session_error_msg(c->sess)));
        fy_log_event(FY_LOG_WARN, TUN_LOG, "runner heartbeat timeout", f);
    }
    uint64_t every = fyp_session_heartbeat_ms(c->sess) / 4;
    if (every < 50) {
        every = 50;
    }
    if (uv_timer_get_repeat(t) != every) {
        uv_timer_set_repeat(t, every);
    }
    fy_gw_conn_kick(c);
}

static int conn_start_session(gw_conn *c, const fy_tls_peer *peer)
{
    fy_gw *gw = c->gw;
    snprintf(c->cn, sizeof c->cn, "%s", peer->cn);
    memcpy(c->fingerprint, "sha256:", 7);
    fy_hex_encode(peer->fingerprint, sizeof peer->fingerprint, c->fingerprint + 7,
                  sizeof c->fingerprint - 7);
    fyp_session_config cfg = {
        .role = FYP_ROLE_GATEWAY,
        .name = "ferry-gateway",
        .on_event = conn_on_event,
        .data = c,
    };
    fyp_settings_default(&cfg.settings);
    cfg.settings.heartbeat_ms = (uint32_t)gw->heartbeat_ms;
    int rc = fyp_session_new(&cfg, &c->sess);
    if (rc) {
        return rc;
    }
    uv_timer_init(gw->loop, &c->timer);
    c->timer.data = c;
    c->timer_init = 1;
    c->refs++;
    uint64_t every = gw->heartbeat_ms / 4 ? gw->heartbeat_ms / 4 : 50;
    uv_timer_start(&c->timer, conn_on_tick, every, every);
    return fy_stream_read_start(c->s);
}

static void conn_on_handshake(fy_stream *tls, int status, void *arg)
{
    gw_conn *c = arg;
    fy_gw *gw = c->gw;
    if (c->hard) {
        return;
    }
    if (status) {
        fy_log_event(FY_LOG_INFO, TUN_LOG, "tunnel TLS handshake failed",
                     json_pack("{s:s,s:s}", "peer", c->peer, "error", fy_strerror(status)));
        conn_hard_close(c);
        return;
    }
    const char *alpn = fy_tls_alpn(tls);
    if (!alpn || strcmp(alpn, FY_GW_ALPN_TUNNEL) != 0) {
        /* Enrollment: the stream now belongs to the enrollment server. */
        c->s = NULL;
        tls->data = NULL;
        tls->on_read = NULL;
        c->hard = 1;
        fy_http_server_attach(gw->enroll_srv, tls);
        conn_unref(c);
        return;
    }
    fy_tls_peer peer;
    if (fy_tls_peer_get(tls, &peer) != 0 || !peer.present || !peer.cn[0]) {
        fy_log_event(FY_LOG_WARN, TUN_LOG, "tunnel refused: no client certificate",
                     json_pack("{s:s}", "peer", c->peer));
        conn_hard_close(c);
        return;
    }
    int rc = conn_start_session(c, &peer);
    if (rc) {
        fy_log_event(FY_LOG_ERROR, TUN_LOG, "cannot start a tunnel session",
                     json_pack("{s:s,s:s}", "peer", c->peer, "error", fy_strerror(rc)));
        conn_hard_close(c);
    }
}

void fy_gw_tunnel_accept(fy_gw *gw, fy_stream *tcp)
{
    /* A stranger can open connections without finishing a handshake (each
     * is bounded by the TLS handshake timeout); their number is bounded too. */
    gw_conn *c = gw->n_tunnel < FY_GW_MAX_TUNNEL_CONNS ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        fy_stream_close(tcp, NULL);
        return;
    }
    c->gw = gw;
    c->id = ++gw->next_conn_id;
    c->since = (int64_t)time(NULL);
    fy_stream_peer_name(tcp, c->peer, sizeof c->peer);
    fy_stream *s = fy_tls_stream_new(gw->tls_tunnel, tcp, NULL, conn_on_handshake, c);
    if (!s) {
        free(c);
        return;
    }
    c->s = s;
    s->data = c;
    s->on_read = conn_on_read;
    c->refs = 1;
    gw->n_tunnel++;
    c->next = gw->conns;
    if (gw->conns) {
        gw->conns->prev = c;
    }
    gw->conns = c;
}

/* --- gateway-wide operations ----------------------------------------------------- */

int fy_gw_tunnel_init(fy_gw *gw)
{
    int rc = uv_check_init(gw->loop, &gw->flush_check);
    if (!rc) {
        rc = uv_idle_init(gw->loop, &gw->flush_idle);
        if (rc) {
            uv_close((uv_handle_t *)&gw->flush_check, NULL);
        }
    }
    gw->flush_check.data = gw;
    return fy_err_from_uv(rc);
}

int fy_gw_tunnel_drop_runner(fy_gw *gw, const char *name, uint32_t code, const char *reason)
{
    int n = 0;
    for (gw_conn *c = gw->conns; c; c = c->next) {
        if (!c->closing && c->sess && strcmp(c->cn, name) == 0) {
            conn_begin_close(c, code, reason);
            n++;
        }
    }
    return n;
}

void fy_gw_tunnel_goaway_all(fy_gw *gw)
{
    for (gw_conn *c = gw->conns; c; c = c->next) {
        if (c->closing) {
            continue;
        }
        if (!c->sess) {
            conn_hard_close(c); /* still in the TLS handshake */
            continue;
        }
        c->draining = 1;
        fyp_session_goaway(c->sess, FYP_ERR_NONE, "gateway shutting down");
        fy_gw_conn_kick(c);
    }
}

void fy_gw_tunnel_close_all(fy_gw *gw)
{
    for (gw_conn *c = gw->conns; c; c = c->next) {
        conn_hard_close(c);
    }
    if (gw->flush_check.loop && !uv_is_closing((uv_handle_t *)&gw->flush_check)) {
        /* Dirty connections keep a reference until the check runs; run it
         * now so they can be freed. */
        on_flush_check(&gw->flush_check);
        uv_close((uv_handle_t *)&gw->flush_check, NULL);
        uv_close((uv_handle_t *)&gw->flush_idle, NULL);
    }
}
