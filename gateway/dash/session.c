/* session.c: the dashboard's sign-in sessions (session.h). */
#include "gateway/dash/session.h"

#include "common/crypto.h"

#include <string.h>
#include <strings.h>

static int random_token(char out[FY_DASH_TOKEN_LEN + 1], uint8_t raw[32])
{
    return fy_random_bytes(raw, 32) || fy_b64url_encode(raw, 32, out, FY_DASH_TOKEN_LEN + 1);
}

fy_dash_session *fy_dash_session_new(fy_dash_sessions *t, int64_t now, int64_t ttl_s,
                                     char id[FY_DASH_TOKEN_LEN + 1])
{
    fy_dash_session *slot = &t->s[0];
    for (size_t i = 0; i < FY_DASH_SESSIONS_MAX; i++) {
        fy_dash_session *s = &t->s[i];
        if (s->expires_at <= now) {
            slot = s;
            break;
        }
        if (s->expires_at < slot->expires_at) {
            slot = s;
        }
    }
    uint8_t raw[32], csrf_raw[32];
    fy_dash_session_end(slot);
    int bad = random_token(id, raw) || random_token(slot->csrf, csrf_raw) ||
              fy_sha256(id, FY_DASH_TOKEN_LEN, slot->hash);
    fy_secure_zero(raw, sizeof raw);
    fy_secure_zero(csrf_raw, sizeof csrf_raw);
    if (bad) {
        fy_dash_session_end(slot);
        fy_secure_zero(id, FY_DASH_TOKEN_LEN + 1);
        return NULL;
    }
    slot->expires_at = now + ttl_s;
    return slot;
}

fy_dash_session *fy_dash_session_find(fy_dash_sessions *t, const char *id, size_t len, int64_t now)
{
    if (len != FY_DASH_TOKEN_LEN) {
        return NULL;
    }
    uint8_t h[32];
    if (fy_sha256(id, len, h)) {
        return NULL;
    }
    fy_dash_session *found = NULL;
    for (size_t i = 0; i < FY_DASH_SESSIONS_MAX; i++) {
        fy_dash_session *s = &t->s[i];
        if (s->expires_at && fy_ct_equal(s->hash, h, sizeof h)) {
            found = s;
        }
    }
    if (found && found->expires_at <= now) {
        fy_dash_session_end(found);
        found = NULL;
    }
    return found;
}

void fy_dash_session_end(fy_dash_session *s)
{
    fy_secure_zero(s, sizeof *s);
}

int fy_dash_session_csrf_ok(const fy_dash_session *s, const char *csrf)
{
    return csrf && strlen(csrf) == FY_DASH_TOKEN_LEN &&
           fy_ct_equal(csrf, s->csrf, FY_DASH_TOKEN_LEN);
}

/* Looks for NAME=VALUE among the "; "-separated pairs of one Cookie value. */
static int cookie_in(const char *v, const char *name, const char **val, size_t *len)
{
    size_t nl = strlen(name);
    while (*v) {
        while (*v == ' ' || *v == ';') {
            v++;
        }
        const char *end = strchr(v, ';');
        size_t pl = end ? (size_t)(end - v) : strlen(v);
        if (pl > nl && v[nl] == '=' && strncmp(v, name, nl) == 0) {
            *val = v + nl + 1;
            *len = pl - nl - 1;
            while (*len && (*val)[*len - 1] == ' ') {
                (*len)--;
            }
            return 1;
        }
        v += pl;
    }
    return 0;
}

int fy_dash_cookie_get(const fy_http_header *h, size_t n, const char *name, const char **val,
                       size_t *len)
{
    size_t it = 0;
    const char *v;
    while ((v = fy_http_header_next(h, n, "cookie", &it)) != NULL) {
        if (cookie_in(v, name, val, len)) {
            return 1;
        }
    }
    return 0;
}
