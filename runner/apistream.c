/* apistream.c: one tunnel stream <-> one call of the built-in API.
 *
 * The request body is buffered (credit returned as it is copied, so the
 * buffer's cap is the only bound) and handed to fy_api_handle() once it
 * ended; this file is the API's transport for the tunnel: RESPONSE, DATA as
 * far as the windows allow (the rest waits in `out`, bounded for streamed
 * bodies), then END_STREAM, or TRAILERS with the usage when the API reports
 * one, which is what the gateway charges to the key's token limits.
 *
 * Lifetime: a stream is freed when both halves ended, when it is reset by
 * the gateway or its connection (the API call is cancelled first), or when
 * the API gives up on it (abort: the stream is reset). */
#include "runner/runner.h"

#include "common/err.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AS_PATH_MAX 256

typedef struct {
    fy_rn_stream_base base; /* first */
    fy_api *api;
    fy_api_call *call;
    fy_buf body;
    fyp_trailers usage;
    char key_id[128];
    char method[FYP_MAX_METHOD_LEN + 1];
    char path[AS_PATH_MAX];
    unsigned req_ended : 1;
    unsigned handled : 1;   /* given to the API (or answered) */
    unsigned finishing : 1; /* the API finished: END_STREAM/TRAILERS once `out` is sent */
    unsigned has_usage : 1;
    unsigned in_reset : 1; /* on_reset is cancelling the call */
} api_stream;

static void as_free(api_stream *st)
{
    fy_buf_free(&st->body);
    fy_rn_stream_free(&st->base);
}

static void as_reset(api_stream *st, uint32_t code)
{
    fy_rn_stream_reset(&st->base, code);
    as_free(st);
}

/* Sends what `out` holds, then ends the half once the API finished (with
 * the usage as TRAILERS when it reported one). Returns 1 when ST was freed. */
static int as_pump(api_stream *st)
{
    int rc = fy_rn_stream_flush(&st->base, st->finishing, st->has_usage ? &st->usage : NULL);
    if (rc < 0) {
        as_reset(st, FYP_ERR_INTERNAL);
        return 1;
    }
    if (st->base.ended && st->req_ended) {
        as_free(st);
        return 1;
    }
    return 0;
}

/* --- the API's transport ----------------------------------------------------------- */

static int as_head(api_stream *st, int status, const fy_http_header *h, size_t n, int64_t clen)
{
    fyp_field f[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 7; i++) {
        f[k].name = FY_SLICE(h[i].name, h[i].name_len ? h[i].name_len : strlen(h[i].name));
        f[k].value = FY_SLICE(h[i].value, h[i].value_len ? h[i].value_len : strlen(h[i].value));
        k++;
    }
    char len[24];
    if (clen >= 0) {
        snprintf(len, sizeof len, "%lld", (long long)clen);
        f[k].name = FY_SLICE_STR("content-length");
        f[k].value = FY_SLICE(len, strlen(len));
        k++;
    }
    fyp_response r = {.status = (uint16_t)status, .headers = {f, k}};
    return fy_rn_stream_respond(&st->base, &r);
}

static void as_set_usage(api_stream *st, const fy_oai_usage *u)
{
    if (u) {
        st->has_usage = 1;
        st->usage.has_usage = 1;
        st->usage.prompt_tokens = (uint32_t)(u->prompt_tokens > 0 ? u->prompt_tokens : 0);
        st->usage.completion_tokens =
            (uint32_t)(u->completion_tokens > 0 ? u->completion_tokens : 0);
    }
}

static int tp_respond(void *t, int status, const fy_http_header *h, size_t n, const char *body,
                      size_t len, const fy_oai_usage *u)
{
    api_stream *st = t;
    st->call = NULL;
    if (as_head(st, status, h, n, (int64_t)len)) {
        as_reset(st, FYP_ERR_INTERNAL);
        return FY_ECLOSED;
    }
    /* A whole body is in memory already: `out` may hold all of it. */
    if (fy_rn_stream_queue(&st->base, body, len)) {
        as_reset(st, FYP_ERR_INTERNAL);
        return FY_ENOMEM;
    }
    as_set_usage(st, u);
    st->finishing = 1;
    as_pump(st);
    return 0;
}

static int tp_start(void *t, int status, const fy_http_header *h, size_t n)
{
    api_stream *st = t;
    return as_head(st, status, h, n, -1) ? FY_ECLOSED : 0;
}

static int tp_write(void *t, const char *data, size_t len)
{
    api_stream *st = t;
    /* The windows are full (a slow public client): the queue is a bounded
     * backlog, over which the API gives up. */
    int rc = fy_rn_stream_write(&st->base, data, len);
    return rc < 0 ? rc : 0;
}

static int tp_end(void *t, const fy_oai_usage *u)
{
    api_stream *st = t;
    st->call = NULL;
    as_set_usage(st, u);
    st->finishing = 1;
    as_pump(st);
    return 0;
}

static void tp_abort(void *t)
{
    api_stream *st = t;
    st->call = NULL;
    if (st->in_reset) {
        return; /* on_reset frees it */
    }
    as_reset(st, FYP_ERR_INTERNAL);
}

static const fy_api_transport tunnel_transport = {tp_respond, tp_start, tp_write, tp_end, tp_abort};

/* --- session events ---------------------------------------------------------------- */

static void as_serve(api_stream *st)
{
    st->handled = 1;
    fy_api_request r = {
        .method = st->method,
        .path = st->path,
        .key_id = st->key_id[0] ? st->key_id : NULL,
        .body = st->body.data ? st->body.data : "",
        .body_len = st->body.len,
    };
    fy_api_call *c = fy_api_handle(st->api, &r, &tunnel_transport, st);
    if (c) {
        st->call = c; /* ST is alive while its call is */
        fy_buf_free(&st->body);
    }
}

/* Answers an error before the API saw the request. */
static void as_fail(api_stream *st, int status, const char *code, const char *msg)
{
    st->handled = 1;
    fy_oai_error e;
    fy_oai_fail(&e, status, NULL, code, "%s", msg);
    size_t len = 0;
    char *body = fy_oai_error_json(&e, &len);
    static const fy_http_header h[] = {{"content-type", "application/json", 0, 0}};
    tp_respond(st, status, h, 1, body ? body : "", body ? len : 0, NULL);
    free(body);
}

static void as_on_data(void *arg, const char *data, size_t len, int end)
{
    api_stream *st = arg;
    if (len) {
        fy_rn_stream_consume(&st->base, len);
    }
    if (!st->handled && len && fy_buf_append(&st->body, data, len)) {
        fy_buf_free(&st->body);
        if (end) {
            st->req_ended = 1;
        }
        as_fail(st, 413, "body_too_large", "the request body is too large");
        return; /* ST may be gone */
    }
    if (!end) {
        return;
    }
    st->req_ended = 1;
    if (!st->handled) {
        as_serve(st);
    } else if (st->base.ended) {
        as_free(st);
    }
}

static void as_on_writable(void *arg)
{
    api_stream *st = arg;
    as_pump(st);
}

static void as_on_reset(void *arg, uint32_t code, int remote)
{
    (void)code;
    (void)remote;
    api_stream *st = arg;
    if (st->call) {
        st->in_reset = 1;
        fy_api_call_cancel(st->call); /* aborts the engine request */
    }
    as_free(st);
}

static const fy_rn_stream_ops as_ops = {as_on_data, as_on_writable, as_on_reset};

static void field_copy(char *dst, size_t cap, fy_slice v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.base, n);
    dst[n] = '\0';
}

static void as_open(void *arg, fy_rn_conn *conn, uint32_t id, const fyp_request *req,
                    int end_stream)
{
    fy_api *api = arg;
    api_stream *st =
        (api_stream *)fy_rn_stream_new(conn, id, sizeof *st, &as_ops, FY_API_MAX_BACKLOG);
    if (!st) {
        return;
    }
    st->api = api;
    fy_buf_init(&st->body, FY_API_MAX_BODY);

    field_copy(st->method, sizeof st->method, req->method);
    size_t pl = 0;
    while (pl < req->target.len && req->target.base[pl] != '?') {
        pl++;
    }
    if (pl >= sizeof st->path) {
        st->req_ended = end_stream != 0;
        as_fail(st, 414, "uri_too_long", "the request path is too long");
        return;
    }
    field_copy(st->path, sizeof st->path, FY_SLICE(req->target.base, pl));
    /* The key id is what the gateway says: its metadata (clients cannot set
     * it), or the x-ferry-key-id header it writes. */
    const fyp_field *k = fyp_fields_get(&req->meta, "key-id");
    if (!k) {
        for (size_t i = 0; i < req->headers.n; i++) {
            const fyp_field *f = &req->headers.v[i];
            if (f->name.len == 14 && strncasecmp(f->name.base, "x-ferry-key-id", 14) == 0) {
                k = f;
            }
        }
    }
    if (k) {
        field_copy(st->key_id, sizeof st->key_id, k->value);
    }
    if (end_stream) {
        st->req_ended = 1;
        as_serve(st);
    }
}

fy_rn_opener fy_rn_apistream_opener(fy_api *api)
{
    return (fy_rn_opener){as_open, api};
}
