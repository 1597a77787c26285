/* tls_tool: drives common/tls over real TCP loopback for the tests in this
 * folder.
 *
 *   tls_tool server --cert F --key F [--ca F] [--require-client-cert]
 *                   [--alpn P]... [--max-conns N]
 *       Echo server on 127.0.0.1 (port chosen by the OS). Prints
 *       "LISTEN <port>" once listening, then per connection
 *       "ACCEPT ok cn=.. fp=.. serial=.. sni=.. alpn=.. cipher=.." or
 *       "ACCEPT fail <ERR>", and "EOF <ERR>" when the client's side ends
 *       (EOF after a close_notify, CONNRESET for a bare TCP FIN). It answers a
 *       close_notify with its own. Stops on SIGTERM/SIGINT, or after
 *       --max-conns connections ended.
 *   tls_tool client --port N --ca F [--cert F --key F] [--server-name NAME]
 *                   [--alpn P]... [--message TEXT] [--wait-eof]
 *       Connects, prints "PEER ..." or "HANDSHAKE_FAIL <ERR>" (exit 2), sends
 *       TEXT and a newline, prints the first reply line as "REPLY <line>",
 *       then sends close_notify; with --wait-eof waits for the server's end
 *       and prints "EOF <ERR>".
 *   tls_tool silent
 *       A TCP server that accepts and never says a word ("LISTEN <port>").
 *   tls_tool bulk --cert F --key F --client-cert F --client-key F --ca F
 *                 [--bytes N]
 *       Echoes N bytes (default 8 MiB) through an mTLS connection over TCP
 *       loopback inside one process and checks every byte.
 *   tls_tool backpressure (same certificate options as bulk)
 *       The receiver pauses reading; checks that the sender's write queue
 *       grows past the high watermark and stays bounded, that the sender
 *       stops, that nothing is delivered while paused, that a write over
 *       the queue limit fails with FY_EAGAIN, and that everything arrives
 *       intact after the receiver resumes.
 *
 * Exit status: 0 on success, nonzero with a message otherwise. */
#include "common/args.h"
#include "common/err.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/stream.h"
#include "common/tls.h"

#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
    const char *cert, *key, *ca, *server_name, *message, *host;
    const char *client_cert, *client_key; /* bulk, backpressure: the client's */
    fy_strlist alpn;
    int require_client_cert, wait_eof, debug;
    long long port, max_conns, handshake_timeout_ms, bytes, max_write_queue;
} tool_opts;

static tool_opts O = {.host = "127.0.0.1", .message = "hello", .bytes = 8 << 20};
static uv_loop_t *loop;
static int exit_code = 0;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tls_tool: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void out(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static fy_tls_config *make_config(int is_server)
{
    int pair_client = !is_server && O.client_cert;
    const char *alpn[FY_STRLIST_MAX + 1] = {0};
    for (size_t i = 0; i < O.alpn.n; i++) {
        alpn[i] = O.alpn.v[i];
    }
    fy_tls_options o = {
        .is_server = is_server,
        .cert_file = pair_client ? O.client_cert : O.cert,
        .key_file = pair_client ? O.client_key : O.key,
        .ca_file = O.ca,
        .require_client_cert = is_server && O.require_client_cert,
        .server_name = O.server_name,
        .alpn = O.alpn.n ? alpn : NULL,
        .handshake_timeout_ms = (unsigned)O.handshake_timeout_ms,
        .max_write_queue = (size_t)O.max_write_queue,
    };
    fy_tls_config *cfg = NULL;
    char err[512];
    int rc = fy_tls_config_new(&o, &cfg, err, sizeof err);
    if (rc) {
        die("config: %s (%s)", err, fy_err_name(rc));
    }
    return cfg;
}

static void peer_line(const char *prefix, fy_stream *s)
{
    fy_tls_peer p;
    char fp[65] = "-";
    if (fy_tls_peer_get(s, &p) != 0) {
        out("%s peer_get failed", prefix);
        return;
    }
    if (p.present) {
        for (int i = 0; i < 32; i++) {
            snprintf(fp + 2 * i, 3, "%02X", p.fingerprint[i]);
        }
    }
    const char *alpn = fy_tls_alpn(s), *sni = fy_tls_sni(s);
    out("%s cn=%s fp=%s serial=%s sni=%s alpn=%s cipher=%s subject=%s", prefix,
        p.present ? p.cn : "-", fp, p.present ? p.serial : "-", sni ? sni : "-", alpn ? alpn : "-",
        fy_tls_ciphersuite(s), p.present ? p.subject : "-");
}

static int listen_tcp(uv_tcp_t *l, uv_connection_cb cb)
{
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, l);
    if (uv_tcp_bind(l, (const struct sockaddr *)&a, 0) || uv_listen((uv_stream_t *)l, 128, cb)) {
        die("cannot listen on 127.0.0.1");
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(l, (struct sockaddr *)&bound, &len);
    return ntohs(bound.sin_port);
}

static fy_stream *accept_tcp(uv_stream_t *l)
{
    uv_tcp_t *c = malloc(sizeof *c);
    if (!c) {
        die("out of memory");
    }
    uv_tcp_init(loop, c);
    if (uv_accept(l, (uv_stream_t *)c) != 0) {
        die("accept failed");
    }
    fy_stream *s = fy_tcp_stream_wrap(c);
    if (!s) {
        die("out of memory");
    }
    return s;
}

/* --- echo server -------------------------------------------------------- */

typedef struct conn conn;
struct conn {
    conn *next, *prev;
    fy_stream *tls;
    uv_timer_t linger;
    int paused, closing;
};

static struct {
    fy_tls_config *cfg;
    uv_tcp_t listener;
    uv_signal_t sigterm, sigint;
    conn *conns;
    long long ended;
    int stopping;
} S;

static void server_stop(void);

static void conn_freed(uv_handle_t *h)
{
    conn *c = h->data;
    free(c);
    if (!S.stopping && O.max_conns > 0 && ++S.ended >= O.max_conns) {
        server_stop();
    }
}

static void conn_closed(fy_stream *s)
{
    conn *c = s->data;
    uv_close((uv_handle_t *)&c->linger, conn_freed);
}

static void conn_close(conn *c)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        S.conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    uv_timer_stop(&c->linger);
    fy_stream_close(c->tls, conn_closed);
}

static void conn_linger_done(uv_timer_t *t)
{
    conn_close(t->data);
}

static void echo_written(fy_stream *s, int status, void *arg)
{
    conn *c = s->data;
    free(arg);
    if (status == 0 && c->paused && fy_stream_write_queue_size(s) < FY_STREAM_LOW_WATERMARK) {
        c->paused = 0;
        fy_stream_read_start(s);
    }
}

static void echo_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    conn *c = s->data;
    if (n < 0) {
        out("EOF %s", fy_err_name((int)n));
        if (n == FY_EEOF) {
            /* Answer close_notify with ours, then give it time to leave. */
            fy_stream_shutdown(s);
            uv_timer_start(&c->linger, conn_linger_done, 200, 0);
        } else {
            conn_close(c);
        }
        return;
    }
    char *copy = malloc((size_t)n);
    if (!copy) {
        die("out of memory");
    }
    memcpy(copy, buf->base, (size_t)n);
    fy_slice sl = {copy, (size_t)n};
    int rc = fy_stream_write(s, &sl, 1, echo_written, copy);
    if (rc) {
        free(copy);
        out("WRITE_FAIL %s", fy_err_name(rc));
        conn_close(c);
        return;
    }
    if (fy_stream_write_queue_size(s) > FY_STREAM_HIGH_WATERMARK) {
        c->paused = 1;
        fy_stream_read_stop(s);
    }
}

static void server_handshake(fy_stream *s, int status, void *arg)
{
    conn *c = arg;
    if (status) {
        out("ACCEPT fail %s", fy_err_name(status));
        conn_close(c);
        return;
    }
    peer_line("ACCEPT ok", s);
    s->on_read = echo_read;
    fy_stream_read_start(s);
}

static void server_accept(uv_stream_t *l, int status)
{
    if (status < 0 || S.stopping) {
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        die("out of memory");
    }
    uv_timer_init(loop, &c->linger);
    c->linger.data = c;
    c->tls = fy_tls_stream_new(S.cfg, accept_tcp(l), NULL, server_handshake, c);
    if (!c->tls) {
        die("out of memory");
    }
    c->tls->data = c;
    c->next = S.conns;
    if (S.conns) {
        S.conns->prev = c;
    }
    S.conns = c;
}

static void server_stop(void)
{
    if (S.stopping) {
        return;
    }
    S.stopping = 1;
    uv_close((uv_handle_t *)&S.listener, NULL);
    uv_close((uv_handle_t *)&S.sigterm, NULL);
    uv_close((uv_handle_t *)&S.sigint, NULL);
    while (S.conns) {
        conn_close(S.conns);
    }
}

static void server_signal(uv_signal_t *h, int sig)
{
    (void)h;
    (void)sig;
    server_stop();
}

static int run_server(void)
{
    if (!O.cert || !O.key) {
        die("server needs --cert and --key");
    }
    S.cfg = make_config(1);
    int port = listen_tcp(&S.listener, server_accept);
    uv_signal_init(loop, &S.sigterm);
    uv_signal_start(&S.sigterm, server_signal, SIGTERM);
    uv_signal_init(loop, &S.sigint);
    uv_signal_start(&S.sigint, server_signal, SIGINT);
    out("LISTEN %d", port);
    uv_run(loop, UV_RUN_DEFAULT);
    fy_tls_config_free(S.cfg);
    return 0;
}

/* --- silent TCP server (handshake timeout tests) ------------------------ */

static void silent_accept(uv_stream_t *l, int status)
{
    if (status == 0) {
        /* Held open, never read or written, until the process is stopped. */
        fy_stream *s = accept_tcp(l);
        (void)s;
        out("ACCEPT silent");
    }
}

static int run_silent(void)
{
    static uv_tcp_t l;
    out("LISTEN %d", listen_tcp(&l, silent_accept));
    return uv_run(loop, UV_RUN_DEFAULT);
}

/* --- client ------------------------------------------------------------- */

static struct {
    fy_tls_config *cfg;
    fy_stream *tls;
    uv_timer_t deadline;
    char reply[4096];
    size_t rlen;
    int got_reply, done;
} C;

static void client_closed(fy_stream *s)
{
    (void)s;
    uv_close((uv_handle_t *)&C.deadline, NULL);
}

static void client_finish(int code)
{
    if (C.done) {
        return;
    }
    C.done = 1;
    if (code && !exit_code) {
        exit_code = code;
    }
    uv_timer_stop(&C.deadline);
    if (C.tls) {
        fy_stream_close(C.tls, client_closed);
    } else {
        uv_close((uv_handle_t *)&C.deadline, NULL);
    }
}

static void client_deadline(uv_timer_t *t)
{
    (void)t;
    out("DEADLINE");
    client_finish(5);
}

static void client_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    if (n < 0) {
        out("EOF %s", fy_err_name((int)n));
        client_finish(C.got_reply ? 0 : 3);
        return;
    }
    if (C.got_reply) {
        return;
    }
    size_t take = (size_t)n < sizeof C.reply - 1 - C.rlen ? (size_t)n : sizeof C.reply - 1 - C.rlen;
    memcpy(C.reply + C.rlen, buf->base, take);
    C.rlen += take;
    C.reply[C.rlen] = '\0';
    char *nl = strchr(C.reply, '\n');
    if (!nl && C.rlen < sizeof C.reply - 1) {
        return;
    }
    if (nl) {
        *nl = '\0';
    }
    C.got_reply = 1;
    out("REPLY %s", C.reply);
    int rc = fy_stream_shutdown(s);
    if (rc) {
        out("SHUTDOWN_FAIL %s", fy_err_name(rc));
        client_finish(4);
    } else if (!O.wait_eof) {
        client_finish(0);
    }
}

static void client_written(fy_stream *s, int status, void *arg)
{
    (void)s;
    (void)arg;
    if (status) {
        out("WRITE_FAIL %s", fy_err_name(status));
        client_finish(4);
    }
}

static void client_handshake(fy_stream *s, int status, void *arg)
{
    (void)arg;
    if (status) {
        out("HANDSHAKE_FAIL %s", fy_err_name(status));
        client_finish(2);
        return;
    }
    peer_line("PEER", s);
    static char msg[4096];
    snprintf(msg, sizeof msg, "%s\n", O.message);
    fy_slice sl = {msg, strlen(msg)};
    int rc = fy_stream_write(s, &sl, 1, client_written, NULL);
    if (rc) {
        out("WRITE_FAIL %s", fy_err_name(rc));
        client_finish(4);
        return;
    }
    s->on_read = client_read;
    fy_stream_read_start(s);
}

static void client_connected(fy_stream *s, int status, void *arg)
{
    (void)arg;
    if (status) {
        out("CONNECT_FAIL %s", fy_err_name(status));
        client_finish(6);
        return;
    }
    C.tls = fy_tls_stream_new(C.cfg, s, NULL, client_handshake, NULL);
    if (!C.tls) {
        die("out of memory");
    }
}

static int run_client(void)
{
    if (O.port <= 0 || !O.ca) {
        die("client needs --port and --ca");
    }
    C.cfg = make_config(0);
    uv_timer_init(loop, &C.deadline);
    uv_timer_start(&C.deadline, client_deadline, 20000, 0);
    int rc = fy_tcp_connect(loop, O.host, (int)O.port, 5000, client_connected, NULL);
    if (rc) {
        die("connect: %s", fy_err_name(rc));
    }
    uv_run(loop, UV_RUN_DEFAULT);
    fy_tls_config_free(C.cfg);
    return exit_code;
}

/* --- in-process pair over TCP loopback (bulk, backpressure) ------------- */

/* Deterministic byte stream both ends can regenerate. */
typedef struct {
    uint64_t s;
    uint64_t word;
    int left;
} gen;

static void gen_init(gen *g)
{
    g->s = 0x9E3779B97F4A7C15ull;
    g->left = 0;
}

static uint8_t gen_byte(gen *g)
{
    if (g->left == 0) {
        g->s ^= g->s << 13;
        g->s ^= g->s >> 7;
        g->s ^= g->s << 17;
        g->word = g->s;
        g->left = 8;
    }
    uint8_t b = (uint8_t)g->word;
    g->word >>= 8;
    g->left--;
    return b;
}

typedef struct {
    fy_tls_config *scfg, *ccfg;
    uv_tcp_t listener;
    fy_stream *srv, *cli;
    uv_timer_t tick;
    int mode; /* 0 bulk, 1 backpressure */
    /* sender (client) */
    gen sgen;
    uint64_t target, sent, inflight;
    int cli_ready, cli_shut, cli_eof;
    /* receiver (server); in bulk mode it echoes back */
    gen rgen;
    uint64_t received;
    int srv_eof, srv_paused, srv_bp_pause;
    /* echo checking on the client (bulk) */
    gen egen;
    uint64_t echoed;
    /* backpressure */
    uint64_t reads_while_paused, stall_sent;
    size_t max_queue;
    int stall_ticks, stalled, resumed, eagain_seen, toobig_seen;
    int closed;
    uint64_t t0;
} pair_test;

static pair_test P;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    exit(1);
}

static void pair_closed(fy_stream *s)
{
    (void)s;
    if (++P.closed == 2) {
        uv_close((uv_handle_t *)&P.tick, NULL);
        uv_close((uv_handle_t *)&P.listener, NULL);
    }
}

static void pair_maybe_done(void)
{
    if (P.cli_eof && P.srv_eof && P.closed == 0) {
        fy_stream_close(P.cli, pair_closed);
        fy_stream_close(P.srv, pair_closed);
    }
}

static void sender_pump(void);

static void sender_written(fy_stream *s, int status, void *arg)
{
    (void)s;
    free(arg);
    P.inflight--;
    if (status) {
        fail("sender write callback: %s", fy_err_name(status));
    }
    sender_pump();
}

/* Writes 64 KiB at a time as three slices (small ones are gathered into
 * records, the big one is encrypted in place) while the queue allows. */
static void sender_pump(void)
{
    while (P.cli_ready && !P.cli_shut && P.sent < P.target &&
           fy_stream_write_queue_size(P.cli) < FY_STREAM_HIGH_WATERMARK) {
        size_t n = P.target - P.sent < 65536 ? (size_t)(P.target - P.sent) : 65536;
        char *b = malloc(n);
        if (!b) {
            fail("out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            b[i] = (char)gen_byte(&P.sgen);
        }
        size_t a = n > 100 ? 100 : n, m = n - a > 7000 ? 7000 : n - a;
        fy_slice sl[3] = {{b, a}, {b + a, m}, {b + a + m, n - a - m}};
        int rc = fy_stream_write(P.cli, sl, 3, sender_written, b);
        if (rc) {
            fail("sender write: %s", fy_err_name(rc));
        }
        P.inflight++;
        P.sent += n;
        size_t q = fy_stream_write_queue_size(P.cli);
        if (q > P.max_queue) {
            P.max_queue = q;
        }
    }
    if (P.sent == P.target && !P.cli_shut && P.inflight == 0 &&
        (P.mode == 1 || P.echoed == P.target)) {
        P.cli_shut = 1;
        int rc = fy_stream_shutdown(P.cli);
        if (rc) {
            fail("sender shutdown: %s", fy_err_name(rc));
        }
    }
}

static void echo_done(fy_stream *s, int status, void *arg)
{
    free(arg);
    if (status) {
        fail("echo write callback: %s", fy_err_name(status));
    }
    if (P.srv_paused && fy_stream_write_queue_size(s) < FY_STREAM_LOW_WATERMARK) {
        P.srv_paused = 0;
        fy_stream_read_start(s);
    }
}

static void receiver_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    if (n < 0) {
        if (n != FY_EEOF) {
            fail("receiver got %s instead of EOF", fy_err_name((int)n));
        }
        if (P.received != P.target) {
            fail("receiver got %llu of %llu bytes", (unsigned long long)P.received,
                 (unsigned long long)P.target);
        }
        P.srv_eof = 1;
        int rc = fy_stream_shutdown(s);
        if (rc) {
            fail("receiver shutdown: %s", fy_err_name(rc));
        }
        pair_maybe_done();
        return;
    }
    if (P.srv_bp_pause) {
        P.reads_while_paused++;
    }
    for (ssize_t i = 0; i < n; i++) {
        if ((uint8_t)buf->base[i] != gen_byte(&P.rgen)) {
            fail("receiver: byte %llu differs", (unsigned long long)(P.received + (uint64_t)i));
        }
    }
    P.received += (uint64_t)n;
    if (P.mode == 0) {
        char *copy = malloc((size_t)n);
        if (!copy) {
            fail("out of memory");
        }
        memcpy(copy, buf->base, (size_t)n);
        fy_slice sl = {copy, (size_t)n};
        int rc = fy_stream_write(s, &sl, 1, echo_done, copy);
        if (rc) {
            fail("echo write: %s", fy_err_name(rc));
        }
        if (fy_stream_write_queue_size(s) > FY_STREAM_HIGH_WATERMARK) {
            P.srv_paused = 1;
            fy_stream_read_stop(s);
        }
    } else if (!P.resumed && !P.srv_bp_pause && P.received >= 256 * 1024) {
        /* The receiver stops reading; the sender must notice. */
        P.srv_bp_pause = 1;
        fy_stream_read_stop(s);
    }
}

static void sender_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    (void)s;
    if (n < 0) {
        if (n != FY_EEOF) {
            fail("sender got %s instead of EOF", fy_err_name((int)n));
        }
        P.cli_eof = 1;
        pair_maybe_done();
        return;
    }
    if (P.mode == 1) {
        fail("sender got unexpected data");
    }
    for (ssize_t i = 0; i < n; i++) {
        if ((uint8_t)buf->base[i] != gen_byte(&P.egen)) {
            fail("echo: byte %llu differs", (unsigned long long)(P.echoed + (uint64_t)i));
        }
    }
    P.echoed += (uint64_t)n;
    sender_pump();
}

static void pair_tick(uv_timer_t *t)
{
    (void)t;
    if (P.mode != 1 || P.resumed || !P.srv_bp_pause) {
        return;
    }
    size_t q = fy_stream_write_queue_size(P.cli);
    if (q > P.max_queue) {
        P.max_queue = q;
    }
    if (P.sent != P.stall_sent) {
        P.stall_sent = P.sent;
        P.stall_ticks = 0;
        if (P.sent > (256ull << 20)) {
            fail("sender wrote %llu bytes into a paused receiver: no backpressure",
                 (unsigned long long)P.sent);
        }
        return;
    }
    if (++P.stall_ticks < 6) {
        return;
    }
    /* The sender has made no progress for 300 ms: it must be because its
     * queue went past the high watermark (it may have shrunk a little since,
     * as the kernel took part of a write without completing it), not because
     * it ran out of data. */
    if (P.max_queue < FY_STREAM_HIGH_WATERMARK || q == 0) {
        fail("sender stalled with %zu bytes queued (at most %zu)", q, P.max_queue);
    }
    if (P.max_queue > FY_STREAM_HIGH_WATERMARK + 128 * 1024) {
        fail("write queue reached %zu: the sender ignored the watermark", P.max_queue);
    }
    if (P.reads_while_paused) {
        fail("%llu reads delivered while paused", (unsigned long long)P.reads_while_paused);
    }
    /* The queue limit: a producer that ignores the watermark can still add
     * one write of any size while the queue is under the limit, and gets
     * FY_EAGAIN once it is over. */
    size_t n = FY_TLS_MAX_WRITE_QUEUE;
    char *b = malloc(n);
    if (!b) {
        fail("out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        b[i] = (char)gen_byte(&P.sgen);
    }
    fy_slice sl = {b, n};
    int rc = fy_stream_write(P.cli, &sl, 1, sender_written, b);
    if (rc) {
        fail("a write under the queue limit returned %s", fy_err_name(rc));
    }
    P.inflight++;
    P.sent += n;
    size_t q2 = fy_stream_write_queue_size(P.cli);
    if (q2 < FY_TLS_MAX_WRITE_QUEUE) {
        fail("queue is %zu after a %zu byte write into a paused receiver", q2, n);
    }
    static char one[1];
    sl = (fy_slice){one, 1};
    rc = fy_stream_write(P.cli, &sl, 1, NULL, NULL);
    if (rc != FY_EAGAIN) {
        fail("a write over the queue limit returned %s, not AGAIN", fy_err_name(rc));
    }
    out("STALLED sent=%llu received=%llu queue=%zu then=%zu", (unsigned long long)P.sent,
        (unsigned long long)P.received, q, q2);
    P.resumed = 1;
    P.srv_bp_pause = 0;
    P.target = P.sent + (1 << 20);
    fy_stream_read_start(P.srv);
}

static void pair_srv_handshake(fy_stream *s, int status, void *arg)
{
    (void)arg;
    if (status) {
        fail("server handshake: %s", fy_err_name(status));
    }
    fy_tls_peer p;
    if (fy_tls_peer_get(s, &p) || !p.present || !p.cn[0]) {
        fail("server does not see the client certificate");
    }
    s->on_read = receiver_read;
    fy_stream_read_start(s);
}

static void pair_cli_handshake(fy_stream *s, int status, void *arg)
{
    (void)arg;
    if (status) {
        fail("client handshake: %s", fy_err_name(status));
    }
    P.cli_ready = 1;
    s->on_read = sender_read;
    fy_stream_read_start(s);
    P.t0 = uv_hrtime();
    sender_pump();
}

static void pair_accept(uv_stream_t *l, int status)
{
    if (status || P.srv) {
        fail("unexpected connection");
    }
    P.srv = fy_tls_stream_new(P.scfg, accept_tcp(l), NULL, pair_srv_handshake, NULL);
}

static void pair_connected(fy_stream *s, int status, void *arg)
{
    (void)arg;
    if (status) {
        fail("connect: %s", fy_err_name(status));
    }
    P.cli = fy_tls_stream_new(P.ccfg, s, "localhost", pair_cli_handshake, NULL);
}

static int run_pair(int mode)
{
    if (!O.cert || !O.key || !O.ca || !O.client_cert || !O.client_key) {
        die("needs --cert, --key, --client-cert, --client-key and --ca");
    }
    P.mode = mode;
    O.require_client_cert = 1;
    P.scfg = make_config(1);
    P.ccfg = make_config(0);
    gen_init(&P.sgen);
    gen_init(&P.rgen);
    gen_init(&P.egen);
    /* Backpressure: the target grows once the stall was observed. */
    P.target = mode == 0 ? (uint64_t)O.bytes : UINT64_MAX;
    int port = listen_tcp(&P.listener, pair_accept);
    uv_timer_init(loop, &P.tick);
    uv_timer_start(&P.tick, pair_tick, 50, 50);
    if (fy_tcp_connect(loop, "127.0.0.1", port, 5000, pair_connected, NULL)) {
        die("connect failed");
    }
    uv_run(loop, UV_RUN_DEFAULT);
    if (!P.cli_eof || !P.srv_eof) {
        fail("loop ended before both ends saw close_notify");
    }
    double secs = (double)(uv_hrtime() - P.t0) / 1e9;
    if (mode == 0) {
        out("BULK ok bytes=%llu echoed=%llu max_queue=%zu secs=%.3f MiB/s=%.1f",
            (unsigned long long)P.received, (unsigned long long)P.echoed, P.max_queue, secs,
            (double)P.received * 2 / (1 << 20) / secs);
    } else {
        out("BACKPRESSURE ok bytes=%llu max_queue=%zu", (unsigned long long)P.received,
            P.max_queue);
    }
    fy_tls_config_free(P.scfg);
    fy_tls_config_free(P.ccfg);
    return 0;
}

int main(int argc, char **argv)
{
    const fy_opt opts[] = {
        {"cert", FY_OPT_STR, &O.cert, "FILE", "own certificate chain (PEM)"},
        {"key", FY_OPT_STR, &O.key, "FILE", "own private key (PEM)"},
        {"ca", FY_OPT_STR, &O.ca, "FILE", "trusted CA (PEM)"},
        {"client-cert", FY_OPT_STR, &O.client_cert, "FILE", "bulk/backpressure: client cert"},
        {"client-key", FY_OPT_STR, &O.client_key, "FILE", "bulk/backpressure: client key"},
        {"require-client-cert", FY_OPT_FLAG, &O.require_client_cert, NULL, "server: mTLS"},
        {"alpn", FY_OPT_STRLIST, &O.alpn, "PROTO", "ALPN protocol (repeatable)"},
        {"server-name", FY_OPT_STR, &O.server_name, "NAME", "client: SNI and name to verify"},
        {"host", FY_OPT_STR, &O.host, "HOST", "client: address to connect to"},
        {"port", FY_OPT_INT, &O.port, "PORT", "client: port to connect to"},
        {"message", FY_OPT_STR, &O.message, "TEXT", "client: line to send"},
        {"wait-eof", FY_OPT_FLAG, &O.wait_eof, NULL, "client: wait for the server's end"},
        {"handshake-timeout-ms", FY_OPT_INT, &O.handshake_timeout_ms, "MS", "handshake timeout"},
        {"max-write-queue", FY_OPT_INT, &O.max_write_queue, "BYTES", "write queue limit"},
        {"max-conns", FY_OPT_INT, &O.max_conns, "N", "server: exit after N connections"},
        {"bytes", FY_OPT_INT, &O.bytes, "N", "bulk: bytes to echo"},
        {"debug", FY_OPT_FLAG, &O.debug, NULL, "debug logging"},
        {0},
    };
    char *pos[64];
    int npos = 0;
    char err[256];
    if (argc > 64 || fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "tls_tool: %s\nmodes: server client silent bulk backpressure\n",
                argc > 64 ? "too many arguments" : err);
        fy_args_usage(stderr, opts);
        return 1;
    }
    if (npos != 1) {
        die("one mode expected: server, client, silent, bulk or backpressure");
    }
    fy_log_setup(O.debug ? FY_LOG_DEBUG : FY_LOG_WARN, FY_LOG_TEXT);
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    int rc;
    if (strcmp(pos[0], "server") == 0) {
        rc = run_server();
    } else if (strcmp(pos[0], "client") == 0) {
        rc = run_client();
    } else if (strcmp(pos[0], "silent") == 0) {
        rc = run_silent();
    } else if (strcmp(pos[0], "bulk") == 0) {
        rc = run_pair(0);
    } else if (strcmp(pos[0], "backpressure") == 0) {
        rc = run_pair(1);
    } else {
        die("unknown mode '%s'", pos[0]);
    }
    uv_loop_close(loop);
    return rc;
}
