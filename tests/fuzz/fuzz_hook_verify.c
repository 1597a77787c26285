/* fuzz_hook_verify: a stranger's webhook signature headers through the
 * parsers and every verification scheme.
 *
 * Input: the first byte picks the scheme (github, stripe, slack, hex,
 * base64 with a timestamp header); then lines "name: value" (at most 16) up
 * to an empty line; the rest is the body. Each header value is also fed to
 * the parsers directly. Oracles: outcomes in range with a message when
 * refused, parsers never claim more signatures than they were given room for
 * and never succeed on an empty value; the sanitizers catch the rest. */
#include "common/err.h"
#include "gateway/hookverify.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 16
#define MAX_TEXT   4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parsers(const char *v, size_t len)
{
    int64_t t;
    uint8_t sigs[3][32], one[32];
    size_t ns = 99;
    if (fy_hook_parse_stripe(v, len, &t, sigs, 3, &ns) == 0 && (ns < 1 || ns > 3 || t < 0)) {
        abort();
    }
    if (fy_hook_parse_hex_sig(v, len, "sha256=", one) == 0 && len < 71) {
        abort();
    }
    if (fy_hook_parse_b64_sig(v, len, one) == 0 && len < 43) {
        abort();
    }
    if (fy_hook_parse_unix(v, len, &t) == 0 && (len == 0 || t < 0)) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const kinds[] = {"github", "stripe", "slack", "hmac-sha256", "hmac-sha256"};
    if (size < 1 || size > MAX_TEXT) {
        return 0;
    }
    char text[MAX_TEXT + 1];
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    size_t tlen = size - 1;
    fy_store_hook h;
    memset(&h, 0, sizeof h);
    int k = data[0] % 5;
    strcpy(h.verify, kinds[k]);
    strcpy(h.header, "X-Sig");
    strcpy(h.encoding, k == 4 ? "base64" : "hex");
    if (k == 4) {
        strcpy(h.ts_header, "X-Ts");
    }
    h.tolerance_s = 300;
    memcpy(h.secret, "fuzz-secret", 11);
    h.secret_len = 11;
    memcpy(h.prev_secret, "old", 3);
    h.prev_len = 3;
    h.prev_until = 1700000100;

    fy_http_header hs[MAX_FIELDS];
    size_t n = 0;
    char *p = text, *end = text + tlen;
    while (p < end && n < MAX_FIELDS) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        if (line_end == p) {
            p = nl ? nl + 1 : end; /* empty line: the body follows */
            break;
        }
        *line_end = 0;
        char *colon = strchr(p, ':');
        if (colon) {
            *colon = 0;
            char *v = colon + 1;
            while (*v == ' ') {
                v++;
            }
            hs[n] = (fy_http_header){p, v, strlen(p), strlen(v)};
            parsers(v, strlen(v));
            n++;
        }
        p = nl ? nl + 1 : end;
    }
    fy_hv_result r;
    fy_hv_outcome o = fy_hook_verify(&h, hs, n, p, (size_t)(end - p), 1700000000, &r);
    if (o != r.outcome || o < FY_HV_OK || o >= FY_HV_COUNT || (o != FY_HV_OK && !r.message[0])) {
        abort();
    }
    if (o == FY_HV_OK && k == 0 && (!r.delivery || r.delivery_len == 0)) {
        abort();
    }
    return 0;
}
