/* px.c: a public request proxied down a tunnel stream: the core raw.c,
 * v1.c and hooks.c are built on (px.h).
 *
 * Admission helpers, in the order the kinds use them: the API key
 * (gateway/keys.h: 401 when missing, malformed, unknown, revoked or expired;
 * 403 when the runner is outside the key's scopes), the key's limits
 * (gateway/ratelimit.h: 429 with Retry-After), then the runner (404 when not
 * enrolled, 503 when not connected). Every response of an admitted request
 * carries the key's x-ratelimit-* headers in its head, before any body byte.
 *
 * Each admitted request becomes one tunnel stream (tstream.h). The request
 * body is sent under the session's flow control; bytes the windows do not
 * take are kept (the only buffer, and only while it waits) and the public
 * body is paused until FYP_EV_WRITABLE. Response DATA is written to the
 * public socket at once, and its flow-control credit is returned only for
 * bytes the socket accepted: above the public stream's high watermark the
 * credit waits for its drain callback, so a slow client holds at most its
 * stream window at the gateway and never stalls other streams. A usage
 * trailer from the runner is charged to the key's token limit.
 *
 * The end of a public request (gw_px_finish, reached exactly once whether it
 * succeeded, failed, was refused, aborted by the client or cut by the
 * runner's death) writes the access-log line, the metrics and the key's
 * usage, and gives back the concurrency slot and the key reference.
 *
 * Headers the runner trusts (fwdhead.h): every client header named
 * x-ferry-* is dropped, and the gateway adds x-ferry-key-id (and the
 * REQUEST's key-id and model metadata) itself, so a client can never choose
 * whose fair share it uses. Secrets: the key is read where the header lies
 * and never copied, logged or forwarded. */
#include "gateway/px.h"

#include "gateway/fwdhead.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PX_LOG        "proxy"
#define PX_MAX_CHOICE 16   /* connections of one runner considered per attempt */
#define PX_LINGER_MS  5000 /* wait for the usage trailer after the client left */

void gw_px_ref(gw_px *px)
{
    px->refs++;
}

/* Not inlined: a caller holding its own reference across a call that drops
 * another (px_detach) is safe, but GCC cannot see the count through the
 * stream pointer the core was given and would warn of a use after free. */
__attribute__((noinline)) void gw_px_unref(gw_px *px)
{
    if (--px->refs > 0) {
        return;
    }
    gw_ts_clear(&px->ts);
    free(px->target);
    free(px->body);
    free(px->reply);
    free(px->resp_head);
    fy_buf_free(&px->rbody);
    free(px);
}

/* Leaves the tunnel stream (resetting it unless the session already ended
 * it), so no further events arrive for PX. */
static void px_detach(gw_px *px, int reset)
{
    if (!px->ts.conn) {
        return;
    }
    gw_ts_detach(&px->ts, reset);
    gw_px_unref(px);
}

/* Keeps the response headers H[0..N) for gw->done's subscribers (at most
 * FY_REQDONE_HEADERS_MAX of them, FY_HTTP_MAX_HEADER_BYTES in all). */
static void px_keep_headers(gw_px *px, const fy_http_header *h, size_t n)
{
    fy_buf b;
    fy_buf_init(&b, FY_HTTP_MAX_HEADER_BYTES);
    size_t k = 0;
    for (; k < n && k < FY_REQDONE_HEADERS_MAX; k++) {
        if (fy_buf_append(&b, h[k].name, strlen(h[k].name) + 1) ||
            fy_buf_append(&b, h[k].value, strlen(h[k].value) + 1)) {
            break;
        }
    }
    free(px->resp_head);
    px->resp_head = b.data;
    px->resp_head_len = b.len;
    px->n_resp_head = k;
}

/* PX's kept response headers into H[0..FY_REQDONE_HEADERS_MAX); returns how many. */
static size_t px_kept_headers(const gw_px *px, fy_http_header *h)
{
    const char *p = px->resp_head;
    size_t k = 0;
    for (; p && k < px->n_resp_head; k++) {
        h[k] = (fy_http_header){p, p + strlen(p) + 1, 0, 0};
        p = h[k].value + strlen(h[k].value) + 1;
    }
    return k;
}

static const char *px_kind(const gw_px *px)
{
    const char *r = px->ops->route;
    return strcmp(r, "/r") == 0       ? "raw"
           : strcmp(r, "/v1") == 0    ? "v1"
           : strcmp(r, "/hooks") == 0 ? "hook"
                                      : "other";
}

/* Tells gw->done's subscribers (the access log, the dashboard) that PX ended
 * with STATUS; AH[0..AN) are the headers of an answer made here (else the
 * relayed ones kept). */
static void px_publish(gw_px *px, int status, uint64_t out, double secs, double ttfb,
                       const fy_http_header *ah, size_t an)
{
    fy_gw *gw = px->gw;
    fy_http_req *req = px->req;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fy_accesslog_entry e = {
        .time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
        .request_id = px->reqid,
        .key_id = px->key ? fy_key_id(px->key) : NULL,
        .runner = px->runner[0] ? px->runner : NULL,
        .model = px->model[0] ? px->model : NULL,
        .method = fy_http_req_method(req),
        .path = fy_http_req_path(req),
        .status = status,
        .bytes_in = px->bytes_in,
        .bytes_out = out,
        .latency_ms = secs * 1000,
        .ttfb_ms = ttfb >= 0 ? ttfb * 1000 : -1,
        .prompt_tokens = px->prompt_tokens,
        .completion_tokens = px->completion_tokens,
    };
    fy_http_header kept[FY_REQDONE_HEADERS_MAX];
    fy_reqdone d = {.e = &e, .kind = px_kind(px), .resp_h = ah, .n_resp_h = an};
    d.req_h = fy_http_req_headers(req, &d.n_req_h);
    if (px->hook_id[0]) {
        d.hook_id = px->hook_id; /* verified before it was forwarded */
        d.verified = "ok";
        d.hook_state = "delivered";
    }
    if (!ah && px->resp_head) {
        d.n_resp_h = px_kept_headers(px, kept);
        d.resp_h = kept;
    }
    fy_reqdone_publish(&gw->done, &d);
}

/* The metrics, usage and news (access log, dashboard) of a request that
 * ends now with STATUS, then the key's slot and reference given back.
 * ERR_BYTES: the body of an answer made here (else 0), AH[0..AN) its
 * headers. */
static void px_account(gw_px *px, int status, int answered_here, size_t err_bytes,
                       const fy_http_header *ah, size_t an)
{
    fy_gw *gw = px->gw;
    uint64_t now = uv_hrtime();
    if (answered_here && !px->t_head) {
        px->t_head = now;
    }
    uint64_t out = px->bytes_out + err_bytes;
    double secs = (double)(now - px->t0) / 1e9;
    double ttfb = px->t_head ? (double)(px->t_head - px->t0) / 1e9 : -1;
    const char *route = px->ops->route;
    fy_metrics_gw_request(&gw->metrics, route, status, secs, ttfb, px->bytes_in, out);
    const char *key_id = px->key ? fy_key_id(px->key) : NULL;
    if (px->admitted) {
        fy_store_usage u = {
            .requests = 1,
            .prompt_tokens = px->prompt_tokens > 0 ? (uint64_t)px->prompt_tokens : 0,
            .completion_tokens = px->completion_tokens > 0 ? (uint64_t)px->completion_tokens : 0,
            .bytes_in = px->bytes_in,
            .bytes_out = out,
        };
        int rc = gw->shared ? fy_shared_usage_add(gw->shared, key_id, (int64_t)time(NULL), &u)
                            : fy_store_usage_add(gw->store, key_id, (int64_t)time(NULL), &u);
        if (rc) {
            FY_WARN(PX_LOG, "usage of %s not recorded: %s", key_id, fy_strerror(rc));
        }
    }
    if (fy_reqdone_heard(&gw->done)) {
        px_publish(px, status, out, secs, ttfb, answered_here ? ah : NULL, answered_here ? an : 0);
    }
    if (px->admitted) {
        px->admitted = 0;
        if (px->lease) {
            fy_shared_release(gw->shared, px->lease); /* before the key goes */
            px->lease = NULL;
        } else {
            fy_rl_release(fy_key_rl(px->key));
        }
    }
    fy_key_release(px->key);
    px->key = NULL;
}

/* Appends the key's x-ratelimit-* headers (and, on a denial, Retry-After) to
 * H[*N..), from BUF's storage. */
static void px_rl_headers(gw_px *px, fy_rl_header_buf *buf, fy_http_header *h, size_t *n)
{
    if (!px->has_rr) {
        return;
    }
    size_t k = fy_rl_headers(&px->rr, buf);
    for (size_t i = 0; i < k; i++) {
        h[(*n)++] = buf->h[i];
    }
}

/* Finishes the public request: accounting, detach, then end / abort / error.
 * Reached exactly once per request (later calls do nothing). */
void gw_px_finish(gw_px *px, int how, int status, const char *code, const char *msg)
{
    fy_http_req *req = px->req;
    if (!req) {
        return;
    }
    fy_gw *gw = px->gw;
    int shown = how == GW_FIN_ERROR || how == GW_FIN_REPLY ? status
                : how == GW_FIN_ABORT && !px->resp_started ? 499
                                                           : px->status;
    if (px->client_gone && how == GW_FIN_END) {
        how = GW_FIN_ABORT; /* the connection is gone: finishing only releases REQ */
    }
    if (px->ops->on_finish) {
        px->ops->on_finish(px); /* PX still holds the request's reference */
    }
    char ebuf[1024]; /* a model name (255) escaped twice over fits */
    const char *body = ebuf;
    size_t blen = 0;
    if (how == GW_FIN_REPLY) {
        body = px->reply;
        blen = px->reply_len;
    } else if (how == GW_FIN_ERROR) {
        blen = fy_http_error_json(ebuf, sizeof ebuf, status, code, px->param, msg);
    }
    fy_rl_header_buf hb;
    fy_http_header h[3 + FY_RL_MAX_HEADERS] = {{"Content-Type", "application/json", 0, 0}};
    size_t n = 1;
    if (status == 503) {
        h[n++] = (fy_http_header){"Retry-After", "1", 0, 0};
    } else if (status == 401) {
        h[n++] = (fy_http_header){"WWW-Authenticate", "Bearer", 0, 0};
    }
    px_rl_headers(px, &hb, h, &n);
    px_account(px, shown, how == GW_FIN_ERROR || how == GW_FIN_REPLY, blen, h, n);
    px->req = NULL;
    if (px->linger) {
        px->linger->data = NULL;
        uv_close((uv_handle_t *)px->linger, (uv_close_cb)free);
        px->linger = NULL;
    }
    px_detach(px, 1);
    if (how == GW_FIN_END) {
        fy_http_res_end(req);
    } else if (how == GW_FIN_ABORT) {
        fy_http_res_abort(req);
    } else {
        fy_http_respond(req, status, h, n, body, blen);
    }
    if (px->counted) {
        px->counted = 0;
        gw_count_down(&gw->n_px);
    }
    gw_px_unref(px);
}

/* Public-side error before the response head, or abort after it. */
void gw_px_fail(gw_px *px, int status, const char *code, const char *msg)
{
    if (px->resp_started) {
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
    } else {
        gw_px_finish(px, GW_FIN_ERROR, status, code, msg);
    }
}

/* --- opening the stream ----------------------------------------------------- */

/* Builds the REQUEST and opens it on the least busy usable connection. */
int gw_px_open(gw_px *px, const gw_conn *exclude)
{
    fy_gw *gw = px->gw;
    fy_http_req *req = px->req;
    const char *target = px->target ? px->target : "/";

    gw_fwd_request *fl = malloc(sizeof *fl);
    char peer[64];
    fy_gw_peer_host(fy_http_req_peer(req), peer, sizeof peer);
    const char *key_id = px->key ? fy_key_id(px->key) : NULL;
    gw_fwd_info info = {peer, gw->opt.public_plain ? "http" : "https", key_id, px->ops->keep_auth};
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(req, &nh);
    if (!fl || fy_gw_fwd_request(fl, h, nh, &info)) {
        free(fl);
        return FY_ENOMEM;
    }
    fyp_field meta[4] = {{FY_SLICE_STR("request-id"), FY_SLICE(px->reqid, strlen(px->reqid))}};
    size_t nm = 1;
    if (px->hook_id[0]) {
        meta[nm++] =
            (fyp_field){FY_SLICE_STR("hook-id"), FY_SLICE(px->hook_id, strlen(px->hook_id))};
    }
    if (key_id) {
        meta[nm++] = (fyp_field){FY_SLICE_STR("key-id"), FY_SLICE(key_id, strlen(key_id))};
    }
    if (px->model[0]) {
        meta[nm++] = (fyp_field){FY_SLICE_STR("model"), FY_SLICE(px->model, strlen(px->model))};
    }
    const char *method = fy_http_req_method(req);
    fyp_request rq = {
        .method = FY_SLICE(method, strlen(method)),
        .target = FY_SLICE(target, strlen(target)),
        .meta = {meta, nm},
        .headers = {fl->f, fl->n},
    };

    /* Candidates best first, only connections with room for a stream. */
    gw_conn *cand[PX_MAX_CHOICE];
    size_t usable = 0;
    size_t nc = px->ops->pick(px, exclude, cand, PX_MAX_CHOICE, &usable);
    int rc = nc || usable ? FY_ELIMIT : FY_ENOENT;
    for (size_t i = 0; i < nc; i++) {
        gw_conn *c = cand[i];
        rc = gw_ts_open(&px->ts, c, &rq, !px->has_body);
        if (rc == 0) {
            snprintf(px->runner, sizeof px->runner, "%s", c->runner->name);
            gw_px_ref(px);
            break;
        }
        if (rc != FY_ELIMIT && rc != FY_ECLOSED && rc != FY_EAGAIN) {
            break; /* the request itself is at fault (too big, invalid) */
        }
    }
    fy_gw_fwd_request_free(fl);
    free(fl);
    return rc;
}

void gw_px_open_fail(gw_px *px, int rc)
{
    char msg[160];
    switch (rc) {
    case FY_ETOOBIG:
        gw_px_finish(px, GW_FIN_ERROR, 431, "header_too_large",
                     "request headers exceed the runner's header block limit");
        break;
    case FY_EINVAL:
        gw_px_finish(px, GW_FIN_ERROR, 400, "invalid_request", "request cannot be forwarded");
        break;
    case FY_ELIMIT:
        snprintf(msg, sizeof msg, "runner %s is at its concurrent stream limit", px->runner);
        gw_px_finish(px, GW_FIN_ERROR, 503, "runner_busy", msg);
        break;
    default:
        snprintf(msg, sizeof msg, "runner %s has no usable tunnel connection", px->runner);
        gw_px_finish(px, GW_FIN_ERROR, 503, "runner_unavailable", msg);
        break;
    }
}

/* --- request body (public -> tunnel) --------------------------------------- */

static void px_body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    gw_px *px = arg;
    if (px->req != req || !px->ts.conn || px->ts.end_sent) {
        return; /* the stream is gone: the rest of the body is dropped */
    }
    px->bytes_in += len;
    int rc = gw_ts_send(&px->ts, data, len, 0);
    if (rc == FY_ENOMEM) {
        gw_px_fail(px, 500, "internal_error", "out of memory");
    } else if (rc == 0) {
        px->paused = 1; /* the rest waits for the window */
        fy_http_req_pause(req);
    } /* else all sent, or reset or dead: its event finishes the request */
}

static void px_body_end(fy_http_req *req, int status, void *arg)
{
    gw_px *px = arg;
    if (px->req != req) {
        return;
    }
    if (status) {
        /* The client is gone or broke the body (the server answered 413/408
         * itself where it could): the runner's stream is cancelled. */
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
        return;
    }
    px->body_done = 1;
    if (!gw_ts_pending(&px->ts)) {
        gw_ts_end(&px->ts);
    }
}

static void px_on_writable(gw_px *px)
{
    if (!gw_ts_pending(&px->ts) || gw_ts_flush(&px->ts) != 1) {
        return;
    }
    if (px->body_done) {
        gw_ts_end(&px->ts);
    } else if (px->paused && px->req) {
        px->paused = 0;
        fy_http_req_resume(px->req);
    }
}

/* Sends the whole body read before (kept in BODY, so a refused stream can
 * send it again), then END_STREAM once all of it went. */
void gw_px_send_body(gw_px *px)
{
    if (gw_ts_send(&px->ts, px->body, px->body_len, 1) == 1) {
        gw_ts_end(&px->ts);
    }
}

/* --- response (tunnel -> public) -------------------------------------------- */

static void px_on_drain(fy_http_req *req, void *arg)
{
    gw_px *px = arg;
    px->drain_armed = 0;
    if (px->req != req || !px->ts.conn || !px->unconsumed) {
        return;
    }
    gw_ts_consume(&px->ts, (size_t)px->unconsumed);
    px->unconsumed = 0;
}

static void px_on_response(gw_px *px, const fyp_event *ev)
{
    const fyp_response *rs = ev->u.response;
    static gw_fwd_response fr; /* the loop is single-threaded */
    fy_rl_header_buf hb;
    fy_gw_fwd_response(&fr, rs->headers.v, rs->headers.n, px->has_rr);
    fy_http_header *hs = fr.h;
    size_t n = fr.n;
    int64_t clen = fr.content_length;
    px_rl_headers(px, &hb, hs, &n);
    if (px->gw->done.want_headers) {
        px_keep_headers(px, hs, n);
    }
    if (ev->end_stream && clen < 0) {
        clen = 0;
    }
    if (!gw_ts_pending(&px->ts)) {
        /* All sent and answered: no retry can need the body any more. */
        free(px->body);
        px->body = NULL;
        px->body_len = 0;
    }
    px->status = rs->status;
    px->resp_len = clen;
    px->t_head = uv_hrtime();
    int rc = fy_http_res_start(px->req, rs->status, hs, n, clen);
    if (!px->req) {
        return; /* aborted from inside */
    }
    if (rc) {
        gw_px_finish(px, rc == FY_EINVAL ? GW_FIN_ERROR : GW_FIN_ABORT, 502, "bad_response",
                     "the runner sent a response that cannot be relayed");
        return;
    }
    px->resp_started = 1;
    if (ev->end_stream) {
        gw_px_finish(px, GW_FIN_END, 0, NULL, NULL);
    }
}

/* A response paused at the watermark still gets what the stream window had
 * in flight; the public TLS stream must take it rather than fail the write. */
_Static_assert(FY_TLS_MAX_WRITE_QUEUE >
                   FY_STREAM_HIGH_WATERMARK + FY_LINK_STREAM_WINDOW + FY_LINK_STREAM_WINDOW / 64,
               "the TLS write queue cap is below what a paused response may still write");

static void px_on_data(gw_px *px, const fyp_event *ev)
{
    fy_slice d = ev->u.data;
    if (d.len) {
        px->bytes_out += d.len;
        int rc = fy_http_res_write(px->req, d.base, d.len);
        if (!px->req) {
            return;
        }
        if (rc < 0) {
            gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
            return;
        }
        if (rc == 0 && !px->drain_armed) {
            gw_ts_consume(&px->ts, d.len);
        } else {
            px->unconsumed += d.len;
            if (!px->drain_armed) {
                px->drain_armed = 1;
                fy_http_res_on_drain(px->req, px_on_drain, px);
            }
        }
    }
    if (ev->end_stream) {
        /* What the socket still holds is the server's to flush now. */
        gw_ts_consume(&px->ts, (size_t)px->unconsumed);
        px->unconsumed = 0;
        gw_px_finish(px, GW_FIN_END, 0, NULL, NULL);
    }
}

static void px_on_reset(gw_px *px, const fyp_event *ev)
{
    gw_conn *c = px->ts.conn;
    /* The session forgot the stream: leave it without a reset of our own. */
    px_detach(px, 0);
    if (!px->req) {
        return;
    }
    /* Never processed by the runner (drain, or its stream limit): the kind
     * may send it elsewhere. */
    if (ev->error_code == FYP_ERR_REFUSED_STREAM && !px->resp_started && px->ops->on_refused &&
        ++px->tries < GW_PX_MAX_TRIES && px->ops->on_refused(px, c)) {
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "runner %s: tunnel stream ended (%s)", px->runner,
             fyp_errcode_name(ev->error_code));
    gw_px_fail(px, 502, "runner_disconnected", msg);
}

/* The runner's usage trailer: charged to the key's token limit. */
static void px_on_usage(gw_px *px, const fyp_trailers *t)
{
    if (!t || !t->has_usage) {
        return;
    }
    px->prompt_tokens = t->prompt_tokens;
    px->completion_tokens = t->completion_tokens;
    int64_t used = (int64_t)t->prompt_tokens + (int64_t)t->completion_tokens;
    if (px->lease) {
        fy_shared_charge(px->gw->shared, px->lease, used);
    } else if (px->key) {
        fy_rl_charge(fy_key_rl(px->key), fy_rl_now(), used);
    }
    fy_metrics_gw_tokens(&px->gw->metrics, t->prompt_tokens, t->completion_tokens);
}

static void px_on_event(gw_ts *ts, const fyp_event *ev)
{
    gw_px *px = (gw_px *)ts;
    gw_px_ref(px);
    if (!px->req && ev->type != FYP_EV_STREAM_RESET) {
        px_detach(px, 1);
    } else {
        switch (ev->type) {
        case FYP_EV_RESPONSE:
            px_on_response(px, ev);
            break;
        case FYP_EV_DATA:
            if (!px->resp_started) {
                gw_px_fail(px, 502, "bad_response", "runner sent data before a response");
            } else {
                px_on_data(px, ev);
            }
            break;
        case FYP_EV_TRAILERS:
            px_on_usage(px, ev->u.trailers);
            if (px->resp_started) {
                gw_ts_consume(ts, (size_t)px->unconsumed);
                px->unconsumed = 0;
                gw_px_finish(px, GW_FIN_END, 0, NULL, NULL);
            } else {
                gw_px_fail(px, 502, "bad_response", "runner ended the stream without a response");
            }
            break;
        case FYP_EV_WRITABLE:
            px_on_writable(px);
            break;
        case FYP_EV_STREAM_RESET:
            px_on_reset(px, ev);
            break;
        default:
            break;
        }
    }
    gw_px_unref(px);
}

static const gw_ts_ops px_ops = {px_on_event};

/* --- public entry ------------------------------------------------------------------ */

static void px_on_linger_end(uv_timer_t *t)
{
    gw_px *px = t->data;
    if (px) {
        gw_px_ref(px);
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
        gw_px_unref(px);
    }
}

/* A client that read the whole body may hang up before the runner's usage
 * trailer arrives (it follows the last byte): the stream is kept, up to
 * PX_LINGER_MS, so those tokens are still charged to the key. Anything else
 * ends the stream at once, which tells the runner to stop. */
static void px_on_abort(fy_http_req *req, int status, void *arg)
{
    gw_px *px = arg;
    (void)status;
    if (px->req != req) {
        return;
    }
    gw_px_ref(px);
    if (px->ts.conn && px->resp_started && px->resp_len >= 0 &&
        px->bytes_out >= (uint64_t)px->resp_len && !px->client_gone &&
        (px->linger = malloc(sizeof *px->linger)) != NULL) {
        px->client_gone = 1;
        uv_timer_init(px->gw->loop, px->linger);
        px->linger->data = px;
        uv_timer_start(px->linger, px_on_linger_end, PX_LINGER_MS, 0);
    } else {
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
    }
    gw_px_unref(px);
}

/* Finishes PX with the answer to a failed key check O. */
void gw_px_refuse(gw_px *px, fy_auth_outcome o)
{
    const char *code, *msg;
    int status = fy_auth_error(o, &code, &msg);
    fy_metrics_gw_auth_failure(&px->gw->metrics, fy_auth_reason(o));
    gw_px_finish(px, GW_FIN_ERROR, status, code, msg);
}

/* The limiter's answer RR (allowed or not) for PX. */
static void px_limited(gw_px *px)
{
    if (!px->rr.allowed) {
        fy_metrics_gw_ratelimited(&px->gw->metrics, fy_rl_kind_name(px->rr.denied_by));
        gw_px_finish(px, GW_FIN_ERROR, 429, fy_rl_kind_code(px->rr.denied_by),
                     fy_rl_kind_message(px->rr.denied_by));
        return;
    }
    px->admitted = 1;
    px->next(px);
}

static void px_shared_unavailable(gw_px *px)
{
    gw_px_finish(px, GW_FIN_ERROR, 503, "shared_state_unavailable",
                 "the gateway cannot reach its shared state (Redis) to decide on this request; "
                 "retry shortly");
}

static void on_admission(void *data, const fy_shared_admission *a)
{
    gw_px *px = data;
    if (!px->req) {
        fy_shared_release(px->gw->shared, a->lease); /* finished meanwhile */
    } else if (a->unavailable) {
        px_shared_unavailable(px);
    } else if (a->auth != FY_AUTH_OK) {
        gw_px_refuse(px, a->auth);
    } else {
        px->rr = a->rr;
        px->lease = a->lease;
        px_limited(px);
    }
    gw_px_unref(px);
}

void gw_px_limits(gw_px *px, gw_px_next next)
{
    fy_gw *gw = px->gw;
    px->has_rr = 1;
    px->next = next;
    if (gw->shared) {
        gw_px_ref(px);
        fy_shared_admit(gw->shared, px->key, on_admission, px);
        return;
    }
    fy_rl_acquire(fy_key_rl(px->key), fy_rl_now(), &px->rr);
    px_limited(px);
}

static void px_auth_check(gw_px *px, int may_look_up);

static void on_key_lookup(void *data, int err)
{
    gw_px *px = data;
    if (px->req) {
        if (err && err != FY_ENOENT && !px->gw->opt.shared_fail_open) {
            px_shared_unavailable(px);
        } else {
            px_auth_check(px, 0);
        }
    }
    gw_px_unref(px);
}

/* Asks the shared state about the key PX presented, which this replica has
 * not seen. Returns 1 when PX waits for the answer or was finished. */
static int px_look_up(gw_px *px)
{
    fy_gw *gw = px->gw;
    size_t nh, len;
    const char *key;
    const fy_http_header *h = fy_http_req_headers(px->req, &nh);
    if (fy_keys_parse(h, nh, &key, &len) != FY_AUTH_OK) {
        return 0;
    }
    uint8_t hash[32];
    fy_secret_hash(key, len, hash);
    int rc = fy_shared_key_lookup(gw->shared, hash, on_key_lookup, px);
    fy_secure_zero(hash, sizeof hash);
    if (rc == 0) {
        gw_px_ref(px);
        return 1;
    }
    if (rc == FY_EUNREACH && !gw->opt.shared_fail_open) {
        px_shared_unavailable(px);
        return 1;
    }
    return 0; /* too many lookups at once: refused as unknown */
}

static void px_auth_check(gw_px *px, int may_look_up)
{
    fy_gw *gw = px->gw;
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(px->req, &nh);
    fy_auth_outcome o = fy_keys_authenticate(gw->keys, h, nh, (int64_t)time(NULL), &px->key);
    if (o == FY_AUTH_UNKNOWN && may_look_up && gw->shared && px_look_up(px)) {
        return;
    }
    if (o == FY_AUTH_OK && px->route == 1) {
        o = fy_keys_authorize(gw->keys, px->key, FY_SCOPE_RUNNER, px->runner);
    }
    if (o != FY_AUTH_OK) {
        gw_px_refuse(px, o);
        return;
    }
    px->next(px);
}

void gw_px_authenticate(gw_px *px, int route, gw_px_next next)
{
    px->route = (int8_t)route;
    px->next = next;
    px_auth_check(px, 1);
}

/* Authenticated: the route, draining, then the limits. */
static void px_admit_authed(gw_px *px)
{
    if (px->route < 0) {
        gw_px_finish(px, GW_FIN_ERROR, 404, "runner_not_found", "no runner by that name");
        return;
    }
    if (px->gw->draining) {
        gw_px_finish(px, GW_FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    gw_px_limits(px, px->then);
}

void gw_px_admit(gw_px *px, int route, gw_px_next next)
{
    px->then = next;
    gw_px_authenticate(px, route, px_admit_authed);
}

gw_px *gw_px_new(fy_gw *gw, fy_http_req *req, uint64_t t0, const gw_px_ops *ops)
{
    gw_px *px = calloc(1, sizeof *px);
    if (!px) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return NULL;
    }
    gw_ts_init(&px->ts, gw, &px_ops);
    px->ops = ops;
    px->gw = gw;
    px->req = req;
    px->refs = 1;
    px->t0 = t0;
    px->prompt_tokens = px->completion_tokens = -1;
    uint8_t rnd[8];
    fy_random_bytes(rnd, sizeof rnd);
    fy_hex_encode(rnd, sizeof rnd, px->reqid, sizeof px->reqid);
    return px;
}

/* 1 when PX's runner has a usable connection; otherwise finishes PX with
 * 404 (not enrolled, revoked) or 503 (not connected) and returns 0. */
int gw_px_runner_ready(gw_px *px)
{
    fy_gw *gw = px->gw;
    const char *name = px->runner;
    char msg[160];
    if (fy_gw_conn_pick(fy_gw_runner_find(gw, name), NULL)) {
        return 1;
    }
    fy_store_runner sr;
    int rc = fy_store_runner_get(gw->store, name, &sr);
    if (rc == FY_ENOENT || (rc == 0 && sr.revoked_at)) {
        snprintf(msg, sizeof msg, "runner %s %s", name, rc == 0 ? "is revoked" : "is not enrolled");
        gw_px_finish(px, GW_FIN_ERROR, 404, "runner_not_found", msg);
    } else {
        snprintf(msg, sizeof msg, "runner %s is not connected", name);
        gw_px_finish(px, GW_FIN_ERROR, 503, "runner_unavailable", msg);
    }
    return 0;
}

void gw_px_watch(gw_px *px)
{
    fy_http_req_on_abort(px->req, px_on_abort, px);
}

void gw_px_count(gw_px *px)
{
    px->counted = 1;
    gw_count_up(&px->gw->n_px);
    px->gw->n_proxied++;
}

int gw_px_replay(gw_px *px, gw_conn *c)
{
    if (px->bytes_in != 0 || gw_ts_pending(&px->ts)) {
        return 0; /* only a body none of which was sent can be sent again */
    }
    int rc = gw_px_open(px, c);
    if (rc) {
        gw_px_open_fail(px, rc);
    } else if (px->body_done) {
        gw_ts_end(&px->ts);
    }
    return 1;
}

int gw_px_set_target(gw_px *px, const char *target)
{
    px->target = strdup(target);
    if (!px->target) {
        gw_px_finish(px, GW_FIN_ERROR, 500, "internal_error", "out of memory");
        return 0;
    }
    return 1;
}

size_t gw_px_pick_runner(gw_px *px, const gw_conn *exclude, gw_conn **out, size_t max,
                         size_t *usable)
{
    return fy_gw_runner_pick(fy_gw_runner_find(px->gw, px->runner), exclude, 1, out, max, usable);
}

/* Streams the public body down the open stream as it arrives, pausing the
 * client while the windows are shut. */
static void px_stream_body(gw_px *px)
{
    px->body_reading = 1;
    if (fy_http_req_read_body(px->req, px_body_data, px_body_end, px)) {
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
    }
}

void gw_px_proxy(gw_px *px)
{
    gw_px_count(px);
    gw_px_watch(px);
    int rc = gw_px_open(px, NULL);
    if (rc) {
        gw_px_open_fail(px, rc);
    } else if (px->has_body && px->body_done) {
        gw_px_send_body(px); /* what the windows take, then END_STREAM */
    } else if (px->has_body) {
        px_stream_body(px);
    }
}
