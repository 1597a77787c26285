/* upmodels.c: the models an --upstream serves, read from its /v1/models.
 *
 * An OpenAI-compatible server (vLLM, llama.cpp's server, another ferry
 * runner) lists what it serves at GET /v1/models as {"data": [{"id": ...}]}.
 * The runner announces those ids in HELLO so the gateway routes requests to
 * it by their `model`, as it does for a runner with its own engine. The list
 * is read before the tunnel starts, then every refresh_ms; when it changes,
 * the owner (run.c) gives the new one to the tunnel, which reconnects to
 * announce it (a HELLO is sent once per connection).
 *
 * What is announced is bounded the way HELLO bounds it: at most
 * FYP_MAX_MODELS ids, each 1..255 visible ASCII bytes, together small enough
 * for the 16 KiB HELLO. Ids that break a rule are skipped (and counted).
 *
 * Outcomes: a 200 with a model list replaces the list; any other answer (404:
 * a plain HTTP server, or a body that is not a list) empties it, since the
 * upstream then serves no model by name; a read that fails (refused, timed
 * out) keeps the last list, as an upstream restarting still serves the same
 * models. Each kind of outcome is logged once, when it changes, so a plain
 * upstream without /v1/models costs one info line, not one a minute. */
#include "runner/runner.h"

#include "common/err.h"
#include "common/log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UM_DEFAULT_TIMEOUT_MS 5000

typedef enum { UM_NONE = 0, UM_LISTED, UM_NO_LIST, UM_FAILED } um_state;

struct fy_rn_models {
    uv_loop_t *loop;
    fy_rn_models_options o;
    char url[700];
    fy_http_client *client;
    fy_http_call *call;
    uv_timer_t timer; /* the read's deadline while one runs, else the next read */
    fy_buf body;
    int status;
    um_state state;
    unsigned ready : 1;   /* the first read ended */
    unsigned closing : 1; /* freed once the timer closed */
    fy_rn_model_list cur, next;
};

/* --- parsing ----------------------------------------------------------------- */

static int id_valid(const char *s, size_t n)
{
    if (n < 1 || n > 255) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) {
            return 0;
        }
    }
    return 1;
}

/* Adds ID to L unless it is there already or over the bounds. Returns 1 when
 * added. */
static int list_add(fy_rn_model_list *l, const char *id, size_t n, size_t *used)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], id) == 0) {
            return 0;
        }
    }
    if (l->n == FYP_MAX_MODELS || *used + n + 1 > sizeof l->text) {
        return 0;
    }
    char *p = l->text + *used;
    memcpy(p, id, n);
    p[n] = '\0';
    l->v[l->n++] = p;
    *used += n + 1;
    return 1;
}

int fy_rn_model_list_parse(const char *body, size_t len, fy_rn_model_list *out, char *err,
                           size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    json_t *data = root && json_is_object(root) ? json_object_get(root, "data") : NULL;
    if (!root || !json_is_array(data)) {
        snprintf(err, errlen, "%s",
                 !root ? "the body is not JSON"
                       : "the body is not an OpenAI model list (no data[])");
        json_decref(root);
        return FY_EPARSE;
    }
    size_t used = 0, i;
    json_t *m;
    json_array_foreach(data, i, m)
    {
        json_t *id = json_is_object(m) ? json_object_get(m, "id") : NULL;
        if (!json_is_string(id) || !id_valid(json_string_value(id), json_string_length(id)) ||
            !list_add(out, json_string_value(id), json_string_length(id), &used)) {
            out->skipped++;
        }
    }
    json_decref(root);
    return 0;
}

static int list_equal(const fy_rn_model_list *a, const fy_rn_model_list *b)
{
    if (a->n != b->n) {
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->v[i], b->v[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

/* DST = SRC, its pointers moved into DST's text. */
static void list_copy(fy_rn_model_list *dst, const fy_rn_model_list *src)
{
    memcpy(dst->text, src->text, sizeof dst->text);
    dst->n = src->n;
    dst->skipped = src->skipped;
    for (size_t i = 0; i < src->n; i++) {
        dst->v[i] = dst->text + (src->v[i] - src->text);
    }
}

/* --- reading ----------------------------------------------------------------- */

static void um_read(fy_rn_models *w);

static void on_refresh(uv_timer_t *tm)
{
    um_read(tm->data);
}

static void um_schedule(fy_rn_models *w)
{
    uv_timer_stop(&w->timer);
    if (w->o.refresh_ms && !w->closing) {
        uv_timer_start(&w->timer, on_refresh, w->o.refresh_ms, 0);
    }
}

static void um_log_state(fy_rn_models *w, um_state st, const char *why)
{
    if (st == w->state && st != UM_LISTED) {
        return;
    }
    w->state = st;
    json_t *f = json_pack("{s:s}", "url", w->url);
    if (st == UM_LISTED) {
        json_t *ids = json_array();
        for (size_t i = 0; i < w->cur.n; i++) {
            json_array_append_new(ids, json_string(w->cur.v[i]));
        }
        json_object_set_new(f, "models", ids);
        if (w->cur.skipped) {
            json_object_set_new(f, "skipped", json_integer((json_int_t)w->cur.skipped));
        }
        fy_log_event(w->cur.skipped ? FY_LOG_WARN : FY_LOG_INFO, "upstream",
                     w->cur.skipped ? "the upstream's models (some ids skipped: invalid, repeated "
                                      "or over the HELLO bounds)"
                                    : "the upstream's models",
                     f);
        return;
    }
    json_object_set_new(f, "reason", json_string(why));
    fy_log_event(FY_LOG_INFO, "upstream",
                 st == UM_NO_LIST ? "the upstream lists no models at /v1/models: announcing none"
                                  : "cannot read the upstream's /v1/models (will retry)",
                 f);
}

/* Makes NEXT the current list; tells the owner when it changed. */
static void um_take(fy_rn_models *w)
{
    if (list_equal(&w->cur, &w->next)) {
        w->cur.skipped = w->next.skipped;
        return;
    }
    list_copy(&w->cur, &w->next);
    if (w->o.on_change) {
        w->o.on_change(w, w->cur.v, w->cur.n, w->o.arg);
    }
}

static void um_finish(fy_rn_models *w, int rc)
{
    char why[200];
    w->call = NULL;
    uv_timer_stop(&w->timer);
    if (rc) {
        snprintf(why, sizeof why, "%s", fy_strerror(rc));
        um_log_state(w, UM_FAILED, why);
    } else if (w->status != 200) {
        snprintf(why, sizeof why, "HTTP status %d", w->status);
        memset(&w->next, 0, sizeof w->next);
        um_take(w);
        um_log_state(w, UM_NO_LIST, why);
    } else if (fy_rn_model_list_parse(w->body.data ? w->body.data : "", w->body.len, &w->next, why,
                                      sizeof why)) {
        um_take(w);
        um_log_state(w, UM_NO_LIST, why);
    } else {
        int changed = !list_equal(&w->cur, &w->next) || w->state != UM_LISTED;
        um_take(w);
        if (changed) {
            um_log_state(w, UM_LISTED, NULL);
        }
    }
    fy_buf_free(&w->body);
    w->ready = 1;
    um_schedule(w);
}

static void call_on_response(fy_http_call *call, const fy_http_response *res, void *arg)
{
    (void)call;
    fy_rn_models *w = arg;
    w->status = res->status;
}

static void call_on_data(fy_http_call *call, const char *data, size_t len, void *arg)
{
    fy_rn_models *w = arg;
    if (fy_buf_append(&w->body, data, len)) {
        fy_http_call_cancel(call);
        um_finish(w, FY_ETOOBIG);
    }
}

static void call_on_done(fy_http_call *call, int status, void *arg)
{
    (void)call;
    um_finish(arg, status);
}

static void on_deadline(uv_timer_t *tm)
{
    fy_rn_models *w = tm->data;
    if (w->call) {
        fy_http_call_cancel(w->call);
        um_finish(w, FY_ETIMEDOUT);
    }
}

static void um_read(fy_rn_models *w)
{
    if (w->closing || w->call) {
        return;
    }
    static const fy_http_header h[] = {{"accept", "application/json", 6, 16}};
    fy_http_call_options co = {
        .method = "GET",
        .url = w->url,
        .headers = h,
        .nheaders = 1,
        .cbs = {.on_response = call_on_response, .on_data = call_on_data, .on_done = call_on_done},
        .arg = w,
    };
    w->status = 0;
    fy_buf_init(&w->body, FY_RN_MODELS_MAX_BODY);
    int rc = fy_http_call_start(w->client, &co, &w->call);
    if (rc) {
        um_finish(w, rc);
        return;
    }
    uv_timer_stop(&w->timer);
    uv_timer_start(&w->timer, on_deadline, w->o.timeout_ms, 0);
}

/* --- the watcher ----------------------------------------------------------------- */

int fy_rn_models_new(uv_loop_t *loop, const fy_rn_models_options *o, fy_rn_models **out)
{
    *out = NULL;
    if (!o->base || !*o->base) {
        return FY_EINVAL;
    }
    fy_rn_models *w = calloc(1, sizeof *w);
    if (!w) {
        return FY_ENOMEM;
    }
    w->loop = loop;
    w->o = *o;
    if (!w->o.timeout_ms) {
        w->o.timeout_ms = UM_DEFAULT_TIMEOUT_MS;
    }
    int n = snprintf(w->url, sizeof w->url, "%s/v1/models", o->base);
    if (n < 0 || (size_t)n >= sizeof w->url) {
        free(w);
        return FY_EINVAL;
    }
    fy_http_client_options co = {
        .connect_timeout_ms = w->o.timeout_ms,
        .read_timeout_ms = w->o.timeout_ms,
        .max_idle = 1,
    };
    int rc = fy_http_client_new(loop, &co, &w->client);
    if (rc) {
        free(w);
        return rc;
    }
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    *out = w;
    um_read(w);
    return 0;
}

int fy_rn_models_ready(const fy_rn_models *w)
{
    return w->ready;
}

size_t fy_rn_models_get(const fy_rn_models *w, const char *const **models)
{
    *models = w->cur.v;
    return w->cur.n;
}

static void um_closed(uv_handle_t *h)
{
    free(h->data);
}

void fy_rn_models_free(fy_rn_models *w)
{
    if (!w || w->closing) {
        return;
    }
    w->closing = 1;
    if (w->call) {
        fy_http_call_cancel(w->call);
        w->call = NULL;
    }
    fy_buf_free(&w->body);
    fy_http_client_close(w->client);
    uv_close((uv_handle_t *)&w->timer, um_closed);
}
