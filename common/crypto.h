/* crypto.h: random numbers, SHA-256, HMAC-SHA256, constant-time comparison,
 * hex and base64url, on mbedTLS 2.28.
 *
 * Every fallible function returns 0 or a negative FY_E* code (common/err.h).
 * Output buffers are always sized by the caller and checked: a buffer that is
 * too small gives FY_ETOOBIG and nothing useful is left in it. NULL pointers
 * where data is required give FY_EINVAL (a NULL pointer with length 0 is an
 * empty input and is fine).
 *
 * Random numbers. fy_rng is an AES-256 CTR_DRBG (NIST SP 800-90A) seeded from
 * mbedTLS's platform entropy source (getrandom(2) / /dev/urandom) plus an
 * optional personalization string. Choices, deliberately:
 *   - no prediction resistance: the DRBG reseeds from the entropy source
 *     automatically every MBEDTLS_CTR_DRBG_RESEED_INTERVAL (10,000) requests,
 *     which is the NIST default and what mbedTLS's own examples use; forcing
 *     a reseed on every call would make each key or token cost an extra
 *     getrandom(2) with no benefit against the threats ferry cares about;
 *   - fork safety: each generator remembers the pid it was seeded in and
 *     reseeds before its first output in a child process, so a parent and a
 *     child never produce the same stream.
 * A fy_rng object is NOT thread-safe: use one per thread, or use
 * fy_random_bytes(), which serialises a single process-wide generator behind
 * a mutex and is safe from any thread. */
#ifndef FY_CRYPTO_H
#define FY_CRYPTO_H

#include <mbedtls/md.h>
#include <mbedtls/sha256.h>
#include <stddef.h>
#include <stdint.h>

#define FY_SHA256_LEN 32 /* bytes in a SHA-256 (and HMAC-SHA256) digest */

/* ---- random numbers ---------------------------------------------------- */

typedef struct fy_rng fy_rng;

/* Creates and seeds a generator. PERSONALIZATION (may be NULL) is mixed into
 * the seed to separate instances (e.g. "ferry-tls"); at most 128 bytes are
 * used. Returns NULL when out of memory or when the entropy source fails. */
fy_rng *fy_rng_new(const char *personalization);

/* Wipes and frees a generator. NULL is ok. */
void fy_rng_free(fy_rng *rng);

/* Fills OUT with N random bytes (any N). Returns 0, FY_EINVAL, or FY_ECRYPTO
 * when the DRBG or the entropy source fails (OUT is then wiped). */
int fy_rng_bytes(fy_rng *rng, void *out, size_t n);

/* The f_rng callback mbedTLS APIs take, with P_RNG a fy_rng * or NULL for the
 * process-wide generator (thread-safe, as fy_random_bytes). Returns 0 or an
 * mbedTLS error code (MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED), as mbedTLS
 * expects from an f_rng. */
int fy_rng_mbedtls(void *p_rng, unsigned char *out, size_t len);

/* Fills OUT with N bytes from the process-wide generator, which is created on
 * first use. Safe to call from any number of threads concurrently. Returns 0,
 * FY_EINVAL or FY_ECRYPTO (seeding failed; a later call tries again). */
int fy_random_bytes(void *out, size_t n);

/* ---- SHA-256 ----------------------------------------------------------- */

/* One-shot: OUT receives the 32-byte digest of (P, N). */
int fy_sha256(const void *p, size_t n, uint8_t out[FY_SHA256_LEN]);

/* Streaming: init, any number of updates, final. Final wipes the context; a
 * context abandoned before final should be passed to fy_sha256_free (which
 * wipes it and is safe after final too). */
typedef struct {
    mbedtls_sha256_context ctx;
} fy_sha256_ctx;

int fy_sha256_init(fy_sha256_ctx *c);
int fy_sha256_update(fy_sha256_ctx *c, const void *p, size_t n);
int fy_sha256_final(fy_sha256_ctx *c, uint8_t out[FY_SHA256_LEN]);
void fy_sha256_free(fy_sha256_ctx *c);

/* ---- HMAC-SHA256 ------------------------------------------------------- */

/* One-shot: OUT receives HMAC-SHA256(KEY, MSG). Keys of any length (longer
 * than the 64-byte block are hashed first, as RFC 2104 says). */
int fy_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t n,
                   uint8_t out[FY_SHA256_LEN]);

/* Streaming. Init allocates inside mbedTLS (FY_ENOMEM possible); the context
 * holds key material, so always end with fy_hmac_sha256_free (after final, or
 * after a failed init: it is safe on both). */
typedef struct {
    mbedtls_md_context_t md;
} fy_hmac_sha256_ctx;

int fy_hmac_sha256_init(fy_hmac_sha256_ctx *c, const void *key, size_t keylen);
int fy_hmac_sha256_update(fy_hmac_sha256_ctx *c, const void *p, size_t n);
int fy_hmac_sha256_final(fy_hmac_sha256_ctx *c, uint8_t out[FY_SHA256_LEN]);
void fy_hmac_sha256_free(fy_hmac_sha256_ctx *c);

/* ---- comparison and wiping --------------------------------------------- */

/* 1 when the N bytes at A and B are equal, 0 otherwise. The time taken
 * depends only on N, never on where the bytes differ, so secrets (API key
 * hashes, MACs, tokens) can be compared without a timing oracle. */
int fy_ct_equal(const void *a, const void *b, size_t n);

/* Zeroes N bytes in a way the compiler cannot elide. NULL is ok. */
void fy_secure_zero(void *p, size_t n);

/* ---- hex --------------------------------------------------------------- */

/* Bytes needed to hex-encode N bytes, with the terminating NUL. */
#define FY_HEX_ENCODED_SIZE(n) (2 * (n) + 1)

/* Writes 2*N lowercase hex digits and a NUL into OUT (OUTCAP bytes). Returns
 * 0, FY_EINVAL or FY_ETOOBIG (OUTCAP < 2*N + 1). */
int fy_hex_encode(const void *in, size_t n, char *out, size_t outcap);

/* Decodes INLEN hex digits (either case) into OUT (OUTCAP bytes) and sets
 * *OUTLEN (may be NULL) to INLEN / 2. Returns 0, FY_EPARSE (odd length or a
 * non-hex character), FY_ETOOBIG (OUTCAP < INLEN / 2) or FY_EINVAL. The
 * digits are decoded without secret-dependent branches or table lookups. */
int fy_hex_decode(const char *in, size_t inlen, void *out, size_t outcap, size_t *outlen);

/* ---- base64url (RFC 4648 section 5, no padding) ------------------------ */

/* Characters needed to encode N bytes, without the terminating NUL. */
#define FY_B64URL_ENCODED_LEN(n) (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
/* Upper bound on the bytes INLEN characters decode to. */
#define FY_B64URL_DECODED_MAX(inlen) (((inlen) / 4) * 3 + ((inlen) % 4 ? (inlen) % 4 - 1 : 0))

/* Writes the unpadded base64url text of (IN, N) and a NUL into OUT (OUTCAP
 * bytes). Returns 0, FY_EINVAL or FY_ETOOBIG (OUTCAP <=
 * FY_B64URL_ENCODED_LEN(N)). */
int fy_b64url_encode(const void *in, size_t n, char *out, size_t outcap);

/* Decodes INLEN characters of unpadded base64url into OUT (OUTCAP bytes) and
 * sets *OUTLEN (may be NULL). Strict: returns FY_EPARSE for any character
 * outside [A-Za-z0-9_-] (including '=' padding, '+', '/' and whitespace), for
 * a length that no input encodes to (INLEN % 4 == 1), and for non-canonical
 * text whose unused trailing bits are not zero (so each byte string has
 * exactly one accepted encoding). FY_ETOOBIG when OUTCAP is too small,
 * FY_EINVAL for NULL pointers. */
int fy_b64url_decode(const char *in, size_t inlen, void *out, size_t outcap, size_t *outlen);

#endif
