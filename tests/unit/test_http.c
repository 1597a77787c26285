/* Unit tests for common/http*: URL parsing, header helpers, the error body,
 * request parsing edge cases and response serialization over in-memory
 * stream pairs. (The client against the server is in test_http_client.c.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* --- helpers ------------------------------------------------------------------ */

static void test_url_parse(void **state)
{
    (void)state;
    static const struct {
        const char *url;
        int rc, tls;
        const char *host;
        int port, defport;
        const char *target;
    } cases[] = {
        {"http://example.com", 0, 0, "example.com", 80, 1, "/"},
        {"http://example.com/", 0, 0, "example.com", 80, 1, "/"},
        {"https://gw.example.com/v1/models?x=1", 0, 1, "gw.example.com", 443, 1, "/v1/models?x=1"},
        {"http://127.0.0.1:8080/a/b", 0, 0, "127.0.0.1", 8080, 0, "/a/b"},
        {"HTTP://Host:80/", 0, 0, "Host", 80, 1, "/"},
        {"https://[::1]:8443/x", 0, 1, "::1", 8443, 0, "/x"},
        {"https://[::1]/", 0, 1, "::1", 443, 1, "/"},
        {"ftp://example.com/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://:80/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://user:pw@host/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host:0/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host:65536/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host:12a/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host:/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://ho st/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host/a b", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host/#frag", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://host?q=1", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://[::1/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"http://[::1]x/", FY_EINVAL, 0, NULL, 0, 0, NULL},
        {"example.com", FY_EINVAL, 0, NULL, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_http_url u;
        int rc = fy_http_url_parse(cases[i].url, &u);
        if (rc != cases[i].rc) {
            fail_msg("%s: rc %d, want %d", cases[i].url, rc, cases[i].rc);
        }
        if (rc == 0) {
            assert_int_equal(u.tls, cases[i].tls);
            assert_string_equal(u.host, cases[i].host);
            assert_int_equal(u.port, cases[i].port);
            assert_int_equal(u.default_port, cases[i].defport);
            assert_string_equal(u.target, cases[i].target);
        }
    }
    assert_int_equal(fy_http_url_parse(NULL, &(fy_http_url){0}), FY_EINVAL);
}

static void test_header_lookup(void **state)
{
    (void)state;
    const fy_http_header h[] = {
        {"Host", "a", 0, 0},    {"X-Multi", "1", 0, 0},
        {"x-multi", "2", 0, 0}, {"Content-Type", "t", 0, 0},
        {"X-MULTI", "3", 0, 0}, {"X-Multiple", "no", 0, 0},
        {"X-Mult", "no", 0, 0}, {"Connection", "keep-alive, Upgrade", 0, 0},
    };
    size_t n = sizeof h / sizeof h[0];
    assert_string_equal(fy_http_header_find(h, n, "host"), "a");
    assert_string_equal(fy_http_header_find(h, n, "CONTENT-TYPE"), "t");
    assert_null(fy_http_header_find(h, n, "missing"));
    size_t it = 0;
    const char *want[] = {"1", "2", "3"};
    for (int i = 0; i < 3; i++) {
        assert_string_equal(fy_http_header_next(h, n, "x-multi", &it), want[i]);
    }
    assert_null(fy_http_header_next(h, n, "x-multi", &it));
    static const struct {
        const char *value, *token;
        int want;
    } tokens[] = {
        {"keep-alive, Upgrade", "upgrade", 1},
        {"keep-alive,Upgrade", "keep-alive", 1},
        {"  close  ", "close", 1},
        {"closed", "close", 0},
        {"", "close", 0},
        {"a, b ,c", "b", 1},
        {"chunked;q=1", "chunked", 0},
    };
    for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
        assert_int_equal(fy_http_has_token(tokens[i].value, tokens[i].token), tokens[i].want);
    }
    assert_string_equal(fy_http_status_text(431), "Request Header Fields Too Large");
    assert_string_equal(fy_http_status_text(799), "Unknown");
}

static void test_error_json(void **state)
{
    (void)state;
    char out[256];
    size_t n = fy_http_error_json(out, sizeof out, 413, "payload_too_large", NULL, "too \"big\"\n");
    assert_int_equal(n, strlen(out));
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    json_t *e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")), "too \"big\"\n");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "payload_too_large");
    assert_true(json_is_null(json_object_get(e, "param")));
    json_decref(j);
    n = fy_http_error_json(out, sizeof out, 503, NULL, NULL, "busy");
    j = json_loads(out, 0, &je);
    assert_non_null(j);
    e = json_object_get(j, "error");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "server_error");
    assert_true(json_is_null(json_object_get(e, "code")));
    json_decref(j);
    /* A message longer than the buffer is cut, and the result is still JSON. */
    char longmsg[1000];
    memset(longmsg, '"', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = '\0';
    n = fy_http_error_json(out, 160, 400, "bad_request", "messages", longmsg);
    assert_true(n < 160);
    j = json_loads(out, 0, &je);
    if (!j) {
        fail_msg("truncated error body is not JSON: %s (%s)", out, je.text);
    }
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "param")),
                        "messages");
    json_decref(j);
    /* The whole body, byte for byte: the one shape the gateway and the runner share. */
    n = fy_http_error_json(out, sizeof out, 404, "model_not_found", "model", "no model `m`");
    assert_string_equal(out, "{\"error\":{\"message\":\"no model `m`\",\"type\":"
                             "\"invalid_request_error\",\"param\":\"model\",\"code\":"
                             "\"model_not_found\"}}\n");
    assert_int_equal(n, strlen(out));
    /* Invalid UTF-8 in a message (a model name, a path) becomes U+FFFD; valid
     * multi-byte characters pass whole, also where the buffer cuts. */
    n = fy_http_error_json(out, sizeof out, 400, NULL, NULL, "a\xff\xc3\xa9\xe2\x82 z");
    j = json_loads(out, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "message")),
                        "a\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd z");
    json_decref(j);
    char emoji[400] = "";
    for (int i = 0; i < 90; i++) {
        strcat(emoji, "\xf0\x9f\x98\x80");
    }
    for (size_t cap = 100; cap < 140; cap++) {
        n = fy_http_error_json(out, cap, 400, "c", "p", emoji);
        j = json_loads(out, 0, &je);
        if (!j) {
            fail_msg("cap %zu: not JSON: %s (%s)", cap, out, je.text);
        }
        json_decref(j);
    }
    assert_string_equal(fy_http_error_type(404), "invalid_request_error");
    assert_string_equal(fy_http_error_type(429), "invalid_request_error");
    assert_string_equal(fy_http_error_type(502), "server_error");
}

/* The one hop-by-hop list the gateway and the runner both forward by. */
static void test_hop_by_hop(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *connection;
        int hop;
    } cases[] = {
        {"Connection", NULL, 1},
        {"keep-alive", NULL, 1},
        {"Proxy-Authorization", NULL, 1},
        {"proxy-connection", NULL, 1},
        {"TE", NULL, 1},
        {"Trailer", NULL, 1},
        {"Trailers", NULL, 1},
        {"Proxy-Authenticate", NULL, 1},
        {"proxy-anything", NULL, 1},
        {"Transfer-Encoding", NULL, 1},
        {"Upgrade", NULL, 1},
        {"Content-Length", NULL, 0},
        {"Content-Type", NULL, 0},
        {"Authorization", NULL, 0},
        {"Tea", NULL, 0},
        {"X-Hop", "keep-alive, X-Hop", 1},
        {"x-hop", "close,x-HOP", 1},
        {"X-Hopper", "X-Hop", 0},
        {"X-Other", "X-Hop", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(
            fy_http_hop_by_hop(cases[i].name, strlen(cases[i].name), cases[i].connection),
            cases[i].hop);
    }
    /* Names are given by length, not NUL-terminated. */
    assert_int_equal(fy_http_hop_by_hop("TEXT", 2, NULL), 1);
    assert_int_equal(fy_http_hop_by_hop("upgrade-insecure-requests", 25, NULL), 0);
}

/* --- server over an in-memory pair --------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    fy_http_server *srv;
    fy_stream *cli;
    fy_buf out;
    int eof;
    int timed_out;
    int srv_closed;
    int body_end_status;
    int aborts;
} harness;

static void h_on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    harness *h = s->data;
    if (n < 0) {
        h->eof = 1;
        return;
    }
    assert_int_equal(fy_buf_append(&h->out, buf->base, (size_t)n), 0);
}

typedef struct {
    fy_http_req *req;
    uint64_t n;
    harness *h;
} body_ctx;

static void body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    body_ctx *b = arg;
    (void)req;
    (void)data;
    b->n += len;
}

static void body_end(fy_http_req *req, int status, void *arg)
{
    body_ctx *b = arg;
    char out[64];
    b->h->body_end_status = status;
    int n = snprintf(out, sizeof out, "n=%llu", (unsigned long long)b->n);
    free(b);
    fy_http_respond(req, status ? 400 : 200, NULL, 0, out, (size_t)n);
}

static void buf_end(fy_http_req *req, int status, void *arg)
{
    (void)arg;
    fy_slice b = fy_http_req_body(req);
    if (status) {
        fy_http_respond(req, 400, NULL, 0, "err", 3);
        return;
    }
    fy_http_respond(req, 200, NULL, 0, b.base, b.len);
}

static void on_abort(fy_http_req *req, int status, void *arg)
{
    harness *h = arg;
    (void)status;
    h->aborts++;
    fy_http_res_end(req);
}

static void handler(fy_http_req *req, void *data)
{
    harness *h = data;
    const char *path = fy_http_req_path(req);
    char out[512];
    if (strcmp(path, "/body") == 0) {
        body_ctx *b = calloc(1, sizeof *b);
        b->h = h;
        assert_int_equal(fy_http_req_read_body(req, body_data, body_end, b), 0);
        assert_int_equal(fy_http_req_read_body(req, body_data, body_end, b), FY_EBUSY);
    } else if (strcmp(path, "/buf") == 0) {
        assert_int_equal(fy_http_req_buffer_body(req, buf_end, NULL), 0);
    } else if (strcmp(path, "/hdr") == 0) {
        size_t n, it = 0, pos = 0;
        fy_http_req_headers(req, &n);
        pos += (size_t)snprintf(out, sizeof out, "count=%zu", n);
        const char *v;
        while ((v = fy_http_header_next(fy_http_req_headers(req, &n), n, "x-a", &it))) {
            pos += (size_t)snprintf(out + pos, sizeof out - pos, "|%s", v);
        }
        fy_http_respond(req, 200, NULL, 0, out, pos);
    } else if (strcmp(path, "/stream") == 0) {
        assert_int_equal(fy_http_res_start(req, 200, NULL, 0, -1), 0);
        assert_int_equal(fy_http_res_start(req, 200, NULL, 0, -1), FY_EBUSY);
        assert_int_equal(fy_http_res_write(req, "hello", 5), 0);
        assert_int_equal(fy_http_res_write(req, "", 0), 0);
        assert_int_equal(fy_http_res_write(req, " world", 6), 0);
        assert_int_equal(fy_http_res_end(req), 0);
    } else if (strcmp(path, "/stream-cl") == 0) {
        assert_int_equal(fy_http_res_start(req, 201, NULL, 0, 3), 0);
        assert_int_equal(fy_http_res_write(req, "abcd", 4), FY_EINVAL);
        assert_int_equal(fy_http_res_write(req, "abc", 3), 0);
        assert_int_equal(fy_http_res_end(req), 0);
    } else if (strcmp(path, "/short") == 0) {
        /* Ends before the declared length: the connection is cut. */
        assert_int_equal(fy_http_res_start(req, 200, NULL, 0, 10), 0);
        assert_int_equal(fy_http_res_write(req, "abc", 3), 0);
        assert_int_equal(fy_http_res_end(req), FY_EINVAL);
    } else if (strcmp(path, "/headers") == 0) {
        fy_http_header bad[] = {{"X-Bad", "a\r\nInjected: 1", 0, 0}};
        fy_http_header hs[] = {{"X-One", "1", 0, 0},
                               {"Content-Length", "999", 0, 0},
                               {"X-Two", "two", 5, 3},
                               {"Connection", "upgrade", 0, 0}};
        assert_int_equal(fy_http_res_start(req, 200, bad, 1, 0), FY_EINVAL);
        fy_http_respond(req, 200, hs, 4, "ok", 2);
    } else if (strcmp(path, "/hold") == 0) {
        fy_http_req_on_abort(req, on_abort, h);
    } else if (strcmp(path, "/error") == 0) {
        fy_http_respond_error(req, 429, "rate_limited", "slow down");
    } else {
        snprintf(out, sizeof out, "%s %s [%s] v%d", fy_http_req_method(req), path,
                 fy_http_req_query(req), fy_http_req_version(req));
        fy_http_respond(req, 200, NULL, 0, out, strlen(out));
    }
}

static void h_timeout(uv_timer_t *t)
{
    harness *h = t->data;
    h->timed_out = 1;
    uv_stop(t->loop);
}

static void h_srv_closed(fy_http_server *srv, void *arg)
{
    (void)srv;
    ((harness *)arg)->srv_closed = 1;
}

static void run_until(harness *h, int *flag, unsigned ms)
{
    uv_timer_t t;
    uv_timer_init(&h->loop, &t);
    t.data = h;
    h->timed_out = 0;
    uv_timer_start(&t, h_timeout, ms, 0);
    while (!*flag && !h->timed_out) {
        uv_run(&h->loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&h->loop, UV_RUN_NOWAIT);
}

static void harness_start(harness *h, const fy_http_server_options *extra)
{
    memset(h, 0, sizeof *h);
    assert_int_equal(uv_loop_init(&h->loop), 0);
    fy_http_server_options o = {
        .on_request = handler, .data = h, .max_body = 1000, .header_timeout_ms = 2000};
    if (extra) {
        o.buffer_body = extra->buffer_body;
        if (extra->header_timeout_ms) {
            o.header_timeout_ms = extra->header_timeout_ms;
        }
        if (extra->body_timeout_ms) {
            o.body_timeout_ms = extra->body_timeout_ms;
        }
        if (extra->idle_timeout_ms) {
            o.idle_timeout_ms = extra->idle_timeout_ms;
        }
        if (extra->max_connections) {
            o.max_connections = extra->max_connections;
        }
    }
    assert_int_equal(fy_http_server_new(&h->loop, &o, &h->srv), 0);
    assert_int_equal(fy_http_server_port(h->srv), 0);
    fy_stream *a, *b;
    assert_int_equal(fy_stream_pair_new(&h->loop, &a, &b), 0);
    fy_buf_init(&h->out, 1 << 20);
    h->cli = b;
    b->data = h;
    b->on_read = h_on_read;
    assert_int_equal(fy_stream_read_start(b), 0);
    assert_int_equal(fy_http_server_attach(h->srv, a), 0);
}

static void harness_send(harness *h, const char *data, size_t len)
{
    fy_slice sl = FY_SLICE(data, len);
    assert_int_equal(fy_stream_write(h->cli, &sl, 1, NULL, NULL), 0);
}

static void harness_stop(harness *h)
{
    if (h->cli) {
        fy_stream_close(h->cli, NULL);
    }
    fy_http_server_close(h->srv, h_srv_closed, h);
    run_until(h, &h->srv_closed, 3000);
    assert_true(h->srv_closed);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&h->loop), 0);
    fy_buf_free(&h->out);
}

/* Checks that the NULL-terminated WANT strings occur in OUT in order and
 * that NOT (may be NULL) does not occur. */
static void expect_seq(const char *name, const char *out, const char *const *want,
                       const char * not )
{
    const char *p = out;
    for (size_t i = 0; want[i]; i++) {
        const char *q = strstr(p, want[i]);
        if (!q) {
            fail_msg("case %s: '%s' missing (in order) from:\n%s", name, want[i], out);
        }
        p = q + strlen(want[i]);
    }
    if (not &&strstr(out, not )) {
        fail_msg("case %s: unexpected '%s' in:\n%s", name, not, out);
    }
}

#define SEQ(...)          \
    (const char *const[]) \
    {                     \
        __VA_ARGS__, NULL \
    }

static char *repeat(const char *prefix, char ch, size_t n, const char *suffix)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    char *s = malloc(pl + n + sl + 1);
    memcpy(s, prefix, pl);
    memset(s + pl, ch, n);
    memcpy(s + pl + n, suffix, sl + 1);
    return s;
}

static void test_request_parsing(void **state)
{
    (void)state;
    char *long_url = repeat("GET /", 'u', FY_HTTP_MAX_URL_BYTES, " HTTP/1.1\r\nHost: x\r\n\r\n");
    char *big_hdr =
        repeat("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'h', FY_HTTP_MAX_HEADER_BYTES, "\r\n\r\n");
    /* Just under the cap: accepted. */
    char *ok_hdr = repeat("GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 'h',
                          FY_HTTP_MAX_HEADER_BYTES - 200, "\r\n\r\n");
    char many[8192];
    size_t mp = (size_t)snprintf(many, sizeof many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= FY_HTTP_MAX_HEADERS; i++) {
        mp += (size_t)snprintf(many + mp, sizeof many - mp, "H%d: v\r\n", i);
    }
    snprintf(many + mp, sizeof many - mp, "\r\n");
    char big_chunked[4096];
    size_t bp = (size_t)snprintf(big_chunked, sizeof big_chunked,
                                 "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        bp += (size_t)snprintf(big_chunked + bp, sizeof big_chunked - bp, "12c\r\n%300s\r\n", "");
    }
    snprintf(big_chunked + bp, sizeof big_chunked - bp, "0\r\n\r\n");

    const struct {
        const char *name;
        const char *in;
        const char *const *want;
        const char * not ;
        int buffer_body;
    } cases[] = {
        {"get", "GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: x\r\n\r\n",
         SEQ("HTTP/1.1 200 OK\r\n", "Content-Length: 22\r\n", "\r\nGET /a/b [x=1&y=2] v11"),
         "Connection:", 0},
        {"headers kept in order, case-insensitive",
         "GET /hdr HTTP/1.1\r\nX-A: 1\r\nx-a:   two  \r\nHost: x\r\nX-A:\r\n\r\n",
         SEQ("200 OK", "count=4|1|two|"), NULL, 0},
        {"pipelined in order",
         "GET /1 HTTP/1.1\r\n\r\nPOST /body HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET /3 "
         "HTTP/1.1\r\nConnection: close\r\n\r\n",
         SEQ("GET /1 [] v11", "n=4", "Connection: close", "GET /3 [] v11"), NULL, 0},
        {"content-length body", "POST /body HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
         SEQ("200 OK", "n=11"), NULL, 0},
        {"chunked body",
         "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n "
         "world\r\n0\r\nTrailer: x\r\n\r\n",
         SEQ("200 OK", "n=11"), NULL, 0},
        {"buffered body", "POST /buf HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
         SEQ("200 OK", "Content-Length: 5", "\r\n\r\nhello"), NULL, 0},
        {"server-buffered body",
         "POST /buf HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
         SEQ("200 OK", "Content-Length: 5", "\r\n\r\nhello"), NULL, 1},
        {"server-buffered body read as a stream",
         "POST /body HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
         SEQ("200 OK", "n=5"), NULL, 1},
        {"header block too large", big_hdr,
         SEQ("HTTP/1.1 431 Request Header Fields Too Large", "Connection: close",
             "\"code\":\"request_header_fields_too_large\""),
         NULL, 0},
        {"header block just under the cap", ok_hdr, SEQ("HTTP/1.1 200 OK"), NULL, 0},
        {"too many headers", many,
         SEQ("HTTP/1.1 431 ", "too many header fields", "invalid_request_error"), NULL, 0},
        {"url too long", long_url, SEQ("HTTP/1.1 414 URI Too Long", "\"code\":\"uri_too_long\""),
         NULL, 0},
        {"content-length over the cap",
         "POST /body HTTP/1.1\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n",
         SEQ("HTTP/1.1 413 Payload Too Large", "Connection: close", "payload_too_large"),
         "100 Continue", 0},
        {"chunked body over the cap", big_chunked, SEQ("HTTP/1.1 413 ", "payload_too_large"), NULL,
         0},
        {"malformed request line", "GET\r\n\r\n", SEQ("HTTP/1.1 400 Bad Request", "bad_request"),
         NULL, 0},
        {"bad method", "G@T / HTTP/1.1\r\n\r\n", SEQ("HTTP/1.1 400 "), NULL, 0},
        {"bad header name", "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", SEQ("HTTP/1.1 400 "), NULL, 0},
        {"bad version", "GET / HTTP/1.7\r\n\r\n", SEQ("HTTP/1.1 400 "), NULL, 0},
        {"http/2 request line", "GET / HTTP/2.0\r\n\r\n", SEQ("HTTP/1.1 505 "), NULL, 0},
        {"bad chunk size",
         "POST /body HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
         SEQ("HTTP/1.1 400 "), NULL, 0},
        {"transfer-encoding not ending in chunked",
         "POST /body HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc",
         SEQ("HTTP/1.1 400 ", "must end with chunked"), NULL, 0},
        {"unsupported transfer coding",
         "POST /body HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
         SEQ("HTTP/1.1 501 Not Implemented", "server_error", "unsupported_transfer_encoding"), NULL,
         0},
        {"content-length with transfer-encoding",
         "POST /body HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         SEQ("HTTP/1.1 400 "), NULL, 0},
        {"two content-lengths",
         "POST /body HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
         SEQ("HTTP/1.1 400 "), NULL, 0},
        {"expect 100-continue",
         "POST /body HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
         SEQ("HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 200 OK", "n=3"), NULL, 0},
        {"expect 100-continue answered without reading",
         "GET /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
         SEQ("HTTP/1.1 200 OK", "Connection: close"), "100 Continue", 0},
        {"unknown expectation", "POST /body HTTP/1.1\r\nContent-Length: 3\r\nExpect: x\r\n\r\nabc",
         SEQ("HTTP/1.1 417 Expectation Failed"), NULL, 0},
        {"unread small body is discarded, connection kept",
         "POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\n\r\n",
         SEQ("POST /x [] v11", "GET /y [] v11"), "Connection: close", 0},
        {"http/1.0 closes", "GET /x HTTP/1.0\r\n\r\nGET /y HTTP/1.0\r\n\r\n",
         SEQ("HTTP/1.1 200 OK", "Connection: close", "GET /x [] v10"), "GET /y", 0},
        {"http/1.0 keep-alive",
         "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /y HTTP/1.0\r\n\r\n",
         SEQ("Connection: keep-alive", "GET /x [] v10", "Connection: close", "GET /y [] v10"), NULL,
         0},
        {"connection close", "GET /x HTTP/1.1\r\nConnection: close\r\n\r\nGET /y HTTP/1.1\r\n\r\n",
         SEQ("Connection: close", "GET /x"), "GET /y", 0},
        {"head has no body", "HEAD /x HTTP/1.1\r\n\r\n",
         SEQ("HTTP/1.1 200 OK", "Content-Length: 14\r\n\r\n"), "HEAD /x", 0},
        {"head on a stream", "HEAD /stream HTTP/1.1\r\n\r\n",
         SEQ("Transfer-Encoding: chunked\r\n\r\n"), "hello", 0},
        {"connect refused", "CONNECT a:443 HTTP/1.1\r\n\r\n", SEQ("HTTP/1.1 405 "), NULL, 0},
        {"upgrade ignored", "GET /u HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
         SEQ("HTTP/1.1 200 OK", "GET /u [] v11"), "101", 0},
        {"leading blank lines", "\r\nGET /x HTTP/1.1\r\n\r\n", SEQ("GET /x [] v11"), NULL, 0},
        {"chunked streaming response", "GET /stream HTTP/1.1\r\n\r\n",
         SEQ("Transfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), NULL,
         0},
        {"chunked streaming to http/1.0", "GET /stream HTTP/1.0\r\n\r\n",
         SEQ("Connection: close\r\n\r\nhello world"), "Transfer-Encoding", 0},
        {"content-length streaming response", "GET /stream-cl HTTP/1.1\r\n\r\n",
         SEQ("HTTP/1.1 201 Created", "Content-Length: 3\r\n\r\nabc"), NULL, 0},
        {"response headers: hop-by-hop ignored, no injection", "GET /headers HTTP/1.1\r\n\r\n",
         SEQ("X-One: 1\r\n", "X-Two: two\r\n", "Content-Length: 2\r\n\r\nok"), "Injected", 0},
        {"error helper", "GET /error HTTP/1.1\r\n\r\n",
         SEQ("HTTP/1.1 429 Too Many Requests", "Content-Type: application/json",
             "{\"error\":{\"message\":\"slow "
             "down\",\"type\":\"invalid_request_error\",\"param\":null,"
             "\"code\":\"rate_limited\"}}"),
         NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        harness h;
        fy_http_server_options o = {.buffer_body = cases[i].buffer_body};
        harness_start(&h, &o);
        harness_send(&h, cases[i].in, strlen(cases[i].in));
        /* A client that half-closes while its request is being answered
         * counts as gone; requests answered later close by themselves. */
        if (!strstr(cases[i].in, "Connection: close")) {
            fy_stream_shutdown(h.cli);
        }
        run_until(&h, &h.eof, 3000);
        if (!h.eof) {
            fail_msg("case %s: the server did not close (output so far:\n%.*s)", cases[i].name,
                     (int)h.out.len, h.out.data);
        }
        expect_seq(cases[i].name, fy_buf_cstr(&h.out), cases[i].want, cases[i].not );
        harness_stop(&h);
    }
    free(long_url);
    free(big_hdr);
    free(ok_hdr);
}

/* Bytes arriving one at a time, split everywhere, parse the same. */
static void test_request_split(void **state)
{
    (void)state;
    const char *in = "POST /body?q HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /z HTTP/1.1\r\nX-A: 1\r\n\r\n";
    harness h;
    harness_start(&h, NULL);
    for (size_t i = 0; in[i]; i++) {
        harness_send(&h, in + i, 1);
        uv_run(&h.loop, UV_RUN_NOWAIT);
    }
    fy_stream_shutdown(h.cli);
    run_until(&h, &h.eof, 3000);
    expect_seq("split", fy_buf_cstr(&h.out), SEQ("n=5", "GET /z [] v11"), NULL);
    harness_stop(&h);
}

static void test_response_bytes(void **state)
{
    (void)state;
    harness h;
    harness_start(&h, NULL);
    const char *in = "GET /headers HTTP/1.1\r\n\r\n";
    harness_send(&h, in, strlen(in));
    fy_stream_shutdown(h.cli);
    run_until(&h, &h.eof, 3000);
    /* Exact bytes, with the Date value masked. */
    char *out = (char *)fy_buf_cstr(&h.out);
    char *date = strstr(out, "Date: ");
    assert_non_null(date);
    char *eol = strstr(date, "\r\n");
    assert_int_equal(eol - date, (long)strlen("Date: Mon, 01 Jan 2024 00:00:00 GMT"));
    memset(date + 6, 'D', (size_t)(eol - date - 6));
    assert_string_equal(out, "HTTP/1.1 200 OK\r\n"
                             "Date: DDDDDDDDDDDDDDDDDDDDDDDDDDDDD\r\n"
                             "X-One: 1\r\n"
                             "X-Two: two\r\n"
                             "Content-Length: 2\r\n"
                             "\r\n"
                             "ok");
    harness_stop(&h);
}

static void test_short_response_closes(void **state)
{
    (void)state;
    harness h;
    harness_start(&h, NULL);
    const char *in = "GET /short HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    harness_send(&h, in, strlen(in));
    run_until(&h, &h.eof, 3000);
    assert_true(h.eof);
    expect_seq("short", fy_buf_cstr(&h.out), SEQ("Content-Length: 10\r\n\r\nabc"), "GET /next");
    harness_stop(&h);
}

static void test_client_gone_aborts(void **state)
{
    (void)state;
    harness h;
    harness_start(&h, NULL);
    const char *in = "GET /hold HTTP/1.1\r\n\r\n";
    harness_send(&h, in, strlen(in));
    for (int i = 0; i < 20; i++) {
        uv_run(&h.loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(h.aborts, 0);
    fy_stream_close(h.cli, NULL);
    h.cli = NULL;
    run_until(&h, &h.aborts, 3000);
    assert_int_equal(h.aborts, 1);
    fy_http_server_stats st;
    fy_http_server_stats_get(h.srv, &st);
    assert_int_equal(st.aborted, 1);
    harness_stop(&h);
}

static void test_header_timeout(void **state)
{
    (void)state;
    harness h;
    fy_http_server_options o = {.header_timeout_ms = 100};
    harness_start(&h, &o);
    const char *in = "GET / HTTP/1.1\r\nHost:";
    harness_send(&h, in, strlen(in));
    uint64_t t0 = uv_now(&h.loop);
    run_until(&h, &h.eof, 3000);
    assert_true(h.eof);
    assert_true(uv_now(&h.loop) - t0 >= 90);
    expect_seq("header timeout", fy_buf_cstr(&h.out),
               SEQ("HTTP/1.1 408 Request Timeout", "Connection: close", "request_timeout"), NULL);
    harness_stop(&h);

    /* A connection that sends nothing is closed quietly at the header timeout. */
    harness_start(&h, &o);
    run_until(&h, &h.eof, 3000);
    assert_true(h.eof);
    assert_int_equal(h.out.len, 0);
    harness_stop(&h);
}

static void test_body_timeout(void **state)
{
    (void)state;
    harness h;
    fy_http_server_options o = {.body_timeout_ms = 100};
    harness_start(&h, &o);
    const char *in = "POST /body HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
    harness_send(&h, in, strlen(in));
    run_until(&h, &h.eof, 3000);
    assert_true(h.eof);
    expect_seq("body timeout", fy_buf_cstr(&h.out), SEQ("HTTP/1.1 408 ", "request_timeout"), NULL);
    assert_int_equal(h.body_end_status, FY_ETIMEDOUT);
    harness_stop(&h);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    harness h;
    fy_http_server_options o = {.idle_timeout_ms = 100};
    harness_start(&h, &o);
    const char *in = "GET /x HTTP/1.1\r\n\r\n";
    harness_send(&h, in, strlen(in));
    run_until(&h, &h.eof, 3000);
    assert_true(h.eof);
    expect_seq("idle", fy_buf_cstr(&h.out), SEQ("200 OK", "GET /x"), "408");
    harness_stop(&h);
}

static void test_max_connections(void **state)
{
    (void)state;
    harness h;
    fy_http_server_options o = {.max_connections = 1};
    harness_start(&h, &o);
    fy_stream *a, *b;
    assert_int_equal(fy_stream_pair_new(&h.loop, &a, &b), 0);
    assert_int_equal(fy_http_server_attach(h.srv, a), FY_ELIMIT);
    fy_stream_close(b, NULL);
    fy_http_server_stats st;
    fy_http_server_stats_get(h.srv, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.active, 1);
    harness_stop(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_parse),          cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_error_json),         cmocka_unit_test(test_hop_by_hop),
        cmocka_unit_test(test_request_parsing),    cmocka_unit_test(test_request_split),
        cmocka_unit_test(test_response_bytes),     cmocka_unit_test(test_short_response_closes),
        cmocka_unit_test(test_client_gone_aborts), cmocka_unit_test(test_header_timeout),
        cmocka_unit_test(test_body_timeout),       cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_max_connections),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
