/* v1.c: /v1 requests, the OpenAI API, routed by the body's model.
 *
 * Admission: the key first (401), then the body, read whole up to
 * min(--max-body, FY_GW_V1_MAX_BODY) (413), its "model" (400 naming param
 * "model"), the key's model scope (403), its limits (429), then the runner:
 * the one serving the model with the fewest requests outstanding (pick.c).
 * None serves it: 404 model_not_found. All that serve it are at their
 * stream limit: the request waits in a FIFO queue (at most
 * --queue-timeout, then 503 with Retry-After); a stream ending anywhere or a
 * runner connecting (the tunnel's news) looks at the queue on the next loop
 * turn, and a new request for a model others wait for queues behind them.
 * The body is kept until the response starts so a stream the runner refused
 * (REFUSED_STREAM) is sent again elsewhere. GET /v1/models lists the models
 * the key may use that a connected runner serves. */
#include "gateway/px.h"

#include "common/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void v1_dispatch(gw_px *px, const gw_conn *exclude);
static void v1_unqueue(gw_px *px);

static size_t v1_pick(gw_px *px, const gw_conn *exclude, gw_conn **out, size_t max, size_t *usable)
{
    return fy_gw_model_pick(fy_gw_model_find(px->gw, px->model), exclude, out, max, usable);
}

/* Never processed: the whole body is still here, send it elsewhere. */
static int v1_on_refused(gw_px *px, gw_conn *c)
{
    v1_dispatch(px, c);
    return 1;
}

static const gw_px_ops v1_ops = {
    .route = "/v1",
    .pick = v1_pick,
    .on_refused = v1_on_refused,
    .on_finish = v1_unqueue,
};

static int v1_queueable(int rc)
{
    return rc == FY_ELIMIT || rc == FY_ECLOSED || rc == FY_EAGAIN || rc == FY_ENOENT;
}

/* Opens PX's stream on the least busy runner serving its model (not
 * EXCLUDE) and sends the body. 0, or gw_px_open's error (nothing was sent). */
static int v1_send(gw_px *px, const gw_conn *exclude)
{
    int rc = gw_px_open(px, exclude);
    if (rc) {
        return rc;
    }
    gw_px_send_body(px); /* what the windows take now, the rest on FYP_EV_WRITABLE */
    return 0;
}

static void v1_busy(gw_px *px, const char *why)
{
    char msg[FY_GW_V1_MODEL_MAX + 160];
    snprintf(msg, sizeof msg, "every runner serving model `%s` is busy (%s); try again", px->model,
             why);
    gw_px_finish(px, GW_FIN_ERROR, 503, "runners_busy", msg);
}

static void v1_on_wait_timeout(uv_timer_t *t)
{
    gw_px *px = t->data;
    if (!px) {
        return;
    }
    gw_px_ref(px);
    char why[64];
    snprintf(why, sizeof why, "waited %.1f s", (double)px->gw->opt.queue_timeout_ms / 1000.0);
    v1_busy(px, why);
    gw_px_unref(px);
}

/* Puts PX at the tail of the wait queue, or answers 503 when it cannot wait. */
static void v1_enqueue(gw_px *px)
{
    fy_gw *gw = px->gw;
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (!m) {
        char msg[FY_GW_V1_MODEL_MAX + 64];
        snprintf(msg, sizeof msg, "no runner serving model `%s` is connected", px->model);
        gw_px_finish(px, GW_FIN_ERROR, 503, "runner_unavailable", msg);
        return;
    }
    if (gw->draining) {
        gw_px_finish(px, GW_FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    if (gw->opt.queue_timeout_ms == 0 || gw->v1.n_waiting >= FY_GW_V1_MAX_WAITING) {
        v1_busy(px, gw->opt.queue_timeout_ms ? "the wait queue is full" : "at their stream limit");
        return;
    }
    uv_timer_t *t = malloc(sizeof *t);
    if (!t) {
        gw_px_finish(px, GW_FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    uv_timer_init(gw->loop, t);
    t->data = px;
    uv_timer_start(t, v1_on_wait_timeout, gw->opt.queue_timeout_ms, 0);
    px->wait_timer = t;
    px->waiting = 1;
    px->wnext = NULL;
    px->wprev = gw->v1.wait_tail;
    if (gw->v1.wait_tail) {
        gw->v1.wait_tail->wnext = px;
    } else {
        gw->v1.wait_head = px;
    }
    gw->v1.wait_tail = px;
    gw->v1.n_waiting++;
    fy_metric_add(gw->metrics.waiting, NULL, 1);
    fy_gw_model_waiters(gw, m, 1);
    gw_px_ref(px); /* the queue's */
}

static void v1_unqueue(gw_px *px)
{
    fy_gw *gw = px->gw;
    if (!px->waiting) {
        return;
    }
    px->waiting = 0;
    if (px->wprev) {
        px->wprev->wnext = px->wnext;
    } else {
        gw->v1.wait_head = px->wnext;
    }
    if (px->wnext) {
        px->wnext->wprev = px->wprev;
    } else {
        gw->v1.wait_tail = px->wprev;
    }
    px->wnext = px->wprev = NULL;
    gw->v1.n_waiting--;
    fy_metric_add(gw->metrics.waiting, NULL, -1);
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (m) {
        fy_gw_model_waiters(gw, m, -1);
    }
    if (px->wait_timer) {
        px->wait_timer->data = NULL;
        uv_close((uv_handle_t *)px->wait_timer, (uv_close_cb)free);
        px->wait_timer = NULL;
    }
    gw_px_unref(px);
}

/* Sends PX now, or queues it when every runner serving its model is full. */
static void v1_dispatch(gw_px *px, const gw_conn *exclude)
{
    int rc = v1_send(px, exclude);
    if (rc == 0) {
        return;
    }
    if (v1_queueable(rc)) {
        v1_enqueue(px);
    } else {
        gw_px_open_fail(px, rc);
    }
}

/* One pass over the queue, oldest first. A model found full is skipped for
 * the rest of the pass, so its waiters keep their order. */
static void v1_on_kick(uv_timer_t *t)
{
    fy_gw *gw = t->data;
    uint64_t gen = ++gw->v1.kick_gen;
    for (gw_px *px = gw->v1.wait_head, *next; px; px = next) {
        next = px->wnext;
        gw_model *m = fy_gw_model_find(gw, px->model);
        if (!m || m->kick_gen == gen) {
            continue;
        }
        gw_px_ref(px);
        int rc = v1_send(px, NULL);
        if (rc == 0) {
            v1_unqueue(px);
        } else if (v1_queueable(rc)) {
            m->kick_gen = gen;
        } else {
            gw_px_open_fail(px, rc);
        }
        gw_px_unref(px);
    }
}

/* Looks at the queue on the next loop turn. Cheap when none waits. */
static void v1_kick(fy_gw *gw)
{
    if (gw->v1.n_waiting && gw->v1.wait_kick_init &&
        !uv_is_active((uv_handle_t *)&gw->v1.wait_kick)) {
        gw->v1.wait_kick.data = gw;
        uv_timer_start(&gw->v1.wait_kick, v1_on_kick, 0, 0);
    }
}

/* A stream ended somewhere or a runner connected: a waiter may go now. */
static void v1_on_tunnel(fy_gw *gw, gw_tun_news news, void *arg)
{
    (void)news;
    (void)arg;
    v1_kick(gw);
}

int fy_gw_v1_init(fy_gw *gw)
{
    int rc = uv_timer_init(gw->loop, &gw->v1.wait_kick);
    if (rc) {
        return fy_err_from_uv(rc);
    }
    gw->v1.wait_kick.data = gw;
    gw->v1.wait_kick_init = 1;
    gw->v1.sub = (gw_tun_sub){.fn = v1_on_tunnel};
    fy_gw_tunnel_subscribe(gw, &gw->v1.sub);
    return 0;
}

void fy_gw_v1_fail_waiting(fy_gw *gw, const char *code, const char *msg)
{
    while (gw->v1.wait_head) {
        gw_px *px = gw->v1.wait_head;
        gw_px_ref(px);
        gw_px_finish(px, GW_FIN_ERROR, 503, code, msg);
        gw_px_unref(px);
    }
}

void fy_gw_v1_close(fy_gw *gw)
{
    if (gw->v1.wait_kick_init) {
        gw->v1.wait_kick_init = 0;
        uv_close((uv_handle_t *)&gw->v1.wait_kick, NULL);
    }
}

static void v1_not_found(gw_px *px)
{
    char msg[FY_GW_V1_MODEL_MAX + 96];
    snprintf(msg, sizeof msg, "The model `%s` does not exist or you do not have access to it.",
             px->model);
    px->param = "model";
    gw_px_finish(px, GW_FIN_ERROR, 404, "model_not_found", msg);
}

static void v1_admitted(gw_px *px);

/* The whole body is here: model, scope, limits, then a runner. */
static void v1_admit(gw_px *px)
{
    fy_gw *gw = px->gw;
    char err[128];
    if (fy_gw_v1_model(px->body, px->body_len, px->model, err, sizeof err)) {
        px->param = "model";
        gw_px_finish(px, GW_FIN_ERROR, 400, "invalid_request", err);
        return;
    }
    fy_auth_outcome o = fy_keys_authorize(gw->keys, px->key, FY_SCOPE_MODEL, px->model);
    if (o != FY_AUTH_OK) {
        gw_px_refuse(px, o);
        return;
    }
    if (gw->draining) {
        gw_px_finish(px, GW_FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    gw_px_limits(px, v1_admitted);
}

/* Within the key's limits: a runner for the model, now or from the queue. */
static void v1_admitted(gw_px *px)
{
    fy_gw *gw = px->gw;
    gw_model *m = fy_gw_model_find(gw, px->model);
    if (!m || m->n_conns == 0) {
        v1_not_found(px);
        return;
    }
    px->has_body = 1;
    px->body_done = 1;
    gw_px_count(px);
    if (m->n_waiting) {
        v1_enqueue(px); /* behind the requests already waiting for it */
        v1_kick(gw);
    } else {
        v1_dispatch(px, NULL);
    }
}

static void v1_body_data(fy_http_req *req, const char *data, size_t len, void *arg)
{
    gw_px *px = arg;
    if (px->req != req) {
        return;
    }
    px->bytes_in += len;
    if (fy_buf_append(&px->rbody, data, len)) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %zu bytes", px->rbody.max);
        gw_px_finish(px, GW_FIN_ERROR, 413, "payload_too_large", msg);
    }
}

static void v1_body_end(fy_http_req *req, int status, void *arg)
{
    gw_px *px = arg;
    if (px->req != req) {
        return;
    }
    if (status) {
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL); /* gone, or the server answered */
        return;
    }
    gw_px_ref(px);
    px->body = fy_buf_steal(&px->rbody, &px->body_len);
    v1_admit(px);
    gw_px_unref(px);
}

static int v1_model_cmp(const void *a, const void *b)
{
    return strcmp((*(gw_model *const *)a)->name, (*(gw_model *const *)b)->name);
}

static json_t *v1_model_json(const gw_model *m)
{
    return json_pack("{s:s,s:s,s:I,s:s}", "id", m->name, "object", "model", "created",
                     (json_int_t)m->created, "owned_by", "ferry");
}

/* GET /v1/models (ID NULL) or /v1/models/ID: the models the key may use that
 * a connected runner serves. */
static void v1_models(gw_px *px, const char *id)
{
    fy_gw *gw = px->gw;
    size_t n = 0, k = 0;
    for (gw_model *m = gw->tun.models; m; m = m->next) {
        n++;
    }
    gw_model **v = calloc(n ? n : 1, sizeof *v);
    json_t *out = NULL;
    if (!v) {
        gw_px_finish(px, GW_FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    for (gw_model *m = gw->tun.models; m; m = m->next) {
        if (m->n_conns > 0 && (!id || strcmp(m->name, id) == 0) &&
            fy_keys_authorize(gw->keys, px->key, FY_SCOPE_MODEL, m->name) == FY_AUTH_OK) {
            v[k++] = m;
        }
    }
    if (id && k == 0) {
        free(v);
        snprintf(px->model, sizeof px->model, "%.*s", (int)(sizeof px->model - 1), id);
        v1_not_found(px);
        return;
    }
    if (id) {
        out = v1_model_json(v[0]);
    } else {
        qsort(v, k, sizeof *v, v1_model_cmp);
        json_t *data = json_array();
        for (size_t i = 0; i < k; i++) {
            json_array_append_new(data, v1_model_json(v[i]));
        }
        out = json_pack("{s:s,s:o}", "object", "list", "data", data);
    }
    free(v);
    px->reply = out ? json_dumps(out, JSON_COMPACT) : NULL;
    json_decref(out);
    if (!px->reply) {
        gw_px_finish(px, GW_FIN_ERROR, 500, "internal_error", "out of memory");
        return;
    }
    px->reply_len = strlen(px->reply);
    gw_px_finish(px, GW_FIN_REPLY, 200, NULL, NULL);
}

static void v1_authed(gw_px *px);

void fy_gw_v1_request(fy_gw *gw, fy_http_req *req)
{
    gw_px *px = gw_px_new(gw, req, uv_hrtime(), &v1_ops);
    if (px) {
        gw_px_authenticate(px, 0, v1_authed);
    }
}

/* GET /v1/models[/ID] once within the key's limits. */
static void v1_models_admitted(gw_px *px)
{
    const char *path = fy_http_req_path(px->req);
    v1_models(px, path[10] ? path + 11 : NULL);
}

/* Authenticated: models are answered here, the rest read whole, then routed. */
static void v1_authed(gw_px *px)
{
    fy_gw *gw = px->gw;
    fy_http_req *req = px->req;
    if (gw->draining) {
        gw_px_finish(px, GW_FIN_ERROR, 503, "gateway_draining", "the gateway is shutting down");
        return;
    }
    const char *path = fy_http_req_path(req), *method = fy_http_req_method(req);
    if (strcmp(method, "GET") == 0 &&
        (strcmp(path, "/v1/models") == 0 || (strncmp(path, "/v1/models/", 11) == 0 && path[11]))) {
        gw_px_limits(px, v1_models_admitted);
        return;
    }
    if (strcmp(method, "POST") != 0) {
        gw_px_finish(
            px, GW_FIN_ERROR, 405, "method_not_allowed",
            "the gateway routes POST /v1/... by the body's model, and answers GET /v1/models");
        return;
    }
    uint64_t cap = gw->opt.max_body < FY_GW_V1_MAX_BODY ? gw->opt.max_body : FY_GW_V1_MAX_BODY;
    int64_t cl = fy_http_req_content_length(req);
    if (cl == 0) {
        px->param = "model";
        gw_px_finish(px, GW_FIN_ERROR, 400, "invalid_request",
                     "the request needs a JSON body with a model");
        return;
    }
    if (cl > 0 && (uint64_t)cl > cap) {
        char msg[128];
        snprintf(msg, sizeof msg, "the body is over the limit of %llu bytes",
                 (unsigned long long)cap);
        gw_px_finish(px, GW_FIN_ERROR, 413, "payload_too_large", msg);
        return;
    }
    fy_buf_init(&px->rbody, (size_t)cap);
    if (!gw_px_set_target(px, fy_http_req_target(req))) {
        return;
    }
    gw_px_watch(px);
    px->body_reading = 1;
    if (fy_http_req_read_body(req, v1_body_data, v1_body_end, px)) {
        gw_px_finish(px, GW_FIN_ABORT, 0, NULL, NULL);
    }
}
