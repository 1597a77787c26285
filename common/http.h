/* http.h: HTTP/1.1 server on llhttp, over any fy_stream (TCP or TLS).
 *
 * The server parses requests with llhttp, hands each one to a handler as soon
 * as its header block is complete, streams the request body to the handler
 * (or buffers it, up to a cap, for simple handlers) and writes the response
 * either in one piece (fy_http_respond) or streamed (fy_http_res_start /
 * fy_http_res_write / fy_http_res_end). Every write goes to the stream at
 * once: nothing is batched, so a server-sent event reaches the socket when it
 * is written.
 *
 * Connections are persistent (HTTP/1.1 by default, HTTP/1.0 with
 * "Connection: keep-alive"); pipelined requests are answered in order (the
 * parser pauses while a response is in progress). Everything a client sends is
 * bounded by the caps in limits.h; the server answers violations itself with a
 * small OpenAI-style JSON error and, where the connection cannot continue,
 * "Connection: close":
 *   header block over FY_HTTP_MAX_HEADER_BYTES or more than
 *     FY_HTTP_MAX_HEADERS fields                        431
 *   request target over FY_HTTP_MAX_URL_BYTES            414
 *   body over max_body (Content-Length up front, chunked bodies as the bytes
 *     arrive)                                             413
 *   header block not complete within header_timeout_ms    408, then close
 *   no body byte for body_timeout_ms while reading it     408 (or close once a
 *                                                          response started)
 *   malformed request (llhttp error)                      400
 *   Transfer-Encoding not ending in chunked               400
 *   a transfer coding other than chunked ("gzip, chunked") 501
 *   Expect other than 100-continue                        417
 *   CONNECT                                               405
 *   HTTP major version other than 1                       505
 * An idle keep-alive connection is closed quietly after idle_timeout_ms, as
 * is a new connection that sends nothing within header_timeout_ms.
 * Beyond max_connections a new connection is accepted and closed at once
 * (nothing is written: that is the cheapest answer under a connection flood,
 * and the client sees a closed connection it can retry).
 *
 * Threading: one server lives on one loop thread; every function here must be
 * called on that thread. Callbacks never run from inside the call that
 * registered them unless stated.
 */
#ifndef FY_HTTP_H
#define FY_HTTP_H

#include "buf.h"
#include "limits.h"
#include "stream.h"
#include "tls.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* --- Shared types and helpers (http_util.c) ------------------------------ */

/* A header field. In requests and responses the server and client produce,
 * both strings are NUL-terminated and the lengths are set. In header lists a
 * caller passes in, a length of 0 means "use strlen". */
typedef struct {
    const char *name;
    const char *value;
    size_t name_len;
    size_t value_len;
} fy_http_header;

/* First value of header NAME (case-insensitive) in H[0..N), or NULL. */
const char *fy_http_header_find(const fy_http_header *h, size_t n, const char *name);

/* Iterates over every value of NAME in order: start with *ITER = 0; returns
 * NULL when there are no more. */
const char *fy_http_header_next(const fy_http_header *h, size_t n, const char *name, size_t *iter);

/* Reason phrase for a status code ("Not Found"); "Unknown" when unknown. */
const char *fy_http_status_text(int status);

/* 1 when VALUE, a comma-separated header value, contains TOKEN
 * (case-insensitive), e.g. fy_http_has_token("keep-alive, Upgrade", "upgrade"). */
int fy_http_has_token(const char *value, const char *token);

/* 1 when NAME (of length LEN) is a hop-by-hop header that a proxy removes in
 * either direction (RFC 9110 7.6.1): Connection, Keep-Alive, TE, Trailer,
 * Trailers, Transfer-Encoding, Upgrade, any Proxy-* (Proxy-Connection,
 * Proxy-Authorization...), or one that CONNECTION (the message's Connection
 * value, may be NULL) lists. The one list both the gateway and the runner
 * forward by. */
int fy_http_hop_by_hop(const char *name, size_t len, const char *connection);

/* OpenAI-shaped errors. Every error either daemon answers -- the HTTP layer's
 * own 4xx, the gateway's auth, limits and routing, the runner's API -- is
 * built here, so the same status and code give the same body whoever sends
 * it:
 *   {"error":{"message":"...","type":"...","param":"..."|null,"code":"..."|null}}\n
 * TYPE comes from STATUS alone (fy_http_error_type): "invalid_request_error"
 * below 500 (OpenAI's type for 400, 401, 403, 404, 409, 413, 422, 429),
 * "server_error" from 500 on. PARAM names the request field at fault and CODE
 * is a stable machine-readable reason; NULL or "" gives null. */
#define FY_HTTP_ERROR_MAX_PARAM 96 /* bytes of PARAM and CODE always kept whole */
#define FY_HTTP_ERROR_MAX_CODE  48
const char *fy_http_error_type(int status);

/* Writes the error body into OUT and returns its length. Always valid JSON
 * (and valid UTF-8) when OUTLEN >= 128 + 6 * (param and code lengths): the
 * message is cut first, never inside an escape or a character; OUTLEN >=
 * 4096 holds a 512-byte message, a 96-byte param and a 48-byte code whole. */
size_t fy_http_error_json(char *out, size_t outlen, int status, const char *code, const char *param,
                          const char *message);

/* A parsed http:// or https:// URL. */
typedef struct {
    int tls;            /* 1 for https */
    char host[256];     /* without brackets for IPv6 literals */
    int port;           /* explicit or the scheme's default */
    int default_port;   /* 1 when PORT is the scheme's default */
    const char *target; /* path and query, pointing into the parsed string, or "/" */
} fy_http_url;

/* Parses URL. Rejects other schemes, userinfo ("user@host"), empty hosts,
 * bad ports, fragments and control or space characters. Returns 0 or
 * FY_EINVAL. OUT->target points into URL (or at a static "/"). */
int fy_http_url_parse(const char *url, fy_http_url *out);

/* --- Server ---------------------------------------------------------------- */

typedef struct fy_http_server fy_http_server;
typedef struct fy_http_req fy_http_req;

/* Called once per request when its header block is complete (or, with
 * buffer_body, when its whole body has arrived). The handler owns REQ from
 * now on and must finish it exactly once, now or later, with fy_http_respond,
 * fy_http_respond_error, fy_http_res_end or fy_http_res_abort -- also after
 * an abort callback or a body error, in which case the call only releases
 * REQ. REQ and everything it returns stay valid until then. */
typedef void (*fy_http_handler)(fy_http_req *req, void *data);

typedef struct {
    /* "ADDR:PORT" to listen on ("127.0.0.1:0" picks a free port), or NULL
     * for a server that only serves streams given to fy_http_server_attach. */
    const char *listen;
    /* Serve HTTPS: each accepted TCP stream is wrapped with
     * fy_tls_stream_new. NULL for plain HTTP. Must outlive the server. */
    fy_tls_config *tls;
    fy_http_handler on_request;
    void *data; /* passed to on_request */
    /* 1: read the whole body (at most max_body) before calling on_request;
     * fy_http_req_body then returns it. */
    int buffer_body;
    uint64_t max_body;          /* 0: FY_HTTP_DEFAULT_MAX_BODY; applies to every body */
    unsigned header_timeout_ms; /* 0: FY_HTTP_HEADER_TIMEOUT_MS */
    unsigned idle_timeout_ms;   /* 0: FY_HTTP_IDLE_TIMEOUT_MS */
    unsigned body_timeout_ms;   /* 0: FY_HTTP_BODY_TIMEOUT_MS */
    unsigned max_connections;   /* 0: FY_HTTP_MAX_CONNECTIONS */
    const char *server_header;  /* "Server:" value, NULL for none */
    /* Headers sent on every response, the server's own included (security
     * headers of a dashboard); copied at creation, at most
     * FY_HTTP_EXTRA_HEADERS_MAX bytes as "Name: value\r\n" lines. */
    const fy_http_header *extra_headers;
    size_t n_extra_headers;
} fy_http_server_options;

#define FY_HTTP_EXTRA_HEADERS_MAX 1024

/* Creates a server on LOOP and, when opts->listen is set, binds (with
 * SO_REUSEADDR) and listens. Returns 0, FY_EINVAL (bad address or options),
 * FY_EADDRINUSE, FY_EPERM or FY_ENOMEM. */
int fy_http_server_new(uv_loop_t *loop, const fy_http_server_options *opts, fy_http_server **out);

/* The bound TCP port (useful after listening on port 0), or 0. */
int fy_http_server_port(const fy_http_server *srv);

/* Serves HTTP on a stream made elsewhere (a tunnel stream, an in-memory pair
 * in a test). The server takes ownership of S (it closes it). S counts toward
 * max_connections. Returns 0, or FY_ELIMIT / FY_ECLOSED (S is then closed). */
int fy_http_server_attach(fy_http_server *srv, fy_stream *s);

typedef struct {
    uint64_t accepted; /* connections accepted or attached */
    uint64_t rejected; /* connections closed at once for max_connections */
    uint64_t active;   /* connections open now */
    uint64_t requests; /* requests handed to the handler */
    uint64_t errors;   /* requests answered by the server itself with 4xx/5xx */
    uint64_t aborted;  /* requests whose connection died before the response ended */
} fy_http_server_stats;

void fy_http_server_stats_get(const fy_http_server *srv, fy_http_server_stats *out);

typedef void (*fy_http_server_close_cb)(fy_http_server *srv, void *arg);

/* Stops listening and closes every connection (requests in flight get their
 * abort callback). CB (may be NULL) runs once the last connection is gone and
 * every handler has finished its request; the server is freed after CB.
 * NULL is ok; closing twice is a no-op. */
void fy_http_server_close(fy_http_server *srv, fy_http_server_close_cb cb, void *arg);

/* --- Requests ------------------------------------------------------------- */

/* Method name ("GET", "POST"...), never NULL. */
const char *fy_http_req_method(const fy_http_req *req);
/* The request target as sent ("/v1/models?x=1"). */
const char *fy_http_req_target(const fy_http_req *req);
/* The target's path ("/v1/models") and query ("x=1", "" when none). */
const char *fy_http_req_path(const fy_http_req *req);
const char *fy_http_req_query(const fy_http_req *req);
/* HTTP version as 10 or 11. */
int fy_http_req_version(const fy_http_req *req);
/* Header fields in the order received; lookups are case-insensitive and
 * repeated fields are kept. */
const fy_http_header *fy_http_req_headers(const fy_http_req *req, size_t *n);
const char *fy_http_req_header(const fy_http_req *req, const char *name);
/* Declared body length: Content-Length, -1 for a chunked body, 0 for none. */
int64_t fy_http_req_content_length(const fy_http_req *req);
/* Peer address as text ("127.0.0.1:5555", or "memory" for a pair). */
const char *fy_http_req_peer(const fy_http_req *req);
/* The connection's stream (for fy_tls_peer_get and friends). Do not read,
 * write or close it. */
fy_stream *fy_http_req_stream(const fy_http_req *req);

/* Called once when the body chunk DATA arrives; DATA is valid only during
 * the call. */
typedef void (*fy_http_body_cb)(fy_http_req *req, const char *data, size_t len, void *arg);
/* Called once when the body ended (status 0) or failed: FY_ETOOBIG (over
 * max_body; the server answered 413), FY_ETIMEDOUT (body timeout), FY_EPROTO
 * (malformed chunked encoding), FY_ECONNRESET / FY_EEOF (client gone). */
typedef void (*fy_http_body_end_cb)(fy_http_req *req, int status, void *arg);

/* Streams the request body to ON_DATA as it arrives, then calls ON_END.
 * Sends "100 Continue" first when the client asked for it and no response
 * has started. Callbacks run from the loop, never from inside this call
 * (a request without a body gets ON_END(0) on the next loop turn).
 * Returns 0, FY_EBUSY when the body is already being read, FY_ECLOSED. */
int fy_http_req_read_body(fy_http_req *req, fy_http_body_cb on_data, fy_http_body_end_cb on_end,
                          void *arg);

/* Reads the whole body (at most the server's max_body) into memory, then
 * calls ON_END; fy_http_req_body returns the bytes. Same rules as above. */
int fy_http_req_buffer_body(fy_http_req *req, fy_http_body_end_cb on_end, void *arg);

/* The buffered body (empty until it is complete). */
fy_slice fy_http_req_body(const fy_http_req *req);

/* Backpressure on the request body: after pause, no ON_DATA runs (not even
 * for bytes already read) until resume. Both may be called from ON_DATA. */
void fy_http_req_pause(fy_http_req *req);
void fy_http_req_resume(fy_http_req *req);

/* Called once if the connection is lost or given up (client disconnected,
 * read or write error, body error, server closing) before the handler
 * finished REQ. STATUS says why. The handler should stop its work and must
 * still finish REQ (that call then only releases it). */
typedef void (*fy_http_abort_cb)(fy_http_req *req, int status, void *arg);
void fy_http_req_on_abort(fy_http_req *req, fy_http_abort_cb cb, void *arg);

/* --- Responses -------------------------------------------------------------- */

/* Sends a whole response and finishes REQ: the status line, HEADERS[0..N),
 * Date, Content-Length and (when needed) Connection, then BODY, in one
 * stream write. BODY is copied. Content-Length, Transfer-Encoding and
 * Connection in HEADERS are ignored (the server sets them). A header with CR
 * or LF is refused. REQ is finished even when this fails.
 * Returns 0, FY_EINVAL, FY_EBUSY (a response already started), FY_ECLOSED
 * (the connection is gone: nothing is sent), FY_ENOMEM. */
int fy_http_respond(fy_http_req *req, int status, const fy_http_header *headers, size_t n,
                    const void *body, size_t len);

/* fy_http_respond with the OpenAI-style JSON error body (see
 * fy_http_error_json) and Content-Type: application/json. */
int fy_http_respond_error(fy_http_req *req, int status, const char *code, const char *message);

/* Starts a streamed response. CONTENT_LENGTH >= 0 sends Content-Length and
 * then exactly that many bytes must be written; -1 streams with chunked
 * encoding (or, to an HTTP/1.0 client, until the connection closes). The
 * head is written at once. Returns 0, FY_EINVAL, FY_EBUSY, FY_ECLOSED. */
int fy_http_res_start(fy_http_req *req, int status, const fy_http_header *headers, size_t n,
                      int64_t content_length);

/* Writes one piece of the body (copied) to the stream at once, as one chunk
 * when chunked. Returns 0, or 1 when the stream's write queue is now above
 * FY_STREAM_HIGH_WATERMARK (the producer should wait for the drain
 * callback), or FY_EINVAL (more than the declared Content-Length),
 * FY_ECLOSED (the connection is gone), FY_ENOMEM. */
int fy_http_res_write(fy_http_req *req, const void *data, size_t len);

/* 1 while the write queue is at or below FY_STREAM_HIGH_WATERMARK. */
int fy_http_res_writable(const fy_http_req *req);

/* Calls CB once, the next time the write queue falls below
 * FY_STREAM_LOW_WATERMARK after a write completes (or on the next loop turn
 * when it already is). NULL CB disarms. */
typedef void (*fy_http_drain_cb)(fy_http_req *req, void *arg);
void fy_http_res_on_drain(fy_http_req *req, fy_http_drain_cb cb, void *arg);

/* Ends a streamed response (the last chunk when chunked) and finishes REQ.
 * Returns 0, FY_EINVAL (fewer bytes than the declared Content-Length: the
 * connection is then closed so the client sees the truncation), FY_ECLOSED. */
int fy_http_res_end(fy_http_req *req);

/* Finishes REQ by closing its connection: the client sees a truncated
 * response (or none). For upstream failures in the middle of a stream. */
void fy_http_res_abort(fy_http_req *req);

#endif
