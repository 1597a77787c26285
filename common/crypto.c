#include "crypto.h"

#include "err.h"

#include <mbedtls/constant_time.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/platform_util.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- random numbers ---------------------------------------------------- */

/* The personalization string is capped so that entropy + nonce + it always
 * fit in MBEDTLS_CTR_DRBG_MAX_SEED_INPUT (384 bytes; entropy and nonce take
 * 72 of them with the SHA-512 entropy accumulator). */
#define FY_RNG_MAX_PERSONALIZATION 128

struct fy_rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    unsigned fork_gen; /* rng_fork_gen when the DRBG state was last (re)seeded */
};

/* Bumped in the child of every fork (pthread_atfork), so a generator can
 * tell that it runs in a copy of its process without a getpid(2) per call:
 * on a request path that syscall was one of the few a request made. */
static volatile unsigned rng_fork_gen = 1;
static pthread_once_t rng_atfork_once = PTHREAD_ONCE_INIT;

static void rng__forked(void)
{
    rng_fork_gen++;
}

static void rng__atfork_init(void)
{
    pthread_atfork(NULL, NULL, rng__forked);
}

static void rng__init(fy_rng *r)
{
    pthread_once(&rng_atfork_once, rng__atfork_init);
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    r->fork_gen = 0;
}

static int rng__seed(fy_rng *r, const char *personalization)
{
    size_t plen = personalization ? strnlen(personalization, FY_RNG_MAX_PERSONALIZATION) : 0;
    int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                   (const unsigned char *)personalization, plen);
    if (rc != 0) {
        return FY_ECRYPTO;
    }
    r->fork_gen = rng_fork_gen;
    return 0;
}

static void rng__wipe(fy_rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
    r->fork_gen = 0;
}

/* Generates N bytes; the caller serialises access to R. */
static int rng__generate(fy_rng *r, unsigned char *out, size_t n)
{
    int rc = 0;
    /* A forked child starts with a copy of the parent's DRBG state: without a
     * reseed both processes would emit the same bytes. */
    unsigned gen = rng_fork_gen;
    if (gen != r->fork_gen) {
        if (mbedtls_ctr_drbg_reseed(&r->drbg, NULL, 0) != 0) {
            rc = FY_ECRYPTO;
            goto out;
        }
        r->fork_gen = gen;
    }
    while (n > 0) {
        size_t chunk = n < MBEDTLS_CTR_DRBG_MAX_REQUEST ? n : MBEDTLS_CTR_DRBG_MAX_REQUEST;
        if (mbedtls_ctr_drbg_random(&r->drbg, out, chunk) != 0) {
            rc = FY_ECRYPTO;
            goto out;
        }
        out += chunk;
        n -= chunk;
    }
out:
    return rc;
}

fy_rng *fy_rng_new(const char *personalization)
{
    fy_rng *r = malloc(sizeof *r);
    if (!r) {
        return NULL;
    }
    rng__init(r);
    if (rng__seed(r, personalization) != 0) {
        fy_rng_free(r);
        return NULL;
    }
    return r;
}

void fy_rng_free(fy_rng *rng)
{
    if (!rng) {
        return;
    }
    rng__wipe(rng);
    mbedtls_platform_zeroize(rng, sizeof *rng);
    free(rng);
}

int fy_rng_bytes(fy_rng *rng, void *out, size_t n)
{
    if (!rng || (!out && n > 0)) {
        return FY_EINVAL;
    }
    int rc = rng__generate(rng, out, n);
    if (rc != 0) {
        mbedtls_platform_zeroize(out, n);
    }
    return rc;
}

/* The process-wide generator. The contexts are initialised exactly once
 * (pthread_once: mbedtls_ctr_drbg_init creates a mutex, which must not happen
 * twice), but seeding happens under the lock on first use, not in the once
 * routine, so that a failed seed (entropy source briefly unavailable) is
 * retried by the next call instead of poisoning the process forever. */
static pthread_once_t g_rng_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_rng_lock = PTHREAD_MUTEX_INITIALIZER;
static fy_rng g_rng;
static int g_rng_seeded;

static void rng__global_init(void)
{
    rng__init(&g_rng);
}

int fy_random_bytes(void *out, size_t n)
{
    if (!out && n > 0) {
        return FY_EINVAL;
    }
    int rc = pthread_once(&g_rng_once, rng__global_init);
    if (rc != 0) {
        return FY_ECRYPTO;
    }
    pthread_mutex_lock(&g_rng_lock);
    if (!g_rng_seeded) {
        rc = rng__seed(&g_rng, "ferry process-wide rng");
        g_rng_seeded = (rc == 0);
    }
    if (rc == 0) {
        rc = rng__generate(&g_rng, out, n);
    }
    pthread_mutex_unlock(&g_rng_lock);
    if (rc != 0) {
        mbedtls_platform_zeroize(out, n);
    }
    return rc;
}

int fy_rng_mbedtls(void *p_rng, unsigned char *out, size_t len)
{
    int rc = p_rng ? fy_rng_bytes(p_rng, out, len) : fy_random_bytes(out, len);
    return rc == 0 ? 0 : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
}

/* ---- SHA-256 ----------------------------------------------------------- */

int fy_sha256(const void *p, size_t n, uint8_t out[FY_SHA256_LEN])
{
    if ((!p && n > 0) || !out) {
        return FY_EINVAL;
    }
    return mbedtls_sha256_ret(p, n, out, 0) == 0 ? 0 : FY_ECRYPTO;
}

int fy_sha256_init(fy_sha256_ctx *c)
{
    if (!c) {
        return FY_EINVAL;
    }
    mbedtls_sha256_init(&c->ctx);
    return mbedtls_sha256_starts_ret(&c->ctx, 0) == 0 ? 0 : FY_ECRYPTO;
}

int fy_sha256_update(fy_sha256_ctx *c, const void *p, size_t n)
{
    if (!c || (!p && n > 0)) {
        return FY_EINVAL;
    }
    return mbedtls_sha256_update_ret(&c->ctx, p, n) == 0 ? 0 : FY_ECRYPTO;
}

int fy_sha256_final(fy_sha256_ctx *c, uint8_t out[FY_SHA256_LEN])
{
    if (!c || !out) {
        return FY_EINVAL;
    }
    int rc = mbedtls_sha256_finish_ret(&c->ctx, out) == 0 ? 0 : FY_ECRYPTO;
    mbedtls_sha256_free(&c->ctx);
    return rc;
}

void fy_sha256_free(fy_sha256_ctx *c)
{
    if (c) {
        mbedtls_sha256_free(&c->ctx);
    }
}

/* ---- HMAC-SHA256 ------------------------------------------------------- */

static int md__err(int rc)
{
    if (rc == 0) {
        return 0;
    }
    return rc == MBEDTLS_ERR_MD_ALLOC_FAILED ? FY_ENOMEM : FY_ECRYPTO;
}

int fy_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                   uint8_t out[FY_SHA256_LEN])
{
    if ((!key && keylen > 0) || (!msg && n > 0) || !out) {
        return FY_EINVAL;
    }
    /* mbedtls_md_hmac rejects NULL even with length 0; give it a valid
     * pointer for empty inputs. */
    static const unsigned char empty[1];
    return md__err(mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key ? key : empty,
                                   keylen, msg ? msg : empty, n, out));
}

int fy_hmac_sha256_init(fy_hmac_sha256_ctx *c, const void *key, size_t keylen)
{
    if (!c) {
        return FY_EINVAL;
    }
    /* Initialised first so that fy_hmac_sha256_free is safe whatever fails. */
    mbedtls_md_init(&c->md);
    if (!key && keylen > 0) {
        return FY_EINVAL;
    }
    static const unsigned char empty[1];
    int rc = mbedtls_md_setup(&c->md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1);
    if (rc == 0) {
        rc = mbedtls_md_hmac_starts(&c->md, key ? key : empty, keylen);
    }
    return md__err(rc);
}

int fy_hmac_sha256_update(fy_hmac_sha256_ctx *c, const void *p, size_t n)
{
    if (!c || (!p && n > 0)) {
        return FY_EINVAL;
    }
    if (n == 0) {
        return 0;
    }
    return md__err(mbedtls_md_hmac_update(&c->md, p, n));
}

int fy_hmac_sha256_final(fy_hmac_sha256_ctx *c, uint8_t out[FY_SHA256_LEN])
{
    if (!c || !out) {
        return FY_EINVAL;
    }
    return md__err(mbedtls_md_hmac_finish(&c->md, out));
}

void fy_hmac_sha256_free(fy_hmac_sha256_ctx *c)
{
    if (c) {
        /* mbedtls_md_free zeroizes the ipad/opad it allocated. */
        mbedtls_md_free(&c->md);
    }
}

/* ---- comparison and wiping --------------------------------------------- */

int fy_ct_equal(const void *a, const void *b, size_t n)
{
    if (n == 0) {
        return 1;
    }
    if (!a || !b) {
        return 0;
    }
    return mbedtls_ct_memcmp(a, b, n) == 0;
}

void fy_secure_zero(void *p, size_t n)
{
    if (p && n > 0) {
        mbedtls_platform_zeroize(p, n);
    }
}

/* ---- hex and base64url ------------------------------------------------- */

/* Both codecs handle secrets (API keys, tokens, key material), so characters
 * are classified with masks rather than branches or lookup tables whose
 * timing could depend on the data. ct__in_range returns 0xFF when
 * LO <= C <= HI and 0 otherwise, for C, LO, HI in 0..255: a subtraction that
 * goes negative wraps to a value with bits 8..31 set. */
static unsigned ct__in_range(unsigned c, unsigned lo, unsigned hi)
{
    return ((((c - lo) | (hi - c)) >> 8) & 0xFFu) ^ 0xFFu;
}

int fy_hex_encode(const void *in, size_t n, char *out, size_t outcap)
{
    if ((!in && n > 0) || !out) {
        return FY_EINVAL;
    }
    if (n > (SIZE_MAX - 1) / 2 || outcap < 2 * n + 1) {
        return FY_ETOOBIG;
    }
    const unsigned char *p = in;
    for (size_t i = 0; i < n; i++) {
        unsigned nib[2] = {p[i] >> 4, p[i] & 0xFu};
        for (int k = 0; k < 2; k++) {
            /* '0' + v, plus ('a' - '0' - 10) when v > 9. */
            unsigned above9 = ((9u - nib[k]) >> 8) & 0xFFu;
            out[2 * i + k] = (char)('0' + nib[k] + (above9 & ('a' - '0' - 10)));
        }
    }
    out[2 * n] = '\0';
    return 0;
}

/* Value of hex digit C in the low 4 bits; bit 8 set when C is not a digit. */
static unsigned hex__digit(unsigned char c)
{
    unsigned m09 = ct__in_range(c, '0', '9');
    unsigned maf = ct__in_range(c, 'a', 'f');
    unsigned mAF = ct__in_range(c, 'A', 'F');
    unsigned v = (m09 & (c - '0')) | (maf & (c - 'a' + 10)) | (mAF & (c - 'A' + 10));
    unsigned valid = m09 | maf | mAF;
    return (v & 0xFu) | ((~valid & 0xFFu) << 1 & 0x100u);
}

int fy_hex_decode(const char *in, size_t inlen, void *out, size_t outcap, size_t *outlen)
{
    if ((!in && inlen > 0) || (!out && outcap > 0)) {
        return FY_EINVAL;
    }
    if (inlen % 2 != 0) {
        return FY_EPARSE;
    }
    if (outcap < inlen / 2) {
        return FY_ETOOBIG;
    }
    unsigned char *o = out;
    unsigned bad = 0;
    for (size_t i = 0; i < inlen / 2; i++) {
        unsigned hi = hex__digit((unsigned char)in[2 * i]);
        unsigned lo = hex__digit((unsigned char)in[2 * i + 1]);
        bad |= hi | lo;
        o[i] = (unsigned char)(((hi & 0xFu) << 4) | (lo & 0xFu));
    }
    if (bad & 0x100u) {
        fy_secure_zero(out, inlen / 2);
        return FY_EPARSE;
    }
    if (outlen) {
        *outlen = inlen / 2;
    }
    return 0;
}

static char b64__char(unsigned v)
{
    /* v in 0..63 -> A-Z a-z 0-9 - _ without branches. */
    unsigned c = v + 'A';
    c += ct__in_range(v, 26, 51) & ('a' - 'A' - 26);
    c -= ct__in_range(v, 52, 61) & ('A' + 52 - '0');
    c -= ct__in_range(v, 62, 62) & ('A' + 62 - '-');
    c -= ct__in_range(v, 63, 63) & ('A' + 63 - '_');
    return (char)(c & 0xFFu);
}

/* Value of base64url character C in the low 6 bits; bit 8 set when invalid. */
static unsigned b64__value(unsigned char c)
{
    unsigned mAZ = ct__in_range(c, 'A', 'Z');
    unsigned maz = ct__in_range(c, 'a', 'z');
    unsigned m09 = ct__in_range(c, '0', '9');
    unsigned mdash = ct__in_range(c, '-', '-');
    unsigned mus = ct__in_range(c, '_', '_');
    unsigned v = (mAZ & (c - 'A')) | (maz & (c - 'a' + 26)) | (m09 & (c - '0' + 52)) |
                 (mdash & 62u) | (mus & 63u);
    unsigned valid = mAZ | maz | m09 | mdash | mus;
    return (v & 0x3Fu) | ((~valid & 0xFFu) << 1 & 0x100u);
}

int fy_b64url_encode(const void *in, size_t n, char *out, size_t outcap)
{
    if ((!in && n > 0) || !out) {
        return FY_EINVAL;
    }
    if (n > (SIZE_MAX / 4) * 3 - 3 || outcap <= FY_B64URL_ENCODED_LEN(n)) {
        return FY_ETOOBIG;
    }
    const unsigned char *p = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned w = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64__char(w >> 18);
        out[o++] = b64__char((w >> 12) & 0x3Fu);
        out[o++] = b64__char((w >> 6) & 0x3Fu);
        out[o++] = b64__char(w & 0x3Fu);
    }
    if (n - i == 1) {
        unsigned w = (unsigned)p[i] << 16;
        out[o++] = b64__char(w >> 18);
        out[o++] = b64__char((w >> 12) & 0x3Fu);
    } else if (n - i == 2) {
        unsigned w = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8;
        out[o++] = b64__char(w >> 18);
        out[o++] = b64__char((w >> 12) & 0x3Fu);
        out[o++] = b64__char((w >> 6) & 0x3Fu);
    }
    out[o] = '\0';
    return 0;
}

int fy_b64url_decode(const char *in, size_t inlen, void *out, size_t outcap, size_t *outlen)
{
    if ((!in && inlen > 0) || (!out && outcap > 0)) {
        return FY_EINVAL;
    }
    /* One leftover character carries only 6 bits: no byte string encodes to
     * a length of 4k + 1. */
    if (inlen % 4 == 1) {
        return FY_EPARSE;
    }
    size_t need = FY_B64URL_DECODED_MAX(inlen);
    if (outcap < need) {
        return FY_ETOOBIG;
    }
    const unsigned char *s = (const unsigned char *)in;
    unsigned char *o = out;
    unsigned bad = 0;
    size_t i = 0, k = 0;
    for (; i + 4 <= inlen; i += 4) {
        unsigned a = b64__value(s[i]), b = b64__value(s[i + 1]);
        unsigned c = b64__value(s[i + 2]), d = b64__value(s[i + 3]);
        bad |= a | b | c | d;
        unsigned w = (a & 0x3Fu) << 18 | (b & 0x3Fu) << 12 | (c & 0x3Fu) << 6 | (d & 0x3Fu);
        o[k++] = (unsigned char)(w >> 16);
        o[k++] = (unsigned char)(w >> 8);
        o[k++] = (unsigned char)w;
    }
    size_t rest = inlen - i;
    if (rest >= 2) {
        unsigned a = b64__value(s[i]), b = b64__value(s[i + 1]);
        unsigned c = rest == 3 ? b64__value(s[i + 2]) : 0;
        bad |= a | b | c;
        unsigned w = (a & 0x3Fu) << 18 | (b & 0x3Fu) << 12 | (c & 0x3Fu) << 6;
        o[k++] = (unsigned char)(w >> 16);
        if (rest == 3) {
            o[k++] = (unsigned char)(w >> 8);
            /* The low 2 bits of the third character are padding. */
            bad |= (w & 0xFFu) ? 0x100u : 0;
        } else {
            /* The low 4 bits of the second character are padding. */
            bad |= (w & 0xFFFFu) ? 0x100u : 0;
        }
    }
    if (bad & 0x100u) {
        fy_secure_zero(out, need);
        return FY_EPARSE;
    }
    if (outlen) {
        *outlen = k;
    }
    return 0;
}
