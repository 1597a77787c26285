/* gateway/fwdhead.c: the header blocks the gateway relays, request and
 * response, checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/fwdhead.h"

#include <stdio.h>
#include <string.h>

#define H(n, v)                          \
    {                                    \
        n, v, sizeof n - 1, sizeof v - 1 \
    }

/* The request's fields as "name: value\n" lines. */
static void req_text(const gw_fwd_request *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n && o < cap; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%.*s: %.*s\n", (int)r->f[i].name.len,
                              r->f[i].name.base, (int)r->f[i].value.len, r->f[i].value.base);
    }
}

static void test_request_filters_and_adds(void **state)
{
    (void)state;
    static const fy_http_header h[] = {
        H("Host", "gw.example.com"),
        H("Connection", "keep-alive, X-Drop-Me"),
        H("X-Drop-Me", "1"),
        H("Keep-Alive", "timeout=5"),
        H("Transfer-Encoding", "chunked"),
        H("Authorization", "Bearer sk-secret"),
        H("X-API-Key", "sk-secret"),
        H("X-Ferry-Key-Id", "forged"),
        H("x-ferry-anything", "forged"),
        H("X-Forwarded-For", "10.0.0.1"),
        H("X-Forwarded-Proto", "gopher"),
        H("X-Forwarded-Host", "evil"),
        H("x-forwarded-for", "10.0.0.2, 10.0.0.3"),
        H("Expect", "100-continue"),
        H("Content-Type", "application/json"),
        H("Proxy-Authorization", "Basic x"),
    };
    gw_fwd_info info = {"192.0.2.7", "https", "key_abc", 0};
    gw_fwd_request r;
    assert_int_equal(fy_gw_fwd_request(&r, h, sizeof h / sizeof h[0], &info), 0);
    char got[2048];
    req_text(&r, got, sizeof got);
    assert_string_equal(got, "Host: gw.example.com\n"
                             "Content-Type: application/json\n"
                             "x-ferry-key-id: key_abc\n"
                             "x-forwarded-for: 10.0.0.1, 10.0.0.2, 10.0.0.3, 192.0.2.7\n"
                             "x-forwarded-proto: https\n"
                             "x-forwarded-host: gw.example.com\n");
    fy_gw_fwd_request_free(&r);
}

static void test_request_webhook_keeps_auth(void **state)
{
    (void)state;
    static const fy_http_header h[] = {
        H("Authorization", "Bearer from-the-saas"),
        H("X-Api-Key", "theirs"),
        H("X-Ferry-Key-Id", "forged"),
    };
    gw_fwd_info info = {"::1", "http", NULL, 1};
    gw_fwd_request r;
    assert_int_equal(fy_gw_fwd_request(&r, h, sizeof h / sizeof h[0], &info), 0);
    char got[1024];
    req_text(&r, got, sizeof got);
    /* No key: no x-ferry-key-id, the forged one still dropped; no Host: no
     * x-forwarded-host. */
    assert_string_equal(got, "Authorization: Bearer from-the-saas\n"
                             "X-Api-Key: theirs\n"
                             "x-forwarded-for: ::1\n"
                             "x-forwarded-proto: http\n");
    fy_gw_fwd_request_free(&r);
}

static void test_request_no_headers(void **state)
{
    (void)state;
    gw_fwd_info info = {"127.0.0.1", "https", NULL, 0};
    gw_fwd_request r;
    assert_int_equal(fy_gw_fwd_request(&r, NULL, 0, &info), 0);
    assert_int_equal(r.n, 2);
    char got[256];
    req_text(&r, got, sizeof got);
    assert_string_equal(got, "x-forwarded-for: 127.0.0.1\nx-forwarded-proto: https\n");
    fy_gw_fwd_request_free(&r);
}

#define F(n, v)                          \
    {                                    \
        FY_SLICE_STR(n), FY_SLICE_STR(v) \
    }

static void resp_text(const gw_fwd_response *r, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n && o < cap; i++) {
        o += (size_t)snprintf(out + o, cap - o, "%.*s: %.*s\n", (int)r->h[i].name_len, r->h[i].name,
                              (int)r->h[i].value_len, r->h[i].value);
    }
}

static void test_response_filters(void **state)
{
    (void)state;
    static const fyp_field f[] = {
        F("content-type", "application/json"),
        F("content-length", "42"),
        F("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
        F("connection", "x-hop"),
        F("x-hop", "1"),
        F("transfer-encoding", "chunked"),
        F("x-ratelimit-remaining-requests", "99"),
        F("x-request-id", "abc"),
    };
    static gw_fwd_response r;
    fy_gw_fwd_response(&r, f, sizeof f / sizeof f[0], 0);
    char got[1024];
    resp_text(&r, got, sizeof got);
    assert_string_equal(got, "content-type: application/json\n"
                             "x-ratelimit-remaining-requests: 99\n"
                             "x-request-id: abc\n");
    assert_int_equal(r.content_length, 42);
    assert_int_equal(r.sse, 0);

    /* The gateway's own limits replace the runner's. */
    fy_gw_fwd_response(&r, f, sizeof f / sizeof f[0], 1);
    resp_text(&r, got, sizeof got);
    assert_string_equal(got, "content-type: application/json\nx-request-id: abc\n");
}

static void test_response_content_length(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        int64_t want;
    } cases[] = {
        {"0", 0},   {"123456789", 123456789},        {"", -1}, {"12a", -1}, {"-1", -1},
        {" 5", -1}, {"99999999999999999999999", -1}, /* overflow: refused, not wrapped */
    };
    static gw_fwd_response r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fyp_field f = {FY_SLICE_STR("Content-Length"), FY_SLICE(cases[i].v, strlen(cases[i].v))};
        fy_gw_fwd_response(&r, &f, 1, 0);
        assert_int_equal(r.content_length, cases[i].want);
        assert_int_equal(r.n, 0);
    }
}

static void test_response_event_stream(void **state)
{
    (void)state;
    static const fyp_field f[] = {
        F("Content-Type", "text/event-stream; charset=utf-8"),
        F("Cache-Control", "max-age=60"),
        F("X-Accel-Buffering", "yes"),
        F("x-other", "1"),
    };
    static gw_fwd_response r;
    fy_gw_fwd_response(&r, f, sizeof f / sizeof f[0], 0);
    char got[1024];
    resp_text(&r, got, sizeof got);
    assert_string_equal(got, "Content-Type: text/event-stream; charset=utf-8\n"
                             "x-other: 1\n"
                             "Cache-Control: no-cache\n"
                             "X-Accel-Buffering: no\n");
    assert_int_equal(r.sse, 1);
    assert_int_equal(r.content_length, -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_filters_and_adds),
        cmocka_unit_test(test_request_webhook_keeps_auth),
        cmocka_unit_test(test_request_no_headers),
        cmocka_unit_test(test_response_filters),
        cmocka_unit_test(test_response_content_length),
        cmocka_unit_test(test_response_event_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
