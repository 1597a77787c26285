/* http_test_server: the HTTP server API driven by real clients in tests and
 * benchmarks. Prints its bound port on stdout, then serves until SIGTERM.
 *
 * Routes:
 *   /fixed                 a small fixed response (the benchmark route)
 *   /echo                  method, target, headers and the body's byte count
 *                          and SHA-256 as JSON (body streamed to the handler)
 *   /echo-buffered         the same, with the body buffered by the server
 *   /sse?n=N&delay_ms=D    N server-sent events D ms apart, each carrying the
 *                          wall-clock time (us) at which it was written
 *   /slow?ms=M             answers after M ms
 *   /big?bytes=N           N bytes streamed with chunked encoding, paced by
 *                          the drain callback (backpressure)
 *   /hold                  never answers; counts the abort when the client goes
 *   /gate?name=G           answers 200 "released" once /release?name=G has come
 *                          (at once when it came before): a request the test
 *                          holds open exactly as long as it needs, not for a
 *                          fixed time that a loaded machine may outlast
 *   /release?name=G        opens gate G for good; answers {"released":N}, the
 *                          number of requests it let go
 *   /status?code=N         an empty response with that status
 *   /tls-peer              the client certificate's CN (mTLS)
 *   /stats                 the server's counters as JSON ("holding" and
 *                          "gated": /hold and /gate requests open now)
 */
#include "common/args.h"
#include "common/err.h"
#include "common/http.h"
#include "common/log.h"
#include "common/tls.h"

#include <mbedtls/sha256.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

static fy_http_server *g_srv;
static uv_loop_t *g_loop;
static uint64_t g_holds_aborted;
static uint64_t g_holding; /* /hold requests open now */
static uint64_t g_sse_aborted;
static uint64_t g_gated;

static const char FIXED_BODY[] = "Hello from ferry\n";

/* The value of KEY in the request's query ("a=1&b=2"), up to the next '&'
 * or the end, or NULL when absent. */
static const char *query_find(const fy_http_req *req, const char *key)
{
    const char *q = fy_http_req_query(req);
    size_t kl = strlen(key);
    while (q && *q) {
        if (strncmp(q, key, kl) == 0 && q[kl] == '=') {
            return q + kl + 1;
        }
        q = strchr(q, '&');
        if (q) {
            q++;
        }
    }
    return NULL;
}

static long long query_int(const fy_http_req *req, const char *key, long long def)
{
    const char *v = query_find(req, key);
    return v ? atoll(v) : def;
}

static uint64_t wall_us(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* --- echo ------------------------------------------------------------------ */

typedef struct {
    mbedtls_sha256_context sha;
    uint64_t bytes;
} echo_ctx;

static void echo_finish(fy_http_req *req, echo_ctx *e, int status)
{
    if (status) {
        mbedtls_sha256_free(&e->sha);
        free(e);
        fy_http_respond_error(req, 400, "body_error", fy_strerror(status));
        return;
    }
    unsigned char digest[32];
    char hex[65];
    mbedtls_sha256_finish_ret(&e->sha, digest);
    mbedtls_sha256_free(&e->sha);
    for (int i = 0; i < 32; i++) {
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    }
    json_t *hdrs = json_array();
    size_t n;
    const fy_http_header *h = fy_http_req_headers(req, &n);
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(hdrs, json_pack("[s,s]", h[i].name, h[i].value));
    }
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:o,s:I,s:s,s:s}", "method",
                          fy_http_req_method(req), "target", fy_http_req_target(req), "path",
                          fy_http_req_path(req), "query", fy_http_req_query(req), "version",
                          fy_http_req_version(req), "headers", hdrs, "body_bytes",
                          (json_int_t)e->bytes, "body_sha256", hex, "peer", fy_http_req_peer(req));
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    free(e);
    fy_http_header ct[] = {{"Content-Type", "application/json", 0, 0}};
    fy_http_respond(req, 200, ct, 1, text, strlen(text));
    free(text);
}

static void echo_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    echo_ctx *e = arg;
    (void)req;
    mbedtls_sha256_update_ret(&e->sha, (const unsigned char *)data, len);
    e->bytes += len;
}

static void echo_end(fy_http_req *req, int status, void *arg)
{
    echo_finish(req, arg, status);
}

static void echo_buffered_end(fy_http_req *req, int status, void *arg)
{
    echo_ctx *e = arg;
    if (!status) {
        fy_slice b = fy_http_req_body(req);
        mbedtls_sha256_update_ret(&e->sha, (const unsigned char *)b.base, b.len);
        e->bytes = b.len;
    }
    echo_finish(req, e, status);
}

static void route_echo(fy_http_req *req, int buffered)
{
    echo_ctx *e = calloc(1, sizeof *e);
    mbedtls_sha256_init(&e->sha);
    mbedtls_sha256_starts_ret(&e->sha, 0);
    int rc = buffered ? fy_http_req_buffer_body(req, echo_buffered_end, e)
                      : fy_http_req_read_body(req, echo_data, echo_end, e);
    if (rc) {
        mbedtls_sha256_free(&e->sha);
        free(e);
        fy_http_respond_error(req, 500, "internal", fy_strerror(rc));
    }
}

/* --- timed routes (sse, slow) ---------------------------------------------- */

typedef struct {
    fy_http_req *req;
    uv_timer_t timer;
    long long left, delay, i;
    int aborted;
} timed_ctx;

static void timed_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timed_done(timed_ctx *t)
{
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, timed_closed);
}

static void timed_abort(fy_http_req *req, int status, void *arg)
{
    timed_ctx *t = arg;
    (void)status;
    g_sse_aborted++;
    t->aborted = 1;
    fy_http_res_end(req); /* only releases the request now */
    timed_done(t);
}

static void sse_tick(uv_timer_t *h)
{
    timed_ctx *t = h->data;
    char ev[128];
    int n = snprintf(ev, sizeof ev, "data: {\"i\":%lld,\"t_us\":%llu}\n\n", t->i++,
                     (unsigned long long)wall_us());
    fy_http_res_write(t->req, ev, (size_t)n);
    if (--t->left > 0) {
        return;
    }
    fy_http_res_write(t->req, "data: [DONE]\n\n", 14);
    fy_http_res_end(t->req);
    timed_done(t);
}

static void route_sse(fy_http_req *req)
{
    timed_ctx *t = calloc(1, sizeof *t);
    t->req = req;
    t->left = query_int(req, "n", 5);
    t->delay = query_int(req, "delay_ms", 100);
    if (t->left < 1) {
        t->left = 1;
    }
    fy_http_header h[] = {{"Content-Type", "text/event-stream", 0, 0},
                          {"Cache-Control", "no-cache", 0, 0},
                          {"X-Accel-Buffering", "no", 0, 0}};
    fy_http_res_start(req, 200, h, 3, -1);
    fy_http_req_on_abort(req, timed_abort, t);
    uv_timer_init(g_loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, sse_tick, 0, (uint64_t)t->delay);
}

static void slow_tick(uv_timer_t *h)
{
    timed_ctx *t = h->data;
    fy_http_respond(t->req, 200, NULL, 0, "slow\n", 5);
    timed_done(t);
}

static void route_slow(fy_http_req *req)
{
    timed_ctx *t = calloc(1, sizeof *t);
    t->req = req;
    fy_http_req_on_abort(req, timed_abort, t);
    uv_timer_init(g_loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, slow_tick, (uint64_t)query_int(req, "ms", 200), 0);
}

/* --- hold ------------------------------------------------------------------- */

static void hold_abort(fy_http_req *req, int status, void *arg)
{
    (void)status;
    (void)arg;
    g_holds_aborted++;
    g_holding--;
    fy_http_res_end(req);
}

/* --- gates -------------------------------------------------------------------- */

#define GATE_NAME_MAX  64
#define GATES_OPEN_MAX 1024

typedef struct gate_wait {
    fy_http_req *req;
    char name[GATE_NAME_MAX];
    struct gate_wait *next;
} gate_wait;

static gate_wait *g_waiting;
static char g_open[GATES_OPEN_MAX][GATE_NAME_MAX];
static size_t g_nopen;

/* The value of KEY in the query, truncated to OUTLEN - 1 bytes ("" absent). */
static void query_str(const fy_http_req *req, const char *key, char *out, size_t outlen)
{
    const char *v = query_find(req, key);
    snprintf(out, outlen, "%.*s", v ? (int)strcspn(v, "&") : 0, v ? v : "");
}

static int gate_is_open(const char *name)
{
    for (size_t i = 0; i < g_nopen; i++) {
        if (strcmp(g_open[i], name) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Unlinks W from the waiting list. */
static void gate_unlink(gate_wait *w)
{
    for (gate_wait **p = &g_waiting; *p; p = &(*p)->next) {
        if (*p == w) {
            *p = w->next;
            g_gated--;
            return;
        }
    }
}

static void gate_abort(fy_http_req *req, int status, void *arg)
{
    (void)status;
    gate_unlink(arg);
    free(arg);
    fy_http_res_end(req); /* only releases the request now */
}

static const char RELEASED_BODY[] = "released\n";

static void route_gate(fy_http_req *req)
{
    char name[GATE_NAME_MAX];
    query_str(req, "name", name, sizeof name);
    if (gate_is_open(name)) {
        fy_http_respond(req, 200, NULL, 0, RELEASED_BODY, sizeof RELEASED_BODY - 1);
        return;
    }
    gate_wait *w = calloc(1, sizeof *w);
    if (!w) {
        fy_http_respond_error(req, 500, "internal", "out of memory");
        return;
    }
    w->req = req;
    memcpy(w->name, name, sizeof name);
    w->next = g_waiting;
    g_waiting = w;
    g_gated++;
    fy_http_req_on_abort(req, gate_abort, w);
}

static void route_release(fy_http_req *req)
{
    char name[GATE_NAME_MAX], body[64];
    query_str(req, "name", name, sizeof name);
    if (!gate_is_open(name)) {
        if (g_nopen == GATES_OPEN_MAX) {
            fy_http_respond_error(req, 507, "too_many_gates", "too many open gates");
            return;
        }
        memcpy(g_open[g_nopen++], name, sizeof name);
    }
    long long n = 0;
    for (gate_wait **p = &g_waiting; *p;) {
        gate_wait *w = *p;
        if (strcmp(w->name, name) != 0) {
            p = &w->next;
            continue;
        }
        *p = w->next;
        g_gated--;
        fy_http_respond(w->req, 200, NULL, 0, RELEASED_BODY, sizeof RELEASED_BODY - 1);
        free(w);
        n++;
    }
    int len = snprintf(body, sizeof body, "{\"released\":%lld}\n", n);
    fy_http_header ct[] = {{"Content-Type", "application/json", 0, 0}};
    fy_http_respond(req, 200, ct, 1, body, (size_t)len);
}

/* --- big (backpressure) ----------------------------------------------------- */

typedef struct {
    long long left;
    char block[16384];
} big_ctx;

static void big_abort(fy_http_req *req, int status, void *arg)
{
    (void)status;
    free(arg);
    fy_http_res_end(req);
}

static void big_pump(fy_http_req *req, void *arg)
{
    big_ctx *b = arg;
    while (b->left > 0) {
        size_t n = b->left < (long long)sizeof b->block ? (size_t)b->left : sizeof b->block;
        int rc = fy_http_res_write(req, b->block, n);
        if (rc < 0) {
            return; /* the abort callback cleans up */
        }
        b->left -= (long long)n;
        if (rc == 1) {
            fy_http_res_on_drain(req, big_pump, b);
            return;
        }
    }
    free(b);
    fy_http_res_end(req);
}

static void route_big(fy_http_req *req)
{
    big_ctx *b = malloc(sizeof *b);
    b->left = query_int(req, "bytes", 1 << 20);
    for (size_t i = 0; i < sizeof b->block; i++) {
        b->block[i] = (char)('a' + i % 26);
    }
    fy_http_res_start(req, 200, NULL, 0, -1);
    fy_http_req_on_abort(req, big_abort, b);
    big_pump(req, b);
}

/* --- dispatch ----------------------------------------------------------------- */

static void route_stats(fy_http_req *req)
{
    fy_http_server_stats st;
    fy_http_server_stats_get(g_srv, &st);
    char body[512];
    int n = snprintf(body, sizeof body,
                     "{\"accepted\":%llu,\"rejected\":%llu,\"active\":%llu,\"requests\":%llu,"
                     "\"errors\":%llu,\"aborted\":%llu,\"holds_aborted\":%llu,"
                     "\"sse_aborted\":%llu,\"holding\":%llu,\"gated\":%llu}\n",
                     (unsigned long long)st.accepted, (unsigned long long)st.rejected,
                     (unsigned long long)st.active, (unsigned long long)st.requests,
                     (unsigned long long)st.errors, (unsigned long long)st.aborted,
                     (unsigned long long)g_holds_aborted, (unsigned long long)g_sse_aborted,
                     (unsigned long long)g_holding, (unsigned long long)g_gated);
    fy_http_header ct[] = {{"Content-Type", "application/json", 0, 0}};
    fy_http_respond(req, 200, ct, 1, body, (size_t)n);
}

static void route_tls_peer(fy_http_req *req)
{
    fy_tls_peer peer;
    char body[300];
    if (fy_tls_peer_get(fy_http_req_stream(req), &peer) != 0) {
        fy_http_respond_error(req, 400, "not_tls", "not a TLS connection");
        return;
    }
    int n = snprintf(body, sizeof body, "%s\n", peer.present ? peer.cn : "-");
    fy_http_respond(req, 200, NULL, 0, body, (size_t)n);
}

static void on_request(fy_http_req *req, void *data)
{
    (void)data;
    const char *path = fy_http_req_path(req);
    static const fy_http_header fixed_hdrs[] = {{"Content-Type", "text/plain", 12, 10}};
    if (strcmp(path, "/fixed") == 0) {
        fy_http_respond(req, 200, fixed_hdrs, 1, FIXED_BODY, sizeof FIXED_BODY - 1);
    } else if (strcmp(path, "/echo") == 0) {
        route_echo(req, 0);
    } else if (strcmp(path, "/echo-buffered") == 0) {
        route_echo(req, 1);
    } else if (strcmp(path, "/sse") == 0) {
        route_sse(req);
    } else if (strcmp(path, "/slow") == 0) {
        route_slow(req);
    } else if (strcmp(path, "/big") == 0) {
        route_big(req);
    } else if (strcmp(path, "/hold") == 0) {
        g_holding++;
        fy_http_req_on_abort(req, hold_abort, NULL);
    } else if (strcmp(path, "/gate") == 0) {
        route_gate(req);
    } else if (strcmp(path, "/release") == 0) {
        route_release(req);
    } else if (strcmp(path, "/status") == 0) {
        fy_http_respond(req, (int)query_int(req, "code", 200), NULL, 0, NULL, 0);
    } else if (strcmp(path, "/stats") == 0) {
        route_stats(req);
    } else if (strcmp(path, "/tls-peer") == 0) {
        route_tls_peer(req);
    } else {
        fy_http_respond_error(req, 404, "not_found", "no such route");
    }
}

static uv_signal_t g_sigterm, g_sigint;

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    fy_http_server_close(g_srv, NULL, NULL);
    g_srv = NULL;
    uv_close((uv_handle_t *)&g_sigterm, NULL);
    uv_close((uv_handle_t *)&g_sigint, NULL);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *cert = NULL, *key = NULL, *ca = NULL;
    uint64_t max_body = 0, header_to = 0, idle_to = 0, body_to = 0;
    long long max_conns = 0;
    int buffer_body = 0, require_client_cert = 0, help = 0;
    const fy_opt opts[] = {
        {"listen", FY_OPT_STR, &listen, "ADDR:PORT", "where to listen (default 127.0.0.1:0)"},
        {"max-body", FY_OPT_SIZE, &max_body, "BYTES", "request body cap"},
        {"header-timeout", FY_OPT_DURATION, &header_to, "TIME", "header timeout"},
        {"idle-timeout", FY_OPT_DURATION, &idle_to, "TIME", "keep-alive idle timeout"},
        {"body-timeout", FY_OPT_DURATION, &body_to, "TIME", "body read timeout"},
        {"max-conns", FY_OPT_INT, &max_conns, "N", "connection cap"},
        {"buffer-body", FY_OPT_FLAG, &buffer_body, NULL, "buffer bodies before the handler"},
        {"tls-cert", FY_OPT_STR, &cert, "FILE", "serve HTTPS with this certificate chain"},
        {"tls-key", FY_OPT_STR, &key, "FILE", "private key for --tls-cert"},
        {"tls-ca", FY_OPT_STR, &ca, "FILE", "require client certificates from this CA"},
        {"require-client-cert", FY_OPT_FLAG, &require_client_cert, NULL, "mTLS"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[256];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err)) {
        fprintf(stderr, "http_test_server: %s\n", err);
        return 2;
    }
    if (help) {
        fy_args_usage(stdout, opts);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    fy_log_setup(FY_LOG_WARN, FY_LOG_TEXT);
    g_loop = uv_default_loop();
    fy_tls_config *tls = NULL;
    if (cert) {
        fy_tls_options to = {.is_server = 1,
                             .cert_file = cert,
                             .key_file = key,
                             .ca_file = ca,
                             .require_client_cert = require_client_cert};
        if (fy_tls_config_new(&to, &tls, err, sizeof err)) {
            fprintf(stderr, "http_test_server: %s\n", err);
            return 1;
        }
    }
    fy_http_server_options so = {
        .listen = listen,
        .tls = tls,
        .on_request = on_request,
        .buffer_body = buffer_body,
        .max_body = max_body,
        .header_timeout_ms = (unsigned)header_to,
        .idle_timeout_ms = (unsigned)idle_to,
        .body_timeout_ms = (unsigned)body_to,
        .max_connections = (unsigned)max_conns,
    };
    int rc = fy_http_server_new(g_loop, &so, &g_srv);
    if (rc) {
        fprintf(stderr, "http_test_server: listen on %s: %s\n", listen, fy_strerror(rc));
        fy_tls_config_free(tls);
        return 1;
    }
    printf("%d\n", fy_http_server_port(g_srv));
    fflush(stdout);
    uv_signal_init(g_loop, &g_sigterm);
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_init(g_loop, &g_sigint);
    uv_signal_start(&g_sigint, on_signal, SIGINT);
    uv_run(g_loop, UV_RUN_DEFAULT);
    uv_loop_close(g_loop);
    fy_tls_config_free(tls);
    return 0;
}
