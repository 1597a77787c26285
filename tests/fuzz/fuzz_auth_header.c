/* fuzz_auth_header: a stranger's credential headers through the whole
 * check: fy_keys_parse, fy_keys_authenticate against a small keyring,
 * fy_keys_authorize and fy_auth_error.
 *
 * Input: lines "name: value" (at most 16), each one header field; a line
 * "model=NAME" names the model to authorize instead. "$K0", "$K1" and "$K2"
 * in a value are replaced by the text of a valid, a revoked and an expired
 * key of the keyring, so seeds reach every outcome. Oracles: outcomes in
 * range and consistent between parse and authenticate; a parsed key points
 * into a header value and has the key shape; references are released (leaks
 * are findings). */
#include "common/err.h"
#include "common/secret.h"
#include "gateway/keys.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 16

static fy_keys *kr;
static char secrets[3][FY_SECRET_MAX];

static void setup_once(void)
{
    if (kr) {
        return;
    }
    if (fy_keys_new(NULL, &kr)) {
        abort();
    }
    fy_store_key t, rec;
    for (int i = 0; i < 3; i++) {
        memset(&t, 0, sizeof t);
        strcpy(t.name, "fuzz");
        strcpy(t.models, "llama,qwen");
        t.expires_at = i == 2 ? 1000 : 0;
        if (fy_keys_create(kr, &t, 1, secrets[i], &rec)) {
            abort();
        }
        if (i == 1 && fy_keys_revoke(kr, rec.id, 2)) {
            abort();
        }
    }
}

/* Copies (P, N) into a new NUL-terminated string with $K0..$K2 expanded;
 * *OUTLEN (may be NULL) gets its length, embedded NULs included. */
static char *expand(const uint8_t *p, size_t n, size_t *outlen)
{
    char *out = malloc(n * FY_KEY_LEN / 3 + n + 1);
    size_t o = 0;
    if (!out) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (i + 3 <= n && p[i] == '$' && p[i + 1] == 'K' && p[i + 2] >= '0' && p[i + 2] <= '2') {
            memcpy(out + o, secrets[p[i + 2] - '0'], FY_KEY_LEN);
            o += FY_KEY_LEN;
            i += 2;
            continue;
        }
        out[o++] = (char)p[i];
    }
    out[o] = 0;
    if (outlen) {
        *outlen = o;
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup_once();
    fy_http_header h[MAX_FIELDS];
    char *mem[2 * MAX_FIELDS + 1];
    size_t nh = 0, nmem = 0;
    char *model = NULL;
    size_t i = 0;
    while (i < size && nh < MAX_FIELDS) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t end = nl ? (size_t)(nl - data) : size;
        const uint8_t *line = data + i;
        size_t len = end - i;
        i = end + 1;
        if (len >= 6 && memcmp(line, "model=", 6) == 0) {
            if (!model) {
                model = mem[nmem++] = expand(line + 6, len - 6, NULL);
            }
            continue;
        }
        const uint8_t *colon = memchr(line, ':', len);
        if (!colon) {
            continue;
        }
        size_t nlen = (size_t)(colon - line), vlen;
        if (nlen == 0) {
            continue; /* a length of 0 would mean "use strlen" */
        }
        char *name = mem[nmem++] = expand(line, nlen, &nlen);
        char *value = mem[nmem++] = expand(colon + 1, len - (size_t)(colon - line) - 1, &vlen);
        /* Explicit lengths: embedded NULs stay in the name and value. */
        h[nh++] = (fy_http_header){name, value, nlen, vlen};
    }

    const char *key = NULL;
    size_t klen = 0;
    fy_auth_outcome p = fy_keys_parse(h, nh, &key, &klen);
    if (p != FY_AUTH_OK && p != FY_AUTH_MISSING && p != FY_AUTH_MALFORMED) {
        abort();
    }
    if (p == FY_AUTH_OK) {
        int inside = 0;
        for (size_t j = 0; j < nh; j++) {
            inside |= key >= h[j].value && key + klen <= h[j].value + h[j].value_len;
        }
        if (!inside || klen != FY_KEY_LEN || !fy_secret_well_formed("fy", key, klen)) {
            abort();
        }
    }
    int64_t now = size ? data[0] * 10 : 0; /* the expired key expires at 1000 */
    fy_key *k = NULL;
    fy_auth_outcome a = fy_keys_authenticate(kr, h, nh, now, &k);
    if (p != FY_AUTH_OK ? a != p
                        : !(a == FY_AUTH_OK || a == FY_AUTH_UNKNOWN || a == FY_AUTH_REVOKED ||
                            a == FY_AUTH_EXPIRED)) {
        abort();
    }
    if ((a == FY_AUTH_OK) != (k != NULL)) {
        abort();
    }
    if (k) {
        a = fy_keys_authorize(kr, k, FY_SCOPE_MODEL, model);
        if (a != FY_AUTH_OK && a != FY_AUTH_FORBIDDEN_MODEL) {
            abort();
        }
        fy_key_release(k);
    }
    const char *code, *msg;
    int status = fy_auth_error(a, &code, &msg);
    if (!(status == 200 || status == 401 || status == 403) || !code || !msg) {
        abort();
    }
    for (size_t j = 0; j < nmem; j++) {
        free(mem[j]);
    }
    return 0;
}
