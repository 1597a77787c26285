/* shared_codec.c: shared-state records as JSON (see shared_codec.h). */
#include "gateway/shared_codec.h"

#include "common/crypto.h"
#include "common/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- encoding ------------------------------------------------------------------- */

/* Fields are added in the order given, and json_dumps keeps that order, so a
 * record always encodes to the same text. */
static int put_str(json_t *o, const char *name, const char *s, size_t cap)
{
    json_t *v = json_stringn(s, strnlen(s, cap));
    return v ? json_object_set_new(o, name, v) : -1;
}

static int put_int(json_t *o, const char *name, int64_t v)
{
    return json_object_set_new(o, name, json_integer((json_int_t)v));
}

static int put_b64(json_t *o, const char *name, const uint8_t *p, size_t n)
{
    char text[FY_B64URL_ENCODED_LEN(FY_STORE_HOOK_SECRET_MAX) + 1];
    if (n > FY_STORE_HOOK_SECRET_MAX || fy_b64url_encode(p, n, text, sizeof text)) {
        return -1;
    }
    int rc = put_str(o, name, text, sizeof text);
    fy_secure_zero(text, sizeof text);
    return rc;
}

static char *dump(json_t *o, int failed)
{
    char *s = !failed && o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

#define PUT_STR(o, rec, f) put_str(o, #f, (rec)->f, sizeof(rec)->f)
#define PUT_INT(o, rec, f) put_int(o, #f, (rec)->f)

char *fy_shc_key_encode(const fy_store_key *k)
{
    json_t *o = json_object();
    char hex[65];
    fy_shc_hex(k->hash, hex);
    int bad = !o || PUT_STR(o, k, id) || PUT_STR(o, k, name) || PUT_STR(o, k, owner) ||
              PUT_STR(o, k, prefix) || put_str(o, "hash", hex, sizeof hex) || PUT_INT(o, k, rpm) ||
              PUT_INT(o, k, tpm) || PUT_INT(o, k, concurrency) || PUT_INT(o, k, burst) ||
              PUT_STR(o, k, models) || PUT_STR(o, k, runners) || PUT_STR(o, k, hooks) ||
              PUT_INT(o, k, created_at) || PUT_INT(o, k, expires_at) || PUT_INT(o, k, revoked_at);
    return dump(o, bad);
}

char *fy_shc_runner_encode(const fy_store_runner *r)
{
    json_t *o = json_object();
    int bad = !o || PUT_STR(o, r, name) || PUT_STR(o, r, fingerprint) || PUT_STR(o, r, serial) ||
              PUT_INT(o, r, enrolled_at) || PUT_INT(o, r, revoked_at);
    return dump(o, bad);
}

char *fy_shc_token_encode(const fy_store_token *t)
{
    json_t *o = json_object();
    int bad = !o || PUT_STR(o, t, id) || PUT_STR(o, t, runner_name) || PUT_INT(o, t, created_at) ||
              PUT_INT(o, t, expires_at) || PUT_INT(o, t, used_at);
    return dump(o, bad);
}

char *fy_shc_hook_encode(const fy_store_hook *h)
{
    json_t *o = json_object();
    int bad = !o || PUT_STR(o, h, id) || PUT_STR(o, h, name) || PUT_STR(o, h, runner) ||
              PUT_STR(o, h, path) || PUT_STR(o, h, verify) || PUT_STR(o, h, header) ||
              PUT_STR(o, h, encoding) || PUT_STR(o, h, ts_header) || PUT_INT(o, h, tolerance_s) ||
              json_object_set_new(o, "async", json_boolean(h->async)) || PUT_INT(o, h, rpm) ||
              PUT_INT(o, h, max_body) || put_b64(o, "secret", h->secret, h->secret_len) ||
              put_b64(o, "prev_secret", h->prev_secret, h->prev_len) || PUT_INT(o, h, prev_until) ||
              PUT_INT(o, h, created_at);
    /* The secrets' text lives in jansson's strings until the object is
     * freed; the dumped text is the caller's to wipe. */
    return dump(o, bad);
}

void fy_shc_hex(const uint8_t hash[32], char out[65])
{
    fy_hex_encode(hash, 32, out, 65);
}

int fy_shc_unhex(const char *s, size_t n, uint8_t out[32])
{
    int ok = n == 64;
    for (size_t i = 0; ok && i < n; i++) {
        ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f');
    }
    if (!ok || fy_hex_decode(s, n, out, 32, NULL)) {
        memset(out, 0, 32);
        return FY_EINVAL;
    }
    return 0;
}

/* --- decoding ------------------------------------------------------------------- */

/* A decoder keeps the first error only: once RC is set every getter does
 * nothing, so a record reads as a flat list of fields. */
typedef struct {
    json_t *root;
    char *err;
    size_t errlen;
    int rc;
} dec;

static void bad(dec *d, const char *field, const char *why)
{
    if (!d->rc) {
        d->rc = fy_fail(d->err, d->errlen, FY_EINVAL, "field '%s': %s", field, why);
    }
}

/* Refuses FIELD when OK is false (and nothing failed before). */
static void need(dec *d, int ok, const char *field, const char *why)
{
    if (!ok) {
        bad(d, field, why);
    }
}

static json_t *field(dec *d, const char *name)
{
    if (d->rc) {
        return NULL;
    }
    json_t *v = json_object_get(d->root, name);
    if (!v) {
        bad(d, name, "missing");
    }
    return v;
}

/* A string of MIN..CAP-1 bytes into DST[CAP] (jansson refuses NULs in
 * strings at load, so the length is the C length). */
static void get_str(dec *d, const char *name, char *dst, size_t cap, size_t min)
{
    json_t *v = field(d, name);
    size_t n = v ? json_string_length(v) : 0;
    if (!v) {
        return;
    } else if (!json_is_string(v)) {
        bad(d, name, "not a string");
    } else if (n >= cap) {
        bad(d, name, "too long");
    } else if (n < min) {
        bad(d, name, "empty");
    } else {
        memcpy(dst, json_string_value(v), n);
        dst[n] = 0;
    }
}

static void get_int(dec *d, const char *name, int64_t *out)
{
    json_t *v = field(d, name);
    if (!v) {
        return;
    } else if (!json_is_integer(v)) {
        bad(d, name, "not an integer");
    } else if (json_integer_value(v) < 0) {
        bad(d, name, "out of range");
    } else {
        *out = (int64_t)json_integer_value(v);
    }
}

static void get_bool(dec *d, const char *name, int *out)
{
    json_t *v = field(d, name);
    if (!v) {
        return;
    } else if (!json_is_boolean(v)) {
        bad(d, name, "not a boolean");
    } else {
        *out = json_is_true(v);
    }
}

static void get_b64(dec *d, const char *name, uint8_t *dst, size_t *len)
{
    json_t *v = field(d, name);
    size_t n = v ? json_string_length(v) : 0;
    if (!v) {
        return;
    } else if (!json_is_string(v)) {
        bad(d, name, "not a string");
    } else if (n > FY_B64URL_ENCODED_LEN(FY_STORE_HOOK_SECRET_MAX)) {
        bad(d, name, "too long");
    } else if (fy_b64url_decode(json_string_value(v), n, dst, FY_STORE_HOOK_SECRET_MAX, len)) {
        *len = 0;
        bad(d, name, "not base64url");
    }
}

/* 1 when every character of S is in [0-9a-f] (HEX_ONLY) or [A-Za-z0-9_-]. */
static int all_of(const char *s, int hex_only)
{
    for (; *s; s++) {
        char c = *s;
        int ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        if (!hex_only) {
            ok = ok || (c >= 'g' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
        }
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

static void dec_open(dec *d, const char *s, size_t n, char *err, size_t errlen)
{
    json_error_t jerr;
    *d = (dec){.err = err, .errlen = errlen};
    if (err && errlen) {
        err[0] = 0;
    }
    if (n > FY_SHC_RECORD_MAX) {
        d->rc = fy_fail(err, errlen, FY_ETOOBIG, "record: over %d bytes", FY_SHC_RECORD_MAX);
        return;
    }
    d->root = s ? json_loadb(s, n, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!d->root) {
        d->rc = fy_fail(err, errlen, FY_EINVAL, "record: not JSON: %s", s ? jerr.text : "no text");
    } else if (!json_is_object(d->root)) {
        d->rc = fy_fail(err, errlen, FY_EINVAL, "record: not a JSON object");
    }
}

static int dec_close(dec *d, void *out, size_t size)
{
    json_decref(d->root);
    if (d->rc) {
        fy_secure_zero(out, size);
    }
    return d->rc;
}

#define GET_STR(d, rec, f, min) get_str(d, #f, (rec)->f, sizeof(rec)->f, min)
#define GET_INT(d, rec, f)      get_int(d, #f, &(rec)->f)

int fy_shc_key_decode(const char *s, size_t n, fy_store_key *out, char *err, size_t errlen)
{
    dec d;
    char hex[65] = "";
    memset(out, 0, sizeof *out);
    dec_open(&d, s, n, err, errlen);
    GET_STR(&d, out, id, 1);
    GET_STR(&d, out, name, 1);
    GET_STR(&d, out, owner, 0);
    GET_STR(&d, out, prefix, 1);
    get_str(&d, "hash", hex, sizeof hex, 0);
    need(&d, fy_shc_unhex(hex, strlen(hex), out->hash) == 0, "hash", "not 64 lowercase hex digits");
    GET_INT(&d, out, rpm);
    GET_INT(&d, out, tpm);
    GET_INT(&d, out, concurrency);
    GET_INT(&d, out, burst);
    GET_STR(&d, out, models, 0);
    GET_STR(&d, out, runners, 0);
    GET_STR(&d, out, hooks, 0);
    GET_INT(&d, out, created_at);
    GET_INT(&d, out, expires_at);
    GET_INT(&d, out, revoked_at);
    const char *why = fy_store_key_check(out);
    need(&d, why == NULL, why, "invalid");
    return dec_close(&d, out, sizeof *out);
}

int fy_shc_runner_decode(const char *s, size_t n, fy_store_runner *out, char *err, size_t errlen)
{
    dec d;
    memset(out, 0, sizeof *out);
    dec_open(&d, s, n, err, errlen);
    GET_STR(&d, out, name, 1);
    need(&d, fy_store_valid_name(out->name), "name", "invalid");
    GET_STR(&d, out, fingerprint, 1);
    need(&d,
         strncmp(out->fingerprint, "sha256:", 7) == 0 && strlen(out->fingerprint) == 71 &&
             all_of(out->fingerprint + 7, 1),
         "fingerprint", "not sha256: and 64 lowercase hex digits");
    GET_STR(&d, out, serial, 1);
    need(&d, all_of(out->serial, 1), "serial", "not lowercase hex");
    GET_INT(&d, out, enrolled_at);
    GET_INT(&d, out, revoked_at);
    return dec_close(&d, out, sizeof *out);
}

int fy_shc_token_decode(const char *s, size_t n, fy_store_token *out, char *err, size_t errlen)
{
    dec d;
    memset(out, 0, sizeof *out);
    dec_open(&d, s, n, err, errlen);
    GET_STR(&d, out, id, 1);
    need(&d, strncmp(out->id, "tok_", 4) == 0 && out->id[4] && all_of(out->id + 4, 0), "id",
         "invalid");
    GET_STR(&d, out, runner_name, 1);
    need(&d, fy_store_valid_name(out->runner_name), "runner_name", "invalid");
    GET_INT(&d, out, created_at);
    GET_INT(&d, out, expires_at);
    GET_INT(&d, out, used_at);
    return dec_close(&d, out, sizeof *out);
}

int fy_shc_hook_decode(const char *s, size_t n, fy_store_hook *out, char *err, size_t errlen)
{
    dec d;
    memset(out, 0, sizeof *out);
    dec_open(&d, s, n, err, errlen);
    GET_STR(&d, out, id, 1);
    GET_STR(&d, out, name, 1);
    GET_STR(&d, out, runner, 1);
    GET_STR(&d, out, path, 1);
    GET_STR(&d, out, verify, 1);
    GET_STR(&d, out, header, 0);
    GET_STR(&d, out, encoding, 0);
    GET_STR(&d, out, ts_header, 0);
    GET_INT(&d, out, tolerance_s);
    get_bool(&d, "async", &out->async);
    GET_INT(&d, out, rpm);
    GET_INT(&d, out, max_body);
    get_b64(&d, "secret", out->secret, &out->secret_len);
    get_b64(&d, "prev_secret", out->prev_secret, &out->prev_len);
    GET_INT(&d, out, prev_until);
    GET_INT(&d, out, created_at);
    const char *why = fy_store_hook_check(out);
    need(&d, why == NULL, why, "invalid");
    return dec_close(&d, out, sizeof *out);
}
