/* fuzz_http_request: bytes from a stranger through the real server
 * connection code. The input is written to one end of an in-memory stream
 * pair whose other end is attached to an fy_http_server; the client side then
 * half-closes. Every input must end in handler calls and/or a 4xx/5xx, the
 * server must close the connection by itself, and what it writes back must
 * stay bounded. Crashes, leaks and hangs (the loop is bounded) are findings. */
#include "common/err.h"
#include "common/http.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
    fy_buf out;
    int eof;
    int srv_closed;
    int guard_fired;
} fuzz_state;

static void on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    fuzz_state *st = s->data;
    if (n < 0) {
        st->eof = 1;
        return;
    }
    if (fy_buf_append(&st->out, buf->base, (size_t)n)) {
        /* The server answered far more than any input could justify. */
        abort();
    }
}

static void body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    uint64_t *n = arg;
    (void)data;
    *n += len;
    /* Exercise backpressure: pause and resume from inside the callback. */
    fy_http_req_pause(req);
    fy_http_req_resume(req);
}

static void body_end(fy_http_req *req, int status, void *arg)
{
    char out[64];
    int n = snprintf(out, sizeof out, "%d %llu", status, (unsigned long long)*(uint64_t *)arg);
    free(arg);
    fy_http_respond(req, 200, NULL, 0, out, (size_t)n);
}

static void buffered_end(fy_http_req *req, int status, void *arg)
{
    (void)arg;
    fy_slice b = fy_http_req_body(req);
    if (status) {
        fy_http_respond_error(req, 400, "body", fy_strerror(status));
    } else {
        fy_http_respond(req, 200, NULL, 0, b.base, b.len);
    }
}

static void handler(fy_http_req *req, void *data)
{
    (void)data;
    const char *path = fy_http_req_path(req);
    size_t n;
    const fy_http_header *h = fy_http_req_headers(req, &n);
    (void)fy_http_header_find(h, n, "content-type");
    switch (path[0] == '/' ? path[1] : 0) {
    case 'b': {
        uint64_t *count = calloc(1, sizeof *count);
        if (fy_http_req_read_body(req, body_data, body_end, count)) {
            free(count);
            fy_http_respond(req, 500, NULL, 0, NULL, 0);
        }
        break;
    }
    case 'u':
        if (fy_http_req_buffer_body(req, buffered_end, NULL)) {
            fy_http_respond(req, 500, NULL, 0, NULL, 0);
        }
        break;
    case 's':
        fy_http_res_start(req, 200, h, n > 4 ? 4 : n, -1);
        fy_http_res_write(req, fy_http_req_target(req), strlen(fy_http_req_target(req)));
        fy_http_res_end(req);
        break;
    case 'a':
        fy_http_res_abort(req);
        break;
    default:
        fy_http_respond(req, 200, NULL, 0, fy_http_req_method(req),
                        strlen(fy_http_req_method(req)));
        break;
    }
}

static void on_guard(uv_timer_t *t)
{
    fuzz_state *st = t->data;
    st->guard_fired = 1;
}

static void on_srv_closed(fy_http_server *srv, void *arg)
{
    (void)srv;
    ((fuzz_state *)arg)->srv_closed = 1;
}

static void run_until(uv_loop_t *loop, fuzz_state *st, int *flag)
{
    uv_timer_t guard;
    uv_timer_init(loop, &guard);
    guard.data = st;
    st->guard_fired = 0;
    uv_timer_start(&guard, on_guard, 5000, 0);
    while (!*flag && !st->guard_fired) {
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (!*flag) {
        abort(); /* a hang */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uv_loop_t loop;
    fuzz_state st = {0};
    fy_http_server *srv = NULL;
    fy_stream *a = NULL, *b = NULL;
    if (uv_loop_init(&loop)) {
        return 0;
    }
    fy_buf_init(&st.out, 64 * 1024 + 64 * size);
    fy_http_server_options o = {
        .on_request = handler,
        .max_body = 4096,
        .buffer_body = size > 0 && (data[size - 1] & 1),
        .header_timeout_ms = 50,
        .body_timeout_ms = 50,
        .idle_timeout_ms = 50,
    };
    if (fy_http_server_new(&loop, &o, &srv) || fy_stream_pair_new(&loop, &a, &b)) {
        abort();
    }
    b->data = &st;
    b->on_read = on_read;
    fy_stream_read_start(b);
    fy_http_server_attach(srv, a);
    fy_slice sl = FY_SLICE(data, size);
    if (size) {
        fy_stream_write(b, &sl, 1, NULL, NULL);
    }
    fy_stream_shutdown(b);
    run_until(&loop, &st, &st.eof);
    fy_http_server_close(srv, on_srv_closed, &st);
    fy_stream_close(b, NULL);
    run_until(&loop, &st, &st.srv_closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop)) {
        abort(); /* a handle leaked */
    }
    fy_buf_free(&st.out);
    return 0;
}
