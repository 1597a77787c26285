/* admin.c: the admin API on the admin listener (HTTPS, loopback by default).
 *
 * Every call needs "Authorization: Bearer <admin token>", checked in constant
 * time against the SHA-256 of DIR/admin.token -- GET /metrics too (Prometheus
 * sends it with `authorization: {credentials_file: .../admin.token}`) -- or,
 * without an Authorization header, the dashboard's session cookie with its
 * CSRF rules (gateway/dash/dash.h, which also serves the dashboard's pages
 * and /admin/v1/session here).
 * Answers are JSON (the metrics page is Prometheus text); errors use the
 * OpenAI error shape. Secrets are returned once (a new enrollment token or
 * API key) and never logged or listed.
 *
 *   GET  /admin/v1/status
 *   GET  /admin/v1/tokens              POST /admin/v1/tokens
 *   GET  /admin/v1/runners             POST /admin/v1/runners/NAME/revoke
 *   GET  /admin/v1/keys                POST /admin/v1/keys
 *   GET  /admin/v1/keys/ID             PATCH /admin/v1/keys/ID
 *   POST /admin/v1/keys/ID/revoke
 *   GET  /admin/v1/hooks               POST /admin/v1/hooks
 *   DELETE /admin/v1/hooks/ID          POST /admin/v1/hooks/ID/rotate-secret
 *   GET  /admin/v1/hooks/ID/deliveries (dash/traffic.h)
 *   GET  /admin/v1/usage[?key=ID&by=hour|total]
 *   GET  /admin/v1/overview            GET /admin/v1/traffic[/stream|/ID] (dash/traffic.h)
 *   GET  /metrics */
#include "gateway/gateway.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "fy_version.h"
#include "gateway/dash/dash.h"
#include "gateway/datadir.h"
#include "gateway/keys.h"
#include "gateway/metrics.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ADM_LOG "admin"
/* The store's ceiling for a limit: far above any real one, keeps rate math in range. */
#define ADM_LIMIT_MAX ((json_int_t)1 << 40)

static void respond_json(fy_http_req *req, int status, json_t *o)
{
    fy_gw_respond_json(req, status, o);
}

/* --- writes through the shared state (--shared) ----------------------------------------
 *
 * With --shared a write goes to Redis first (gateway/shared.h) and is
 * answered when Redis acknowledged it; CALL carries the request meanwhile. */

typedef struct {
    fy_gw *gw;
    fy_http_req *req;
    fy_store_key key;
    fy_store_runner runner;
    char secret[FY_SECRET_MAX]; /* a new key or token, shown once */
    json_t *root;               /* the request's body (updates) */
    int64_t now;
    fy_store_hook hook;                           /* a hook written or rotated */
    uint8_t new_secret[FY_STORE_HOOK_SECRET_MAX]; /* rotate: the new secret */
    size_t new_len;
    int64_t grace;
    char hook_id[FY_STORE_HOOK_ID_MAX];
} adm_call;

static adm_call *call_new(fy_gw *gw, fy_http_req *req)
{
    adm_call *c = calloc(1, sizeof *c);
    if (!c) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return NULL;
    }
    c->gw = gw;
    c->req = req;
    c->now = (int64_t)time(NULL);
    return c;
}

static void call_free(adm_call *c)
{
    json_decref(c->root);
    fy_secure_zero(c, sizeof *c);
    free(c);
}

/* Answers a write the shared state could not take (RC). */
static void shared_refused(fy_http_req *req, int rc)
{
    if (rc == FY_EUNREACH || rc == FY_ECONNRESET || rc == FY_ECANCELED) {
        fy_http_respond_error(req, 503, "shared_state_unavailable",
                              "the gateway cannot reach its shared state (Redis): writes are "
                              "refused until it is back; nothing was changed");
        return;
    }
    fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
}

/* Starts a shared write: RC is what the shared call returned; on failure
 * answers and frees C. */
static void call_started(adm_call *c, int rc)
{
    if (rc) {
        shared_refused(c->req, rc);
        call_free(c);
    }
}

static int bearer_ok(const char *h, const uint8_t *admin_hash)
{
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        return 0;
    }
    const char *t = h + 7;
    while (*t == ' ') {
        t++;
    }
    size_t n = strlen(t);
    while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) {
        n--;
    }
    return fy_secret_matches(t, n, admin_hash);
}

/* 1 when REQ may call the admin API: the Bearer admin token, or (no
 * Authorization header) a dashboard session. Otherwise REQ is answered. */
static int authorized(fy_gw *gw, fy_http_req *req)
{
    const char *h = fy_http_req_header(req, "authorization");
    fy_dash_auth a = h ? FY_DASH_AUTH_NONE : fy_dash_authorize(gw->dash, req);
    if (a == FY_DASH_AUTH_ANSWERED) {
        return 0;
    }
    if (a == FY_DASH_AUTH_OK || (h && bearer_ok(h, gw->trust.admin_hash))) {
        return 1;
    }
    char body[256];
    size_t n = fy_http_error_json(body, sizeof body, 401, "unauthorized", NULL,
                                  "admin token required (Authorization: Bearer ...)");
    fy_http_header hd[] = {{"Content-Type", "application/json", 0, 0},
                           {"WWW-Authenticate", "Bearer", 0, 0}};
    fy_http_respond(req, 401, hd, 2, body, n);
    return 0;
}

/* --- status ------------------------------------------------------------------- */

static void admin_status(fy_gw *gw, fy_http_req *req)
{
    respond_json(req, 200,
                 json_pack("{s:s,s:{s:s,s:s,s:s},s:s,s:I,s:I,s:I,s:I,s:b}", "version", FY_VERSION,
                           "listeners", "public", gw->net.addr[GW_L_PUBLIC], "tunnel",
                           gw->net.addr[GW_L_TUNNEL], "admin", gw->net.addr[GW_L_ADMIN],
                           "public_scheme", gw->opt.public_plain ? "http" : "https",
                           "runners_connected", (json_int_t)fy_gw_tunnel_connected(gw),
                           "requests_in_flight", (json_int_t)gw->n_px.n, "requests_waiting",
                           (json_int_t)gw->v1.n_waiting, "requests_total",
                           (json_int_t)gw->n_proxied, "draining", gw->draining));
}

/* What the dashboard's overview shows: the registry and the request totals
 * since start (every public request that ended, answered here or proxied). */
static void admin_overview(fy_gw *gw, fy_http_req *req)
{
    const fy_traffic_totals *t = fy_dash_totals(gw->dash);
    json_t *models = json_array(), *errs = json_object();
    for (gw_model *m = gw->tun.models; m; m = m->next) {
        if (m->n_conns) {
            json_array_append_new(models, json_string(m->name));
        }
    }
    for (int i = 0; i < 200; i++) {
        if (t->by_status[i]) {
            char code[8];
            snprintf(code, sizeof code, "%d", 400 + i);
            json_object_set_new(errs, code, json_integer((json_int_t)t->by_status[i]));
        }
    }
    respond_json(
        req, 200,
        json_pack("{s:I,s:o,s:I,s:{s:I,s:I},s:I,s:I,s:o,s:I}", "runners_connected",
                  (json_int_t)fy_gw_tunnel_connected(gw), "models", models, "requests_total",
                  (json_int_t)t->requests, "tokens_total", "prompt", (json_int_t)t->prompt_tokens,
                  "completion", (json_int_t)t->completion_tokens, "requests_waiting",
                  (json_int_t)gw->v1.n_waiting, "requests_in_flight", (json_int_t)gw->n_px.n,
                  "errors_by_status", errs, "uptime_s", (json_int_t)(time(NULL) - gw->started)));
}

/* --- tokens --------------------------------------------------------------------- */

static json_t *time_or_null(int64_t t)
{
    return t ? json_integer((json_int_t)t) : json_null();
}

static void token_row(const fy_store_token *t, void *arg)
{
    json_array_append_new(arg, json_pack("{s:s,s:s,s:I,s:I,s:o}", "id", t->id, "runner",
                                         t->runner_name, "created_at", (json_int_t)t->created_at,
                                         "expires_at", (json_int_t)t->expires_at, "used_at",
                                         time_or_null(t->used_at)));
}

static void tokens_listed(void *data, int err, const fy_store_token *t, size_t n)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            token_row(&t[i], a);
        }
        respond_json(c->req, 200, json_pack("{s:o}", "tokens", a));
    }
    call_free(c);
}

static void tokens_list(fy_gw *gw, fy_http_req *req)
{
    if (gw->shared) {
        adm_call *c = call_new(gw, req);
        if (c) {
            call_started(c, fy_shared_token_list(gw->shared, tokens_listed, c));
        }
        return;
    }
    json_t *a = json_array();
    int rc = fy_store_token_list(gw->store, token_row, a);
    if (rc) {
        json_decref(a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    respond_json(req, 200, json_pack("{s:o}", "tokens", a));
}

static void token_created(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else {
        fy_log_event(FY_LOG_INFO, ADM_LOG, "enrollment token created",
                     json_pack("{s:s,s:s,s:s}", "id", c->key.id, "runner", c->runner.name, "shared",
                               "redis"));
        respond_json(c->req, 201,
                     json_pack("{s:s,s:s,s:s,s:I}", "id", c->key.id, "token", c->secret, "runner",
                               c->runner.name, "expires_at", (json_int_t)c->key.expires_at));
    }
    call_free(c);
}

static void tokens_create_shared(fy_gw *gw, fy_http_req *req, const char *id,
                                 const uint8_t hash[32], const char *name, int64_t now,
                                 long long ttl, const char *token)
{
    adm_call *c = call_new(gw, req);
    if (!c) {
        return;
    }
    fy_store_token t = {.created_at = now, .expires_at = now + ttl};
    snprintf(t.id, sizeof t.id, "%s", id);
    snprintf(t.runner_name, sizeof t.runner_name, "%s", name);
    snprintf(c->key.id, sizeof c->key.id, "%s", id);
    snprintf(c->runner.name, sizeof c->runner.name, "%s", name);
    snprintf(c->secret, sizeof c->secret, "%s", token);
    c->key.expires_at = now + ttl;
    call_started(c, fy_shared_token_add(gw->shared, &t, hash, token_created, c));
}

static void tokens_create(fy_gw *gw, fy_http_req *req)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    const char *name = root ? json_string_value(json_object_get(root, "runner")) : NULL;
    json_t *jttl = root ? json_object_get(root, "ttl") : NULL;
    long long ttl = FY_GW_TOKEN_DEFAULT_TTL_S;
    char token[FY_SECRET_MAX], id[24], msg[160];
    if (!name || !fy_store_valid_name(name)) {
        fy_http_respond_error(req, 400, "invalid_request",
                              "\"runner\" must be a runner name: 1..63 of [a-z0-9-], starting "
                              "with a letter or digit");
        goto out;
    }
    if (json_is_string(jttl)) {
        ttl = fy_gw_parse_ttl(json_string_value(jttl));
    } else if (json_is_integer(jttl)) {
        ttl = json_integer_value(jttl);
        ttl = ttl >= 1 && ttl <= FY_GW_TOKEN_MAX_TTL_S ? ttl : -1;
    } else if (jttl && !json_is_null(jttl)) {
        ttl = -1;
    }
    if (ttl < 0) {
        snprintf(msg, sizeof msg, "\"ttl\" must be a duration from 1s to 30d (\"1h\", \"90s\")");
        fy_http_respond_error(req, 400, "invalid_request", msg);
        goto out;
    }
    uint8_t rnd[8], hash[32];
    if (fy_random_bytes(rnd, sizeof rnd) ||
        fy_secret_new(FY_GW_ENROLL_TOKEN_PREFIX, token, sizeof token)) {
        fy_http_respond_error(req, 500, "internal_error", "random generator failed");
        goto out;
    }
    memcpy(id, "tok_", 4);
    fy_hex_encode(rnd, sizeof rnd, id + 4, sizeof id - 4);
    fy_secret_hash(token, strlen(token), hash);
    int64_t now = (int64_t)time(NULL);
    if (gw->shared) {
        tokens_create_shared(gw, req, id, hash, name, now, ttl, token);
        goto out;
    }
    int rc = fy_store_token_add(gw->store, id, hash, name, now, now + ttl);
    if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        goto out;
    }
    fy_log_event(FY_LOG_INFO, ADM_LOG, "enrollment token created",
                 json_pack("{s:s,s:s,s:I}", "id", id, "runner", name, "ttl_s", (json_int_t)ttl));
    respond_json(req, 201,
                 json_pack("{s:s,s:s,s:s,s:I}", "id", id, "token", token, "runner", name,
                           "expires_at", (json_int_t)(now + ttl)));
out:
    fy_secure_zero(token, sizeof token);
    json_decref(root);
}

/* --- runners ---------------------------------------------------------------------- */

typedef struct {
    fy_gw *gw;
    json_t *a;
    json_t *info; /* --shared: every replica's announcement, or NULL */
} runner_ctx;

/* --shared: the replicas runner NAME is connected to, from their heartbeats. */
static json_t *runner_replicas(const runner_ctx *x, const char *name)
{
    json_t *a = json_array();
    const char *id;
    json_t *rep;
    json_object_foreach(x->info, id, rep)
    {
        json_t *n = json_object_get(json_object_get(rep, "runners"), name);
        if (json_integer_value(n) > 0) {
            json_array_append_new(
                a, json_pack("{s:s,s:O?,s:O?,s:O,s:b}", "replica", id, "public",
                             json_object_get(rep, "public"), "tunnel",
                             json_object_get(rep, "tunnel"), "connections", n, "this",
                             strcmp(id, fy_shared_replica_id(x->gw->shared)) == 0));
        }
    }
    return a;
}

static void runner_row(const fy_store_runner *sr, void *arg)
{
    runner_ctx *x = arg;
    gw_runner *r = fy_gw_runner_find(x->gw, sr->name);
    json_t *conns = json_array();
    size_t in_flight = 0;
    for (gw_conn *c = r ? r->conns : NULL; c; c = c->rnext) {
        in_flight += c->n_px;
        json_t *models = json_array();
        for (size_t i = 0; i < c->n_models; i++) {
            json_array_append_new(models, json_string(c->models[i]));
        }
        json_array_append_new(conns, json_pack("{s:I,s:s,s:I,s:I,s:f,s:o}", "id", (json_int_t)c->id,
                                               "peer", c->peer, "since", (json_int_t)c->since,
                                               "streams", (json_int_t)c->n_px, "rtt_ms",
                                               (double)c->rtt_us / 1000.0, "models", models));
    }
    json_t *row = json_pack("{s:s,s:s,s:I,s:o,s:b,s:o,s:I}", "name", sr->name, "fingerprint",
                            sr->fingerprint, "enrolled_at", (json_int_t)sr->enrolled_at,
                            "revoked_at", time_or_null(sr->revoked_at), "connected", r != NULL,
                            "connections", conns, "in_flight", (json_int_t)in_flight);
    if (x->info) {
        json_t *reps = runner_replicas(x, sr->name);
        json_object_set_new(row, "connected", json_boolean(r || json_array_size(reps)));
        json_object_set_new(row, "replicas", reps);
    }
    json_array_append_new(x->a, row);
}

static void runners_answer(fy_gw *gw, fy_http_req *req, json_t *info)
{
    runner_ctx x = {gw, json_array(), info};
    int rc = fy_store_runner_list(gw->store, runner_row, &x);
    if (rc) {
        json_decref(x.a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    json_t *o = json_pack("{s:o}", "runners", x.a);
    if (gw->shared) {
        /* Whether "replicas" covers every replica, or only this one's view. */
        json_object_set_new(o, "shared", json_boolean(info != NULL));
    }
    respond_json(req, 200, o);
}

static void runners_info(void *data, int err, json_t *info)
{
    adm_call *c = data;
    runners_answer(c->gw, c->req, err ? NULL : info);
    call_free(c);
}

static void runners_list(fy_gw *gw, fy_http_req *req)
{
    adm_call *c = gw->shared ? call_new(gw, req) : NULL;
    if (gw->shared && !c) {
        return;
    }
    if (c && fy_shared_replicas_info(gw->shared, runners_info, c) == 0) {
        return;
    }
    if (c) {
        call_free(c); /* Redis is down: this replica's own view */
    }
    runners_answer(gw, req, NULL);
}

static void runner_revoked(fy_gw *gw, fy_http_req *req, const char *name, int64_t now)
{
    int dropped = fy_gw_tunnel_drop_runner(gw, name, FYP_ERR_REJECTED, "runner revoked");
    fy_log_event(FY_LOG_WARN, ADM_LOG, "runner revoked",
                 json_pack("{s:s,s:i}", "runner", name, "connections_dropped", dropped));
    respond_json(req, 200,
                 json_pack("{s:s,s:I,s:i}", "name", name, "revoked_at", (json_int_t)now,
                           "connections_dropped", dropped));
}

static void runner_revoked_shared(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else {
        runner_revoked(c->gw, c->req, c->runner.name, c->runner.revoked_at);
    }
    call_free(c);
}

static void runner_not_found(fy_http_req *req, const char *name)
{
    char msg[160];
    snprintf(msg, sizeof msg, "no enrolled runner named '%.64s'", name);
    fy_http_respond_error(req, 404, "runner_not_found", msg);
}

static void runner_revoke(fy_gw *gw, fy_http_req *req, const char *name)
{
    int64_t now = (int64_t)time(NULL);
    if (gw->shared) {
        adm_call *c = call_new(gw, req);
        if (!c) {
            return;
        }
        if (!fy_store_valid_name(name) || fy_store_runner_get(gw->store, name, &c->runner)) {
            runner_not_found(req, name);
            call_free(c);
            return;
        }
        if (!c->runner.revoked_at) {
            c->runner.revoked_at = now;
        }
        call_started(c, fy_shared_runner_put(gw->shared, &c->runner, runner_revoked_shared, c));
        return;
    }
    int rc = fy_store_valid_name(name) ? fy_store_runner_revoke(gw->store, name, now) : FY_ENOENT;
    if (rc == FY_ENOENT) {
        runner_not_found(req, name);
        return;
    }
    if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    runner_revoked(gw, req, name, now);
}

/* --- API keys ------------------------------------------------------------------------ */

static json_t *usage_json(const fy_store_usage *u)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I}", "requests", (json_int_t)u->requests, "prompt_tokens",
                     (json_int_t)u->prompt_tokens, "completion_tokens",
                     (json_int_t)u->completion_tokens, "bytes_in", (json_int_t)u->bytes_in,
                     "bytes_out", (json_int_t)u->bytes_out);
}

/* A key as the API shows it: never the key itself nor its hash. "burst" is
 * the burst in force (null without rpm); "burst_default" says it follows rpm
 * (ceil(rpm/6)) rather than being the key's own setting. */
static json_t *key_json(const fy_store_key *k)
{
    int64_t burst = fy_rl_burst(k->rpm, k->burst);
    return json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:o,s:b,s:o,s:o,s:o,s:I,s:o,s:o,s:o}", "id",
                     k->id, "name", k->name, "owner", k->owner, "prefix", k->prefix, "rpm",
                     (json_int_t)k->rpm, "tpm", (json_int_t)k->tpm, "concurrency",
                     (json_int_t)k->concurrency, "burst", burst ? json_integer(burst) : json_null(),
                     "burst_default", k->burst == 0, "models", fy_gw_scope_json(k->models),
                     "runners", fy_gw_scope_json(k->runners), "hooks", fy_gw_scope_json(k->hooks),
                     "created_at", (json_int_t)k->created_at, "expires_at",
                     time_or_null(k->expires_at), "revoked_at", time_or_null(k->revoked_at),
                     "last_used_at", time_or_null(k->last_used_at));
}

/* A scope list from JSON: an array of names or one comma-separated string
 * (null: any). Names of runners must be runner names. */
static const char *scope_from_json(json_t *v, char out[FY_STORE_SCOPE_MAX], int runners)
{
    fy_buf b;
    const char *bad = NULL;
    fy_buf_init(&b, FY_STORE_SCOPE_MAX - 1);
    if (json_is_string(v)) {
        if (fy_buf_append_str(&b, json_string_value(v))) {
            bad = "is too long";
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (!json_is_string(x)) {
                bad = "must hold only strings";
                break;
            }
            if ((i && fy_buf_append(&b, ",", 1)) || fy_buf_append_str(&b, json_string_value(x))) {
                bad = "is too long";
                break;
            }
        }
    } else if (!json_is_null(v)) {
        bad = "must be an array of names or a comma-separated string";
    }
    if (!bad) {
        snprintf(out, FY_STORE_SCOPE_MAX, "%.*s", (int)b.len, b.data ? b.data : "");
        if (!fy_store_scope_valid(out)) {
            bad = "must be names of 1..128 printable characters without spaces or commas";
        }
    }
    for (const char *p = out; !bad && runners && *p;) {
        size_t n = strcspn(p, ",");
        char nm[FY_STORE_NAME_MAX];
        if (n >= sizeof nm) {
            bad = "must be runner names (1..63 of [a-z0-9-])";
            break;
        }
        memcpy(nm, p, n);
        nm[n] = 0;
        if (!fy_store_valid_name(nm)) {
            bad = "must be runner names (1..63 of [a-z0-9-])";
        }
        p += n + (p[n] == ',');
    }
    fy_buf_free(&b);
    return bad;
}

/* Applies the fields of ROOT (a create or update body) to K at NOW. Returns
 * 0, or 400 with the message in MSG. */
static int key_from_json(json_t *root, fy_store_key *k, int create, int64_t now, char *msg,
                         size_t msglen)
{
    static const char *const fields[] = {"name",        "owner",   "rpm",    "tpm",
                                         "concurrency", "burst",   "models", "runners",
                                         "hooks",       "expires", NULL};
    const char *key;
    json_t *v;
    if (!json_is_object(root)) {
        snprintf(msg, msglen, "the body must be a JSON object");
        return 400;
    }
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (fields[i] && strcmp(fields[i], key) != 0) {
            i++;
        }
        if (!fields[i]) {
            snprintf(msg, msglen,
                     "unknown field \"%.64s\" (fields: name, owner, rpm, tpm, "
                     "concurrency, burst, models, runners, hooks, expires)",
                     key);
            return 400;
        }
    }
    if (create && !json_is_string(json_object_get(root, "name"))) {
        snprintf(msg, msglen, "\"name\" is required");
        return 400;
    }
    if ((v = json_object_get(root, "name"))) {
        const char *n = json_string_value(v);
        size_t len = n ? strlen(n) : 0;
        int ok = n && len >= 1 && len < sizeof k->name;
        for (size_t i = 0; ok && i < len; i++) {
            ok = (unsigned char)n[i] >= 0x20 && n[i] != 0x7f;
        }
        if (!ok) {
            snprintf(msg, msglen, "\"name\" must be 1..127 bytes of text");
            return 400;
        }
        snprintf(k->name, sizeof k->name, "%s", n);
    }
    if ((v = json_object_get(root, "owner"))) {
        const char *n = json_is_null(v) ? "" : json_string_value(v);
        size_t len = n ? strlen(n) : 0;
        int ok = n && len < sizeof k->owner;
        for (size_t i = 0; ok && i < len; i++) {
            ok = (unsigned char)n[i] >= 0x20 && n[i] != 0x7f;
        }
        if (!ok) {
            snprintf(msg, msglen, "\"owner\" must be 0..127 bytes of text");
            return 400;
        }
        snprintf(k->owner, sizeof k->owner, "%s", n);
    }
    struct {
        const char *name, *zero;
        int64_t *dst;
    } limits[] = {{"rpm", "no limit", &k->rpm},
                  {"tpm", "no limit", &k->tpm},
                  {"concurrency", "no limit", &k->concurrency},
                  {"burst", "the default, ceil(rpm/6)", &k->burst}};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        if (!(v = json_object_get(root, limits[i].name))) {
            continue;
        }
        json_int_t x = json_is_null(v) ? 0 : json_is_integer(v) ? json_integer_value(v) : -1;
        if (x < 0 || x > ADM_LIMIT_MAX) {
            snprintf(msg, msglen, "\"%s\" must be a whole number from 0 (%s) to %lld",
                     limits[i].name, limits[i].zero, (long long)ADM_LIMIT_MAX);
            return 400;
        }
        *limits[i].dst = x;
    }
    /* Turning rpm off leaves nothing for a burst to shape: it goes back to
     * the default with it (unless this very body sets one, refused below). */
    if (k->rpm == 0 && !json_object_get(root, "burst")) {
        k->burst = 0;
    }
    /* The burst is checked against the rpm in force after this body: an rpm
     * cut below the key's own burst needs a new burst with it. */
    if (fy_rl_check_burst(k->rpm, k->burst, msg, msglen)) {
        return 400;
    }
    struct {
        const char *name;
        char *dst;
    } scopes[] = {{"models", k->models}, {"runners", k->runners}, {"hooks", k->hooks}};
    for (size_t i = 0; i < 3; i++) {
        if (!(v = json_object_get(root, scopes[i].name))) {
            continue;
        }
        char tmp[FY_STORE_SCOPE_MAX] = "";
        const char *bad = scope_from_json(v, tmp, i == 1);
        if (bad) {
            snprintf(msg, msglen, "\"%s\" %s", scopes[i].name, bad);
            return 400;
        }
        memcpy(scopes[i].dst, tmp, sizeof tmp);
    }
    if ((v = json_object_get(root, "expires"))) {
        const char *t = json_string_value(v);
        long long ttl = json_is_integer(v)             ? (long long)json_integer_value(v)
                        : t && strcmp(t, "never") == 0 ? 0
                        : t                            ? fy_gw_parse_key_ttl(t)
                        : json_is_null(v)              ? 0
                                                       : -1;
        if (ttl < 0 || ttl > FY_GW_KEY_MAX_TTL_S || (json_is_integer(v) && ttl == 0)) {
            snprintf(msg, msglen,
                     "\"expires\" must be a lifetime from now (\"30d\", \"12h\", "
                     "\"90s\"; at most 100 years) or \"never\"");
            return 400;
        }
        k->expires_at = ttl ? now + ttl : 0;
    }
    return 0;
}

static void key_created(fy_http_req *req, const fy_store_key *k, const char *secret)
{
    fy_log_event(FY_LOG_INFO, ADM_LOG, "API key created",
                 json_pack("{s:s,s:s,s:s}", "id", k->id, "name", k->name, "prefix", k->prefix));
    json_t *o = key_json(k);
    json_object_set_new(o, "key", json_string(secret));
    respond_json(req, 201, o); /* wipes its text */
}

static void key_created_shared(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else {
        key_created(c->req, &c->key, c->secret);
    }
    call_free(c);
}

static void keys_create_shared(fy_gw *gw, fy_http_req *req, const fy_store_key *t, int64_t now)
{
    adm_call *c = call_new(gw, req);
    if (!c) {
        return;
    }
    int rc = fy_keys_mint(t, now, c->secret, &c->key);
    if (rc) {
        fy_http_respond_error(req, rc == FY_EINVAL ? 400 : 500,
                              rc == FY_EINVAL ? "invalid_request" : "internal_error",
                              fy_strerror(rc));
        call_free(c);
        return;
    }
    call_started(c, fy_shared_key_put(gw->shared, &c->key, key_created_shared, c));
}

static void keys_create(fy_gw *gw, fy_http_req *req)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    fy_store_key *t = calloc(1, sizeof *t);
    char secret[FY_SECRET_MAX] = "", msg[256];
    int64_t now = (int64_t)time(NULL);
    if (!t) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        goto out;
    }
    if (key_from_json(root, t, 1, now, msg, sizeof msg)) {
        fy_http_respond_error(req, 400, "invalid_request", msg);
        goto out;
    }
    if (gw->shared) {
        keys_create_shared(gw, req, t, now);
        goto out;
    }
    int rc = fy_keys_create(gw->keys, t, now, secret, t);
    if (rc) {
        fy_http_respond_error(req, rc == FY_EINVAL ? 400 : 500,
                              rc == FY_EINVAL ? "invalid_request" : "store_error", fy_strerror(rc));
        goto out;
    }
    key_created(req, t, secret);
out:
    fy_secure_zero(secret, sizeof secret);
    free(t);
    json_decref(root);
}

typedef struct {
    json_t *usage; /* key id -> usage totals */
    json_t *a;
} key_list_ctx;

static void usage_total_row(const fy_store_usage_row *row, void *arg)
{
    json_object_set_new(arg, row->key_id, usage_json(&row->u));
}

static void key_row(const fy_store_key *k, void *arg)
{
    key_list_ctx *x = arg;
    json_t *o = key_json(k);
    json_t *u = json_object_get(x->usage, k->id);
    static const fy_store_usage zero;
    json_object_set_new(o, "usage", u ? json_incref(u) : usage_json(&zero));
    json_array_append_new(x->a, o);
}

static void keys_list_rows(fy_gw *gw, fy_http_req *req, key_list_ctx *x)
{
    int rc = fy_store_key_list(gw->store, key_row, x);
    json_decref(x->usage);
    if (rc) {
        json_decref(x->a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    respond_json(req, 200, json_pack("{s:o}", "keys", x->a));
}

static void keys_list_usage(void *data, int err, const fy_store_usage_row *rows, size_t n)
{
    adm_call *c = data;
    key_list_ctx x = {json_object(), json_array()};
    if (err) {
        json_decref(x.usage);
        json_decref(x.a);
        shared_refused(c->req, err);
    } else {
        for (size_t i = 0; i < n; i++) {
            usage_total_row(&rows[i], x.usage);
        }
        keys_list_rows(c->gw, c->req, &x);
    }
    call_free(c);
}

static void keys_list(fy_gw *gw, fy_http_req *req)
{
    if (gw->shared) {
        adm_call *c = call_new(gw, req);
        if (c) {
            call_started(
                c, fy_shared_usage_list(gw->shared, NULL, 0, INT64_MAX, 0, keys_list_usage, c));
        }
        return;
    }
    key_list_ctx x = {json_object(), json_array()};
    /* Usage first: it flushes, so last_used_at is current too. */
    int rc = fy_store_usage_list(gw->store, NULL, 0, INT64_MAX, 0, usage_total_row, x.usage);
    if (rc) {
        json_decref(x.usage);
        json_decref(x.a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    keys_list_rows(gw, req, &x);
}

static int valid_key_id(const char *id)
{
    size_t n = strlen(id);
    if (n < 5 || n >= FY_STORE_KEY_ID_MAX || strncmp(id, "key_", 4) != 0) {
        return 0;
    }
    for (size_t i = 4; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

static void key_not_found(fy_http_req *req, const char *id)
{
    char msg[160];
    snprintf(msg, sizeof msg, "no API key with id '%.40s'", id);
    fy_http_respond_error(req, 404, "key_not_found", msg);
}

static void key_get(fy_gw *gw, fy_http_req *req, const char *id)
{
    fy_store_key *k = calloc(1, sizeof *k);
    int rc = !k ? FY_ENOMEM : valid_key_id(id) ? fy_store_key_get(gw->store, id, k) : FY_ENOENT;
    if (rc == FY_ENOENT) {
        key_not_found(req, id);
    } else if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
    } else {
        respond_json(req, 200, key_json(k));
    }
    free(k);
}

/* --shared: updates and revocations start from the record in Redis (this
 * replica's cache may lag a write made elsewhere by milliseconds). */
static void key_put_answered(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else if (c->key.revoked_at && !c->root) {
        fy_log_event(FY_LOG_WARN, ADM_LOG, "API key revoked", json_pack("{s:s}", "id", c->key.id));
        respond_json(c->req, 200,
                     json_pack("{s:s,s:s,s:I}", "id", c->key.id, "name", c->key.name, "revoked_at",
                               (json_int_t)c->key.revoked_at));
    } else {
        fy_log_event(FY_LOG_INFO, ADM_LOG, "API key updated", json_pack("{s:s}", "id", c->key.id));
        respond_json(c->req, 200, key_json(&c->key));
    }
    call_free(c);
}

static void key_fetched(void *data, int err)
{
    adm_call *c = data;
    char msg[256];
    if (err == FY_ENOENT) {
        key_not_found(c->req, c->key.id[0] ? c->key.id : "");
    } else if (err) {
        shared_refused(c->req, err);
    } else if (c->root && key_from_json(c->root, &c->key, 0, c->now, msg, sizeof msg)) {
        fy_http_respond_error(c->req, 400, "invalid_request", msg);
    } else {
        if (!c->root && !c->key.revoked_at) {
            c->key.revoked_at = c->now;
        }
        int rc = fy_shared_key_put(c->gw->shared, &c->key, key_put_answered, c);
        if (!rc) {
            return;
        }
        shared_refused(c->req, rc);
    }
    call_free(c);
}

/* Reads key ID from Redis, then applies the body ROOT (NULL: revokes). */
static void key_change_shared(fy_gw *gw, fy_http_req *req, const char *id, json_t *root)
{
    adm_call *c = call_new(gw, req);
    if (!c) {
        json_decref(root);
        return;
    }
    c->root = root;
    if (!valid_key_id(id)) {
        key_not_found(req, id);
        call_free(c);
        return;
    }
    snprintf(c->key.id, sizeof c->key.id, "%s", id);
    call_started(c, fy_shared_key_get(gw->shared, id, &c->key, key_fetched, c));
}

static void key_update(fy_gw *gw, fy_http_req *req, const char *id)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    if (gw->shared) {
        if (!root) {
            root = json_null(); /* key_from_json explains what the body must be */
        }
        key_change_shared(gw, req, id, root);
        return;
    }
    fy_store_key *k = calloc(1, sizeof *k);
    char msg[256];
    int rc = !k ? FY_ENOMEM : valid_key_id(id) ? fy_store_key_get(gw->store, id, k) : FY_ENOENT;
    if (rc == FY_ENOENT) {
        key_not_found(req, id);
        goto out;
    }
    if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        goto out;
    }
    if (key_from_json(root, k, 0, (int64_t)time(NULL), msg, sizeof msg)) {
        fy_http_respond_error(req, 400, "invalid_request", msg);
        goto out;
    }
    rc = fy_keys_update(gw->keys, k);
    if (rc == FY_ENOENT) {
        key_not_found(req, id);
        goto out;
    }
    if (rc) {
        fy_http_respond_error(req, rc == FY_EINVAL ? 400 : 500,
                              rc == FY_EINVAL ? "invalid_request" : "store_error", fy_strerror(rc));
        goto out;
    }
    fy_log_event(FY_LOG_INFO, ADM_LOG, "API key updated", json_pack("{s:s}", "id", k->id));
    respond_json(req, 200, key_json(k));
out:
    free(k);
    json_decref(root);
}

static void key_revoke(fy_gw *gw, fy_http_req *req, const char *id)
{
    if (gw->shared) {
        key_change_shared(gw, req, id, NULL);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    int rc = valid_key_id(id) ? fy_keys_revoke(gw->keys, id, now) : FY_ENOENT;
    if (rc == FY_ENOENT) {
        key_not_found(req, id);
        return;
    }
    fy_store_key *k = rc ? NULL : calloc(1, sizeof *k);
    if (!rc) {
        rc = k ? fy_store_key_get(gw->store, id, k) : FY_ENOMEM;
    }
    if (rc) {
        free(k);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    fy_log_event(FY_LOG_WARN, ADM_LOG, "API key revoked", json_pack("{s:s}", "id", id));
    respond_json(req, 200,
                 json_pack("{s:s,s:s,s:I}", "id", k->id, "name", k->name, "revoked_at",
                           (json_int_t)k->revoked_at));
    free(k);
}

/* --- usage ---------------------------------------------------------------------------- */

typedef struct {
    json_t *names; /* key id -> name */
    json_t *a;
    int per_hour;
} usage_ctx;

static void usage_name_row(const fy_store_key *k, void *arg)
{
    json_object_set_new(arg, k->id, json_string(k->name));
}

static void usage_row(const fy_store_usage_row *row, void *arg)
{
    usage_ctx *x = arg;
    json_t *o = usage_json(&row->u);
    json_t *name = json_object_get(x->names, row->key_id);
    json_object_set_new(o, "key_id", json_string(row->key_id));
    json_object_set_new(o, "name", name ? json_incref(name) : json_null());
    if (x->per_hour) {
        json_object_set_new(o, "hour", json_integer((json_int_t)row->hour));
    }
    json_array_append_new(x->a, o);
}

typedef struct {
    adm_call *c;
    usage_ctx x;
} usage_call;

static void usage_shared_rows(void *data, int err, const fy_store_usage_row *rows, size_t n)
{
    usage_call *u = data;
    if (err) {
        json_decref(u->x.a);
        shared_refused(u->c->req, err);
    } else {
        for (size_t i = 0; i < n; i++) {
            usage_row(&rows[i], &u->x);
        }
        respond_json(
            u->c->req, 200,
            json_pack("{s:s,s:o}", "by", u->x.per_hour ? "hour" : "total", "usage", u->x.a));
    }
    json_decref(u->x.names);
    call_free(u->c);
    free(u);
}

/* --shared: every replica's usage, from Redis. Takes X's lists. */
static void usage_list_shared(fy_gw *gw, fy_http_req *req, const usage_ctx *x, const char *key)
{
    usage_call *u = malloc(sizeof *u);
    adm_call *c = u ? call_new(gw, req) : NULL;
    if (!c) {
        if (!u) {
            fy_http_respond_error(req, 500, "internal_error", "out of memory");
        }
        free(u);
        json_decref(x->names);
        json_decref(x->a);
        return;
    }
    *u = (usage_call){c, *x};
    int rc = fy_shared_usage_list(gw->shared, key, 0, INT64_MAX, x->per_hour, usage_shared_rows, u);
    if (rc) {
        json_decref(u->x.names);
        json_decref(u->x.a);
        free(u);
        call_started(c, rc);
    }
}

static void usage_list(fy_gw *gw, fy_http_req *req)
{
    char key[64], by[16];
    const char *q = fy_http_req_query(req);
    int has_key = fy_gw_query_get(q, "key", key, sizeof key);
    fy_gw_query_get(q, "by", by, sizeof by);
    if (by[0] && strcmp(by, "hour") != 0 && strcmp(by, "total") != 0) {
        fy_http_respond_error(req, 400, "invalid_request", "by must be hour or total");
        return;
    }
    if (has_key && !valid_key_id(key)) {
        key_not_found(req, key);
        return;
    }
    usage_ctx x = {json_object(), json_array(), strcmp(by, "hour") == 0};
    int rc = fy_store_key_list(gw->store, usage_name_row, x.names);
    if (!rc && has_key && !json_object_get(x.names, key)) {
        json_decref(x.names);
        json_decref(x.a);
        key_not_found(req, key);
        return;
    }
    if (!rc && gw->shared) {
        usage_list_shared(gw, req, &x, has_key ? key : NULL);
        return;
    }
    if (!rc) {
        rc = fy_store_usage_list(gw->store, has_key ? key : NULL, 0, INT64_MAX, x.per_hour,
                                 usage_row, &x);
    }
    json_decref(x.names);
    if (rc) {
        json_decref(x.a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    respond_json(req, 200,
                 json_pack("{s:s,s:o}", "by", x.per_hour ? "hour" : "total", "usage", x.a));
}

/* --- webhooks ------------------------------------------------------------------------- */

/* A hook as the API shows it: never its secrets. */
static json_t *hook_json(const fy_store_hook *h, int64_t now)
{
    char url[FY_STORE_HOOK_ID_MAX + 8];
    snprintf(url, sizeof url, "/hooks/%s", h->id);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:b}", "id",
                          h->id, "name", h->name, "url", url, "runner", h->runner, "path", h->path,
                          "verify", h->verify, "tolerance_s", (json_int_t)h->tolerance_s, "async",
                          h->async, "rpm", (json_int_t)h->rpm, "max_body", (json_int_t)h->max_body,
                          "created_at", (json_int_t)h->created_at, "delivered",
                          (json_int_t)h->delivered, "queued", (json_int_t)h->queued, "dead",
                          (json_int_t)h->dead, "previous_secret_active", h->prev_until > now);
    if (o && strcmp(h->verify, "hmac-sha256") == 0) {
        json_object_set_new(o, "header", json_string(h->header));
        json_object_set_new(o, "encoding", json_string(h->encoding));
        json_object_set_new(o, "timestamp_header",
                            h->ts_header[0] ? json_string(h->ts_header) : json_null());
    }
    if (o && h->prev_until > now) {
        json_object_set_new(o, "previous_secret_until", json_integer((json_int_t)h->prev_until));
    }
    return o;
}

/* The "secret" field into H (wiped by the caller). NULL or a message. */
static const char *secret_from_json(json_t *v, uint8_t *out, size_t *len)
{
    const char *s = json_string_value(v);
    size_t n = s ? json_string_length(v) : 0;
    if (!s || n == 0 || n > FY_STORE_HOOK_SECRET_MAX) {
        return "\"secret\" must be a string of 1..1024 bytes";
    }
    memcpy(out, s, n);
    *len = n;
    return NULL;
}

/* A duration field: seconds (integer) or text ("300s", "5m"). -1 when bad. */
static long long secs_from_json(json_t *v, long long def)
{
    if (!v || json_is_null(v)) {
        return def;
    }
    if (json_is_integer(v)) {
        return json_integer_value(v);
    }
    return json_is_string(v) ? fy_gw_parse_key_ttl(json_string_value(v)) : -1;
}

static int hook_from_json(json_t *root, fy_store_hook *h, char *msg, size_t msglen)
{
    static const char *const fields[] = {"name",     "runner",           "path",  "verify",
                                         "secret",   "tolerance",        "async", "header",
                                         "encoding", "timestamp_header", "rpm",   "max_body",
                                         NULL};
    const char *key;
    json_t *v;
    if (!json_is_object(root)) {
        snprintf(msg, msglen, "the body must be a JSON object");
        return 400;
    }
    json_object_foreach(root, key, v)
    {
        size_t i = 0;
        while (fields[i] && strcmp(fields[i], key) != 0) {
            i++;
        }
        if (!fields[i]) {
            snprintf(msg, msglen, "unknown field \"%.64s\"", key);
            return 400;
        }
    }
    struct {
        const char *name;
        char *dst;
        size_t cap;
        int required;
    } texts[] = {
        {"name", h->name, sizeof h->name, 1},
        {"runner", h->runner, sizeof h->runner, 1},
        {"path", h->path, sizeof h->path, 1},
        {"verify", h->verify, sizeof h->verify, 1},
        {"header", h->header, sizeof h->header, 0},
        {"encoding", h->encoding, sizeof h->encoding, 0},
        {"timestamp_header", h->ts_header, sizeof h->ts_header, 0},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        v = json_object_get(root, texts[i].name);
        const char *t = json_string_value(v);
        if ((!v || json_is_null(v)) && !texts[i].required) {
            continue;
        }
        if (!t || strlen(t) >= texts[i].cap) {
            snprintf(msg, msglen, "\"%s\" must be a string of at most %zu bytes", texts[i].name,
                     texts[i].cap - 1);
            return 400;
        }
        snprintf(texts[i].dst, texts[i].cap, "%s", t);
    }
    if (!fy_store_valid_name(h->runner)) {
        snprintf(msg, msglen, "\"runner\" must be a runner name (1..63 of [a-z0-9-])");
        return 400;
    }
    if (h->path[0] != '/') {
        snprintf(msg, msglen, "\"path\" must start with '/'");
        return 400;
    }
    int generic = strcmp(h->verify, "hmac-sha256") == 0;
    if (strcmp(h->verify, "github") && strcmp(h->verify, "stripe") && strcmp(h->verify, "slack") &&
        !generic && strcmp(h->verify, "none")) {
        snprintf(msg, msglen, "\"verify\" must be github, stripe, slack, hmac-sha256 or none");
        return 400;
    }
    if (generic && !h->header[0]) {
        snprintf(msg, msglen, "verify hmac-sha256 needs \"header\" (the signature header)");
        return 400;
    }
    if (!generic && (h->header[0] || h->encoding[0] || h->ts_header[0])) {
        snprintf(msg, msglen,
                 "\"header\", \"encoding\" and \"timestamp_header\" go with "
                 "verify hmac-sha256");
        return 400;
    }
    if (!h->encoding[0]) {
        snprintf(h->encoding, sizeof h->encoding, "hex");
    }
    v = json_object_get(root, "secret");
    if (strcmp(h->verify, "none") != 0 || v) {
        const char *bad = secret_from_json(v, h->secret, &h->secret_len);
        if (bad) {
            snprintf(msg, msglen, "%s", bad);
            return 400;
        }
    }
    long long tol = secs_from_json(json_object_get(root, "tolerance"), 300);
    if (tol < 1 || tol > 7 * 86400) {
        snprintf(msg, msglen, "\"tolerance\" must be a duration from 1s to 7d");
        return 400;
    }
    h->tolerance_s = tol;
    v = json_object_get(root, "async");
    if (v && !json_is_boolean(v)) {
        snprintf(msg, msglen, "\"async\" must be true or false");
        return 400;
    }
    h->async = json_is_true(v);
    v = json_object_get(root, "rpm");
    json_int_t rpm = !v || json_is_null(v) ? 0 : json_is_integer(v) ? json_integer_value(v) : -1;
    if (rpm < 0 || rpm > ADM_LIMIT_MAX) {
        snprintf(msg, msglen, "\"rpm\" must be a whole number from 0 (no limit)");
        return 400;
    }
    h->rpm = rpm;
    v = json_object_get(root, "max_body");
    json_int_t mb = !v || json_is_null(v) ? FY_GW_HOOK_DEFAULT_MAX_BODY
                    : json_is_integer(v)  ? json_integer_value(v)
                                          : -1;
    if (mb < 1 || mb > FY_GW_HOOK_MAX_MAX_BODY) {
        snprintf(msg, msglen, "\"max_body\" must be 1 byte to %d bytes", FY_GW_HOOK_MAX_MAX_BODY);
        return 400;
    }
    h->max_body = mb;
    return 0;
}

static void hook_created(fy_http_req *req, const fy_store_hook *h, int64_t now)
{
    fy_log_event(FY_LOG_INFO, ADM_LOG, "hook created",
                 json_pack("{s:s,s:s,s:s,s:s,s:b}", "id", h->id, "runner", h->runner, "path",
                           h->path, "verify", h->verify, "async", h->async));
    respond_json(req, 201, hook_json(h, now));
}

static void hook_created_shared(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        shared_refused(c->req, err);
    } else {
        hook_created(c->req, &c->hook, c->now);
    }
    call_free(c);
}

static void hooks_create(fy_gw *gw, fy_http_req *req)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    fy_store_hook *h = calloc(1, sizeof *h);
    char msg[256];
    int64_t now = (int64_t)time(NULL);
    uint8_t rnd[16];
    if (!h) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        goto out;
    }
    if (hook_from_json(root, h, msg, sizeof msg)) {
        fy_http_respond_error(req, 400, "invalid_request", msg);
        goto out;
    }
    if (fy_random_bytes(rnd, sizeof rnd)) {
        fy_http_respond_error(req, 500, "internal_error", "random generator failed");
        goto out;
    }
    memcpy(h->id, "hk_", 3);
    fy_b64url_encode(rnd, sizeof rnd, h->id + 3, sizeof h->id - 3);
    h->created_at = now;
    int rc = gw->shared && fy_store_hook_check(h) ? FY_EINVAL : 0;
    if (!rc && gw->shared) {
        adm_call *c = call_new(gw, req);
        if (c) {
            c->hook = *h;
            call_started(c, fy_shared_hook_put(gw->shared, &c->hook, hook_created_shared, c));
        }
        goto out;
    }
    if (!rc) {
        rc = fy_store_hook_create(gw->store, h);
    }
    if (rc) {
        fy_http_respond_error(req, rc == FY_EINVAL ? 400 : 500,
                              rc == FY_EINVAL ? "invalid_request" : "store_error",
                              rc == FY_EINVAL ? "invalid hook (name: 1..127 bytes of text; path: "
                                                "visible ASCII; header names: [A-Za-z0-9_-])"
                                              : fy_strerror(rc));
        goto out;
    }
    hook_created(req, h, now);
out:
    if (h) {
        fy_secure_zero(h, sizeof *h);
        free(h);
    }
    if (root) {
        json_t *sv = json_object_get(root, "secret");
        if (json_is_string(sv)) {
            fy_secure_zero((char *)json_string_value(sv), json_string_length(sv));
        }
    }
    json_decref(root);
    fy_secure_zero((char *)body.base, body.len);
}

typedef struct {
    json_t *a;
    int64_t now;
} hook_list_ctx;

static void hook_row(const fy_store_hook *h, void *arg)
{
    hook_list_ctx *x = arg;
    json_array_append_new(x->a, hook_json(h, x->now));
}

/* --shared: the queue counts of every async hook come from its Redis Stream. */
static void hooks_counted(void *data, int err, const int64_t *queued, const int64_t *dead)
{
    adm_call *c = data;
    size_t k = 0, i;
    json_t *h;
    if (err) {
        shared_refused(c->req, err);
        call_free(c);
        return;
    }
    json_array_foreach(json_object_get(c->root, "hooks"), i, h)
    {
        if (json_is_true(json_object_get(h, "async"))) {
            json_object_set_new(h, "queued", json_integer((json_int_t)queued[k]));
            json_object_set_new(h, "dead", json_integer((json_int_t)dead[k]));
            k++;
        }
    }
    respond_json(c->req, 200, json_incref(c->root));
    call_free(c);
}

static void hooks_list_shared(fy_gw *gw, fy_http_req *req, json_t *a)
{
    adm_call *c = call_new(gw, req);
    size_t n = 0, i;
    json_t *h;
    if (!c) {
        json_decref(a);
        return;
    }
    c->root = json_pack("{s:o}", "hooks", a);
    const char **ids = calloc(json_array_size(a) + 1, sizeof *ids);
    if (!ids) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        call_free(c);
        return;
    }
    json_array_foreach(a, i, h)
    {
        if (json_is_true(json_object_get(h, "async"))) {
            ids[n++] = json_string_value(json_object_get(h, "id"));
        }
    }
    int rc = fy_shared_hook_counts(gw->shared, ids, n, hooks_counted, c);
    free(ids);
    call_started(c, rc);
}

static void hooks_list(fy_gw *gw, fy_http_req *req)
{
    hook_list_ctx x = {json_array(), (int64_t)time(NULL)};
    int rc = fy_store_hook_list(gw->store, hook_row, &x);
    if (rc) {
        json_decref(x.a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    if (gw->shared) {
        hooks_list_shared(gw, req, x.a);
        return;
    }
    respond_json(req, 200, json_pack("{s:o}", "hooks", x.a));
}

static void hook_not_found(fy_http_req *req, const char *id)
{
    char msg[160];
    snprintf(msg, sizeof msg, "no hook with id '%.40s'", id);
    fy_http_respond_error(req, 404, "hook_not_found", msg);
}

/* Answers a hook write that failed with RC (from the store or the shared
 * state). Returns 1 when it did (RC was not 0). */
static int hook_write_failed(fy_gw *gw, fy_http_req *req, const char *id, int rc)
{
    if (rc == FY_ENOENT) {
        hook_not_found(req, id);
    } else if (rc && gw->shared) {
        shared_refused(req, rc);
    } else if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
    }
    return rc != 0;
}

/* A delete's end: RC from the store or the shared state. */
static void hook_deleted(fy_gw *gw, fy_http_req *req, const char *id, int rc)
{
    if (hook_write_failed(gw, req, id, rc)) {
        return;
    }
    fy_gw_hook_forget(gw, id);
    fy_log_event(FY_LOG_WARN, ADM_LOG, "hook deleted", json_pack("{s:s}", "id", id));
    respond_json(req, 200, json_pack("{s:s,s:b}", "id", id, "deleted", 1));
}

static void hook_deleted_shared(void *data, int err)
{
    adm_call *c = data;
    hook_deleted(c->gw, c->req, c->hook.id, err);
    call_free(c);
}

static void hook_delete(fy_gw *gw, fy_http_req *req, const char *id)
{
    if (!gw->shared) {
        hook_deleted(gw, req, id, fy_store_hook_delete(gw->store, id));
        return;
    }
    adm_call *c = call_new(gw, req);
    if (c) {
        snprintf(c->hook.id, sizeof c->hook.id, "%s", id);
        call_started(c, fy_shared_hook_delete(gw->shared, c->hook.id, hook_deleted_shared, c));
    }
}

/* A rotation's end: RC from the store or the shared state. */
static void hook_rotated(fy_gw *gw, fy_http_req *req, const char *id, int rc, int64_t now,
                         int64_t grace)
{
    if (hook_write_failed(gw, req, id, rc)) {
        return;
    }
    fy_log_event(FY_LOG_WARN, ADM_LOG, "hook secret rotated",
                 json_pack("{s:s,s:I}", "id", id, "grace_s", (json_int_t)grace));
    respond_json(
        req, 200,
        json_pack("{s:s,s:I}", "id", id, "previous_secret_until", (json_int_t)(now + grace)));
}

static void hook_rotate_written(void *data, int err)
{
    adm_call *c = data;
    hook_rotated(c->gw, c->req, c->hook.id, err, c->now, c->grace);
    call_free(c);
}

/* --shared: the rotation starts from the record in Redis. */
static void hook_rotate_fetched(void *data, int err)
{
    adm_call *c = data;
    if (err) {
        hook_rotated(c->gw, c->req, c->hook_id, err, c->now, c->grace);
        call_free(c);
        return;
    }
    fy_store_hook *h = &c->hook;
    memcpy(h->prev_secret, h->secret, h->secret_len);
    h->prev_len = h->secret_len;
    memcpy(h->secret, c->new_secret, c->new_len);
    h->secret_len = c->new_len;
    h->prev_until = c->now + c->grace;
    int rc = fy_shared_hook_put(c->gw->shared, h, hook_rotate_written, c);
    if (rc) {
        hook_rotated(c->gw, c->req, h->id, rc, c->now, c->grace);
        call_free(c);
    }
}

static void hook_rotate_shared(fy_gw *gw, fy_http_req *req, const char *id, const uint8_t *secret,
                               size_t len, int64_t grace)
{
    adm_call *c = call_new(gw, req);
    if (!c) {
        return;
    }
    memcpy(c->new_secret, secret, len);
    c->new_len = len;
    c->grace = grace;
    snprintf(c->hook_id, sizeof c->hook_id, "%s", id);
    call_started(c, fy_shared_hook_get(gw->shared, id, &c->hook, hook_rotate_fetched, c));
}

static void hook_rotate(fy_gw *gw, fy_http_req *req, const char *id)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    uint8_t secret[FY_STORE_HOOK_SECRET_MAX];
    size_t len = 0;
    int64_t now = (int64_t)time(NULL);
    const char *bad = json_is_object(root)
                          ? secret_from_json(json_object_get(root, "secret"), secret, &len)
                          : "the body must be a JSON object";
    long long grace = secs_from_json(json_object_get(root, "grace"), FY_GW_HOOK_DEFAULT_GRACE_S);
    if (!bad && (grace < 1 || grace > 30 * 86400)) {
        bad = "\"grace\" must be a duration from 1s to 30d";
    }
    if (bad) {
        fy_http_respond_error(req, 400, "invalid_request", bad);
        goto out;
    }
    if (gw->shared) {
        hook_rotate_shared(gw, req, id, secret, len, grace);
        goto out;
    }
    hook_rotated(gw, req, id, fy_store_hook_rotate(gw->store, id, secret, len, now + grace), now,
                 grace);
out:
    fy_secure_zero(secret, sizeof secret);
    if (root) {
        json_t *sv = json_object_get(root, "secret");
        if (json_is_string(sv)) {
            fy_secure_zero((char *)json_string_value(sv), json_string_length(sv));
        }
    }
    json_decref(root);
    fy_secure_zero((char *)body.base, body.len);
}

/* --- metrics ----------------------------------------------------------------------------- */

static void metrics_page(fy_gw *gw, fy_http_req *req)
{
    fy_buf b;
    fy_buf_init(&b, FY_METRICS_MAX_TEXT);
    int rc = fy_metrics_render(gw->metrics.reg, &b);
    if (rc) {
        fy_buf_free(&b);
        fy_http_respond_error(req, 500, "internal_error", fy_strerror(rc));
        return;
    }
    fy_http_header h[] = {{"Content-Type", FY_METRICS_CONTENT_TYPE, 0, 0},
                          {"Cache-Control", "no-store", 0, 0}};
    fy_http_respond(req, 200, h, 2, b.data ? b.data : "", b.len);
    fy_buf_free(&b);
}

/* --- dispatch --------------------------------------------------------------------- */

/* PATH under PREFIX as "<id>" or "<id><ACTION>": 1 with the id in ID (and
 * *ACT set when ACTION follows it), -1 when it is under PREFIX but malformed
 * (empty or too long id, another suffix), 0 when not under PREFIX. */
static int id_route(const char *path, const char *prefix, const char *action, char *id, size_t cap,
                    int *act)
{
    size_t pl = strlen(prefix);
    if (strncmp(path, prefix, pl) != 0) {
        return 0;
    }
    const char *p = path + pl;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 0 || n >= cap || (slash && strcmp(slash, action) != 0)) {
        return -1;
    }
    memcpy(id, p, n);
    id[n] = '\0';
    *act = slash != NULL;
    return 1;
}

void fy_gw_admin_request(fy_http_req *req, void *data)
{
    fy_gw *gw = data;
    if (fy_dash_admin_route(gw->dash, req) || !authorized(gw, req)) {
        return;
    }
    const char *path = fy_http_req_path(req), *method = fy_http_req_method(req);
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    int patch = strcmp(method, "PATCH") == 0;
    static const char runners_prefix[] = "/admin/v1/runners/";
    static const char keys_prefix[] = "/admin/v1/keys/";
    static const char hooks_prefix[] = "/admin/v1/hooks/";
    int del = strcmp(method, "DELETE") == 0;
    char kid[FY_STORE_KEY_ID_MAX], hid[FY_STORE_HOOK_ID_MAX];
    int r, act;
    if (strcmp(path, "/metrics") == 0) {
        if (get) {
            metrics_page(gw, req);
            return;
        }
    } else if (strcmp(path, "/admin/v1/keys") == 0) {
        if (get) {
            keys_list(gw, req);
            return;
        }
        if (post) {
            keys_create(gw, req);
            return;
        }
    } else if ((r = id_route(path, keys_prefix, "/revoke", kid, sizeof kid, &act)) != 0) {
        if (r < 0) {
            fy_http_respond_error(req, 404, "not_found", "no such admin route");
            return;
        }
        if (act && post) {
            key_revoke(gw, req, kid);
            return;
        }
        if (!act && get) {
            key_get(gw, req, kid);
            return;
        }
        if (!act && patch) {
            key_update(gw, req, kid);
            return;
        }
    } else if (strcmp(path, "/admin/v1/hooks") == 0) {
        if (get) {
            hooks_list(gw, req);
            return;
        }
        if (post) {
            hooks_create(gw, req);
            return;
        }
    } else if ((r = id_route(path, hooks_prefix, "/deliveries", hid, sizeof hid, &act)) > 0 &&
               act) {
        if (get) {
            fy_dash_hook_deliveries(gw->dash, req, hid);
            return;
        }
    } else if ((r = id_route(path, hooks_prefix, "/rotate-secret", hid, sizeof hid, &act)) != 0) {
        if (r < 0) {
            fy_http_respond_error(req, 404, "not_found", "no such admin route");
            return;
        }
        if (act && post) {
            hook_rotate(gw, req, hid);
            return;
        }
        if (!act && del) {
            hook_delete(gw, req, hid);
            return;
        }
    } else if (strcmp(path, "/admin/v1/usage") == 0) {
        if (get) {
            usage_list(gw, req);
            return;
        }
    } else if (strcmp(path, "/admin/v1/status") == 0) {
        if (get) {
            admin_status(gw, req);
            return;
        }
    } else if (strcmp(path, "/admin/v1/overview") == 0) {
        if (get) {
            admin_overview(gw, req);
            return;
        }
    } else if (strncmp(path, "/admin/v1/traffic", 17) == 0 &&
               (path[17] == '\0' || path[17] == '/')) {
        fy_dash_traffic_request(gw->dash, req);
        return;
    } else if (strcmp(path, "/admin/v1/tokens") == 0) {
        if (get) {
            tokens_list(gw, req);
            return;
        }
        if (post) {
            tokens_create(gw, req);
            return;
        }
    } else if (strcmp(path, "/admin/v1/runners") == 0) {
        if (get) {
            runners_list(gw, req);
            return;
        }
    } else if (strncmp(path, runners_prefix, sizeof runners_prefix - 1) == 0) {
        const char *name = path + sizeof runners_prefix - 1;
        const char *slash = strchr(name, '/');
        if (slash && strcmp(slash, "/revoke") == 0 && (size_t)(slash - name) < FY_STORE_NAME_MAX) {
            char nm[FY_STORE_NAME_MAX];
            memcpy(nm, name, (size_t)(slash - name));
            nm[slash - name] = '\0';
            if (post) {
                runner_revoke(gw, req, nm);
                return;
            }
        } else {
            fy_http_respond_error(req, 404, "not_found", "no such admin route");
            return;
        }
    } else {
        fy_http_respond_error(req, 404, "not_found", "no such admin route");
        return;
    }
    fy_http_respond_error(req, 405, "method_not_allowed", "method not allowed on this route");
}
