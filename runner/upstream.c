/* upstream.c: one tunnel stream <-> one HTTP call to the local upstream.
 *
 * Request: REQUEST's method, target and headers (hop-by-hop ones and Host
 * dropped: the client names the upstream itself) start a call; DATA is
 * written to the call as it arrives. Credit for those bytes goes back to the
 * gateway (fy_rn_stream_consume) only once the call took them without going
 * over its high watermark; past it, credit waits for the call's drain, so a
 * slow upstream stops the gateway, which stops reading the public client.
 *
 * Response: the head becomes RESPONSE; body bytes go out as DATA as far as
 * the stream and connection windows allow. What does not fit waits in `out`
 * and the call is paused until FYP_EV_WRITABLE, so a slow public client stops
 * the upstream. Upstream errors before the head become a 502/504 JSON
 * response; after it, a reset (the gateway then aborts the public response).
 *
 * A stream lives until both halves ended (or it was reset); it is linked into
 * its connection's list so a connection that dies can release it. */
#include "runner/runner.h"

#include "common/err.h"
#include "common/http.h"
#include "common/limits.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define UP_OUT_MAX           (4 * 1024 * 1024) /* response bytes held waiting for window */
#define UP_MAX_IDLE          256
#define UP_DEFAULT_TIMEOUT   300000
#define UP_LOG_PATH_MAX      128
#define UP_MAX_REQUEST_BYTES (FY_HTTP_MAX_HEADER_BYTES * 4)

struct fy_rn_upstream {
    uv_loop_t *loop;
    fy_http_client *client;
    char base[600]; /* "http://host:port" + base path without a trailing '/' */
    fy_rn_upstream_stats st;
};

struct fy_rn_stream {
    fy_rn_stream_base base; /* first: the connection's list holds these */
    fy_rn_upstream *up;
    fy_http_call *call;
    size_t unconsumed; /* request bytes delivered but not yet credited */
    uint64_t t0;
    uint64_t req_bytes, resp_bytes;
    int status;
    const char *outcome;
    unsigned req_ended : 1;   /* the gateway's half ended */
    unsigned streaming : 1;   /* the call takes a streamed body */
    unsigned blocked : 1;     /* the call's body queue is above its watermark */
    unsigned paused : 1;      /* the call's response is paused */
    unsigned responded : 1;   /* RESPONSE sent (base.ended: our END_STREAM too) */
    unsigned end_pending : 1; /* send END_STREAM once `out` is empty */
    unsigned canceled : 1;    /* reset by the gateway or lost with the connection */
    char rid[64];
    char method[FYP_MAX_METHOD_LEN + 1];
    char path[UP_LOG_PATH_MAX];
};

/* --- upstream --------------------------------------------------------------- */

int fy_rn_upstream_new(uv_loop_t *loop, const fy_rn_upstream_options *o, fy_rn_upstream **out,
                       char *err, size_t errlen)
{
    fy_http_url u;
    *out = NULL;
    if (!o->url || fy_http_url_parse(o->url, &u)) {
        snprintf(err, errlen, "--upstream '%s' is not an http:// URL", o->url ? o->url : "");
        return FY_EINVAL;
    }
    if (u.tls) {
        snprintf(err, errlen, "--upstream must be plain http:// (a server on this machine)");
        return FY_ENOTSUP;
    }
    if (strchr(u.target, '?')) {
        snprintf(err, errlen, "--upstream must not have a query string");
        return FY_EINVAL;
    }
    fy_rn_upstream *up = calloc(1, sizeof *up);
    if (!up) {
        return FY_ENOMEM;
    }
    up->loop = loop;
    size_t tl = strlen(u.target);
    while (tl > 0 && u.target[tl - 1] == '/') {
        tl--;
    }
    int v6 = strchr(u.host, ':') != NULL;
    int n = snprintf(up->base, sizeof up->base, "http://%s%s%s:%d%.*s", v6 ? "[" : "", u.host,
                     v6 ? "]" : "", u.port, (int)tl, u.target);
    if (n < 0 || (size_t)n >= sizeof up->base) {
        free(up);
        snprintf(err, errlen, "--upstream is too long");
        return FY_EINVAL;
    }
    fy_http_client_options co = {
        .read_timeout_ms = o->timeout_ms ? o->timeout_ms : UP_DEFAULT_TIMEOUT,
        .connect_timeout_ms = o->connect_timeout,
        /* Keep as many idle upstream connections as a busy tunnel has
         * requests in flight: with the client's default (16), 64 concurrent
         * requests redialled the upstream for about every other request
         * (bench_tunnel.sh: 48k connects per 10 s run, connect() 21% of the
         * runner's profile). Idle ones still close after the pool timeout. */
        .max_idle = UP_MAX_IDLE,
    };
    int rc = fy_http_client_new(loop, &co, &up->client);
    if (rc) {
        free(up);
        snprintf(err, errlen, "cannot create the HTTP client: %s", fy_strerror(rc));
        return rc;
    }
    *out = up;
    return 0;
}

void fy_rn_upstream_free(fy_rn_upstream *up)
{
    if (!up) {
        return;
    }
    fy_http_client_close(up->client);
    free(up);
}

const char *fy_rn_upstream_base(const fy_rn_upstream *up)
{
    return up->base;
}

void fy_rn_upstream_stats_get(const fy_rn_upstream *up, fy_rn_upstream_stats *out)
{
    *out = up->st;
}

/* --- helpers ---------------------------------------------------------------- */

/* Returns the credit held back for request bytes the call had not drained:
 * once the call is gone nothing holds them, and the rest of the body must
 * still be able to arrive (to be dropped). */
static void st_release_credit(fy_rn_stream *st)
{
    st->blocked = 0;
    if (st->unconsumed) {
        fy_rn_stream_consume(&st->base, st->unconsumed);
        st->unconsumed = 0;
    }
}

static void st_free(fy_rn_stream *st)
{
    fy_rn_upstream *up = st->up;
    if (st->call) {
        fy_http_call_cancel(st->call);
        st->call = NULL;
    }
    st_release_credit(st);
    up->st.active--;
    if (!st->outcome) {
        up->st.completed++;
    } else if (st->canceled) {
        up->st.canceled++;
    } else {
        up->st.failed++;
    }
    uint64_t ms = (uv_hrtime() / 1000000) - st->t0;
    fy_log_event(FY_LOG_INFO, "upstream", "request",
                 json_pack("{s:s, s:s, s:s, s:i, s:s, s:I, s:I, s:I, s:s}", "request_id", st->rid,
                           "method", st->method, "path", st->path, "status", st->status, "outcome",
                           st->outcome ? st->outcome : "ok", "ms", (json_int_t)ms, "bytes_in",
                           (json_int_t)st->req_bytes, "bytes_out", (json_int_t)st->resp_bytes,
                           "conn", fy_rn_stream_label(&st->base)));
    fy_rn_stream_free(&st->base);
}

static void st_maybe_finish(fy_rn_stream *st)
{
    if (st->base.ended && st->req_ended) {
        st_free(st);
    }
}

/* Resets the stream (the gateway aborts the public response) and frees it. */
static void st_reset(fy_rn_stream *st, uint32_t code, const char *outcome)
{
    st->outcome = outcome;
    st->unconsumed = 0; /* the reset drops unconsumed data and returns its credit */
    fy_rn_stream_reset(&st->base, code);
    st_free(st);
}

/* Sends what `out` holds as far as the windows allow; then END_STREAM when
 * the response is complete, or resumes the paused call. Returns 1 when ST was
 * freed. */
static int st_pump(fy_rn_stream *st)
{
    int rc = fy_rn_stream_flush(&st->base, st->end_pending && !st->call, NULL);
    if (rc < 0) {
        st_reset(st, FYP_ERR_INTERNAL, "tunnel_error");
        return 1;
    }
    if (rc == 0) {
        return 0; /* FYP_EV_WRITABLE will come */
    }
    if (st->base.ended) {
        if (st->req_ended) {
            st_free(st);
            return 1;
        }
        return 0;
    }
    if (st->paused && st->call) {
        st->paused = 0;
        fy_http_call_resume(st->call);
    }
    return 0;
}

/* Answers with an OpenAI-style JSON error (before any RESPONSE was sent) and
 * ends our half once the body is out. Returns 1 when ST was freed. */
static int st_respond_error(fy_rn_stream *st, int status, const char *code, const char *msg)
{
    char body[512], len[24];
    size_t n = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
    snprintf(len, sizeof len, "%zu", n);
    fyp_field hdrs[] = {
        FYP_FIELD("content-type", "application/json"),
        {FY_SLICE_STR("content-length"), FY_SLICE(len, strlen(len))},
    };
    fyp_response r = {.status = (uint16_t)status, .headers = {hdrs, 2}};
    st->status = status;
    st->outcome = code;
    if (fy_rn_stream_respond(&st->base, &r)) {
        st_reset(st, FYP_ERR_INTERNAL, "tunnel_error");
        return 1;
    }
    st->responded = 1;
    /* Nothing is queued yet: body bytes are queued only after a RESPONSE. */
    if (fy_rn_stream_queue(&st->base, body, n)) {
        st_reset(st, FYP_ERR_INTERNAL, "out_of_memory");
        return 1;
    }
    st->end_pending = 1;
    return st_pump(st);
}

/* The upstream call failed (or could not start). */
static int st_upstream_failed(fy_rn_stream *st, int err)
{
    if (st->responded) {
        st_reset(st, FYP_ERR_INTERNAL, "upstream_aborted");
        return 1;
    }
    if (err == FY_ETIMEDOUT) {
        return st_respond_error(st, 504, "upstream_timeout",
                                "the runner's upstream did not answer in time");
    }
    char msg[200];
    snprintf(msg, sizeof msg, "the runner cannot reach its upstream: %s", fy_strerror(err));
    return st_respond_error(st, 502, "upstream_unavailable", msg);
}

/* 1 when NAME is listed in any Connection field of FIELDS. */
static int named_in_connection(const fyp_field *f, size_t n, const char *name, size_t len)
{
    char tok[64];
    if (len >= sizeof tok) {
        return 0;
    }
    memcpy(tok, name, len);
    tok[len] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (fy_slice_ieq(f[i].name, "connection")) {
            char v[512];
            size_t vl = f[i].value.len < sizeof v - 1 ? f[i].value.len : sizeof v - 1;
            memcpy(v, f[i].value.base, vl);
            v[vl] = '\0';
            if (fy_http_has_token(v, tok)) {
                return 1;
            }
        }
    }
    return 0;
}

/* --- the call's callbacks ----------------------------------------------------- */

static void call_on_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    fy_rn_stream *st = arg;
    fyp_field f[FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS];
    size_t n = 0;
    for (size_t i = 0; i < res->nheaders && n < FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS; i++) {
        const fy_http_header *h = &res->headers[i];
        if (fy_http_hop_by_hop(h->name, h->name_len, NULL)) {
            continue;
        }
        int conn_named = 0;
        for (size_t j = 0; j < res->nheaders; j++) {
            if (strcasecmp(res->headers[j].name, "connection") == 0 &&
                fy_http_has_token(res->headers[j].value, h->name)) {
                conn_named = 1;
            }
        }
        if (conn_named) {
            continue;
        }
        f[n].name = FY_SLICE(h->name, h->name_len);
        f[n].value = FY_SLICE(h->value, h->value_len);
        n++;
    }
    int status = res->status;
    if (status < 200 || status > 599) {
        fy_http_call_cancel(call);
        st->call = NULL;
        st_release_credit(st);
        st_respond_error(st, 502, "upstream_bad_response",
                         "the upstream answered an invalid status");
        return;
    }
    fyp_response r = {.status = (uint16_t)status, .headers = {f, n}};
    int rc = fy_rn_stream_respond(&st->base, &r);
    if (rc == FY_ETOOBIG) {
        fy_http_call_cancel(call);
        st->call = NULL;
        st_release_credit(st);
        st_respond_error(st, 502, "upstream_bad_response",
                         "the upstream's response headers are too large for the tunnel");
        return;
    }
    if (rc) {
        st_reset(st, FYP_ERR_INTERNAL, "tunnel_error");
        return;
    }
    st->status = status;
    st->responded = 1;
}

static void call_on_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    fy_rn_stream *st = arg;
    if (!st->responded || st->end_pending) {
        return; /* answered with an error already; the rest is dropped */
    }
    st->resp_bytes += len;
    int rc = fy_rn_stream_write(&st->base, data, len);
    if (rc == 0) {
        return;
    }
    if (rc < 0) {
        st_reset(st, FYP_ERR_INTERNAL, rc == FY_ECLOSED ? "tunnel_error" : "out_of_memory");
        return;
    }
    /* The windows are full: the rest is queued; stop reading the upstream. */
    if (!st->paused) {
        st->paused = 1;
        fy_http_call_pause(call);
    }
}

static void call_on_done(fy_http_call *call, int status, void *arg)
{
    (void)call;
    fy_rn_stream *st = arg;
    st->call = NULL; /* freed when this returns */
    st_release_credit(st);
    if (st->end_pending) {
        st_pump(st); /* an error answer is on its way */
        return;
    }
    if (status) {
        st_upstream_failed(st, status);
        return;
    }
    st->end_pending = 1;
    st_pump(st);
}

static void call_on_drain(fy_http_call *call, void *arg)
{
    (void)call;
    st_release_credit(arg);
}

/* --- the tunnel's entry points -------------------------------------------------- */

static void st_on_data(void *arg, const char *data, size_t len, int end);
static void st_on_writable(void *arg);
static void st_on_reset(void *arg, uint32_t code, int remote);
static const fy_rn_stream_ops st_ops = {st_on_data, st_on_writable, st_on_reset};

static void st_open(void *arg, fy_rn_conn *conn, uint32_t id, const fyp_request *req,
                    int end_stream)
{
    fy_rn_upstream *up = arg;
    fy_rn_stream *st = (fy_rn_stream *)fy_rn_stream_new(conn, id, sizeof *st, &st_ops, UP_OUT_MAX);
    char *url = NULL, *arena = NULL;
    fy_http_header *hdrs = NULL;
    if (!st) {
        return;
    }
    st->up = up;
    st->t0 = uv_hrtime() / 1000000;
    st->req_ended = end_stream != 0;
    up->st.started++;
    up->st.active++;

    const fyp_field *rid = fyp_fields_get(&req->meta, "request-id");
    if (rid) {
        snprintf(st->rid, sizeof st->rid, "%.*s", (int)rid->value.len, rid->value.base);
    }
    snprintf(st->method, sizeof st->method, "%.*s", (int)req->method.len, req->method.base);
    size_t pl = strcspn(req->target.base, "?");
    pl = pl < req->target.len ? pl : req->target.len;
    snprintf(st->path, sizeof st->path, "%.*s", (int)pl, req->target.base);

    if (req->target.len == 0 || req->target.base[0] != '/') {
        st_respond_error(st, 400, "invalid_target", "the request target must start with '/'");
        return; /* ST may be gone already */
    }

    /* Headers, copied NUL-terminated (the call wants C strings). */
    size_t need = 0, nh = 0;
    int64_t clen = -1;
    for (size_t i = 0; i < req->headers.n; i++) {
        need += req->headers.v[i].name.len + req->headers.v[i].value.len + 2;
    }
    arena = malloc(need + 1);
    hdrs = calloc(req->headers.n + 1, sizeof *hdrs);
    size_t ul = strlen(up->base) + req->target.len + 1;
    url = malloc(ul);
    if (!arena || !hdrs || !url) {
        free(arena);
        free(hdrs);
        free(url);
        st_reset(st, FYP_ERR_INTERNAL, "out_of_memory");
        return;
    }
    snprintf(url, ul, "%s%.*s", up->base, (int)req->target.len, req->target.base);
    char *p = arena;
    for (size_t i = 0; i < req->headers.n; i++) {
        const fyp_field *f = &req->headers.v[i];
        if (fy_http_hop_by_hop(f->name.base, f->name.len, NULL) || fy_slice_ieq(f->name, "host") ||
            fy_slice_ieq(f->name, "expect") ||
            named_in_connection(req->headers.v, req->headers.n, f->name.base, f->name.len)) {
            continue;
        }
        if (fy_slice_ieq(f->name, "content-length")) {
            char v[24];
            char *end;
            if (f->value.len > 0 && f->value.len < sizeof v) {
                memcpy(v, f->value.base, f->value.len);
                v[f->value.len] = '\0';
                long long x = strtoll(v, &end, 10);
                if (*end == '\0' && x >= 0) {
                    clen = x;
                }
            }
            continue; /* the client writes its own */
        }
        hdrs[nh].name = p;
        hdrs[nh].name_len = f->name.len;
        memcpy(p, f->name.base, f->name.len);
        p += f->name.len;
        *p++ = '\0';
        hdrs[nh].value = p;
        hdrs[nh].value_len = f->value.len;
        memcpy(p, f->value.base, f->value.len);
        p += f->value.len;
        *p++ = '\0';
        nh++;
    }
    fy_http_call_options co = {
        .method = st->method,
        .url = url,
        .headers = hdrs,
        .nheaders = nh,
        .stream_body = !end_stream,
        .content_length = clen,
        .cbs =
            {
                .on_response = call_on_response,
                .on_data = call_on_data,
                .on_done = call_on_done,
                .on_drain = call_on_drain,
            },
        .arg = st,
    };
    st->streaming = !end_stream;
    int rc = fy_http_call_start(up->client, &co, &st->call);
    free(arena);
    free(hdrs);
    free(url);
    if (rc) {
        st->call = NULL;
        if (rc == FY_EINVAL) {
            st_respond_error(st, 400, "invalid_request",
                             "the request cannot be forwarded to the upstream");
        } else {
            st_upstream_failed(st, rc);
        }
    }
}

fy_rn_opener fy_rn_upstream_opener(fy_rn_upstream *up)
{
    return (fy_rn_opener){st_open, up};
}

static void st_on_data(void *arg, const char *data, size_t len, int end)
{
    fy_rn_stream *st = arg;
    st->req_bytes += len;
    if (len && !(st->call && st->streaming)) {
        /* No call takes it (finished or failed): drop it, return the credit. */
        fy_rn_stream_consume(&st->base, len);
    } else if (len) {
        int rc = fy_http_call_write(st->call, data, len);
        if (rc < 0 && rc != FY_ECLOSED) {
            /* The call refused bytes it should have taken: the body would
             * arrive incomplete, so give up on the request (the reset drops
             * whatever else the gateway sends). */
            st_reset(st, FYP_ERR_INTERNAL, "body_refused");
            return;
        }
        if (rc != FY_ECLOSED && (st->blocked || rc == 1)) {
            /* Past the call's watermark: the credit waits for its drain. */
            st->blocked = 1;
            st->unconsumed += len;
        } else {
            /* Taken; or its connection is failing and on_done will tell,
             * so the bytes are dropped. Either way the credit goes back. */
            fy_rn_stream_consume(&st->base, len);
        }
    }
    if (end) {
        st->req_ended = 1;
        if (st->call && st->streaming) {
            int rc = fy_http_call_end(st->call);
            if (rc) {
                /* The body did not match its Content-Length. */
                fy_http_call_cancel(st->call);
                st->call = NULL;
                st_release_credit(st);
                if (!st->responded) {
                    st_respond_error(st, 400, "invalid_request",
                                     "the request body does not match its Content-Length");
                } else {
                    st_reset(st, FYP_ERR_INTERNAL, "bad_body");
                }
                return;
            }
        }
        st_maybe_finish(st);
    }
}

static void st_on_writable(void *arg)
{
    st_pump(arg);
}

static void st_on_reset(void *arg, uint32_t code, int remote)
{
    fy_rn_stream *st = arg;
    /* The session already dropped the stream's unconsumed data. */
    st->unconsumed = 0;
    if (st->base.ended) {
        /* The whole response went out; the gateway only gave up sending the
         * rest of a request body nobody reads. */
        st_free(st);
        return;
    }
    st->canceled = 1;
    st->outcome = code == FYP_ERR_CANCEL ? "canceled"
                  : remote               ? "reset_by_gateway"
                                         : "connection_lost";
    st_free(st);
}
