/* hookverify.h: webhook signature verification, pure (no sockets, no store).
 *
 * Every scheme signs the raw body bytes as received: nothing is parsed or
 * re-serialized before the check. MACs are compared in constant time, and
 * every signature a request carries is checked against every secret the hook
 * accepts (the current one, and the previous one until the end of its grace
 * period) without stopping at the first match, so the time taken does not say
 * which one matched or where a guess went wrong.
 *
 *   github       X-Hub-Signature-256: sha256=<hex HMAC(secret, body)>, and
 *                X-GitHub-Delivery must be present (the caller refuses a
 *                delivery id seen before: GitHub signs no timestamp).
 *   stripe       Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...] over
 *                "<t>.<body>"; |now - t| <= tolerance. Other schemes (v0)
 *                are ignored, as Stripe's libraries do.
 *   slack        X-Slack-Signature: v0=<hex> over "v0:<ts>:<body>", ts from
 *                X-Slack-Request-Timestamp; |now - ts| <= tolerance (300 s).
 *   hmac-sha256  HEADER: [sha256=]<hex or base64 HMAC>, over the body, or over
 *                "<ts>.<body>" when a timestamp header is configured (then
 *                |now - ts| <= tolerance).
 *   none         nothing checked.
 * A timestamp in the future beyond the tolerance is refused like a stale one. */
#ifndef FY_GATEWAY_HOOKVERIFY_H
#define FY_GATEWAY_HOOKVERIFY_H

#include "common/http.h"
#include "gateway/store.h"

#include <stddef.h>
#include <stdint.h>

#define FY_HOOK_MAX_SIGS     8   /* signatures of one header considered (Stripe v1s) */
#define FY_HOOK_DELIVERY_MAX 128 /* bytes of a delivery id (X-GitHub-Delivery) */

typedef enum {
    FY_HV_OK = 0,
    FY_HV_MISSING_HEADER,
    FY_HV_MALFORMED_HEADER,
    FY_HV_BAD_SIGNATURE,
    FY_HV_STALE_TIMESTAMP,
    FY_HV_REPLAY, /* decided by the caller, named here for metrics and errors */
    FY_HV_COUNT
} fy_hv_outcome;

typedef struct {
    fy_hv_outcome outcome;
    char message[192]; /* for the 401 body: names the header and what failed */
    /* github: the X-Hub-Delivery value (into the headers) and its length */
    const char *delivery;
    size_t delivery_len;
} fy_hv_result;

/* Verifies a request to hook H (its verify kind, secrets, tolerance and
 * generic options) with headers HS[0..N) and BODY at unix time NOW. Fills RES
 * and returns its outcome. */
fy_hv_outcome fy_hook_verify(const fy_store_hook *h, const fy_http_header *hs, size_t n,
                             const void *body, size_t len, int64_t now, fy_hv_result *res);

/* Metric label ("missing_header", "malformed_header", "bad_signature",
 * "stale_timestamp", "replay") and error code ("webhook_bad_signature"...). */
const char *fy_hv_reason(fy_hv_outcome o);
const char *fy_hv_code(fy_hv_outcome o);

/* --- parsers (exposed for tests and the fuzzer) --------------------------------- */

/* A unix timestamp: 1..12 decimal digits, nothing else. 0 or FY_EPARSE. */
int fy_hook_parse_unix(const char *v, size_t len, int64_t *t);

/* Stripe-Signature: comma-separated k=v items (spaces around items are
 * ignored); exactly one t= (a unix timestamp); v1= values of 64 hex digits
 * are decoded into SIGS (at most MAX; more are ignored), other v1 values and
 * other keys are skipped. Returns 0 with *T and *NSIG (>= 1), or FY_EPARSE
 * (no or several t, a bad t, no usable v1, an item without '='). */
int fy_hook_parse_stripe(const char *v, size_t len, int64_t *t, uint8_t (*sigs)[32], size_t max,
                         size_t *nsig);

/* "<PREFIX><64 hex digits>" (PREFIX matched without regard to case; may be
 * ""), surrounding spaces ignored, into OUT. 0 or FY_EPARSE. */
int fy_hook_parse_hex_sig(const char *v, size_t len, const char *prefix, uint8_t out[32]);

/* Standard base64 (RFC 4648 section 4) of 32 bytes, with or without its one
 * '=' of padding, surrounding spaces ignored, into OUT. 0 or FY_EPARSE. */
int fy_hook_parse_b64_sig(const char *v, size_t len, uint8_t out[32]);

#endif
