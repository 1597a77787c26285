/* http_client.h: HTTP/1.1 client on llhttp, over TCP or TLS.
 *
 * A client keeps a pool of idle keep-alive connections per origin (scheme,
 * host, port). A request reuses the most recently used idle connection of its
 * origin or dials a new one; after a complete response on a persistent
 * connection, the connection goes back to the pool (at most max_idle per
 * origin; the rest are closed). Pooled connections keep reading, so one the
 * server closed is noticed and dropped; if a reused connection still fails
 * before any byte of the response arrived, an idempotent request whose body
 * was given whole (not streamed) is retried once on a new connection.
 *
 * Request bodies are given whole or streamed (Content-Length or chunked);
 * response bodies are delivered as they arrive, and the consumer can pause
 * them. Timeouts: connect (TCP connect plus TLS handshake, by their own
 * timers) and read (no response byte for read_timeout_ms while waiting for
 * or reading the response; paused time is not counted).
 *
 * Threading: one client lives on one loop thread. */
#ifndef FY_HTTP_CLIENT_H
#define FY_HTTP_CLIENT_H

#include "http.h"

typedef struct fy_http_client fy_http_client;
typedef struct fy_http_call fy_http_call;

typedef struct {
    /* Used for https:// URLs (the SNI name and the checked name are the URL's
     * host). NULL: https URLs fail with FY_ENOTSUP. Must outlive the client. */
    fy_tls_config *tls;
    unsigned connect_timeout_ms; /* 0: FY_HTTP_CLIENT_CONNECT_TIMEOUT_MS */
    unsigned read_timeout_ms;    /* 0: FY_HTTP_CLIENT_READ_TIMEOUT_MS */
    unsigned pool_idle_ms;       /* idle pooled connections are closed after; 0: default */
    unsigned max_idle;           /* idle connections kept per origin; 0: default */
} fy_http_client_options;

/* Creates a client. Returns 0, FY_EINVAL or FY_ENOMEM. */
int fy_http_client_new(uv_loop_t *loop, const fy_http_client_options *opts, fy_http_client **out);

/* Cancels every call in flight (each gets on_done(FY_ECANCELED) from inside
 * this call), closes every connection and frees the client once they are
 * closed. NULL is ok. */
void fy_http_client_close(fy_http_client *c);

typedef struct {
    /* Connections dialed (TCP connects started) and requests sent on a
     * reused pooled connection. */
    uint64_t connects;
    uint64_t reused;
    uint64_t retries;
    uint64_t idle; /* idle pooled connections now */
} fy_http_client_stats;

void fy_http_client_stats_get(const fy_http_client *c, fy_http_client_stats *out);

/* A response head, valid during on_response only (copy what you keep). */
typedef struct {
    int status;
    int version; /* 10 or 11 */
    const fy_http_header *headers;
    size_t nheaders;
} fy_http_response;

typedef struct {
    /* The response head arrived (1xx interim responses are skipped). */
    void (*on_response)(fy_http_call *call, const fy_http_response *res, void *arg);
    /* A piece of the response body, valid during the call. */
    void (*on_data)(fy_http_call *call, const char *data, size_t len, void *arg);
    /* The last callback: 0 when the whole response arrived, or FY_ETIMEDOUT,
     * FY_ECONNREFUSED, FY_EUNREACH, FY_ECONNRESET, FY_EEOF (closed early),
     * FY_EPROTO (malformed response), FY_ETOOBIG (response head over
     * FY_HTTP_CLIENT_MAX_RESPONSE_HEADER), FY_ETLS / FY_ECERT, FY_ECANCELED
     * (client closed). CALL is freed when it returns. */
    void (*on_done)(fy_http_call *call, int status, void *arg);
    /* The streamed request body may be written again (see fy_http_call_write). */
    void (*on_drain)(fy_http_call *call, void *arg);
} fy_http_call_cbs;

typedef struct {
    const char *method; /* "GET", "POST"... */
    const char *url;    /* http://host[:port]/path?query or https://... */
    /* Extra request headers. Host is added unless given; Content-Length,
     * Transfer-Encoding and Connection are set by the client and ignored here. */
    const fy_http_header *headers;
    size_t nheaders;
    /* A whole body (copied), or stream_body = 1 to write it afterwards with
     * fy_http_call_write and fy_http_call_end: content_length >= 0 sends
     * Content-Length (exactly that many bytes must follow), -1 is chunked. */
    const void *body;
    size_t body_len;
    int stream_body;
    int64_t content_length;
    fy_http_call_cbs cbs;
    void *arg;
} fy_http_call_options;

/* Starts a request. Callbacks run from the loop, never from inside this call.
 * Returns 0 (and *OUT, valid until on_done returns or cancel), FY_EINVAL (bad
 * URL or options), FY_ENOTSUP (https without a TLS config), FY_ENOMEM, or the
 * error of a connect that could not even start. */
int fy_http_call_start(fy_http_client *c, const fy_http_call_options *opts, fy_http_call **out);

/* Writes a piece of a streamed request body (copied). Returns 0, 1 when the
 * queue is above FY_STREAM_HIGH_WATERMARK (wait for on_drain), FY_EINVAL
 * (not streaming, already ended, or more than content_length), FY_ECLOSED. */
int fy_http_call_write(fy_http_call *call, const void *data, size_t len);

/* Ends a streamed request body. Returns 0, FY_EINVAL (fewer bytes than
 * content_length), FY_ECLOSED. */
int fy_http_call_end(fy_http_call *call);

/* Backpressure on the response body: no on_data until resume. May be called
 * from on_data. */
void fy_http_call_pause(fy_http_call *call);
void fy_http_call_resume(fy_http_call *call);

/* Cancels CALL: its connection is closed (never reused) and CALL is freed.
 * No callback of CALL runs after this returns. May be called from CALL's own
 * callbacks (except on_done, after which CALL is already gone). */
void fy_http_call_cancel(fy_http_call *call);

#endif
