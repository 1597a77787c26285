#include "secret.h"

#include "crypto.h"
#include "err.h"

#include <string.h>

#define BODY_LEN FY_B64URL_ENCODED_LEN(FY_SECRET_RANDOM_BYTES)

static int valid_prefix(const char *prefix, size_t *n)
{
    size_t len = prefix ? strlen(prefix) : 0;
    if (len == 0 || len > 16) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        if (prefix[i] < 'a' || prefix[i] > 'z') {
            return 0;
        }
    }
    *n = len;
    return 1;
}

int fy_secret_new(const char *prefix, char *out, size_t outlen)
{
    size_t plen;
    if (!valid_prefix(prefix, &plen)) {
        return FY_EINVAL;
    }
    if (outlen < plen + 1 + BODY_LEN + 1) {
        return FY_ETOOBIG;
    }
    uint8_t raw[FY_SECRET_RANDOM_BYTES];
    int rc = fy_random_bytes(raw, sizeof raw);
    if (rc == 0) {
        memcpy(out, prefix, plen);
        out[plen] = '_';
        rc = fy_b64url_encode(raw, sizeof raw, out + plen + 1, outlen - plen - 1);
    }
    fy_secure_zero(raw, sizeof raw);
    return rc;
}

void fy_secret_hash(const char *secret, size_t len, uint8_t hash[32])
{
    fy_sha256(secret, len, hash);
}

int fy_secret_well_formed(const char *prefix, const char *text, size_t len)
{
    size_t plen;
    if (!valid_prefix(prefix, &plen) || !text || len != plen + 1 + BODY_LEN ||
        memcmp(text, prefix, plen) != 0 || text[plen] != '_') {
        return 0;
    }
    for (size_t i = plen + 1; i < len; i++) {
        char c = text[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

int fy_secret_matches(const char *text, size_t len, const uint8_t hash[32])
{
    uint8_t h[32];
    fy_sha256(text, len, h);
    int eq = fy_ct_equal(h, hash, 32);
    fy_secure_zero(h, sizeof h);
    return eq;
}
