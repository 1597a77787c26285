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

/* A dashboard that signs in with the admin token whose SHA-256 is
 * ADMIN_HASH (must outlive the dashboard). Returns 0 or FY_ENOMEM. */
int fy_dash_new(const uint8_t admin_hash[32], fy_dash **out);
void fy_dash_free(fy_dash *d); /* NULL is ok; ends every session */

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
