/* gateway/store: schema migration, token consumption rules, runner
 * enrollment and revocation, and durability of acknowledged writes across a
 * kill -9 of the writing process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "gateway/store.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];
static char path[128];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/fy-store-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/ferry.db", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

static void hash_of(int i, uint8_t h[32])
{
    memset(h, 0, 32);
    memcpy(h, &i, sizeof i);
    h[31] = 0xAB;
}

static void test_open_and_migrate(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 1);
    fy_store_close(st);
    /* Reopening an up-to-date store is a no-op migration. */
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_schema_version(st), 1);
    fy_store_close(st);
    assert_int_equal(fy_store_open("/nonexistent-dir/x.db", &st, err, sizeof err), FY_EIO);
    assert_non_null(strstr(err, "/nonexistent-dir/x.db"));
}

static void test_names(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int ok;
    } cases[] = {
        {"runner-1", 1},
        {"a", 1},
        {"gpu0", 1},
        {"", 0},
        {"-x", 0},
        {"UPPER", 0},
        {"a_b", 0},
        {"a/b", 0},
        {"a b", 0},
        {"é", 0},
        {"0123456789012345678901234567890123456789012345678901234567890123", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_store_valid_name(cases[i].name), cases[i].ok);
    }
    assert_false(fy_store_valid_name(NULL));
}

static void test_tokens(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    uint8_t h1[32], h2[32], h3[32];
    hash_of(1, h1);
    hash_of(2, h2);
    hash_of(3, h3);
    assert_int_equal(fy_store_token_add(st, "tok_1", h1, "alpha", 1000, 2000), 0);
    assert_int_equal(fy_store_token_add(st, "tok_2", h2, "beta", 1000, 1500), 0);
    /* The same secret twice is refused by the unique hash. */
    assert_int_equal(fy_store_token_add(st, "tok_x", h1, "alpha", 1000, 2000), FY_EEXIST);

    assert_int_equal(fy_store_token_consume(st, h3, 1100, name), FY_ENOENT);
    assert_int_equal(fy_store_token_consume(st, h2, 1500, name), FY_ETIMEDOUT);
    assert_int_equal(fy_store_token_consume(st, h1, 1100, name), 0);
    assert_string_equal(name, "alpha");
    assert_int_equal(fy_store_token_consume(st, h1, 1101, name), FY_EEXIST);
    fy_store_close(st);
}

static void test_runners(void **state)
{
    (void)state;
    fy_store *st = NULL;
    char err[256];
    fy_store_runner r;
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), FY_ENOENT);
    assert_int_equal(fy_store_runner_enroll(st, "alpha", "sha256:aa", "01", 10), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_string_equal(r.fingerprint, "sha256:aa");
    assert_int_equal(r.revoked_at, 0);
    assert_int_equal(fy_store_runner_revoke(st, "alpha", 20), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_int_equal(r.revoked_at, 20);
    assert_int_equal(fy_store_runner_revoke(st, "nobody", 20), FY_ENOENT);
    /* Re-enrollment replaces the certificate and lifts the revocation. */
    assert_int_equal(fy_store_runner_enroll(st, "alpha", "sha256:bb", "02", 30), 0);
    assert_int_equal(fy_store_runner_get(st, "alpha", &r), 0);
    assert_string_equal(r.fingerprint, "sha256:bb");
    assert_int_equal(r.revoked_at, 0);
    fy_store_close(st);
}

/* A child acknowledges each write through a pipe, then is killed with
 * SIGKILL at an arbitrary point; every acknowledged write must be there. */
static void test_durable_across_kill9(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        fy_store *st = NULL;
        char err[256];
        if (fy_store_open(path, &st, err, sizeof err)) {
            _exit(1);
        }
        for (int i = 100;; i++) {
            uint8_t h[32];
            char id[24];
            hash_of(i, h);
            snprintf(id, sizeof id, "tok_%d", i);
            if (fy_store_token_add(st, id, h, "gamma", 1, 1 << 30)) {
                _exit(1);
            }
            if (write(fds[1], &i, sizeof i) != sizeof i) {
                _exit(1);
            }
        }
    }
    close(fds[1]);
    int acked = -1, v;
    for (int n = 0; n < 40 && read(fds[0], &v, sizeof v) == sizeof v; n++) {
        acked = v;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while (read(fds[0], &v, sizeof v) == sizeof v) {
        acked = v;
    }
    close(fds[0]);
    assert_true(acked >= 100);

    fy_store *st = NULL;
    char err[256], name[FY_STORE_NAME_MAX];
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    for (int i = 100; i <= acked; i++) {
        uint8_t h[32];
        hash_of(i, h);
        assert_int_equal(fy_store_token_consume(st, h, 2, name), 0);
        assert_string_equal(name, "gamma");
    }
    fy_store_close(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_and_migrate, setup, teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_across_kill9, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
