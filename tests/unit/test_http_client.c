/* Unit tests for common/http_client against common/http_server in one
 * process, over TCP on 127.0.0.1 (port 0): pool reuse, stale connections and
 * the one retry, streamed bodies both ways with backpressure, timeouts and
 * cancellation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/http.h"
#include "common/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
    uv_loop_t loop;
    fy_http_server *srv;
    fy_http_client *cl;
    char base[64];
    int timed_out;
    int srv_closed;
    /* server side */
    int aborts;
    char flaky_peer[64];
    int flaky_aborted;
    uint64_t big_bytes;
} env;

typedef struct {
    env *e;
    int done;
    int status;
    int http_status;
    char ctype[64];
    uint64_t bytes;
    uint64_t sum;
    char text[128];
    int paused_calls; /* on_data while paused: must stay 0 */
    int paused;
    int drains;
    int responses;
    fy_http_call *call;
    uv_timer_t timer;
    const char *chain_url; /* start another call from on_done */
} result;

/* --- server handler --------------------------------------------------------- */

typedef struct {
    uint64_t n, sum;
} count_ctx;

static void count_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    count_ctx *c = arg;
    (void)req;
    c->n += len;
    for (size_t i = 0; i < len; i++) {
        c->sum += (unsigned char)data[i];
    }
}

static void count_end(fy_http_req *req, int status, void *arg)
{
    count_ctx *c = arg;
    char out[64];
    int n = snprintf(out, sizeof out, "%llu %llu", (unsigned long long)c->n,
                     (unsigned long long)c->sum);
    free(c);
    if (status) {
        fy_http_respond_error(req, 400, "body", fy_strerror(status));
        return;
    }
    fy_http_respond(req, 200, NULL, 0, out, (size_t)n);
}

static void hold_abort(fy_http_req *req, int status, void *arg)
{
    env *e = arg;
    (void)status;
    e->aborts++;
    fy_http_res_end(req);
}

typedef struct {
    uint64_t left;
    char block[8192];
} big_ctx;

static void big_abort(fy_http_req *req, int status, void *arg)
{
    (void)status;
    free(arg);
    fy_http_res_end(req);
}

static void big_pump(fy_http_req *req, void *arg)
{
    big_ctx *b = arg;
    while (b->left) {
        size_t n = b->left < sizeof b->block ? (size_t)b->left : sizeof b->block;
        int rc = fy_http_res_write(req, b->block, n);
        if (rc < 0) {
            return;
        }
        b->left -= n;
        if (rc == 1) {
            fy_http_res_on_drain(req, big_pump, b);
            return;
        }
    }
    free(b);
    fy_http_res_end(req);
}

/* A handler that reads its body slowly: it pauses after every piece and
 * resumes 2 ms later. No piece may arrive while it is paused. */
typedef struct {
    fy_http_req *req;
    uv_timer_t t;
    uint64_t n;
    int paused, while_paused, pauses;
} slow_reader;

static void slow_closed(uv_handle_t *h)
{
    free(h->data);
}

static void slow_resume(uv_timer_t *t)
{
    slow_reader *s = t->data;
    s->paused = 0;
    fy_http_req_resume(s->req);
}

static void slow_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    slow_reader *s = arg;
    (void)data;
    if (s->paused) {
        s->while_paused++;
    }
    s->n += len;
    s->paused = 1;
    s->pauses++;
    fy_http_req_pause(req);
    uv_timer_start(&s->t, slow_resume, 2, 0);
}

static void slow_end(fy_http_req *req, int status, void *arg)
{
    slow_reader *s = arg;
    char out[96];
    int n = snprintf(out, sizeof out, "%d %llu %d %d", status, (unsigned long long)s->n,
                     s->while_paused, s->pauses);
    uv_timer_stop(&s->t);
    uv_close((uv_handle_t *)&s->t, slow_closed);
    fy_http_respond(req, 200, NULL, 0, out, (size_t)n);
}

static void handler(fy_http_req *req, void *data)
{
    env *e = data;
    const char *path = fy_http_req_path(req);
    if (strcmp(path, "/fixed") == 0) {
        fy_http_header h[] = {{"Content-Type", "text/plain", 0, 0}};
        fy_http_respond(req, 200, h, 1, "hello", 5);
    } else if (strcmp(path, "/count") == 0) {
        count_ctx *c = calloc(1, sizeof *c);
        assert_int_equal(fy_http_req_read_body(req, count_data, count_end, c), 0);
    } else if (strcmp(path, "/big") == 0) {
        big_ctx *b = malloc(sizeof *b);
        b->left = e->big_bytes;
        for (size_t i = 0; i < sizeof b->block; i++) {
            b->block[i] = (char)(i * 7);
        }
        fy_http_res_start(req, 200, NULL, 0, -1);
        fy_http_req_on_abort(req, big_abort, b);
        big_pump(req, b);
    } else if (strcmp(path, "/slowread") == 0) {
        slow_reader *s = calloc(1, sizeof *s);
        s->req = req;
        uv_timer_init(&e->loop, &s->t);
        s->t.data = s;
        assert_int_equal(fy_http_req_read_body(req, slow_data, slow_end, s), 0);
    } else if (strcmp(path, "/hold") == 0) {
        fy_http_req_on_abort(req, hold_abort, e);
    } else if (strcmp(path, "/flaky") == 0) {
        /* The second request on a connection finds it closed, as if the
         * server's idle timeout had just fired. */
        /* (Connections are told apart by the client's port: a stream's
         * address may be reused by the next connection.) */
        const char *peer = fy_http_req_peer(req);
        if (strcmp(peer, e->flaky_peer) == 0) {
            e->flaky_aborted++;
            fy_http_res_abort(req);
            return;
        }
        snprintf(e->flaky_peer, sizeof e->flaky_peer, "%s", peer);
        fy_http_respond(req, 200, NULL, 0, "flaky", 5);
    } else {
        fy_http_respond_error(req, 404, "not_found", "no route");
    }
}

/* --- harness -------------------------------------------------------------- */

static void on_guard(uv_timer_t *t)
{
    env *e = t->data;
    e->timed_out = 1;
    uv_stop(t->loop);
}

static void run_until(env *e, int *flag, unsigned ms)
{
    uv_timer_t t;
    uv_timer_init(&e->loop, &t);
    t.data = e;
    e->timed_out = 0;
    uv_timer_start(&t, on_guard, ms, 0);
    while (!*flag && !e->timed_out) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    if (!*flag) {
        fail_msg("timed out after %u ms", ms);
    }
}

static void sleep_loop(env *e, unsigned ms)
{
    int never = 0;
    uv_timer_t t;
    uv_timer_init(&e->loop, &t);
    t.data = e;
    e->timed_out = 0;
    uv_timer_start(&t, on_guard, ms, 0);
    while (!never && !e->timed_out) {
        uv_run(&e->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
}

static env *env_new(const fy_http_server_options *so, const fy_http_client_options *co)
{
    env *e = calloc(1, sizeof *e);
    assert_int_equal(uv_loop_init(&e->loop), 0);
    fy_http_server_options o = {
        .listen = "127.0.0.1:0", .on_request = handler, .data = e, .max_body = 8 << 20};
    if (so) {
        o.idle_timeout_ms = so->idle_timeout_ms;
    }
    assert_int_equal(fy_http_server_new(&e->loop, &o, &e->srv), 0);
    assert_true(fy_http_server_port(e->srv) > 0);
    snprintf(e->base, sizeof e->base, "http://127.0.0.1:%d", fy_http_server_port(e->srv));
    assert_int_equal(fy_http_client_new(&e->loop, co, &e->cl), 0);
    e->big_bytes = 1 << 20;
    return e;
}

static void srv_closed(fy_http_server *srv, void *arg)
{
    (void)srv;
    ((env *)arg)->srv_closed = 1;
}

static void env_free(env *e)
{
    fy_http_client_close(e->cl);
    fy_http_server_close(e->srv, srv_closed, e);
    run_until(e, &e->srv_closed, 3000);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
    free(e);
}

/* --- client callbacks ------------------------------------------------------- */

static void r_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    result *r = arg;
    (void)call;
    r->responses++;
    r->http_status = res->status;
    const char *ct = fy_http_header_find(res->headers, res->nheaders, "content-type");
    snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "");
}

static void r_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    result *r = arg;
    (void)call;
    if (r->paused) {
        r->paused_calls++;
    }
    if (r->bytes + len < sizeof r->text) {
        memcpy(r->text + r->bytes, data, len);
    }
    r->bytes += len;
    for (size_t i = 0; i < len; i++) {
        r->sum += (unsigned char)data[i];
    }
}

static void start_get(env *e, result *r, const char *path);

static void r_done(fy_http_call *call, int status, void *arg)
{
    result *r = arg;
    (void)call;
    r->call = NULL;
    r->status = status;
    r->done = 1;
    if (r->chain_url) {
        const char *next = r->chain_url;
        r->chain_url = NULL;
        r->done = 0;
        start_get(r->e, r, next);
    }
}

static const fy_http_call_cbs result_cbs = {r_response, r_data, r_done, NULL};

static void start_call(env *e, result *r, const char *method, const char *path,
                       const fy_http_call_options *extra)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", e->base, path);
    fy_http_call_options o = {.method = method, .url = url, .cbs = result_cbs, .arg = r};
    if (extra) {
        o.body = extra->body;
        o.body_len = extra->body_len;
        o.stream_body = extra->stream_body;
        o.content_length = extra->content_length;
        o.cbs.on_drain = extra->cbs.on_drain;
    }
    r->e = e;
    r->done = 0;
    assert_int_equal(fy_http_call_start(e->cl, &o, &r->call), 0);
}

static void start_get(env *e, result *r, const char *path)
{
    start_call(e, r, "GET", path, NULL);
}

/* --- tests ---------------------------------------------------------------------- */

static void test_pool_reuse(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    result r = {0};
    r.chain_url = "/fixed"; /* the second call starts from the first's on_done */
    start_get(e, &r, "/fixed");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.http_status, 200);
    assert_string_equal(r.ctype, "text/plain");
    assert_int_equal(r.bytes, 10);
    assert_int_equal(r.responses, 2);
    /* A third call after a loop turn, from the pool. */
    start_get(e, &r, "/fixed");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    /* HEAD: a Content-Length but no body, and the connection stays usable. */
    start_call(e, &r, "HEAD", "/fixed", NULL);
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.bytes, 15);
    fy_http_client_stats cs;
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.connects, 1);
    assert_int_equal(cs.reused, 3);
    assert_int_equal(cs.idle, 1);
    fy_http_server_stats ss;
    fy_http_server_stats_get(e->srv, &ss);
    assert_int_equal(ss.accepted, 1);
    assert_int_equal(ss.requests, 4);
    /* A 404 with its JSON body. */
    start_get(e, &r, "/nope");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.http_status, 404);
    assert_string_equal(r.ctype, "application/json");
    env_free(e);
}

/* The pool keeps at most max_idle connections per origin. */
static void test_pool_bound(void **state)
{
    (void)state;
    fy_http_client_options co = {.max_idle = 2};
    env *e = env_new(NULL, &co);
    result r[4] = {{0}};
    for (int i = 0; i < 4; i++) {
        start_get(e, &r[i], "/fixed");
    }
    for (int i = 0; i < 4; i++) {
        run_until(e, &r[i].done, 3000);
        assert_int_equal(r[i].status, 0);
    }
    fy_http_client_stats cs;
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.connects, 4);
    assert_int_equal(cs.idle, 2);
    /* The next two reuse the pool; the server saw 4 connections in all. */
    start_get(e, &r[0], "/fixed");
    start_get(e, &r[1], "/fixed");
    run_until(e, &r[0].done, 3000);
    run_until(e, &r[1].done, 3000);
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.connects, 4);
    assert_int_equal(cs.reused, 2);
    fy_http_server_stats ss;
    fy_http_server_stats_get(e->srv, &ss);
    assert_int_equal(ss.accepted, 4);
    env_free(e);
}

static void test_whole_body(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    result r = {0};
    char body[1000];
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof body; i++) {
        body[i] = (char)(i * 13);
        sum += (unsigned char)body[i];
    }
    fy_http_call_options o = {.body = body, .body_len = sizeof body};
    start_call(e, &r, "POST", "/count", &o);
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.http_status, 200);
    char want[64];
    snprintf(want, sizeof want, "1000 %llu", (unsigned long long)sum);
    assert_int_equal(r.bytes, strlen(want));
    env_free(e);
}

typedef struct {
    result r;
    uint64_t total, sent, sum;
    int chunked;
} upload;

static void upload_pump(fy_http_call *call, void *arg)
{
    upload *u = arg;
    char block[16384];
    u->r.drains++;
    while (u->sent < u->total) {
        size_t n = u->total - u->sent < sizeof block ? (size_t)(u->total - u->sent) : sizeof block;
        for (size_t i = 0; i < n; i++) {
            block[i] = (char)((u->sent + i) % 251);
        }
        int rc = fy_http_call_write(call, block, n);
        assert_true(rc >= 0);
        u->sent += n;
        if (rc == 1) {
            return; /* on_drain resumes */
        }
    }
    assert_int_equal(fy_http_call_end(call), 0);
    assert_int_equal(fy_http_call_end(call), FY_EINVAL);
}

static void test_streamed_upload(void **state)
{
    (void)state;
    for (int chunked = 0; chunked < 2; chunked++) {
        env *e = env_new(NULL, NULL);
        upload u = {.total = 900000, .chunked = chunked};
        for (uint64_t i = 0; i < u.total; i++) {
            u.sum += i % 251;
        }
        fy_http_call_options o = {.stream_body = 1,
                                  .content_length = chunked ? -1 : (int64_t)u.total,
                                  .cbs.on_drain = upload_pump};
        char url[256];
        snprintf(url, sizeof url, "%s/count", e->base);
        fy_http_call_options full = {.method = "POST", .url = url, .cbs = result_cbs, .arg = &u};
        full.stream_body = o.stream_body;
        full.content_length = o.content_length;
        full.cbs.on_drain = upload_pump;
        u.r.e = e;
        assert_int_equal(fy_http_call_start(e->cl, &full, &u.r.call), 0);
        /* Written before the connection exists: buffered, then paced. */
        upload_pump(u.r.call, &u);
        run_until(e, &u.r.done, 10000);
        assert_int_equal(u.r.status, 0);
        assert_int_equal(u.r.http_status, 200);
        assert_true(u.r.drains >= 2); /* backpressure was exercised */
        fy_http_server_stats ss;
        fy_http_server_stats_get(e->srv, &ss);
        assert_int_equal(ss.requests, 1);
        env_free(e);
        (void)o;
    }
}

/* The response body with the consumer pausing: no data while paused. */
typedef struct {
    result r;
    uv_timer_t t;
    int pauses;
} pauser;

static void pauser_resume(uv_timer_t *t)
{
    pauser *p = t->data;
    p->r.paused = 0;
    fy_http_call_resume(p->r.call);
}

static void pauser_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    pauser *p = arg;
    r_data(call, data, len, &p->r);
    if (p->pauses < 5) {
        p->pauses++;
        p->r.paused = 1;
        fy_http_call_pause(call);
        uv_timer_start(&p->t, pauser_resume, 30, 0);
    }
}

static void test_streamed_response_pause(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    e->big_bytes = 3 << 20;
    pauser p = {0};
    uv_timer_init(&e->loop, &p.t);
    p.t.data = &p;
    char url[256];
    snprintf(url, sizeof url, "%s/big", e->base);
    fy_http_call_options o = {
        .method = "GET", .url = url, .cbs = {r_response, pauser_data, r_done, NULL}, .arg = &p};
    p.r.e = e;
    assert_int_equal(fy_http_call_start(e->cl, &o, &p.r.call), 0);
    run_until(e, &p.r.done, 10000);
    assert_int_equal(p.r.status, 0);
    assert_int_equal(p.r.bytes, 3 << 20);
    assert_int_equal(p.pauses, 5);
    assert_int_equal(p.r.paused_calls, 0);
    uint64_t want = 0;
    for (uint64_t i = 0; i < (3u << 20); i++) {
        want += (unsigned char)(char)((i % 8192) * 7);
    }
    assert_int_equal(p.r.sum, want);
    uv_close((uv_handle_t *)&p.t, NULL);
    env_free(e);
}

static void test_read_timeout(void **state)
{
    (void)state;
    fy_http_client_options co = {.read_timeout_ms = 100};
    env *e = env_new(NULL, &co);
    result r = {0};
    uint64_t t0 = uv_now(&e->loop);
    start_get(e, &r, "/hold");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, FY_ETIMEDOUT);
    assert_true(uv_now(&e->loop) - t0 >= 90);
    assert_int_equal(r.responses, 0);
    /* The server learns the client went away. */
    run_until(e, &e->aborts, 3000);
    env_free(e);
}

static void test_connect_refused(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    /* A port nobody listens on: bind one, note it, close it. */
    uv_tcp_t t;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&e->loop, &t);
    assert_int_equal(uv_tcp_bind(&t, (struct sockaddr *)&sa, 0), 0);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len);
    int port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&e->loop, UV_RUN_NOWAIT);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
    result r = {0};
    fy_http_call_options o = {.method = "GET", .url = url, .cbs = result_cbs, .arg = &r};
    assert_int_equal(fy_http_call_start(e->cl, &o, &r.call), 0);
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, FY_ECONNREFUSED);
    /* Bad requests are refused up front, with no callback. */
    o.url = "ftp://x/";
    assert_int_equal(fy_http_call_start(e->cl, &o, NULL), FY_EINVAL);
    o.url = "https://127.0.0.1/";
    assert_int_equal(fy_http_call_start(e->cl, &o, NULL), FY_ENOTSUP);
    o.url = url;
    o.method = "GE T";
    assert_int_equal(fy_http_call_start(e->cl, &o, NULL), FY_EINVAL);
    fy_http_header bad[] = {{"X-A", "1\r\nX-B: 2", 0, 0}};
    o.method = "GET";
    o.headers = bad;
    o.nheaders = 1;
    assert_int_equal(fy_http_call_start(e->cl, &o, NULL), FY_EINVAL);
    env_free(e);
}

static void cancel_later(uv_timer_t *t)
{
    result *r = t->data;
    fy_http_call_cancel(r->call);
    r->call = NULL;
}

static void test_cancel(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    result r = {0};
    start_get(e, &r, "/hold");
    uv_timer_init(&e->loop, &r.timer);
    r.timer.data = &r;
    uv_timer_start(&r.timer, cancel_later, 50, 0);
    run_until(e, &e->aborts, 3000); /* the server sees the connection go */
    assert_int_equal(r.done, 0);    /* and no callback ran after cancel */
    uv_close((uv_handle_t *)&r.timer, NULL);

    /* Cancel while still connecting: nothing runs afterwards either. */
    result r2 = {0};
    start_get(e, &r2, "/fixed");
    fy_http_call_cancel(r2.call);
    sleep_loop(e, 100);
    assert_int_equal(r2.done, 0);
    assert_int_equal(r2.responses, 0);

    /* The client closing fails what is in flight with FY_ECANCELED. */
    result r3 = {0};
    start_get(e, &r3, "/hold");
    sleep_loop(e, 50);
    fy_http_client_close(e->cl);
    assert_int_equal(r3.done, 1);
    assert_int_equal(r3.status, FY_ECANCELED);
    assert_int_equal(fy_http_client_new(&e->loop, NULL, &e->cl), 0);
    env_free(e);
}

static void test_retry_stale(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    result r = {0};
    start_get(e, &r, "/flaky");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.http_status, 200);
    /* The pooled connection fails before any response byte: an idempotent
     * GET is retried once on a new connection. */
    start_get(e, &r, "/flaky");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.http_status, 200);
    assert_int_equal(e->flaky_aborted, 1);
    fy_http_client_stats cs;
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.connects, 2);
    assert_int_equal(cs.retries, 1);
    /* A POST is not retried. */
    fy_http_call_options o = {.body = "x", .body_len = 1};
    start_call(e, &r, "POST", "/flaky", &o);
    run_until(e, &r.done, 3000);
    assert_true(r.status == FY_EEOF || r.status == FY_ECONNRESET);
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.retries, 1);
    env_free(e);
}

/* The server pauses the request body: TCP backpressure reaches the client,
 * whose writes are paced by on_drain, and nothing arrives while paused. */
static void test_request_body_backpressure(void **state)
{
    (void)state;
    env *e = env_new(NULL, NULL);
    upload u = {.total = 3000000};
    char url[256];
    snprintf(url, sizeof url, "%s/slowread", e->base);
    fy_http_call_options o = {.method = "POST",
                              .url = url,
                              .stream_body = 1,
                              .content_length = (int64_t)u.total,
                              .cbs = result_cbs,
                              .arg = &u};
    o.cbs.on_drain = upload_pump;
    u.r.e = e;
    assert_int_equal(fy_http_call_start(e->cl, &o, &u.r.call), 0);
    upload_pump(u.r.call, &u);
    run_until(e, &u.r.done, 20000);
    assert_int_equal(u.r.status, 0);
    int st, while_paused, pauses;
    unsigned long long n;
    if (sscanf(u.r.text, "%d %llu %d %d", &st, &n, &while_paused, &pauses) != 4) {
        fail_msg("response %d: '%s'", u.r.http_status, u.r.text);
    }
    assert_int_equal(st, 0);
    assert_int_equal(n, 3000000);
    assert_int_equal(while_paused, 0);
    assert_true(pauses > 10);
    assert_true(u.r.drains >= 2);
    env_free(e);
}

/* A listener that never accepts, with its backlog full: the SYN goes
 * unanswered and the connect timeout fires. */
static void test_connect_timeout(void **state)
{
    (void)state;
    fy_http_client_options co = {.connect_timeout_ms = 200};
    env *e = env_new(NULL, &co);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 0), 0);
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&sa, sizeof sa);
    }
    sleep_loop(e, 100);
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
    result r = {0};
    fy_http_call_options o = {.method = "GET", .url = url, .cbs = result_cbs, .arg = &r};
    uint64_t t0 = uv_now(&e->loop);
    assert_int_equal(fy_http_call_start(e->cl, &o, &r.call), 0);
    run_until(e, &r.done, 5000);
    assert_int_equal(r.status, FY_ETIMEDOUT);
    assert_true(uv_now(&e->loop) - t0 < 1000);
    for (int i = 0; i < 4; i++) {
        close(fillers[i]);
    }
    close(lfd);
    env_free(e);
}

static void test_stale_pool_detected(void **state)
{
    (void)state;
    fy_http_server_options so = {.idle_timeout_ms = 100};
    env *e = env_new(&so, NULL);
    result r = {0};
    start_get(e, &r, "/fixed");
    run_until(e, &r.done, 3000);
    fy_http_client_stats cs;
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.idle, 1);
    /* The server closes the idle connection; the pool notices by itself. */
    sleep_loop(e, 400);
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.idle, 0);
    start_get(e, &r, "/fixed");
    run_until(e, &r.done, 3000);
    assert_int_equal(r.status, 0);
    fy_http_client_stats_get(e->cl, &cs);
    assert_int_equal(cs.connects, 2);
    assert_int_equal(cs.retries, 0);
    env_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_reuse),
        cmocka_unit_test(test_pool_bound),
        cmocka_unit_test(test_whole_body),
        cmocka_unit_test(test_streamed_upload),
        cmocka_unit_test(test_streamed_response_pause),
        cmocka_unit_test(test_read_timeout),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_retry_stale),
        cmocka_unit_test(test_stale_pool_detected),
        cmocka_unit_test(test_request_body_backpressure),
        cmocka_unit_test(test_connect_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
