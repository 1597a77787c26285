/* fwdhead.h: the header blocks the gateway relays, built by pure functions
 * (no I/O, no gateway state), so the rules are unit-tested in one place.
 *
 * Request (public -> runner), fy_gw_fwd_request:
 *   - hop-by-hop headers (RFC 9110 7.6.1, fy_http_hop_by_hop) are dropped,
 *     and so is Expect (the public server answered 100 Continue itself);
 *   - every x-ferry-* header is dropped: the gateway says x-ferry-key-id,
 *     so a client can never choose whose fair share it uses;
 *   - Authorization and x-api-key are dropped (the API key is the gateway's,
 *     never shown to a runner) unless KEEP_AUTH (a webhook's own headers);
 *   - x-forwarded-for is the client's chain (its x-forwarded-for values, in
 *     order) with the peer's address appended; x-forwarded-proto and
 *     x-forwarded-host are the gateway's, whatever the client claimed.
 *
 * Response (runner -> public), fy_gw_fwd_response:
 *   - hop-by-hop headers and Date are dropped (the public server writes its
 *     own), Content-Length is parsed out (the server frames the body);
 *   - when the gateway sends its own limits, the runner's x-ratelimit-* are
 *     dropped;
 *   - an event stream (text/event-stream) gets Cache-Control: no-cache and
 *     X-Accel-Buffering: no in place of any the runner sent, so nothing in
 *     front buffers it. */
#ifndef FY_GATEWAY_FWDHEAD_H
#define FY_GATEWAY_FWDHEAD_H

#include "common/buf.h"
#include "common/http.h"
#include "common/limits.h"
#include "gateway/ratelimit.h"
#include "proto/session.h"

#include <stdint.h>

typedef struct {
    const char *peer_host; /* the client's address ("1.2.3.4", "::1") */
    const char *proto;     /* "https" or "http" */
    const char *key_id;    /* sent as x-ferry-key-id; NULL: none */
    int keep_auth;         /* forward Authorization and x-api-key */
} gw_fwd_info;

/* A request's header block: the client's fields kept, plus the gateway's
 * (x-ferry-key-id, x-forwarded-for/-proto/-host). Values point into the
 * client's headers, INFO's strings and XFF, so they live as long as those. */
typedef struct {
    fyp_field f[FY_HTTP_MAX_HEADERS + 6];
    size_t n;
    fy_buf xff; /* x-forwarded-for's value */
} gw_fwd_request;

/* Fills OUT (uninitialised) from the client's headers H[0..N). Returns 0,
 * or FY_ENOMEM (OUT then needs no free). */
int fy_gw_fwd_request(gw_fwd_request *out, const fy_http_header *h, size_t n,
                      const gw_fwd_info *info);

void fy_gw_fwd_request_free(gw_fwd_request *r);

/* A response's header block for the public server, with room for the
 * caller's x-ratelimit-* and Retry-After after the N filled in. */
typedef struct {
    fy_http_header h[FYP_MAX_HEADER_FIELDS + 2 + FY_RL_MAX_HEADERS];
    size_t n;
    int64_t content_length; /* -1 when absent or not a plain decimal */
    int sse;                /* an event stream */
} gw_fwd_response;

/* Fills OUT from the runner's fields F[0..N) (values point into F). OWN_LIMITS:
 * the gateway adds its own x-ratelimit-* headers. */
void fy_gw_fwd_response(gw_fwd_response *out, const fyp_field *f, size_t n, int own_limits);

#endif
