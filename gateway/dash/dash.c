/* dash.c: the dashboard's pages, static files and sessions (dash.h). */
#include "gateway/dash/dash.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/secret.h"
#include "gateway/dash/assets.h"
#include "gateway/dash/guard.h"
#include "gateway/dash/keyholder.h"
#include "gateway/dash/session.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DASH_MAX_HEADERS (FY_DASH_N_SECURITY + 6)

const fy_http_header fy_dash_security_headers[FY_DASH_N_SECURITY] = {
    {"Content-Security-Policy", FY_DASH_CSP, 0, 0},
    {"X-Content-Type-Options", "nosniff", 0, 0},
    {"Referrer-Policy", "no-referrer", 0, 0},
    {"X-Frame-Options", "DENY", 0, 0},
};

struct fy_dash {
    fy_dash_config cfg;
    fy_dash_sessions sessions;
    fy_dash_guard guard;
    fy_traffic *traffic;
    fy_reqdone_sub traffic_sub;
};

int fy_dash_new(const fy_dash_config *cfg, fy_dash **out)
{
    fy_dash *d = calloc(1, sizeof *d);
    if (!d || fy_traffic_new(cfg->loop, cfg->store, &d->traffic)) {
        free(d);
        return FY_ENOMEM;
    }
    d->cfg = *cfg;
    d->traffic_sub = (fy_reqdone_sub){.fn = fy_traffic_add, .arg = d->traffic, .want_headers = 1};
    fy_reqdone_subscribe(cfg->done, &d->traffic_sub);
    *out = d;
    return 0;
}

void fy_dash_close(fy_dash *d)
{
    if (d) {
        fy_traffic_close(d->traffic);
    }
}

void fy_dash_free(fy_dash *d)
{
    if (d) {
        fy_traffic_free(d->traffic);
        fy_secure_zero(&d->sessions, sizeof d->sessions);
        free(d);
    }
}

void fy_dash_traffic_request(fy_dash *d, fy_http_req *req)
{
    fy_traffic_request(d->traffic, req);
}

void fy_dash_hook_deliveries(fy_dash *d, fy_http_req *req, const char *hook_id)
{
    fy_traffic_deliveries(d->traffic, req, hook_id);
}

const fy_traffic_totals *fy_dash_totals(const fy_dash *d)
{
    return fy_traffic_get_totals(d->traffic);
}

/* --- responses ------------------------------------------------------------------ */

/* A response with HEADERS[0..N) and, on the public listener (PUB), the
 * security headers (the admin listener's server adds them to everything). */
static void dash_send(fy_http_req *req, int pub, int status, const fy_http_header *h, size_t n,
                      const void *body, size_t len)
{
    fy_http_header all[DASH_MAX_HEADERS];
    size_t k = 0;
    for (size_t i = 0; pub && i < FY_DASH_N_SECURITY; i++) {
        all[k++] = fy_dash_security_headers[i];
    }
    for (size_t i = 0; i < n && k < DASH_MAX_HEADERS; i++) {
        all[k++] = h[i];
    }
    fy_http_respond(req, status, all, k, body, len);
}

static void dash_error(fy_http_req *req, int pub, int status, const char *code, const char *msg)
{
    char body[1024];
    size_t n = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"Cache-Control", "no-store", 0, 0}};
    dash_send(req, pub, status, h, 2, body, n);
}

/* The 429 of an address past its failed attempts. */
static void too_many_failures(fy_http_req *req, int pub, int64_t retry, const char *msg)
{
    char ra[24], body[512];
    snprintf(ra, sizeof ra, "%lld", (long long)retry);
    size_t n = fy_http_error_json(body, sizeof body, 429, "rate_limit_exceeded", NULL, msg);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"Cache-Control", "no-store", 0, 0},
                          {"Retry-After", ra, 0, 0}};
    dash_send(req, pub, 429, h, 3, body, n);
}

static void serve_asset(fy_http_req *req, int pub, const char *path)
{
    const char *m = fy_http_req_method(req);
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        dash_error(req, pub, 405, "method_not_allowed", "the dashboard's files are read-only");
        return;
    }
    const fy_dash_asset *a = fy_dash_asset_find(path);
    if (!a) {
        dash_error(req, pub, 404, "not_found", "no such dashboard file");
        return;
    }
    /* Pages are never cached (they name the session's state); the other
     * files are revalidated against their content hash. */
    int page = strncmp(a->content_type, "text/html", 9) == 0;
    fy_http_header h[] = {{"Content-Type", a->content_type, 0, 0},
                          {"Cache-Control", page ? "no-store" : "no-cache", 0, 0},
                          {"ETag", a->etag, 0, 0}};
    const char *inm = fy_http_req_header(req, "if-none-match");
    if (!page && inm && strcmp(inm, a->etag) == 0) {
        dash_send(req, pub, 304, h + 1, 2, NULL, 0);
        return;
    }
    dash_send(req, pub, 200, h, page ? 2 : 3, a->data, a->len);
}

/* --- where a request comes from --------------------------------------------------- */

/* 1 when REQ may come from the page itself: no Sec-Fetch-Site naming another
 * site, and an Origin (when sent) that is https://<Host>. */
static int same_origin(fy_http_req *req)
{
    const char *site = fy_http_req_header(req, "sec-fetch-site");
    if (site && (strcmp(site, "cross-site") == 0 || strcmp(site, "same-site") == 0)) {
        return 0;
    }
    const char *origin = fy_http_req_header(req, "origin");
    if (!origin) {
        return 1;
    }
    const char *host = fy_http_req_header(req, "host");
    return host && strncmp(origin, "https://", 8) == 0 && strcmp(origin + 8, host) == 0;
}

static void refuse_origin(fy_http_req *req)
{
    dash_error(req, 0, 403, "csrf",
               "refused: the request comes from another origin (Origin or Sec-Fetch-Site)");
}

static fy_dash_session *session_of(fy_dash *d, fy_http_req *req)
{
    size_t n, len;
    const fy_http_header *h = fy_http_req_headers(req, &n);
    const char *v;
    if (!fy_dash_cookie_get(h, n, FY_DASH_COOKIE, &v, &len)) {
        return NULL;
    }
    return fy_dash_session_find(&d->sessions, v, len, (int64_t)time(NULL));
}

fy_dash_auth fy_dash_authorize(fy_dash *d, fy_http_req *req)
{
    fy_dash_session *s = session_of(d, req);
    if (!s) {
        return FY_DASH_AUTH_NONE;
    }
    if (!same_origin(req)) {
        refuse_origin(req);
        return FY_DASH_AUTH_ANSWERED;
    }
    const char *m = fy_http_req_method(req);
    if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0 &&
        !fy_dash_session_csrf_ok(s, fy_http_req_header(req, "x-csrf-token"))) {
        dash_error(req, 0, 403, "csrf", "this change needs the session's X-CSRF-Token header");
        return FY_DASH_AUTH_ANSWERED;
    }
    return FY_DASH_AUTH_OK;
}

/* --- /admin/v1/session ------------------------------------------------------------ */

static void session_answer(fy_http_req *req, int status, const fy_dash_session *s,
                           const char *cookie)
{
    char body[128];
    int n = snprintf(body, sizeof body, "{\"csrf\":\"%s\",\"expires_at\":%lld}", s->csrf,
                     (long long)s->expires_at);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"Cache-Control", "no-store", 0, 0},
                          {"Set-Cookie", cookie, 0, 0}};
    dash_send(req, 0, status, h, cookie ? 3 : 2, body, (size_t)n);
}

/* The admin token of a sign-in body {"token":"..."}; 1 when it matches. */
static int token_ok(fy_dash *d, fy_http_req *req)
{
    fy_slice body = fy_http_req_body(req);
    json_error_t jerr;
    json_t *root = body.len ? json_loadb(body.base, body.len, 0, &jerr) : NULL;
    json_t *t = json_object_get(root, "token");
    int ok = json_is_string(t) &&
             fy_secret_matches(json_string_value(t), json_string_length(t), d->cfg.admin_hash);
    if (json_is_string(t)) {
        fy_secure_zero((char *)json_string_value(t), json_string_length(t));
    }
    json_decref(root);
    fy_secure_zero((char *)body.base, body.len);
    return ok;
}

static void sign_in(fy_dash *d, fy_http_req *req)
{
    if (!same_origin(req)) {
        refuse_origin(req);
        return;
    }
    int64_t mono = fy_rl_now(), retry;
    const char *peer = fy_http_req_peer(req);
    if (fy_dash_guard_blocked(&d->guard, peer, mono, &retry)) {
        too_many_failures(req, 0, retry, "too many failed sign-ins from this address: try later");
        return;
    }
    if (!token_ok(d, req)) {
        fy_dash_guard_fail(&d->guard, peer, mono);
        dash_error(req, 0, 401, "unauthorized", "wrong admin token");
        return;
    }
    char id[FY_DASH_TOKEN_LEN + 1], cookie[160];
    fy_dash_session *s =
        fy_dash_session_new(&d->sessions, (int64_t)time(NULL), FY_DASH_SESSION_TTL_S, id);
    if (!s) {
        dash_error(req, 0, 500, "internal_error", "no random bytes for a session");
        return;
    }
    snprintf(cookie, sizeof cookie,
             FY_DASH_COOKIE "=%s; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=%d", id,
             FY_DASH_SESSION_TTL_S);
    session_answer(req, 200, s, cookie);
    fy_secure_zero(id, sizeof id);
    fy_secure_zero(cookie, sizeof cookie);
}

static void sign_out(fy_dash *d, fy_http_req *req)
{
    fy_dash_session *s = session_of(d, req);
    if (!s) {
        dash_error(req, 0, 401, "unauthorized", "no session (sign in first)");
        return;
    }
    if (fy_dash_authorize(d, req) != FY_DASH_AUTH_OK) {
        return;
    }
    fy_dash_session_end(s);
    fy_http_header h[] = {{"Cache-Control", "no-store", 0, 0},
                          {"Set-Cookie",
                           FY_DASH_COOKIE "=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
                           0, 0}};
    dash_send(req, 0, 204, h, 2, NULL, 0);
}

static void session_request(fy_dash *d, fy_http_req *req)
{
    const char *m = fy_http_req_method(req);
    if (strcmp(m, "POST") == 0) {
        sign_in(d, req);
    } else if (strcmp(m, "DELETE") == 0) {
        sign_out(d, req);
    } else if (strcmp(m, "GET") == 0) {
        fy_dash_session *s = session_of(d, req);
        if (!s) {
            dash_error(req, 0, 401, "unauthorized", "no session (sign in first)");
        } else if (same_origin(req)) {
            session_answer(req, 200, s, NULL);
        } else {
            refuse_origin(req);
        }
    } else {
        dash_error(req, 0, 405, "method_not_allowed", "method not allowed on this route");
    }
}

/* --- routes ------------------------------------------------------------------------- */

int fy_dash_admin_route(fy_dash *d, fy_http_req *req)
{
    const char *path = fy_http_req_path(req);
    if (strcmp(path, "/") == 0) {
        serve_asset(req, 0, "index.html");
    } else if (strncmp(path, "/static/", 8) == 0) {
        serve_asset(req, 0, path + 8);
    } else if (strcmp(path, "/admin/v1/session") == 0) {
        session_request(d, req);
    } else {
        return 0;
    }
    return 1;
}

int fy_dash_public_path(const char *path)
{
    return strncmp(path, "/dashboard", 10) == 0 && (path[10] == '\0' || path[10] == '/');
}

/* GET /dashboard/api/me: the caller's own key, by the key itself. */
static void keyholder_me(fy_dash *d, fy_http_req *req)
{
    if (strcmp(fy_http_req_method(req), "GET") != 0) {
        dash_error(req, 1, 405, "method_not_allowed", "method not allowed on this route");
        return;
    }
    int64_t mono = fy_rl_now(), retry, now = (int64_t)time(NULL);
    const char *peer = fy_http_req_peer(req);
    if (fy_dash_guard_blocked(&d->guard, peer, mono, &retry)) {
        too_many_failures(req, 1, retry, "too many requests with a bad key from this address");
        return;
    }
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(req, &nh);
    fy_key *k = NULL;
    fy_auth_outcome o = fy_keys_authenticate(d->cfg.keys, h, nh, now, &k);
    if (o != FY_AUTH_OK) {
        const char *code, *msg;
        int status = fy_auth_error(o, &code, &msg);
        fy_dash_guard_fail(&d->guard, peer, mono);
        fy_http_header eh[] = {{"Content-Type", "application/json", 0, 0},
                               {"Cache-Control", "no-store", 0, 0},
                               {"WWW-Authenticate", "Bearer", 0, 0}};
        char body[1024];
        size_t n = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
        dash_send(req, 1, status, eh, 3, body, n);
        return;
    }
    json_t *j = fy_keyholder_json(d->cfg.store, k, now);
    fy_key_release(k);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        dash_error(req, 1, 500, "store_error", "the key's record or usage could not be read");
        return;
    }
    fy_http_header jh[] = {{"Content-Type", "application/json", 0, 0},
                           {"Cache-Control", "no-store", 0, 0}};
    dash_send(req, 1, 200, jh, 2, text, strlen(text));
    free(text);
}

void fy_dash_public_request(fy_dash *d, fy_http_req *req)
{
    const char *path = fy_http_req_path(req);
    if (strcmp(path, "/dashboard/api/me") == 0) {
        keyholder_me(d, req);
    } else if (strcmp(path, "/dashboard") == 0 || strcmp(path, "/dashboard/") == 0) {
        serve_asset(req, 1, "keyholder.html");
    } else if (strncmp(path, "/dashboard/static/", 18) == 0) {
        serve_asset(req, 1, path + 18);
    } else {
        dash_error(req, 1, 404, "not_found", "no such dashboard route");
    }
}
