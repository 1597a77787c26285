/* gw_test_runner: a small runner for the gateway's integration tests, on
 * fyp_session, common/tls and common/http_client. It is a real peer (it
 * enrolls, speaks the tunnel protocol, forwards to an upstream HTTP server
 * with both bodies streamed under flow control) and it can also misbehave on
 * purpose where the real runner never would.
 *
 *   gw_test_runner enroll --gateway HOST:PORT --token T --ca FILE --dir DIR
 *       Makes a key pair and CSR here, POSTs /v1/enroll, writes DIR/runner.key,
 *       DIR/runner.crt, DIR/ca.crt. Prints the answer; exit 0 on 200, else 1.
 *
 *   gw_test_runner run --gateway HOST:PORT --dir DIR --upstream http://H:P
 *       [--connections N] [--hello-name NAME] [--no-cert] [--cert F --key F]
 *       [--reconnect-ms MS] [--heartbeat TIME] [--model NAME]... [--max-streams N]
 *       Keeps N tunnel connections (reconnecting after MS, 0: never) and
 *       prints one line per event on stdout: "connected N", "goaway CODE",
 *       "closed REASON", "refused ERROR". --hello-name claims another name in
 *       HELLO; --no-cert dials without a client certificate. SIGTERM sends
 *       GOAWAY, lets streams finish, exits 0. --model (repeatable) announces
 *       NAME in HELLO; --max-streams sets the MAX_CONCURRENT_STREAMS it
 *       announces (default 20000).
 *       A request with "x-test-usage: PROMPT,COMPLETION" ends its response
 *       with a TRAILERS frame carrying that usage (as an engine would), so
 *       the gateway's token limits can be tested; the header is not sent on
 *       to the upstream. "x-test-usage: P,C,MS" sends the trailer MS
 *       milliseconds after the last body byte.
 */
#include "common/args.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/http_client.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/x509.h"
#include "proto/session.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct tconn tconn;
typedef struct tstream tstream;

struct tstream {
    tstream *next, *prev;
    tconn *c;
    uint32_t id;
    fy_http_call *call;
    char *pend; /* response bytes the window did not take */
    size_t pend_len, pend_off;
    uint64_t unconsumed; /* request bytes written to the upstream, not yet credited */
    int responded, done, end_pending, drain_wait;
    int has_usage; /* end with a usage trailer (x-test-usage) */
    uint32_t prompt_tokens, completion_tokens;
    unsigned usage_delay_ms; /* the trailer waits this long after the body */
    uv_timer_t *delay;       /* pending delayed trailer */
};

struct tconn {
    int slot;
    fy_stream *s;
    fyp_session *sess;
    uv_timer_t timer;
    tstream streams; /* sentinel */
    int closing, timer_on;
};

static uv_loop_t *loop;
static const char *gw_host;
static int gw_port;
static const char *upstream, *hello_name, *runner_name;
static fy_tls_config *tls;
static fy_http_client *client;
static tconn **conns;
static long long nconns = 1, reconnect_ms = 200;
static uint64_t heartbeat_ms = 5000;
static fy_strlist models;
static long long max_streams = 20000;
static int stopping, connected_total;
static uv_signal_t sig_term;
static uv_timer_t retry_timers[64];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* --- output ------------------------------------------------------------- */

static void conn_close(tconn *c, const char *why);

static void write_done(fy_stream *s, int status, void *arg)
{
    (void)s;
    (void)status;
    free(arg);
}

static void flush(tconn *c)
{
    if (!c->s || !c->sess) {
        return;
    }
    fy_slice out;
    size_t n = fyp_session_output(c->sess, &out);
    if (n && !c->closing) {
        char *copy = malloc(n);
        memcpy(copy, out.base, n);
        fy_slice sl = {copy, n};
        if (fy_stream_write(c->s, &sl, 1, write_done, copy) != 0) {
            free(copy);
            return;
        }
        fyp_session_output_consume(c->sess, n);
    }
    if (fyp_session_want_close(c->sess) && !c->closing) {
        conn_close(c, fyp_session_dead(c->sess) ? fyp_errcode_name(fyp_session_error_code(c->sess))
                                                : "drained");
    }
}

/* --- streams ------------------------------------------------------------------ */

static void st_free(tstream *st)
{
    if (st->delay) {
        st->delay->data = NULL;
        uv_close((uv_handle_t *)st->delay, (uv_close_cb)free);
    }
    st->prev->next = st->next;
    st->next->prev = st->prev;
    if (st->c->sess && st->id) {
        fyp_session_set_stream_data(st->c->sess, st->id, NULL);
    }
    free(st->pend);
    free(st);
}

static void st_maybe_free(tstream *st)
{
    if (st->done && !st->call && !st->pend && !st->delay) {
        st_free(st);
    }
}

static void st_error(tstream *st, int status, const char *code, const char *msg)
{
    fyp_session *s = st->c->sess;
    if (!st->responded) {
        char body[256];
        size_t n = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
        fyp_field h[] = {FYP_FIELD("content-type", "application/json")};
        fyp_response r = {.status = (uint16_t)status, .headers = {h, 1}};
        st->responded = 1;
        if (fyp_session_respond(s, st->id, &r, 0) == 0) {
            fyp_session_send_data(s, st->id, body, n, 1);
        }
    } else {
        fyp_session_reset(s, st->id, FYP_ERR_INTERNAL);
    }
    st->done = 1;
}

static void call_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    tstream *st = arg;
    (void)call;
    fyp_field f[FYP_MAX_HEADER_FIELDS];
    size_t n = 0;
    for (size_t i = 0; i < res->nheaders && n < FYP_MAX_HEADER_FIELDS; i++) {
        const char *nm = res->headers[i].name;
        if (!strcasecmp(nm, "connection") || !strcasecmp(nm, "keep-alive") ||
            !strcasecmp(nm, "transfer-encoding")) {
            continue;
        }
        f[n].name = FY_SLICE(nm, res->headers[i].name_len);
        f[n].value = FY_SLICE(res->headers[i].value, res->headers[i].value_len);
        n++;
    }
    fyp_response r = {.status = (uint16_t)res->status, .headers = {f, n}};
    st->responded = 1;
    fyp_session_respond(st->c->sess, st->id, &r, 0);
    flush(st->c);
}

static void call_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    tstream *st = arg;
    ssize_t n = fyp_session_send_data(st->c->sess, st->id, data, len, 0);
    if (n >= 0 && (size_t)n < len) {
        st->pend_len = len - (size_t)n;
        st->pend_off = 0;
        st->pend = malloc(st->pend_len);
        memcpy(st->pend, data + n, st->pend_len);
        fy_http_call_pause(call);
    }
    flush(st->c);
}

static void st_end(tstream *st);

static void st_on_delay(uv_timer_t *t)
{
    tstream *st = t->data;
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    if (!st) {
        return;
    }
    st->delay = NULL;
    st->usage_delay_ms = 0;
    st_end(st);
    tconn *c = st->c;
    st_maybe_free(st);
    flush(c);
}

/* Ends the response: a usage trailer when the request asked for one. */
static void st_end(tstream *st)
{
    if (st->has_usage && st->usage_delay_ms) {
        st->delay = malloc(sizeof *st->delay);
        uv_timer_init(loop, st->delay);
        st->delay->data = st;
        uv_timer_start(st->delay, st_on_delay, st->usage_delay_ms, 0);
    } else if (st->has_usage) {
        fyp_trailers t = {.has_usage = 1,
                          .prompt_tokens = st->prompt_tokens,
                          .completion_tokens = st->completion_tokens};
        fyp_session_send_trailers(st->c->sess, st->id, &t);
    } else {
        fyp_session_send_data(st->c->sess, st->id, "", 0, 1);
    }
}

static void call_done(fy_http_call *call, int status, void *arg)
{
    tstream *st = arg;
    (void)call;
    st->call = NULL;
    if (status == 0) {
        if (st->pend) {
            st->end_pending = 1;
        } else {
            st_end(st);
            st->done = 1;
        }
    } else if (status == FY_ETIMEDOUT) {
        st_error(st, 504, "upstream_timeout", "upstream did not answer in time");
    } else if (status != FY_ECANCELED) {
        st_error(st, 502, "upstream_unavailable", fy_strerror(status));
    }
    tconn *c = st->c;
    st_maybe_free(st);
    flush(c);
}

static void call_drain(fy_http_call *call, void *arg)
{
    tstream *st = arg;
    (void)call;
    if (st->unconsumed) {
        fyp_session_consume(st->c->sess, st->id, (size_t)st->unconsumed);
        st->unconsumed = 0;
    }
    st->drain_wait = 0;
    flush(st->c);
}

static void st_open(tconn *c, uint32_t id, const fyp_request *rq, int end)
{
    tstream *st = calloc(1, sizeof *st);
    st->c = c;
    st->id = id;
    st->next = c->streams.next;
    st->prev = &c->streams;
    st->next->prev = st;
    c->streams.next = st;
    fyp_session_set_stream_data(c->sess, id, st);

    char url[9000];
    snprintf(url, sizeof url, "%s%.*s", upstream, (int)rq->target.len, rq->target.base);
    char method[40];
    snprintf(method, sizeof method, "%.*s", (int)rq->method.len, rq->method.base);
    static fy_http_header h[FYP_MAX_HEADER_FIELDS];
    static char hbuf[FYP_MAX_HEADER_FIELDS][2][512];
    size_t n = 0;
    int64_t clen = -1;
    for (size_t i = 0; i < rq->headers.n && n < FYP_MAX_HEADER_FIELDS; i++) {
        const fyp_field *f = &rq->headers.v[i];
        snprintf(hbuf[n][0], 512, "%.*s", (int)f->name.len, f->name.base);
        snprintf(hbuf[n][1], 512, "%.*s", (int)f->value.len, f->value.base);
        unsigned up, uc, ms = 0;
        if (!strcasecmp(hbuf[n][0], "x-test-usage")) {
            if (sscanf(hbuf[n][1], "%u,%u,%u", &up, &uc, &ms) >= 2) {
                st->usage_delay_ms = ms;
                st->has_usage = 1;
                st->prompt_tokens = up;
                st->completion_tokens = uc;
            }
            continue;
        }
        if (!strcasecmp(hbuf[n][0], "content-length")) {
            clen = atoll(hbuf[n][1]);
        }
        h[n] = (fy_http_header){hbuf[n][0], hbuf[n][1], strlen(hbuf[n][0]), strlen(hbuf[n][1])};
        n++;
    }
    fy_http_call_options co = {
        .method = method,
        .url = url,
        .headers = h,
        .nheaders = n,
        .stream_body = !end,
        .content_length = clen,
        .cbs = {call_response, call_data, call_done, call_drain},
        .arg = st,
    };
    int rc = fy_http_call_start(client, &co, &st->call);
    if (rc) {
        st->call = NULL;
        st_error(st, 502, "upstream_unavailable", fy_strerror(rc));
        st_maybe_free(st);
    }
}

static void st_body(tstream *st, fy_slice d, int end)
{
    if (!st->call) {
        if (d.len) {
            fyp_session_consume(st->c->sess, st->id, d.len);
        }
        return;
    }
    if (d.len) {
        int rc = fy_http_call_write(st->call, d.base, d.len);
        if (rc == 0 && !st->drain_wait) {
            fyp_session_consume(st->c->sess, st->id, d.len);
        } else {
            st->unconsumed += d.len;
            st->drain_wait = 1;
        }
    }
    if (end) {
        fy_http_call_end(st->call);
    }
}

static void st_writable(tstream *st)
{
    while (st->pend && st->pend_off < st->pend_len) {
        ssize_t n = fyp_session_send_data(st->c->sess, st->id, st->pend + st->pend_off,
                                          st->pend_len - st->pend_off, 0);
        if (n <= 0) {
            return;
        }
        st->pend_off += (size_t)n;
    }
    free(st->pend);
    st->pend = NULL;
    if (st->end_pending) {
        st_end(st);
        st->done = 1;
        st_maybe_free(st);
    } else if (st->call) {
        fy_http_call_resume(st->call);
    }
}

static void st_reset(tstream *st)
{
    if (st->call) {
        fy_http_call_cancel(st->call);
        st->call = NULL;
    }
    st->id = 0;
    st_free(st);
}

/* --- connections -------------------------------------------------------------- */

static void conn_start(int slot);

static void on_event(fyp_session *s, const fyp_event *ev, void *data)
{
    tconn *c = data;
    tstream *st = ev->stream_data;
    switch (ev->type) {
    case FYP_EV_HELLO:
        say("connected %d", ++connected_total);
        break;
    case FYP_EV_REQUEST:
        st_open(c, ev->stream_id, ev->u.request, ev->end_stream);
        break;
    case FYP_EV_DATA:
        if (st) {
            st_body(st, ev->u.data, ev->end_stream);
        } else if (ev->u.data.len) {
            fyp_session_consume(s, ev->stream_id, ev->u.data.len);
        }
        break;
    case FYP_EV_WRITABLE:
        if (st) {
            st_writable(st);
        }
        break;
    case FYP_EV_STREAM_RESET:
        if (st) {
            st_reset(st);
        }
        break;
    case FYP_EV_GOAWAY:
        say("goaway %s %.*s", fyp_errcode_name(ev->u.goaway->error_code),
            (int)ev->u.goaway->debug.len, ev->u.goaway->debug.base);
        break;
    default:
        break;
    }
}

/* After SIGTERM, once every connection is gone, the upstream client goes
 * too (its idle pool would keep the loop alive). */
static void all_gone(void)
{
    if (!stopping || !client) {
        return;
    }
    for (long long i = 0; i < nconns; i++) {
        if (conns[i]) {
            return;
        }
    }
    fy_http_client_close(client);
    client = NULL;
}

static void conn_freed(tconn *c)
{
    int slot = c->slot;
    fyp_session_free(c->sess);
    free(c);
    conns[slot] = NULL;
    if (!stopping && reconnect_ms > 0) {
        conn_start(-slot - 1);
    }
    all_gone();
}

static void stream_closed(fy_stream *s)
{
    tconn *c = s->data;
    c->s = NULL;
    if (!c->timer_on) {
        conn_freed(c);
    }
}

static void timer_closed(uv_handle_t *h)
{
    tconn *c = h->data;
    c->timer_on = 0;
    if (!c->s) {
        conn_freed(c);
    }
}

static void conn_close(tconn *c, const char *why)
{
    if (c->closing) {
        return;
    }
    c->closing = 1;
    say("closed %s", why);
    if (c->sess) {
        fyp_session_terminate(c->sess, FYP_ERR_INTERNAL, "closing");
    }
    while (c->streams.next != &c->streams) {
        st_reset(c->streams.next);
    }
    if (c->timer_on) {
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, timer_closed);
    }
    if (c->s) {
        fy_stream_close(c->s, stream_closed);
    }
}

static void on_read(fy_stream *s, ssize_t n, const fy_slice *buf)
{
    tconn *c = s->data;
    if (c->closing) {
        return;
    }
    if (n < 0) {
        if (c->sess) {
            fyp_session_recv_eof(c->sess);
        }
        conn_close(c, fy_err_name((int)n));
        return;
    }
    if (fyp_session_recv(c->sess, buf->base, (size_t)n) == FY_EPROTO) {
        say("protocol-error %s", fyp_session_error_msg(c->sess));
    }
    flush(c);
}

static void on_tick(uv_timer_t *t)
{
    tconn *c = t->data;
    fyp_session_tick(c->sess);
    flush(c);
}

static void on_handshake(fy_stream *s, int status, void *arg)
{
    tconn *c = arg;
    if (c->closing) {
        return;
    }
    if (status) {
        say("refused %s", fy_err_name(status));
        conn_close(c, "handshake");
        return;
    }
    fyp_session_config cfg = {
        .role = FYP_ROLE_RUNNER,
        .name = hello_name ? hello_name : runner_name,
        .on_event = on_event,
        .data = c,
    };
    fyp_settings_default(&cfg.settings);
    cfg.settings.heartbeat_ms = (uint32_t)heartbeat_ms;
    cfg.settings.max_concurrent_streams = (uint32_t)max_streams;
    cfg.models = models.v;
    cfg.n_models = models.n;
    if (fyp_session_new(&cfg, &c->sess)) {
        conn_close(c, "session");
        return;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_on = 1;
    uv_timer_start(&c->timer, on_tick, 100, 100);
    fy_stream_read_start(s);
    flush(c);
}

static void on_connect(fy_stream *tcp, int status, void *arg)
{
    tconn *c = arg;
    if (status || stopping) {
        if (tcp) {
            fy_stream_close(tcp, NULL);
        }
        say("refused %s", fy_err_name(status ? status : FY_ECANCELED));
        int slot = c->slot;
        free(c);
        conns[slot] = NULL;
        if (!stopping && reconnect_ms > 0) {
            conn_start(-slot - 1);
        }
        all_gone();
        return;
    }
    c->s = fy_tls_stream_new(tls, tcp, gw_host, on_handshake, c);
    c->s->data = c;
    c->s->on_read = on_read;
}

static void on_retry(uv_timer_t *t)
{
    conn_start((int)(t - retry_timers));
}

/* SLOT >= 0: connect now; SLOT < 0: connect slot -SLOT-1 after the delay. */
static void conn_start(int slot)
{
    if (slot < 0) {
        uv_timer_start(&retry_timers[-slot - 1], on_retry, (uint64_t)reconnect_ms, 0);
        return;
    }
    tconn *c = calloc(1, sizeof *c);
    c->slot = slot;
    c->streams.next = c->streams.prev = &c->streams;
    conns[slot] = c;
    if (fy_tcp_connect(loop, gw_host, gw_port, 5000, on_connect, c)) {
        free(c);
        conns[slot] = NULL;
        conn_start(-slot - 1);
    }
}

static void on_sigterm(uv_signal_t *h, int sig)
{
    (void)sig;
    stopping = 1;
    uv_close((uv_handle_t *)h, NULL);
    for (long long i = 0; i < nconns; i++) {
        uv_timer_stop(&retry_timers[i]);
        uv_close((uv_handle_t *)&retry_timers[i], NULL);
        tconn *c = conns[i];
        if (!c || c->closing) {
            continue;
        }
        if (c->sess && fyp_session_ready(c->sess)) {
            fyp_session_goaway(c->sess, FYP_ERR_NONE, "runner stopping");
            flush(c);
        } else if (c->s) {
            conn_close(c, "stopping");
        }
    }
    all_gone();
}

/* --- enroll --------------------------------------------------------------------- */

static int enroll_status = 1;
static fy_buf enroll_body;
static const char *enroll_dir;
static char *enroll_key;

static void en_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    (void)call;
    (void)arg;
    enroll_status = res->status;
}

static void en_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    (void)call;
    (void)arg;
    fy_buf_append(&enroll_body, data, len);
}

static void write_file(const char *name, const char *text, int mode)
{
    char path[4096];
    fy_path_join(path, sizeof path, enroll_dir, name);
    fy_file_write_atomic(path, text, strlen(text), (mode_t)mode);
}

static void en_done(fy_http_call *call, int status, void *arg)
{
    (void)call;
    (void)arg;
    const char *body = fy_buf_cstr(&enroll_body);
    uv_stop(loop); /* the client's idle pool would keep the loop alive */
    if (status) {
        fprintf(stderr, "enroll: %s\n", fy_strerror(status));
        enroll_status = 1;
        return;
    }
    printf("status %d\n%s\n", enroll_status, body ? body : "");
    if (enroll_status == 200) {
        json_t *o = json_loads(body, 0, NULL);
        fy_mkdir_p(enroll_dir, 0700);
        write_file("runner.key", enroll_key, 0600);
        write_file("runner.crt", json_string_value(json_object_get(o, "certificate")), 0644);
        write_file("ca.crt", json_string_value(json_object_get(o, "ca")), 0644);
        write_file("name", json_string_value(json_object_get(o, "runner")), 0644);
        json_decref(o);
    }
}

static int cmd_enroll(const char *token, const char *ca, const char *csr_text)
{
    char err[256], *csr = NULL;
    if (fy_x509_csr_create("CN=whatever-i-ask-for", NULL, &enroll_key, &csr, err, sizeof err)) {
        fprintf(stderr, "csr: %s\n", err);
        return 1;
    }
    fy_tls_options to = {.ca_file = ca};
    if (fy_tls_config_new(&to, &tls, err, sizeof err)) {
        fprintf(stderr, "tls: %s\n", err);
        return 1;
    }
    fy_http_client_options ho = {.tls = tls};
    fy_http_client_new(loop, &ho, &client);
    json_t *o = json_pack("{s:s,s:s}", "token", token, "csr", csr_text ? csr_text : csr);
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char url[400];
    snprintf(url, sizeof url, "https://%s:%d/v1/enroll", gw_host, gw_port);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0}};
    fy_http_call_options co = {.method = "POST",
                               .url = url,
                               .headers = h,
                               .nheaders = 1,
                               .body = body,
                               .body_len = strlen(body),
                               .cbs = {en_response, en_data, en_done, NULL}};
    fy_buf_init(&enroll_body, 1 << 20);
    fy_http_call *call;
    if (fy_http_call_start(client, &co, &call) == 0) {
        uv_run(loop, UV_RUN_DEFAULT);
    }
    fy_http_client_close(client);
    uv_run(loop, UV_RUN_DEFAULT);
    fy_tls_config_free(tls);
    fy_buf_free(&enroll_body);
    fy_x509_key_pem_free(enroll_key);
    free(csr);
    free(body);
    return enroll_status == 200 ? 0 : 1;
}

/* --- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *gateway = NULL, *dir = NULL, *token = NULL, *ca = NULL, *cert = NULL, *key = NULL,
               *csr_text = NULL;
    int no_cert = 0;
    const fy_opt opts[] = {
        {"gateway", FY_OPT_STR, &gateway, "HOST:PORT", "tunnel listener"},
        {"dir", FY_OPT_STR, &dir, "DIR", "runner directory"},
        {"token", FY_OPT_STR, &token, "TOKEN", "enrollment token"},
        {"ca", FY_OPT_STR, &ca, "FILE", "CA to trust (default DIR/ca.crt)"},
        {"csr-text", FY_OPT_STR, &csr_text, "PEM", "send this CSR instead (enroll)"},
        {"upstream", FY_OPT_STR, &upstream, "URL", "upstream base URL"},
        {"connections", FY_OPT_INT, &nconns, "N", "tunnel connections"},
        {"hello-name", FY_OPT_STR, &hello_name, "NAME", "name to claim in HELLO"},
        {"cert", FY_OPT_STR, &cert, "FILE", "client certificate (default DIR/runner.crt)"},
        {"key", FY_OPT_STR, &key, "FILE", "client key (default DIR/runner.key)"},
        {"no-cert", FY_OPT_FLAG, &no_cert, NULL, "send no client certificate"},
        {"reconnect-ms", FY_OPT_INT, &reconnect_ms, "MS", "reconnect delay, 0: never"},
        {"heartbeat", FY_OPT_DURATION, &heartbeat_ms, "TIME", "heartbeat interval"},
        {"model", FY_OPT_STRLIST, &models, "NAME", "a model to announce in HELLO (repeatable)"},
        {"max-streams", FY_OPT_INT, &max_streams, "N", "MAX_CONCURRENT_STREAMS to announce"},
        {0},
    };
    char err[512], *pos[argc > 0 ? argc : 1];
    int npos = 0;
    if (argc < 2 || fy_args_parse(opts, argc - 2, argv + 2, pos, &npos, err, sizeof err) ||
        !gateway) {
        fprintf(stderr, "usage: gw_test_runner enroll|run --gateway HOST:PORT ... %s\n",
                argc < 2 ? "" : err);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    fy_log_setup(FY_LOG_WARN, FY_LOG_TEXT);
    static char host[256];
    const char *colon = strrchr(gateway, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - gateway), gateway);
    gw_host = host;
    gw_port = atoi(colon + 1);
    loop = uv_default_loop();
    if (!strcmp(argv[1], "enroll")) {
        enroll_dir = dir;
        return cmd_enroll(token, ca, csr_text);
    }
    /* run */
    char p_cert[4096], p_key[4096], p_ca[4096], p_name[4096];
    fy_path_join(p_cert, sizeof p_cert, dir, "runner.crt");
    fy_path_join(p_key, sizeof p_key, dir, "runner.key");
    fy_path_join(p_ca, sizeof p_ca, dir, "ca.crt");
    fy_path_join(p_name, sizeof p_name, dir, "name");
    char *name = NULL;
    size_t nl;
    if (fy_file_read(p_name, 256, &name, &nl)) {
        fprintf(stderr, "gw_test_runner: %s not enrolled\n", dir);
        return 1;
    }
    runner_name = name;
    static const char *alpn[] = {"ferry/1", NULL};
    fy_tls_options to = {
        .cert_file = no_cert ? NULL
                     : cert  ? cert
                             : p_cert,
        .key_file = no_cert ? NULL
                    : key   ? key
                            : p_key,
        .ca_file = ca ? ca : p_ca,
        .alpn = alpn,
    };
    if (fy_tls_config_new(&to, &tls, err, sizeof err)) {
        fprintf(stderr, "tls: %s\n", err);
        return 1;
    }
    fy_http_client_options ho = {0};
    fy_http_client_new(loop, &ho, &client);
    if (max_streams < 0 || max_streams > 0xffffffffLL) {
        max_streams = 20000;
    }
    if (nconns < 1 || nconns > 64) {
        nconns = 1;
    }
    conns = calloc((size_t)nconns, sizeof *conns);
    for (long long i = 0; i < nconns; i++) {
        uv_timer_init(loop, &retry_timers[i]);
        conn_start((int)i);
    }
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_term, on_sigterm, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    fy_http_client_close(client);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    fy_tls_config_free(tls);
    free(conns);
    free(name);
    return 0;
}
