#include "gateway/metrics.h"

#include "common/err.h"
#include "common/log.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM } metric_kind;

typedef struct {
    char **values;  /* one per label */
    double value;   /* counter, gauge; histogram: sum */
    uint64_t count; /* histogram: observations */
    uint64_t *hits; /* histogram: per bucket (not cumulative), nbuckets + 1 */
} series;

struct fy_metric {
    fy_metrics *reg;
    metric_kind kind;
    char *name, *help;
    size_t nlabels;
    char *labels[FY_METRICS_MAX_LABELS];
    size_t nbuckets;
    double bounds[FY_METRICS_MAX_BUCKETS];
    series **series;
    size_t nseries, capseries;
    int warned;
};

struct fy_metrics {
    pthread_mutex_t mu;
    fy_metric **fams;
    size_t nfams, capfams;
};

/* --- validation -------------------------------------------------------------------- */

static int valid_name(const char *s, int colon)
{
    if (!s || !*s || (*s >= '0' && *s <= '9')) {
        return 0;
    }
    for (; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || (colon && c == ':'))) {
            return 0;
        }
    }
    return 1;
}

static int is_b64url(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* A label value is refused when it is too long or has the shape of a secret
 * (a long run of base64url, as in "fy_..." keys and tokens). */
static int valid_value(const char *v)
{
    if (!v) {
        return 0;
    }
    size_t run = 0, n = 0;
    for (; v[n]; n++) {
        run = is_b64url(v[n]) ? run + 1 : 0;
        if (run >= 40 || n + 1 >= FY_METRICS_LABEL_VALUE_MAX) {
            return 0;
        }
    }
    return 1;
}

/* --- registry ------------------------------------------------------------------------ */

fy_metrics *fy_metrics_new(void)
{
    fy_metrics *m = calloc(1, sizeof *m);
    if (m) {
        pthread_mutex_init(&m->mu, NULL);
    }
    return m;
}

static void series_free(series *s, size_t nlabels)
{
    if (!s) {
        return;
    }
    for (size_t i = 0; s->values && i < nlabels; i++) {
        free(s->values[i]);
    }
    free(s->values);
    free(s->hits);
    free(s);
}

static void family_free(fy_metric *f)
{
    if (!f) {
        return;
    }
    for (size_t i = 0; i < f->nseries; i++) {
        series_free(f->series[i], f->nlabels);
    }
    free(f->series);
    for (size_t i = 0; i < f->nlabels; i++) {
        free(f->labels[i]);
    }
    free(f->name);
    free(f->help);
    free(f);
}

void fy_metrics_free(fy_metrics *m)
{
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->nfams; i++) {
        family_free(m->fams[i]);
    }
    free(m->fams);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* The series with VALUES, created when absent. Lock held. */
static int series_get(fy_metric *f, const char *const *values, series **out)
{
    for (size_t i = 0; i < f->nlabels; i++) {
        if (!values || !valid_value(values[i])) {
            return FY_EINVAL;
        }
    }
    for (size_t i = 0; i < f->nseries; i++) {
        series *s = f->series[i];
        size_t j = 0;
        while (j < f->nlabels && strcmp(s->values[j], values[j]) == 0) {
            j++;
        }
        if (j == f->nlabels) {
            *out = s;
            return 0;
        }
    }
    if (f->nseries >= FY_METRICS_MAX_SERIES) {
        if (!f->warned) {
            f->warned = 1;
            FY_WARN("metrics", "%s: more than %d label sets; further ones are dropped", f->name,
                    FY_METRICS_MAX_SERIES);
        }
        return FY_ELIMIT;
    }
    if (f->nseries == f->capseries) {
        size_t cap = f->capseries ? f->capseries * 2 : 8;
        series **p = realloc(f->series, cap * sizeof *p);
        if (!p) {
            return FY_ENOMEM;
        }
        f->series = p;
        f->capseries = cap;
    }
    series *s = calloc(1, sizeof *s);
    if (!s) {
        return FY_ENOMEM;
    }
    if ((f->nlabels && !(s->values = calloc(f->nlabels, sizeof *s->values))) ||
        (f->kind == KIND_HISTOGRAM && !(s->hits = calloc(f->nbuckets + 1, sizeof *s->hits)))) {
        series_free(s, f->nlabels);
        return FY_ENOMEM;
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        if (!(s->values[i] = strdup(values[i]))) {
            series_free(s, f->nlabels);
            return FY_ENOMEM;
        }
    }
    f->series[f->nseries++] = s;
    *out = s;
    return 0;
}

static fy_metric *family_new(fy_metrics *m, metric_kind k, const char *name, const char *help,
                             size_t nlabels, const char *const *labels, size_t nbuckets,
                             const double *bounds)
{
    if (!m || !valid_name(name, 1) || nlabels > FY_METRICS_MAX_LABELS || (nlabels && !labels) ||
        nbuckets > FY_METRICS_MAX_BUCKETS || (k == KIND_HISTOGRAM && (nbuckets == 0 || !bounds))) {
        return NULL;
    }
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
            (k == KIND_HISTOGRAM && strcmp(labels[i], "le") == 0)) {
            return NULL;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[i], labels[j]) == 0) {
                return NULL;
            }
        }
    }
    for (size_t i = 0; i < nbuckets; i++) {
        if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1])) {
            return NULL;
        }
    }
    fy_metric *f = calloc(1, sizeof *f);
    if (!f) {
        return NULL;
    }
    f->reg = m;
    f->kind = k;
    f->nlabels = nlabels;
    f->nbuckets = nbuckets;
    if (nbuckets) {
        memcpy(f->bounds, bounds, nbuckets * sizeof *bounds);
    }
    int bad = !(f->name = strdup(name)) || !(f->help = strdup(help ? help : ""));
    for (size_t i = 0; i < nlabels && !bad; i++) {
        bad = !(f->labels[i] = strdup(labels[i]));
    }
    if (bad) {
        family_free(f);
        return NULL;
    }
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfams; i++) {
        /* Family names are unique in a registry. */
        if (strcmp(m->fams[i]->name, name) == 0) {
            bad = 1;
        }
    }
    if (!bad && m->nfams == m->capfams) {
        size_t cap = m->capfams ? m->capfams * 2 : 16;
        fy_metric **p = realloc(m->fams, cap * sizeof *p);
        if (p) {
            m->fams = p;
            m->capfams = cap;
        } else {
            bad = 1;
        }
    }
    series *s;
    if (!bad && nlabels == 0 && series_get(f, NULL, &s)) {
        bad = 1;
    }
    if (!bad) {
        m->fams[m->nfams++] = f;
    }
    pthread_mutex_unlock(&m->mu);
    if (bad) {
        family_free(f);
        return NULL;
    }
    return f;
}

fy_metric *fy_metrics_counter(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                              const char *const *labels)
{
    return family_new(m, KIND_COUNTER, name, help, nlabels, labels, 0, NULL);
}

fy_metric *fy_metrics_gauge(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                            const char *const *labels)
{
    return family_new(m, KIND_GAUGE, name, help, nlabels, labels, 0, NULL);
}

fy_metric *fy_metrics_histogram(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                                const char *const *labels, size_t nbuckets, const double *bounds)
{
    return family_new(m, KIND_HISTOGRAM, name, help, nlabels, labels, nbuckets, bounds);
}

/* --- updates --------------------------------------------------------------------------- */

typedef enum { OP_ADD, OP_SET, OP_OBSERVE, OP_TOUCH } op;

static int update(fy_metric *f, const char *const *values, double v, op o)
{
    if (!f || isnan(v)) {
        return FY_EINVAL;
    }
    switch (o) {
    case OP_ADD:
        if (f->kind == KIND_HISTOGRAM || (f->kind == KIND_COUNTER && !(v >= 0))) {
            return FY_EINVAL;
        }
        break;
    case OP_SET:
        if (f->kind != KIND_GAUGE) {
            return FY_EINVAL;
        }
        break;
    case OP_OBSERVE:
        if (f->kind != KIND_HISTOGRAM) {
            return FY_EINVAL;
        }
        break;
    case OP_TOUCH:
        break;
    }
    pthread_mutex_lock(&f->reg->mu);
    series *s;
    int rc = series_get(f, values, &s);
    if (!rc) {
        switch (o) {
        case OP_ADD:
            s->value += v;
            break;
        case OP_SET:
            s->value = v;
            break;
        case OP_OBSERVE: {
            size_t b = 0;
            while (b < f->nbuckets && v > f->bounds[b]) {
                b++;
            }
            s->hits[b]++;
            s->count++;
            s->value += v;
            break;
        }
        case OP_TOUCH:
            break;
        }
    }
    pthread_mutex_unlock(&f->reg->mu);
    return rc;
}

int fy_metric_add(fy_metric *f, const char *const *values, double v)
{
    return update(f, values, v, OP_ADD);
}

int fy_metric_set(fy_metric *f, const char *const *values, double v)
{
    return update(f, values, v, OP_SET);
}

int fy_metric_observe(fy_metric *f, const char *const *values, double v)
{
    return update(f, values, v, OP_OBSERVE);
}

int fy_metric_touch(fy_metric *f, const char *const *values)
{
    return update(f, values, 0, OP_TOUCH);
}

double fy_metric_value(fy_metric *f, const char *const *values)
{
    double v = 0;
    pthread_mutex_lock(&f->reg->mu);
    for (size_t i = 0; i < f->nseries; i++) {
        series *s = f->series[i];
        size_t j = 0;
        while (j < f->nlabels && values && strcmp(s->values[j], values[j]) == 0) {
            j++;
        }
        if (j == f->nlabels) {
            v = f->kind == KIND_HISTOGRAM ? (double)s->count : s->value;
            break;
        }
    }
    pthread_mutex_unlock(&f->reg->mu);
    return v;
}

/* --- rendering ------------------------------------------------------------------------- */

/* The shortest text that reads back as V (Prometheus parses Go floats). */
static void fmt_double(double v, char out[32])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
    } else if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(out, 32, "%.*g", prec, v);
            if (strtod(out, NULL) == v) {
                break;
            }
        }
    }
}

/* Escapes HELP text (backslash, newline) or a label value (also '"'). */
static int append_escaped(fy_buf *b, const char *s, int quote)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        if (*s == '\\') {
            rc = fy_buf_append(b, "\\\\", 2);
        } else if (*s == '\n') {
            rc = fy_buf_append(b, "\\n", 2);
        } else if (quote && *s == '"') {
            rc = fy_buf_append(b, "\\\"", 2);
        } else {
            rc = fy_buf_append(b, s, 1);
        }
    }
    return rc;
}

/* "name<suffix>{a="x",b="y"[,le="..."]} " */
static int append_sample_head(fy_buf *b, const fy_metric *f, const series *s, const char *suffix,
                              const char *le)
{
    int rc = fy_buf_append_str(b, f->name);
    if (!rc) {
        rc = fy_buf_append_str(b, suffix);
    }
    if (!rc && (f->nlabels || le)) {
        rc = fy_buf_append(b, "{", 1);
        for (size_t i = 0; i < f->nlabels && !rc; i++) {
            rc = fy_buf_appendf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
            if (!rc) {
                rc = append_escaped(b, s->values[i], 1);
            }
            if (!rc) {
                rc = fy_buf_append(b, "\"", 1);
            }
        }
        if (!rc && le) {
            rc = fy_buf_appendf(b, "%sle=\"%s\"", f->nlabels ? "," : "", le);
        }
        if (!rc) {
            rc = fy_buf_append(b, "}", 1);
        }
    }
    if (!rc) {
        rc = fy_buf_append(b, " ", 1);
    }
    return rc;
}

static int render_family(fy_buf *b, const fy_metric *f)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    char num[32];
    int rc = fy_buf_appendf(b, "# HELP %s ", f->name);
    if (!rc) {
        rc = append_escaped(b, f->help, 0);
    }
    if (!rc) {
        rc = fy_buf_appendf(b, "\n# TYPE %s %s\n", f->name, types[f->kind]);
    }
    for (size_t i = 0; i < f->nseries && !rc; i++) {
        const series *s = f->series[i];
        if (f->kind != KIND_HISTOGRAM) {
            fmt_double(s->value, num);
            rc = append_sample_head(b, f, s, "", NULL);
            if (!rc) {
                rc = fy_buf_appendf(b, "%s\n", num);
            }
            continue;
        }
        uint64_t cum = 0;
        for (size_t j = 0; j <= f->nbuckets && !rc; j++) {
            cum += s->hits[j];
            if (j < f->nbuckets) {
                fmt_double(f->bounds[j], num);
            } else {
                strcpy(num, "+Inf");
            }
            rc = append_sample_head(b, f, s, "_bucket", num);
            if (!rc) {
                rc = fy_buf_appendf(b, "%llu\n", (unsigned long long)cum);
            }
        }
        fmt_double(s->value, num);
        if (!rc) {
            rc = append_sample_head(b, f, s, "_sum", NULL);
        }
        if (!rc) {
            rc = fy_buf_appendf(b, "%s\n", num);
        }
        if (!rc) {
            rc = append_sample_head(b, f, s, "_count", NULL);
        }
        if (!rc) {
            rc = fy_buf_appendf(b, "%llu\n", (unsigned long long)s->count);
        }
    }
    return rc;
}

int fy_metrics_render(fy_metrics *m, fy_buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfams && !rc; i++) {
        rc = render_family(out, m->fams[i]);
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* --- the gateway's metrics ----------------------------------------------------------- */

int fy_metrics_gw_init(fy_metrics_gw *g)
{
    static const double lat[] = FY_METRICS_GW_LATENCY_BUCKETS;
    static const char *const route_status[] = {"route", "status"};
    static const char *const route[] = {"route"};
    static const char *const kindl[] = {"kind"};
    static const char *const reason[] = {"reason"};
    static const char *const rl_kinds[] = {"requests", "tokens", "concurrency"};
    static const char *const reasons[] = {"missing",          "malformed",     "unknown",
                                          "revoked",          "expired",       "forbidden_model",
                                          "forbidden_runner", "forbidden_hook"};
    static const char *const token_kinds[] = {"prompt", "completion"};
    const size_t nlat = sizeof lat / sizeof lat[0];

    memset(g, 0, sizeof *g);
    fy_metrics *m = g->reg = fy_metrics_new();
    if (!m) {
        return FY_ENOMEM;
    }
    g->requests =
        fy_metrics_counter(m, "ferry_requests_total",
                           "Public requests answered, by route and HTTP status.", 2, route_status);
    g->duration = fy_metrics_histogram(m, "ferry_request_duration_seconds",
                                       "Time from the request head to the end of the response.", 1,
                                       route, nlat, lat);
    g->ttfb = fy_metrics_histogram(m, "ferry_request_ttfb_seconds",
                                   "Time from the request head to the first response byte.", 1,
                                   route, nlat, lat);
    g->bytes_received =
        fy_metrics_counter(m, "ferry_bytes_received_total",
                           "Request body bytes received from public clients.", 1, route);
    g->bytes_sent = fy_metrics_counter(m, "ferry_bytes_sent_total",
                                       "Response body bytes sent to public clients.", 1, route);
    g->tokens =
        fy_metrics_counter(m, "ferry_tokens_total",
                           "Tokens reported by runners, by kind (prompt, completion).", 1, kindl);
    g->active_streams = fy_metrics_gauge(m, "ferry_active_streams",
                                         "Requests being proxied to runners right now.", 0, NULL);
    g->connected_runners = fy_metrics_gauge(
        m, "ferry_connected_runners", "Runners with at least one tunnel connection.", 0, NULL);
    g->tunnel_connections = fy_metrics_gauge(m, "ferry_tunnel_connections",
                                             "Open tunnel connections from runners.", 0, NULL);
    g->waiting = fy_metrics_gauge(
        m, "ferry_waiting_requests",
        "/v1 requests waiting for a runner serving their model (all at their stream limit).", 0,
        NULL);
    g->ratelimited =
        fy_metrics_counter(m, "ferry_ratelimit_rejections_total",
                           "Requests refused with 429, by the limit that refused them.", 1, kindl);
    g->auth_failures =
        fy_metrics_counter(m, "ferry_auth_failures_total",
                           "Requests refused by API key checks, by reason.", 1, reason);
    static const char *const hook_outcome[] = {"hook", "outcome"};
    static const char *const hook_result[] = {"hook", "result"};
    g->hook_requests = fy_metrics_counter(
        m, "ferry_hook_requests_total",
        "Webhook requests by hook id and outcome (forwarded, queued, or why refused).", 2,
        hook_outcome);
    g->hook_deliveries = fy_metrics_counter(
        m, "ferry_hook_deliveries_total",
        "Async webhook delivery attempts by hook id and result (delivered, retry, dead).", 2,
        hook_result);
    g->shared_up = fy_metrics_gauge(
        m, "ferry_shared_up",
        "1 while the shared state (--shared, Redis) is reachable; 0 when it is down or unused.", 0,
        NULL);
    g->shared_replicas =
        fy_metrics_gauge(m, "ferry_shared_replicas",
                         "Gateway replicas alive at the last heartbeat (--shared).", 0, NULL);
    g->shared_local = fy_metrics_counter(
        m, "ferry_shared_local_admissions_total",
        "Requests admitted or refused by this replica's own limiter at limit / replicas, "
        "because the shared state was unreachable.",
        0, NULL);
    if (!g->requests || !g->duration || !g->ttfb || !g->bytes_received || !g->bytes_sent ||
        !g->tokens || !g->active_streams || !g->connected_runners || !g->tunnel_connections ||
        !g->waiting || !g->ratelimited || !g->auth_failures || !g->hook_requests ||
        !g->hook_deliveries || !g->shared_up || !g->shared_replicas || !g->shared_local) {
        fy_metrics_gw_close(g);
        return FY_ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < sizeof rl_kinds / sizeof rl_kinds[0] && !rc; i++) {
        rc = fy_metric_touch(g->ratelimited, &rl_kinds[i]);
    }
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0] && !rc; i++) {
        rc = fy_metric_touch(g->auth_failures, &reasons[i]);
    }
    for (size_t i = 0; i < 2 && !rc; i++) {
        rc = fy_metric_touch(g->tokens, &token_kinds[i]);
    }
    if (rc) {
        fy_metrics_gw_close(g);
    }
    return rc;
}

void fy_metrics_gw_close(fy_metrics_gw *g)
{
    fy_metrics_free(g->reg);
    memset(g, 0, sizeof *g);
}

void fy_metrics_gw_request(fy_metrics_gw *g, const char *route, int status, double seconds,
                           double ttfb_seconds, uint64_t bytes_in, uint64_t bytes_out)
{
    char st[16];
    snprintf(st, sizeof st, "%d", status);
    const char *rs[2] = {route, st};
    fy_metric_add(g->requests, rs, 1);
    fy_metric_observe(g->duration, &route, seconds);
    if (ttfb_seconds >= 0) {
        fy_metric_observe(g->ttfb, &route, ttfb_seconds);
    }
    fy_metric_add(g->bytes_received, &route, (double)bytes_in);
    fy_metric_add(g->bytes_sent, &route, (double)bytes_out);
}

void fy_metrics_gw_auth_failure(fy_metrics_gw *g, const char *reason)
{
    fy_metric_add(g->auth_failures, &reason, 1);
}

void fy_metrics_gw_ratelimited(fy_metrics_gw *g, const char *kind)
{
    fy_metric_add(g->ratelimited, &kind, 1);
}

void fy_metrics_gw_tokens(fy_metrics_gw *g, uint64_t prompt, uint64_t completion)
{
    static const char *const p[] = {"prompt"}, *const c[] = {"completion"};
    fy_metric_add(g->tokens, p, (double)prompt);
    fy_metric_add(g->tokens, c, (double)completion);
}
