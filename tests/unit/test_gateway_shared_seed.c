/* gateway/redis_sync and gateway/shared_seed, against a real redis-server:
 * the blocking connection (binary values, error replies, pipelining,
 * SELECT, AUTH right, wrong and missing, a missing socket, a server that
 * never answers: a timeout, not a hang), and fy_shared_seed_fetch (no seed;
 * a seed written into an empty dir, identical to the seeding dir, modes
 * included; a second fetch changing nothing; another deployment refused
 * naming both runner CAs; a hostile seed: a bad certificate, an oversized
 * file, and a field naming a path, which is never written). Without
 * redis-server installed the tests are skipped, saying why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "gateway/datadir.h"
#include "gateway/redis_sync.h"
#include "gateway/shared_layout.h"
#include "gateway/shared_seed.h"

#include "support/redis_server_seed.h"

#include <dirent.h>

typedef struct {
    srv s;
    char url[128];
    char tmp[64];
} fx;

static int setup(void **state)
{
    if (!redis_bin[0]) {
        print_message("redis-server not found on PATH (Debian package redis-server): skipping\n");
        skip();
    }
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->s.dir, sizeof f->s.dir, "/tmp/fy-seed-XXXXXX");
    assert_non_null(mkdtemp(f->s.dir));
    snprintf(f->s.sock, sizeof f->s.sock, "%s/r.sock", f->s.dir);
    snprintf(f->s.conf, sizeof f->s.conf, "%s/redis.conf", f->s.dir);
    snprintf(f->url, sizeof f->url, "unix://%s", f->s.sock);
    snprintf(f->tmp, sizeof f->tmp, "%s", f->s.dir);
    live_srv = &f->s;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[160];
    srv_stop(&f->s, SIGKILL);
    live_srv = NULL;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->s.dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static fy_redis_sync *connect_url(const char *url, const char *pwfile, int want)
{
    fy_redis_config cfg;
    fy_redis_sync *c = NULL;
    char err[512];
    assert_int_equal(fy_redis_config_parse(url, pwfile, &cfg, err, sizeof err), 0);
    int rc = fy_redis_sync_connect(&cfg, &c, err, sizeof err);
    fy_redis_config_wipe(&cfg);
    if (rc != want) {
        fail_msg("connect %s: %d (%s), want %d", url, rc, err, want);
    }
    return c;
}

static redisReply *cmd(fy_redis_sync *c, int argc, const char *const *argv, const size_t *lens)
{
    redisReply *r = NULL;
    char err[512];
    int rc = fy_redis_sync_cmd(c, &r, argc, argv, lens, err, sizeof err);
    if (rc) {
        fail_msg("%s: %s", argv[0], err);
    }
    return r;
}

static void test_sync_commands(void **state)
{
    fx *f = *state;
    srv_start(&f->s);
    fy_redis_sync *c = connect_url(f->url, NULL, 0);

    const char *set[3] = {"SET", "k", "a\0b"};
    size_t lens[3] = {3, 1, 3};
    freeReplyObject(cmd(c, 3, set, lens));
    const char *get[2] = {"GET", "k"};
    redisReply *r = cmd(c, 2, get, NULL);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    assert_int_equal(r->len, 3);
    assert_memory_equal(r->str, "a\0b", 3);
    freeReplyObject(r);

    /* An error reply is an error, and the connection goes on. */
    const char *bad[2] = {"INCR", "k"};
    char err[512];
    r = (redisReply *)1;
    assert_int_equal(fy_redis_sync_cmd(c, &r, 2, bad, NULL, err, sizeof err), FY_EIO);
    assert_null(r);
    assert_non_null(strstr(err, "not an integer"));

    /* Pipelining: replies come back in order. */
    for (int i = 0; i < 100; i++) {
        const char *incr[2] = {"INCR", "n"};
        assert_int_equal(fy_redis_sync_append(c, 2, incr, NULL), 0);
    }
    for (long long i = 1; i <= 100; i++) {
        assert_int_equal(fy_redis_sync_get(c, &r, err, sizeof err), 0);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        assert_int_equal(r->integer, i);
        freeReplyObject(r);
    }
    fy_redis_sync_free(c);

    /* SELECT: db 3 does not see db 0's keys. */
    char url3[160];
    snprintf(url3, sizeof url3, "%s?db=3", f->url);
    c = connect_url(url3, NULL, 0);
    r = cmd(c, 2, get, NULL);
    assert_int_equal(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    fy_redis_sync_free(c);
    fy_redis_sync_free(NULL);
}

static void test_sync_auth(void **state)
{
    fx *f = *state;
    char pw[160], bad[160];
    snprintf(pw, sizeof pw, "%s/pw", f->tmp);
    snprintf(bad, sizeof bad, "%s/bad", f->tmp);
    FILE *fp = fopen(f->s.conf, "w");
    assert_non_null(fp);
    fputs("requirepass s3cret\n", fp);
    fclose(fp);
    assert_int_equal(fy_file_write_atomic(pw, "s3cret\n", 7, 0600), 0);
    assert_int_equal(fy_file_write_atomic(bad, "nope\n", 5, 0600), 0);
    srv_start(&f->s);
    fy_redis_sync_free(connect_url(f->url, pw, 0));
    assert_null(connect_url(f->url, bad, FY_EPERM));
    assert_null(connect_url(f->url, NULL, FY_EPERM));
}

static void test_sync_unreachable(void **state)
{
    fx *f = *state;
    /* No socket at all. */
    assert_null(connect_url(f->url, NULL, FY_ENOENT));

    /* A socket that accepts connections (the backlog) but never answers:
     * the handshake's PING times out instead of hanging. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->s.sock);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 8), 0);
    fy_redis_config cfg;
    fy_redis_sync *c = NULL;
    char err[512];
    assert_int_equal(fy_redis_config_parse(f->url, NULL, &cfg, err, sizeof err), 0);
    cfg.connect_timeout_ms = 200;
    uint64_t t0 = now_ms();
    assert_int_equal(fy_redis_sync_connect(&cfg, &c, err, sizeof err), FY_ETIMEDOUT);
    assert_null(c);
    assert_true(now_ms() - t0 < DEADLINE_MS);
    assert_non_null(strstr(err, "timed out"));
    close(fd);
}

/* ---- the seed ---------------------------------------------------------- */

static const char *const seed_files[] = {
    FY_GW_RUNNER_CA_CERT, FY_GW_RUNNER_CA_KEY, FY_GW_CA_CERT,     FY_GW_CA_KEY,
    FY_GW_SERVER_CERT,    FY_GW_SERVER_KEY,    FY_GW_ADMIN_TOKEN, FY_GW_CONFIG,
};
#define NSEED (sizeof seed_files / sizeof seed_files[0])

static int run_init(const char *dir, const char *url)
{
    const char *argv[6] = {"init", "--data-dir", dir, url ? "--shared" : NULL, url, NULL};
    return fy_gw_init_main(url ? 5 : 3, (char **)argv);
}

static void read_file(const char *dir, const char *name, char **data, size_t *len)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(fy_file_read(path, 1 << 20, data, len), 0);
}

/* The seed files of A and B are identical, and so are their modes. */
static void same_files(const char *a, const char *b)
{
    for (size_t i = 0; i < NSEED; i++) {
        char *x, *y, pa[300], pb[300];
        size_t nx, ny;
        struct stat sa, sb;
        read_file(a, seed_files[i], &x, &nx);
        read_file(b, seed_files[i], &y, &ny);
        assert_int_equal(nx, ny);
        assert_memory_equal(x, y, nx);
        free(x);
        free(y);
        snprintf(pa, sizeof pa, "%s/%s", a, seed_files[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, seed_files[i]);
        assert_int_equal(stat(pa, &sa), 0);
        assert_int_equal(stat(pb, &sb), 0);
        assert_int_equal(sa.st_mode & 0777, sb.st_mode & 0777);
        assert_int_equal(sa.st_mode & 0777, fy_gw_datadir_secret(seed_files[i]) ? 0600 : 0644);
    }
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) {
        return -1;
    }
    for (struct dirent *e; (e = readdir(d));) {
        n += e->d_name[0] != '.';
    }
    closedir(d);
    return n;
}

static void test_seed_fetch(void **state)
{
    fx *f = *state;
    char a[100], b[100], other[100], err[512];
    snprintf(a, sizeof a, "%s/a", f->tmp);
    snprintf(b, sizeof b, "%s/b", f->tmp);
    snprintf(other, sizeof other, "%s/other", f->tmp);
    srv_start(&f->s);
    fy_redis_config cfg;
    assert_int_equal(fy_redis_config_parse(f->url, NULL, &cfg, err, sizeof err), 0);

    assert_int_equal(fy_shared_seed_fetch(&cfg, b, err, sizeof err), FY_ENOENT);
    assert_non_null(strstr(err, "init --shared"));
    assert_int_equal(count_files(b), -1); /* nothing created */

    assert_int_equal(run_init(a, f->url), 0);
    assert_int_equal(fy_shared_seed_fetch(&cfg, b, err, sizeof err), 0);
    same_files(a, b);
    assert_int_equal(count_files(b), (int)NSEED);

    /* Again: nothing is rewritten (same inode, same mtime). */
    char p[300];
    struct stat before, after;
    snprintf(p, sizeof p, "%s/%s", b, FY_GW_ADMIN_TOKEN);
    assert_int_equal(stat(p, &before), 0);
    assert_int_equal(fy_shared_seed_fetch(&cfg, b, err, sizeof err), 0);
    assert_int_equal(stat(p, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    assert_int_equal(before.st_mtim.tv_nsec, after.st_mtim.tv_nsec);

    /* Another deployment: refused, naming both runner CAs, untouched. */
    assert_int_equal(run_init(other, NULL), 0);
    char *ca0, *ca1;
    size_t n0, n1;
    read_file(other, FY_GW_RUNNER_CA_CERT, &ca0, &n0);
    assert_int_equal(fy_shared_seed_fetch(&cfg, other, err, sizeof err), FY_EEXIST);
    const char *s1 = strstr(err, "sha256:");
    assert_non_null(s1);
    const char *s2 = strstr(s1 + 7, "sha256:");
    assert_non_null(s2);
    assert_true(strncmp(s1, s2, 71) != 0);
    read_file(other, FY_GW_RUNNER_CA_CERT, &ca1, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(ca0, ca1, n0);
    free(ca0);
    free(ca1);
    fy_redis_config_wipe(&cfg);
}

static void test_seed_hostile(void **state)
{
    fx *f = *state;
    char a[100], d[100], err[512];
    snprintf(a, sizeof a, "%s/a", f->tmp);
    snprintf(d, sizeof d, "%s/d", f->tmp);
    srv_start(&f->s);
    assert_int_equal(run_init(a, f->url), 0);
    fy_redis_config cfg;
    assert_int_equal(fy_redis_config_parse(f->url, NULL, &cfg, err, sizeof err), 0);
    fy_redis_sync *c = connect_url(f->url, NULL, 0);

    /* A field naming a path is ignored: never written anywhere. */
    const char *evil[4] = {"HSET", FY_SH_DEPLOY, "../evil", "x"};
    freeReplyObject(cmd(c, 4, evil, NULL));
    assert_int_equal(fy_shared_seed_fetch(&cfg, d, err, sizeof err), 0);
    assert_int_equal(count_files(d), (int)NSEED);
    char evilp[200];
    snprintf(evilp, sizeof evilp, "%s/evil", f->tmp);
    assert_false(fy_file_exists(evilp));

    /* A runner CA that is no certificate, and an oversized file: refused,
     * nothing written. */
    char d2[100];
    snprintf(d2, sizeof d2, "%s/d2", f->tmp);
    const char *junk[4] = {"HSET", FY_SH_DEPLOY, FY_GW_RUNNER_CA_CERT, "not a certificate"};
    freeReplyObject(cmd(c, 4, junk, NULL));
    assert_int_equal(fy_shared_seed_fetch(&cfg, d2, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, FY_GW_RUNNER_CA_CERT));
    assert_int_equal(count_files(d2), -1);
    char *big = malloc(FY_SHARED_SEED_FILE_MAX + 1);
    assert_non_null(big);
    memset(big, 'x', FY_SHARED_SEED_FILE_MAX + 1);
    const char *huge[4] = {"HSET", FY_SH_DEPLOY, FY_GW_CONFIG, big};
    size_t lens[4] = {4, strlen(FY_SH_DEPLOY), strlen(FY_GW_CONFIG), FY_SHARED_SEED_FILE_MAX + 1};
    freeReplyObject(cmd(c, 4, huge, lens));
    free(big);
    assert_int_equal(fy_shared_seed_fetch(&cfg, d2, err, sizeof err), FY_EPROTO);
    assert_int_equal(count_files(d2), -1);
    /* A missing required file. */
    const char *del[3] = {"HDEL", FY_SH_DEPLOY, FY_GW_ADMIN_TOKEN};
    freeReplyObject(cmd(c, 3, del, NULL));
    const char *cfgset[4] = {"HSET", FY_SH_DEPLOY, FY_GW_CONFIG, "{}"};
    freeReplyObject(cmd(c, 4, cfgset, NULL));
    assert_int_equal(fy_shared_seed_fetch(&cfg, d2, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, FY_GW_ADMIN_TOKEN));
    fy_redis_sync_free(c);
    fy_redis_config_wipe(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sync_commands, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seed_hostile, setup, teardown),
    };
    signal(SIGPIPE, SIG_IGN);
    find_redis();
    atexit(srv_cleanup_atexit);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
