/* hooks.c: public requests to /hooks/<id>.
 *
 * In order: the hook (404 for an unknown id, which is unguessable: 128
 * random bits), POST only (405), the hook's body cap (413, from
 * Content-Length up front or as the bytes arrive), the whole body read into
 * memory (at most the cap), the signature over those raw bytes
 * (gateway/hookverify.h: 401 naming what failed; counted per hook and
 * reason), the hook's rate limit on verified requests (the same limiter as
 * API keys: 429 with Retry-After), then:
 *   - sync: the runner must be connected (503 otherwise, and nothing is
 *     remembered, so the tool's own retry can succeed); GitHub's delivery id
 *     is recorded (a repeat within FY_GW_HOOK_REPLAY_WINDOW_S is a replay:
 *     401) and the request is forwarded (px.h) with the original body and
 *     headers, its own Authorization included, and the runner's answer
 *     relayed;
 *   - async: GitHub's delivery id is recorded, the event is written to the
 *     durable queue (one fsync) and 202 is answered with its delivery id;
 *     hookq.c delivers it.
 * Nothing reaches a runner before its signature was verified. The secrets
 * are read from the store for each request (so a rotation or a delete takes
 * effect on the next one) and wiped after use. */
#include "gateway/px.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "gateway/hookverify.h"
#include "gateway/shared_hookq.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define HK_LOG "hooks"

typedef struct {
    fy_gw *gw;
    fy_http_req *req;
    fy_store_hook *h;
    fy_buf body;
    uint64_t t0;
    char delivery_id[40];               /* async: the event's, once queued */
    char dlv[FY_HOOK_DELIVERY_MAX + 1]; /* GitHub's delivery id, for the replay guard */
} gw_hr;

static void hr_free(gw_hr *hr)
{
    if (hr->h) {
        fy_secure_zero(hr->h, sizeof *hr->h);
        free(hr->h);
    }
    fy_buf_free(&hr->body);
    free(hr);
}

static void count(fy_gw *gw, const char *hook, const char *outcome)
{
    const char *v[2] = {hook, outcome};
    fy_metric_add(gw->metrics.hook_requests, v, 1);
}

/* What a request answered here tells the dashboard about hook HOOK_ID: the
 * verification result and the delivery's state. */
typedef struct {
    const char *hook_id, *verified, *state, *delivery_id;
} hr_news;

/* The dashboard's name of a refusal OUTCOME's verification result: NULL
 * when the signature was not checked, "ok" for refusals after it. */
static const char *hr_verified(const char *outcome)
{
    static const char *const map[][2] = {
        {"missing_header", "missing_signature"},
        {"malformed_header", "bad_signature"},
        {"bad_signature", "bad_signature"},
        {"stale_timestamp", "stale"},
        {"replay", "replayed"},
        {"ratelimited", "ok"},
        {"runner_unavailable", "ok"},
        {"shared_state_unavailable", "ok"},
        {"store_error", "ok"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (strcmp(outcome, map[i][0]) == 0) {
            return map[i][1];
        }
    }
    return NULL;
}

/* The metrics and news (access log, dashboard) of a request answered here
 * (not proxied). */
static void hr_account(fy_gw *gw, fy_http_req *req, uint64_t t0, const char *runner, int status,
                       uint64_t in, uint64_t out, const hr_news *news)
{
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    fy_metrics_gw_request(&gw->metrics, "/hooks", status, secs, secs, in, out);
    if (!fy_reqdone_heard(&gw->done)) {
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fy_accesslog_entry e = {
        .time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
        .runner = runner,
        .method = fy_http_req_method(req),
        .path = fy_http_req_path(req),
        .status = status,
        .bytes_in = in,
        .bytes_out = out,
        .latency_ms = secs * 1000,
        .ttfb_ms = secs * 1000,
        .prompt_tokens = -1,
        .completion_tokens = -1,
    };
    fy_reqdone d = {.e = &e,
                    .kind = "hook",
                    .hook_id = news->hook_id,
                    .verified = news->verified,
                    .hook_state = news->state,
                    .delivery_id = news->delivery_id};
    d.req_h = fy_http_req_headers(req, &d.n_req_h);
    fy_reqdone_publish(&gw->done, &d);
}

/* Answers an error and records the request. */
static void hr_error(fy_gw *gw, fy_http_req *req, uint64_t t0, const char *hook, int status,
                     const char *outcome, const char *code, const char *msg,
                     const fy_http_header *extra, size_t nextra)
{
    char body[512];
    size_t n = fy_http_error_json(body, sizeof body, status, code, NULL, msg);
    fy_http_header h[2 + FY_RL_MAX_HEADERS] = {{"Content-Type", "application/json", 0, 0}};
    size_t nh = 1;
    for (size_t i = 0; i < nextra && nh < sizeof h / sizeof h[0]; i++) {
        h[nh++] = extra[i];
    }
    hr_news news = {strcmp(hook, "unknown") ? hook : NULL, hr_verified(outcome), "refused", NULL};
    hr_account(gw, req, t0, NULL, status, 0, n, &news); /* before: REQ is gone once answered */
    fy_http_respond(req, status, h, nh, body, n);
    count(gw, hook, outcome);
}

static gw_hook_rt *hook_rt(fy_gw *gw, const fy_store_hook *h)
{
    gw_hook_rt *rt = gw->hk.hooks;
    while (rt && strcmp(rt->id, h->id) != 0) {
        rt = rt->next;
    }
    fy_rl_limits lim = {.rpm = h->rpm};
    if (!rt) {
        if (!(rt = calloc(1, sizeof *rt))) {
            return NULL;
        }
        snprintf(rt->id, sizeof rt->id, "%s", h->id);
        rt->rpm = h->rpm;
        fy_rl_init(&rt->rl, &lim);
        rt->next = gw->hk.hooks;
        gw->hk.hooks = rt;
    } else if (rt->rpm != h->rpm) {
        rt->rpm = h->rpm;
        fy_rl_set_limits(&rt->rl, &lim, fy_rl_now());
    }
    return rt;
}

void fy_gw_hook_forget(fy_gw *gw, const char *id)
{
    for (gw_hook_rt **p = &gw->hk.hooks; *p; p = &(*p)->next) {
        if (strcmp((*p)->id, id) == 0) {
            gw_hook_rt *rt = *p;
            *p = rt->next;
            free(rt);
            return;
        }
    }
}

void fy_gw_hooks_free(fy_gw *gw)
{
    while (gw->hk.hooks) {
        gw_hook_rt *rt = gw->hk.hooks;
        gw->hk.hooks = rt->next;
        free(rt);
    }
}

/* The runner-side target: the hook's path, with the public query string. */
static char *hook_target(const fy_store_hook *h, fy_http_req *req)
{
    const char *q = fy_http_req_query(req);
    size_t n = strlen(h->path) + 2 + strlen(q);
    char *t = malloc(n);
    if (t) {
        snprintf(t, n, "%s%s%s", h->path, q[0] ? "?" : "", q);
    }
    return t;
}

/* The headers an async delivery carries, as JSON [[name, value], ...]: the
 * request's end-to-end headers (what px.c forwards for a sync hook) and
 * the gateway's x-forwarded-* and the body's Content-Length. */
static char *hook_headers_json(fy_gw *gw, fy_http_req *req, size_t body_len)
{
    json_t *a = json_array();
    size_t nh;
    const fy_http_header *h = fy_http_req_headers(req, &nh);
    const char *connection = fy_http_req_header(req, "connection");
    const char *host = fy_http_req_header(req, "host");
    char xff[FY_HTTP_MAX_HEADER_BYTES] = "";
    size_t xl = 0;
    for (size_t i = 0; i < nh; i++) {
        const char *n = h[i].name;
        if (fy_http_hop_by_hop(n, h[i].name_len, connection) || strcasecmp(n, "expect") == 0 ||
            strcasecmp(n, "x-forwarded-proto") == 0 || strcasecmp(n, "x-forwarded-host") == 0 ||
            strcasecmp(n, "content-length") == 0) {
            continue;
        }
        if (strcasecmp(n, "x-forwarded-for") == 0) {
            int w = snprintf(xff + xl, sizeof xff - xl, "%s, ", h[i].value);
            xl = w > 0 && (size_t)w < sizeof xff - xl ? xl + (size_t)w : xl;
            continue;
        }
        json_array_append_new(a, json_pack("[s,s]", n, h[i].value));
    }
    char peer[64];
    fy_gw_peer_host(fy_http_req_peer(req), peer, sizeof peer);
    snprintf(xff + xl, sizeof xff - xl, "%s", peer);
    json_array_append_new(a, json_pack("[s,s]", "x-forwarded-for", xff));
    json_array_append_new(
        a, json_pack("[s,s]", "x-forwarded-proto", gw->opt.public_plain ? "http" : "https"));
    if (host && host[0]) {
        json_array_append_new(a, json_pack("[s,s]", "x-forwarded-host", host));
    }
    /* The body is stored whole, so its length is known even when it came
     * chunked (not every upstream reads a chunked request). */
    char cl[24];
    snprintf(cl, sizeof cl, "%zu", body_len);
    json_array_append_new(a, json_pack("[s,s]", "content-length", cl));
    char *text = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return text;
}

/* The event is in the queue: 202 with its delivery id. */
static void hook_queued(gw_hr *hr)
{
    fy_gw *gw = hr->gw;
    char body[160];
    int n = snprintf(body, sizeof body, "{\"status\":\"queued\",\"delivery_id\":\"%s\"}\n",
                     hr->delivery_id);
    fy_http_header h[] = {{"Content-Type", "application/json", 0, 0},
                          {"x-ferry-delivery", hr->delivery_id, 0, 0}};
    hr_news news = {hr->h->id, "ok", "queued", hr->delivery_id};
    hr_account(gw, hr->req, hr->t0, hr->h->runner, 202, hr->body.len, (uint64_t)n, &news);
    fy_http_respond(hr->req, 202, h, 2, body, (size_t)n);
    count(gw, hr->h->id, "queued");
    fy_gw_hookq_kick(gw);
}

static void hook_not_queued(gw_hr *hr, int rc)
{
    FY_ERROR(HK_LOG, "hook %s: event not queued: %s", hr->h->id, fy_strerror(rc));
    if (rc == FY_EUNREACH || rc == FY_ECONNRESET || rc == FY_ECANCELED) {
        fy_http_header ra = {"Retry-After", "1", 0, 0};
        hr_error(hr->gw, hr->req, hr->t0, hr->h->id, 503, "shared_state_unavailable",
                 "shared_state_unavailable",
                 "the gateway cannot reach its shared state (Redis): the event was not queued; "
                 "retry",
                 &ra, 1);
        return;
    }
    hr_error(hr->gw, hr->req, hr->t0, hr->h->id, 500, "store_error", "store_error",
             "the event could not be queued; retry", NULL, 0);
}

/* --shared: Redis answered the XADD. */
static void hook_added(void *data, int err)
{
    gw_hr *hr = data;
    if (err) {
        hook_not_queued(hr, err);
    } else {
        hook_queued(hr);
    }
    hr_free(hr);
}

/* Queues the event: in the store, or (--shared) in the hook's stream.
 * Returns 1 when HR was kept for an answer still to come. */
static int hook_enqueue(gw_hr *hr)
{
    fy_gw *gw = hr->gw;
    fy_store_hookq_item it = {0};
    uint8_t rnd[12];
    fy_random_bytes(rnd, sizeof rnd);
    memcpy(it.delivery_id, "dlv_", 4);
    fy_hex_encode(rnd, sizeof rnd, it.delivery_id + 4, sizeof it.delivery_id - 4);
    snprintf(hr->delivery_id, sizeof hr->delivery_id, "%s", it.delivery_id);
    snprintf(it.hook_id, sizeof it.hook_id, "%s", hr->h->id);
    char *target = hook_target(hr->h, hr->req);
    it.headers = hook_headers_json(gw, hr->req, hr->body.len);
    it.body = hr->body.data;
    it.body_len = hr->body.len;
    it.accepted_at = (int64_t)time(NULL);
    int rc = target && it.headers ? 0 : FY_ENOMEM, kept = 0;
    if (!rc && strlen(target) >= sizeof it.target) {
        rc = FY_ETOOBIG;
    }
    if (!rc) {
        snprintf(it.target, sizeof it.target, "%s", target);
        if (gw->hk.shq) {
            rc = fy_shq_add(gw->hk.shq, &it, hook_added, hr);
            kept = rc == 0;
        } else {
            rc = fy_store_hookq_add(gw->store, &it, NULL);
        }
    }
    free(target);
    free(it.headers);
    if (rc) {
        hook_not_queued(hr, rc);
    } else if (!kept) {
        hook_queued(hr);
    }
    return kept;
}

static const gw_px_ops hook_ops = {
    .route = "/hooks",
    .keep_auth = 1,
    .pick = gw_px_pick_runner,
    .on_refused = gw_px_replay,
};

/* A verified synchronous hook request: forwarded to the hook's runner at
 * TARGET with the body read before, the runner's answer relayed. */
static void hook_forward(gw_hr *hr, const char *target)
{
    fy_gw *gw = hr->gw;
    gw_px *px = gw_px_new(gw, hr->req, hr->t0, &hook_ops);
    if (!px) {
        return;
    }
    px->body = fy_buf_steal(&hr->body, &px->body_len); /* freed with PX */
    px->bytes_in = px->body_len;
    px->body_done = 1;
    px->has_body = px->body_len > 0;
    snprintf(px->runner, sizeof px->runner, "%s", hr->h->runner);
    snprintf(px->hook_id, sizeof px->hook_id, "%s", hr->h->id);
    if (!gw_px_set_target(px, target)) {
        return;
    }
    if (gw->draining) {
        gw_px_finish(px, GW_FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    if (!gw_px_runner_ready(px)) {
        return;
    }
    gw_px_proxy(px);
}

/* Verified, limited, not a replay: queue or forward. Returns 1 when HR was
 * kept for an answer still to come. */
static int hook_proceed(gw_hr *hr)
{
    fy_gw *gw = hr->gw;
    fy_store_hook *h = hr->h;
    if (h->async) {
        return hook_enqueue(hr);
    }
    char *target = hook_target(h, hr->req);
    if (!target) {
        hr_error(gw, hr->req, hr->t0, h->id, 500, "internal_error", "internal_error",
                 "out of memory", NULL, 0);
        return 0;
    }
    count(gw, h->id, "forwarded");
    hook_forward(hr, target);
    free(target);
    return 0;
}

/* The replay guard's answer RC (0: a new delivery id). Returns as
 * hook_proceed. */
static int hook_seen_answer(gw_hr *hr, int rc)
{
    fy_gw *gw = hr->gw;
    if (rc == FY_EEXIST) {
        hr_error(gw, hr->req, hr->t0, hr->h->id, 401, fy_hv_reason(FY_HV_REPLAY),
                 fy_hv_code(FY_HV_REPLAY),
                 "X-GitHub-Delivery was already received (a replay is refused)", NULL, 0);
        return 0;
    }
    if (rc) {
        hr_error(gw, hr->req, hr->t0, hr->h->id, 500, "store_error", "store_error",
                 "the delivery id could not be recorded; retry", NULL, 0);
        return 0;
    }
    return hook_proceed(hr);
}

/* --shared-failure closed, Redis unreachable: the replay guard cannot tell. */
static void hook_seen_unavailable(gw_hr *hr)
{
    fy_http_header ra = {"Retry-After", "1", 0, 0};
    hr_error(hr->gw, hr->req, hr->t0, hr->h->id, 503, "shared_state_unavailable",
             "shared_state_unavailable",
             "the gateway cannot reach its shared state (Redis) to check the delivery id; retry",
             &ra, 1);
}

/* --shared: Redis answered the replay guard's SET NX. */
static void hook_seen_shared(void *data, int err)
{
    gw_hr *hr = data;
    int kept = 0;
    if (err == 0 || err == FY_EEXIST || err == FY_EIO) {
        kept = hook_seen_answer(hr, err);
    } else if (!hr->gw->opt.shared_fail_open || err == FY_ECANCELED) {
        hook_seen_unavailable(hr);
    } else {
        kept = hook_seen_answer(hr, fy_store_hook_seen(hr->gw->store, hr->h->id, hr->dlv,
                                                       (int64_t)time(NULL),
                                                       FY_GW_HOOK_REPLAY_WINDOW_S));
    }
    if (!kept) {
        hr_free(hr);
    }
}

/* The whole body is here: verify, limit, then forward or queue. Returns 1
 * when HR was kept for an answer still to come (it is freed then). */
static int hook_dispatch(gw_hr *hr)
{
    fy_gw *gw = hr->gw;
    fy_store_hook *h = hr->h;
    size_t nh;
    const fy_http_header *hs = fy_http_req_headers(hr->req, &nh);
    int64_t now = (int64_t)time(NULL);
    fy_hv_result vr;
    if (fy_hook_verify(h, hs, nh, hr->body.data, hr->body.len, now, &vr) != FY_HV_OK) {
        hr_error(gw, hr->req, hr->t0, h->id, 401, fy_hv_reason(vr.outcome), fy_hv_code(vr.outcome),
                 vr.message, NULL, 0);
        return 0;
    }
    gw_hook_rt *rt = hook_rt(gw, h);
    if (!rt) {
        hr_error(gw, hr->req, hr->t0, h->id, 500, "internal_error", "internal_error",
                 "out of memory", NULL, 0);
        return 0;
    }
    fy_rl_result rr;
    if (!fy_rl_acquire(&rt->rl, fy_rl_now(), &rr)) {
        fy_rl_header_buf hb;
        size_t k = fy_rl_headers(&rr, &hb);
        fy_metrics_gw_ratelimited(&gw->metrics, fy_rl_kind_name(rr.denied_by));
        hr_error(gw, hr->req, hr->t0, h->id, 429, "ratelimited", fy_rl_kind_code(rr.denied_by),
                 "Rate limit reached for this hook's requests per minute", hb.h, k);
        return 0;
    }
    fy_rl_release(&rt->rl); /* hooks limit the rate only, not requests in flight */
    if (!h->async && !fy_gw_conn_pick(fy_gw_runner_find(gw, h->runner), NULL)) {
        char msg[160];
        snprintf(msg, sizeof msg, "runner %s is not connected", h->runner);
        fy_http_header ra = {"Retry-After", "1", 0, 0};
        hr_error(gw, hr->req, hr->t0, h->id, 503, "runner_unavailable", "runner_unavailable", msg,
                 &ra, 1);
        return 0;
    }
    if (!vr.delivery) {
        return hook_proceed(hr);
    }
    char *dlv = hr->dlv;
    snprintf(dlv, sizeof hr->dlv, "%.*s", (int)vr.delivery_len, vr.delivery);
    if (gw->shared) {
        int rc = fy_shared_hook_seen(gw->shared, h->id, dlv, FY_GW_HOOK_REPLAY_WINDOW_S,
                                     hook_seen_shared, hr);
        if (rc == 0) {
            return 1;
        }
        if (rc == FY_EINVAL) {
            hr_error(gw, hr->req, hr->t0, h->id, 400, "bad_delivery_id", "invalid_request",
                     "X-GitHub-Delivery must be 1..100 of [A-Za-z0-9._-]", NULL, 0);
            return 0;
        }
        if (!gw->opt.shared_fail_open) {
            hook_seen_unavailable(hr);
            return 0;
        }
        /* --shared-failure open: this replica's own memory of ids. */
    }
    return hook_seen_answer(
        hr, fy_store_hook_seen(gw->store, h->id, dlv, now, FY_GW_HOOK_REPLAY_WINDOW_S));
}

static void hr_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    gw_hr *hr = arg;
    (void)req;
    if (fy_buf_append(&hr->body, data, len)) {
        /* Answering finishes REQ: the server drops the rest of the body and
         * calls nothing of ours again. */
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over this hook's limit of %lld bytes",
                 (long long)hr->h->max_body);
        hr_error(hr->gw, hr->req, hr->t0, hr->h->id, 413, "too_large", "payload_too_large", msg,
                 NULL, 0);
        hr_free(hr);
    }
}

static void hr_end(fy_http_req *req, int status, void *arg)
{
    gw_hr *hr = arg;
    if (status) {
        fy_http_res_abort(req); /* the client is gone or broke the body */
    } else if (hook_dispatch(hr)) {
        return; /* freed when its answer comes */
    }
    hr_free(hr);
}

static int valid_id_text(const char *id)
{
    size_t n = strlen(id);
    if (n < 4 || n >= FY_STORE_HOOK_ID_MAX || strncmp(id, "hk_", 3) != 0) {
        return 0;
    }
    for (size_t i = 3; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_')) {
            return 0;
        }
    }
    return 1;
}

void fy_gw_hook_request(fy_gw *gw, fy_http_req *req)
{
    uint64_t t0 = uv_hrtime();
    const char *id = fy_http_req_path(req) + 7; /* after "/hooks/" */
    fy_store_hook *h = malloc(sizeof *h);
    int rc = !h ? FY_ENOMEM : valid_id_text(id) ? fy_store_hook_get(gw->store, id, h) : FY_ENOENT;
    if (rc) {
        if (h) {
            fy_secure_zero(h, sizeof *h);
            free(h);
        }
        hr_error(gw, req, t0, "unknown", rc == FY_ENOENT ? 404 : 500,
                 rc == FY_ENOENT ? "not_found" : "internal_error",
                 rc == FY_ENOENT ? "hook_not_found" : "internal_error",
                 rc == FY_ENOENT ? "no such hook" : fy_strerror(rc), NULL, 0);
        return;
    }
    const char *why = NULL;
    int status = 0;
    char msg[128];
    int64_t cl = fy_http_req_content_length(req);
    if (strcmp(fy_http_req_method(req), "POST") != 0) {
        status = 405;
        why = "method_not_allowed";
        snprintf(msg, sizeof msg, "hooks take POST");
    } else if (cl > h->max_body) {
        status = 413;
        why = "payload_too_large";
        snprintf(msg, sizeof msg, "the body is over this hook's limit of %lld bytes",
                 (long long)h->max_body);
    } else if (gw->draining) {
        status = 503;
        why = "gateway_draining";
        snprintf(msg, sizeof msg, "the gateway is shutting down");
    }
    if (why) {
        hr_error(gw, req, t0, h->id, status, status == 413 ? "too_large" : why, why, msg, NULL, 0);
        fy_secure_zero(h, sizeof *h);
        free(h);
        return;
    }
    gw_hr *hr = calloc(1, sizeof *hr);
    if (!hr) {
        fy_secure_zero(h, sizeof *h);
        free(h);
        fy_http_respond_error(req, 500, "internal_error", "out of memory");
        return;
    }
    hr->gw = gw;
    hr->req = req;
    hr->h = h;
    hr->t0 = t0;
    fy_buf_init(&hr->body, (size_t)h->max_body);
    if (fy_http_req_read_body(req, hr_data, hr_end, hr)) {
        fy_http_res_abort(req);
        hr_free(hr);
    }
}
