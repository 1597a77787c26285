/* Unit tests for common/err, common/buf and common/args. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/args.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static void test_err_table(void **state)
{
    (void)state;
    assert_string_equal(fy_strerror(FY_OK), "success");
    assert_string_equal(fy_err_name(FY_ETIMEDOUT), "TIMEDOUT");
    assert_string_equal(fy_strerror(FY_ETOOBIG), "value exceeds its configured limit");
    assert_string_equal(fy_strerror(-9999), "unknown error");
    /* Every code is negative, unique and has a distinct name. */
    static const int codes[] = {
#define X(name, value, msg) FY_E##name,
        FY_ERR_MAP(X)
#undef X
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        assert_true(codes[i] < 0);
        assert_string_not_equal(fy_err_name(codes[i]), "UNKNOWN");
        for (size_t j = i + 1; j < sizeof codes / sizeof codes[0]; j++) {
            assert_int_not_equal(codes[i], codes[j]);
        }
    }
}

static void test_err_from_uv(void **state)
{
    (void)state;
    static const struct {
        int uv, fy;
    } cases[] = {
        {0, FY_OK},
        {UV_EOF, FY_EEOF},
        {UV_ECONNREFUSED, FY_ECONNREFUSED},
        {UV_ECONNRESET, FY_ECONNRESET},
        {UV_ETIMEDOUT, FY_ETIMEDOUT},
        {UV_EADDRINUSE, FY_EADDRINUSE},
        {UV_EMFILE, FY_ELIMIT},
        {UV_EPIPE, FY_EPIPE},
        {UV_E2BIG, FY_EUV},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_err_from_uv(cases[i].uv), cases[i].fy);
    }
}

static void test_buf_cap(void **state)
{
    (void)state;
    fy_buf b;
    fy_buf_init(&b, 10);
    assert_int_equal(fy_buf_append(&b, "hello", 5), 0);
    assert_int_equal(fy_buf_append(&b, "world", 5), 0);
    assert_int_equal(b.len, 10);
    /* One byte over the cap fails and leaves the contents unchanged. */
    assert_int_equal(fy_buf_append(&b, "!", 1), FY_ETOOBIG);
    assert_int_equal(b.len, 10);
    assert_string_equal(fy_buf_cstr(&b), "helloworld");
    fy_buf_consume(&b, 5);
    assert_string_equal(fy_buf_cstr(&b), "world");
    assert_int_equal(fy_buf_appendf(&b, "%d%s", 42, "!"), 0);
    assert_string_equal(fy_buf_cstr(&b), "world42!");
    assert_int_equal(fy_buf_appendf(&b, "%s", "toolong"), FY_ETOOBIG);
    assert_int_equal(b.len, 8);
    /* A huge length cannot wrap around the cap check. */
    assert_int_equal(fy_buf_append(&b, "x", SIZE_MAX), FY_ETOOBIG);
    fy_buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    size_t n;
    fy_buf_append_str(&b, "abc");
    char *p = fy_buf_steal(&b, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "abc", 3);
    free(p);
    assert_null(b.data);
    fy_buf_append_str(&b, "secret");
    fy_buf_wipe(&b);
    assert_null(b.data);
    fy_buf_free(&b);
}

static void test_slice_ieq(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        size_t len;
        const char *lit;
        int eq;
    } cases[] = {
        {"Host", 4, "host", 1},
        {"CONTENT-LENGTH", 14, "content-length", 1},
        {"host", 4, "hostname", 0}, /* a prefix is not equal */
        {"hostname", 8, "host", 0},
        {"hostname", 4, "host", 1}, /* only LEN bytes count */
        {"hosu", 4, "host", 0},
        {"", 0, "", 1},
        {"x", 1, "", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(fy_slice_ieq(FY_SLICE(cases[i].s, cases[i].len), cases[i].lit),
                         cases[i].eq);
    }
}

static void test_parse_size_duration(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int rc;
        uint64_t v;
    } sizes[] = {
        {"0", 0, 0},
        {"1000", 0, 1000},
        {"4GiB", 0, 4ull << 30},
        {"512MiB", 0, 512ull << 20},
        {"64KiB", 0, 65536},
        {"1.5GiB", 0, 3ull << 29},
        {"2GB", 0, 2000000000ull},
        {"", FY_EINVAL, 0},
        {"GiB", FY_EINVAL, 0},
        {"-1", FY_EINVAL, 0},
        {"4 GiB", FY_EINVAL, 0},
        {"4XB", FY_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint64_t v = 0;
        assert_int_equal(fy_parse_size(sizes[i].s, &v), sizes[i].rc);
        if (sizes[i].rc == 0) {
            assert_int_equal(v, sizes[i].v);
        }
    }
    static const struct {
        const char *s;
        int rc;
        uint64_t v;
    } durs[] = {
        {"250ms", 0, 250},    {"30s", 0, 30000},         {"5m", 0, 300000},
        {"1h", 0, 3600000},   {"30d", 0, 2592000000ull}, {"0.5s", 0, 500},
        {"30", FY_EINVAL, 0}, {"s", FY_EINVAL, 0},       {"1w", FY_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof durs / sizeof durs[0]; i++) {
        uint64_t v = 0;
        assert_int_equal(fy_parse_duration_ms(durs[i].s, &v), durs[i].rc);
        if (durs[i].rc == 0) {
            assert_int_equal(v, durs[i].v);
        }
    }
}

typedef struct {
    int flag;
    const char *name;
    long long n;
    uint64_t size, dur;
    fy_strlist list;
} opts_t;

#define OPTS_TABLE(o)                                                  \
    {                                                                  \
        {"flag", FY_OPT_FLAG, &(o)->flag, NULL, "a flag"},             \
            {"name", FY_OPT_STR, &(o)->name, "NAME", "a name"},        \
            {"n", FY_OPT_INT, &(o)->n, "N", "a number"},               \
            {"size", FY_OPT_SIZE, &(o)->size, "BYTES", "a size"},      \
            {"dur", FY_OPT_DURATION, &(o)->dur, "TIME", "a duration"}, \
            {"item", FY_OPT_STRLIST, &(o)->list, "X", "items"}, {0},   \
    }

static void test_args_parse(void **state)
{
    (void)state;
    opts_t o = {0};
    const fy_opt opts[] = OPTS_TABLE(&o);
    char *argv[] = {"run",  "--flag",         "--name=alpha", "--n", "-7",       "--size",
                    "2MiB", "--dur=1h",       "--item",       "a",   "--item=b", "pos2",
                    "--",   "--not-an-option"};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    char *pos[16];
    int npos = 0;
    char err[128] = "";
    assert_int_equal(fy_args_parse(opts, argc, argv, pos, &npos, err, sizeof err), 0);
    assert_int_equal(o.flag, 1);
    assert_string_equal(o.name, "alpha");
    assert_int_equal(o.n, -7);
    assert_int_equal(o.size, 2u << 20);
    assert_int_equal(o.dur, 3600000);
    assert_int_equal(o.list.n, 2);
    assert_string_equal(o.list.v[1], "b");
    assert_int_equal(npos, 3);
    assert_string_equal(pos[0], "run");
    assert_string_equal(pos[1], "pos2");
    assert_string_equal(pos[2], "--not-an-option");
    assert_string_equal(fy_args_find(argc, argv, "name"), "alpha");
    assert_string_equal(fy_args_find(argc, argv, "size"), "2MiB");
    assert_null(fy_args_find(argc, argv, "missing"));
}

static void test_args_errors(void **state)
{
    (void)state;
    static const struct {
        const char *arg1, *arg2;
        const char *msg;
    } cases[] = {
        {"--bogus", NULL, "unknown option '--bogus'"},
        {"--name", NULL, "--name needs a value (NAME)"},
        {"--n", "x", "--n: 'x' is not an integer"},
        {"--size", "4XB", "--size: '4XB' is not a size like 4GiB"},
        {"--dur", "10", "--dur: '10' is not a duration like 30s"},
        {"--flag=1", NULL, "--flag takes no value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        opts_t o = {0};
        const fy_opt opts[] = OPTS_TABLE(&o);
        char *argv[2] = {(char *)cases[i].arg1, (char *)cases[i].arg2};
        char *pos[2];
        int npos;
        char err[128] = "";
        assert_int_equal(
            fy_args_parse(opts, cases[i].arg2 ? 2 : 1, argv, pos, &npos, err, sizeof err),
            FY_EINVAL);
        assert_non_null(strstr(err, cases[i].msg));
    }
}

static int allow_listed(const char *name, void *arg)
{
    for (const char *const *n = arg; *n; n++) {
        if (strcmp(*n, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static void test_args_refused(void **state)
{
    (void)state;
    opts_t o = {0};
    const fy_opt opts[] = OPTS_TABLE(&o);
    static const char *const some[] = {"name", "n", NULL};
    /* "--flag" as the value of --name is not an option; the last flag is. */
    char *argv[] = {"run", "--name", "--flag", "--n=3", "--flag", "--", "--size"};
    const fy_opt *r = fy_args_refused(opts, 7, argv, allow_listed, (void *)some);
    assert_non_null(r);
    assert_string_equal(r->name, "flag");
    assert_int_equal(o.n, 0); /* values are not applied */
    /* Nothing refused: after "--" is positional. */
    assert_null(fy_args_refused(opts, 4, argv, allow_listed, (void *)some));
    char *argv2[] = {"--n", "1", "--", "--size"};
    assert_null(fy_args_refused(opts, 4, argv2, allow_listed, (void *)some));
    char *argv3[] = {"-h"};
    r = fy_args_refused(opts, 1, argv3, allow_listed, (void *)some);
    assert_null(r); /* -h is --help, which this table does not know */
}

static char *write_tmp(const char *content)
{
    char *path = strdup("/tmp/fy-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return path;
}

static void test_config_load(void **state)
{
    (void)state;
    opts_t o = {0};
    const fy_opt opts[] = OPTS_TABLE(&o);
    char err[256] = "";
    char *path = write_tmp("{\"flag\": true, \"name\": \"beta\", \"n\": 12, \"size\": \"1KiB\", "
                           "\"dur\": 30, \"item\": [\"x\", \"y\", \"z\"]}");
    json_t *root = fy_config_load(path, opts, err, sizeof err);
    assert_non_null(root);
    assert_int_equal(o.flag, 1);
    assert_string_equal(o.name, "beta");
    assert_int_equal(o.n, 12);
    assert_int_equal(o.size, 1024);
    assert_int_equal(o.dur, 30000); /* bare numbers are seconds */
    assert_int_equal(o.list.n, 3);
    /* Command-line values given after the file override it. */
    char *argv[] = {"--name", "gamma"};
    char *pos[2];
    int npos;
    assert_int_equal(fy_args_parse(opts, 2, argv, pos, &npos, err, sizeof err), 0);
    assert_string_equal(o.name, "gamma");
    json_decref(root);
    unlink(path);
    free(path);

    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"[1,2]", "top level must be a JSON object"},
        {"{\"nope\": 1}", "unknown key 'nope'"},
        {"{\"flag\": \"yes\"}", "must be true or false"},
        {"{\"name\": 3}", "must be a string"},
        {"{\"size\": \"lots\"}", "is not a size"},
        {"{\"name\": \"a\", \"name\": \"b\"}", "duplicate"},
        {"{\"name\": ", ":1:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        opts_t o2 = {0};
        const fy_opt opts2[] = OPTS_TABLE(&o2);
        path = write_tmp(bad[i].json);
        assert_null(fy_config_load(path, opts2, err, sizeof err));
        if (!strstr(err, bad[i].msg)) {
            fail_msg("config %s: error '%s' lacks '%s'", bad[i].json, err, bad[i].msg);
        }
        unlink(path);
        free(path);
    }
    assert_null(fy_config_load("/nonexistent/ferry.json", opts, err, sizeof err));
    assert_non_null(strstr(err, "No such file"));
}

static void test_log_levels(void **state)
{
    (void)state;
    fy_log_level l;
    fy_log_format f;
    assert_int_equal(fy_log_level_parse("warn", &l), 0);
    assert_int_equal(l, FY_LOG_WARN);
    assert_int_equal(fy_log_level_parse("loud", &l), FY_EINVAL);
    assert_int_equal(fy_log_format_parse("json", &f), 0);
    assert_int_equal(f, FY_LOG_JSON);
    fy_log_setup(FY_LOG_WARN, FY_LOG_JSON);
    assert_false(fy_log_enabled(FY_LOG_INFO));
    assert_true(fy_log_enabled(FY_LOG_ERROR));

    /* Capture stderr and check a JSON line is well-formed and complete. */
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    int saved = dup(STDERR_FILENO);
    dup2(pipefd[1], STDERR_FILENO);
    FY_INFO("test", "suppressed %d", 1);
    fy_log_event(FY_LOG_ERROR, "test", "hello \"quoted\"",
                 json_pack("{s:i,s:s}", "status", 502, "runner", "r1"));
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(pipefd[1]);
    char out[1024] = "";
    ssize_t n = read(pipefd[0], out, sizeof out - 1);
    close(pipefd[0]);
    assert_true(n > 0);
    out[n] = '\0';
    assert_int_equal(out[n - 1], '\n');
    assert_null(strstr(out, "suppressed"));
    json_error_t je;
    json_t *line = json_loads(out, 0, &je);
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "msg")), "hello \"quoted\"");
    assert_string_equal(json_string_value(json_object_get(line, "level")), "error");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 502);
    json_decref(line);
    fy_log_setup(FY_LOG_INFO, FY_LOG_TEXT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_table),
        cmocka_unit_test(test_err_from_uv),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_slice_ieq),
        cmocka_unit_test(test_parse_size_duration),
        cmocka_unit_test(test_args_parse),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_args_refused),
        cmocka_unit_test(test_config_load),
        cmocka_unit_test(test_log_levels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
