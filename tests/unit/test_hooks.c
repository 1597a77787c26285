/* gateway/hookverify and the store's hook tables: signature header parsers,
 * each scheme against vectors computed with Python's hmac (GitHub's with the
 * example from its documentation), tampering, timestamps, the previous
 * secret's grace period; hooks, replay records and the delivery queue in a
 * real SQLite file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "gateway/hookverify.h"
#include "gateway/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define T0 1700000000

static const char BODY[] = "{\"a\":1}";

static void hook_init(fy_store_hook *h, const char *verify, const char *secret)
{
    memset(h, 0, sizeof *h);
    strcpy(h->id, "hk_test");
    strcpy(h->name, "t");
    strcpy(h->runner, "r1");
    strcpy(h->path, "/p");
    strcpy(h->verify, verify);
    strcpy(h->encoding, "hex");
    h->tolerance_s = 300;
    h->max_body = 1024;
    h->secret_len = strlen(secret);
    memcpy(h->secret, secret, h->secret_len);
}

static fy_hv_outcome run(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                         const char *body, int64_t now)
{
    fy_hv_result r;
    fy_hv_outcome o = fy_hook_verify(h, hs, n, body, strlen(body), now, &r);
    assert_int_equal(o, r.outcome);
    if (o != FY_HV_OK) {
        assert_true(strlen(r.message) > 0);
    }
    return o;
}

static void test_parsers(void **state)
{
    (void)state;
    int64_t t;
    uint8_t sigs[4][32], one[32];
    size_t ns;
    const char *h64 = "b3438763ab46d9634b9844c8722818eaf523f803db1327484c6067462a5fd6d1";
    char buf[400];
    snprintf(buf, sizeof buf, " t=123 , v1=%s,v0=zz,v1=%s,v1=abc", h64, h64);
    assert_int_equal(fy_hook_parse_stripe(buf, strlen(buf), &t, sigs, 4, &ns), 0);
    assert_int_equal(t, 123);
    assert_int_equal(ns, 2);
    assert_int_equal(sigs[0][0], 0xb3);
    snprintf(buf, sizeof buf, "v1=%s", h64);
    assert_int_equal(fy_hook_parse_stripe(buf, strlen(buf), &t, sigs, 4, &ns), FY_EPARSE);
    snprintf(buf, sizeof buf, "t=1,t=2,v1=%s", h64);
    assert_int_equal(fy_hook_parse_stripe(buf, strlen(buf), &t, sigs, 4, &ns), FY_EPARSE);
    assert_int_equal(fy_hook_parse_stripe("t=1,v1=ab", 9, &t, sigs, 4, &ns), FY_EPARSE);
    assert_int_equal(fy_hook_parse_stripe("t=1,garbage", 11, &t, sigs, 4, &ns), FY_EPARSE);
    assert_int_equal(fy_hook_parse_stripe("t=x1,v1=", 8, &t, sigs, 4, &ns), FY_EPARSE);
    assert_int_equal(fy_hook_parse_stripe("", 0, &t, sigs, 4, &ns), FY_EPARSE);
    /* More v1 than fit: the first MAX are kept. */
    snprintf(buf, sizeof buf, "t=1,v1=%s,v1=%s,v1=%s", h64, h64, h64);
    assert_int_equal(fy_hook_parse_stripe(buf, strlen(buf), &t, sigs, 2, &ns), 0);
    assert_int_equal(ns, 2);

    snprintf(buf, sizeof buf, "SHA256=%s ", h64);
    assert_int_equal(fy_hook_parse_hex_sig(buf, strlen(buf), "sha256=", one), 0);
    assert_int_equal(fy_hook_parse_hex_sig(buf, strlen(buf) - 2, "sha256=", one), FY_EPARSE);
    assert_int_equal(fy_hook_parse_hex_sig(h64, 64, "v0=", one), FY_EPARSE);
    const char *b64 = "OdrV+1OJTG1jZH3kNTpTBxcA1Yy1QTw9BWdH5EvmjuQ=";
    assert_int_equal(fy_hook_parse_b64_sig(b64, 44, one), 0);
    assert_int_equal(one[0], 0x39);
    assert_int_equal(fy_hook_parse_b64_sig(b64, 43, one), 0); /* without padding */
    assert_int_equal(fy_hook_parse_b64_sig("OdrV-1OJTG1jZH3kNTpTBxcA1Yy1QTw9BWdH5EvmjuQ=", 44, one),
                     FY_EPARSE);
    assert_int_equal(fy_hook_parse_b64_sig(b64, 40, one), FY_EPARSE);
    assert_int_equal(fy_hook_parse_unix("1700000000", 10, &t), 0);
    assert_int_equal(fy_hook_parse_unix("-1", 2, &t), FY_EPARSE);
    assert_int_equal(fy_hook_parse_unix("1234567890123", 13, &t), FY_EPARSE);
}

static void test_github(void **state)
{
    (void)state;
    fy_store_hook h;
    hook_init(&h, "github", "It's a Secret to Everybody");
    fy_http_header hs[] = {
        {"x-hub-signature-256",
         "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17", 0, 0},
        {"X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958", 0, 0},
    };
    fy_hv_result r;
    assert_int_equal(fy_hook_verify(&h, hs, 2, "Hello, World!", 13, T0, &r), FY_HV_OK);
    assert_int_equal(r.delivery_len, 36);
    assert_memory_equal(r.delivery, "72d3162e", 8);
    assert_int_equal(run(&h, hs, 2, "Hello, World?", T0), FY_HV_BAD_SIGNATURE);
    assert_int_equal(run(&h, hs, 1, "Hello, World!", T0), FY_HV_MISSING_HEADER);
    assert_int_equal(run(&h, hs + 1, 1, "Hello, World!", T0), FY_HV_MISSING_HEADER);
    hook_init(&h, "github", "It's a Secret to Everybody!");
    assert_int_equal(run(&h, hs, 2, "Hello, World!", T0), FY_HV_BAD_SIGNATURE);
    /* The previous secret, while its grace period lasts. */
    memcpy(h.prev_secret, "It's a Secret to Everybody", 26);
    h.prev_len = 26;
    h.prev_until = T0 + 10;
    assert_int_equal(run(&h, hs, 2, "Hello, World!", T0 + 9), FY_HV_OK);
    assert_int_equal(run(&h, hs, 2, "Hello, World!", T0 + 10), FY_HV_BAD_SIGNATURE);
}

static void test_stripe_slack_generic(void **state)
{
    (void)state;
    fy_store_hook h;
    hook_init(&h, "stripe", "whsec_x");
    const char *good = "b3438763ab46d9634b9844c8722818eaf523f803db1327484c6067462a5fd6d1";
    char v[300];
    snprintf(v, sizeof v, "t=%d,v1=%064d,v1=%s", T0, 0, good);
    fy_http_header st[] = {{"Stripe-Signature", v, 0, 0}};
    assert_int_equal(run(&h, st, 1, BODY, T0), FY_HV_OK);
    assert_int_equal(run(&h, st, 1, BODY, T0 + 300), FY_HV_OK);
    assert_int_equal(run(&h, st, 1, BODY, T0 + 301), FY_HV_STALE_TIMESTAMP);
    assert_int_equal(run(&h, st, 1, BODY, T0 - 301), FY_HV_STALE_TIMESTAMP); /* future */
    assert_int_equal(run(&h, st, 1, "{\"a\":2}", T0), FY_HV_BAD_SIGNATURE);
    snprintf(v, sizeof v, "t=%d,v1=%s", T0 + 1, good);
    assert_int_equal(run(&h, st, 1, BODY, T0), FY_HV_BAD_SIGNATURE);
    assert_int_equal(run(&h, st, 0, BODY, T0), FY_HV_MISSING_HEADER);

    hook_init(&h, "slack", "8f742231b10e8888abcd99yyyzzz85a5");
    fy_http_header sl[] = {
        {"X-Slack-Signature", "v0=7d1e505747e16b2e9a5cb99318cbd784d12290a7129487637e0b023164e4aafb",
         0, 0},
        {"X-Slack-Request-Timestamp", "1531420618", 0, 0},
    };
    assert_int_equal(run(&h, sl, 2, "token=xyz", 1531420618 + 60), FY_HV_OK);
    assert_int_equal(run(&h, sl, 2, "token=xyz", 1531420618 + 301), FY_HV_STALE_TIMESTAMP);
    assert_int_equal(run(&h, sl, 2, "token=xyZ", 1531420618), FY_HV_BAD_SIGNATURE);
    assert_int_equal(run(&h, sl, 1, "token=xyz", 1531420618), FY_HV_MISSING_HEADER);

    hook_init(&h, "hmac-sha256", "gen");
    strcpy(h.header, "X-Sig");
    strcpy(h.encoding, "base64");
    strcpy(h.ts_header, "X-Ts");
    fy_http_header g[] = {{"x-sig", "OdrV+1OJTG1jZH3kNTpTBxcA1Yy1QTw9BWdH5EvmjuQ=", 0, 0},
                          {"x-ts", "1700000000", 0, 0}};
    assert_int_equal(run(&h, g, 2, BODY, T0), FY_HV_OK);
    assert_int_equal(run(&h, g, 1, BODY, T0), FY_HV_MISSING_HEADER);
    assert_int_equal(run(&h, g, 2, BODY, T0 + 1000), FY_HV_STALE_TIMESTAMP);
    strcpy(h.encoding, "hex");
    assert_int_equal(run(&h, g, 2, BODY, T0), FY_HV_MALFORMED_HEADER);
    hook_init(&h, "none", "");
    assert_int_equal(run(&h, NULL, 0, BODY, T0), FY_HV_OK);
    assert_string_equal(fy_hv_reason(FY_HV_REPLAY), "replay");
    assert_string_equal(fy_hv_code(FY_HV_STALE_TIMESTAMP), "webhook_stale_timestamp");
}

static void test_store_hooks(void **state)
{
    (void)state;
    char dir[] = "/tmp/fy-hooks-XXXXXX", path[128], err[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/gw.db", dir);
    fy_store *st = NULL;
    assert_int_equal(fy_store_open(path, &st, err, sizeof err), 0);
    fy_store_hook h, got;
    hook_init(&h, "github", "s1");
    strcpy(h.id, "hk_abcDEF-_123");
    assert_int_equal(fy_store_hook_create(st, &h), 0);
    assert_int_equal(fy_store_hook_create(st, &h), FY_EEXIST);
    fy_store_hook bad = h;
    strcpy(bad.id, "hk_other");
    strcpy(bad.path, "nope");
    assert_int_equal(fy_store_hook_create(st, &bad), FY_EINVAL);
    assert_int_equal(fy_store_hook_get(st, h.id, &got), 0);
    assert_int_equal(got.secret_len, 2);
    assert_memory_equal(got.secret, "s1", 2);
    assert_int_equal(fy_store_hook_rotate(st, h.id, "s2", 2, T0 + 5), 0);
    assert_int_equal(fy_store_hook_get(st, h.id, &got), 0);
    assert_memory_equal(got.secret, "s2", 2);
    assert_memory_equal(got.prev_secret, "s1", 2);
    assert_int_equal(got.prev_until, T0 + 5);
    assert_int_equal(fy_store_hook_seen(st, h.id, "d1", T0, 100), 0);
    assert_int_equal(fy_store_hook_seen(st, h.id, "d1", T0 + 50, 100), FY_EEXIST);
    assert_int_equal(fy_store_hook_seen(st, h.id, "d1", T0 + 101, 100), 0); /* pruned */

    fy_store_hookq_item it = {0}, out;
    strcpy(it.hook_id, h.id);
    strcpy(it.delivery_id, "dlv_1");
    strcpy(it.target, "/p?x=1");
    it.headers = "[[\"a\",\"b\"]]";
    it.body = "xyz\0w";
    it.body_len = 5;
    it.accepted_at = T0;
    int64_t s1, s2;
    assert_int_equal(fy_store_hookq_add(st, &it, &s1), 0);
    strcpy(it.delivery_id, "dlv_2");
    assert_int_equal(fy_store_hookq_add(st, &it, &s2), 0);
    assert_true(s2 > s1);
    assert_int_equal(fy_store_hookq_get(st, s1, &out), 0);
    assert_int_equal(out.body_len, 5);
    assert_memory_equal(out.body, "xyz\0w", 5);
    assert_string_equal(out.target, "/p?x=1");
    fy_store_hookq_item_free(&out);
    assert_int_equal(fy_store_hookq_retry(st, s1, 1, T0 + 1, 0, "503"), 0);
    assert_int_equal(fy_store_hookq_done(st, s1), 0);
    assert_int_equal(fy_store_hookq_get(st, s1, &out), FY_ENOENT);
    assert_int_equal(fy_store_hookq_retry(st, s2, 20, T0, 1, "dead"), 0);
    assert_int_equal(fy_store_hookq_get(st, s2, &out), FY_ENOENT); /* dead: not delivered */
    /* put: the whole record replaced (the cache of a shared record), the
     * delivered count kept; a new id inserted; an invalid record refused. */
    fy_store_hook put = got;
    strcpy(put.name, "renamed");
    memcpy(put.secret, "s3", 2);
    memcpy(put.prev_secret, "s2", 2);
    put.prev_until = T0 + 9;
    put.rpm = 7;
    put.delivered = 0;
    assert_int_equal(fy_store_hook_put(st, &put), 0);
    assert_int_equal(fy_store_hook_get(st, h.id, &got), 0);
    assert_string_equal(got.name, "renamed");
    assert_memory_equal(got.secret, "s3", 2);
    assert_int_equal(got.prev_len, 2);
    assert_memory_equal(got.prev_secret, "s2", 2);
    assert_int_equal(got.prev_until, T0 + 9);
    assert_int_equal(got.rpm, 7);
    assert_int_equal(got.delivered, 1); /* s1 above */
    strcpy(put.id, "hk_fresh");
    assert_int_equal(fy_store_hook_put(st, &put), 0);
    assert_int_equal(fy_store_hook_get(st, "hk_fresh", &got), 0);
    assert_int_equal(got.created_at, put.created_at);
    assert_int_equal(fy_store_hook_put(st, &bad), FY_EINVAL);
    assert_int_equal(fy_store_hook_delete(st, "hk_fresh"), 0);
    assert_int_equal(fy_store_hook_delete(st, h.id), 0);
    assert_int_equal(fy_store_hook_delete(st, h.id), FY_ENOENT);
    assert_int_equal(fy_store_hook_get(st, h.id, &got), FY_ENOENT);
    fy_store_close(st);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_github),
        cmocka_unit_test(test_stripe_slack_generic),
        cmocka_unit_test(test_store_hooks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
