/* hookverify.c: webhook signature schemes (see hookverify.h). */
#include "gateway/hookverify.h"

#include "common/crypto.h"
#include "common/err.h"

#include <mbedtls/base64.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static void trim(const char **v, size_t *len)
{
    while (*len && (**v == ' ' || **v == '\t')) {
        (*v)++;
        (*len)--;
    }
    while (*len && ((*v)[*len - 1] == ' ' || (*v)[*len - 1] == '\t')) {
        (*len)--;
    }
}

int fy_hook_parse_unix(const char *v, size_t len, int64_t *t)
{
    trim(&v, &len);
    if (len == 0 || len > 12) {
        return FY_EPARSE;
    }
    int64_t x = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return FY_EPARSE;
        }
        x = x * 10 + (v[i] - '0');
    }
    *t = x;
    return 0;
}

int fy_hook_parse_hex_sig(const char *v, size_t len, const char *prefix, uint8_t out[32])
{
    size_t pl = strlen(prefix);
    trim(&v, &len);
    if (len != pl + 64 || strncasecmp(v, prefix, pl) != 0) {
        return FY_EPARSE;
    }
    size_t n = 0;
    if (fy_hex_decode(v + pl, 64, out, 32, &n) || n != 32) {
        return FY_EPARSE;
    }
    return 0;
}

int fy_hook_parse_b64_sig(const char *v, size_t len, uint8_t out[32])
{
    char text[45];
    uint8_t tmp[33];
    size_t n = 0;
    trim(&v, &len);
    if (len != 43 && len != 44) {
        return FY_EPARSE;
    }
    memcpy(text, v, len);
    if (len == 43) {
        text[len++] = '=';
    }
    for (size_t i = 0; i < 43; i++) {
        char c = text[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/')) {
            return FY_EPARSE;
        }
    }
    if (text[43] != '=' ||
        mbedtls_base64_decode(tmp, sizeof tmp, &n, (const unsigned char *)text, 44) != 0 ||
        n != 32) {
        return FY_EPARSE;
    }
    memcpy(out, tmp, 32);
    return 0;
}

int fy_hook_parse_stripe(const char *v, size_t len, int64_t *t, uint8_t (*sigs)[32], size_t max,
                         size_t *nsig)
{
    int have_t = 0;
    size_t ns = 0;
    while (len) {
        const char *comma = memchr(v, ',', len);
        size_t il = comma ? (size_t)(comma - v) : len;
        const char *item = v;
        size_t itl = il;
        v += il + (comma ? 1 : 0);
        len -= il + (comma ? 1 : 0);
        trim(&item, &itl);
        const char *eq = memchr(item, '=', itl);
        if (!eq) {
            return FY_EPARSE;
        }
        size_t kl = (size_t)(eq - item);
        const char *val = eq + 1;
        size_t vl = itl - kl - 1;
        if (kl == 1 && item[0] == 't') {
            if (have_t || fy_hook_parse_unix(val, vl, t)) {
                return FY_EPARSE;
            }
            have_t = 1;
        } else if (kl == 2 && item[0] == 'v' && item[1] == '1' && vl == 64 && ns < max) {
            size_t n = 0;
            if (fy_hex_decode(val, 64, sigs[ns], 32, &n) == 0 && n == 32) {
                ns++;
            }
        }
    }
    *nsig = ns;
    return have_t && ns ? 0 : FY_EPARSE;
}

static const char *const reasons[FY_HV_COUNT] = {
    "ok", "missing_header", "malformed_header", "bad_signature", "stale_timestamp", "replay",
};

const char *fy_hv_reason(fy_hv_outcome o)
{
    return o >= 0 && o < FY_HV_COUNT ? reasons[o] : "unknown";
}

const char *fy_hv_code(fy_hv_outcome o)
{
    static const char *const codes[FY_HV_COUNT] = {
        "ok",
        "webhook_missing_header",
        "webhook_malformed_header",
        "webhook_bad_signature",
        "webhook_stale_timestamp",
        "webhook_replay",
    };
    return o >= 0 && o < FY_HV_COUNT ? codes[o] : "webhook_error";
}

static fy_hv_outcome fail(fy_hv_result *r, fy_hv_outcome o, const char *fmt, const char *a,
                          long long b)
{
    r->outcome = o;
    snprintf(r->message, sizeof r->message, fmt, a, b);
    return o;
}

/* HMAC(secret, PRE || BODY) for each accepted secret; 1 when any equals any
 * of SIGS[0..NS). Every pair is compared, whatever matched. */
static int mac_matches(const fy_store_hook *h, int64_t now, const void *pre, size_t prelen,
                       const void *body, size_t len, const uint8_t (*sigs)[32], size_t ns)
{
    const uint8_t *keys[2] = {h->secret, h->prev_secret};
    size_t klen[2] = {h->secret_len, h->prev_len > 0 && now < h->prev_until ? h->prev_len : 0};
    int match = 0;
    for (int k = 0; k < 2; k++) {
        if (!klen[k]) {
            continue;
        }
        uint8_t mac[32];
        fy_hmac_sha256_ctx c;
        int rc = fy_hmac_sha256_init(&c, keys[k], klen[k]);
        rc = rc ? rc : fy_hmac_sha256_update(&c, pre, prelen);
        rc = rc ? rc : fy_hmac_sha256_update(&c, body, len);
        rc = rc ? rc : fy_hmac_sha256_final(&c, mac);
        fy_hmac_sha256_free(&c);
        for (size_t i = 0; rc == 0 && i < ns; i++) {
            match |= fy_ct_equal(mac, sigs[i], 32);
        }
        fy_secure_zero(mac, sizeof mac);
    }
    return match;
}

static int within(const fy_store_hook *h, int64_t now, int64_t t)
{
    int64_t d = now > t ? now - t : t - now;
    return d <= h->tolerance_s;
}

static const char *find(const fy_http_header *hs, size_t n, const char *name, size_t *len)
{
    const char *v = fy_http_header_find(hs, n, name);
    *len = v ? strlen(v) : 0;
    return v;
}

static fy_hv_outcome verify_github(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                                   const void *body, size_t len, int64_t now, fy_hv_result *r)
{
    static const char sig_h[] = "X-Hub-Signature-256", dlv_h[] = "X-GitHub-Delivery";
    uint8_t sig[1][32];
    size_t sl, dl;
    const char *s = find(hs, n, sig_h, &sl), *d = find(hs, n, dlv_h, &dl);
    if (!s) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", sig_h, 0);
    }
    if (!d) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", dlv_h, 0);
    }
    if (fy_hook_parse_hex_sig(s, sl, "sha256=", sig[0])) {
        return fail(r, FY_HV_MALFORMED_HEADER, "malformed %s header (want sha256=<64 hex>)", sig_h,
                    0);
    }
    trim(&d, &dl);
    int dok = dl >= 1 && dl <= FY_HOOK_DELIVERY_MAX;
    for (size_t i = 0; dok && i < dl; i++) {
        dok = d[i] > 0x20 && d[i] < 0x7f;
    }
    if (!dok) {
        return fail(r, FY_HV_MALFORMED_HEADER, "malformed %s header", dlv_h, 0);
    }
    if (!mac_matches(h, now, "", 0, body, len, (const uint8_t(*)[32])sig, 1)) {
        return fail(r, FY_HV_BAD_SIGNATURE, "%s does not match the body", sig_h, 0);
    }
    r->delivery = d;
    r->delivery_len = dl;
    return FY_HV_OK;
}

static fy_hv_outcome verify_stripe(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                                   const void *body, size_t len, int64_t now, fy_hv_result *r)
{
    static const char sig_h[] = "Stripe-Signature";
    uint8_t sigs[FY_HOOK_MAX_SIGS][32];
    size_t sl, ns = 0;
    int64_t t = 0;
    const char *s = find(hs, n, sig_h, &sl);
    if (!s) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", sig_h, 0);
    }
    if (fy_hook_parse_stripe(s, sl, &t, sigs, FY_HOOK_MAX_SIGS, &ns)) {
        return fail(r, FY_HV_MALFORMED_HEADER,
                    "malformed %s header (want t=<unix>,v1=<64 hex>[,v1=...])", sig_h, 0);
    }
    if (!within(h, now, t)) {
        return fail(r, FY_HV_STALE_TIMESTAMP, "timestamp in %s is outside the %lld s tolerance",
                    sig_h, (long long)h->tolerance_s);
    }
    char pre[24];
    int pl = snprintf(pre, sizeof pre, "%lld.", (long long)t);
    if (!mac_matches(h, now, pre, (size_t)pl, body, len, (const uint8_t(*)[32])sigs, ns)) {
        return fail(r, FY_HV_BAD_SIGNATURE, "no v1 signature in %s matches the body", sig_h, 0);
    }
    return FY_HV_OK;
}

static fy_hv_outcome verify_slack(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                                  const void *body, size_t len, int64_t now, fy_hv_result *r)
{
    static const char sig_h[] = "X-Slack-Signature", ts_h[] = "X-Slack-Request-Timestamp";
    uint8_t sig[1][32];
    size_t sl, tl;
    int64_t t = 0;
    const char *s = find(hs, n, sig_h, &sl), *ts = find(hs, n, ts_h, &tl);
    if (!s) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", sig_h, 0);
    }
    if (!ts) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", ts_h, 0);
    }
    if (fy_hook_parse_unix(ts, tl, &t)) {
        return fail(r, FY_HV_MALFORMED_HEADER, "malformed %s header", ts_h, 0);
    }
    if (fy_hook_parse_hex_sig(s, sl, "v0=", sig[0])) {
        return fail(r, FY_HV_MALFORMED_HEADER, "malformed %s header (want v0=<64 hex>)", sig_h, 0);
    }
    if (!within(h, now, t)) {
        return fail(r, FY_HV_STALE_TIMESTAMP, "%s is outside the %lld s tolerance", ts_h,
                    (long long)h->tolerance_s);
    }
    char pre[32];
    int pl = snprintf(pre, sizeof pre, "v0:%lld:", (long long)t);
    if (!mac_matches(h, now, pre, (size_t)pl, body, len, (const uint8_t(*)[32])sig, 1)) {
        return fail(r, FY_HV_BAD_SIGNATURE, "%s does not match the body", sig_h, 0);
    }
    return FY_HV_OK;
}

static fy_hv_outcome verify_generic(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                                    const void *body, size_t len, int64_t now, fy_hv_result *r)
{
    uint8_t sig[1][32];
    size_t sl, tl = 0;
    int64_t t = 0;
    const char *s = find(hs, n, h->header, &sl);
    const char *ts = h->ts_header[0] ? find(hs, n, h->ts_header, &tl) : NULL;
    if (!s) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", h->header, 0);
    }
    if (h->ts_header[0] && !ts) {
        return fail(r, FY_HV_MISSING_HEADER, "missing %s header", h->ts_header, 0);
    }
    if (ts && fy_hook_parse_unix(ts, tl, &t)) {
        return fail(r, FY_HV_MALFORMED_HEADER, "malformed %s header", h->ts_header, 0);
    }
    const char *v = s;
    size_t vl = sl;
    trim(&v, &vl);
    if (vl > 7 && strncasecmp(v, "sha256=", 7) == 0) {
        v += 7;
        vl -= 7;
    }
    int bad = strcmp(h->encoding, "base64") == 0 ? fy_hook_parse_b64_sig(v, vl, sig[0])
                                                 : fy_hook_parse_hex_sig(v, vl, "", sig[0]);
    if (bad) {
        r->outcome = FY_HV_MALFORMED_HEADER;
        snprintf(r->message, sizeof r->message, "malformed %s header (want a %s HMAC-SHA256)",
                 h->header, h->encoding);
        return FY_HV_MALFORMED_HEADER;
    }
    if (ts && !within(h, now, t)) {
        return fail(r, FY_HV_STALE_TIMESTAMP, "%s is outside the %lld s tolerance", h->ts_header,
                    (long long)h->tolerance_s);
    }
    char pre[24];
    int pl = ts ? snprintf(pre, sizeof pre, "%lld.", (long long)t) : 0;
    if (!mac_matches(h, now, pre, (size_t)pl, body, len, (const uint8_t(*)[32])sig, 1)) {
        return fail(r, FY_HV_BAD_SIGNATURE, "%s does not match the body", h->header, 0);
    }
    return FY_HV_OK;
}

fy_hv_outcome fy_hook_verify(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                             const void *body, size_t len, int64_t now, fy_hv_result *res)
{
    memset(res, 0, sizeof *res);
    if (!body) {
        body = "";
        len = 0;
    }
    if (strcmp(h->verify, "github") == 0) {
        return verify_github(h, hs, n, body, len, now, res);
    }
    if (strcmp(h->verify, "stripe") == 0) {
        return verify_stripe(h, hs, n, body, len, now, res);
    }
    if (strcmp(h->verify, "slack") == 0) {
        return verify_slack(h, hs, n, body, len, now, res);
    }
    if (strcmp(h->verify, "hmac-sha256") == 0) {
        return verify_generic(h, hs, n, body, len, now, res);
    }
    if (strcmp(h->verify, "none") == 0) {
        return FY_HV_OK;
    }
    return fail(res, FY_HV_BAD_SIGNATURE, "hook has an unknown verification kind%s", "", 0);
}
