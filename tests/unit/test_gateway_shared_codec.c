/* gateway/shared_codec: every record type round-trips with every field at
 * its edge (longest names, paths and scope lists, 1 KiB secrets, zero and
 * largest limits and times); the encoding is stable; each field's absence is
 * refused naming it; a table of malformed values is refused naming the
 * field; decoding never reads past N (exact-size buffers, ASan) and refuses
 * what is not one JSON object. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/crypto.h"
#include "common/err.h"
#include "gateway/shared_codec.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LIMIT_MAX ((int64_t)1 << 40)

enum { K_KEY, K_RUNNER, K_TOKEN, K_HOOK };

static void fill(char *dst, size_t n, char c)
{
    memset(dst, c, n);
    dst[n] = 0;
}

static void max_key(fy_store_key *k)
{
    memset(k, 0, sizeof *k);
    fill(k->id, FY_STORE_KEY_ID_MAX - 1, 'K');
    memcpy(k->id, "key_", 4);
    /* 127 bytes of UTF-8 ("é" is 2 bytes) and one ASCII byte. */
    for (size_t i = 0; i + 2 <= FY_STORE_KEY_NAME_MAX - 1; i += 2) {
        memcpy(k->name + i, "\xc3\xa9", 2);
    }
    k->name[FY_STORE_KEY_NAME_MAX - 2] = 'x';
    fill(k->owner, FY_STORE_KEY_NAME_MAX - 1, 'o');
    fill(k->prefix, FY_STORE_KEY_PREFIX_LEN, 'p');
    for (int i = 0; i < 32; i++) {
        k->hash[i] = (uint8_t)(0xff - i * 7);
    }
    k->rpm = LIMIT_MAX;
    k->tpm = 0;
    k->concurrency = LIMIT_MAX;
    k->burst = LIMIT_MAX;
    /* A scope list of FY_STORE_SCOPE_MAX - 1 bytes: items of the longest size. */
    size_t len = 0;
    while (len + FY_STORE_SCOPE_ITEM_MAX + 1 < FY_STORE_SCOPE_MAX - 1) {
        if (len) {
            k->models[len++] = ',';
        }
        memset(k->models + len, 'm', FY_STORE_SCOPE_ITEM_MAX);
        len += FY_STORE_SCOPE_ITEM_MAX;
    }
    k->models[len++] = ',';
    memset(k->models + len, '~', FY_STORE_SCOPE_MAX - 1 - len);
    k->models[FY_STORE_SCOPE_MAX - 1] = 0;
    assert_int_equal(strlen(k->models), FY_STORE_SCOPE_MAX - 1);
    strcpy(k->runners, "meta-llama/Llama-3-8B:q4,r2");
    strcpy(k->hooks, "");
    k->created_at = INT64_MAX;
    k->expires_at = INT64_MAX;
    k->revoked_at = INT64_MAX;
    assert_null(fy_store_key_check(k));
}

static void max_runner(fy_store_runner *r)
{
    memset(r, 0, sizeof *r);
    fill(r->name, FY_STORE_NAME_MAX - 1, 'r');
    r->name[0] = '0';
    strcpy(r->fingerprint, "sha256:");
    fill(r->fingerprint + 7, 64, 'f');
    r->fingerprint[8] = '0';
    fill(r->serial, sizeof r->serial - 1, 'a');
    r->enrolled_at = INT64_MAX;
    r->revoked_at = 0;
}

static void max_token(fy_store_token *t)
{
    memset(t, 0, sizeof *t);
    fill(t->id, sizeof t->id - 1, 'Z');
    memcpy(t->id, "tok_-_9", 7);
    fill(t->runner_name, FY_STORE_NAME_MAX - 1, '-');
    t->runner_name[0] = 'z';
    t->created_at = 0;
    t->expires_at = INT64_MAX;
    t->used_at = INT64_MAX;
}

static void max_hook(fy_store_hook *h)
{
    memset(h, 0, sizeof *h);
    fill(h->id, FY_STORE_HOOK_ID_MAX - 1, 'h');
    memcpy(h->id, "hk_", 3);
    fill(h->name, FY_STORE_KEY_NAME_MAX - 1, '"'); /* every byte escaped in JSON */
    fill(h->runner, FY_STORE_NAME_MAX - 1, 'r');
    fill(h->path, FY_STORE_HOOK_PATH_MAX - 1, '\\');
    h->path[0] = '/';
    strcpy(h->verify, "hmac-sha256");
    fill(h->header, FY_STORE_HOOK_HDR_MAX - 1, 'X');
    strcpy(h->encoding, "base64");
    fill(h->ts_header, FY_STORE_HOOK_HDR_MAX - 1, '_');
    h->tolerance_s = 86400 * 7;
    h->async = 1;
    h->rpm = LIMIT_MAX;
    h->max_body = (int64_t)1 << 40;
    for (size_t i = 0; i < FY_STORE_HOOK_SECRET_MAX; i++) {
        h->secret[i] = (uint8_t)i;
        h->prev_secret[i] = (uint8_t)(255 - i);
    }
    h->secret_len = FY_STORE_HOOK_SECRET_MAX;
    h->prev_len = FY_STORE_HOOK_SECRET_MAX;
    h->prev_until = INT64_MAX;
    h->created_at = 1;
    assert_null(fy_store_hook_check(h));
}

static void min_hook(fy_store_hook *h)
{
    memset(h, 0, sizeof *h);
    strcpy(h->id, "hk_a");
    strcpy(h->name, "n");
    strcpy(h->runner, "a");
    strcpy(h->path, "/");
    strcpy(h->verify, "none");
    h->tolerance_s = 1;
    h->max_body = 1;
    assert_null(fy_store_hook_check(h));
}

/* Encodes REC of KIND. */
static char *encode(int kind, const void *rec)
{
    switch (kind) {
    case K_KEY:
        return fy_shc_key_encode(rec);
    case K_RUNNER:
        return fy_shc_runner_encode(rec);
    case K_TOKEN:
        return fy_shc_token_encode(rec);
    default:
        return fy_shc_hook_encode(rec);
    }
}

/* Decodes exactly N bytes copied into a buffer of that size (no NUL after
 * them: ASan reports any read past N). */
static int decode(int kind, const char *s, size_t n, void *out, char *err, size_t errlen)
{
    char *b = malloc(n ? n : 1);
    assert_non_null(b);
    memcpy(b, s, n);
    int rc;
    switch (kind) {
    case K_KEY:
        rc = fy_shc_key_decode(b, n, out, err, errlen);
        break;
    case K_RUNNER:
        rc = fy_shc_runner_decode(b, n, out, err, errlen);
        break;
    case K_TOKEN:
        rc = fy_shc_token_decode(b, n, out, err, errlen);
        break;
    default:
        rc = fy_shc_hook_decode(b, n, out, err, errlen);
        break;
    }
    free(b);
    return rc;
}

static size_t rec_size(int kind)
{
    return kind == K_KEY      ? sizeof(fy_store_key)
           : kind == K_RUNNER ? sizeof(fy_store_runner)
           : kind == K_TOKEN  ? sizeof(fy_store_token)
                              : sizeof(fy_store_hook);
}

/* REC encodes, decodes to the same bytes, and re-encodes to the same text. */
static void round_trip(int kind, const void *rec)
{
    char err[256];
    char *s = encode(kind, rec);
    assert_non_null(s);
    void *back = malloc(rec_size(kind));
    assert_non_null(back);
    int rc = decode(kind, s, strlen(s), back, err, sizeof err);
    if (rc) {
        fail_msg("decode: %s", err);
    }
    assert_memory_equal(back, rec, rec_size(kind));
    char *again = encode(kind, back);
    assert_string_equal(again, s);
    free(again);
    free(back);
    free(s);
}

static void test_round_trips(void **state)
{
    (void)state;
    fy_store_key k;
    max_key(&k);
    round_trip(K_KEY, &k);
    memset(&k, 0, sizeof k);
    strcpy(k.id, "k");
    strcpy(k.name, "n");
    strcpy(k.prefix, "p");
    round_trip(K_KEY, &k); /* zeros, empty owner and scopes */

    fy_store_runner r;
    max_runner(&r);
    round_trip(K_RUNNER, &r);

    fy_store_token t;
    max_token(&t);
    round_trip(K_TOKEN, &t);

    fy_store_hook *h = malloc(sizeof *h);
    assert_non_null(h);
    max_hook(h);
    round_trip(K_HOOK, h);
    min_hook(h);
    round_trip(K_HOOK, h);
    strcpy(h->verify, "github");
    h->secret_len = 1;
    h->secret[0] = 0;
    round_trip(K_HOOK, h);
    free(h);
}

static void test_encoding_shape(void **state)
{
    (void)state;
    fy_store_key k;
    memset(&k, 0, sizeof k);
    strcpy(k.id, "key_a");
    strcpy(k.name, "n");
    strcpy(k.prefix, "fy_ab");
    k.hash[0] = 0xab;
    k.rpm = 5;
    k.last_used_at = 99; /* not part of the record */
    char *s = fy_shc_key_encode(&k);
    assert_non_null(s);
    assert_string_equal(s, "{\"id\":\"key_a\",\"name\":\"n\",\"owner\":\"\",\"prefix\":\"fy_ab\","
                           "\"hash\":\"ab000000000000000000000000000000000000000000000000000000"
                           "00000000\",\"rpm\":5,\"tpm\":0,\"concurrency\":0,\"burst\":0,"
                           "\"models\":\"\",\"runners\":\"\",\"hooks\":\"\",\"created_at\":0,"
                           "\"expires_at\":0,\"revoked_at\":0}");
    free(s);

    fy_store_hook h;
    min_hook(&h);
    h.secret_len = 3;
    memcpy(h.secret, "\xfb\xff\x01", 3);
    h.delivered = 7;
    h.queued = 8;
    h.dead = 9;
    s = fy_shc_hook_encode(&h);
    assert_non_null(s);
    assert_non_null(strstr(s, "\"secret\":\"-_8B\""));
    assert_non_null(strstr(s, "\"prev_secret\":\"\""));
    assert_non_null(strstr(s, "\"async\":false"));
    assert_null(strstr(s, "delivered"));
    assert_null(strstr(s, "queued"));
    assert_null(strstr(s, "dead"));
    free(s);

    /* A text field that is not UTF-8 cannot be carried: NULL. */
    strcpy(k.name, "\xff");
    assert_null(fy_shc_key_encode(&k));
}

static void test_hex(void **state)
{
    (void)state;
    uint8_t h[32], back[32];
    char hex[65];
    for (int i = 0; i < 32; i++) {
        h[i] = (uint8_t)(i * 9);
    }
    fy_shc_hex(h, hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(fy_shc_unhex(hex, 64, back), 0);
    assert_memory_equal(back, h, 32);
    assert_int_equal(fy_shc_unhex(hex, 63, back), FY_EINVAL);
    hex[5] = 'A';
    assert_int_equal(fy_shc_unhex(hex, 64, back), FY_EINVAL);
    hex[5] = 'g';
    assert_int_equal(fy_shc_unhex(hex, 64, back), FY_EINVAL);
    assert_int_equal(fy_shc_unhex("", 0, back), FY_EINVAL);
}

/* The valid record of KIND that malformed cases start from, encoded. */
static char *valid_text(int kind)
{
    fy_store_key k;
    fy_store_runner r;
    fy_store_token t;
    fy_store_hook h;
    switch (kind) {
    case K_KEY:
        max_key(&k);
        return encode(kind, &k);
    case K_RUNNER:
        max_runner(&r);
        return encode(kind, &r);
    case K_TOKEN:
        max_token(&t);
        return encode(kind, &t);
    default:
        max_hook(&h);
        strcpy(h.verify, "hmac-sha256");
        return encode(kind, &h);
    }
}

/* The valid record of KIND with FIELD set to the JSON VALUE (NULL: removed). */
static char *with_field(int kind, const char *field, const char *value)
{
    char *s = valid_text(kind);
    json_t *o = json_loads(s, 0, NULL);
    assert_non_null(o);
    free(s);
    if (value) {
        json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        json_object_set_new(o, field, v);
    } else {
        json_object_del(o, field);
    }
    s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

static void expect_refused(int kind, const char *text, size_t n, int want_rc, const char *want)
{
    char err[256] = "";
    void *out = malloc(rec_size(kind));
    assert_non_null(out);
    int rc = decode(kind, text, n, out, err, sizeof err);
    if (rc != want_rc || !strstr(err, want)) {
        fail_msg("kind %d: %.120s: rc %d err '%s', want %d '%s'", kind, text, rc, err, want_rc,
                 want);
    }
    /* A refused record leaves nothing behind (secrets included). */
    for (size_t i = 0; i < rec_size(kind); i++) {
        assert_int_equal(((uint8_t *)out)[i], 0);
    }
    free(out);
}

static void test_missing_fields(void **state)
{
    (void)state;
    for (int kind = K_KEY; kind <= K_HOOK; kind++) {
        char *s = valid_text(kind);
        json_t *o = json_loads(s, 0, NULL);
        const char *name;
        json_t *v;
        size_t nfields = 0;
        json_object_foreach(o, name, v)
        {
            char *t = with_field(kind, name, NULL);
            char want[80];
            snprintf(want, sizeof want, "field '%s': missing", name);
            expect_refused(kind, t, strlen(t), FY_EINVAL, want);
            free(t);
            nfields++;
        }
        assert_int_equal(nfields, kind == K_KEY      ? 15
                                  : kind == K_RUNNER ? 5
                                  : kind == K_TOKEN  ? 5
                                                     : 16);
        json_decref(o);
        free(s);
    }
}

typedef struct {
    int kind;
    const char *field;
    const char *value; /* JSON */
    const char *named; /* the field ERR names (FIELD when NULL) */
} bad_case;

#define S128                                                                                       \
    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\""
#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const bad_case bad_cases[] = {
    {K_KEY, "id", "123", NULL},
    {K_KEY, "id", "\"\"", NULL},
    {K_KEY, "id", "\"key a\"", NULL},
    {K_KEY, "id", "\"key_aaaaaaaaaaaaaaaaaaaa\"", NULL}, /* 24 bytes */
    {K_KEY, "name", "\"\"", NULL},
    {K_KEY, "name", S128, NULL},
    {K_KEY, "name", "\"a\\u0001\"", NULL},
    {K_KEY, "name", "\"a\\u007f\"", NULL},
    {K_KEY, "owner", "null", NULL},
    {K_KEY, "owner", S128, NULL},
    {K_KEY, "prefix", "\"fy_123456\"", NULL},
    {K_KEY, "prefix", "\"\"", NULL},
    {K_KEY, "hash", "\"" HEX64 "0\"", NULL},
    {K_KEY, "hash", "\"0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"", NULL},
    {K_KEY, "hash", "\"0123\"", NULL},
    {K_KEY, "hash", "[]", NULL},
    {K_KEY, "rpm", "-1", NULL},
    {K_KEY, "rpm", "1.5", NULL},
    {K_KEY, "rpm", "\"5\"", NULL},
    {K_KEY, "rpm", "1099511627777", NULL}, /* 2^40 + 1 */
    {K_KEY, "tpm", "-9223372036854775808", NULL},
    {K_KEY, "concurrency", "true", NULL},
    {K_KEY, "burst", "1099511627777", NULL},
    {K_KEY, "models", "\"a,,b\"", NULL},
    {K_KEY, "models", "\"a b\"", NULL},
    {K_KEY, "models", "\",\"", NULL},
    {K_KEY, "runners", "[\"a\"]", NULL},
    {K_KEY, "hooks", "\"x\\u00e9\"", NULL}, /* non-ASCII in a scope */
    {K_KEY, "created_at", "-1", NULL},
    {K_KEY, "expires_at", "-1", NULL},
    {K_KEY, "revoked_at", "false", NULL},
    {K_RUNNER, "name", "\"-x\"", NULL},
    {K_RUNNER, "name", "\"Upper\"", NULL},
    {K_RUNNER, "name", "\"\"", NULL},
    {K_RUNNER, "fingerprint", "\"sha256:abc\"", NULL},
    {K_RUNNER, "fingerprint", "\"sha1:" HEX64 "\"", NULL},
    {K_RUNNER, "fingerprint",
     "\"sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\"", NULL},
    {K_RUNNER, "serial", "\"xyz\"", NULL},
    {K_RUNNER, "serial", "\"\"", NULL},
    {K_RUNNER, "enrolled_at", "-5", NULL},
    {K_RUNNER, "revoked_at", "{}", NULL},
    {K_TOKEN, "id", "\"key_abc\"", NULL},
    {K_TOKEN, "id", "\"tok_\"", NULL},
    {K_TOKEN, "id", "\"tok_a b\"", NULL},
    {K_TOKEN, "id", "\"tok_aaaaaaaaaaaaaaaaaaaa\"", NULL}, /* 24 bytes */
    {K_TOKEN, "runner_name", "\"Bad\"", NULL},
    {K_TOKEN, "created_at", "-1", NULL},
    {K_TOKEN, "expires_at", "\"1\"", NULL},
    {K_TOKEN, "used_at", "1e3", NULL},
    {K_HOOK, "id", "\"hx_abc\"", NULL},
    {K_HOOK, "id", "\"hk_\"", NULL},
    {K_HOOK, "name", "\"\"", NULL},
    {K_HOOK, "runner", "\"no_underscores\"", NULL},
    {K_HOOK, "path", "\"x\"", NULL},
    {K_HOOK, "path", "\"/a b\"", NULL},
    {K_HOOK, "path", "\"/a#b\"", NULL},
    {K_HOOK, "verify", "\"md5\"", NULL},
    {K_HOOK, "verify", "\"hmac-sha256-and-more\"", NULL}, /* over the array */
    {K_HOOK, "header", "\"\"", NULL},
    {K_HOOK, "header", "\"x:y\"", NULL},
    {K_HOOK, "encoding", "\"b32\"", NULL},
    {K_HOOK, "encoding", "\"base64url\"", NULL}, /* over the array */
    {K_HOOK, "ts_header", "\"a b\"", NULL},
    {K_HOOK, "tolerance_s", "0", NULL},
    {K_HOOK, "tolerance_s", "604801", NULL},
    {K_HOOK, "async", "1", NULL},
    {K_HOOK, "async", "null", NULL},
    {K_HOOK, "rpm", "-1", NULL},
    {K_HOOK, "max_body", "0", NULL},
    {K_HOOK, "max_body", "1099511627777", NULL},
    {K_HOOK, "secret", "\"!!!!\"", NULL},
    {K_HOOK, "secret", "\"AAA=\"", NULL}, /* padding is not base64url */
    {K_HOOK, "secret", "\"AB\"", NULL},   /* non-canonical trailing bits */
    {K_HOOK, "secret", "\"\"", NULL},     /* hmac-sha256 needs one */
    {K_HOOK, "prev_secret", "5", NULL},
    {K_HOOK, "prev_until", "-1", NULL},
    {K_HOOK, "created_at", "\"x\"", NULL},
};

static void test_bad_fields(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        char *t = with_field(c->kind, c->field, c->value);
        char want[80];
        snprintf(want, sizeof want, "field '%s'", c->named ? c->named : c->field);
        expect_refused(c->kind, t, strlen(t), FY_EINVAL, want);
        free(t);
    }
}

static void test_oversized_secret(void **state)
{
    (void)state;
    /* 1025 bytes of secret: valid base64url, one byte over the limit. */
    size_t n = FY_B64URL_ENCODED_LEN(FY_STORE_HOOK_SECRET_MAX + 1);
    char *v = malloc(n + 3);
    assert_non_null(v);
    v[0] = '"';
    memset(v + 1, 'A', n);
    v[n] = 'A'; /* 1025 = 3 * 341 + 2: the last char carries no stray bits as 'A' */
    v[n + 1] = '"';
    v[n + 2] = 0;
    char *t = with_field(K_HOOK, "prev_secret", v);
    expect_refused(K_HOOK, t, strlen(t), FY_EINVAL, "field 'prev_secret'");
    free(t);
    free(v);
}

static void test_not_a_record(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "", "{", "[]", "\"x\"", "null", "{} {}", "{\"id\":\"a\\u0000b\"}", "\xff",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        for (int kind = K_KEY; kind <= K_HOOK; kind++) {
            expect_refused(kind, texts[i], strlen(texts[i]), FY_EINVAL, "record");
        }
    }
    /* Duplicate names: refused, whichever copy would have won. */
    char *s = valid_text(K_TOKEN);
    size_t n = strlen(s);
    char *dup = malloc(n + 32);
    assert_non_null(dup);
    snprintf(dup, n + 32, "%.*s,\"used_at\":0}", (int)(n - 1), s);
    expect_refused(K_TOKEN, dup, strlen(dup), FY_EINVAL, "record");
    free(dup);

    /* N bounds the text: a valid record followed by junk decodes when N
     * stops at its end, and is refused when N cuts it short. */
    char *buf = malloc(n + 8);
    assert_non_null(buf);
    memcpy(buf, s, n);
    memcpy(buf + n, "garbage", 8);
    fy_store_token t;
    char err[128];
    assert_int_equal(fy_shc_token_decode(buf, n, &t, err, sizeof err), 0);
    expect_refused(K_TOKEN, buf, n - 1, FY_EINVAL, "record");
    expect_refused(K_TOKEN, buf, n + 7, FY_EINVAL, "record");
    free(buf);
    free(s);

    /* Over FY_SHC_RECORD_MAX: refused unparsed. */
    char *big = malloc(FY_SHC_RECORD_MAX + 1);
    assert_non_null(big);
    memset(big, ' ', FY_SHC_RECORD_MAX + 1);
    big[0] = '{';
    big[FY_SHC_RECORD_MAX] = '}';
    expect_refused(K_KEY, big, FY_SHC_RECORD_MAX + 1, FY_ETOOBIG, "record");
    free(big);

    /* An unknown field is ignored. */
    char *t2 = with_field(K_RUNNER, "future_field", "{\"x\":[1,2]}");
    fy_store_runner r, want;
    max_runner(&want);
    assert_int_equal(fy_shc_runner_decode(t2, strlen(t2), &r, err, sizeof err), 0);
    assert_memory_equal(&r, &want, sizeof r);
    free(t2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),  cmocka_unit_test(test_encoding_shape),
        cmocka_unit_test(test_hex),          cmocka_unit_test(test_missing_fields),
        cmocka_unit_test(test_bad_fields),   cmocka_unit_test(test_oversized_secret),
        cmocka_unit_test(test_not_a_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
