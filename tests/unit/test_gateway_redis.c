/* gateway/redis: the asynchronous Redis client, against a real redis-server.
 *
 * Every test that needs a server starts its own (support/redis_server.h) on
 * a unix socket in a fresh temporary directory and kills it in the teardown
 * (and, should this process die, through PR_SET_PDEATHSIG). Nothing waits for a fixed time: the loop
 * runs until a condition holds, under a generous deadline. Without
 * redis-server installed those tests are skipped, saying why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "gateway/redis.h"
#include "support/redis_server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <uv.h>

/* ---- fixture ----------------------------------------------------------- */

typedef struct {
    redis_env e;
    fy_redis *cl[4];
} fx;

static int setup(void **state)
{
    fx *f;

    redis_srv_need();
    f = calloc(1, sizeof *f);
    assert_non_null(f);
    redis_env_init(&f->e);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;

    if (!f)
        return 0;
    for (int i = 0; i < 4; i++)
        fy_redis_free(f->cl[i]);
    redis_env_close(&f->e);
    free(f);
    return 0;
}

#define WAIT_UNTIL(f, cond) REDIS_WAIT_UNTIL(&(f)->e.loop, cond)

/* ---- recorders --------------------------------------------------------- */

/* DOWNS counts transitions to DOWN (from UP or from the first connect);
 * REPORTS every DOWN report, which repeats only when the cause changes (a
 * retry may meet ECONNREFUSED or ENOENT after ECONNRESET, depending on how
 * fast the server comes back, so tests count transitions). */
typedef struct {
    int ups, downs, reports, up, seen, last_err;
    char reason[300];
} st_rec;

static void on_state(void *data, int up, int err, const char *reason)
{
    st_rec *s = data;
    if (up) {
        assert_false(s->up);
        s->ups++;
    } else {
        if (s->up || !s->seen)
            s->downs++;
        s->reports++;
    }
    s->up = up;
    s->seen = 1;
    s->last_err = err;
    snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static const fy_redis_ops ops = {.on_state = on_state};

typedef struct {
    int calls, status, type, seq;
    long long integer;
    size_t len, n;
    char str[512];
} rep;

static int seq_counter;

static void on_rep(void *data, int status, const fy_redis_reply *r)
{
    rep *p = data;
    p->calls++;
    p->status = status;
    p->seq = ++seq_counter;
    p->type = r ? (int)r->type : 0;
    if (r) {
        p->integer = r->integer;
        p->n = r->n;
        p->len = r->len < sizeof p->str ? r->len : sizeof p->str;
        if (r->str)
            memcpy(p->str, r->str, p->len);
    }
}

static fy_redis *new_client(fx *f, int slot, int db, const char *password, st_rec *st)
{
    char url[200], err[256];
    fy_redis_config cfg;
    fy_redis *cl = NULL;

    if (db)
        snprintf(url, sizeof url, "unix://%s?db=%d", f->e.s.sock, db);
    else
        snprintf(url, sizeof url, "unix://%s", f->e.s.sock);
    assert_int_equal(fy_redis_config_parse(url, NULL, &cfg, err, sizeof err), 0);
    if (password) {
        snprintf(cfg.password, sizeof cfg.password, "%s", password);
        cfg.password_len = strlen(password);
    }
    cfg.backoff_min_ms = 5;
    cfg.backoff_max_ms = 100;
    assert_int_equal(fy_redis_new(&f->e.loop, &cfg, &ops, st, &cl), 0);
    fy_redis_config_wipe(&cfg);
    f->cl[slot] = cl;
    return cl;
}

/* Sends a command of NUL-terminated words and waits for its reply. */
static void cmd_sync(fx *f, fy_redis *cl, rep *r, int argc, const char *const *argv)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(fy_redis_cmd(cl, on_rep, r, argc, argv, NULL), 0);
    WAIT_UNTIL(f, r->calls == 1);
}

typedef struct {
    int calls, status;
    char text[16384];
} info_rep;

static void on_info(void *data, int status, const fy_redis_reply *r)
{
    info_rep *p = data;
    size_t n = r && r->str ? r->len : 0;
    p->calls++;
    p->status = status;
    if (n >= sizeof p->text)
        n = sizeof p->text - 1;
    if (n)
        memcpy(p->text, r->str, n);
    p->text[n] = 0;
}

/* The number after FIELD= in INFO commandstats' line for command NAME (0
 * when the command never ran). */
static long cmdstat(fx *f, fy_redis *cl, const char *name, const char *field)
{
    static info_rep r;
    const char *argv[] = {"INFO", "commandstats"};
    char key[64];
    const char *p;

    memset(&r, 0, sizeof r);
    assert_int_equal(fy_redis_cmd(cl, on_info, &r, 2, argv, NULL), 0);
    WAIT_UNTIL(f, r.calls == 1);
    assert_int_equal(r.status, 0);
    snprintf(key, sizeof key, "cmdstat_%s:", name);
    p = strstr(r.text, key);
    if (!p)
        return 0;
    snprintf(key, sizeof key, "%s=", field);
    p = strstr(p, key);
    assert_non_null(p);
    return strtol(p + strlen(key), NULL, 10);
}

/* The number after "KEY:" in INFO SECTION. */
static long info_field(fx *f, fy_redis *cl, const char *section, const char *key)
{
    static info_rep r;
    const char *argv[] = {"INFO", section};
    char k[64];
    const char *p;

    memset(&r, 0, sizeof r);
    assert_int_equal(fy_redis_cmd(cl, on_info, &r, 2, argv, NULL), 0);
    WAIT_UNTIL(f, r.calls == 1);
    assert_int_equal(r.status, 0);
    snprintf(k, sizeof k, "\n%s:", key);
    p = strstr(r.text, k);
    assert_non_null(p);
    return strtol(p + strlen(k), NULL, 10);
}

/* ---- configuration ----------------------------------------------------- */

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    fclose(fp);
}

static void test_config(void **state)
{
    static const struct {
        const char *url;
        int rc;
        int is_unix;
        const char *host_or_path;
        int port, db;
        const char *msg; /* a piece of the error text */
    } cases[] = {
        {"redis://127.0.0.1:6380/2", 0, 0, "127.0.0.1", 6380, 2, NULL},
        {"redis://127.0.0.1", 0, 0, "127.0.0.1", 6379, 0, NULL},
        {"redis://localhost:1/", 0, 0, "127.0.0.1", 1, 0, NULL},
        {"redis://[::1]:7000/15", 0, 0, "::1", 7000, 15, NULL},
        {"unix:///run/redis/redis.sock", 0, 1, "/run/redis/redis.sock", 0, 0, NULL},
        {"unix:///tmp/r.sock?db=3", 0, 1, "/tmp/r.sock", 0, 3, NULL},
        {"redis://:secret@127.0.0.1:6379", FY_EINVAL, 0, NULL, 0, 0, "user info"},
        {"redis://redis.internal:6379", FY_EINVAL, 0, NULL, 0, 0, "block"},
        {"redis://127.0.0.1:0", FY_EINVAL, 0, NULL, 0, 0, "port"},
        {"redis://127.0.0.1:65536", FY_EINVAL, 0, NULL, 0, 0, "port"},
        {"redis://127.0.0.1:12x", FY_EINVAL, 0, NULL, 0, 0, "port"},
        {"redis://127.0.0.1:6379/abc", FY_EINVAL, 0, NULL, 0, 0, "database"},
        {"redis://127.0.0.1:6379/99999999", FY_EINVAL, 0, NULL, 0, 0, "database"},
        {"redis://", FY_EINVAL, 0, NULL, 0, 0, "empty host"},
        {"redis://[::1:6379", FY_EINVAL, 0, NULL, 0, 0, "IPv6"},
        {"rediss://127.0.0.1", FY_ENOTSUP, 0, NULL, 0, 0, "TLS"},
        {"http://127.0.0.1", FY_EINVAL, 0, NULL, 0, 0, "must start"},
        {"unix://relative.sock", FY_EINVAL, 0, NULL, 0, 0, "absolute"},
        {"unix:///tmp/r.sock?database=1", FY_EINVAL, 0, NULL, 0, 0, "db=N"},
        {"unix:///tmp/r.sock?db=-1", FY_EINVAL, 0, NULL, 0, 0, "database"},
    };
    fy_redis_config cfg;
    char err[256], url[2048], dir[] = "/tmp/fy-redis-cfg-XXXXXX", pf[128], big[5000];
    (void)state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        int rc = fy_redis_config_parse(cases[i].url, NULL, &cfg, err, sizeof err);
        if (rc != cases[i].rc)
            fail_msg("%s: rc %d, want %d (%s)", cases[i].url, rc, cases[i].rc, err);
        if (rc != 0) {
            if (!strstr(err, cases[i].msg))
                fail_msg("%s: error '%s' lacks '%s'", cases[i].url, err, cases[i].msg);
            continue;
        }
        assert_int_equal(cfg.is_unix, cases[i].is_unix);
        assert_string_equal(cfg.is_unix ? cfg.path : cfg.host, cases[i].host_or_path);
        if (!cfg.is_unix)
            assert_int_equal(cfg.port, cases[i].port);
        assert_int_equal(cfg.db, cases[i].db);
        assert_int_equal(cfg.password_len, 0);
        assert_int_equal(cfg.backoff_min_ms, FY_REDIS_DEFAULT_BACKOFF_MIN_MS);
        fy_redis_config_wipe(&cfg);
    }

    /* Bounds: URL length and socket path. */
    memset(url, 'a', sizeof url);
    memcpy(url, "redis://", 8);
    url[sizeof url - 1] = 0;
    assert_int_equal(fy_redis_config_parse(url, NULL, &cfg, err, sizeof err), FY_ETOOBIG);
    snprintf(url, sizeof url, "unix:///%0200d", 0);
    assert_int_equal(fy_redis_config_parse(url, NULL, &cfg, err, sizeof err), FY_ETOOBIG);
    assert_non_null(strstr(err, "socket path"));

    /* Password files: the first line without its ending, binary-safe up to
     * the line end; empty, missing and oversized files are refused. */
    assert_non_null(mkdtemp(dir));
    snprintf(pf, sizeof pf, "%s/pw", dir);
    write_file(pf, "s3cret\r\nignored\n", 16);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.password_len, 6);
    assert_memory_equal(cfg.password, "s3cret", 6);
    fy_redis_config_wipe(&cfg);
    assert_int_equal(cfg.password_len, 0);
    write_file(pf, "only", 4);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.password_len, 4);
    fy_redis_config_wipe(&cfg);
    write_file(pf, "\nx\n", 3);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err),
                     FY_EINVAL);
    assert_non_null(strstr(err, "empty"));
    assert_int_equal(cfg.password_len, 0);
    memset(big, 'p', sizeof big);
    write_file(pf, big, sizeof big);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err),
                     FY_ETOOBIG);
    assert_non_null(strstr(err, "4096"));
    write_file(pf, big, FY_REDIS_MAX_PASSWORD + 1);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err),
                     FY_ETOOBIG);
    assert_non_null(strstr(err, "password over"));
    write_file(pf, big, FY_REDIS_MAX_PASSWORD);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg.password_len, FY_REDIS_MAX_PASSWORD);
    fy_redis_config_wipe(&cfg);
    snprintf(pf, sizeof pf, "%s/missing", dir);
    assert_int_equal(fy_redis_config_parse("redis://127.0.0.1", pf, &cfg, err, sizeof err),
                     FY_ENOENT);
    assert_non_null(strstr(err, "missing"));
    snprintf(url, sizeof url, "rm -rf '%s'", dir);
    assert_int_equal(system(url), 0);
}

/* ---- commands ---------------------------------------------------------- */

static void test_set_get_binary(void **state)
{
    fx *f = *state;
    st_rec st = {0};
    static const char val[] = "a\0b\r\n$3\r\n\xff";
    const char *set[] = {"SET", "bin\0key", val};
    size_t setlen[] = {3, 7, sizeof val};
    const char *get[] = {"GET", "bin\0key"};
    size_t getlen[] = {3, 7};
    rep r1 = {0}, r2 = {0}, r0 = {0};

    redis_srv_start(&f->e.s);
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    assert_false(fy_redis_is_up(cl));
    /* Issued while the first connect is under way: held, then sent. */
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r1, 3, set, setlen), 0);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r2, 2, get, getlen), 0);
    WAIT_UNTIL(f, r2.calls == 1);
    assert_int_equal(st.ups, 1);
    assert_int_equal(st.downs, 0);
    assert_true(fy_redis_is_up(cl));
    assert_int_equal(r1.calls, 1);
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.type, FY_REDIS_REPLY_STATUS);
    assert_memory_equal(r1.str, "OK", 2);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r2.type, FY_REDIS_REPLY_STRING);
    assert_int_equal(r2.len, sizeof val);
    assert_memory_equal(r2.str, val, sizeof val);
    assert_true(r1.seq < r2.seq);

    /* A missing key is NIL; a server error is FY_EIO with its text. */
    const char *miss[] = {"GET", "nope"};
    cmd_sync(f, cl, &r0, 2, miss);
    assert_int_equal(r0.status, 0);
    assert_int_equal(r0.type, FY_REDIS_REPLY_NIL);
    const char *bad[] = {"INCR", "bin\0key"};
    size_t badlen[] = {4, 7};
    memset(&r0, 0, sizeof r0);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r0, 2, bad, badlen), 0);
    WAIT_UNTIL(f, r0.calls == 1);
    assert_int_equal(r0.status, FY_EIO);
    assert_int_equal(r0.type, FY_REDIS_REPLY_ERROR);
    assert_memory_equal(r0.str, "ERR", 3);
    /* Arrays. */
    const char *rp[] = {"RPUSH", "list", "x", "yy", "zzz"};
    cmd_sync(f, cl, &r0, 5, rp);
    assert_int_equal(r0.integer, 3);
    const char *lr[] = {"LRANGE", "list", "0", "-1"};
    cmd_sync(f, cl, &r0, 4, lr);
    assert_int_equal(r0.type, FY_REDIS_REPLY_ARRAY);
    assert_int_equal(r0.n, 3);

    assert_int_equal(fy_redis_cmd(cl, on_rep, &r0, 0, get, NULL), FY_EINVAL);
}

static void test_auth(void **state)
{
    fx *f = *state;
    st_rec good = {0}, bad = {0}, none = {0};
    rep r = {0};
    const char *set[] = {"SET", "k", "v"};

    write_file(f->e.s.conf, "requirepass hunter2-redis\n", 26);
    redis_srv_start(&f->e.s);
    fy_redis *ok = new_client(f, 0, 0, "hunter2-redis", &good);
    fy_redis *wrong = new_client(f, 1, 0, "hunter3", &bad);
    fy_redis *anon = new_client(f, 2, 0, NULL, &none);
    WAIT_UNTIL(f, good.ups == 1 && bad.downs >= 1 && none.downs >= 1);
    cmd_sync(f, ok, &r, 3, set);
    assert_int_equal(r.status, 0);

    /* A wrong password and no password at all: DOWN with FY_EPERM and the
     * server's words, reported once, and commands fail at once. */
    assert_int_equal(bad.ups, 0);
    assert_int_equal(bad.last_err, FY_EPERM);
    assert_non_null(strstr(bad.reason, "AUTH"));
    assert_int_equal(none.ups, 0);
    assert_int_equal(none.last_err, FY_EPERM);
    assert_non_null(strstr(none.reason, "NOAUTH"));
    assert_false(fy_redis_is_up(wrong));
    assert_int_equal(fy_redis_cmd(wrong, on_rep, &r, 3, set, NULL), FY_EUNREACH);
    assert_int_equal(fy_redis_cmd(anon, on_rep, &r, 3, set, NULL), FY_EUNREACH);
    /* It keeps trying (the server might be reconfigured) without reporting
     * the same failure again: wait for more attempts via the server's
     * rejected-connection count, then check nothing new was reported. */
    long before = cmdstat(f, ok, "auth", "failed_calls");
    WAIT_UNTIL(f, cmdstat(f, ok, "auth", "failed_calls") >= before + 3);
    assert_int_equal(bad.downs, 1);
    assert_int_equal(bad.reports, 1);
    assert_int_equal(bad.ups, 0);
}

static void test_select(void **state)
{
    fx *f = *state;
    st_rec s3 = {0}, s0 = {0};
    rep r = {0};
    const char *set[] = {"SET", "where", "db3"};
    const char *get[] = {"GET", "where"};
    const char *info[] = {"CLIENT", "INFO"};

    redis_srv_start(&f->e.s);
    fy_redis *c3 = new_client(f, 0, 3, NULL, &s3);
    fy_redis *c0 = new_client(f, 1, 0, NULL, &s0);
    cmd_sync(f, c3, &r, 3, set);
    assert_int_equal(r.status, 0);
    cmd_sync(f, c3, &r, 2, get);
    assert_int_equal(r.type, FY_REDIS_REPLY_STRING);
    assert_memory_equal(r.str, "db3", 3);
    cmd_sync(f, c0, &r, 2, get);
    assert_int_equal(r.type, FY_REDIS_REPLY_NIL);
    cmd_sync(f, c3, &r, 2, info);
    assert_non_null(strstr(r.str, " db=3 "));

    /* A database the server does not have: DOWN with FY_EIO. */
    st_rec sx = {0};
    new_client(f, 2, 999, NULL, &sx);
    WAIT_UNTIL(f, sx.downs == 1);
    assert_int_equal(sx.last_err, FY_EIO);
    assert_non_null(strstr(sx.reason, "SELECT"));
}

static void test_pipeline(void **state)
{
    fx *f = *state;
    st_rec st = {0};
    enum { N = 1000 };
    static rep r[N];
    const char *incr[] = {"INCR", "counter"};
    int turns = 0;

    memset(r, 0, sizeof r);
    redis_srv_start(&f->e.s);
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    WAIT_UNTIL(f, st.ups == 1);
    for (int i = 0; i < N; i++)
        assert_int_equal(fy_redis_cmd(cl, on_rep, &r[i], 2, incr, NULL), 0);
    for (uint64_t dl = redis_srv_now_ms() + REDIS_SRV_DEADLINE_MS; r[N - 1].calls == 0; turns++) {
        assert_true(redis_srv_now_ms() < dl);
        uv_run(&f->e.loop, UV_RUN_ONCE);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, 0);
        assert_int_equal(r[i].integer, i + 1);
        if (i)
            assert_true(r[i].seq == r[i - 1].seq + 1);
    }
    /* One round trip per command would need N loop turns; pipelined, the
     * whole batch goes out in a few writes and comes back in a few reads. */
    print_message("1000 INCRs answered in %d loop turns\n", turns);
    assert_true(turns < N / 10);
    assert_int_equal(cmdstat(f, cl, "incr", "calls"), N);
}

/* ---- scripts ----------------------------------------------------------- */

static void test_eval_noscript(void **state)
{
    fx *f = *state;
    st_rec st = {0};
    rep r = {0};
    fy_redis_script *s = NULL;
    const char *keys[] = {"evk"};
    const char *args[] = {"10"};
    const char *flush[] = {"SCRIPT", "FLUSH"};

    redis_srv_start(&f->e.s);
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    WAIT_UNTIL(f, st.ups == 1);
    assert_int_equal(
        fy_redis_script_new(cl, "return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])", &s), 0);
    assert_int_equal(strlen(fy_redis_script_sha(s)), 40);
    /* SHA1 of the source, as Redis computes it. */
    {
        const char *load[] = {"SCRIPT", "LOAD",
                              "return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])"};
        rep l = {0};
        cmd_sync(f, cl, &l, 3, load);
        assert_int_equal(l.len, 40);
        assert_memory_equal(l.str, fy_redis_script_sha(s), 40);
        cmd_sync(f, cl, &l, 2, flush);
    }

    /* 1: not cached -> NOSCRIPT -> EVAL. 2: cached -> EVALSHA only. 3: after
     * SCRIPT FLUSH -> NOSCRIPT -> EVAL again. */
    for (int i = 1; i <= 3; i++) {
        if (i == 3) {
            cmd_sync(f, cl, &r, 2, flush);
            assert_int_equal(r.status, 0);
        }
        memset(&r, 0, sizeof r);
        assert_int_equal(fy_redis_eval(s, on_rep, &r, 1, keys, NULL, 1, args, NULL), 0);
        WAIT_UNTIL(f, r.calls == 1);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.type, FY_REDIS_REPLY_INTEGER);
        assert_int_equal(r.integer, 10 + i);
    }
    assert_int_equal(cmdstat(f, cl, "evalsha", "calls"), 3);
    assert_int_equal(cmdstat(f, cl, "eval", "calls"), 2);

    /* A script error is passed on (once, not retried). */
    fy_redis_script *bad = NULL;
    assert_int_equal(fy_redis_script_new(cl, "return redis.call('NOSUCHCMD')", &bad), 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(fy_redis_eval(bad, on_rep, &r, 0, NULL, NULL, 0, NULL, NULL), 0);
    WAIT_UNTIL(f, r.calls == 1);
    assert_int_equal(r.status, FY_EIO);
    assert_int_equal(r.type, FY_REDIS_REPLY_ERROR);
}

/* ---- pub/sub, outages, reconnects -------------------------------------- */

typedef struct {
    int n;
    char last[64];
    size_t len;
} msgs;

static void on_msg(void *data, const char *ch, size_t chlen, const char *m, size_t mlen)
{
    msgs *p = data;
    assert_memory_equal(ch, "news", chlen);
    p->n++;
    p->len = mlen < sizeof p->last ? mlen : sizeof p->last;
    memcpy(p->last, m, p->len);
}

static void publish(fx *f, fy_redis *cl, const char *m, size_t mlen, long receivers)
{
    const char *argv[] = {"PUBLISH", "news", m};
    size_t lens[] = {7, 4, mlen};
    rep r = {0};
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r, 3, argv, lens), 0);
    WAIT_UNTIL(f, r.calls == 1);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.integer, receivers);
}

static void test_pubsub_restart(void **state)
{
    fx *f = *state;
    st_rec st = {0}, st2 = {0};
    msgs m = {0};
    rep blk = {0}, r = {0};
    const char *blpop[] = {"BLPOP", "never", "0"};
    const char *ping[] = {"PING"};

    redis_srv_start(&f->e.s);
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    assert_int_equal(fy_redis_subscribe(cl, "news", 4, on_msg, &m), 0);
    assert_int_equal(fy_redis_subscribe(cl, "news", 4, on_msg, &m), FY_EEXIST);
    WAIT_UNTIL(f, st.ups == 1);
    /* UP means subscribed already. */
    assert_int_equal(fy_redis_subscribed(cl), 1);
    publish(f, cl, "one\0x", 5, 1);
    WAIT_UNTIL(f, m.n == 1);
    assert_int_equal(m.len, 5);
    assert_memory_equal(m.last, "one\0x", 5);

    /* A command the server holds forever is in flight when it dies. */
    assert_int_equal(fy_redis_cmd(cl, on_rep, &blk, 3, blpop, NULL), 0);
    fy_redis *watch = new_client(f, 1, 0, NULL, &st2);
    WAIT_UNTIL(f, st2.ups == 1);
    WAIT_UNTIL(f, info_field(f, watch, "clients", "blocked_clients") == 1);
    fy_redis_free(watch);
    f->cl[1] = NULL;
    redis_srv_stop(&f->e.s, SIGKILL);
    WAIT_UNTIL(f, st.downs == 1 && blk.calls == 1);
    assert_int_equal(blk.status, FY_ECONNRESET);
    assert_false(fy_redis_is_up(cl));
    assert_int_equal(fy_redis_subscribed(cl), 0);
    /* Down: fail fast, nothing queued. */
    memset(&r, 0, sizeof r);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r, 1, ping, NULL), FY_EUNREACH);
    assert_int_equal(r.calls, 0);

    /* Same socket, new server: UP again, resubscribed. */
    redis_srv_start(&f->e.s);
    WAIT_UNTIL(f, st.ups == 2);
    assert_int_equal(st.downs, 1);
    assert_int_equal(fy_redis_subscribed(cl), 1);
    publish(f, cl, "two", 3, 1);
    WAIT_UNTIL(f, m.n == 2);
    assert_memory_equal(m.last, "two", 3);
    /* A channel added while UP. */
    assert_int_equal(fy_redis_subscribe(cl, "more", 4, on_msg, &m), 0);
    WAIT_UNTIL(f, fy_redis_subscribed(cl) == 2);
}

static void test_down_fail_fast(void **state)
{
    fx *f = *state;
    st_rec st = {0};
    rep q = {0}, r = {0};
    const char *ping[] = {"PING"};

    /* No server at all: commands queued during the first connect fail with
     * FY_EUNREACH when it fails; later ones are refused at once. */
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &q, 1, ping, NULL), 0);
    WAIT_UNTIL(f, st.downs == 1);
    assert_int_equal(st.last_err, FY_ENOENT);
    WAIT_UNTIL(f, q.calls == 1);
    assert_int_equal(q.status, FY_EUNREACH);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r, 1, ping, NULL), FY_EUNREACH);
    assert_int_equal(r.calls, 0);

    /* The server appears: the retry finds it. */
    redis_srv_start(&f->e.s);
    WAIT_UNTIL(f, st.ups == 1);
    cmd_sync(f, cl, &r, 1, ping);
    assert_int_equal(r.status, 0);

    /* kill -9 and restart, twice: down then up each time. */
    for (int i = 0; i < 2; i++) {
        redis_srv_stop(&f->e.s, SIGKILL);
        WAIT_UNTIL(f, st.downs == 2 + i);
        assert_int_equal(st.ups, 1 + i);
        assert_int_equal(fy_redis_cmd(cl, on_rep, &r, 1, ping, NULL), FY_EUNREACH);
        redis_srv_start(&f->e.s);
        WAIT_UNTIL(f, st.ups == 2 + i);
        cmd_sync(f, cl, &r, 1, ping);
        assert_int_equal(r.status, 0);
    }
}

/* A peer that accepts connections and never answers: the handshake times
 * out. And the queue for the first connect is bounded. */
static void test_handshake_timeout(void **state)
{
    fx *f = *state;
    st_rec st = {0};
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char url[200], err[256];
    fy_redis_config cfg;
    fy_redis *cl = NULL;
    rep r[3] = {{0}};
    const char *ping[] = {"PING"};
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);

    assert_true(lfd >= 0);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->e.s.sock);
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 16), 0); /* the kernel completes connects; nobody reads */
    snprintf(url, sizeof url, "unix://%s", f->e.s.sock);
    assert_int_equal(fy_redis_config_parse(url, NULL, &cfg, err, sizeof err), 0);
    cfg.connect_timeout_ms = 50;
    cfg.max_queued = 2;
    assert_int_equal(fy_redis_new(&f->e.loop, &cfg, &ops, &st, &cl), 0);
    f->cl[0] = cl;
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r[0], 1, ping, NULL), 0);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r[1], 1, ping, NULL), 0);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r[2], 1, ping, NULL), FY_ELIMIT);
    WAIT_UNTIL(f, st.downs == 1);
    assert_int_equal(st.last_err, FY_ETIMEDOUT);
    assert_int_equal(r[0].calls, 1);
    assert_int_equal(r[0].status, FY_EUNREACH);
    assert_int_equal(r[1].status, FY_EUNREACH);
    assert_int_equal(r[2].calls, 0);
    fy_redis_free(cl);
    f->cl[0] = NULL;
    close(lfd);
}

/* ---- the close path ---------------------------------------------------- */

typedef struct {
    fy_redis *cl;
    rep r;
    int free_in_cb;
} freer;

static void on_rep_free(void *data, int status, const fy_redis_reply *reply)
{
    freer *p = data;
    on_rep(&p->r, status, reply);
    if (p->free_in_cb) {
        const char *ping[] = {"PING"};
        fy_redis_free(p->cl);
        fy_redis_free(p->cl); /* a second call is harmless */
        assert_int_equal(fy_redis_cmd(p->cl, on_rep, &p->r, 1, ping, NULL), FY_ECLOSED);
    }
}

static void test_free_in_flight(void **state)
{
    fx *f = *state;
    st_rec st = {0}, st2 = {0};
    enum { N = 50 };
    static rep r[N];
    static msgs m;
    const char *incr[] = {"INCR", "c"};
    const char *blpop[] = {"BLPOP", "never", "0"};
    const char *ping[] = {"PING"};

    memset(r, 0, sizeof r);
    redis_srv_start(&f->e.s);

    /* 1: commands written but unanswered (the loop has not run since), one
     * held forever by the server, and a subscription: each callback once
     * with FY_ECANCELED inside fy_redis_free, nothing after. */
    fy_redis *cl = new_client(f, 0, 0, NULL, &st);
    assert_int_equal(fy_redis_subscribe(cl, "news", 4, on_msg, &m), 0);
    WAIT_UNTIL(f, st.ups == 1);
    assert_int_equal(fy_redis_cmd(cl, on_rep, &r[0], 3, blpop, NULL), 0);
    for (int i = 1; i < N; i++)
        assert_int_equal(fy_redis_cmd(cl, on_rep, &r[i], 2, incr, NULL), 0);
    fy_redis_free(cl);
    f->cl[0] = NULL;
    for (int i = 0; i < N; i++) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].status, FY_ECANCELED);
    }
    int ups = st.ups, downs = st.downs;

    /* 2: commands queued during the first connect. */
    rep q = {0};
    fy_redis *c2 = new_client(f, 1, 0, NULL, &st2);
    assert_int_equal(fy_redis_cmd(c2, on_rep, &q, 1, ping, NULL), 0);
    fy_redis_free(c2);
    f->cl[1] = NULL;
    assert_int_equal(q.calls, 1);
    assert_int_equal(q.status, FY_ECANCELED);

    /* 3: freed from inside a reply callback, with more in flight. */
    st_rec st3 = {0};
    static freer fr;
    static rep after[10];
    memset(&fr, 0, sizeof fr);
    memset(after, 0, sizeof after);
    fy_redis *c3 = new_client(f, 2, 0, NULL, &st3);
    WAIT_UNTIL(f, st3.ups == 1);
    fr.cl = c3;
    fr.free_in_cb = 1;
    assert_int_equal(fy_redis_cmd(c3, on_rep_free, &fr, 1, ping, NULL), 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(fy_redis_cmd(c3, on_rep, &after[i], 2, incr, NULL), 0);
    WAIT_UNTIL(f, fr.r.calls >= 1);
    f->cl[2] = NULL;
    assert_int_equal(fr.r.calls, 1);
    assert_int_equal(fr.r.status, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(after[i].calls, 1);
        assert_int_equal(after[i].status, FY_ECANCELED);
    }

    /* Run the loop dry: every handle closes, and no callback runs again
     * even with the server publishing and dying. */
    fy_redis *pub = new_client(f, 3, 0, NULL, &st2);
    WAIT_UNTIL(f, st2.ups == 1);
    publish(f, pub, "late", 4, 0);
    fy_redis_free(pub);
    f->cl[3] = NULL;
    redis_srv_stop(&f->e.s, SIGKILL);
    uv_close((uv_handle_t *)&f->e.tick, NULL);
    uv_run(&f->e.loop, UV_RUN_DEFAULT);
    uv_timer_init(&f->e.loop, &f->e.tick); /* for the teardown to close */
    for (int i = 0; i < N; i++)
        assert_int_equal(r[i].calls, 1);
    for (int i = 0; i < 10; i++)
        assert_int_equal(after[i].calls, 1);
    assert_int_equal(fr.r.calls, 1);
    assert_int_equal(q.calls, 1);
    assert_int_equal(m.n, 0);
    assert_int_equal(st.ups, ups);
    assert_int_equal(st.downs, downs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),
        cmocka_unit_test_setup_teardown(test_set_get_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_select, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_noscript, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pubsub_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_down_fail_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handshake_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
