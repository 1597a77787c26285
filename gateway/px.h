/* px.h: a public request proxied down a tunnel stream (px.c), the core the
 * three kinds of proxied request are built on:
 *
 *   raw.c    /r/<runner>/... requests, their body streamed as it arrives;
 *   v1.c     /v1 requests routed by the body's model, with their wait queue;
 *   hooks.c  verified webhooks forwarded synchronously (queued deliveries,
 *            which have no public request, are hookq.c's on tstream.h).
 *
 * A kind creates its requests with gw_px_new and its ops table: the route
 * label, how candidates connections are picked, and what to do when a
 * runner refused the stream before processing it. The core owns
 * everything else: admission helpers (key, scopes, limits), the REQUEST's
 * headers (fwdhead.h) and metadata, the body sent under flow control, the
 * response relayed with its credit returned only for bytes the client's
 * socket took, the usage trailer, and the one end of every request
 * (gw_px_finish: access log, metrics, usage, the key's slot given back).
 *
 * Calls go one way: the kinds call the core; the core calls a kind only
 * through its ops. Lifetime: a gw_px is referenced by its public request
 * (until finished) and by its tunnel stream (until detached); callbacks
 * take a temporary reference because the HTTP server may finish a request
 * (abort) from inside a call. */
#ifndef FY_GATEWAY_PX_H
#define FY_GATEWAY_PX_H

#include "gateway/gateway.h"
#include "gateway/tstream.h"

#define GW_PX_MAX_TRIES 3 /* tunnel connections tried for one request (refused streams) */

typedef struct {
    const char *route; /* metrics label: "/r", "/v1", "/hooks", "other" */
    int keep_auth;     /* forward Authorization and x-api-key (a webhook's own) */
    /* Connections to open PX's stream on, best first, except EXCLUDE, into
     * OUT[0..MAX); *USABLE: how many could take streams at all (full or not).
     * NULL: the request never opens a stream. */
    size_t (*pick)(gw_px *px, const gw_conn *exclude, gw_conn **out, size_t max, size_t *usable);
    /* C refused PX's stream before processing it (REFUSED_STREAM, no response
     * yet; PX is detached and has tries left). Returns 1 when the kind took
     * PX over (sent elsewhere, or queued), 0 to fail it with 502. NULL: 0. */
    int (*on_refused)(gw_px *px, gw_conn *c);
    /* PX is finishing: the kind lets go of it (leaves its queue). May be NULL. */
    void (*on_finish)(gw_px *px);
} gw_px_ops;

struct gw_px {
    gw_ts ts; /* first: the tunnel stream (ts.conn NULL when not attached) */
    const gw_px_ops *ops;
    fy_gw *gw;
    fy_http_req *req; /* NULL once finished */
    int refs;
    int status;
    uint8_t tries;
    unsigned has_body : 1;     /* the public request has a body */
    unsigned body_reading : 1; /* fy_http_req_read_body was called */
    unsigned body_done : 1;    /* the public body ended (all bytes received) */
    unsigned paused : 1;       /* public body paused for the tunnel window */
    unsigned resp_started : 1; /* the public response head was written */
    unsigned drain_armed : 1;  /* waiting for the public socket to drain */
    unsigned counted : 1;      /* in gw->n_px (being proxied) */
    unsigned has_rr : 1;       /* RR holds the limiter's answer (headers to send) */
    unsigned admitted : 1;     /* holds one of the key's concurrency slots */
    unsigned client_gone : 1;  /* the client left with the whole body; awaiting the trailer */
    unsigned waiting : 1;      /* in the /v1 wait queue (holds a reference) */
    int64_t resp_len;          /* the response's Content-Length, -1 when not known */
    uv_timer_t *linger;        /* bounds the wait for the trailer once the client left */
    uint64_t unconsumed;       /* response bytes written but not yet credited */
    uint64_t t0, t_head, bytes_in, bytes_out; /* t_head: hrtime of the response head */
    int64_t prompt_tokens, completion_tokens; /* from the usage trailer; -1 = none */
    fy_key *key;                              /* a reference; NULL before authentication */
    fy_shared_lease *lease;         /* the shared limiter's slot (--shared), once admitted */
    void (*next)(gw_px *px);        /* where admission goes on (gw_px_next) */
    void (*then)(gw_px *px);        /* gw_px_admit's NEXT, after the limits */
    int8_t route;                   /* the route of an admission in progress */
    fy_rl_result rr;                /* the key's limits at admission */
    char runner[FY_STORE_NAME_MAX]; /* the runner asked for, or (v1) the one chosen */
    char reqid[20];
    char *target;                       /* the runner-side target, set by the kind */
    char hook_id[FY_STORE_HOOK_ID_MAX]; /* a webhook's id (REQUEST metadata), or "" */
    /* A body read whole before the stream opens (v1, webhooks), kept until
     * the response starts so a refused stream can send it again. */
    fy_buf rbody; /* while the body is read */
    char *body;   /* freed with PX */
    size_t body_len;
    /* /v1: the model (REQUEST metadata), the wait queue. */
    gw_px *wnext, *wprev;
    uv_timer_t *wait_timer;
    const char *param; /* OpenAI's error "param" of an error answered here */
    char *reply;       /* a body answered here (GET /v1/models), freed with PX */
    size_t reply_len;
    /* The relayed response's headers, kept for gw->done's subscribers when
     * they want them: NUL-terminated names and values in turn. */
    char *resp_head;
    size_t resp_head_len, n_resp_head;
    char model[FY_GW_V1_MODEL_MAX];
};

/* How a request ends (gw_px_finish). */
enum { GW_FIN_END, GW_FIN_ABORT, GW_FIN_ERROR, GW_FIN_REPLY };

/* A new request for REQ (arrived at hrtime T0) of the kind OPS, holding one
 * reference. NULL when out of memory (REQ was answered 500). */
gw_px *gw_px_new(fy_gw *gw, fy_http_req *req, uint64_t t0, const gw_px_ops *ops);

void gw_px_ref(gw_px *px);
void gw_px_unref(gw_px *px);

/* Finishes the public request: accounting, detach, then end (GW_FIN_END),
 * abort (GW_FIN_ABORT), an error answered here with STATUS, CODE and MSG in
 * OpenAI's shape (GW_FIN_ERROR), or PX->reply with STATUS (GW_FIN_REPLY).
 * Reached exactly once per request (later calls do nothing). */
void gw_px_finish(gw_px *px, int how, int status, const char *code, const char *msg);

/* An error before the response head, or an abort after it. */
void gw_px_fail(gw_px *px, int status, const char *code, const char *msg);

/* Where an admission goes on once it let PX through. It runs later (the
 * shared state answered) or before the admission call returns (decided
 * here), and never once PX was finished (say, its client left meanwhile). */
typedef void (*gw_px_next)(gw_px *px);

/* Authentication (and, for ROUTE 1, the runner scope of PX->runner), then
 * NEXT; on a refusal finishes PX instead. With --shared, a key this replica
 * has not seen is looked up in Redis first. */
void gw_px_authenticate(gw_px *px, int route, gw_px_next next);

/* The key's limits, then NEXT; on a denial finishes PX with 429 instead. */
void gw_px_limits(gw_px *px, gw_px_next next);

/* Authentication, scopes (ROUTE as fy_gw_route_split returned it: -1 is a
 * 404), draining and limits, then NEXT; on a refusal finishes PX. */
void gw_px_admit(gw_px *px, int route, gw_px_next next);

/* Finishes PX with the answer to a failed key check O. */
void gw_px_refuse(gw_px *px, fy_auth_outcome o);

/* 1 when PX->runner has a usable connection; otherwise finishes PX with 404
 * (not enrolled, revoked) or 503 (not connected) and returns 0. */
int gw_px_runner_ready(gw_px *px);

/* PX's client hanging up is handled from now on: its stream is cut (or,
 * when the whole response was read, kept briefly for the usage trailer). */
void gw_px_watch(gw_px *px);

/* PX is admitted: counted in flight (drain waits for it). */
void gw_px_count(gw_px *px);

/* Builds the REQUEST and opens it on the first candidate (ops->pick) that
 * takes it. Returns 0, FY_ELIMIT (every usable connection is full),
 * FY_ENOENT (none usable), FY_ENOMEM, or the session's refusal of the
 * request itself (FY_ETOOBIG, FY_EINVAL). */
int gw_px_open(gw_px *px, const gw_conn *exclude);

/* Finishes PX with the answer to gw_px_open's error RC. */
void gw_px_open_fail(gw_px *px, int rc);

/* Sends PX->body (kept for a retry), then END_STREAM once all of it went. */
void gw_px_send_body(gw_px *px);

/* An on_refused for a request whose body is streamed: when none of it was
 * sent, opens it again on another connection than C (or finishes PX with the
 * reason it cannot be) and returns 1; otherwise 0. */
int gw_px_replay(gw_px *px, gw_conn *c);

/* Proxies the admitted PX (its runner and target set): counted, watched,
 * opened on the first connection that takes it (or finished with why
 * none could), then its body: the one read before (BODY_DONE), or the
 * public body streamed as it arrives. */
void gw_px_proxy(gw_px *px);

/* A pick for a request to PX->runner: its connections with room. */
size_t gw_px_pick_runner(gw_px *px, const gw_conn *exclude, gw_conn **out, size_t max,
                         size_t *usable);

/* Sets the runner-side target (copied). On failure finishes PX with 500 and
 * returns 0. */
int gw_px_set_target(gw_px *px, const char *target);

#endif
