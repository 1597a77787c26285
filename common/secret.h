/* secret.h: bearer secrets (admin tokens, enrollment tokens, API keys).
 *
 * A secret is "<prefix>_<43 base64url chars>": 256 random bits behind a
 * readable prefix, so a leaked one is recognisable in a scanner or a log.
 * Only its SHA-256 is ever stored; comparisons are constant-time. */
#ifndef FY_SECRET_H
#define FY_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define FY_SECRET_RANDOM_BYTES 32
#define FY_SECRET_MAX          64 /* buffer size that fits any prefix up to 16 chars */

/* Writes a new secret with PREFIX (1..16 chars of [a-z]) into OUT. Returns 0,
 * FY_EINVAL or FY_ETOOBIG. */
int fy_secret_new(const char *prefix, char *out, size_t outlen);

/* SHA-256 of the secret's text. */
void fy_secret_hash(const char *secret, size_t len, uint8_t hash[32]);

/* 1 when TEXT has the shape of a secret with PREFIX (prefix, '_', 43
 * base64url chars) — a cheap check before any lookup. */
int fy_secret_well_formed(const char *prefix, const char *text, size_t len);

/* Constant-time check that TEXT's hash equals HASH. */
int fy_secret_matches(const char *text, size_t len, const uint8_t hash[32]);

#endif
