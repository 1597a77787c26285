/* reqdone.h: news of every public request that ended, for whoever listens.
 *
 * The request path (px.c for proxied requests, hooks.c for webhooks
 * answered without a runner) publishes one fy_reqdone per request when it
 * ends; the access log (run.c) and the dashboard's live traffic
 * (dash/traffic.h) subscribe. Publishers never know who listens, so the
 * request path does not call into either.
 *
 * Everything a fy_reqdone points to is valid only during the call (a
 * subscriber copies what it keeps), but for KIND, VERIFIED and HOOK_STATE:
 * static strings. Single threaded (the gateway's loop). */
#ifndef FY_GATEWAY_REQDONE_H
#define FY_GATEWAY_REQDONE_H

#include "common/http.h"
#include "gateway/accesslog.h"

#include <stddef.h>

/* Response headers a publisher keeps for its subscribers, at most. */
#define FY_REQDONE_HEADERS_MAX 64

typedef struct {
    const fy_accesslog_entry *e; /* the facts the access log writes */
    const char *kind;            /* "raw" (/r/), "v1", "hook", "other" */
    const fy_http_header *req_h; /* the request's headers as received */
    size_t n_req_h;
    const fy_http_header *resp_h; /* the response's, as sent (NULL when not kept) */
    size_t n_resp_h;
    /* Webhooks (kind "hook"), else NULL: */
    const char *hook_id;
    const char *verified;    /* "ok", "bad_signature", "missing_signature", "stale",
                              * "replayed"; NULL when it was not checked */
    const char *hook_state;  /* "delivered" (forwarded), "queued", "refused" */
    const char *delivery_id; /* an async event's "dlv_..." */
} fy_reqdone;

typedef struct fy_reqdone_sub {
    struct fy_reqdone_sub *next;
    void (*fn)(const fy_reqdone *d, void *arg);
    void *arg;
    int want_headers; /* the subscriber reads resp_h (publishers keep them) */
} fy_reqdone_sub;

typedef struct {
    fy_reqdone_sub *subs;
    int want_headers; /* some subscriber reads resp_h */
} fy_reqdone_hub;

/* SUB (owned by the caller, alive while subscribed) hears every request
 * that ends from now on. */
static inline void fy_reqdone_subscribe(fy_reqdone_hub *hub, fy_reqdone_sub *sub)
{
    sub->next = hub->subs;
    hub->subs = sub;
    hub->want_headers |= sub->want_headers;
}

/* 1 when someone listens (a publisher may skip building the news). */
static inline int fy_reqdone_heard(const fy_reqdone_hub *hub)
{
    return hub->subs != NULL;
}

static inline void fy_reqdone_publish(const fy_reqdone_hub *hub, const fy_reqdone *d)
{
    for (fy_reqdone_sub *s = hub->subs; s; s = s->next) {
        s->fn(d, s->arg);
    }
}

#endif
