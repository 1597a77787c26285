/* http_fetch.c: one blocking HTTP request on a private loop (http_fetch.h). */
#include "common/http_fetch.h"

#include "common/err.h"
#include "common/http_client.h"

#include <stdio.h>

typedef struct {
    int done;
    int status; /* on_done's, or FY_ETOOBIG */
    fy_http_fetch_result *res;
} fetch_call;

static void on_response(fy_http_call *call, const fy_http_response *r, void *arg)
{
    (void)call;
    ((fetch_call *)arg)->res->status = r->status;
}

static void on_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    fetch_call *fc = arg;
    if (fy_buf_append(&fc->res->body, data, len)) {
        /* A response this large is not the one asked for: give up on it. */
        fy_http_call_cancel(call);
        fc->status = FY_ETOOBIG;
        fc->done = 1;
    }
}

static void on_done(fy_http_call *call, int status, void *arg)
{
    (void)call;
    fetch_call *fc = arg;
    fc->status = status;
    fc->done = 1;
}

/* Starts the call on CLIENT and runs LOOP until it is over. */
static int fetch_run(uv_loop_t *loop, fy_http_client *client, const fy_http_fetch_options *o,
                     fy_http_fetch_result *res)
{
    fetch_call fc = {.res = res};
    fy_http_call_options co = {
        .method = o->method,
        .url = o->url,
        .headers = o->headers,
        .nheaders = o->nheaders,
        .body = o->body,
        .body_len = o->body ? o->body_len : 0,
        .cbs = {.on_response = on_response, .on_data = on_data, .on_done = on_done},
        .arg = &fc,
    };
    int rc = fy_http_call_start(client, &co, NULL);
    if (rc) {
        res->stage = FY_HTTP_FETCH_START;
        return rc;
    }
    while (!fc.done && uv_run(loop, UV_RUN_ONCE)) {
    }
    rc = fc.done ? fc.status : FY_EIO; /* FY_EIO: the loop ran dry without an answer */
    res->stage = rc ? FY_HTTP_FETCH_FAILED : FY_HTTP_FETCH_OK;
    return rc;
}

int fy_http_fetch(const fy_http_fetch_options *o, fy_http_fetch_result *res, char *err,
                  size_t errlen)
{
    uv_loop_t loop;
    fy_http_client *client = NULL;
    int rc;
    res->stage = FY_HTTP_FETCH_SETUP;
    res->status = 0;
    fy_buf_init(&res->body, o->max_body);
    if (uv_loop_init(&loop)) {
        snprintf(err, errlen, "cannot create an event loop");
        return FY_EUV;
    }
    fy_http_client_options co = {
        .tls = o->tls,
        .connect_timeout_ms = o->timeout_ms,
        .read_timeout_ms = o->timeout_ms,
    };
    if ((rc = fy_http_client_new(&loop, &co, &client))) {
        snprintf(err, errlen, "cannot create the HTTP client: %s", fy_strerror(rc));
    } else if ((rc = fetch_run(&loop, client, o, res))) {
        snprintf(err, errlen, "%s", fy_strerror(rc));
    }
    fy_http_client_close(client);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return rc;
}
