/* gateway.h: the `ferry-gateway run` daemon's shared state.
 *
 * One libuv loop runs everything: three listeners (public, tunnel, admin),
 * the runner registry (runner name -> live tunnel connections, each a TLS
 * stream plus an fyp_session), the enrollment HTTP server on the tunnel
 * listener, and the proxied public requests.
 *
 *   run.c     options, listeners, signals, drain, state file
 *   tunnel.c  tunnel connections, sessions, the registry, revocation; hands
 *             each stream event to the stream's owner (tstream.h's ops) and
 *             tells subscribers when a runner connects or a stream slot frees
 *   tstream.c the stream core every proxied request and delivery sits on
 *   router.c  the public listener: each request to its kind by path
 *   px.c      a public request proxied down a tunnel stream: admission
 *             helpers, headers, body, response, the one end (px.h); the
 *             kinds over it:
 *   raw.c       /r/<runner>/... requests, their body streamed
 *   v1.c        /v1 requests routed by their JSON body's model, waiting in
 *               a bounded queue when every runner serving it is at its limit
 *   hooks.c     public /hooks/<id> requests: body cap, signature check,
 *               replay refusal, per-hook rate limit, then forwarded (sync,
 *               px.h) or queued
 *   models.c  the model index (model name -> registered connections whose
 *             HELLO announced it)
 *   pick.c    the one connection picker (runner or model, least outstanding)
 *   enroll.c  POST /v1/enroll (CSR + one-time token -> runner certificate)
 *   admin.c   the admin API (status, tokens, runners, keys, hooks, usage, /metrics)
 *   hookq.c   async hooks: the durable queue in the store, delivered in order
 *             per hook down the tunnel, with retries and backoff
 *   hookverify.c  the signature schemes, pure (unit-tested and fuzzed)
 *   route.c   pure helpers (paths, peers), unit-tested
 *   keys.c, ratelimit.c, store.c, metrics.c, accesslog.c: the modules the
 *             request path and the admin API use (each header has its contract)
 *
 * Ownership: fy_gw owns the listeners, servers, TLS configs, store, keyring,
 * metrics, access log and every tunnel connection; a tunnel connection owns
 * its stream and session; a public request (gw_px) is referenced by its
 * public request and by its tunnel stream and is freed when both are gone; it
 * holds a reference to its API key and, once admitted, one of the key's
 * concurrency slots, both given back when the public request ends. Everything
 * is single threaded. */
#ifndef FY_GATEWAY_GATEWAY_H
#define FY_GATEWAY_GATEWAY_H

#include "common/http.h"
#include "common/link/link.h"
#include "common/tls.h"
#include "gateway/accesslog.h"
#include "gateway/keys.h"
#include "gateway/metrics.h"
#include "gateway/ratelimit.h"
#include "gateway/reqdone.h"
#include "gateway/shared.h"
#include "gateway/store.h"
#include "proto/session.h"

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#define FY_GW_DEFAULT_PUBLIC    "0.0.0.0:8443"
#define FY_GW_DEFAULT_TUNNEL    "0.0.0.0:7443"
#define FY_GW_DEFAULT_ADMIN     "127.0.0.1:9443"
#define FY_GW_DEFAULT_HEARTBEAT 5000  /* ms */
#define FY_GW_DEFAULT_DRAIN     30000 /* ms */
/* Public request bodies are streamed down the tunnel under flow control, never
 * buffered, so the cap bounds a transfer's size, not the gateway's memory. */
#define FY_GW_DEFAULT_MAX_BODY    (1024ULL * 1024 * 1024)
#define FY_GW_ENROLL_MAX_BODY     (16 * 1024) /* POST /v1/enroll */
#define FY_GW_ADMIN_MAX_BODY      (64 * 1024)
#define FY_GW_ENROLL_MAX_CONNS    256  /* runners enrolling at once */
#define FY_GW_MAX_TUNNEL_CONNS    4096 /* tunnel listener connections, handshaking included */
#define FY_GW_TOKEN_DEFAULT_TTL_S 3600
#define FY_GW_TOKEN_MAX_TTL_S     (30LL * 86400)
#define FY_GW_RUNNER_CERT_DAYS    365
#define FY_GW_CLOSE_LINGER_MS     1000 /* wait this long for a runner's FIN after ours */
#define FY_GW_ALPN_TUNNEL         "ferry/1"
#define FY_GW_KEY_MAX_TTL_S       (100LL * 365 * 86400) /* --expires of an API key */

/* /v1 requests: the body is read whole to find its model, so its cap is the
 * smaller of --max-body and this. */
#define FY_GW_V1_MAX_BODY           (32ULL * 1024 * 1024)
#define FY_GW_V1_MODEL_MAX          256   /* model names: 1..255 visible ASCII (HELLO text) */
#define FY_GW_DEFAULT_QUEUE_TIMEOUT 10000 /* ms a /v1 request waits for a free runner */
#define FY_GW_MAX_QUEUE_TIMEOUT     600000
#define FY_GW_V1_MAX_WAITING        4096 /* /v1 requests waiting at once; more get 503 */

typedef struct fy_gw fy_gw;
typedef struct gw_runner gw_runner;
typedef struct gw_conn gw_conn;
typedef struct gw_px gw_px;
typedef struct gw_hd gw_hd;
typedef struct gw_hook_rt gw_hook_rt;
typedef struct gw_model gw_model;

/* What the tunnel tells its subscribers (fy_gw_tunnel_subscribe). */
typedef enum {
    GW_TUN_RUNNER_CONNECTED, /* a connection registered (HELLO accepted) */
    GW_TUN_SLOT_FREED,       /* a stream ended somewhere: a slot may be free */
} gw_tun_news;

typedef struct gw_tun_sub {
    struct gw_tun_sub *next;
    void (*fn)(fy_gw *gw, gw_tun_news news, void *arg);
    void *arg;
} gw_tun_sub;

/* Work in flight (public requests being proxied), with one watcher told
 * when it falls to zero: run.c's drain watches it, so nothing that ends a
 * request calls into run.c. */
typedef struct {
    size_t n;
    void (*on_zero)(void *arg);
    void *arg;
} gw_count;

static inline void gw_count_up(gw_count *c)
{
    c->n++;
}

static inline void gw_count_down(gw_count *c)
{
    if (--c->n == 0 && c->on_zero) {
        c->on_zero(c->arg);
    }
}

/* Webhooks. */
#define FY_GW_HOOK_DEFAULT_MAX_BODY (1024 * 1024)      /* --max-body of a hook */
#define FY_GW_HOOK_MAX_MAX_BODY     (16 * 1024 * 1024) /* hook bodies are buffered to verify */
#define FY_GW_HOOK_REPLAY_WINDOW_S  (72 * 3600)        /* GitHub delivery ids remembered */
#define FY_GW_HOOK_DEFAULT_GRACE_S  (24 * 3600)        /* old secret kept after a rotation */
#define FY_GW_HOOKQ_TICK_MS         1000  /* queue poll while events wait (runner offline) */
#define FY_GW_HOOKQ_TIMEOUT_MS      60000 /* one delivery attempt's deadline */
#define FY_GW_HOOKQ_MAX_BACKOFF_S   60
#define FY_GW_HOOKQ_MAX_ATTEMPTS    20   /* failed attempts (runner errors) before giving up */
#define FY_GW_HOOKQ_MAX_HEADS       1024 /* hooks with waiting events looked at per tick */

/* In-memory state of a hook: its rate limiter (limits restart on restart). */
struct gw_hook_rt {
    gw_hook_rt *next;
    int64_t rpm;
    fy_rl rl;
    char id[FY_STORE_HOOK_ID_MAX];
};

enum { GW_L_PUBLIC = 0, GW_L_TUNNEL, GW_L_ADMIN, GW_L_COUNT };

typedef struct {
    uv_tcp_t tcp;
    fy_gw *gw;
    int kind;
    int open;
} gw_listener;

/* A runner with at least one registered (post-HELLO) tunnel connection. */
struct gw_runner {
    gw_runner *next;
    gw_conn *conns; /* linked through gw_conn.rnext */
    size_t n_conns;
    char name[FY_STORE_NAME_MAX];
};

/* A model that at least one registered connection announced in HELLO.
 * Created with its first connection, freed with its last. */
struct gw_model {
    gw_model *next;
    gw_conn **conns; /* the registered connections announcing it */
    size_t n_conns, cap;
    size_t n_waiting;  /* /v1 requests for it in the wait queue */
    uint64_t kick_gen; /* queue pass that found it full (skip its later waiters) */
    int64_t created;   /* unix seconds it appeared (the "created" of /v1/models) */
    char name[FY_GW_V1_MODEL_MAX];
};

/* One tunnel connection from a runner. */
struct gw_conn {
    fy_gw *gw;
    gw_conn *next, *prev; /* every tunnel connection of the gateway */
    gw_conn *rnext;       /* the runner's connections, once registered */
    gw_runner *runner;    /* set once HELLO was accepted */
    fy_stream *s;         /* TLS stream during the handshake (the link's after) */
    fy_link *link;        /* NULL until the TLS handshake chose ferry/1 */
    fyp_session *sess;    /* the link's session, or NULL */
    uint64_t id;
    int64_t since; /* unix seconds */
    uint64_t rtt_us;
    size_t n_px;   /* proxied requests on this connection */
    char **models; /* what its HELLO announced (deduplicated), once registered */
    size_t n_models;
    char peer[64];
    char cn[128];          /* client certificate CN (the runner name) */
    char fingerprint[72];  /* "sha256:<hex>" of the client certificate */
    unsigned draining : 1; /* GOAWAY sent or received: route nothing new here */
    unsigned closing : 1;  /* ending: the link (or the handshake's stream) is closing */
};

/* The gateway's state, one struct per module that owns it: a file reads
 * another module's part only where the comment says so. */

/* Options (run.c parses them; strings point into argv or a config root). */
typedef struct {
    const char *data_dir;
    const char *public_listen, *tunnel_listen, *admin_listen;
    const char *tls_cert, *tls_key;
    const char *access_log; /* FILE, or "-" for the daemon's log on stderr */
    int public_plain;
    uint64_t heartbeat_ms, drain_timeout_ms, max_body;
    uint64_t queue_timeout_ms; /* --queue-timeout: a /v1 request's wait for a runner */
    long long max_connections;
    const char *shared_url;           /* --shared redis://... or unix://...; NULL: SQLite alone */
    const char *shared_password_file; /* --shared-password-file */
    const char *shared_failure;       /* --shared-failure closed|open */
    int shared_fail_open;             /* --shared-failure open */
    uint64_t shared_lease_ms;         /* --shared-lease: concurrency leases' TTL */
} gw_opts;

/* Listeners and their TLS (run.c's; tunnel.c hands enrollment connections
 * to enroll_srv and admin.c reports addr). */
typedef struct {
    fy_tls_config *tls_server; /* public and admin listeners */
    fy_tls_config *tls_tunnel; /* tunnel listener: optional client cert, ALPN */
    fy_http_server *public_srv, *admin_srv, *enroll_srv;
    gw_listener listeners[GW_L_COUNT];
    char addr[GW_L_COUNT][64]; /* bound addresses, "127.0.0.1:PORT" */
} gw_net;

/* What the data directory trusts (run.c loads it; admin.c and enroll.c use it). */
typedef struct {
    uint8_t admin_hash[32]; /* SHA-256 of the admin token */
    char *runner_ca_pem, *runner_ca_key_pem;
    char *trust_ca_pem; /* what an enrolled runner must trust for the tunnel */
} gw_trust;

/* The tunnel registry (tunnel.c's; models.c keeps the model index). */
typedef struct {
    gw_runner *runners;
    gw_model *models; /* the model index (models.c) */
    gw_conn *conns;
    uint64_t next_conn_id;
    size_t n_tunnel; /* gw_conn objects alive (FY_GW_MAX_TUNNEL_CONNS) */
    gw_tun_sub *subs;
} gw_tunnel_state;

/* The /v1 wait queue (v1.c's; admin.c reports n_waiting). */
typedef struct {
    gw_px *wait_head, *wait_tail; /* /v1 requests waiting for a runner, oldest first */
    size_t n_waiting;
    uint64_t kick_gen;
    uv_timer_t wait_kick; /* looks at the wait queue on the next loop turn */
    int wait_kick_init;
    gw_tun_sub sub;
} gw_v1_queue;

/* Webhooks (hooks.c's limiters; hookq.c's async queue). */
typedef struct {
    gw_hook_rt *hooks;      /* per-hook limiters, created on first use */
    gw_hd *deliveries;      /* async hook deliveries in flight (one per hook at most) */
    uv_timer_t hookq_timer; /* drives the async queue */
    gw_tun_sub hookq_sub;
    struct fy_shq *shq; /* --shared: the hooks' Redis streams (shared_hookq.h) */
} gw_hook_state;

/* The daemon's own handles (run.c's). */
typedef struct {
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t drain_timer;
    uv_timer_t usage_timer; /* fy_store_usage_flush every FY_STORE_USAGE_FLUSH_MS */
} gw_life;

struct fy_gw {
    uv_loop_t *loop;
    gw_opts opt;
    gw_net net;
    gw_trust trust;
    gw_tunnel_state tun;
    gw_v1_queue v1;
    gw_hook_state hk;
    gw_life life;
    /* Shared by the request path: */
    fy_store *store;
    fy_keys *keys;         /* API keys: the index the request path checks */
    fy_shared *shared;     /* --shared: the state replicas share in Redis; NULL without */
    fy_metrics_gw metrics; /* GET /metrics on the admin listener */
    fy_accesslog *access;  /* one line per public request (a subscriber of done) */
    fy_reqdone_hub done;   /* every public request that ended (reqdone.h) */
    fy_reqdone_sub access_sub;
    struct fy_dash *dash; /* the dashboard: pages, sessions (gateway/dash/dash.h) */
    int access_stderr;    /* the access log goes through fy_log_event */
    gw_count n_px;        /* public requests being proxied */
    uint64_t n_proxied;   /* total, for status */
    int64_t started;      /* unix seconds the daemon started */
    int draining;         /* SIGTERM seen: no new public work, runners told to drain */
    int stopped;          /* everything is being closed */
};

/* run.c ------------------------------------------------------------------ */

/* `ferry-gateway run ARGS...` (ARGV[0] is "run"). Returns the exit status. */
int fy_gw_run_main(int argc, char **argv);

/* tunnel.c --------------------------------------------------------------- */

/* Takes an accepted TCP stream on the tunnel listener: TLS, then ALPN decides
 * between a tunnel session and the enrollment server. */
void fy_gw_tunnel_accept(fy_gw *gw, fy_stream *tcp);

/* The registry entry for NAME, or NULL when it has no live connection. */
gw_runner *fy_gw_runner_find(fy_gw *gw, const char *name);

/* Output was queued on C's session: its link writes it at the end of this
 * loop turn (fy_link_kick). Call after every session call that may queue
 * output. Safe from inside session callbacks, and on NULL. */
void fy_gw_conn_kick(gw_conn *c);

/* Drops every connection of runner NAME now (GOAWAY CODE with REASON): their
 * streams end at once. Returns how many were dropped. */
int fy_gw_tunnel_drop_runner(fy_gw *gw, const char *name, uint32_t code, const char *reason);

/* Closes runner NAME's connections whose certificate is not FINGERPRINT (it
 * enrolled again, on another replica). Returns how many. */
int fy_gw_tunnel_drop_stale(fy_gw *gw, const char *name, const char *fingerprint);

/* Graceful drain: GOAWAY NO_ERROR to every runner. */
void fy_gw_tunnel_goaway_all(fy_gw *gw);

/* Closes every tunnel connection now, and the flush machinery. */
void fy_gw_tunnel_close_all(fy_gw *gw);

size_t fy_gw_tunnel_connected(const fy_gw *gw);

/* SUB (owned by the caller, alive until the gateway stops) hears every
 * piece of news from now on. */
void fy_gw_tunnel_subscribe(fy_gw *gw, gw_tun_sub *sub);

/* Tells every subscriber NEWS (from the tunnel and its stream core). */
void fy_gw_tunnel_publish(fy_gw *gw, gw_tun_news news);

/* router.c, raw.c, v1.c: the public request path (px.h is their core) ---------------------------------------------------------------- */

/* The public listener's request handler (data: fy_gw *). */
void fy_gw_public_request(fy_http_req *req, void *data);

/* A public request whose path starts with /r/ (raw.c). */
void fy_gw_raw_request(fy_gw *gw, fy_http_req *req);

/* A public request whose path is /v1 or starts with /v1/ (the OpenAI API,
 * routed by model). */
void fy_gw_v1_request(fy_gw *gw, fy_http_req *req);

/* Sets up the wait queue: its timer, and its subscription to the tunnel
 * (a stream ending anywhere or a runner connecting looks at the waiting
 * requests on the next loop turn). */
int fy_gw_v1_init(fy_gw *gw);

/* Draining or stopping: every waiting /v1 request gets 503 now. */
void fy_gw_v1_fail_waiting(fy_gw *gw, const char *code, const char *msg);

/* Closes the wait queue's timer (stop). */
void fy_gw_v1_close(fy_gw *gw);

/* models.c ------------------------------------------------------------------ */

/* Registers C's HELLO models (copied into C, duplicates dropped, each added
 * to the index). Call once C is in the registry. Returns 0 or FY_ENOMEM (then
 * C announces nothing). */
int fy_gw_models_add(gw_conn *c, const fy_slice *models, size_t n);

/* Removes C from every model it announced (a model left with no connection
 * is dropped) and frees C's list. Safe when C announced nothing. */
void fy_gw_models_remove(gw_conn *c);

/* The index entry of NAME, or NULL when no registered connection announces it. */
gw_model *fy_gw_model_find(fy_gw *gw, const char *name);

/* A /v1 request starts (DELTA 1) or stops (-1) waiting for M; the entry
 * outlives its connections while requests wait for it, and is freed here
 * when the last waiter leaves a model no connection serves. */
void fy_gw_model_waiters(fy_gw *gw, gw_model *m, int delta);

/* pick.c: the one connection picker ----------------------------------------- */

/* 1 when C may take new streams at all: registered, its session ready, not
 * draining or closing. */
int fy_gw_conn_usable(const gw_conn *c);

/* 1 when C can take a new stream now: usable and below the runner's
 * MAX_CONCURRENT_STREAMS. */
int fy_gw_conn_has_room(const gw_conn *c);

/* M's connections that can take a stream now (fy_gw_conn_has_room), except
 * EXCLUDE, into OUT[0..MAX) best first: fewest requests outstanding at the
 * runner (over all its connections), then at the connection. Returns how
 * many. *USABLE (may be NULL) is set to the number of M's connections that
 * are usable at all (fy_gw_conn_usable) whether full or not. */
size_t fy_gw_model_pick(gw_model *m, const gw_conn *exclude, gw_conn **out, size_t max,
                        size_t *usable);

/* The same over runner R's connections (R may be NULL: none), requiring
 * room for a stream only when ROOM. */
size_t fy_gw_runner_pick(gw_runner *r, const gw_conn *exclude, int room, gw_conn **out, size_t max,
                         size_t *usable);

/* R's best usable connection (room or not), except EXCLUDE; NULL when none. */
gw_conn *fy_gw_conn_pick(gw_runner *r, const gw_conn *exclude);

/* hooks.c / hookq.c --------------------------------------------------------- */

/* A public request whose path starts with /hooks/. */
void fy_gw_hook_request(fy_gw *gw, fy_http_req *req);
/* Forgets hook ID's in-memory state (after a delete). */
void fy_gw_hook_forget(fy_gw *gw, const char *id);
void fy_gw_hooks_free(fy_gw *gw);

/* Starts the queue (run.c, after the store opened): events left from a
 * previous run are delivered as their runners connect. */
int fy_gw_hookq_init(fy_gw *gw);
/* Looks at the queue on the next loop turn (an event was queued, a runner
 * connected, a delivery ended). */
void fy_gw_hookq_kick(fy_gw *gw);
/* Stops the queue: deliveries in flight are cut (they stay queued). */
void fy_gw_hookq_close(fy_gw *gw);

/* enroll.c / admin.c ------------------------------------------------------ */

void fy_gw_enroll_request(fy_http_req *req, void *data);
void fy_gw_admin_request(fy_http_req *req, void *data);

/* respond.c ------------------------------------------------------------------ */

/* Answers REQ with STATUS and O as compact JSON (Cache-Control: no-store),
 * taking O's reference; the text is wiped after (it may hold a secret
 * shown once). 500 when O is NULL (out of memory). */
void fy_gw_respond_json(fy_http_req *req, int status, json_t *o);

/* A stored scope list "a,b" as ["a","b"] ("" gives []). */
json_t *fy_gw_scope_json(const char *list);

/* route.c: pure helpers ---------------------------------------------------- */

/* Splits a public request target "/r/NAME/rest?q" into NAME (copied, at most
 * FY_STORE_NAME_MAX - 1 chars) and the runner-side target "/rest?q" (a
 * pointer into TARGET, or "/" -- then *REST_SLASH is 1 and the caller prefixes
 * "/" to *REST). Returns 1 for a /r/ target with a valid runner name, 0 for
 * another path, -1 for a /r/ target whose name is not a valid runner name. */
int fy_gw_route_split(const char *target, char name[FY_STORE_NAME_MAX], const char **rest,
                      int *rest_slash);

/* Host part of a peer address "1.2.3.4:5", "[::1]:5" into OUT ("1.2.3.4",
 * "::1"). */
void fy_gw_peer_host(const char *peer, char *out, size_t outlen);

/* The value of parameter NAME in query string Q ("a=1&b=2"), not decoded,
 * into OUT (cut to OUTLEN - 1 bytes; "" when absent). Returns 1 when NAME
 * is present. */
int fy_gw_query_get(const char *q, const char *name, char *out, size_t outlen);

/* Parses a token TTL ("1h", "90s", "30d"): 1 s .. 30 d. Returns seconds, or
 * -1 when invalid or out of range. */
long long fy_gw_parse_ttl(const char *text);

/* Parses an API key lifetime ("30d", "2s", "12h"): whole seconds, 1 s ..
 * FY_GW_KEY_MAX_TTL_S. Returns seconds, or -1 when invalid or out of range. */
long long fy_gw_parse_key_ttl(const char *text);

/* The "model" of a /v1 request body BODY[0..LEN) into OUT. Returns 0, or
 * FY_EINVAL with a message for the client in ERR (not JSON, not an object, no
 * "model", not a string, empty, too long, or not visible ASCII). */
int fy_gw_v1_model(const char *body, size_t len, char out[FY_GW_V1_MODEL_MAX], char *err,
                   size_t errlen);

#endif
