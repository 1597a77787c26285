/* http_fetch.h: one blocking HTTP request, for command-line tools.
 *
 * fy_http_fetch runs a single request to completion on a private libuv loop
 * (made and closed inside the call) with an fy_http_client, so a program
 * with no loop of its own (the `ferry` CLI, `ferry-runner enroll`) can ask
 * and wait. Not for daemons: it blocks the calling thread. */
#ifndef FY_HTTP_FETCH_H
#define FY_HTTP_FETCH_H

#include "common/buf.h"
#include "common/http.h"

#include <stddef.h>

typedef struct {
    const char *method; /* "GET", "POST"... */
    const char *url;    /* http:// or https:// (then TLS is needed) */
    const fy_http_header *headers;
    size_t nheaders;
    const void *body; /* whole request body (copied), or NULL */
    size_t body_len;
    fy_tls_config *tls;  /* for https:// URLs; must outlive the call */
    unsigned timeout_ms; /* connect and read timeouts; 0: the client's defaults */
    size_t max_body;     /* cap on the response body (required, > 0) */
} fy_http_fetch_options;

/* Where a fetch stopped. */
typedef enum {
    FY_HTTP_FETCH_OK,    /* a whole response arrived */
    FY_HTTP_FETCH_SETUP, /* no event loop or client could be made */
    FY_HTTP_FETCH_START, /* the request could not start (bad URL, a connect that could not begin) */
    FY_HTTP_FETCH_FAILED, /* the request started, then failed (no or partial response) */
} fy_http_fetch_stage;

typedef struct {
    fy_http_fetch_stage stage;
    int status;  /* the response's HTTP status; 0 without a response */
    fy_buf body; /* the response body (max_body cap); the caller frees it,
                    or wipes it (fy_buf_wipe) when it may hold a secret */
} fy_http_fetch_result;

/* Runs the request. Returns 0 once a whole response arrived, whatever its
 * HTTP status (RES->status, RES->body). Otherwise an FY_E* code: FY_EUV (no
 * loop), FY_ENOMEM, what fy_http_call_start returns (FY_EINVAL, FY_ENOTSUP,
 * ...), what on_done reports (FY_ETIMEDOUT, FY_ECONNREFUSED, FY_ECERT...),
 * FY_ETOOBIG (a body over max_body) or FY_EIO (the loop ran dry without an
 * answer); RES->stage tells which step failed and ERR says why in words.
 * RES->body must be freed in every case (it may hold part of a body). */
int fy_http_fetch(const fy_http_fetch_options *o, fy_http_fetch_result *res, char *err,
                  size_t errlen);

#endif
