/* admin.c: the admin API on the admin listener (HTTPS, loopback by default).
 *
 * Every call needs "Authorization: Bearer <admin token>", checked in constant
 * time against the SHA-256 of DIR/admin.token. Answers are JSON; errors use
 * the OpenAI error shape. Secrets are returned once (a new enrollment token)
 * and never logged or listed. */
#include "gateway/gateway.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "common/secret.h"
#include "fy_version.h"
#include "gateway/datadir.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define ADM_LOG "admin"

static void respond_json(fy_http_req *req, int status, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text) {
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return;
    }
    size_t n = strlen(text);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"Cache-Control", "no-store", 0, 0}};
    fy_http_respond(req, status, h, 2, text, n);
    fy_secure_zero(text, n); /* may hold a new token */
    free(text);
}

static int authorized(fy_gw *gw, fy_http_req *req)
{
    const char *h = fy_http_req_header(req, "authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
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
    return fy_secret_matches(t, n, gw->admin_hash);
}

/* --- status ------------------------------------------------------------------- */

static void admin_status(fy_gw *gw, fy_http_req *req)
{
    respond_json(req, 200,
                 json_pack("{s:s,s:{s:s,s:s,s:s},s:s,s:I,s:I,s:I,s:b}", "version", FY_VERSION,
                           "listeners", "public", gw->addr[GW_L_PUBLIC], "tunnel",
                           gw->addr[GW_L_TUNNEL], "admin", gw->addr[GW_L_ADMIN], "public_scheme",
                           gw->public_plain ? "http" : "https", "runners_connected",
                           (json_int_t)fy_gw_tunnel_connected(gw), "requests_in_flight",
                           (json_int_t)gw->n_px, "requests_total", (json_int_t)gw->n_proxied,
                           "draining", gw->draining));
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

static void tokens_list(fy_gw *gw, fy_http_req *req)
{
    json_t *a = json_array();
    int rc = fy_store_token_list(gw->store, token_row, a);
    if (rc) {
        json_decref(a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    respond_json(req, 200, json_pack("{s:o}", "tokens", a));
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
} runner_ctx;

static void runner_row(const fy_store_runner *sr, void *arg)
{
    runner_ctx *x = arg;
    gw_runner *r = fy_gw_runner_find(x->gw, sr->name);
    json_t *conns = json_array();
    size_t in_flight = 0;
    for (gw_conn *c = r ? r->conns : NULL; c; c = c->rnext) {
        in_flight += c->n_px;
        json_array_append_new(conns,
                              json_pack("{s:I,s:s,s:I,s:I,s:f}", "id", (json_int_t)c->id, "peer",
                                        c->peer, "since", (json_int_t)c->since, "streams",
                                        (json_int_t)c->n_px, "rtt_ms", (double)c->rtt_us / 1000.0));
    }
    json_array_append_new(
        x->a, json_pack("{s:s,s:s,s:I,s:o,s:b,s:o,s:I}", "name", sr->name, "fingerprint",
                        sr->fingerprint, "enrolled_at", (json_int_t)sr->enrolled_at, "revoked_at",
                        time_or_null(sr->revoked_at), "connected", r != NULL, "connections", conns,
                        "in_flight", (json_int_t)in_flight));
}

static void runners_list(fy_gw *gw, fy_http_req *req)
{
    runner_ctx x = {gw, json_array()};
    int rc = fy_store_runner_list(gw->store, runner_row, &x);
    if (rc) {
        json_decref(x.a);
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    respond_json(req, 200, json_pack("{s:o}", "runners", x.a));
}

static void runner_revoke(fy_gw *gw, fy_http_req *req, const char *name)
{
    char msg[160];
    int64_t now = (int64_t)time(NULL);
    int rc = fy_store_valid_name(name) ? fy_store_runner_revoke(gw->store, name, now) : FY_ENOENT;
    if (rc == FY_ENOENT) {
        snprintf(msg, sizeof msg, "no enrolled runner named '%.64s'", name);
        fy_http_respond_error(req, 404, "runner_not_found", msg);
        return;
    }
    if (rc) {
        fy_http_respond_error(req, 500, "store_error", fy_strerror(rc));
        return;
    }
    int dropped = fy_gw_tunnel_drop_runner(gw, name, FYP_ERR_REJECTED, "runner revoked");
    fy_log_event(FY_LOG_WARN, ADM_LOG, "runner revoked",
                 json_pack("{s:s,s:i}", "runner", name, "connections_dropped", dropped));
    respond_json(req, 200,
                 json_pack("{s:s,s:I,s:i}", "name", name, "revoked_at", (json_int_t)now,
                           "connections_dropped", dropped));
}

/* --- dispatch --------------------------------------------------------------------- */

void fy_gw_admin_request(fy_http_req *req, void *data)
{
    fy_gw *gw = data;
    if (!authorized(gw, req)) {
        char body[256];
        size_t n = fy_http_error_json(body, sizeof body, 401, "unauthorized",
                                      "admin token required (Authorization: Bearer ...)");
        fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                              {"WWW-Authenticate", "Bearer", 0, 0}};
        fy_http_respond(req, 401, h, 2, body, n);
        return;
    }
    const char *path = fy_http_req_path(req), *method = fy_http_req_method(req);
    int get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    static const char runners_prefix[] = "/admin/v1/runners/";
    if (strcmp(path, "/admin/v1/status") == 0) {
        if (get) {
            admin_status(gw, req);
            return;
        }
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
