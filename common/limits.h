/* limits.h: every cap on what a stranger (or a peer) can send, in one place.
 *
 * Defaults here; daemons may lower or raise some through flags, always within
 * these types. A value a module enforces must be named here, not hard-coded
 * next to the check. */
#ifndef FY_LIMITS_H
#define FY_LIMITS_H

/* HTTP/1.1 (common/http). */
#define FY_HTTP_MAX_HEADER_BYTES           (16 * 1024) /* request line + headers; over it: 431 */
#define FY_HTTP_MAX_HEADERS                100         /* header fields per message; over it: 431 */
#define FY_HTTP_MAX_URL_BYTES              (8 * 1024)  /* request target; over it: 414 */
#define FY_HTTP_DEFAULT_MAX_BODY           (1024 * 1024) /* buffered-body cap unless configured; 413 */
#define FY_HTTP_HEADER_TIMEOUT_MS          10000 /* whole header block must arrive in this; 408 */
#define FY_HTTP_IDLE_TIMEOUT_MS            60000 /* idle keep-alive connection is closed */
#define FY_HTTP_BODY_TIMEOUT_MS            60000 /* no body byte for this long: close */
#define FY_HTTP_MAX_CONNECTIONS            10000 /* per listener */
#define FY_HTTP_CLIENT_MAX_RESPONSE_HEADER (64 * 1024)
/* Unread body the server drops to keep a connection; unparsed bytes held
 * while parsing is paused; after a final response, how long to wait for the
 * client's FIN. */
#define FY_HTTP_MAX_DISCARD_BYTES           (64 * 1024)
#define FY_HTTP_MAX_PENDING_BYTES           (256 * 1024)
#define FY_HTTP_LINGER_TIMEOUT_MS           2000
#define FY_HTTP_CLIENT_MAX_RESPONSE_HEADERS 100 /* header fields in a response */
#define FY_HTTP_CLIENT_CONNECT_TIMEOUT_MS   10000
#define FY_HTTP_CLIENT_READ_TIMEOUT_MS      60000 /* no response byte for this long: fail the call */
#define FY_HTTP_CLIENT_POOL_IDLE_MS         30000 /* idle pooled connections are closed after this */
#define FY_HTTP_CLIENT_POOL_MAX_IDLE        16    /* idle connections kept per origin */

/* TLS (common/tls). */
#define FY_TLS_HANDSHAKE_TIMEOUT_MS 10000
/* Encrypted bytes queued before writes fail. A writer that pauses at
 * FY_STREAM_HIGH_WATERMARK may still owe what its source had in flight: the
 * gateway relaying a tunnel stream writes up to the stream window
 * (FY_LINK_STREAM_WINDOW, 1 MiB) past the watermark, so this must exceed
 * both together (gateway/px.c checks it at compile time). */
#define FY_TLS_MAX_WRITE_QUEUE (2 * 1024 * 1024)
#define FY_TLS_PEM_MAX_BYTES   (1024 * 1024) /* certificate/key files read at most */

/* Streams: a writer should pause its source above the high watermark and
 * resume below the low one (see fy_stream_write_queue_size). */
#define FY_STREAM_HIGH_WATERMARK (256 * 1024)
#define FY_STREAM_LOW_WATERMARK  (64 * 1024)

/* Constrained decoding (runner/api/jsonschema.h, runner/engine/grammar.h):
 * a schema's serialized size and nesting, the grammar it compiles to (rules,
 * elements, a repetition's bound; each past its cap is a 400 naming it),
 * and the parse state's stacks and their depth (past those a state keeps
 * the stacks it has: what it allows stays inside the language). */
#define FY_JSONSCHEMA_MAX_BYTES (128 * 1024)
#define FY_JSONSCHEMA_MAX_DEPTH 32
#define FY_GRAMMAR_MAX_RULES    4096   /* rules in one grammar */
#define FY_GRAMMAR_MAX_ELEMENTS 65536  /* elements over all alternatives */
#define FY_GRAMMAR_MAX_STACKS   64     /* live parse stacks in one state */
#define FY_GRAMMAR_MAX_DEPTH    128    /* frames in one stack (nesting) */
#define FY_GRAMMAR_REPEAT_MAX   100000 /* a bounded repetition's max */

/* Config files. */
#define FY_CONFIG_MAX_BYTES (1024 * 1024)

#endif
