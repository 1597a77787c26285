/* hookq.c: delivery of async hooks' events from the durable queue.
 *
 * An accepted event is a row in the store's hook_queue (written, fsynced,
 * before the 202). The queue is looked at on a kick (an event queued, a
 * runner connected, a delivery ended) and every FY_GW_HOOKQ_TICK_MS while
 * events wait. For each hook, the oldest waiting event is delivered, one at a
 * time, so a hook's events reach its runner in the order they were accepted.
 * An event whose runner is offline waits (no attempt is spent); one that the
 * runner answers with a status below 500 is delivered and removed; a 5xx, a
 * cut stream or no answer within FY_GW_HOOKQ_TIMEOUT_MS is retried after
 * 1, 2, 4... up to FY_GW_HOOKQ_MAX_BACKOFF_S seconds, and given up on (kept,
 * marked dead, shown by `ferry hooks list`) after FY_GW_HOOKQ_MAX_ATTEMPTS.
 *
 * Guarantee: at least once. The row is removed only after the runner's
 * answer, so a gateway killed between the runner's answer and that removal
 * delivers the event again after the restart; every delivery carries the
 * same x-ferry-delivery id (and x-ferry-attempt) so the receiver can drop
 * duplicates.
 *
 * Where the events come from is a backend (hq_backend): the store's queue,
 * or with --shared the hooks' Redis Streams (gateway/shared_hookq.h), where
 * one replica at a time delivers a given hook. The request, the stream,
 * the deadline and the retry decisions here are the same for both. */
#include "gateway/gateway.h"
#include "gateway/shared_hookq.h"
#include "gateway/tstream.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HQ_LOG "hookq"

struct gw_hd {
    gw_ts ts; /* first: the stream (its conn is NULL once it is gone) */
    fy_gw *gw;
    gw_hd *next;
    int status;       /* the runner's, 0 before its answer */
    int ended;        /* the runner's half ended (the stream is finished) */
    int fetching;     /* the backend is fetching IT: no stream yet */
    int opened;       /* TS was initialised */
    uint64_t started; /* uv_now */
    char runner[FY_STORE_NAME_MAX];
    char entry[FY_SHQ_ENTRY_MAX]; /* --shared: IT's stream entry id */
    fy_store_hookq_item it;
};

/* Where the events wait. */
typedef struct {
    /* Calls FN for every hook that may have an event waiting (SEQ: the
     * local queue's head, else 0). */
    int (*hooks)(fy_gw *gw, void (*fn)(const char *hook_id, int64_t seq, void *arg), void *arg);
    /* Fetches D's hook's next event into D->it, then calls hq_have(D, rc)
     * exactly once (0: an event, due or not; FY_ENOENT: none for us now). */
    void (*next)(gw_hd *d);
    /* D->it was delivered. */
    int (*done)(gw_hd *d);
    /* D->it was not: ATTEMPTS so far, next at NEXT_AT; DEAD: given up on. */
    int (*retry)(gw_hd *d, int64_t attempts, int64_t next_at, int dead, const char *error);
} hq_backend;

static const hq_backend *hq_be(const fy_gw *gw);
static void hq_have(gw_hd *d, int rc);
static void hq_tick(uv_timer_t *t);

/* Runs the tick in MS unless it is due sooner already. */
static void hq_arm(fy_gw *gw, uint64_t ms)
{
    if (gw->stopped || gw->draining) {
        return;
    }
    if (uv_is_active((uv_handle_t *)&gw->hk.hookq_timer) &&
        uv_timer_get_due_in(&gw->hk.hookq_timer) <= ms) {
        return;
    }
    uv_timer_start(&gw->hk.hookq_timer, hq_tick, ms, 0);
}

void fy_gw_hookq_kick(fy_gw *gw)
{
    hq_arm(gw, 0);
}

/* A runner connected: events may be waiting for it. */
static void hq_on_tunnel(fy_gw *gw, gw_tun_news news, void *arg)
{
    (void)arg;
    if (news == GW_TUN_RUNNER_CONNECTED) {
        hq_arm(gw, 0);
    }
}

int fy_gw_hookq_init(fy_gw *gw)
{
    int rc = uv_timer_init(gw->loop, &gw->hk.hookq_timer);
    if (rc) {
        return fy_err_from_uv(rc);
    }
    if (gw->shared) {
        unsigned ttl = fy_shared_lease_ttl_ms(gw->shared);
        if ((rc = fy_shq_new(gw->loop, gw->shared, ttl ? ttl : FY_SHARED_LEASE_TTL_MS,
                             &gw->hk.shq))) {
            uv_close((uv_handle_t *)&gw->hk.hookq_timer, NULL);
            return rc;
        }
    }
    gw->hk.hookq_timer.data = gw;
    gw->hk.hookq_sub = (gw_tun_sub){.fn = hq_on_tunnel};
    fy_gw_tunnel_subscribe(gw, &gw->hk.hookq_sub);
    hq_arm(gw, 0);
    return 0;
}

static void hd_free(gw_hd *d)
{
    fy_store_hookq_item_free(&d->it);
    free(d);
}

static void hd_unlink(gw_hd *d)
{
    for (gw_hd **p = &d->gw->hk.deliveries; *p; p = &(*p)->next) {
        if (*p == d) {
            *p = d->next;
            return;
        }
    }
}

static int64_t backoff_s(int64_t attempts)
{
    int64_t b = 1;
    for (int64_t i = 1; i < attempts && b < FY_GW_HOOKQ_MAX_BACKOFF_S; i++) {
        b *= 2;
    }
    return b < FY_GW_HOOKQ_MAX_BACKOFF_S ? b : FY_GW_HOOKQ_MAX_BACKOFF_S;
}

/* The attempt is over: delivered (a status below 500) or to be retried. */
static void hd_finish(gw_hd *d, const char *why)
{
    fy_gw *gw = d->gw;
    gw_ts_detach(&d->ts, !d->ended);
    hd_unlink(d);
    const hq_backend *be = hq_be(gw);
    int64_t now = (int64_t)time(NULL);
    const char *labels[2] = {d->it.hook_id, NULL};
    int rc;
    if (d->status >= 200 && d->status < 500) {
        labels[1] = "delivered";
        rc = be->done(d);
        fy_log_event(FY_LOG_INFO, HQ_LOG, "hook event delivered",
                     json_pack("{s:s,s:s,s:i,s:I}", "hook", d->it.hook_id, "delivery",
                               d->it.delivery_id, "status", d->status, "attempts",
                               (json_int_t)d->it.attempts + 1));
    } else {
        int64_t attempts = d->it.attempts + 1;
        int dead = attempts >= FY_GW_HOOKQ_MAX_ATTEMPTS;
        char err[96];
        if (d->status) {
            snprintf(err, sizeof err, "runner answered %d", d->status);
        } else {
            snprintf(err, sizeof err, "%s", why);
        }
        labels[1] = dead ? "dead" : "retry";
        rc = be->retry(d, attempts, now + backoff_s(attempts), dead, err);
        fy_log_event(dead ? FY_LOG_ERROR : FY_LOG_WARN, HQ_LOG,
                     dead ? "hook event given up" : "hook event will be retried",
                     json_pack("{s:s,s:s,s:s,s:I,s:I}", "hook", d->it.hook_id, "delivery",
                               d->it.delivery_id, "error", err, "attempts", (json_int_t)attempts,
                               "retry_in_s", (json_int_t)(dead ? 0 : backoff_s(attempts))));
    }
    if (rc) {
        FY_ERROR(HQ_LOG, "hook event %s: the queue could not be updated: %s", d->it.delivery_id,
                 fy_strerror(rc));
    }
    fy_metric_add(gw->metrics.hook_deliveries, labels, 1);
    hd_free(d);
    hq_arm(gw, 0);
}

/* What is pending of the body went: END_STREAM. (0: wait for WRITABLE; < 0:
 * its reset event ends the attempt.) */
static void hd_sent(gw_hd *d, int rc)
{
    if (rc == 1) {
        gw_ts_end(&d->ts);
    }
}

static void hd_on_event(gw_ts *ts, const fyp_event *ev)
{
    gw_hd *d = (gw_hd *)ts;
    switch (ev->type) {
    case FYP_EV_RESPONSE:
        d->status = ev->u.response->status;
        if (ev->end_stream) {
            d->ended = 1;
            hd_finish(d, "");
        }
        break;
    case FYP_EV_DATA:
        gw_ts_consume(ts, ev->u.data.len); /* the answer's body is dropped */
        if (ev->end_stream) {
            d->ended = 1;
            hd_finish(d, "");
        }
        break;
    case FYP_EV_TRAILERS:
        d->ended = 1;
        hd_finish(d, "");
        break;
    case FYP_EV_WRITABLE:
        hd_sent(d, gw_ts_flush(ts));
        break;
    case FYP_EV_STREAM_RESET:
        d->ended = 1; /* the session forgot the stream: nothing to reset */
        d->status = d->status >= 500 || d->status == 0 ? d->status : 0;
        hd_finish(d, fyp_errcode_name(ev->error_code));
        break;
    default:
        break;
    }
}

static const gw_ts_ops hd_ops = {hd_on_event};

/* Opens the stream for D on C. */
static int hd_start(gw_hd *d, gw_conn *c)
{
    json_error_t jerr;
    json_t *hj = json_loads(d->it.headers, 0, &jerr);
    size_t nh = json_array_size(hj), n = 0;
    if (!json_is_array(hj) || nh > FY_HTTP_MAX_HEADERS + 8) {
        json_decref(hj);
        return FY_EPARSE;
    }
    fyp_field *f = calloc(nh + 2, sizeof *f);
    if (!f) {
        json_decref(hj);
        return FY_ENOMEM;
    }
    char attempt[24];
    snprintf(attempt, sizeof attempt, "%lld", (long long)d->it.attempts + 1);
    for (size_t i = 0; i < nh; i++) {
        json_t *p = json_array_get(hj, i);
        const char *name = json_string_value(json_array_get(p, 0));
        const char *value = json_string_value(json_array_get(p, 1));
        if (name && value) {
            f[n].name = FY_SLICE(name, strlen(name));
            f[n].value = FY_SLICE(value, strlen(value));
            n++;
        }
    }
    f[n].name = FY_SLICE_STR("x-ferry-delivery");
    f[n].value = FY_SLICE(d->it.delivery_id, strlen(d->it.delivery_id));
    n++;
    f[n].name = FY_SLICE_STR("x-ferry-attempt");
    f[n].value = FY_SLICE(attempt, strlen(attempt));
    n++;
    fyp_field meta[] = {
        {FY_SLICE_STR("request-id"), FY_SLICE(d->it.delivery_id, strlen(d->it.delivery_id))},
        {FY_SLICE_STR("hook-id"), FY_SLICE(d->it.hook_id, strlen(d->it.hook_id))},
    };
    fyp_request rq = {
        .method = FY_SLICE_STR("POST"),
        .target = FY_SLICE(d->it.target, strlen(d->it.target)),
        .meta = {meta, 2},
        .headers = {f, n},
    };
    int rc = gw_ts_open(&d->ts, c, &rq, d->it.body_len == 0);
    free(f);
    json_decref(hj);
    if (rc) {
        return rc;
    }
    d->started = uv_now(d->gw->loop);
    if (d->it.body_len) {
        hd_sent(d, gw_ts_send(&d->ts, d->it.body, d->it.body_len, 1));
    }
    return 0;
}

typedef struct {
    char hook_id[FY_STORE_HOOK_ID_MAX];
    int64_t seq;
} hq_head;

typedef struct {
    hq_head *v;
    size_t n;
} hq_heads;

static void head_row(const char *hook_id, int64_t seq, void *arg)
{
    hq_heads *h = arg;
    if (h->n < FY_GW_HOOKQ_MAX_HEADS && hook_id) {
        snprintf(h->v[h->n].hook_id, sizeof h->v[h->n].hook_id, "%s", hook_id);
        h->v[h->n].seq = seq;
        h->n++;
    }
}

static gw_hd *in_flight(fy_gw *gw, const char *hook_id)
{
    gw_hd *d = gw->hk.deliveries;
    while (d && strcmp(d->it.hook_id, hook_id) != 0) {
        d = d->next;
    }
    return d;
}

/* The backend's answer for D: start the event, or let it wait. */
static void hq_have(gw_hd *d, int rc)
{
    fy_gw *gw = d->gw;
    d->fetching = 0;
    fy_store_hook *h = malloc(sizeof *h);
    gw_conn *c = NULL;
    /* Not due yet (backoff), the hook deleted meanwhile (its events went
     * with it) or its runner offline (no attempt spent; its HELLO kicks us):
     * the event waits. */
    if (!rc && h && d->it.next_at <= (int64_t)time(NULL) &&
        fy_store_hook_get(gw->store, d->it.hook_id, h) == 0) {
        c = fy_gw_conn_pick(fy_gw_runner_find(gw, h->runner), NULL);
        snprintf(d->runner, sizeof d->runner, "%s", h->runner);
    }
    if (h) {
        fy_secure_zero(h, sizeof *h);
        free(h);
    }
    if (!c) {
        hd_unlink(d);
        hd_free(d);
        return;
    }
    gw_ts_init(&d->ts, gw, &hd_ops);
    d->opened = 1;
    if ((rc = hd_start(d, c))) {
        hd_finish(d, fy_strerror(rc)); /* counts an attempt, backs off */
    }
}

/* Looks at HOOK_ID's next event unless one is in flight already. */
static void hq_look(const char *hook_id, int64_t seq, void *arg)
{
    fy_gw *gw = arg;
    if (!hook_id || in_flight(gw, hook_id)) {
        return;
    }
    gw_hd *d = calloc(1, sizeof *d);
    if (!d) {
        return;
    }
    d->gw = gw;
    d->fetching = 1;
    d->it.seq = seq;
    snprintf(d->it.hook_id, sizeof d->it.hook_id, "%s", hook_id);
    d->next = gw->hk.deliveries;
    gw->hk.deliveries = d;
    hq_be(gw)->next(d);
}

static void hq_tick(uv_timer_t *t)
{
    fy_gw *gw = t->data;
    if (gw->stopped || gw->draining) {
        return;
    }
    uint64_t now_ms = uv_now(gw->loop);
    /* An attempt without an answer in time is cut and retried. */
    for (gw_hd *d = gw->hk.deliveries, *next; d; d = next) {
        next = d->next;
        if (!d->fetching && now_ms - d->started >= FY_GW_HOOKQ_TIMEOUT_MS) {
            hd_finish(d, "no answer in time");
        }
    }
    hq_heads heads = {calloc(FY_GW_HOOKQ_MAX_HEADS, sizeof(hq_head)), 0};
    if (heads.v && hq_be(gw)->hooks(gw, head_row, &heads) == 0) {
        for (size_t i = 0; i < heads.n; i++) {
            hq_look(heads.v[i].hook_id, heads.v[i].seq, gw);
        }
    }
    /* Shared: other replicas accept events too, so the streams are looked
     * at on every tick. */
    if (!heads.v || heads.n || gw->hk.deliveries || gw->hk.shq) {
        hq_arm(gw, FY_GW_HOOKQ_TICK_MS);
    }
    free(heads.v);
}

/* --- the store's queue ------------------------------------------------------------ */

static int local_hooks(fy_gw *gw, void (*fn)(const char *hook_id, int64_t seq, void *arg),
                       void *arg)
{
    return fy_store_hookq_heads(gw->store, fn, arg);
}

static void local_next(gw_hd *d)
{
    int64_t seq = d->it.seq;
    hq_have(d, fy_store_hookq_get(d->gw->store, seq, &d->it));
}

static int local_done(gw_hd *d)
{
    return fy_store_hookq_done(d->gw->store, d->it.seq);
}

static int local_retry(gw_hd *d, int64_t attempts, int64_t next_at, int dead, const char *error)
{
    return fy_store_hookq_retry(d->gw->store, d->it.seq, attempts, next_at, dead, error);
}

static const hq_backend local_be = {local_hooks, local_next, local_done, local_retry};

/* --- the shared streams (--shared) ---------------------------------------------------- */

typedef struct {
    void (*fn)(const char *hook_id, int64_t seq, void *arg);
    void *arg;
} async_filter;

static void async_row(const fy_store_hook *h, void *arg)
{
    async_filter *f = arg;
    if (h->async) {
        f->fn(h->id, 0, f->arg);
    }
}

/* The async hooks in the local cache of the shared catalog. */
static int shared_hooks(fy_gw *gw, void (*fn)(const char *hook_id, int64_t seq, void *arg),
                        void *arg)
{
    async_filter f = {fn, arg};
    return fy_store_hook_list(gw->store, async_row, &f);
}

static void shared_fetched(void *data, int err)
{
    hq_have(data, err);
}

static void shared_next(gw_hd *d)
{
    int rc = fy_shq_next(d->gw->hk.shq, d->it.hook_id, &d->it, d->entry, shared_fetched, d);
    if (rc) {
        hq_have(d, rc);
    }
}

static int shared_done(gw_hd *d)
{
    return fy_shq_done(d->gw->hk.shq, d->it.hook_id, d->entry);
}

static int shared_retry(gw_hd *d, int64_t attempts, int64_t next_at, int dead, const char *error)
{
    return fy_shq_retry(d->gw->hk.shq, &d->it, d->entry, attempts, next_at, dead, error);
}

static const hq_backend shared_be = {shared_hooks, shared_next, shared_done, shared_retry};

static const hq_backend *hq_be(const fy_gw *gw)
{
    return gw->hk.shq ? &shared_be : &local_be;
}

void fy_gw_hookq_close(fy_gw *gw)
{
    /* First: no fetch still owed calls back into a delivery freed below. */
    fy_shq_free(gw->hk.shq);
    gw->hk.shq = NULL;
    while (gw->hk.deliveries) {
        gw_hd *d = gw->hk.deliveries;
        gw->hk.deliveries = d->next;
        if (d->opened) {
            gw_ts_detach(&d->ts, 1);
        }
        hd_free(d); /* still queued: delivered after the restart */
    }
    if (gw->hk.hookq_timer.data) {
        uv_close((uv_handle_t *)&gw->hk.hookq_timer, NULL);
    }
}
