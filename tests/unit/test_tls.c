/* Unit tests for common/tls: the fy_stream contract of TLS streams, run over
 * in-memory pairs (fy_stream_pair_new) with a PKI made by the openssl CLI.
 * Real TCP and openssl interop are in tests/tls/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/stream.h"
#include "common/tls.h"
#include "common/x509.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static char pki[64];

static const char *path(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", pki, name);
    return buf[i];
}

static int pki_setup(void **state)
{
    (void)state;
    strcpy(pki, "/tmp/fy-tls-unit-XXXXXX");
    if (!mkdtemp(pki)) {
        return -1;
    }
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "set -e; cd %s; exec >pki.log 2>&1\n"
        "printf '[req]\\ndistinguished_name=dn\\n[dn]\\n[ca]\\nbasicConstraints=critical,"
        "CA:TRUE\\nkeyUsage=critical,keyCertSign\\n[srv]\\nextendedKeyUsage=serverAuth\\n"
        "subjectAltName=DNS:localhost\\n[cli]\\nextendedKeyUsage=clientAuth\\n' > x.cnf\n"
        "openssl req -x509 -config x.cnf -extensions ca -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -subj /CN=unit-ca -days 2\n"
        "for n in srv cli; do\n"
        "  openssl req -new -config x.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout $n.key -out $n.csr -subj /CN=unit-$n\n"
        "  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out $n.crt "
        "-days 2 -extfile x.cnf -extensions $n\n"
        "done\n"
        "cat srv.crt ca.crt > srvchain.crt\n"
        "openssl req -x509 -config x.cnf -extensions ca -newkey ec -pkeyopt "
        "ec_paramgen_curve:P-256 -nodes -keyout ca2.key -out ca2.crt -subj /CN=unit-ca -days 2\n"
        "openssl req -new -config x.cnf -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout cli2.key -out cli2.csr -subj /CN=unit-cli\n"
        "openssl x509 -req -in cli2.csr -CA ca2.crt -CAkey ca2.key -CAcreateserial -out "
        "cli2.crt -days 2 -extfile x.cnf -extensions cli\n",
        pki);
    return system(cmd) == 0 ? 0 : -1;
}

static int pki_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : -1;
}

static char *slurp(const char *file)
{
    FILE *f = fopen(file, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static const char *alpn_srv[] = {"http/1.1", NULL};
static const char *alpn_cli[] = {"h2", "http/1.1", NULL};

static fy_tls_config *server_config(int mtls, unsigned timeout_ms)
{
    fy_tls_options o = {
        .is_server = 1,
        .cert_file = path("srv.crt"),
        .key_file = path("srv.key"),
        .ca_file = mtls ? path("ca.crt") : NULL,
        .require_client_cert = mtls,
        .alpn = alpn_srv,
        .handshake_timeout_ms = timeout_ms,
    };
    fy_tls_config *cfg = NULL;
    char err[256];
    int rc = fy_tls_config_new(&o, &cfg, err, sizeof err);
    if (rc) {
        fail_msg("server config: %s", err);
    }
    return cfg;
}

static fy_tls_config *client_config(int with_cert, size_t max_wq, unsigned timeout_ms)
{
    fy_tls_options o = {
        .cert_file = with_cert ? path("cli.crt") : NULL,
        .key_file = with_cert ? path("cli.key") : NULL,
        .ca_file = path("ca.crt"),
        .server_name = "localhost",
        .alpn = alpn_cli,
        .max_write_queue = max_wq,
        .handshake_timeout_ms = timeout_ms,
    };
    fy_tls_config *cfg = NULL;
    char err[256];
    int rc = fy_tls_config_new(&o, &cfg, err, sizeof err);
    if (rc) {
        fail_msg("client config: %s", err);
    }
    return cfg;
}

/* --- fixture: a TLS client and server over an in-memory pair ------------- */

#define NOT_YET 1

typedef struct {
    uv_loop_t loop;
    uv_timer_t guard;
    fy_tls_config *scfg, *ccfg;
    fy_stream *a, *b; /* raw pair ends: a under the server, b under the client */
    fy_stream *srv, *cli;
    int srv_hs, cli_hs;
    int closed;
    /* reads */
    char *rbuf;
    size_t rlen, rcap;
    int rstatus;
    int reads;
    int close_in_read;
    int stop_at_read; /* read_stop from inside the Nth on_read */
    /* writes, in callback order */
    int wstatus[64];
    int nw;
    int close_in_write;
    int close_in_hs;
    int in_write; /* set around fy_stream_write: callbacks must not see it */
    int closed_after_writes;
} fx;

static fx X;

static void on_guard(uv_timer_t *t)
{
    (void)t;
    fail_msg("test timed out");
}

static void fx_init(fy_tls_config *scfg, fy_tls_config *ccfg)
{
    memset(&X, 0, sizeof X);
    assert_int_equal(uv_loop_init(&X.loop), 0);
    uv_timer_init(&X.loop, &X.guard);
    uv_timer_start(&X.guard, on_guard, 20000, 0);
    uv_unref((uv_handle_t *)&X.guard);
    X.scfg = scfg;
    X.ccfg = ccfg;
    X.srv_hs = X.cli_hs = NOT_YET;
    X.rstatus = NOT_YET;
    assert_int_equal(fy_stream_pair_new(&X.loop, &X.a, &X.b), 0);
}

static void on_closed(fy_stream *s)
{
    (void)s;
    X.closed++;
    X.closed_after_writes = X.nw;
}

static void fx_done(void)
{
    if (X.srv) {
        fy_stream_close(X.srv, on_closed);
    }
    if (X.cli) {
        fy_stream_close(X.cli, on_closed);
    }
    uv_close((uv_handle_t *)&X.guard, NULL);
    uv_run(&X.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&X.loop), 0);
    fy_tls_config_free(X.scfg);
    fy_tls_config_free(X.ccfg);
    free(X.rbuf);
}

/* Runs the loop until *FLAG leaves NOT_YET (or, with want >= 0, reaches it). */
static void run_until(const int *flag, int want)
{
    for (int i = 0; i < 100000; i++) {
        if (want >= 0 ? *flag >= want : *flag != NOT_YET) {
            return;
        }
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    fail_msg("condition never met");
}

static void srv_hs_cb(fy_stream *s, int status, void *arg)
{
    (void)arg;
    assert_ptr_equal(s, X.srv);
    X.srv_hs = status;
    if (X.close_in_hs) {
        fy_stream_close(s, on_closed);
        X.srv = NULL;
    }
}

static void cli_hs_cb(fy_stream *s, int status, void *arg)
{
    (void)arg;
    assert_ptr_equal(s, X.cli);
    X.cli_hs = status;
}

static void on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    X.reads++;
    if (n < 0) {
        assert_int_equal(X.rstatus, NOT_YET); /* one terminal status at most */
        X.rstatus = (int)n;
        return;
    }
    assert_true(n > 0);
    if (X.rlen + (size_t)n > X.rcap) {
        X.rcap = (X.rlen + (size_t)n) * 2;
        X.rbuf = realloc(X.rbuf, X.rcap);
        assert_non_null(X.rbuf);
    }
    memcpy(X.rbuf + X.rlen, buf->base, (size_t)n);
    X.rlen += (size_t)n;
    if (X.stop_at_read == X.reads) {
        assert_int_equal(fy_stream_read_stop(s), 0);
    }
    if (X.close_in_read) {
        fy_stream_close(s, on_closed);
        if (s == X.srv) {
            X.srv = NULL;
        } else {
            X.cli = NULL;
        }
    }
}

static void on_write(fy_stream *s, int status, void *arg)
{
    assert_false(X.in_write);
    assert_true(X.nw < 64);
    X.wstatus[X.nw++] = status;
    (void)arg;
    if (X.close_in_write && X.cli == s) {
        fy_stream_close(s, on_closed);
        X.cli = NULL;
    }
}

static int do_write(fy_stream *s, const void *p, size_t n)
{
    fy_slice sl = {(char *)p, n};
    X.in_write = 1;
    int rc = fy_stream_write(s, &sl, 1, on_write, NULL);
    X.in_write = 0;
    return rc;
}

static void fx_connect(void)
{
    X.srv = fy_tls_stream_new(X.scfg, X.a, NULL, srv_hs_cb, NULL);
    X.cli = fy_tls_stream_new(X.ccfg, X.b, NULL, cli_hs_cb, NULL);
    assert_non_null(X.srv);
    assert_non_null(X.cli);
    /* The handshake callback never runs from inside fy_tls_stream_new. */
    assert_int_equal(X.srv_hs, NOT_YET);
    assert_int_equal(X.cli_hs, NOT_YET);
    X.srv->on_read = on_read;
}

/* --- tests ------------------------------------------------------------- */

static void test_config_errors(void **state)
{
    (void)state;
    char err[512];
    fy_tls_config *cfg = NULL;

    fy_tls_options o = {
        .is_server = 1, .cert_file = "/nonexistent/srv.crt", .key_file = path("srv.key")};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_ENOENT);
    assert_non_null(strstr(err, "cert_file '/nonexistent/srv.crt'"));
    assert_null(cfg);

    o = (fy_tls_options){.is_server = 1, .cert_file = path("srv.crt")};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EINVAL);

    o = (fy_tls_options){.server_name = "x"};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "CA"));

    o = (fy_tls_options){.is_server = 1,
                         .cert_file = path("srv.crt"),
                         .key_file = path("srv.key"),
                         .require_client_cert = 1};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EINVAL);

    /* The key of another certificate. */
    o = (fy_tls_options){.is_server = 1, .cert_file = path("srv.crt"), .key_file = path("cli.key")};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EINVAL);
    assert_non_null(strstr(err, "does not match"));
    assert_non_null(strstr(err, "cli.key"));

    /* Not a certificate. */
    o = (fy_tls_options){.is_server = 1, .cert_file = path("x.cnf"), .key_file = path("srv.key")};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EPARSE);
    assert_non_null(strstr(err, "x.cnf"));

    /* Over FY_TLS_PEM_MAX_BYTES, as a file and in memory. */
    char *big = malloc(FY_TLS_PEM_MAX_BYTES + 2);
    assert_non_null(big);
    memset(big, 'A', FY_TLS_PEM_MAX_BYTES + 1);
    big[FY_TLS_PEM_MAX_BYTES + 1] = '\0';
    FILE *f = fopen(path("big.pem"), "wb");
    assert_non_null(f);
    fwrite(big, 1, FY_TLS_PEM_MAX_BYTES + 1, f);
    fclose(f);
    o = (fy_tls_options){.ca_file = path("big.pem"), .server_name = "x"};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_ETOOBIG);
    assert_non_null(strstr(err, "big.pem"));
    o = (fy_tls_options){.ca_pem = big, .server_name = "x"};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_ETOOBIG);
    assert_non_null(strstr(err, "ca_pem"));
    free(big);

    static const char *bad_alpn[] = {"", NULL};
    o = (fy_tls_options){.ca_file = path("ca.crt"), .alpn = bad_alpn};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), FY_EINVAL);

    /* PEM in memory works like files. */
    char *cert = slurp(path("srv.crt")), *key = slurp(path("srv.key"));
    o = (fy_tls_options){.is_server = 1, .cert_pem = cert, .key_pem = key};
    assert_int_equal(fy_tls_config_new(&o, &cfg, err, sizeof err), 0);
    assert_non_null(cfg);
    fy_tls_config_free(cfg);
    free(cert);
    free(key);
    fy_tls_config_free(NULL);
}

static void test_handshake_identity(void **state)
{
    (void)state;
    fx_init(server_config(1, 0), client_config(1, 0, 0));
    fx_connect();
    /* Not a TLS stream / handshake not done yet. */
    fy_tls_peer p;
    assert_int_equal(fy_tls_peer_get(X.cli, &p), FY_EINVAL);
    assert_null(fy_tls_ciphersuite(X.cli));
    assert_true(fy_tls_is_tls(X.cli));
    /* A write before the handshake is queued; its callback waits. */
    size_t q0 = fy_stream_write_queue_size(X.cli); /* the ClientHello in the pair */
    assert_int_equal(do_write(X.cli, "early", 5), 0);
    assert_int_equal(fy_stream_write_queue_size(X.cli), q0 + 5);
    assert_int_equal(fy_stream_read_start(X.srv), 0);
    run_until(&X.srv_hs, -1);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.srv_hs, 0);
    assert_int_equal(X.cli_hs, 0);
    run_until(&X.nw, 1);
    assert_int_equal(X.wstatus[0], 0);
    while (X.rlen < 5) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_memory_equal(X.rbuf, "early", 5);

    assert_int_equal(fy_tls_peer_get(X.srv, &p), 0);
    assert_true(p.present);
    assert_string_equal(p.cn, "unit-cli");
    assert_string_equal(p.subject, "CN=unit-cli");
    assert_true(strlen(p.serial) > 0);
    uint8_t zero[32] = {0};
    assert_memory_not_equal(p.fingerprint, zero, 32);
    assert_int_equal(fy_tls_peer_get(X.cli, &p), 0);
    assert_string_equal(p.cn, "unit-srv");
    assert_string_equal(fy_tls_sni(X.srv), "localhost");
    assert_string_equal(fy_tls_alpn(X.srv), "http/1.1");
    assert_string_equal(fy_tls_alpn(X.cli), "http/1.1");
    assert_non_null(strstr(fy_tls_ciphersuite(X.cli), "ECDHE"));
    assert_false(fy_tls_is_tls(X.a));
    assert_int_equal(fy_tls_peer_get(X.a, &p), FY_EINVAL);
    assert_null(fy_tls_alpn(X.a));
    char peer[64];
    fy_stream_peer_name(X.cli, peer, sizeof peer);
    assert_string_equal(peer, "memory");
    fx_done();
    assert_int_equal(X.closed, 2);
}

static void test_write_callbacks_deferred_and_ordered(void **state)
{
    (void)state;
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    fx_connect();
    fy_stream_read_start(X.srv);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.cli_hs, 0);
    /* Several writes, one empty, many slices in one: callbacks in order. */
    static char blob[300000];
    for (size_t i = 0; i < sizeof blob; i++) {
        blob[i] = (char)(i * 7 + i / 251);
    }
    assert_int_equal(do_write(X.cli, blob, 10), 0);
    assert_int_equal(do_write(X.cli, "", 0), 0);
    fy_slice sl[40];
    size_t off = 10;
    for (int i = 0; i < 40; i++) {
        size_t n = (size_t)(i % 3 == 0 ? 1 : i % 3 == 1 ? 700 : 17000);
        sl[i] = (fy_slice){blob + off, n};
        off += n;
    }
    X.in_write = 1;
    assert_int_equal(fy_stream_write(X.cli, sl, 40, on_write, NULL), 0);
    X.in_write = 0;
    assert_int_equal(do_write(X.cli, blob + off, sizeof blob - off), 0);
    assert_int_equal(X.nw, 0);
    run_until(&X.nw, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(X.wstatus[i], 0);
    }
    while (X.rlen < sizeof blob) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_int_equal(X.rlen, sizeof blob);
    assert_memory_equal(X.rbuf, blob, sizeof blob);
    fx_done();
}

static void test_close_inside_callbacks(void **state)
{
    (void)state;
    /* From inside the server's handshake callback. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    X.close_in_hs = 1;
    fx_connect();
    run_until(&X.srv_hs, -1);
    assert_null(X.srv);
    assert_int_equal(do_write(X.cli, "x", 1), 0);
    fx_done();
    assert_int_equal(X.closed, 2);

    /* From inside on_read, with more records pending in the same batch. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    X.close_in_read = 1;
    fx_connect();
    fy_stream_read_start(X.srv);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(do_write(X.cli, "0123456789", 10), 0);
    }
    while (X.reads == 0) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_null(X.srv);
    assert_int_equal(X.reads, 1);
    fx_done();
    assert_int_equal(X.closed, 2);

    /* From inside a write callback, with later writes still queued: they
     * fail with FY_ECANCELED, before the close callback. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    X.close_in_write = 1;
    fx_connect();
    for (int i = 0; i < 3; i++) {
        assert_int_equal(do_write(X.cli, "abc", 3), 0);
    }
    run_until(&X.closed, 1);
    assert_null(X.cli);
    assert_int_equal(X.nw, 3);
    assert_int_equal(X.closed_after_writes, 3);
    assert_int_equal(X.wstatus[0], 0);
    assert_int_equal(X.wstatus[1], FY_ECANCELED);
    assert_int_equal(X.wstatus[2], FY_ECANCELED);
    fx_done();
}

static void test_close_cancels_queued_writes(void **state)
{
    (void)state;
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    fx_connect();
    assert_int_equal(do_write(X.cli, "one", 3), 0);
    assert_int_equal(do_write(X.cli, "two", 3), 0);
    fy_stream_close(X.cli, on_closed);
    fy_stream_close(X.cli, on_closed); /* twice is a no-op */
    assert_int_equal(X.nw, 0);
    X.cli = NULL;
    run_until(&X.closed, 1);
    assert_int_equal(X.nw, 2);
    assert_int_equal(X.wstatus[0], FY_ECANCELED);
    assert_int_equal(X.wstatus[1], FY_ECANCELED);
    assert_int_equal(X.closed_after_writes, 2);
    fx_done();
}

static void test_write_queue_limit(void **state)
{
    (void)state;
    fx_init(server_config(0, 0), client_config(0, 4096, 0));
    fx_connect();
    static char buf[8192];
    /* The ClientHello may still sit in the pair: it counts too. */
    size_t q0 = fy_stream_write_queue_size(X.cli);
    assert_true(q0 < 1000);
    assert_int_equal(do_write(X.cli, buf, 3000), 0);
    assert_int_equal(fy_stream_write_queue_size(X.cli), q0 + 3000);
    /* Under the limit, a write of any size is taken... */
    assert_int_equal(do_write(X.cli, buf, 5000), 0);
    assert_int_equal(fy_stream_write_queue_size(X.cli), q0 + 8000);
    /* ...over it, nothing but empty writes. */
    assert_int_equal(do_write(X.cli, buf, 1), FY_EAGAIN);
    assert_int_equal(do_write(X.cli, buf, 0), 0);
    assert_int_equal(fy_stream_write_queue_size(X.cli), q0 + 8000);
    /* The server never reads: after the handshake the ciphertext stays in
     * the pair and counts against the limit. */
    run_until(&X.cli_hs, -1);
    run_until(&X.nw, 3);
    assert_int_equal(X.wstatus[0], 0);
    assert_true(fy_stream_write_queue_size(X.cli) > 8000);
    assert_int_equal(do_write(X.cli, buf, 1), FY_EAGAIN);
    /* Once the server reads, the queue drains and writes work again. */
    fy_stream_read_start(X.srv);
    while (X.rlen < 8000) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_int_equal(fy_stream_write_queue_size(X.cli), 0);
    assert_int_equal(do_write(X.cli, buf, 8192), 0);
    fx_done();
}

static uv_timer_t pause_timer;
static int pause_fired;

static void on_pause_timer(uv_timer_t *t)
{
    (void)t;
    pause_fired = 1;
}

static void test_read_pause_resume(void **state)
{
    (void)state;
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    fx_connect();
    fy_stream_read_start(X.srv);
    run_until(&X.srv_hs, -1);
    run_until(&X.cli_hs, -1);
    assert_int_equal(fy_stream_read_stop(X.srv), 0);
    static char blob[300000];
    for (size_t i = 0; i < sizeof blob; i++) {
        blob[i] = (char)(i % 253);
    }
    for (size_t off = 0; off < sizeof blob; off += 50000) {
        assert_int_equal(do_write(X.cli, blob + off, 50000), 0);
    }
    /* Nothing is delivered while paused, and the sender's queue holds it. */
    pause_fired = 0;
    uv_timer_init(&X.loop, &pause_timer);
    uv_timer_start(&pause_timer, on_pause_timer, 100, 0);
    run_until(&pause_fired, 1);
    assert_int_equal(X.reads, 0);
    assert_true(fy_stream_write_queue_size(X.cli) >= sizeof blob);
    /* read_start never delivers from inside itself. */
    assert_int_equal(fy_stream_read_start(X.srv), 0);
    assert_int_equal(X.reads, 0);
    while (X.rlen < sizeof blob) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_memory_equal(X.rbuf, blob, sizeof blob);
    /* Pause from inside on_read, in the middle of a lower read that holds
     * more records, then resume: nothing is lost or reordered. */
    X.rlen = 0;
    X.reads = 0;
    X.stop_at_read = 2;
    for (size_t off = 0; off < sizeof blob; off += 50000) {
        assert_int_equal(do_write(X.cli, blob + off, 50000), 0);
    }
    while (X.reads < 2) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    int reads = X.reads;
    pause_fired = 0;
    uv_timer_start(&pause_timer, on_pause_timer, 50, 0);
    run_until(&pause_fired, 1);
    assert_int_equal(X.reads, reads);
    fy_stream_read_start(X.srv);
    while (X.rlen < sizeof blob) {
        uv_run(&X.loop, UV_RUN_ONCE);
    }
    assert_memory_equal(X.rbuf, blob, sizeof blob);
    uv_close((uv_handle_t *)&pause_timer, NULL);
    fx_done();
}

static void test_close_notify_and_truncation(void **state)
{
    (void)state;
    /* shutdown: close_notify reaches the peer as FY_EEOF after the data. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    fx_connect();
    fy_stream_read_start(X.srv);
    assert_int_equal(do_write(X.cli, "last words", 10), 0);
    assert_int_equal(fy_stream_shutdown(X.cli), 0);
    assert_int_equal(fy_stream_shutdown(X.cli), 0);
    assert_int_equal(do_write(X.cli, "more", 4), FY_ECLOSED);
    run_until(&X.rstatus, -1);
    assert_int_equal(X.rstatus, FY_EEOF);
    assert_int_equal(X.rlen, 10);
    assert_memory_equal(X.rbuf, "last words", 10);
    /* Half-close: the server can still answer. */
    assert_int_equal(do_write(X.srv, "reply", 5), 0);
    fx_done();

    /* The transport ends without close_notify: a truncation. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    fx_connect();
    fy_stream_read_start(X.srv);
    assert_int_equal(do_write(X.cli, "partial", 7), 0);
    run_until(&X.nw, 1);
    assert_int_equal(fy_stream_shutdown(X.b), 0); /* under the TLS client */
    run_until(&X.rstatus, -1);
    assert_int_equal(X.rstatus, FY_ECONNRESET);
    assert_int_equal(X.rlen, 7);
    fx_done();
}

static void test_handshake_failures(void **state)
{
    (void)state;
    /* A peer that never answers: FY_ETIMEDOUT through the handshake callback,
     * then on_read (when reading) and queued writes see it too. */
    fx_init(NULL, client_config(0, 0, 100));
    X.cli = fy_tls_stream_new(X.ccfg, X.b, NULL, cli_hs_cb, NULL);
    X.cli->on_read = on_read;
    fy_stream_read_start(X.cli);
    assert_int_equal(do_write(X.cli, "x", 1), 0);
    uint64_t t0 = uv_now(&X.loop);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.cli_hs, FY_ETIMEDOUT);
    assert_true(uv_now(&X.loop) - t0 >= 90);
    assert_int_equal(X.rstatus, FY_ETIMEDOUT);
    assert_int_equal(X.nw, 1);
    assert_int_equal(X.wstatus[0], FY_ETIMEDOUT);
    assert_int_equal(do_write(X.cli, "x", 1), FY_ETIMEDOUT);
    fy_stream_close(X.a, NULL);
    fx_done();

    /* Plain HTTP to a TLS server: FY_ETLS. */
    fx_init(server_config(0, 0), NULL);
    X.srv = fy_tls_stream_new(X.scfg, X.a, NULL, srv_hs_cb, NULL);
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    fy_slice sl = {(char *)http, sizeof http - 1};
    assert_int_equal(fy_stream_write(X.b, &sl, 1, NULL, NULL), 0);
    run_until(&X.srv_hs, -1);
    assert_int_equal(X.srv_hs, FY_ETLS);
    fy_stream_close(X.b, NULL);
    fx_done();

    /* mTLS server, client without a certificate: FY_ECERT on the server. */
    fx_init(server_config(1, 0), client_config(0, 0, 0));
    fx_connect();
    run_until(&X.srv_hs, -1);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.srv_hs, FY_ECERT);
    assert_int_not_equal(X.cli_hs, 0);
    fx_done();

    /* The client asks for a name the certificate does not have: FY_ECERT;
     * no name at all: FY_EINVAL, reported from the loop. */
    fx_init(server_config(0, 0), client_config(0, 0, 0));
    X.srv = fy_tls_stream_new(X.scfg, X.a, NULL, srv_hs_cb, NULL);
    X.cli = fy_tls_stream_new(X.ccfg, X.b, "not-localhost", cli_hs_cb, NULL);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.cli_hs, FY_ECERT);
    fx_done();
}

static void test_client_without_name(void **state)
{
    (void)state;
    fy_tls_options o = {.ca_file = path("ca.crt")};
    fy_tls_config *ccfg = NULL;
    assert_int_equal(fy_tls_config_new(&o, &ccfg, NULL, 0), 0);
    fx_init(NULL, ccfg);
    X.cli = fy_tls_stream_new(X.ccfg, X.b, NULL, cli_hs_cb, NULL);
    assert_int_equal(X.cli_hs, NOT_YET);
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.cli_hs, FY_EINVAL);
    fy_stream_close(X.a, NULL);
    fx_done();
}

static fy_tls_config *must_config(const fy_tls_options *o)
{
    fy_tls_config *cfg = NULL;
    char err[256];
    if (fy_tls_config_new(o, &cfg, err, sizeof err)) {
        fail_msg("config: %s", err);
    }
    return cfg;
}

/* Enrollment's first contact: the client has no CA file, only the SHA-256
 * of the CA certificate, which the server sends in its chain. */
static void test_pinned_ca(void **state)
{
    (void)state;
    fy_x509_info ca;
    char err[256];
    char *pem = slurp(path("ca.crt"));
    assert_int_equal(fy_x509_info_get(pem, strlen(pem), &ca, err, sizeof err), 0);
    free(pem);
    static char chain[256], key[256];
    snprintf(chain, sizeof chain, "%s", path("srvchain.crt"));
    snprintf(key, sizeof key, "%s", path("srv.key"));
    fy_tls_options so = {.is_server = 1, .cert_file = chain, .key_file = key};
    uint8_t wrong[32];
    memcpy(wrong, ca.fingerprint, 32);
    wrong[0] ^= 1;
    const struct {
        const uint8_t *pin;
        const char *name;
        int want;
    } cases[] = {
        {ca.fingerprint, "localhost", 0},
        {wrong, "localhost", FY_ECERT},
        {ca.fingerprint, "other.example", FY_ECERT}, /* the pin does not waive the name */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_tls_options co = {.pin_ca_sha256 = cases[i].pin, .server_name = cases[i].name};
        fy_tls_config *scfg = must_config(&so);
        fx_init(scfg, must_config(&co));
        fx_connect();
        run_until(&X.cli_hs, -1);
        assert_int_equal(X.cli_hs, cases[i].want);
        fx_done();
    }
    /* A server that does not send the CA cannot satisfy a pin. */
    fy_tls_options co = {.pin_ca_sha256 = ca.fingerprint, .server_name = "localhost"};
    fx_init(server_config(0, 0), must_config(&co));
    fx_connect();
    run_until(&X.cli_hs, -1);
    assert_int_equal(X.cli_hs, FY_ECERT);
    fx_done();
    /* Pins are for clients without a CA. */
    fy_tls_options bad = {.pin_ca_sha256 = ca.fingerprint, .ca_file = path("ca.crt")};
    fy_tls_config *cfg = NULL;
    assert_int_equal(fy_tls_config_new(&bad, &cfg, err, sizeof err), FY_EINVAL);
}

/* One listener for enrolled runners (client certificate) and enrolling ones
 * (none): a certificate is optional, but one that is sent must verify. */
static void test_optional_client_cert(void **state)
{
    (void)state;
    static char cert[256], key[256], cafile[256];
    snprintf(cert, sizeof cert, "%s", path("srv.crt"));
    snprintf(key, sizeof key, "%s", path("srv.key"));
    snprintf(cafile, sizeof cafile, "%s", path("ca.crt"));
    fy_tls_options so = {.is_server = 1,
                         .cert_file = cert,
                         .key_file = key,
                         .ca_file = cafile,
                         .optional_client_cert = 1};
    static const struct {
        const char *cert, *key;
        int want, present;
    } cases[] = {
        {NULL, NULL, 0, 0},
        {"cli.crt", "cli.key", 0, 1},
        {"cli2.crt", "cli2.key", FY_ECERT, 0}, /* another CA, same subject */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* path() rotates a few static buffers: build each config at once. */
        fy_tls_config *scfg = must_config(&so);
        fy_tls_options co = {.ca_file = path("ca.crt"),
                             .server_name = "localhost",
                             .cert_file = cases[i].cert ? path(cases[i].cert) : NULL,
                             .key_file = cases[i].key ? path(cases[i].key) : NULL};
        fx_init(scfg, must_config(&co));
        fx_connect();
        run_until(&X.srv_hs, -1);
        assert_int_equal(X.srv_hs, cases[i].want);
        if (cases[i].want == 0) {
            fy_tls_peer peer;
            assert_int_equal(fy_tls_peer_get(X.srv, &peer), 0);
            assert_int_equal(peer.present, cases[i].present);
            if (peer.present) {
                assert_string_equal(peer.cn, "unit-cli");
            }
        }
        fx_done();
    }
    fy_tls_options bad = so;
    bad.require_client_cert = 1;
    fy_tls_config *cfg = NULL;
    char err[256];
    assert_int_equal(fy_tls_config_new(&bad, &cfg, err, sizeof err), FY_EINVAL);
}

int main(void)
{
    fy_log_setup(getenv("FY_TEST_DEBUG") ? FY_LOG_DEBUG : FY_LOG_OFF, FY_LOG_TEXT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_handshake_identity),
        cmocka_unit_test(test_write_callbacks_deferred_and_ordered),
        cmocka_unit_test(test_close_inside_callbacks),
        cmocka_unit_test(test_close_cancels_queued_writes),
        cmocka_unit_test(test_write_queue_limit),
        cmocka_unit_test(test_read_pause_resume),
        cmocka_unit_test(test_close_notify_and_truncation),
        cmocka_unit_test(test_handshake_failures),
        cmocka_unit_test(test_client_without_name),
        cmocka_unit_test(test_pinned_ca),
        cmocka_unit_test(test_optional_client_cert),
    };
    return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
