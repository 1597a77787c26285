/* proxy.c: public requests to /r/<runner>/<path> and /v1/... proxied down a
 * tunnel.
 *
 * Admission, in order: the route (/r/<runner>/...), the API key
 * (gateway/keys.h: 401 when missing, malformed, unknown, revoked or expired;
 * 403 when the runner is outside the key's scopes), the key's limits
 * (gateway/ratelimit.h: 429 with Retry-After), then the runner (404 when not
 * enrolled, 503 when not connected). The key is checked before anything about
 * runners is said, so a stranger learns nothing about which runners exist.
 * Every response of an admitted request carries the key's x-ratelimit-*
 * headers in its head, before any body byte.
 *
 * Each admitted request becomes one tunnel stream (a gw_px ties the two).
 * The request body is streamed to fyp_session_send_data; bytes the windows do
 * not take are kept (the only buffer, and only while it waits) and the public
 * body is paused until FYP_EV_WRITABLE. Response DATA is written to the
 * public socket at once, and its flow-control credit is returned only for
 * bytes the socket accepted: above the public stream's high watermark the
 * credit waits for its drain callback, so a slow client holds at most its
 * stream window at the gateway and never stalls other streams. A usage
 * trailer from the runner is charged to the key's token limit.
 *
 * The end of a public request (px_finish, reached exactly once whether it
 * succeeded, failed, was refused, aborted by the client or cut by the
 * runner's death) writes the access-log line, the metrics and the key's
 * usage, and gives back the concurrency slot and the key reference.
 *
 * /v1 (the OpenAI API, routed by model): the key first (401), then the body,
 * read whole up to min(--max-body, FY_GW_V1_MAX_BODY) (413), its "model"
 * (400 naming param "model"), the key's model scope (403), its limits (429),
 * then the runner: the one serving the model with the fewest requests
 * outstanding (models.c). None serves it: 404 model_not_found. All that
 * serve it are at their stream limit: the request waits in a FIFO queue (at
 * most --queue-timeout, then 503 with Retry-After); a stream ending anywhere
 * or a runner connecting looks at the queue on the next loop turn, and a new
 * request for a model others wait for queues behind them. The body is kept
 * until the response starts so a stream the runner refused (REFUSED_STREAM)
 * is sent again elsewhere. GET /v1/models lists the models the key may use
 * that a connected runner serves.
 *
 * Headers the runner trusts: every client header named x-ferry-* is dropped,
 * and the gateway adds x-ferry-key-id (and the REQUEST's key-id and model
 * metadata) itself, so a client can never choose whose fair share it uses.
 *
 * Secrets: the key is read where the header lies and never copied, logged
 * or forwarded: Authorization and x-api-key are not sent to the runner.
 *
 * Lifetime: a gw_px is referenced by its public request (until finished) and
 * by its tunnel stream (until detached); callbacks take a temporary reference
 * because the HTTP server may finish a request (abort) from inside a call. */
#include "gateway/gateway.h"
#include "gateway/fwdhead.h"
#include "gateway/tstream.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define PX_LOG        "proxy"
#define PX_MAX_TRIES  3    /* tunnel connections tried for one request (refused streams) */
#define PX_MAX_CHOICE 16   /* connections of one runner considered per attempt */
#define PX_LINGER_MS  5000 /* wait for the usage trailer after the client left */

struct gw_px {
    gw_ts ts; /* first: the tunnel stream (ts.conn NULL when not attached) */
    fy_gw *gw;
    fy_http_req *req; /* NULL once finished */
    int refs;
    int status;
    uint8_t tries;
    unsigned has_body : 1;     /* the public request has a body */
    unsigned body_reading : 1; /* fy_http_req_read_body was called */
    unsigned body_done : 1;    /* the public body ended (all bytes received) */
    unsigned paused : 1;       /* public body paused for the tunnel window */
    unsigned resp_started : 1; /* the public response head was written */
    unsigned drain_armed : 1;  /* waiting for the public socket to drain */
    unsigned routed : 1;       /* a /r/ target: counted as route "/r" */
    unsigned counted : 1;      /* in gw->n_px (being proxied) */
    unsigned has_rr : 1;       /* RR holds the limiter's answer (headers to send) */
    unsigned admitted : 1;     /* holds one of the key's concurrency slots */
    unsigned client_gone : 1;  /* the client left with the whole body; awaiting the trailer */
    unsigned v1 : 1;           /* a /v1 request: routed by model, counted as route "/v1" */
    unsigned waiting : 1;      /* in the gateway's wait queue (holds a reference) */
    int64_t resp_len;          /* the response's Content-Length, -1 when not known */
    uv_timer_t *linger;        /* bounds the wait for the trailer once the client left */
    uint64_t unconsumed;       /* response bytes written but not yet credited */
    uint64_t t0, t_head, bytes_in, bytes_out; /* t_head: hrtime of the response head */
    int64_t prompt_tokens, completion_tokens; /* from the usage trailer; -1 = none */
    fy_key *key;                              /* a reference; NULL before authentication */
    fy_rl_result rr;                          /* the key's limits at admission */
    char runner[FY_STORE_NAME_MAX];
    char reqid[20];
    /* A verified webhook (fy_gw_px_forward): its runner-side target, its id
     * for the REQUEST metadata; the body was read and checked before. */
    char *target;
    char hook_id[FY_STORE_HOOK_ID_MAX];
    unsigned hook : 1;
    /* A /v1 request: its body (read whole), model and place in the queue. */
    fy_buf rbody; /* while the body is read */
    char *body;   /* the whole body once read; freed with PX */
    size_t body_len;
    gw_px *wnext, *wprev;
    uv_timer_t *wait_timer;
    const char *param; /* OpenAI's error "param" of an error answered here */
    char *reply;       /* a body answered here (GET /v1/models), freed with PX */
    size_t reply_len;
    char model[FY_GW_V1_MODEL_MAX];
};

static void px_ref(gw_px *px)
{
    px->refs++;
}

/* Not inlined: a caller holding its own reference across a call that drops
 * another (px_detach) is safe, but GCC cannot see the count through the
 * stream pointer the core was given and would warn of a use after free. */
__attribute__((noinline)) static void px_unref(gw_px *px)
{
    if (--px->refs > 0) {
        return;
    }
    gw_ts_clear(&px->ts);
    free(px->target);
    free(px->body);
    free(px->reply);
    fy_buf_free(&px->rbody);
    free(px);
}

static void v1_unqueue(gw_px *px);

/* Leaves the tunnel stream (resetting it unless the session already ended
 * it), so no further events arrive for PX. */
static void px_detach(gw_px *px, int reset)
{
    if (!px->ts.conn) {
        return;
    }
    gw_ts_detach(&px->ts, reset);
    px_unref(px);
}

enum { FIN_END, FIN_ABORT, FIN_ERROR, FIN_REPLY };

/* The access-log line, metrics and usage of a request that ends now with
 * STATUS, then the key's slot and reference given back. ERR_BYTES: the body
 * of an error answered here (else 0). */
static void px_account(gw_px *px, int status, int answered_here, size_t err_bytes)
{
    fy_gw *gw = px->gw;
    fy_http_req *req = px->req;
    uint64_t now = uv_hrtime();
    if (answered_here && !px->t_head) {
        px->t_head = now;
    }
    uint64_t out = px->bytes_out + err_bytes;
    double secs = (double)(now - px->t0) / 1e9;
    double ttfb = px->t_head ? (double)(px->t_head - px->t0) / 1e9 : -1;
    const char *route = px->hook ? "/hooks" : px->v1 ? "/v1" : px->routed ? "/r" : "other";
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
        int rc = fy_store_usage_add(gw->store, key_id, (int64_t)time(NULL), &u);
        if (rc) {
            FY_WARN(PX_LOG, "usage of %s not recorded: %s", key_id, fy_strerror(rc));
        }
    }
    if (!gw->access_stderr || fy_log_enabled(FY_LOG_INFO)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fy_accesslog_entry e = {
            .time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
            .request_id = px->reqid,
            .key_id = key_id,
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
        fy_accesslog_write(gw->access, &e);
    }
    if (px->admitted) {
        px->admitted = 0;
        fy_rl_release(fy_key_rl(px->key));
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
static void px_finish(gw_px *px, int how, int status, const char *code, const char *msg)
{
    fy_http_req *req = px->req;
    if (!req) {
        return;
    }
    fy_gw *gw = px->gw;
    int shown = how == FIN_ERROR || how == FIN_REPLY    ? status
                : how == FIN_ABORT && !px->resp_started ? 499
                                                        : px->status;
    if (px->client_gone && how == FIN_END) {
        how = FIN_ABORT; /* the connection is gone: finishing only releases REQ */
    }
    if (px->waiting) {
        v1_unqueue(px); /* PX still holds the request's reference */
    }
    char ebuf[1024]; /* a model name (255) escaped twice over fits */
    const char *body = ebuf;
    size_t blen = 0;
    if (how == FIN_REPLY) {
        body = px->reply;
        blen = px->reply_len;
    } else if (how == FIN_ERROR) {
        blen = fy_http_error_json(ebuf, sizeof ebuf, status, code, px->param, msg);
    }
    px_account(px, shown, how == FIN_ERROR || how == FIN_REPLY, blen);
    px->req = NULL;
    if (px->linger) {
        px->linger->data = NULL;
        uv_close((uv_handle_t *)px->linger, (uv_close_cb)free);
        px->linger = NULL;
    }
    px_detach(px, 1);
    if (how == FIN_END) {
        fy_http_res_end(req);
    } else if (how == FIN_ABORT) {
        fy_http_res_abort(req);
    } else {
        fy_rl_header_buf hb;
        fy_http_header h[3 + FY_RL_MAX_HEADERS] = {{"Content-Type", "application/json", 0, 0}};
        size_t n = 1;
        if (status == 503) {
            h[n++] = (fy_http_header){"Retry-After", "1", 0, 0};
        } else if (status == 401) {
            h[n++] = (fy_http_header){"WWW-Authenticate", "Bearer", 0, 0};
        }
        px_rl_headers(px, &hb, h, &n);
        fy_http_respond(req, status, h, n, body, blen);
    }
    if (px->counted) {
        px->counted = 0;
        gw_count_down(&gw->n_px);
    }
    px_unref(px);
}

/* Public-side error before the response head, or abort after it. */
static void px_fail(gw_px *px, int status, const char *code, const char *msg)
{
    if (px->resp_started) {
        px_finish(px, FIN_ABORT, 0, NULL, NULL);
    } else {
        px_finish(px, FIN_ERROR, status, code, msg);
    }
}

/* --- opening the stream ----------------------------------------------------- */

static int px_open(gw_px *px, const gw_conn *exclude);

static void px_body_data(fy_http_req *req, const char *data, size_t len, void *arg);
static void px_body_end(fy_http_req *req, int status, void *arg);

/* Builds the REQUEST and opens it on the least busy usable connection. */
static int px_open(gw_px *px, const gw_conn *exclude)
{
    fy_gw *gw = px->gw;
    fy_http_req *req = px->req;
    char name[FY_STORE_NAME_MAX], target[FY_HTTP_MAX_URL_BYTES + 2];
    const char *rest;
    int slash;
    if (px->v1) {
        name[0] = '\0';
        snprintf(target, sizeof target, "%s", fy_http_req_target(req));
    } else if (px->target) {
        snprintf(name, sizeof name, "%s", px->runner);
        snprintf(target, sizeof target, "%s", px->target);
    } else if (fy_gw_route_split(fy_http_req_target(req), name, &rest, &slash) != 1) {
        return FY_EINVAL;
    } else {
        snprintf(target, sizeof target, "%s%s", slash ? "/" : "", rest);
    }

    gw_fwd_request *fl = malloc(sizeof *fl);
    char peer[64];
    fy_gw_peer_host(fy_http_req_peer(req), peer, sizeof peer);
    const char *key_id = px->key ? fy_key_id(px->key) : NULL;
    gw_fwd_info info = {peer, gw->public_plain ? "http" : "https", key_id, px->hook};
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(req, &nh);
    if (!fl || fy_gw_fwd_request(fl, h, nh, &info)) {
        free(fl);
        return FY_ENOMEM;
    }
    fyp_field meta[4] = {{FY_SLICE_STR("request-id"), FY_SLICE(px->reqid, strlen(px->reqid))}};
    size_t nm = 1;
    if (px->hook) {
        meta[nm++] =
            (fyp_field){FY_SLICE_STR("hook-id"), FY_SLICE(px->hook_id, strlen(px->hook_id))};
    }
    if (key_id) {
        meta[nm++] = (fyp_field){FY_SLICE_STR("key-id"), FY_SLICE(key_id, strlen(key_id))};
    }
    if (px->v1) {
        meta[nm++] = (fyp_field){FY_SLICE_STR("model"), FY_SLICE(px->model, strlen(px->model))};
    }
    const char *method = fy_http_req_method(req);
    fyp_request rq = {
        .method = FY_SLICE(method, strlen(method)),
        .target = FY_SLICE(target, strlen(target)),
        .meta = {meta, nm},
        .headers = {fl->f, fl->n},
    };

    /* Candidates best first, only connections with room for a stream: for
     * /v1 the runners serving the model, otherwise the route's runner. */
    gw_conn *cand[PX_MAX_CHOICE];
    size_t usable = 0;
    size_t nc = px->v1 ? fy_gw_model_pick(fy_gw_model_find(gw, px->model), exclude, cand,
                                          PX_MAX_CHOICE, &usable)
                       : fy_gw_runner_pick(fy_gw_runner_find(gw, name), exclude, 1, cand,
                                           PX_MAX_CHOICE, &usable);
    int rc = nc || usable ? FY_ELIMIT : FY_ENOENT;
    for (size_t i = 0; i < nc; i++) {
        gw_conn *c = cand[i];
        rc = gw_ts_open(&px->ts, c, &rq, !px->has_body);
        if (rc == 0) {
            if (px->v1) {
                snprintf(px->runner, sizeof px->runner, "%s", c->runner->name);
            }
            px_ref(px);
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

static void px_open_fail(gw_px *px, int rc)
{
    char msg[160];
    switch (rc) {
    case FY_ETOOBIG:
        px_finish(px, FIN_ERROR, 431, "header_too_large",
                  "request headers exceed the runner's header block limit");
        break;
    case FY_EINVAL:
        px_finish(px, FIN_ERROR, 400, "invalid_request", "request cannot be forwarded");
        break;
    case FY_ELIMIT:
        snprintf(msg, sizeof msg, "runner %s is at its concurrent stream limit", px->runner);
        px_finish(px, FIN_ERROR, 503, "runner_busy", msg);
        break;
    default:
        snprintf(msg, sizeof msg, "runner %s has no usable tunnel connection", px->runner);
        px_finish(px, FIN_ERROR, 503, "runner_unavailable", msg);
        break;
    }
}

/* --- request body (public -> tunnel) --------------------------------------- */

static void v1_dispatch(gw_px *px, const gw_conn *exclude);

static void px_body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    gw_px *px = arg;
    if (px->req != req || !px->ts.conn || px->ts.end_sent) {
        return; /* the stream is gone: the rest of the body is dropped */
    }
    px->bytes_in += len;
    int rc = gw_ts_send(&px->ts, data, len, 0);
    if (rc == FY_ENOMEM) {
        px_fail(px, 500, "internal_error", "out of memory");
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
        px_finish(px, FIN_ABORT, 0, NULL, NULL);
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
static void px_send_body(gw_px *px)
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
    if (ev->end_stream && clen < 0) {
        clen = 0;
    }
    if (px->v1 && !gw_ts_pending(&px->ts)) {
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
        px_finish(px, rc == FY_EINVAL ? FIN_ERROR : FIN_ABORT, 502, "bad_response",
                  "the runner sent a response that cannot be relayed");
        return;
    }
    px->resp_started = 1;
    if (ev->end_stream) {
        px_finish(px, FIN_END, 0, NULL, NULL);
    }
}

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
            px_finish(px, FIN_ABORT, 0, NULL, NULL);
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
        px_finish(px, FIN_END, 0, NULL, NULL);
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
    if (ev->error_code == FYP_ERR_REFUSED_STREAM && !px->resp_started && px->v1 &&
        ++px->tries < PX_MAX_TRIES) {
        /* Never processed: the whole body is still here, send it elsewhere. */
        v1_dispatch(px, c);
        return;
    }
    if (ev->error_code == FYP_ERR_REFUSED_STREAM && !px->resp_started && px->bytes_in == 0 &&
        !gw_ts_pending(&px->ts) && ++px->tries < PX_MAX_TRIES) {
        /* Never processed by the runner (drain, or its stream limit): try
         * another connection. Only bodies not yet sent can be replayed. */
        int rc = px_open(px, c);
        if (rc == 0) {
            if (px->body_done) {
                gw_ts_end(&px->ts);
            }
            return;
        }
        px_open_fail(px, rc);
        return;
    }
    char msg[160];
    snprintf(msg, sizeof msg, "runner %s: tunnel stream ended (%s)", px->runner,
             fyp_errcode_name(ev->error_code));
    px_fail(px, 502, "runner_disconnected", msg);
}

/* The runner's usage trailer: charged to the key's token limit. */
static void px_on_usage(gw_px *px, const fyp_trailers *t)
{
    if (!t || !t->has_usage) {
        return;
    }
    px->prompt_tokens = t->prompt_tokens;
    px->completion_tokens = t->completion_tokens;
    if (px->key) {
        fy_rl_charge(fy_key_rl(px->key), fy_rl_now(),
                     (int64_t)t->prompt_tokens + (int64_t)t->completion_tokens);
    }
    fy_metrics_gw_tokens(&px->gw->metrics, t->prompt_tokens, t->completion_tokens);
}

static void px_on_event(gw_ts *ts, const fyp_event *ev)
{
    gw_px *px = (gw_px *)ts;
    px_ref(px);
    if (!px->req && ev->type != FYP_EV_STREAM_RESET) {
        px_detach(px, 1);
    } else {
        switch (ev->type) {
        case FYP_EV_RESPONSE:
            px_on_response(px, ev);
            break;
        case FYP_EV_DATA:
            if (!px->resp_started) {
                px_fail(px, 502, "bad_response", "runner sent data before a response");
            } else {
                px_on_data(px, ev);
            }
            break;
        case FYP_EV_TRAILERS:
            px_on_usage(px, ev->u.trailers);
            if (px->resp_started) {
                gw_ts_consume(ts, (size_t)px->unconsumed);
                px->unconsumed = 0;
                px_finish(px, FIN_END, 0, NULL, NULL);
            } else {
                px_fail(px, 502, "bad_response", "runner ended the stream without a response");
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
    px_unref(px);
}

static const gw_ts_ops px_ops = {px_on_event};

/* --- public entry ------------------------------------------------------------------ */

static void px_on_linger_end(uv_timer_t *t)
{
    gw_px *px = t->data;
    if (px) {
        px_ref(px);
        px_finish(px, FIN_ABORT, 0, NULL, NULL);
        px_unref(px);
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
    px_ref(px);
    if (px->ts.conn && px->resp_started && px->resp_len >= 0 &&
        px->bytes_out >= (uint64_t)px->resp_len && !px->client_gone &&
        (px->linger = malloc(sizeof *px->linger)) != NULL) {
        px->client_gone = 1;
        uv_timer_init(px->gw->loop, px->linger);
        px->linger->data = px;
        uv_timer_start(px->linger, px_on_linger_end, PX_LINGER_MS, 0);
    } else {
        px_finish(px, FIN_ABORT, 0, NULL, NULL);
    }
    px_unref(px);
}

/* Finishes PX with the answer to a failed key check O. */
static void px_refuse(gw_px *px, fy_auth_outcome o)
{
    const char *code, *msg;
    int status = fy_auth_error(o, &code, &msg);
    fy_metrics_gw_auth_failure(&px->gw->metrics, fy_auth_reason(o));
    px_finish(px, FIN_ERROR, status, code, msg);
}

/* The key's limits; on a denial finishes PX with 429 and returns 0. */
static int px_limits(gw_px *px)
{
    fy_gw *gw = px->gw;
    px->has_rr = 1;
    if (!fy_rl_acquire(fy_key_rl(px->key), fy_rl_now(), &px->rr)) {
        fy_metrics_gw_ratelimited(&gw->metrics, fy_rl_kind_name(px->rr.denied_by));
        px_finish(px, FIN_ERROR, 429, fy_rl_kind_code(px->rr.denied_by),
                  fy_rl_kind_message(px->rr.denied_by));
        return 0;
    }
    px->admitted = 1;
    return 1;
}

/* Authentication (and, for ROUTE 1, the runner scope); on refusal finishes
 * PX and returns 0. */
static int px_authenticate(gw_px *px, int route)
{
    fy_gw *gw = px->gw;
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(px->req, &nh);
    fy_auth_outcome o = fy_keys_authenticate(gw->keys, h, nh, (int64_t)time(NULL), &px->key);
    if (o == FY_AUTH_OK && route == 1) {
        o = fy_keys_authorize(gw->keys, px->key, FY_SCOPE_RUNNER, px->runner);
    }
    if (o != FY_AUTH_OK) {
        px_refuse(px, o);
        return 0;
    }
    return 1;
}

/* Authentication, scopes and limits; on refusal finishes PX and returns 0. */
static int px_admit(gw_px *px, int route)
{
    fy_gw *gw = px->gw;
    if (!px_authenticate(px, route)) {
        return 0;
    }
    if (route < 0) {
        px_finish(px, FIN_ERROR, 404, "runner_not_found", "no runner by that name");
        return 0;
    }
    if (gw->draining) {
        px_finish(px, FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return 0;
    }
    return px_limits(px);
}

static gw_px *px_new(fy_gw *gw, fy_http_req *req, uint64_t t0)
{
    gw_px *px = calloc(1, sizeof *px);
    if (!px) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return NULL;
    }
    gw_ts_init(&px->ts, gw, &px_ops);
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
static int px_runner_ready(gw_px *px)
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
        px_finish(px, FIN_ERROR, 404, "runner_not_found", msg);
    } else {
        snprintf(msg, sizeof msg, "runner %s is not connected", name);
        px_finish(px, FIN_ERROR, 503, "runner_unavailable", msg);
    }
    return 0;
}

void fy_gw_px_forward(fy_gw *gw, fy_http_req *req, const gw_forward *f)
{
    gw_px *px = px_new(gw, req, f->t0);
    if (!px) {
        free(f->body);
        return;
    }
    px->hook = 1;
    px->body = f->body; /* freed with PX */
    px->body_len = f->body_len;
    px->bytes_in = f->body_len;
    px->body_done = 1;
    px->has_body = f->body_len > 0;
    snprintf(px->runner, sizeof px->runner, "%s", f->runner);
    snprintf(px->hook_id, sizeof px->hook_id, "%s", f->hook_id);
    px->target = strdup(f->target);
    if (!px->target) {
        px_finish(px, FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    if (gw->draining) {
        px_finish(px, FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    if (!px_runner_ready(px)) {
        return;
    }
    px->counted = 1;
    gw_count_up(&gw->n_px);
    gw->n_proxied++;
    fy_http_req_on_abort(req, px_on_abort, px);
    int rc = px_open(px, NULL);
    if (rc) {
        px_open_fail(px, rc);
        return;
    }
    if (px->has_body) {
        px_send_body(px); /* what the windows take, then END_STREAM */
    }
}

void fy_gw_public_request(fy_http_req *req, void *data)
{
    fy_gw *gw = data;
    const char *rest;
    int slash;
    const char *path = fy_http_req_path(req);
    if (strncmp(path, "/hooks/", 7) == 0) {
        fy_gw_hook_request(gw, req);
        return;
    }
    if (strncmp(path, "/v1", 3) == 0 && (path[3] == '\0' || path[3] == '/')) {
        fy_gw_v1_request(gw, req);
        return;
    }
    gw_px *px = px_new(gw, req, uv_hrtime());
    if (!px) {
        return;
    }
    int route = fy_gw_route_split(fy_http_req_target(req), px->runner, &rest, &slash);
    if (route == 0) {
        px_finish(px, FIN_ERROR, 404, "not_found",
                  "no such route (runners are under /r/<runner>/, the OpenAI API under /v1/)");
        return;
    }
    px->routed = 1;
    if (!px_admit(px, route)) {
        return;
    }
    if (!px_runner_ready(px)) {
        return;
    }
    px->has_body = fy_http_req_content_length(req) != 0;
    px->counted = 1;
    gw_count_up(&gw->n_px);
    gw->n_proxied++;
    fy_http_req_on_abort(req, px_on_abort, px);
    int rc = px_open(px, NULL);
    if (rc) {
        px_open_fail(px, rc);
        return;
    }
    if (px->has_body) {
        px->body_reading = 1;
        rc = fy_http_req_read_body(req, px_body_data, px_body_end, px);
        if (rc) {
            px_finish(px, FIN_ABORT, 0, NULL, NULL);
        }
    }
}

/* --- /v1: the OpenAI API, routed by model ------------------------------------------ */

static int v1_queueable(int rc)
{
    return rc == FY_ELIMIT || rc == FY_ECLOSED || rc == FY_EAGAIN || rc == FY_ENOENT;
}

/* Opens PX's stream on the least busy runner serving its model (not
 * EXCLUDE) and sends the body. 0, or px_open's error (nothing was sent). */
static int v1_send(gw_px *px, const gw_conn *exclude)
{
    int rc = px_open(px, exclude);
    if (rc) {
        return rc;
    }
    px_send_body(px); /* what the windows take now, the rest on FYP_EV_WRITABLE */
    return 0;
}

static void v1_busy(gw_px *px, const char *why)
{
    char msg[FY_GW_V1_MODEL_MAX + 160];
    snprintf(msg, sizeof msg, "every runner serving model `%s` is busy (%s); try again", px->model,
             why);
    px_finish(px, FIN_ERROR, 503, "runners_busy", msg);
}

static void v1_on_wait_timeout(uv_timer_t *t)
{
    gw_px *px = t->data;
    if (!px) {
        return;
    }
    px_ref(px);
    char why[64];
    snprintf(why, sizeof why, "waited %.1f s", (double)px->gw->queue_timeout_ms / 1000.0);
    v1_busy(px, why);
    px_unref(px);
}

/* Puts PX at the tail of the wait queue, or answers 503 when it cannot wait. */
static void v1_enqueue(gw_px *px)
{
    fy_gw *gw = px->gw;
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (!m) {
        char msg[FY_GW_V1_MODEL_MAX + 64];
        snprintf(msg, sizeof msg, "no runner serving model `%s` is connected", px->model);
        px_finish(px, FIN_ERROR, 503, "runner_unavailable", msg);
        return;
    }
    if (gw->draining) {
        px_finish(px, FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    if (gw->queue_timeout_ms == 0 || gw->n_waiting >= FY_GW_V1_MAX_WAITING) {
        v1_busy(px, gw->queue_timeout_ms ? "the wait queue is full" : "at their stream limit");
        return;
    }
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        px_finish(px, FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    uv_timer_init(gw->loop, t);
    t->data = px;
    uv_timer_start(t, v1_on_wait_timeout, gw->queue_timeout_ms, 0);
    px->wait_timer = t;
    px->waiting = 1;
    px->wnext = NULL;
    px->wprev = gw->wait_tail;
    if (gw->wait_tail) {
        gw->wait_tail->wnext = px;
    } else {
        gw->wait_head = px;
    }
    gw->wait_tail = px;
    gw->n_waiting++;
    fy_metric_add(gw->metrics.waiting, NULL, 1);
    fy_gw_model_waiters(gw, m, 1);
    px_ref(px); /* the queue's */
}

static void v1_unqueue(gw_px *px)
{
    fy_gw *gw = px->gw;
    if (!px->waiting) {
        return;
    }
    px->waiting = 0;
    if (px->wprev) {
        px->wprev->wnext = px->wnext;
    } else {
        gw->wait_head = px->wnext;
    }
    if (px->wnext) {
        px->wnext->wprev = px->wprev;
    } else {
        gw->wait_tail = px->wprev;
    }
    px->wnext = px->wprev = NULL;
    gw->n_waiting--;
    fy_metric_add(gw->metrics.waiting, NULL, -1);
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (m) {
        fy_gw_model_waiters(gw, m, -1);
    }
    if (px->wait_timer) {
        px->wait_timer->data = NULL;
        uv_close((uv_handle_t *)px->wait_timer, (uv_close_cb)free);
        px->wait_timer = NULL;
    }
    px_unref(px);
}

/* Sends PX now, or queues it when every runner serving its model is full. */
static void v1_dispatch(gw_px *px, const gw_conn *exclude)
{
    int rc = v1_send(px, exclude);
    if (rc == 0) {
        return;
    }
    if (v1_queueable(rc)) {
        v1_enqueue(px);
    } else {
        px_open_fail(px, rc);
    }
}

/* One pass over the queue, oldest first. A model found full is skipped for
 * the rest of the pass, so its waiters keep their order. */
static void v1_on_kick(uv_timer_t *t)
{
    fy_gw *gw = t->data;
    uint64_t gen = ++gw->kick_gen;
    for (gw_px *px = gw->wait_head, *next; px; px = next) {
        next = px->wnext;
        gw_model *m = fy_gw_model_find(gw, px->model);
        if (!m || m->kick_gen == gen) {
            continue;
        }
        px_ref(px);
        int rc = v1_send(px, NULL);
        if (rc == 0) {
            v1_unqueue(px);
        } else if (v1_queueable(rc)) {
            m->kick_gen = gen;
        } else {
            px_open_fail(px, rc);
        }
        px_unref(px);
    }
}

/* Looks at the queue on the next loop turn. Cheap when none waits. */
static void v1_kick(fy_gw *gw)
{
    if (gw->n_waiting && gw->wait_kick_init && !uv_is_active((uv_handle_t *)&gw->wait_kick)) {
        gw->wait_kick.data = gw;
        uv_timer_start(&gw->wait_kick, v1_on_kick, 0, 0);
    }
}

/* A stream ended somewhere or a runner connected: a waiter may go now. */
static void v1_on_tunnel(fy_gw *gw, gw_tun_news news, void *arg)
{
    (void)news;
    (void)arg;
    v1_kick(gw);
}

int fy_gw_v1_init(fy_gw *gw)
{
    int rc = uv_timer_init(gw->loop, &gw->wait_kick);
    if (rc) {
        return fy_err_from_uv(rc);
    }
    gw->wait_kick.data = gw;
    gw->wait_kick_init = 1;
    gw->v1_sub = (gw_tun_sub){.fn = v1_on_tunnel};
    fy_gw_tunnel_subscribe(gw, &gw->v1_sub);
    return 0;
}

void fy_gw_v1_fail_waiting(fy_gw *gw, const char *code, const char *msg)
{
    while (gw->wait_head) {
        gw_px *px = gw->wait_head;
        px_ref(px);
        px_finish(px, FIN_ERROR, 503, code, msg);
        px_unref(px);
    }
}

void fy_gw_v1_close(fy_gw *gw)
{
    if (gw->wait_kick_init) {
        gw->wait_kick_init = 0;
        uv_close((uv_handle_t *)&gw->wait_kick, NULL);
    }
}

static void v1_not_found(gw_px *px)
{
    char msg[FY_GW_V1_MODEL_MAX + 96];
    snprintf(msg, sizeof msg, "The model `%s` does not exist or you do not have access to it.",
             px->model);
    px->param = "model";
    px_finish(px, FIN_ERROR, 404, "model_not_found", msg);
}

/* The whole body is here: model, scope, limits, then a runner. */
static void v1_admit(gw_px *px)
{
    fy_gw *gw = px->gw;
    char err[128];
    if (fy_gw_v1_model(px->body, px->body_len, px->model, err, sizeof err)) {
        px->param = "model";
        px_finish(px, FIN_ERROR, 400, "invalid_request", err);
        return;
    }
    fy_auth_outcome o = fy_keys_authorize(gw->keys, px->key, FY_SCOPE_MODEL, px->model);
    if (o != FY_AUTH_OK) {
        px_refuse(px, o);
        return;
    }
    if (gw->draining) {
        px_finish(px, FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    if (!px_limits(px)) {
        return;
    }
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (!m || m->n_conns == 0) {
        v1_not_found(px);
        return;
    }
    px->has_body = 1;
    px->body_done = 1;
    px->counted = 1;
    gw_count_up(&gw->n_px);
    gw->n_proxied++;
    if (m->n_waiting) {
        v1_enqueue(px); /* behind the requests already waiting for it */
        v1_kick(gw);
    } else {
        v1_dispatch(px, NULL);
    }
}

static void v1_body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    gw_px *px = arg;
    if (px->req != req) {
        return;
    }
    px->bytes_in += len;
    if (fy_buf_append(&px->rbody, data, len)) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", px->rbody.max);
        px_finish(px, FIN_ERROR, 413, "payload_too_large", msg);
    }
}

static void v1_body_end(fy_http_req *req, int status, void *arg)
{
    gw_px *px = arg;
    if (px->req != req) {
        return;
    }
    if (status) {
        px_finish(px, FIN_ABORT, 0, NULL, NULL); /* gone, or the server answered */
        return;
    }
    px_ref(px);
    px->body = fy_buf_steal(&px->rbody, &px->body_len);
    v1_admit(px);
    px_unref(px);
}

static int v1_model_cmp(const void *a, const void *b)
{
    return strcmp((*(gw_model *const *)a)->name, (*(gw_model *const *)b)->name);
}

static json_t *v1_model_json(const gw_model *m)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
                     (json_int_t)m->created, "owned_by", "ferry");
}

/* GET /v1/models (ID NULL) or /v1/models/ID: the models the key may use that
 * a connected runner serves. */
static void v1_models(gw_px *px, const char *id)
{
    fy_gw *gw = px->gw;
    size_t n = 0, k = 0;
    for (gw_model *m = gw->models; m; m = m->next) {
        n++;
    }
    gw_model **v = calloc(n ? n : 1, sizeof *v);
    json_t *out = NULL;
    if (!v) {
        px_finish(px, FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    for (gw_model *m = gw->models; m; m = m->next) {
        if (m->n_conns > 0 && (!id || strcmp(m->name, id) == 0) &&
            fy_keys_authorize(gw->keys, px->key, FY_SCOPE_MODEL, m->name) == FY_AUTH_OK) {
            v[k++] = m;
        }
    }
    if (id && k == 0) {
        free(v);
        snprintf(px->model, sizeof px->model, "%.*s", (int)(sizeof px->model - 1), id);
        v1_not_found(px);
        return;
    }
    if (id) {
        out = v1_model_json(v[0]);
    } else {
        qsort(v, k, sizeof *v, v1_model_cmp);
        json_t *data = json_array();
        for (size_t i = 0; i < k; i++) {
            json_array_append_new(data, v1_model_json(v[i]));
        }
        out = json_pack("{s:s,s:o}", "object", "list", "data", data);
    }
    free(v);
    px->reply = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (!px->reply) {
        px_finish(px, FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    px->reply_len = strlen(px->reply);
    px_finish(px, FIN_REPLY, 200, NULL, NULL);
}

void fy_gw_v1_request(fy_gw *gw, fy_http_req *req)
{
    gw_px *px = px_new(gw, req, uv_hrtime());
    if (!px) {
        return;
    }
    px->v1 = 1;
    if (!px_authenticate(px, 0)) {
        return;
    }
    if (gw->draining) {
        px_finish(px, FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    const char *path = fy_http_req_path(req), *method = fy_http_req_method(req);
    if (strcmp(method, "GET") == 0 &&
        (strcmp(path, "/v1/models") == 0 || (strncmp(path, "/v1/models/", 11) == 0 && path[11]))) {
        if (px_limits(px)) {
            v1_models(px, path[10] ? path + 11 : NULL);
        }
        return;
    }
    if (strcmp(method, "POST") != 0) {
        px_finish(
            px, FIN_ERROR, 405, "method_not_allowed",
            "the gateway routes POST /v1/... by the body's model, and answers GET /v1/models");
        return;
    }
    uint64_t cap = gw->max_body < FY_GW_V1_MAX_BODY ? gw->max_body : FY_GW_V1_MAX_BODY;
    int64_t cl = fy_http_req_content_length(req);
    if (cl == 0) {
        px->param = "model";
        px_finish(px, FIN_ERROR, 400, "invalid_request",
                  "the request needs a JSON body with a model");
        return;
    }
    if (cl > 0 && (uint64_t)cl > cap) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %llu bytes",
                 (unsigned long long)cap);
        px_finish(px, FIN_ERROR, 413, "payload_too_large", msg);
        return;
    }
    fy_buf_init(&px->rbody, (size_t)cap);
    fy_http_req_on_abort(req, px_on_abort, px);
    px->body_reading = 1;
    if (fy_http_req_read_body(req, v1_body_data, v1_body_end, px)) {
        px_finish(px, FIN_ABORT, 0, NULL, NULL);
    }
}
