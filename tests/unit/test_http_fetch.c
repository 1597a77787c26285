/* Unit tests for common/http_fetch: one blocking request against
 * common/http_server running on a thread of its own (its own loop), over TCP
 * on 127.0.0.1: a whole response with its status and body, the body cap,
 * a refused connection and a request that cannot start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/http.h"
#include "common/http_fetch.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

typedef struct {
    uv_loop_t loop;
    uv_async_t stop;
    fy_http_server *srv;
    pthread_t thread;
    char base[64];
} server;

static void handler(fy_http_req *req, void *data)
{
    (void)data;
    const char *path = fy_http_req_path(req);
    if (strcmp(path, "/hello") == 0) {
        fy_http_respond(req, 201, NULL, 0, "hello", 5);
    } else if (strcmp(path, "/big") == 0) {
        static char big[4096];
        memset(big, 'x', sizeof big);
        fy_http_respond(req, 200, NULL, 0, big, sizeof big);
    } else {
        fy_http_respond_error(req, 404, "not_found", "no route");
    }
}

static void on_stop(uv_async_t *a)
{
    server *s = a->data;
    fy_http_server_close(s->srv, NULL, NULL);
    uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *serve(void *arg)
{
    server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void server_start(server *s)
{
    assert_int_equal(uv_loop_init(&s->loop), 0);
    fy_http_server_options o = {.listen = "127.0.0.1:0", .on_request = handler, .max_body = 1024};
    assert_int_equal(fy_http_server_new(&s->loop, &o, &s->srv), 0);
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", fy_http_server_port(s->srv));
    s->stop.data = s;
    assert_int_equal(uv_async_init(&s->loop, &s->stop, on_stop), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(server *s)
{
    uv_async_send(&s->stop);
    pthread_join(s->thread, NULL);
    assert_int_equal(uv_loop_close(&s->loop), 0);
}

static int fetch(const char *url, size_t max_body, fy_http_fetch_result *res, char *err)
{
    fy_http_fetch_options o = {
        .method = "POST", .url = url, .body = "{}", .body_len = 2, .max_body = max_body};
    return fy_http_fetch(&o, res, err, 256);
}

static void test_whole_response(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    char url[128], err[256];
    fy_http_fetch_result r;
    snprintf(url, sizeof url, "%s/hello", s.base);
    assert_int_equal(fetch(url, 1024, &r, err), 0);
    assert_int_equal(r.stage, FY_HTTP_FETCH_OK);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body.len, 5);
    assert_memory_equal(r.body.data, "hello", 5);
    fy_buf_free(&r.body);
    /* Any status is an answer. */
    snprintf(url, sizeof url, "%s/nowhere", s.base);
    assert_int_equal(fetch(url, 1024, &r, err), 0);
    assert_int_equal(r.status, 404);
    assert_true(r.body.len > 0); /* the error JSON */
    fy_buf_wipe(&r.body);
    server_stop(&s);
}

static void test_body_cap(void **state)
{
    (void)state;
    server s;
    server_start(&s);
    char url[128], err[256];
    fy_http_fetch_result r;
    snprintf(url, sizeof url, "%s/big", s.base);
    assert_int_equal(fetch(url, 1000, &r, err), FY_ETOOBIG);
    assert_int_equal(r.stage, FY_HTTP_FETCH_FAILED);
    assert_int_equal(r.status, 200);
    assert_true(r.body.len <= 1000);
    assert_string_equal(err, fy_strerror(FY_ETOOBIG));
    fy_buf_free(&r.body);
    /* Exactly the cap is fine. */
    assert_int_equal(fetch(url, 4096, &r, err), 0);
    assert_int_equal(r.body.len, 4096);
    fy_buf_free(&r.body);
    server_stop(&s);
}

static void test_unreachable(void **state)
{
    (void)state;
    /* A port nobody listens on any more: the server's, once it stopped. */
    server s;
    server_start(&s);
    char url[128], err[256];
    snprintf(url, sizeof url, "%s/hello", s.base);
    server_stop(&s);
    fy_http_fetch_result r;
    assert_int_equal(fetch(url, 1024, &r, err), FY_ECONNREFUSED);
    assert_int_equal(r.stage, FY_HTTP_FETCH_FAILED);
    assert_int_equal(r.status, 0);
    fy_buf_free(&r.body);
    /* Refused before anything is sent: bad URL, https without TLS. */
    assert_int_equal(fetch("ftp://x/", 1024, &r, err), FY_EINVAL);
    assert_int_equal(r.stage, FY_HTTP_FETCH_START);
    assert_string_equal(err, fy_strerror(FY_EINVAL));
    fy_buf_free(&r.body);
    assert_int_equal(fetch("https://127.0.0.1:1/", 1024, &r, err), FY_ENOTSUP);
    assert_int_equal(r.stage, FY_HTTP_FETCH_START);
    fy_buf_free(&r.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_response),
        cmocka_unit_test(test_body_cap),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
