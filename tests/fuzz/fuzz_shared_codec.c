/* Fuzz target: shared-state records (gateway/shared_codec.h) as a replica
 * reads them from Redis. The input is decoded as every record type; a
 * decoded record must re-encode, the encoding must decode to the very same
 * record, and that record must encode to the same text again. A refusal
 * must name what it refused. */
#include "common/crypto.h"
#include "gateway/shared_codec.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef int (*decode_fn)(const char *s, size_t n, void *out, char *err, size_t errlen);
typedef char *(*encode_fn)(const void *rec);

static void check(const uint8_t *data, size_t size, decode_fn dec, encode_fn enc, size_t recsize)
{
    char err[256];
    void *a = malloc(recsize), *b = malloc(recsize);
    if (!a || !b) {
        free(a);
        free(b);
        return;
    }
    if (dec((const char *)data, size, a, err, sizeof err) != 0) {
        if (!err[0]) {
            __builtin_trap();
        }
    } else {
        char *s = enc(a);
        if (!s || dec(s, strlen(s), b, err, sizeof err) != 0 || memcmp(a, b, recsize) != 0) {
            __builtin_trap();
        }
        char *t = enc(b);
        if (!t || strcmp(s, t) != 0) {
            __builtin_trap();
        }
        fy_secure_zero(s, strlen(s));
        fy_secure_zero(t, strlen(t));
        free(s);
        free(t);
    }
    fy_secure_zero(a, recsize);
    fy_secure_zero(b, recsize);
    free(a);
    free(b);
}

/* Typed wrappers: calling through a cast function pointer is undefined
 * (and UBSan's -fsanitize=function says so). */
#define WRAP(kind, type)                                                                \
    static int dec_##kind(const char *s, size_t n, void *out, char *err, size_t errlen) \
    {                                                                                   \
        return fy_shc_##kind##_decode(s, n, (type *)out, err, errlen);                  \
    }                                                                                   \
    static char *enc_##kind(const void *rec)                                            \
    {                                                                                   \
        return fy_shc_##kind##_encode((const type *)rec);                               \
    }
WRAP(key, fy_store_key)
WRAP(runner, fy_store_runner)
WRAP(token, fy_store_token)
WRAP(hook, fy_store_hook)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check(data, size, dec_key, enc_key, sizeof(fy_store_key));
    check(data, size, dec_runner, enc_runner, sizeof(fy_store_runner));
    check(data, size, dec_token, enc_token, sizeof(fy_store_token));
    check(data, size, dec_hook, enc_hook, sizeof(fy_store_hook));
    return 0;
}
