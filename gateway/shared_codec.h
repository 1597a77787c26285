/* shared_codec.h: the records of the shared state (gateway/shared_layout.h)
 * as JSON, one object per hash field value. Pure: no I/O, no globals.
 *
 * Encoding gives compact JSON with the fields in a fixed order, so one
 * record always encodes to the same bytes (callers may compare encodings to
 * tell an unchanged record). Every field is always written:
 *   key     {"id","name","owner","prefix","hash","rpm","tpm","concurrency",
 *            "burst","models","runners","hooks","created_at","expires_at",
 *            "revoked_at"}: HASH in lowercase hex; scopes as the store's
 *            comma-separated lists; no last_used_at (usage lives in the
 *            key's usage hash, FY_SH_KEY_USAGE_FMT)
 *   runner  {"name","fingerprint","serial","enrolled_at","revoked_at"}
 *   token   {"id","runner_name","created_at","expires_at","used_at"}: the
 *            token's hash is the hash field's name, not part of the record
 *   hook    {"id","name","runner","path","verify","header","encoding",
 *            "ts_header","tolerance_s","async","rpm","max_body","secret",
 *            "prev_secret","prev_until","created_at"}: the secrets in
 *            unpadded base64url (common/crypto.h); no delivered, queued or
 *            dead counters (they are not part of the record)
 *
 * Decoding takes bytes from a shared server, which this gateway does not
 * trust more than its own store: strict and bounded. S need not be
 * NUL-terminated and nothing past S[N) is read; records over
 * FY_SHC_RECORD_MAX bytes are refused unparsed. Every field listed above is
 * required, has one JSON type (strings, integers, async a boolean) and is
 * checked against the rules the SQLite store enforces (gateway/store.h:
 * fy_store_key_check, fy_store_hook_check, fy_store_valid_name, and the
 * size of every char array); times are >= 0. A field this version does not
 * know is ignored, so a newer replica may add fields. Duplicate names and
 * NUL characters in strings are refused.
 *
 * Decode functions return 0 with *OUT filled (zeroed first, so a decoded
 * record compares with memcmp), or FY_EINVAL (not JSON, not an object, a
 * missing field, a wrong type, an out-of-range value) or FY_ETOOBIG (over
 * FY_SHC_RECORD_MAX), with ERR naming the field ("field 'rpm': ..."). On
 * failure *OUT is zeroed. */
#ifndef FY_GATEWAY_SHARED_CODEC_H
#define FY_GATEWAY_SHARED_CODEC_H

#include "gateway/store.h"

#include <stddef.h>
#include <stdint.h>

/* Bytes of one encoded record at most (the largest real one, a hook with
 * two full secrets and a full path, is under 8 KiB; escapes may grow it). */
#define FY_SHC_RECORD_MAX 65536

/* Each returns a malloc'd NUL-terminated compact JSON text (the caller
 * frees it), or NULL when out of memory or when a text field is not valid
 * UTF-8 (JSON cannot carry it). The hook's text holds its secrets: wipe it
 * (fy_secure_zero) before freeing. */
char *fy_shc_key_encode(const fy_store_key *k);
char *fy_shc_runner_encode(const fy_store_runner *r);
char *fy_shc_token_encode(const fy_store_token *t);
char *fy_shc_hook_encode(const fy_store_hook *h);

int fy_shc_key_decode(const char *s, size_t n, fy_store_key *out, char *err, size_t errlen);
int fy_shc_runner_decode(const char *s, size_t n, fy_store_runner *out, char *err, size_t errlen);
int fy_shc_token_decode(const char *s, size_t n, fy_store_token *out, char *err, size_t errlen);
/* OUT holds the hook's secrets: the caller wipes it (fy_secure_zero) after use. */
int fy_shc_hook_decode(const char *s, size_t n, fy_store_hook *out, char *err, size_t errlen);

/* HASH as 64 lowercase hex digits and a NUL (the field names of
 * FY_SH_KEYHASH and FY_SH_TOKENS). */
void fy_shc_hex(const uint8_t hash[32], char out[65]);

/* The reverse: exactly 64 lowercase hex digits in S[0..N). Returns 0 or
 * FY_EINVAL (OUT is then zeroed). */
int fy_shc_unhex(const char *s, size_t n, uint8_t out[32]);

#endif
