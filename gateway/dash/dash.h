/* dash.h: the dashboard's server side (issue 16).
 *
 * On the admin listener (admin.c hands every request to fy_dash_admin_route
 * first):
 *   GET /                  the admin SPA (www/index.html)
 *   GET /static/PATH       an embedded file (www/PATH, vendor/chart.js)
 *   POST   /admin/v1/session  {"token":"<admin token>"} -> a session cookie
 *   GET    /admin/v1/session  the session's CSRF token, or 401
 *   DELETE /admin/v1/session  sign-out (cookie + CSRF)
 * and every other admin route accepts a session cookie besides the Bearer
 * admin token (fy_dash_authorize).
 *
 * On the public listener (router.c hands /dashboard and /dashboard/... here):
 *   GET /dashboard              the key holders' page (www/keyholder.html)
 *   GET /dashboard/static/PATH  the same embedded files as /static/PATH
 *   GET /dashboard/api/me       "Authorization: Bearer <the caller's API key>":
 *                               that key's limits, what is left of them and
 *                               its usage (keyholder.h); a bad key is the
 *                               401 of /v1, and bad keys count against the
 *                               address like failed sign-ins (429)
 *
 * Security model. The session id is 32 random bytes (base64url) in the
 * cookie ferry_session (HttpOnly, Secure, SameSite=Strict, Max-Age 12 h);
 * the server keeps only its SHA-256, in a table of FY_DASH_SESSIONS_MAX
 * (the oldest session is ended to make room). Sign-in compares the token in
 * constant time; failed sign-ins are limited per client address
 * (FY_DASH_FAIL_RPM a minute, GCRA) with 429 and Retry-After. With a
 * cookie, a request must not come from another site (Sec-Fetch-Site
 * cross-site or same-site: 403), its Origin, when sent, must be
 * https://<Host>, and every method but GET and HEAD must carry the
 * session's X-CSRF-Token (403 code "csrf"). Every dashboard response carries
 * the headers of fy_dash_security_headers (a CSP that allows no inline
 * script and no other origin); the admin listener sends them on every
 * response (run.c passes them as the server's extra headers).
 *
 * Calls go one way: admin.c, router.c and run.c call this module; it never
 * calls them. Single threaded (the gateway's loop). */
#ifndef FY_GATEWAY_DASH_DASH_H
#define FY_GATEWAY_DASH_DASH_H

#include "common/http.h"
#include "gateway/dash/traffic.h"
#include "gateway/keys.h"
#include "gateway/reqdone.h"
#include "gateway/store.h"

#include <stdint.h>

#define FY_DASH_SESSIONS_MAX  64
#define FY_DASH_SESSION_TTL_S (12 * 3600)
#define FY_DASH_COOKIE        "ferry_session"
#define FY_DASH_FAIL_RPM      5   /* failed sign-ins (and key checks) per address a minute */
#define FY_DASH_GUARD_SLOTS   256 /* client addresses remembered for that limit */

#define FY_DASH_CSP                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "   \
    "connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; " \
    "base-uri 'none'"

/* Content-Security-Policy, X-Content-Type-Options, Referrer-Policy and
 * X-Frame-Options, in that order. */
#define FY_DASH_N_SECURITY 4
extern const fy_http_header fy_dash_security_headers[FY_DASH_N_SECURITY];

typedef struct fy_dash fy_dash;

/* What the dashboard reads; everything must outlive it. */
typedef struct {
    uv_loop_t *loop;
    const uint8_t *admin_hash; /* SHA-256 of the admin token sign-in takes */
    fy_reqdone_hub *done;      /* the request news the live traffic subscribes to */
    fy_store *store;           /* key names, usage */
    fy_keys *keys;             /* the key holders' page checks keys here */
} fy_dash_config;

/* Returns 0 or FY_ENOMEM. */
int fy_dash_new(const fy_dash_config *cfg, fy_dash **out);
/* The gateway stops: live traffic streams end, timers close. NULL is ok. */
void fy_dash_close(fy_dash *d);
/* After the loop ran the close. NULL is ok; ends every session. */
void fy_dash_free(fy_dash *d);

/* Admin routes under /admin/v1/traffic (already authorized: traffic.h). */
void fy_dash_traffic_request(fy_dash *d, fy_http_req *req);

/* GET /admin/v1/hooks/ID/deliveries (already authorized: traffic.h). */
void fy_dash_hook_deliveries(fy_dash *d, fy_http_req *req, const char *hook_id);

/* Totals since start for /admin/v1/overview (traffic.h). */
const fy_traffic_totals *fy_dash_totals(const fy_dash *d);

/* An admin listener request: 1 when it was a dashboard route (pages,
 * static files, /admin/v1/session), answered or being answered; 0 when it
 * is the admin API's. */
int fy_dash_admin_route(fy_dash *d, fy_http_req *req);

/* The session check of an admin API request that carries no Authorization
 * header. */
typedef enum {
    FY_DASH_AUTH_OK = 0,   /* a valid session (and, for a change, its CSRF token) */
    FY_DASH_AUTH_NONE,     /* no session: the caller answers 401 */
    FY_DASH_AUTH_ANSWERED, /* refused here with 403 (another site, Origin, CSRF) */
} fy_dash_auth;
fy_dash_auth fy_dash_authorize(fy_dash *d, fy_http_req *req);

/* A public listener request whose path is /dashboard or under /dashboard/:
 * answered here. */
void fy_dash_public_request(fy_dash *d, fy_http_req *req);

/* 1 when PATH is /dashboard or under /dashboard/. */
int fy_dash_public_path(const char *path);

#endif
