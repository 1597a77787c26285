/* session.h: the dashboard's sign-in sessions, in memory.
 *
 * A session is made when the admin token is shown (dash.c checks it): its
 * id, 32 random bytes, goes to the browser once (base64url, 43 characters)
 * and the table keeps only its SHA-256, with a CSRF token (32 random bytes,
 * base64url) and an absolute expiry. The table holds at most
 * FY_DASH_SESSIONS_MAX sessions; a new one past that replaces the one that
 * expires first. Lookups compare hashes in constant time. */
#ifndef FY_GATEWAY_DASH_SESSION_H
#define FY_GATEWAY_DASH_SESSION_H

#include "gateway/dash/dash.h"

#include <stddef.h>
#include <stdint.h>

#define FY_DASH_TOKEN_LEN 43 /* base64url of 32 bytes, without the NUL */

typedef struct {
    uint8_t hash[32]; /* SHA-256 of the session id */
    char csrf[FY_DASH_TOKEN_LEN + 1];
    int64_t expires_at; /* unix seconds; 0: free slot */
} fy_dash_session;

typedef struct {
    fy_dash_session s[FY_DASH_SESSIONS_MAX];
} fy_dash_sessions;

/* A new session expiring at NOW + TTL_S: its id into ID (FY_DASH_TOKEN_LEN
 * + 1 bytes, the cookie's value). Returns the session, or NULL when the
 * system's random source failed. */
fy_dash_session *fy_dash_session_new(fy_dash_sessions *t, int64_t now, int64_t ttl_s,
                                     char id[FY_DASH_TOKEN_LEN + 1]);

/* The live session whose id is ID[0..LEN), or NULL (unknown, expired: an
 * expired one is forgotten here). */
fy_dash_session *fy_dash_session_find(fy_dash_sessions *t, const char *id, size_t len, int64_t now);

/* Ends S (its slot is wiped). */
void fy_dash_session_end(fy_dash_session *s);

/* 1 when CSRF (NUL-terminated, may be NULL) is S's token. */
int fy_dash_session_csrf_ok(const fy_dash_session *s, const char *csrf);

/* The value of cookie NAME in the Cookie headers of H[0..N) into *VAL and
 * *LEN (pointing into the header). Returns 1 when found. */
int fy_dash_cookie_get(const fy_http_header *h, size_t n, const char *name, const char **val,
                       size_t *len);

#endif
