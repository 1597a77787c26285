/* run.c: `ferry-gateway run`: options, listeners, signals, drain and the
 * state file. */
#include "gateway/gateway.h"

#include "common/args.h"
#include "common/cli.h"
#include "common/crypto.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/x509.h"
#include "gateway/dash/dash.h"
#include "gateway/datadir.h"
#include "gateway/shared_seed.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RUN_LOG "gateway"

static const char *const listener_names[GW_L_COUNT] = {"public", "tunnel", "admin"};

static void usage(FILE *f, const fy_opt *opts)
{
    fprintf(f, "Usage: ferry-gateway run --data-dir DIR [--config FILE] [OPTIONS]\n\n"
               "Runs the gateway on a data directory made by 'ferry-gateway init'. Three\n"
               "listeners: public (HTTPS, or plain HTTP with --public-plain; /r/<runner>/<path>\n"
               "is proxied to that runner's upstream; /hooks/<id> are verified webhooks), tunnel "
               "(runners dial in over mutual TLS;\n"
               "also serves POST /v1/enroll) and admin (HTTPS; every call needs the admin token).\n"
               "Options come from DIR/gateway.json, then --config FILE (JSON, keys are option\n"
               "names), then the command line. Listening on port 0 picks a free port; the\n"
               "addresses actually bound are written to DIR/state.json (removed on exit).\n"
               "SIGTERM or SIGINT drains: runners get GOAWAY, new public requests are refused,\n"
               "requests in flight finish within --drain-timeout; a second signal stops at once.\n"
               "Every public request needs an API key ('ferry keys create'); one JSON access-log\n"
               "line per request goes to --access-log (default: the daemon's log on stderr);\n"
               "SIGHUP reopens that file after a rotation.\n\n"
               "Options:\n");
    fy_args_usage(f, opts);
}

/* --- listeners ------------------------------------------------------------------ */

static void accepted_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *ls, int status)
{
    gw_listener *l = ls->data;
    fy_gw *gw = l->gw;
    if (status < 0 || gw->stopped || !l->open) {
        return;
    }
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) {
        return;
    }
    uv_tcp_init(gw->loop, t);
    if (uv_accept(ls, (uv_stream_t *)t) != 0) {
        uv_close((uv_handle_t *)t, accepted_closed);
        return;
    }
    fy_stream *s = fy_tcp_stream_wrap(t);
    if (!s) {
        return;
    }
    switch (l->kind) {
    case GW_L_TUNNEL:
        fy_gw_tunnel_accept(gw, s);
        break;
    case GW_L_PUBLIC:
        if (!gw->opt.public_plain &&
            !(s = fy_tls_stream_new(gw->net.tls_server, s, NULL, NULL, NULL))) {
            return;
        }
        fy_http_server_attach(gw->net.public_srv, s);
        break;
    default:
        if (!(s = fy_tls_stream_new(gw->net.tls_server, s, NULL, NULL, NULL))) {
            return;
        }
        fy_http_server_attach(gw->net.admin_srv, s);
        break;
    }
}

static int listener_open(fy_gw *gw, int kind, const char *addr, char *err, size_t errlen)
{
    gw_listener *l = &gw->net.listeners[kind];
    struct sockaddr_storage ss;
    if (fy_addr_parse(addr, &ss)) {
        snprintf(err, errlen, "--%s-listen: '%s' is not ADDR:PORT", listener_names[kind], addr);
        return FY_EINVAL;
    }
    l->gw = gw;
    l->kind = kind;
    uv_tcp_init(gw->loop, &l->tcp);
    l->tcp.data = l;
    l->open = 1;
    int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
    if (!rc) {
        rc = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    }
    if (rc) {
        snprintf(err, errlen, "%s listener on %s: %s", listener_names[kind], addr, uv_strerror(rc));
        return fy_err_from_uv(rc);
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&bound, &blen);
    fy_addr_format((struct sockaddr *)&bound, gw->net.addr[kind], sizeof gw->net.addr[kind]);
    return 0;
}

static void listener_close(gw_listener *l)
{
    if (l->open) {
        l->open = 0;
        uv_close((uv_handle_t *)&l->tcp, NULL);
    }
}

/* --- state file and shutdown ---------------------------------------------------- */

static int state_path(fy_gw *gw, char *out, size_t outlen)
{
    return fy_path_join(out, outlen, gw->opt.data_dir, FY_GW_STATE);
}

static int state_write(fy_gw *gw)
{
    char path[4096];
    int rc = state_path(gw, path, sizeof path);
    if (rc) {
        return rc;
    }
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s}", "pid", (int)getpid(), "public",
                          gw->net.addr[GW_L_PUBLIC], "public_scheme",
                          gw->opt.public_plain ? "http" : "https", "tunnel",
                          gw->net.addr[GW_L_TUNNEL], "admin", gw->net.addr[GW_L_ADMIN]);
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(o);
    if (!text) {
        return FY_ENOMEM;
    }
    size_t n = strlen(text);
    char *t2 = realloc(text, n + 2);
    if (!t2) {
        free(text);
        return FY_ENOMEM;
    }
    t2[n] = '\n';
    rc = fy_file_write_atomic(path, t2, n + 1, 0644);
    free(t2);
    return rc;
}

/* The access log hears of every public request (reqdone.h). */
static void access_line(const fy_reqdone *d, void *arg)
{
    fy_gw *gw = arg;
    if (!gw->access_stderr || fy_log_enabled(FY_LOG_INFO)) {
        fy_accesslog_write(gw->access, d->e);
    }
}

static void gw_stop(fy_gw *gw)
{
    if (gw->stopped) {
        return;
    }
    gw->stopped = 1;
    if (gw->n_px.n) {
        fy_log_event(FY_LOG_WARN, RUN_LOG, "stopping with requests in flight",
                     json_pack("{s:I}", "in_flight", (json_int_t)gw->n_px.n));
    }
    for (int i = 0; i < GW_L_COUNT; i++) {
        listener_close(&gw->net.listeners[i]);
    }
    fy_gw_hookq_close(gw); /* before the tunnels: its streams are reset on live sessions */
    fy_gw_v1_fail_waiting(gw, "gateway_draining", "the gateway is shutting down");
    fy_gw_v1_close(gw);
    fy_gw_tunnel_close_all(gw);
    fy_dash_close(gw->dash); /* its live streams, before the admin server */
    fy_http_server_close(gw->net.public_srv, NULL, NULL);
    fy_http_server_close(gw->net.admin_srv, NULL, NULL);
    fy_http_server_close(gw->net.enroll_srv, NULL, NULL);
    gw->net.public_srv = gw->net.admin_srv = gw->net.enroll_srv = NULL;
    uv_close((uv_handle_t *)&gw->life.sig_term, NULL);
    uv_close((uv_handle_t *)&gw->life.sig_int, NULL);
    uv_close((uv_handle_t *)&gw->life.sig_hup, NULL);
    uv_close((uv_handle_t *)&gw->life.drain_timer, NULL);
    uv_close((uv_handle_t *)&gw->life.usage_timer, NULL);
    /* After the servers: requests they ended gave their leases back. */
    fy_shared_free(gw->shared);
    gw->shared = NULL;
    char path[4096];
    if (gw->net.addr[GW_L_PUBLIC][0] && state_path(gw, path, sizeof path) == 0) {
        unlink(path);
    }
}

static void on_drain_timer(uv_timer_t *t)
{
    fy_gw *gw = t->data;
    gw_stop(gw);
    fy_log_event(FY_LOG_INFO, RUN_LOG, "gateway stopped", NULL);
}

/* The last request in flight ended (gw->n_px's watcher). */
static void on_idle(void *arg)
{
    fy_gw *gw = arg;
    if (gw->draining && !gw->stopped) {
        /* From the loop, not from inside whatever finished the request. */
        uv_timer_start(&gw->life.drain_timer, on_drain_timer, 0, 0);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    fy_gw *gw = h->data;
    if (gw->stopped) {
        return;
    }
    if (gw->draining) {
        fy_log_event(FY_LOG_WARN, RUN_LOG, "second signal: stopping now", NULL);
        gw_stop(gw);
        return;
    }
    gw->draining = 1;
    fy_log_event(FY_LOG_INFO, RUN_LOG, "draining",
                 json_pack("{s:s,s:I,s:I}", "signal", signum == SIGINT ? "SIGINT" : "SIGTERM",
                           "in_flight", (json_int_t)gw->n_px.n, "timeout_ms",
                           (json_int_t)gw->opt.drain_timeout_ms));
    listener_close(&gw->net.listeners[GW_L_PUBLIC]);
    listener_close(&gw->net.listeners[GW_L_TUNNEL]);
    fy_gw_tunnel_goaway_all(gw);
    /* Nothing new is opened on a draining tunnel: waiting requests end now. */
    fy_gw_v1_fail_waiting(gw, "gateway_draining", "the gateway is shutting down");
    uv_timer_start(&gw->life.drain_timer, on_drain_timer, gw->n_px.n ? gw->opt.drain_timeout_ms : 0,
                   0);
}

static void on_sighup(uv_signal_t *h, int signum)
{
    fy_gw *gw = h->data;
    (void)signum;
    int rc = fy_accesslog_reopen(gw->access);
    if (rc) {
        fy_log_event(FY_LOG_ERROR, RUN_LOG, "cannot reopen the access log",
                     json_pack("{s:s,s:s}", "path", gw->opt.access_log, "error", fy_strerror(rc)));
    } else if (!gw->access_stderr) {
        fy_log_event(FY_LOG_INFO, RUN_LOG, "access log reopened",
                     json_pack("{s:s}", "path", gw->opt.access_log));
    }
}

/* Usage is added in memory on the request path; this writes it, one
 * transaction a second, so a kill -9 loses at most the last second. */
static void on_usage_timer(uv_timer_t *t)
{
    fy_gw *gw = t->data;
    if (fy_store_usage_pending(gw->store) == 0) {
        return;
    }
    int rc = fy_store_usage_flush(gw->store);
    if (rc) {
        FY_WARN(RUN_LOG, "usage flush failed (kept for the next one): %s", fy_strerror(rc));
    }
}

/* --- start-up --------------------------------------------------------------------- */

static int read_pem(const char *dir, const char *name, char **out, char *err, size_t errlen)
{
    char path[4096];
    size_t len;
    int rc = fy_path_join(path, sizeof path, dir, name);
    if (!rc) {
        rc = fy_file_read(path, FY_TLS_PEM_MAX_BYTES, out, &len);
    }
    if (rc) {
        snprintf(err, errlen, "cannot read %.600s: %s", path, fy_strerror(rc));
    }
    return rc;
}

/* The last PEM certificate of a chain file: the CA runners must trust when
 * the operator brought their own certificate (--tls-cert). */
static int last_cert_pem(const char *file, char **out, char *err, size_t errlen)
{
    char *text = NULL;
    size_t len;
    int rc = fy_file_read(file, FY_TLS_PEM_MAX_BYTES, &text, &len);
    if (rc) {
        snprintf(err, errlen, "cannot read %.600s: %s", file, fy_strerror(rc));
        return rc;
    }
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    char *last = NULL;
    for (char *p = strstr(text, begin); p; p = strstr(p + 1, begin)) {
        last = p;
    }
    char *e = last ? strstr(last, end) : NULL;
    if (!e) {
        free(text);
        snprintf(err, errlen, "%.600s holds no PEM certificate", file);
        return FY_EPARSE;
    }
    e += sizeof end - 1;
    size_t n = (size_t)(e - last);
    *out = malloc(n + 2);
    if (!*out) {
        free(text);
        return FY_ENOMEM;
    }
    memcpy(*out, last, n);
    (*out)[n] = '\n';
    (*out)[n + 1] = '\0';
    free(text);
    return 0;
}

static int load_admin_token(fy_gw *gw, char *err, size_t errlen)
{
    char *tok = NULL;
    int rc = read_pem(gw->opt.data_dir, FY_GW_ADMIN_TOKEN, &tok, err, errlen);
    if (rc) {
        return rc;
    }
    size_t n = strlen(tok);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ')) {
        n--;
    }
    if (!fy_secret_well_formed(FY_GW_ADMIN_TOKEN_PREFIX, tok, n)) {
        snprintf(err, errlen, "%s/%s is not an admin token", gw->opt.data_dir, FY_GW_ADMIN_TOKEN);
        rc = FY_EPARSE;
    } else {
        fy_secret_hash(tok, n, gw->trust.admin_hash);
    }
    fy_secure_zero(tok, strlen(tok));
    free(tok);
    return rc;
}

/* --- the shared state (--shared) ---------------------------------------------------- */

/* Another replica enrolled or revoked runner R: its connections here that
 * no longer match go. */
static void on_shared_runner(void *data, const fy_store_runner *r)
{
    fy_gw *gw = data;
    if (r->revoked_at) {
        fy_gw_tunnel_drop_runner(gw, r->name, FYP_ERR_REJECTED, "runner revoked");
    } else {
        fy_gw_tunnel_drop_stale(gw, r->name, r->fingerprint);
    }
}

/* This replica's heartbeat: its listeners and the runners connected here. */
static json_t *shared_announce(void *data)
{
    fy_gw *gw = data;
    json_t *runners = json_object();
    for (gw_runner *r = gw->tun.runners; r; r = r->next) {
        json_object_set_new(runners, r->name, json_integer((json_int_t)r->n_conns));
    }
    return json_pack("{s:s,s:s,s:s,s:o}", "public", gw->net.addr[GW_L_PUBLIC], "tunnel",
                     gw->net.addr[GW_L_TUNNEL], "admin", gw->net.addr[GW_L_ADMIN], "runners",
                     runners);
}

/* Another replica deleted hook ID: its limiter here goes too. */
static void on_shared_hook_gone(void *data, const char *id)
{
    fy_gw_hook_forget(data, id);
}

static const fy_shared_ops shared_ops = {.on_runner = on_shared_runner,
                                         .announce = shared_announce,
                                         .on_hook_gone = on_shared_hook_gone};

/* Before anything is read from the data dir: the deployment's files come
 * from Redis (the same runner CA, server certificate and admin token on
 * every replica). One blocking round trip at start-up, before the loop. */
static int shared_prepare(fy_gw *gw, fy_redis_config *cfg, char *err, size_t errlen)
{
    char why[512];
    int rc = fy_redis_config_parse(gw->opt.shared_url, gw->opt.shared_password_file, cfg, why,
                                   sizeof why);
    if (rc) {
        snprintf(err, errlen, "--shared: %s", why);
        return rc;
    }
    if ((rc = fy_shared_seed_fetch(cfg, gw->opt.data_dir, why, sizeof why))) {
        snprintf(err, errlen, "--shared: %s", why);
    }
    return rc;
}

static int shared_start(fy_gw *gw, const fy_redis_config *cfg, char *err, size_t errlen)
{
    fy_shared_options so = {
        .loop = gw->loop,
        .store = gw->store,
        .keys = gw->keys,
        .metrics = &gw->metrics,
        .ops = &shared_ops,
        .data = gw,
        .fail_open = gw->opt.shared_fail_open,
        .lease_ttl_ms = (unsigned)gw->opt.shared_lease_ms,
    };
    return fy_shared_new(&so, cfg, &gw->shared, err, errlen);
}

static int setup(fy_gw *gw, char *err, size_t errlen)
{
    int rc;
    char path[4096], cert[4096], key[4096], rca[4096];
    fy_redis_config cfg;
    if (gw->opt.shared_url && (rc = shared_prepare(gw, &cfg, err, errlen))) {
        fy_redis_config_wipe(&cfg);
        return rc;
    }
    if ((rc = load_admin_token(gw, err, errlen)) ||
        (rc = read_pem(gw->opt.data_dir, FY_GW_RUNNER_CA_CERT, &gw->trust.runner_ca_pem, err,
                       errlen)) ||
        (rc = read_pem(gw->opt.data_dir, FY_GW_RUNNER_CA_KEY, &gw->trust.runner_ca_key_pem, err,
                       errlen))) {
        return rc;
    }
    if (gw->opt.tls_cert) {
        snprintf(cert, sizeof cert, "%s", gw->opt.tls_cert);
        snprintf(key, sizeof key, "%s", gw->opt.tls_key);
        rc = last_cert_pem(cert, &gw->trust.trust_ca_pem, err, errlen);
    } else {
        fy_path_join(cert, sizeof cert, gw->opt.data_dir, FY_GW_SERVER_CERT);
        fy_path_join(key, sizeof key, gw->opt.data_dir, FY_GW_SERVER_KEY);
        rc = read_pem(gw->opt.data_dir, FY_GW_CA_CERT, &gw->trust.trust_ca_pem, err, errlen);
    }
    if (rc) {
        return rc;
    }
    fy_path_join(path, sizeof path, gw->opt.data_dir, FY_GW_DB);
    if ((rc = fy_store_open(path, &gw->store, err, errlen))) {
        return rc;
    }
    if ((rc = fy_keys_new(gw->store, &gw->keys))) {
        snprintf(err, errlen, "cannot load the API keys: %s", fy_strerror(rc));
        return rc;
    }
    if ((rc = fy_metrics_gw_init(&gw->metrics))) {
        snprintf(err, errlen, "metrics: %s", fy_strerror(rc));
        return rc;
    }
    if (gw->opt.shared_url) {
        rc = shared_start(gw, &cfg, err, errlen);
        fy_redis_config_wipe(&cfg);
        if (rc) {
            return rc;
        }
    }
    gw->access_stderr = strcmp(gw->opt.access_log, "-") == 0;
    if ((rc = fy_accesslog_open(gw->opt.access_log, &gw->access))) {
        snprintf(err, errlen, "--access-log %.600s: %s", gw->opt.access_log, fy_strerror(rc));
        return rc;
    }
    gw->access_sub = (fy_reqdone_sub){.fn = access_line, .arg = gw};
    fy_reqdone_subscribe(&gw->done, &gw->access_sub);
    gw->started = (int64_t)time(NULL);
    fy_dash_config dc = {.loop = gw->loop,
                         .admin_hash = gw->trust.admin_hash,
                         .done = &gw->done,
                         .store = gw->store,
                         .keys = gw->keys};
    if ((rc = fy_dash_new(&dc, &gw->dash))) {
        snprintf(err, errlen, "dashboard: %s", fy_strerror(rc));
        return rc;
    }
    static const char *alpn_https[] = {"http/1.1", NULL};
    static const char *alpn_tunnel[] = {FY_GW_ALPN_TUNNEL, "http/1.1", NULL};
    fy_tls_options to = {.is_server = 1, .cert_file = cert, .key_file = key, .alpn = alpn_https};
    if ((rc = fy_tls_config_new(&to, &gw->net.tls_server, err, errlen))) {
        return rc;
    }
    fy_path_join(rca, sizeof rca, gw->opt.data_dir, FY_GW_RUNNER_CA_CERT);
    to.ca_file = rca;
    to.optional_client_cert = 1;
    to.alpn = alpn_tunnel;
    to.prefer_chacha = 1; /* the runner prefers it too: see fy_tls_options */
    if ((rc = fy_tls_config_new(&to, &gw->net.tls_tunnel, err, errlen))) {
        return rc;
    }
    if ((rc = fy_gw_v1_init(gw)) || (rc = fy_gw_hookq_init(gw))) {
        snprintf(err, errlen, "event loop: %s", fy_strerror(rc));
        return rc;
    }
    fy_http_server_options po = {
        .on_request = fy_gw_public_request,
        .data = gw,
        .max_body = gw->opt.max_body,
        .max_connections = (unsigned)gw->opt.max_connections,
    };
    fy_http_server_options ao = {
        .on_request = fy_gw_admin_request,
        .data = gw,
        .buffer_body = 1,
        .max_body = FY_GW_ADMIN_MAX_BODY,
        /* The dashboard is served here: every answer carries its CSP. */
        .extra_headers = fy_dash_security_headers,
        .n_extra_headers = FY_DASH_N_SECURITY,
    };
    fy_http_server_options eo = {
        .on_request = fy_gw_enroll_request,
        .data = gw,
        .buffer_body = 1,
        .max_body = FY_GW_ENROLL_MAX_BODY,
        .max_connections = FY_GW_ENROLL_MAX_CONNS,
    };
    if ((rc = fy_http_server_new(gw->loop, &po, &gw->net.public_srv)) ||
        (rc = fy_http_server_new(gw->loop, &ao, &gw->net.admin_srv)) ||
        (rc = fy_http_server_new(gw->loop, &eo, &gw->net.enroll_srv))) {
        snprintf(err, errlen, "HTTP server: %s", fy_strerror(rc));
        return rc;
    }
    if ((rc = listener_open(gw, GW_L_PUBLIC, gw->opt.public_listen, err, errlen)) ||
        (rc = listener_open(gw, GW_L_TUNNEL, gw->opt.tunnel_listen, err, errlen)) ||
        (rc = listener_open(gw, GW_L_ADMIN, gw->opt.admin_listen, err, errlen))) {
        return rc;
    }
    uv_timer_start(&gw->life.usage_timer, on_usage_timer, FY_STORE_USAGE_FLUSH_MS,
                   FY_STORE_USAGE_FLUSH_MS);
    if ((rc = state_write(gw))) {
        snprintf(err, errlen, "cannot write %s/%s: %s", gw->opt.data_dir, FY_GW_STATE,
                 fy_strerror(rc));
        return rc;
    }
    return 0;
}

/* Finds --data-dir: on the command line, or in the --config file. */
static const char *find_data_dir(int argc, char **argv, json_t **peek)
{
    const char *d = fy_args_find(argc, argv, "data-dir");
    const char *cfg = fy_args_find(argc, argv, "config");
    if (d || !cfg) {
        return d;
    }
    *peek = json_load_file(cfg, 0, NULL);
    return json_string_value(json_object_get(*peek, "data-dir"));
}

int fy_gw_run_main(int argc, char **argv)
{
    fy_gw *gw = calloc(1, sizeof *gw);
    uv_loop_t loop;
    json_t *peek = NULL, *cfg_dir = NULL, *cfg_file = NULL;
    const char *config = NULL;
    int help = 0, status = 1, loop_ok = 0;
    fy_cli_log_opts log = {0};
    char err[768];
    if (!gw) {
        fprintf(stderr, "ferry-gateway run: out of memory\n");
        return 1;
    }
    gw->opt.public_listen = FY_GW_DEFAULT_PUBLIC;
    gw->opt.tunnel_listen = FY_GW_DEFAULT_TUNNEL;
    gw->opt.admin_listen = FY_GW_DEFAULT_ADMIN;
    gw->opt.heartbeat_ms = FY_GW_DEFAULT_HEARTBEAT;
    gw->opt.drain_timeout_ms = FY_GW_DEFAULT_DRAIN;
    gw->opt.max_body = FY_GW_DEFAULT_MAX_BODY;
    gw->opt.queue_timeout_ms = FY_GW_DEFAULT_QUEUE_TIMEOUT;
    gw->opt.max_connections = FY_HTTP_MAX_CONNECTIONS;
    gw->opt.access_log = "-";
    const fy_opt opts[] = {
        {"data-dir", FY_OPT_STR, &gw->opt.data_dir, "DIR",
         "data directory made by init (required)"},
        {"config", FY_OPT_STR, &config, "FILE", "JSON config file (keys are option names)"},
        {"public-listen", FY_OPT_STR, &gw->opt.public_listen, "ADDR:PORT",
         "public listener (default " FY_GW_DEFAULT_PUBLIC ")"},
        {"tunnel-listen", FY_OPT_STR, &gw->opt.tunnel_listen, "ADDR:PORT",
         "tunnel listener for runners (default " FY_GW_DEFAULT_TUNNEL ")"},
        {"admin-listen", FY_OPT_STR, &gw->opt.admin_listen, "ADDR:PORT",
         "admin listener (default " FY_GW_DEFAULT_ADMIN ")"},
        {"public-plain", FY_OPT_FLAG, &gw->opt.public_plain, NULL,
         "serve the public listener as plain HTTP (behind a TLS load balancer)"},
        {"tls-cert", FY_OPT_STR, &gw->opt.tls_cert, "FILE",
         "certificate chain (PEM) for the listeners (default DIR/server.crt)"},
        {"tls-key", FY_OPT_STR, &gw->opt.tls_key, "FILE", "private key (PEM) for --tls-cert"},
        {"heartbeat", FY_OPT_DURATION, &gw->opt.heartbeat_ms, "TIME",
         "tunnel heartbeat interval; a runner silent for 3 intervals is dropped (default 5s)"},
        {"drain-timeout", FY_OPT_DURATION, &gw->opt.drain_timeout_ms, "TIME",
         "on SIGTERM, how long requests in flight may take to finish (default 30s)"},
        {"max-body", FY_OPT_SIZE, &gw->opt.max_body, "BYTES",
         "largest public request body, streamed (default 1GiB)"},
        {"queue-timeout", FY_OPT_DURATION, &gw->opt.queue_timeout_ms, "TIME",
         "how long a /v1 request waits when every runner serving its model is at its stream "
         "limit, then 503 (default 10s; 0: no wait)"},
        {"max-connections", FY_OPT_INT, &gw->opt.max_connections, "N",
         "public connections at once (default 10000)"},
        {"access-log", FY_OPT_STR, &gw->opt.access_log, "FILE",
         "JSON access log, one line per public request (default '-': the log on stderr)"},
        {"shared", FY_OPT_STR, &gw->opt.shared_url, "URL",
         "share keys, runners, limits and usage with other replicas in Redis: "
         "redis://HOST[:PORT][/DB] or unix:///PATH[?db=N] (default: none, SQLite alone)"},
        {"shared-password-file", FY_OPT_STR, &gw->opt.shared_password_file, "FILE",
         "the Redis password, the first line of FILE (never on the command line)"},
        {"shared-failure", FY_OPT_STR, &gw->opt.shared_failure, "closed|open",
         "while Redis is unreachable, a key this replica has not cached is refused with 503 "
         "(closed, the default) or as unknown with 401 (open)"},
        {"shared-lease", FY_OPT_DURATION, &gw->opt.shared_lease_ms, "TIME",
         "a concurrency slot held by a replica that died comes back after this (default 30s; "
         "live replicas renew theirs every third of it)"},
        FY_CLI_LOG_OPTS(&log),
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;

    /* gateway.json, then --config, then the command line. */
    const char *dir = find_data_dir(argc - 1, argv + 1, &peek);
    char path[4096];
    if (dir && fy_path_join(path, sizeof path, dir, FY_GW_CONFIG) == 0 && fy_file_exists(path) &&
        !(cfg_dir = fy_config_load(path, opts, err, sizeof err))) {
        fprintf(stderr, "ferry-gateway run: %s: %s\n", path, err);
        status = 2;
        goto out;
    }
    const char *cfgfile = fy_args_find(argc - 1, argv + 1, "config");
    if (cfgfile && !(cfg_file = fy_config_load(cfgfile, opts, err, sizeof err))) {
        fprintf(stderr, "ferry-gateway run: %s: %s\n", cfgfile, err);
        status = 2;
        goto out;
    }
    if (fy_args_parse(opts, argc - 1, argv + 1, pos, &npos, err, sizeof err) ||
        fy_cli_log_apply(&log, err, sizeof err)) {
        fprintf(stderr, "ferry-gateway run: %s\n", err);
        status = 2;
        goto out;
    }
    if (help) {
        usage(stdout, opts);
        status = 0;
        goto out;
    }
    const char *bad =
        !gw->opt.data_dir                           ? "--data-dir DIR is required"
        : npos                                      ? "unexpected argument (see --help)"
        : (!gw->opt.tls_cert) != (!gw->opt.tls_key) ? "--tls-cert and --tls-key go together"
        : (gw->opt.heartbeat_ms < FYP_MIN_HEARTBEAT_MS ||
           gw->opt.heartbeat_ms > FYP_MAX_HEARTBEAT_MS)
            ? "--heartbeat must be between 1s and 10m"
        : gw->opt.max_connections < 1 ? "--max-connections must be at least 1"
        : gw->opt.queue_timeout_ms > FY_GW_MAX_QUEUE_TIMEOUT ? "--queue-timeout must be at most 10m"
        : gw->opt.shared_failure && strcmp(gw->opt.shared_failure, "closed") != 0 &&
                strcmp(gw->opt.shared_failure, "open") != 0
            ? "--shared-failure is closed or open"
        : (gw->opt.shared_password_file || gw->opt.shared_failure || gw->opt.shared_lease_ms) &&
                !gw->opt.shared_url
            ? "--shared-password-file, --shared-failure and --shared-lease go with --shared URL"
        : gw->opt.shared_lease_ms &&
                (gw->opt.shared_lease_ms < 1000 || gw->opt.shared_lease_ms > 24ULL * 3600 * 1000)
            ? "--shared-lease must be between 1s and 24h"
            : NULL;
    if (bad) {
        fprintf(stderr, "ferry-gateway run: %s\n", bad);
        status = 2;
        goto out;
    }
    gw->opt.shared_fail_open =
        gw->opt.shared_failure && strcmp(gw->opt.shared_failure, "open") == 0;
    signal(SIGPIPE, SIG_IGN);
    if (uv_loop_init(&loop) != 0) {
        fprintf(stderr, "ferry-gateway run: cannot create the event loop\n");
        goto out;
    }
    loop_ok = 1;
    gw->loop = &loop;
    uv_signal_init(&loop, &gw->life.sig_term);
    uv_signal_init(&loop, &gw->life.sig_int);
    uv_signal_init(&loop, &gw->life.sig_hup);
    uv_timer_init(&loop, &gw->life.drain_timer);
    uv_timer_init(&loop, &gw->life.usage_timer);
    gw->n_px = (gw_count){.on_zero = on_idle, .arg = gw};
    gw->life.sig_term.data = gw->life.sig_int.data = gw->life.sig_hup.data = gw;
    gw->life.drain_timer.data = gw->life.usage_timer.data = gw;
    int rc = setup(gw, err, sizeof err);
    if (rc) {
        fprintf(stderr, "ferry-gateway run: %s\n", err);
        gw_stop(gw);
        uv_run(&loop, UV_RUN_DEFAULT);
        goto out;
    }
    uv_signal_start(&gw->life.sig_term, on_signal, SIGTERM);
    uv_signal_start(&gw->life.sig_int, on_signal, SIGINT);
    uv_signal_start(&gw->life.sig_hup, on_sighup, SIGHUP);
    fy_log_event(FY_LOG_INFO, RUN_LOG, "gateway listening",
                 json_pack("{s:s,s:s,s:s,s:s,s:i}", "public", gw->net.addr[GW_L_PUBLIC],
                           "public_scheme", gw->opt.public_plain ? "http" : "https", "tunnel",
                           gw->net.addr[GW_L_TUNNEL], "admin", gw->net.addr[GW_L_ADMIN], "pid",
                           (int)getpid()));
    uv_run(&loop, UV_RUN_DEFAULT);
    status = 0;
out:
    if (loop_ok && uv_loop_close(&loop) != 0) {
        fprintf(stderr, "ferry-gateway run: event loop still had open handles\n");
        status = status ? status : 1;
    }
    fy_tls_config_free(gw->net.tls_server);
    fy_tls_config_free(gw->net.tls_tunnel);
    /* Every request has ended (the loop ran dry), so no key is held. */
    fy_keys_free(gw->keys);
    fy_gw_hooks_free(gw);
    fy_accesslog_close(gw->access);
    fy_dash_free(gw->dash);
    fy_metrics_gw_close(&gw->metrics);
    if (gw->store && fy_store_usage_flush(gw->store)) {
        fprintf(stderr, "ferry-gateway run: the last usage could not be written\n");
    }
    fy_store_close(gw->store);
    free(gw->trust.runner_ca_pem);
    fy_x509_key_pem_free(gw->trust.runner_ca_key_pem);
    free(gw->trust.trust_ca_pem);
    json_decref(peek);
    json_decref(cfg_dir);
    json_decref(cfg_file);
    free(gw);
    return status;
}
