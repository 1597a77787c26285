/* gateway/route.c: splitting public targets into runner name and runner-side
 * target, hop-by-hop header detection, peer hosts, token TTLs. Table-driven. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "gateway/gateway.h"

#include <string.h>

static void test_route_split(void **state)
{
    (void)state;
    static const struct {
        const char *target;
        int rc;
        const char *name;
        const char *runner_target; /* what the runner is asked for */
    } cases[] = {
        {"/r/alpha/v1/models", 1, "alpha", "/v1/models"},
        {"/r/alpha/echo?a=1&b=2", 1, "alpha", "/echo?a=1&b=2"},
        {"/r/alpha/", 1, "alpha", "/"},
        {"/r/alpha", 1, "alpha", "/"},
        {"/r/alpha?q=1", 1, "alpha", "/?q=1"},
        {"/r/a-1/x/../y", 1, "a-1", "/x/../y"},
        {"/r/9/x", 1, "9", "/x"},
        {"/r/Alpha/x", -1, "", NULL},
        {"/r/-alpha/x", -1, "", NULL},
        {"/r/al%70ha/x", -1, "", NULL},
        {"/r//x", -1, "", NULL},
        {"/r/", -1, "", NULL},
        {"/r/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/x", -1, "",
         NULL},
        {"/v1/models", 0, "", NULL},
        {"/r", 0, "", NULL},
        {"/rr/alpha/x", 0, "", NULL},
        {"/", 0, "", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[FY_STORE_NAME_MAX];
        const char *rest;
        int slash;
        int rc = fy_gw_route_split(cases[i].target, name, &rest, &slash);
        assert_int_equal(rc, cases[i].rc);
        assert_string_equal(name, cases[i].name);
        if (rc == 1) {
            char got[256];
            snprintf(got, sizeof got, "%s%s", slash ? "/" : "", rest);
            assert_string_equal(got, cases[i].runner_target);
        }
    }
}

static void test_peer_host(void **state)
{
    (void)state;
    static const struct {
        const char *peer, *host;
    } cases[] = {
        {"127.0.0.1:5555", "127.0.0.1"},
        {"[::1]:443", "::1"},
        {"[2001:db8::1]:80", "2001:db8::1"},
        {"memory", "memory"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        fy_gw_peer_host(cases[i].peer, out, sizeof out);
        assert_string_equal(out, cases[i].host);
    }
    char small[4];
    fy_gw_peer_host("127.0.0.1:1", small, sizeof small);
    assert_string_equal(small, "127");
}

static void test_parse_ttl(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        long long s;
    } cases[] = {
        {"1h", 3600}, {"90s", 90}, {"1s", 1},     {"30d", 30LL * 86400}, {"5m", 300},
        {"31d", -1},  {"0s", -1},  {"500ms", -1}, {"1500ms", -1},        {"", -1},
        {"1 h", -1},  {"h", -1},   {"-1h", -1},   {"2000ms", 2},         {"720h", 30 * 86400},
        {"721h", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_gw_parse_ttl(cases[i].text), cases[i].s);
    }
    assert_int_equal(fy_gw_parse_ttl(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_split),
        cmocka_unit_test(test_peer_host),
        cmocka_unit_test(test_parse_ttl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
