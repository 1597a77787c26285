/* Unit tests for the runner's pure helpers: the full-jitter backoff, gateway
 * address and CA fingerprint parsing, and the enrollment file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/runner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void test_backoff(void **state)
{
    (void)state;
    /* The cap doubles from the base up to the maximum; the wait is r * cap. */
    static const struct {
        unsigned n;
        double r;
        uint64_t want;
    } cases[] = {
        {0, 0.0, 0},      {0, 0.5, 250},      {0, 0.999999, 499}, {1, 0.5, 500},
        {2, 0.5, 1000},   {5, 0.5, 8000},     {6, 0.5, 15000},    {7, 0.5, 15000},
        {60, 0.5, 15000}, {1000, 0.5, 15000}, {3, -1.0, 0},       {3, 7.0, 3999},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t got = fy_rn_backoff_ms(500, 30000, cases[i].n, cases[i].r);
        if (got != cases[i].want) {
            fail_msg("backoff(n=%u, r=%g) = %llu, want %llu", cases[i].n, cases[i].r,
                     (unsigned long long)got, (unsigned long long)cases[i].want);
        }
    }
    /* Never above the maximum, whatever the base. */
    assert_true(fy_rn_backoff_ms(40000, 30000, 0, 0.999999) < 30000);
}

static void test_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *host;
        int port; /* 0: must be refused */
    } cases[] = {
        {"127.0.0.1:7443", "127.0.0.1", 7443},
        {"gw.example.com:443", "gw.example.com", 443},
        {"[::1]:7443", "::1", 7443},
        {"localhost:1", "localhost", 1},
        {"localhost:65535", "localhost", 65535},
        {"localhost", NULL, 0},
        {"localhost:", NULL, 0},
        {":7443", NULL, 0},
        {"localhost:0", NULL, 0},
        {"localhost:65536", NULL, 0},
        {"localhost:7443x", NULL, 0},
        {"::1:7443", NULL, 0},
        {"[::1]7443", NULL, 0},
        {"user@host:1", NULL, 0},
        {"a b:1", NULL, 0},
        {"", NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char host[256] = "";
        int port = 0;
        int rc = fy_rn_hostport_parse(cases[i].in, host, sizeof host, &port);
        if (cases[i].port) {
            if (rc || strcmp(host, cases[i].host) || port != cases[i].port) {
                fail_msg("'%s': rc %d host '%s' port %d", cases[i].in, rc, host, port);
            }
        } else if (rc != FY_EINVAL) {
            fail_msg("'%s' accepted", cases[i].in);
        }
    }
    char tiny[4];
    int port;
    assert_int_equal(fy_rn_hostport_parse("toolong:1", tiny, sizeof tiny, &port), FY_EINVAL);
}

static void test_fingerprint(void **state)
{
    (void)state;
    const char *hex = "8d70063e00a40b7e8a7320a49f8e36643644309b98172a2aad1e295b16810e89";
    uint8_t a[32], b[32], c[32];
    char text[200];
    snprintf(text, sizeof text, "sha256:%s", hex);
    assert_int_equal(fy_rn_fingerprint_parse(text, a), 0);
    assert_int_equal(a[0], 0x8d);
    assert_int_equal(a[31], 0x89);
    assert_int_equal(fy_rn_fingerprint_parse(hex, b), 0);
    assert_memory_equal(a, b, 32);
    /* openssl's spelling: upper case, colons. */
    size_t n = 0;
    for (size_t i = 0; i < 64; i += 2) {
        n += (size_t)snprintf(text + n, sizeof text - n, "%s%c%c", i ? ":" : "",
                              hex[i] >= 'a' ? hex[i] - 32 : hex[i],
                              hex[i + 1] >= 'a' ? hex[i + 1] - 32 : hex[i + 1]);
    }
    assert_int_equal(fy_rn_fingerprint_parse(text, c), 0);
    assert_memory_equal(a, c, 32);
    assert_int_equal(fy_rn_fingerprint_parse("SHA256:8d70", c), FY_EINVAL);
    snprintf(text, sizeof text, "sha256:%s00", hex);
    assert_int_equal(fy_rn_fingerprint_parse(text, c), FY_EINVAL);
    snprintf(text, sizeof text, "sha256:%.63sg", hex);
    assert_int_equal(fy_rn_fingerprint_parse(text, c), FY_EINVAL);
    assert_int_equal(fy_rn_fingerprint_parse("", c), FY_EINVAL);
    assert_int_equal(fy_rn_fingerprint_parse(NULL, c), FY_EINVAL);
}

static void test_enrollment_file(void **state)
{
    (void)state;
    char dir[] = "/tmp/ferry-rn-unit-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char err[512];
    fy_rn_enrollment e, got;
    assert_int_equal(fy_rn_enrollment_load(dir, &got, err, sizeof err), FY_ENOENT);
    memset(&e, 0, sizeof e);
    strcpy(e.name, "gpu-box-1");
    strcpy(e.gateways[0], "gw1.example.com:7443");
    strcpy(e.gateways[1], "[::1]:7443");
    e.ngateways = 2;
    strcpy(e.ca_fingerprint, "sha256:00ff");
    assert_int_equal(fy_rn_enrollment_save(dir, &e), 0);
    assert_int_equal(fy_rn_enrollment_load(dir, &got, err, sizeof err), 0);
    assert_string_equal(got.name, "gpu-box-1");
    assert_int_equal(got.ngateways, 2);
    assert_string_equal(got.gateways[1], "[::1]:7443");
    assert_string_equal(got.ca_fingerprint, "sha256:00ff");

    /* Damaged files are refused with a reason. */
    static const char *const bad[] = {
        "not json",
        "{\"gateways\": []}",
        "{\"name\": \"x\"}",
        "{\"name\": \"x\", \"gateways\": [1]}",
        "{\"name\": \"x\", \"gateways\": \"a:1\"}",
    };
    char path[4096];
    fy_path_join(path, sizeof path, dir, FY_RN_CONFIG);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fy_file_write_atomic(path, bad[i], strlen(bad[i]), 0644), 0);
        err[0] = '\0';
        if (fy_rn_enrollment_load(dir, &got, err, sizeof err) != FY_EPARSE || !err[0]) {
            fail_msg("accepted: %s", bad[i]);
        }
    }
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_hostport),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_enrollment_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
