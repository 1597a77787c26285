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
 * A session's I/O (end-of-turn writes, backpressure, heartbeat ticks, the
 * close and its linger) is common/link: this file only decides what the
 * session's events mean here. Before the handshake ends, the connection
 * holds its TLS stream itself; after it, the link does. */
#include "gateway/gateway.h"
#include "gateway/tstream.h"

#include "common/link/link.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/limits.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TUN_LOG "tunnel"

/* --- lifetime ---------------------------------------------------------------- */

static void conn_free(gw_conn *c)
{
    fy_gw *gw = c->gw;
    if (c->prev) {
        c->prev->next = c->next;
    } else if (gw->tun.conns == c) {
        gw->tun.conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    gw->tun.n_tunnel--;
    free(c);
}

static void conn_stream_closed(fy_stream *s)
{
    conn_free(s->data);
}

/* Closes a connection still in its TLS handshake (it has no link yet). */
static void conn_close_stream(gw_conn *c)
{
    if (c->s && !c->closing) {
        c->closing = c->draining = 1;
        fy_stream_close(c->s, conn_stream_closed);
    }
}

/* --- registry ------------------------------------------------------------------ */

gw_runner *fy_gw_runner_find(fy_gw *gw, const char *name)
{
    for (gw_runner *r = gw->tun.runners; r; r = r->next) {
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
        r->next = gw->tun.runners;
        gw->tun.runners = r;
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
    for (gw_runner **pp = &gw->tun.runners; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    free(r);
}

void fy_gw_tunnel_subscribe(fy_gw *gw, gw_tun_sub *sub)
{
    sub->next = gw->tun.subs;
    gw->tun.subs = sub;
}

void fy_gw_tunnel_publish(fy_gw *gw, gw_tun_news news)
{
    for (gw_tun_sub *s = gw->tun.subs; s; s = s->next) {
        s->fn(gw, news, s->arg);
    }
}

size_t fy_gw_tunnel_connected(const fy_gw *gw)
{
    size_t n = 0;
    for (const gw_runner *r = gw->tun.runners; r; r = r->next) {
        n += r->n_conns;
    }
    return n;
}

static json_t *conn_fields(const gw_conn *c)
{
    return json_pack("{s:s,s:I,s:s}", "runner", c->cn[0] ? c->cn : "-", "conn", (json_int_t)c->id,
                     "peer", c->peer);
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

static void conn_on_event(fy_link *l, const fyp_event *ev)
{
    gw_conn *c = fy_link_data(l);
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
            fyp_session_consume(c->sess, ev->stream_id, ev->u.data.len);
        }
        break;
    }
}

static void conn_on_recv(fy_link *l, int rc)
{
    gw_conn *c = fy_link_data(l);
    fy_gw_tunnel_publish(c->gw, GW_TUN_SLOT_FREED); /* an RST ACK, say, frees one */
    if (rc < 0 && rc != FY_ECLOSED && !c->closing) {
        json_t *f = conn_fields(c);
        json_object_set_new(f, "error", json_string(fyp_session_error_msg(c->sess)));
        fy_log_event(FY_LOG_WARN, TUN_LOG, "tunnel protocol error", f);
    }
}

/* The link ended: route nothing more here, and say why when it is news. */
static void conn_on_end(fy_link *l, const fy_link_end *end)
{
    gw_conn *c = fy_link_data(l);
    int was_local = c->closing; /* fy_gw_tunnel_* asked */
    c->closing = c->draining = 1;
    int had = c->runner != NULL;
    registry_remove(c);
    if (was_local) {
        return;
    }
    json_t *f = conn_fields(c);
    switch (end->reason) {
    case FY_LINK_PEER_CLOSED:
    case FY_LINK_READ_FAILED:
        json_object_set_new(f, "reason", json_string(fy_err_name(end->err)));
        fy_log_event(had ? FY_LOG_INFO : FY_LOG_DEBUG, TUN_LOG, "tunnel connection ended", f);
        return;
    case FY_LINK_WRITE_FAILED:
        json_object_set_new(f, "error", json_string(fy_err_name(end->err)));
        fy_log_event(FY_LOG_INFO, TUN_LOG, "tunnel write failed", f);
        return;
    case FY_LINK_HEARTBEAT:
        json_object_set_new(f, "error", json_string(end->msg));
        fy_log_event(FY_LOG_WARN, TUN_LOG, "runner heartbeat timeout", f);
        return;
    default:
        json_decref(f); /* drained, refused or a protocol error: logged already */
        return;
    }
}

static void conn_on_free(fy_link *l)
{
    conn_free(fy_link_data(l));
}

static const fy_link_ops conn_link_ops = {
    .on_event = conn_on_event,
    .on_recv = conn_on_recv,
    .on_end = conn_on_end,
    .on_free = conn_on_free,
};

void fy_gw_conn_kick(gw_conn *c)
{
    if (c) {
        fy_link_kick(c->link);
    }
}

/* The handshake chose ferry/1 with a client certificate: the TLS stream
 * becomes the session's link. */
static int conn_start_session(gw_conn *c, const fy_tls_peer *peer)
{
    fy_gw *gw = c->gw;
    snprintf(c->cn, sizeof c->cn, "%s", peer->cn);
    memcpy(c->fingerprint, "sha256:", 7);
    fy_hex_encode(peer->fingerprint, sizeof peer->fingerprint, c->fingerprint + 7,
                  sizeof c->fingerprint - 7);
    fy_link_config lc = {
        .loop = gw->loop,
        .stream = c->s,
        .session = {.role = FYP_ROLE_GATEWAY, .name = "ferry-gateway"},
        .linger_ms = FY_GW_CLOSE_LINGER_MS,
        .ops = &conn_link_ops,
        .data = c,
    };
    fyp_settings_default(&lc.session.settings);
    lc.session.settings.heartbeat_ms = (uint32_t)gw->opt.heartbeat_ms;
    lc.session.settings.initial_stream_window = FY_LINK_STREAM_WINDOW;
    int rc = fy_link_start(&lc, &c->link);
    if (rc) {
        c->s->data = c; /* still ours: closed by the caller */
        return rc;
    }
    c->s = NULL;
    c->sess = fy_link_session(c->link);
    return 0;
}

static void conn_on_handshake(fy_stream *tls, int status, void *arg)
{
    gw_conn *c = arg;
    fy_gw *gw = c->gw;
    if (c->closing) {
        return;
    }
    if (status) {
        fy_log_event(FY_LOG_INFO, TUN_LOG, "tunnel TLS handshake failed",
                     json_pack("{s:s,s:s}", "peer", c->peer, "error", fy_strerror(status)));
        conn_close_stream(c);
        return;
    }
    const char *alpn = fy_tls_alpn(tls);
    if (!alpn || strcmp(alpn, FY_GW_ALPN_TUNNEL) != 0) {
        /* Enrollment: the stream now belongs to the enrollment server. */
        c->s = NULL;
        tls->data = NULL;
        tls->on_read = NULL;
        fy_http_server_attach(gw->net.enroll_srv, tls);
        conn_free(c);
        return;
    }
    fy_tls_peer peer;
    if (fy_tls_peer_get(tls, &peer) != 0 || !peer.present || !peer.cn[0]) {
        fy_log_event(FY_LOG_WARN, TUN_LOG, "tunnel refused: no client certificate",
                     json_pack("{s:s}", "peer", c->peer));
        conn_close_stream(c);
        return;
    }
    int rc = conn_start_session(c, &peer);
    if (rc) {
        fy_log_event(FY_LOG_ERROR, TUN_LOG, "cannot start a tunnel session",
                     json_pack("{s:s,s:s}", "peer", c->peer, "error", fy_strerror(rc)));
        conn_close_stream(c);
    }
}

void fy_gw_tunnel_accept(fy_gw *gw, fy_stream *tcp)
{
    /* A stranger can open connections without finishing a handshake (each
     * is bounded by the TLS handshake timeout); their number is bounded too. */
    gw_conn *c = gw->tun.n_tunnel < FY_GW_MAX_TUNNEL_CONNS ? calloc(1, sizeof *c) : NULL;
    if (!c) {
        fy_stream_close(tcp, NULL);
        return;
    }
    c->gw = gw;
    c->id = ++gw->tun.next_conn_id;
    c->since = (int64_t)time(NULL);
    fy_stream_peer_name(tcp, c->peer, sizeof c->peer);
    fy_stream *s = fy_tls_stream_new(gw->net.tls_tunnel, tcp, NULL, conn_on_handshake, c);
    if (!s) {
        free(c);
        return;
    }
    c->s = s;
    s->data = c;
    gw->tun.n_tunnel++;
    c->next = gw->tun.conns;
    if (gw->tun.conns) {
        gw->tun.conns->prev = c;
    }
    gw->tun.conns = c;
}

/* --- gateway-wide operations ----------------------------------------------------- */

int fy_gw_tunnel_drop_runner(fy_gw *gw, const char *name, uint32_t code, const char *reason)
{
    int n = 0;
    for (gw_conn *c = gw->tun.conns; c; c = c->next) {
        if (!c->closing && c->link && strcmp(c->cn, name) == 0) {
            c->closing = 1; /* the caller logs why */
            fy_link_close(c->link, code, reason);
            n++;
        }
    }
    return n;
}

int fy_gw_tunnel_drop_stale(fy_gw *gw, const char *name, const char *fingerprint)
{
    int n = 0;
    for (gw_conn *c = gw->tun.conns; c; c = c->next) {
        if (!c->closing && c->link && strcmp(c->cn, name) == 0 &&
            strcmp(c->fingerprint, fingerprint) != 0) {
            c->closing = 1;
            fy_link_close(c->link, FYP_ERR_REJECTED, "runner enrolled again");
            n++;
        }
    }
    return n;
}

void fy_gw_tunnel_goaway_all(fy_gw *gw)
{
    for (gw_conn *c = gw->tun.conns; c; c = c->next) {
        if (c->closing) {
            continue;
        }
        if (!c->link) {
            conn_close_stream(c); /* still in the TLS handshake */
            continue;
        }
        c->draining = 1;
        fy_link_goaway(c->link, "gateway shutting down");
    }
}

void fy_gw_tunnel_close_all(fy_gw *gw)
{
    for (gw_conn *c = gw->tun.conns; c; c = c->next) {
        if (c->link) {
            c->closing = 1;
            fy_link_abort(c->link, "connection closed");
        } else {
            conn_close_stream(c);
        }
    }
}
