/* traffic.c: the dashboard's live traffic (traffic.h). */
#include "gateway/dash/traffic.h"

#include "common/crypto.h"
#include "common/err.h"
#include "gateway/gateway.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define TR_PATH_MAX  512
#define TR_NAMES     64 /* key names cached */
#define TR_QUERY_MAX 256

typedef struct {
    uint64_t seq; /* 0: empty */
    char id[17];
    int64_t time_ms;
    int status;
    double latency_ms;
    int64_t prompt_tokens, completion_tokens; /* < 0: unknown */
    const char *kind;                         /* a static string */
    char key_id[FY_STORE_KEY_ID_MAX];
    char key_name[FY_STORE_KEY_NAME_MAX];
    char runner[FY_STORE_NAME_MAX];
    char model[FY_GW_V1_MODEL_MAX];
    char method[16];
    char path[TR_PATH_MAX];
    char *heads; /* redacted: NUL-terminated names and values in turn */
    uint16_t n_req, n_resp;
    const char *verified, *hook_state; /* webhooks: static strings, or NULL */
    char hook_id[FY_STORE_HOOK_ID_MAX];
    char delivery_id[40];
} tr_rec;

typedef struct {
    char id[FY_STORE_KEY_ID_MAX];
    char name[FY_STORE_KEY_NAME_MAX];
    int64_t at; /* unix seconds it was looked up; 0: free */
} tr_name;

struct fy_traffic {
    fy_store *store;
    uv_timer_t ping; /* runs while a stream is open */
    uint64_t seq;
    tr_rec ring[FY_TRAFFIC_RING];
    fy_http_req *streams[FY_TRAFFIC_MAX_STREAMS];
    size_t n_streams;
    tr_name names[TR_NAMES];
    fy_traffic_totals totals;
};

int fy_traffic_new(uv_loop_t *loop, fy_store *store, fy_traffic **out)
{
    fy_traffic *t = calloc(1, sizeof *t);
    if (!t) {
        return FY_ENOMEM;
    }
    t->store = store;
    uv_timer_init(loop, &t->ping);
    t->ping.data = t;
    *out = t;
    return 0;
}

static void stream_drop(fy_traffic *t, size_t i)
{
    fy_http_req *req = t->streams[i];
    t->streams[i] = t->streams[--t->n_streams];
    t->streams[t->n_streams] = NULL;
    if (!t->n_streams) {
        uv_timer_stop(&t->ping);
    }
    fy_http_res_abort(req);
}

void fy_traffic_close(fy_traffic *t)
{
    if (!t) {
        return;
    }
    while (t->n_streams) {
        stream_drop(t, t->n_streams - 1);
    }
    uv_close((uv_handle_t *)&t->ping, NULL);
}

void fy_traffic_free(fy_traffic *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < FY_TRAFFIC_RING; i++) {
        free(t->ring[i].heads);
    }
    free(t);
}

const fy_traffic_totals *fy_traffic_get_totals(const fy_traffic *t)
{
    return &t->totals;
}

/* --- recording ------------------------------------------------------------------- */

int fy_traffic_secret_header(const char *name)
{
    static const char *const exact[] = {"authorization", "proxy-authorization", "cookie",
                                        "set-cookie", "x-api-key"};
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++) {
        if (strcasecmp(name, exact[i]) == 0) {
            return 1;
        }
    }
    return strcasestr(name, "signature") || strcasestr(name, "secret") || strcasestr(name, "token");
}

/* Appends H[0..N) to B, secrets redacted; returns how many fit. */
static uint16_t heads_put(fy_buf *b, const fy_http_header *h, size_t n)
{
    uint16_t k = 0;
    for (size_t i = 0; i < n && k < UINT16_MAX; i++, k++) {
        const char *v = fy_traffic_secret_header(h[i].name) ? "[redacted]" : h[i].value;
        size_t l = b->len;
        if (fy_buf_append(b, h[i].name, strlen(h[i].name) + 1) ||
            fy_buf_append(b, v, strlen(v) + 1)) {
            b->len = l;
            break;
        }
    }
    return k;
}

/* PATH without anything shaped like a ferry key ("fy_" and 20 or more
 * base64url characters) into OUT. */
static void path_copy(char *out, size_t cap, const char *path)
{
    size_t o = 0;
    for (const char *p = path; *p && o + 1 < cap;) {
        size_t run = 0;
        if (strncmp(p, "fy_", 3) == 0) {
            while (p[3 + run] &&
                   (strchr("-_", p[3 + run]) || (p[3 + run] >= '0' && p[3 + run] <= '9') ||
                    ((p[3 + run] | 32) >= 'a' && (p[3 + run] | 32) <= 'z'))) {
                run++;
            }
        }
        if (run >= 20) {
            o += (size_t)snprintf(out + o, cap - o, "fy_[redacted]");
            o = o < cap ? o : cap - 1;
            p += 3 + run;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

/* The name of key ID, from the cache or the store ("" when unknown). */
static const char *key_name(fy_traffic *t, const char *id, int64_t now)
{
    tr_name *slot = &t->names[0];
    for (size_t i = 0; i < TR_NAMES; i++) {
        tr_name *n = &t->names[i];
        if (n->at && strcmp(n->id, id) == 0 && now - n->at < FY_TRAFFIC_NAME_TTL_S) {
            return n->name;
        }
        if (n->at < slot->at) {
            slot = n;
        }
    }
    fy_store_key k;
    snprintf(slot->id, sizeof slot->id, "%s", id);
    slot->name[0] = '\0';
    slot->at = now;
    if (t->store && fy_store_key_get(t->store, id, &k) == 0) {
        snprintf(slot->name, sizeof slot->name, "%s", k.name);
        fy_secure_zero(&k, sizeof k);
    }
    return slot->name;
}

static void totals_add(fy_traffic_totals *tt, const fy_accesslog_entry *e)
{
    tt->requests++;
    tt->prompt_tokens += e->prompt_tokens > 0 ? (uint64_t)e->prompt_tokens : 0;
    tt->completion_tokens += e->completion_tokens > 0 ? (uint64_t)e->completion_tokens : 0;
    if (e->status >= 400 && e->status < 600) {
        tt->by_status[e->status - 400]++;
    }
}

static void rec_fill(fy_traffic *t, tr_rec *r, const fy_reqdone *d)
{
    const fy_accesslog_entry *e = d->e;
    free(r->heads);
    memset(r, 0, sizeof *r);
    r->seq = ++t->seq;
    if (e->request_id && strlen(e->request_id) == 16) {
        memcpy(r->id, e->request_id, 17);
    } else {
        uint8_t rnd[8];
        fy_random_bytes(rnd, sizeof rnd);
        fy_hex_encode(rnd, sizeof rnd, r->id, sizeof r->id);
    }
    r->time_ms = e->time_ms;
    r->status = e->status;
    r->latency_ms = e->latency_ms;
    r->prompt_tokens = e->prompt_tokens;
    r->completion_tokens = e->completion_tokens;
    r->kind = d->kind;
    snprintf(r->key_id, sizeof r->key_id, "%s", e->key_id ? e->key_id : "");
    if (e->key_id) {
        snprintf(r->key_name, sizeof r->key_name, "%s", key_name(t, e->key_id, e->time_ms / 1000));
    }
    snprintf(r->runner, sizeof r->runner, "%s", e->runner ? e->runner : "");
    snprintf(r->model, sizeof r->model, "%s", e->model ? e->model : "");
    snprintf(r->method, sizeof r->method, "%s", e->method ? e->method : "");
    path_copy(r->path, sizeof r->path, e->path ? e->path : "");
    r->verified = d->verified;
    r->hook_state = d->hook_state;
    snprintf(r->hook_id, sizeof r->hook_id, "%s", d->hook_id ? d->hook_id : "");
    snprintf(r->delivery_id, sizeof r->delivery_id, "%s", d->delivery_id ? d->delivery_id : "");
    fy_buf b;
    fy_buf_init(&b, FY_TRAFFIC_HEADERS_MAX);
    r->n_req = heads_put(&b, d->req_h, d->n_req_h);
    r->n_resp = heads_put(&b, d->resp_h, d->n_resp_h);
    r->heads = b.data;
}

static json_t *str_or_null(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

static json_t *count_or_null(int64_t n)
{
    return n >= 0 ? json_integer((json_int_t)n) : json_null();
}

static json_t *rec_json(const tr_rec *r)
{
    return json_pack("{s:s,s:I,s:o,s:o,s:o,s:o,s:s,s:s,s:i,s:f,s:o,s:o,s:s}", "id", r->id, "time",
                     (json_int_t)r->time_ms, "key_id", str_or_null(r->key_id), "key_name",
                     str_or_null(r->key_name), "runner", str_or_null(r->runner), "model",
                     str_or_null(r->model), "method", r->method, "path", r->path, "status",
                     r->status, "latency_ms", (double)(int64_t)(r->latency_ms * 10 + 0.5) / 10,
                     "prompt_tokens", count_or_null(r->prompt_tokens), "completion_tokens",
                     count_or_null(r->completion_tokens), "kind", r->kind);
}

/* A webhook request as one of its hook's deliveries. */
static json_t *delivery_json(const tr_rec *r)
{
    int queued = r->hook_state && strcmp(r->hook_state, "queued") == 0;
    return json_pack("{s:s,s:s,s:I,s:o,s:o,s:o,s:s,s:i,s:n,s:b}", "id",
                     r->delivery_id[0] ? r->delivery_id : r->id, "request_id", r->id, "time",
                     (json_int_t)r->time_ms, "status", json_integer(r->status), "latency_ms",
                     json_real((double)(int64_t)(r->latency_ms * 10 + 0.5) / 10), "verified",
                     r->verified ? json_string(r->verified) : json_null(), "state",
                     r->hook_state ? r->hook_state : "refused", "attempts", queued ? 0 : 1,
                     "replay_of", "captured", 0);
}

/* --- the stream ------------------------------------------------------------------- */

/* Writes TEXT to every stream, ending those that fell behind. */
static void streams_send(fy_traffic *t, const char *text, size_t len)
{
    for (size_t i = t->n_streams; i-- > 0;) {
        fy_http_req *req = t->streams[i];
        int rc = fy_http_res_writable(req) ? fy_http_res_write(req, text, len) : FY_EAGAIN;
        /* A failed write may have ended the stream already (its abort callback). */
        if (rc < 0 && i < t->n_streams && t->streams[i] == req) {
            stream_drop(t, i);
        }
    }
}

static void on_ping(uv_timer_t *timer)
{
    fy_traffic *t = timer->data;
    streams_send(t, ": ping\n\n", 8);
}

void fy_traffic_add(const fy_reqdone *d, void *arg)
{
    fy_traffic *t = arg;
    tr_rec *r = &t->ring[t->seq % FY_TRAFFIC_RING];
    rec_fill(t, r, d);
    totals_add(&t->totals, d->e);
    if (!t->n_streams) {
        return;
    }
    json_t *o = rec_json(r);
    char *js = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(12)) : NULL;
    json_decref(o);
    if (!js) {
        return;
    }
    size_t n = strlen(js);
    char *ev = malloc(n + 32);
    if (ev) {
        int len = snprintf(ev, n + 32, "event: request\ndata: %s\n\n", js);
        streams_send(t, ev, (size_t)len);
        free(ev);
    }
    free(js);
}

static void stream_aborted(fy_http_req *req, int status, void *arg)
{
    fy_traffic *t = arg;
    for (size_t i = 0; i < t->n_streams; i++) {
        if (t->streams[i] == req) {
            stream_drop(t, i);
            return;
        }
    }
}

static void stream_open(fy_traffic *t, fy_http_req *req)
{
    if (t->n_streams >= FY_TRAFFIC_MAX_STREAMS) {
        fy_http_respond_error(req, 503, "too_many_streams",
                              "too many live traffic streams are open: close one first");
        return;
    }
    fy_http_header h[] = {{"Content-Type", "text/event-stream", 0, 0},
                          {"Cache-Control", "no-cache", 0, 0},
                          {"X-Accel-Buffering", "no", 0, 0}};
    if (fy_http_res_start(req, 200, h, 3, -1)) {
        fy_http_res_abort(req);
        return;
    }
    /* The first bytes tell the client the stream is live. */
    if (fy_http_res_write(req, ": live\n\n", 8) < 0) {
        fy_http_res_abort(req);
        return;
    }
    t->streams[t->n_streams++] = req;
    fy_http_req_on_abort(req, stream_aborted, t);
    if (!uv_is_active((uv_handle_t *)&t->ping)) {
        uv_timer_start(&t->ping, on_ping, FY_TRAFFIC_PING_MS, FY_TRAFFIC_PING_MS);
    }
}

/* --- the list and one record --------------------------------------------------------- */

typedef struct {
    long limit;
    char key[FY_STORE_KEY_NAME_MAX], model[FY_GW_V1_MODEL_MAX], runner[FY_STORE_NAME_MAX];
    int status, status_class; /* exact code, or 2 for 2xx...; 0: any */
} tr_filter;

/* One query parameter NAME into OUT (CAP bytes): 0 when fine (absent or
 * fitting), else FY_ETOOBIG. */
static int param(const char *q, const char *name, char *out, size_t cap)
{
    char buf[TR_QUERY_MAX + 2];
    if (!fy_gw_query_get(q, name, buf, sizeof buf)) {
        out[0] = '\0';
        return 0;
    }
    if (strlen(buf) >= cap || strlen(buf) > TR_QUERY_MAX) {
        return FY_ETOOBIG;
    }
    memcpy(out, buf, strlen(buf) + 1);
    return 0;
}

static const char *filter_parse(const char *q, tr_filter *f)
{
    char lim[8], st[8];
    memset(f, 0, sizeof *f);
    f->limit = 100;
    if (param(q, "limit", lim, sizeof lim) || param(q, "status", st, sizeof st) ||
        param(q, "key", f->key, sizeof f->key) || param(q, "model", f->model, sizeof f->model) ||
        param(q, "runner", f->runner, sizeof f->runner)) {
        return "a query parameter is too long";
    }
    if (lim[0]) {
        char *end;
        f->limit = strtol(lim, &end, 10);
        if (*end || end == lim || f->limit < 1 || f->limit > FY_TRAFFIC_RING) {
            return "\"limit\" must be a whole number from 1 to 1000";
        }
    }
    if (st[0]) {
        if (strlen(st) == 3 && st[0] >= '1' && st[0] <= '5' && strcmp(st + 1, "xx") == 0) {
            f->status_class = st[0] - '0';
        } else if (strlen(st) == 3 && strspn(st, "0123456789") == 3 && st[0] >= '1' &&
                   st[0] <= '5') {
            f->status = atoi(st);
        } else {
            return "\"status\" must be a status code (200) or a class (2xx, 4xx, 5xx)";
        }
    }
    return NULL;
}

static int filter_match(const tr_filter *f, const tr_rec *r)
{
    return (!f->key[0] || strcmp(f->key, r->key_id) == 0 || strcmp(f->key, r->key_name) == 0) &&
           (!f->model[0] || strcmp(f->model, r->model) == 0) &&
           (!f->runner[0] || strcmp(f->runner, r->runner) == 0) &&
           (!f->status || f->status == r->status) &&
           (!f->status_class || f->status_class == r->status / 100);
}

static void respond(fy_http_req *req, json_t *o)
{
    fy_gw_respond_json(req, 200, o);
}

static void traffic_list(fy_traffic *t, fy_http_req *req)
{
    tr_filter f;
    const char *bad = filter_parse(fy_http_req_query(req), &f);
    if (bad) {
        fy_http_respond_error(req, 400, "invalid_request", bad);
        return;
    }
    json_t *a = json_array();
    for (uint64_t s = t->seq, n = 0; s > 0 && t->seq - s < FY_TRAFFIC_RING && n < (uint64_t)f.limit;
         s--) {
        const tr_rec *r = &t->ring[(s - 1) % FY_TRAFFIC_RING];
        if (r->seq == s && filter_match(&f, r)) {
            json_array_append_new(a, rec_json(r));
            n++;
        }
    }
    respond(req, json_pack("{s:o}", "requests", a));
}

void fy_traffic_deliveries(fy_traffic *t, fy_http_req *req, const char *hook_id)
{
    char lim[8];
    long limit = 100;
    if (param(fy_http_req_query(req), "limit", lim, sizeof lim)) {
        lim[0] = 'x';
        lim[1] = '\0';
    }
    if (lim[0]) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || end == lim || limit < 1 || limit > FY_TRAFFIC_RING) {
            fy_http_respond_error(req, 400, "invalid_request",
                                  "\"limit\" must be a whole number from 1 to 1000");
            return;
        }
    }
    json_t *a = json_array();
    for (uint64_t s = t->seq, n = 0; s > 0 && t->seq - s < FY_TRAFFIC_RING && n < (uint64_t)limit;
         s--) {
        const tr_rec *r = &t->ring[(s - 1) % FY_TRAFFIC_RING];
        if (r->seq == s && strcmp(r->hook_id, hook_id) == 0) {
            json_array_append_new(a, delivery_json(r));
            n++;
        }
    }
    respond(req, json_pack("{s:o}", "deliveries", a));
}

static json_t *heads_json(const char **p, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        const char *name = *p, *v = name + strlen(name) + 1;
        json_array_append_new(a, json_pack("[s,s]", name, v));
        *p = v + strlen(v) + 1;
    }
    return a;
}

static void traffic_one(fy_traffic *t, fy_http_req *req, const char *id)
{
    for (size_t i = 0; i < FY_TRAFFIC_RING; i++) {
        const tr_rec *r = &t->ring[i];
        if (r->seq && strcmp(r->id, id) == 0) {
            json_t *o = rec_json(r);
            const char *p = r->heads;
            json_object_set_new(o, "request_headers", heads_json(&p, r->n_req));
            json_object_set_new(o, "response_headers", heads_json(&p, r->n_resp));
            respond(req, o);
            return;
        }
    }
    fy_http_respond_error(req, 404, "not_found",
                          "no such request among the last 1000 (ids are 16 hex digits)");
}

void fy_traffic_request(fy_traffic *t, fy_http_req *req)
{
    const char *path = fy_http_req_path(req) + strlen("/admin/v1/traffic");
    if (strcmp(fy_http_req_method(req), "GET") != 0) {
        fy_http_respond_error(req, 405, "method_not_allowed", "the live traffic is read-only");
    } else if (*path == '\0') {
        traffic_list(t, req);
    } else if (strcmp(path, "/stream") == 0) {
        stream_open(t, req);
    } else if (strlen(path) == 17 && strspn(path + 1, "0123456789abcdef") == 16) {
        traffic_one(t, req, path + 1);
    } else {
        fy_http_respond_error(req, 404, "not_found", "no such traffic route");
    }
}
