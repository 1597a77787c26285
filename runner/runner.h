/* runner.h: ferry-runner's modules and how they fit together.
 *
 *   enroll.c    `ferry-runner enroll`: key pair + CSR made here, POST /v1/enroll
 *               to the gateway's tunnel listener, runner dir written
 *   run.c       `ferry-runner run`: options, config file, signals, drain, exit
 *   tunnel.c    N outbound mTLS connections spread over the gateways, each a
 *               proto session (HELLO, heartbeats, GOAWAY), reconnected with
 *               full-jitter exponential backoff; and the stream helper the
 *               two kinds of stream below share (fy_rn_stream_*)
 *   upstream.c  one tunnel stream <-> one HTTP call to the local upstream,
 *               bodies streamed both ways under the tunnel's flow control
 *   upmodels.c  the upstream's models, read from its /v1/models at start and
 *               every refresh, announced in HELLO
 *   apistream.c one tunnel stream <-> one call of the built-in OpenAI API
 *               (runner/api/server.h), answered in-process; its usage ends
 *               the stream as a TRAILERS frame
 *   demo_model.c `ferry-runner demo-model`: writes the built-in demo model
 *   rdir.c      the runner data directory (files, runner.json)
 *
 * Everything runs on one libuv loop; nothing here is thread-safe. */
#ifndef FY_RUNNER_H
#define FY_RUNNER_H

#include "common/http_client.h"
#include "common/tls.h"
#include "proto/session.h"
#include "runner/api/server.h"

#include <stdint.h>
#include <uv.h>

/* --- Runner data directory (rdir.c) -------------------------------------- */

#define FY_RN_KEY    "runner.key"  /* private key, 0600, never leaves the machine */
#define FY_RN_CERT   "runner.crt"  /* client certificate, CN = runner name */
#define FY_RN_CA     "ca.crt"      /* CA the gateway's tunnel listener is verified against */
#define FY_RN_CONFIG "runner.json" /* {"name", "gateways": [...], "ca_fingerprint"} */

#define FY_RN_MAX_GATEWAYS      16
#define FY_RN_MAX_GATEWAY_ADDRS 64 /* dial targets once names are resolved */
#define FY_RN_NAME_MAX          128

typedef struct {
    char name[FY_RN_NAME_MAX];
    char gateways[FY_RN_MAX_GATEWAYS][300];
    size_t ngateways;
    char ca_fingerprint[80];
} fy_rn_enrollment;

/* Reads DIR/runner.json. Returns 0, FY_ENOENT (not enrolled), FY_EPARSE
 * (damaged: ERR says what) or another FY_E* code. */
int fy_rn_enrollment_load(const char *dir, fy_rn_enrollment *e, char *err, size_t errlen);

/* Writes DIR/runner.json atomically. */
int fy_rn_enrollment_save(const char *dir, const fy_rn_enrollment *e);

/* Splits "HOST:PORT" or "[V6]:PORT" into HOST (no brackets) and PORT. Returns 0
 * or FY_EINVAL. */
int fy_rn_hostport_parse(const char *text, char *host, size_t hostlen, int *port);

/* Parses a CA fingerprint given as "sha256:HEX", "HEX" or colon-separated hex
 * ("AB:CD:..." as openssl prints it) into 32 bytes. Returns 0 or FY_EINVAL. */
int fy_rn_fingerprint_parse(const char *text, uint8_t out[32]);

/* --- Tunnel streams (tunnel.c) ------------------------------------------------- */

typedef struct fy_rn_conn fy_rn_conn;
typedef struct fy_rn_stream_base fy_rn_stream_base;

/* An intrusive doubly-linked list node. */
typedef struct fy_rn_link {
    struct fy_rn_link *prev, *next;
} fy_rn_link;

/* The handlers the tunnel calls with the session's events about a stream
 * (the stream's fy_rn_stream_base is their first argument). */
typedef struct fy_rn_stream_ops {
    /* Request body bytes (valid during the call) and/or its end. */
    void (*on_data)(void *st, const char *data, size_t len, int end);
    /* The stream's send window opened again: fy_rn_stream_flush. */
    void (*on_writable)(void *st);
    /* The stream is gone from the session (reset by the gateway, or the
     * connection died): stop its work and fy_rn_stream_free it. */
    void (*on_reset)(void *st, uint32_t code, int remote);
} fy_rn_stream_ops;

/* What every kind of tunnel stream starts with. The stream helper below
 * (tunnel.c) writes these fields; the stream's module only reads them. */
struct fy_rn_stream_base {
    fy_rn_link link; /* first: in its connection's list while alive */
    const fy_rn_stream_ops *ops;
    fy_rn_conn *conn;
    uint32_t id;
    fy_buf out;         /* response bytes the windows did not take yet */
    unsigned ended : 1; /* this side's half ended (END_STREAM or TRAILERS) */
};

/* The one helper upstream.c and apistream.c serve their streams with: the
 * stream's place on its connection, its response under the session's flow
 * control, its end and its reset. Every call that queues session output
 * also asks the connection to write it soon (coalesced once per loop
 * iteration), so callers never touch the session or the connection. */

/* A new stream of SIZE bytes (zeroed; SIZE >= sizeof(fy_rn_stream_base),
 * the base first) for stream ID of CONN, served by OPS: linked into CONN's
 * list (a connection that dies calls on_reset for every stream still on it)
 * and set as the session's stream data, so the session's events about it
 * reach OPS. Response bytes the windows do not take are queued up to
 * OUT_MAX. Returns the stream, or NULL when out of memory (the stream is
 * then reset: the gateway sees INTERNAL_ERROR). */
fy_rn_stream_base *fy_rn_stream_new(fy_rn_conn *conn, uint32_t id, size_t size,
                                    const fy_rn_stream_ops *ops, size_t out_max);

/* Unlinks SB from its connection, which forgets it (no more events arrive
 * for it), drops what is queued and frees SB. Call once, from the stream's
 * own free; the stream must be reset or ended before (or gone from the
 * session). NULL ok. */
void fy_rn_stream_free(fy_rn_stream_base *sb);

/* Sends the RESPONSE head R (no END_STREAM). Returns 0 or
 * fyp_session_respond's error (FY_ETOOBIG: the fields do not fit a frame;
 * any other: the stream is gone). */
int fy_rn_stream_respond(fy_rn_stream_base *sb, const fyp_response *r);

/* Sends DATA[0..LEN) as far as the windows allow, after what is queued, and
 * queues the rest (copied). Returns 0 when all of it went, 1 when some is
 * queued (FYP_EV_WRITABLE will come: fy_rn_stream_flush), FY_ECLOSED when
 * the session refused it (the stream is gone or the session dead), or
 * FY_ETOOBIG / FY_ENOMEM when the queue cannot take the rest (nothing of it
 * is queued). */
int fy_rn_stream_write(fy_rn_stream_base *sb, const char *data, size_t len);

/* Queues DATA[0..LEN) (copied) without sending it: a whole body already in
 * memory, bounded by whoever made it, so the queue's cap is raised to hold
 * it. fy_rn_stream_flush sends it, so the last bytes can carry END_STREAM.
 * Returns 0 or FY_ENOMEM. */
int fy_rn_stream_queue(fy_rn_stream_base *sb, const char *data, size_t len);

/* Sends what is queued as far as the windows allow. When END and the queue
 * emptied, ends this side's half once (sb->ended): with TRAILERS when
 * TRAILERS is not NULL, else END_STREAM on the last bytes (or an empty DATA
 * when there were none left). Returns 1 when nothing is queued any more
 * (and the half ended if END), 0 when bytes wait for FYP_EV_WRITABLE, or
 * FY_ECLOSED when the session refused (reset the stream). */
int fy_rn_stream_flush(fy_rn_stream_base *sb, int end, const fyp_trailers *trailers);

/* Returns LEN bytes of request credit to the gateway. */
void fy_rn_stream_consume(fy_rn_stream_base *sb, size_t len);

/* Resets the stream with CODE (FYP_ERR_INTERNAL, ...): the gateway sees it
 * and the session forgets the stream (its unconsumed data dropped, its
 * credit returned). The caller frees SB next. */
void fy_rn_stream_reset(fy_rn_stream_base *sb, uint32_t code);

/* "HOST:PORT#N" of the stream's connection, for logs. */
const char *fy_rn_stream_label(const fy_rn_stream_base *sb);

/* Who serves the streams the gateways open: OPEN runs for each REQUEST on
 * stream ID of CONN (REQ valid during the call) with ARG, and makes the
 * stream with fy_rn_stream_new (or resets it). So the tunnel calls the
 * stream's module only through this and the stream's ops. */
typedef struct {
    void (*open)(void *arg, fy_rn_conn *conn, uint32_t id, const fyp_request *req, int end_stream);
    void *arg;
} fy_rn_opener;

/* --- Upstream (upstream.c) ------------------------------------------------ */

typedef struct fy_rn_upstream fy_rn_upstream;
typedef struct fy_rn_stream fy_rn_stream;

typedef struct {
    const char *url;          /* http://127.0.0.1:PORT[/base] */
    unsigned timeout_ms;      /* no response byte for this long: 504; 0 = default */
    unsigned connect_timeout; /* ms; 0 = default */
} fy_rn_upstream_options;

/* Creates the upstream side: parses the URL (http:// only) and makes the HTTP
 * client. Returns 0, or FY_EINVAL / FY_ENOTSUP with a message in ERR, or
 * FY_ENOMEM. */
int fy_rn_upstream_new(uv_loop_t *loop, const fy_rn_upstream_options *o, fy_rn_upstream **out,
                       char *err, size_t errlen);

/* Closes the HTTP client (every call still running is cancelled). Streams
 * must be gone first (the tunnel is closed before the upstream). NULL ok. */
void fy_rn_upstream_free(fy_rn_upstream *up);

typedef struct {
    uint64_t started;   /* streams opened by the gateway */
    uint64_t completed; /* responses ended normally */
    uint64_t failed;    /* upstream errors answered with 502/504 or a reset */
    uint64_t canceled;  /* reset by the gateway or lost with a connection */
    uint64_t active;    /* streams alive now */
} fy_rn_upstream_stats;

void fy_rn_upstream_stats_get(const fy_rn_upstream *up, fy_rn_upstream_stats *out);

/* "http://host:port[/base]" without a trailing '/': what request targets
 * are appended to. */
const char *fy_rn_upstream_base(const fy_rn_upstream *up);

/* The tunnel's opener for UP (which outlives the tunnel): a REQUEST starts
 * the upstream call, or is answered an error at once. Resetting the stream
 * cancels the upstream call at once. */
fy_rn_opener fy_rn_upstream_opener(fy_rn_upstream *up);

/* --- The upstream's models (upmodels.c) --------------------------------------- */

#define FY_RN_MODELS_MAX_BODY (1024 * 1024) /* a /v1/models answer above this is refused */
/* Bytes the announced ids may take together, one length byte each included:
 * what HELLO's 16 KiB leaves after its other fields (at most ~700 bytes). */
#define FY_RN_MODELS_BYTES 15360

/* A validated model list: at most FYP_MAX_MODELS distinct ids, each 1..255
 * visible ASCII bytes (HELLO's text rule), sum(1 + length) within
 * FY_RN_MODELS_BYTES. v[i] points into text. */
typedef struct {
    char text[FY_RN_MODELS_BYTES];
    const char *v[FYP_MAX_MODELS];
    size_t n;
    size_t skipped; /* ids left out: not a string, invalid, repeated, over the bounds */
} fy_rn_model_list;

/* Parses an OpenAI model list ({"data": [{"id": "..."}, ...]}, other fields
 * ignored) into OUT, in order. Returns 0, or FY_EPARSE (not JSON, or no data
 * array; ERR says which) with OUT empty. */
int fy_rn_model_list_parse(const char *body, size_t len, fy_rn_model_list *out, char *err,
                           size_t errlen);

typedef struct fy_rn_models fy_rn_models;

/* The list changed (MODELS valid during the call). */
typedef void (*fy_rn_models_cb)(fy_rn_models *w, const char *const *models, size_t n, void *arg);

typedef struct {
    const char *base;    /* the upstream's base URL (fy_rn_upstream_base) */
    uint64_t refresh_ms; /* read again this long after each read; 0 = once */
    unsigned timeout_ms; /* one read's deadline (connect + answer); 0 = 5 s */
    fy_rn_models_cb on_change;
    void *arg;
} fy_rn_models_options;

/* Starts reading BASE/v1/models at once. A 200 with a list replaces the
 * current list; any other answer empties it; a failed read (refused, timed
 * out) keeps it. Each outcome is logged when it differs from the last one.
 * Returns 0, FY_EINVAL (no base, URL too long) or FY_ENOMEM. */
int fy_rn_models_new(uv_loop_t *loop, const fy_rn_models_options *o, fy_rn_models **out);
/* 1 once the first read ended, whatever its outcome. */
int fy_rn_models_ready(const fy_rn_models *w);
/* The current list; *MODELS is valid until the next loop iteration. */
size_t fy_rn_models_get(const fy_rn_models *w, const char *const **models);
/* Stops (a read in flight is cancelled, no callback runs after this) and
 * frees W once its handles closed (the loop must run). NULL ok. */
void fy_rn_models_free(fy_rn_models *w);

/* --- API streams (apistream.c) ------------------------------------------------ */

/* The tunnel's opener for API (which outlives the tunnel): a REQUEST's body
 * is read (up to FY_API_MAX_BODY; 413 above), then served by fy_api_handle
 * with the key id from the REQUEST's `key-id` metadata (or its
 * x-ferry-key-id header, which only the gateway can set on a tunnel). The
 * response goes out under the tunnel's flow control; a generation's usage
 * ends it as TRAILERS. A reset cancels the call (the engine request is
 * aborted). */
fy_rn_opener fy_rn_apistream_opener(fy_api *api);

/* --- Tunnel (tunnel.c) ---------------------------------------------------- */

typedef struct fy_rn_tunnel fy_rn_tunnel;

typedef struct {
    const char *name;            /* enrolled runner name, sent in HELLO */
    const char *const *gateways; /* "HOST:PORT" each */
    size_t ngateways;
    unsigned connections; /* total connections, spread round-robin over the gateways' addresses
                             (a name resolving to several gives one target per address),
                             at least one each */
    fy_tls_config *tls;   /* client cert + key, CA, ALPN ferry/1; outlives the tunnel */
    uint64_t heartbeat_timeout_ms; /* a silent gateway is declared dead after this */
    uint32_t max_streams;          /* MAX_CONCURRENT_STREAMS announced */
    /* Reconnect policy: wait = random(0, min(max, base * 2^n)); n resets once
     * a connection stayed up for stable_ms. */
    uint64_t backoff_base_ms, backoff_max_ms, stable_ms;
    /* Serves every stream (fy_rn_upstream_opener or fy_rn_apistream_opener). */
    fy_rn_opener opener;
    /* 1 when the opener is the built-in API: the only capability is
     * "openai". Else it is the upstream: see models. */
    int api;
    /* Model ids announced in HELLO (copied: at most FYP_MAX_MODELS, each
     * 1..255 visible ASCII bytes, together within FY_RN_MODELS_BYTES). With
     * an upstream, the capabilities are "upstream" and, when it announces
     * models, "openai". */
    const char *const *models;
    size_t n_models;
} fy_rn_tunnel_options;

/* Starts connecting every slot at once. Returns 0, FY_EINVAL (bad gateway
 * address, no gateway, no name) or FY_ENOMEM. */
int fy_rn_tunnel_new(uv_loop_t *loop, const fy_rn_tunnel_options *o, fy_rn_tunnel **out);

/* Graceful stop: no more reconnects; GOAWAY on every ready connection, which
 * close once their streams finished; connections not yet ready close now.
 * After TIMEOUT_MS whatever remains is terminated (streams reset, upstream
 * calls cancelled). CB runs once every connection is closed; then free the
 * tunnel with fy_rn_tunnel_free. */
typedef void (*fy_rn_tunnel_done_cb)(fy_rn_tunnel *t, void *arg);
void fy_rn_tunnel_drain(fy_rn_tunnel *t, uint64_t timeout_ms, fy_rn_tunnel_done_cb cb, void *arg);

/* Frees a tunnel after its drain callback ran. NULL ok. */
void fy_rn_tunnel_free(fy_rn_tunnel *t);

/* Replaces the models announced in HELLO (copied). A HELLO is sent once per
 * connection, so each ready connection that announced other models is
 * replaced: its slot dials a new connection at once, and the old one is sent
 * GOAWAY (the gateway sends it nothing new) and closes when its streams
 * finished. Connections still connecting announce the new list. Nothing
 * happens when the list is the same, or while draining. Returns 0, FY_EINVAL
 * (a list breaking the bounds above) or FY_ENOMEM (the old list stays). */
int fy_rn_tunnel_set_models(fy_rn_tunnel *t, const char *const *models, size_t n);

/* Connections whose handshake completed and that take new streams. */
unsigned fy_rn_tunnel_ready_count(const fy_rn_tunnel *t);

/* The full-jitter wait before attempt N (0-based) for a random value R in
 * [0, 1): R * min(max, base * 2^n). Exposed for tests. */
uint64_t fy_rn_backoff_ms(uint64_t base, uint64_t max, unsigned n, double r);

/* --- Commands --------------------------------------------------------------- */

int fy_rn_enroll_main(int argc, char **argv);
int fy_rn_run_main(int argc, char **argv);
int fy_rn_demo_model_main(int argc, char **argv);
/* `ferry-runner quantize` (quantize_cmd.c). */
int fy_rn_quantize_main(int argc, char **argv);
/* `ferry-runner perplexity` (perplexity_cmd.c). */
int fy_rn_perplexity_main(int argc, char **argv);

/* Writes the demo model (random weights from SEED) into DIR, created if
 * needed: config.json, model.safetensors (BF16 when BF16, else F32),
 * tokenizer.json, tokenizer_config.json (a ChatML chat template), README.
 * Returns 0, or an FY_E* code with ERR saying what failed. */
int fy_rn_demo_model_write(const char *dir, uint64_t seed, int bf16, char *err, size_t errlen);

#endif
