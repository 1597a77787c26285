/* metrics.h: a small Prometheus registry (counters, gauges, histograms with
 * a fixed set of labels and fixed buckets) rendered in the text exposition
 * format 0.0.4, and the gateway's own metrics.
 *
 * Integration:
 *   gateway/run.c:    fy_metrics_gw_init(&gw->metrics) at start-up,
 *                     fy_metrics_gw_close at exit;
 *   gateway/admin.c:  GET /metrics (admin listener only):
 *                       fy_buf b; fy_buf_init(&b, FY_METRICS_MAX_TEXT);
 *                       fy_metrics_render(gw->metrics.reg, &b);
 *                       respond 200, Content-Type FY_METRICS_CONTENT_TYPE;
 *   gateway/px.c:     when a request ends:
 *                       fy_metrics_gw_request(&gw->metrics, route, status,
 *                                             seconds, ttfb_seconds, in, out);
 *                     on a failed check: fy_metrics_gw_auth_failure(..,
 *                       fy_auth_reason(o)); on a 429:
 *                       fy_metrics_gw_ratelimited(.., fy_rl_kind_name(kind));
 *                     fy_metric_add(gw->metrics.active_streams, NULL, +1/-1)
 *                     around a proxied stream; tokens from the usage trailer
 *                     with fy_metrics_gw_tokens;
 *   gateway/tunnel.c: fy_metric_add(gw->metrics.tunnel_connections, NULL,
 *                     +1/-1) per tunnel connection, .connected_runners per
 *                     runner that has at least one.
 *
 * Labels: a family has a fixed list of label names; every update passes
 * exactly that many values. Label values must come from small, bounded sets
 * chosen by the gateway (a route name, a status code, a limit kind): never
 * a raw path, a key, a token or anything a stranger chose. As a backstop,
 * values containing a run of 40 or more base64url characters (the shape of
 * a secret) are refused, and a family holds at most FY_METRICS_MAX_SERIES
 * label combinations.
 *
 * Threads: every function may be called from any thread (one mutex per
 * registry). Families live as long as the registry. */
#ifndef FY_GATEWAY_METRICS_H
#define FY_GATEWAY_METRICS_H

#include "common/buf.h"

#include <stddef.h>
#include <stdint.h>

#define FY_METRICS_MAX_LABELS      4
#define FY_METRICS_MAX_BUCKETS     32
#define FY_METRICS_MAX_SERIES      256       /* label combinations per family */
#define FY_METRICS_LABEL_VALUE_MAX 128       /* bytes; longer values are refused */
#define FY_METRICS_MAX_TEXT        (4 << 20) /* cap for a rendered page */
#define FY_METRICS_CONTENT_TYPE    "text/plain; version=0.0.4; charset=utf-8"

typedef struct fy_metrics fy_metrics;
typedef struct fy_metric fy_metric; /* one family */

fy_metrics *fy_metrics_new(void);
void fy_metrics_free(fy_metrics *m); /* NULL is ok */

/* Registers a family. NAME: [a-zA-Z_:][a-zA-Z0-9_:]*; LABELS[0..NLABELS):
 * [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__" and not "le"; HELP: any
 * text (escaped on output). Histograms take NBUCKETS strictly increasing
 * finite upper bounds (+Inf is implicit). A family without labels starts
 * with its one series at 0. Returns NULL on a bad argument, a duplicate
 * name or out of memory. All strings are copied. */
fy_metric *fy_metrics_counter(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                              const char *const *labels);
fy_metric *fy_metrics_gauge(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                            const char *const *labels);
fy_metric *fy_metrics_histogram(fy_metrics *m, const char *name, const char *help, size_t nlabels,
                                const char *const *labels, size_t nbuckets, const double *bounds);

/* Updates the series with label VALUES (as many as the family's labels;
 * NULL when it has none), creating it at 0 on first use.
 *   add:     counters (V >= 0) and gauges (any V);
 *   set:     gauges;
 *   observe: histograms.
 * Returns 0, FY_EINVAL (wrong kind, negative counter increment, NaN, bad or
 * secret-looking value) or FY_ELIMIT (FY_METRICS_MAX_SERIES reached; the
 * update is dropped and a warning logged once per family) or FY_ENOMEM. */
int fy_metric_add(fy_metric *f, const char *const *values, double v);
int fy_metric_set(fy_metric *f, const char *const *values, double v);
int fy_metric_observe(fy_metric *f, const char *const *values, double v);

/* Creates the series for VALUES at 0 without changing it, so it is
 * exported before its first event (useful for rate()). Returns as add. */
int fy_metric_touch(fy_metric *f, const char *const *values);

/* Current value of a counter or gauge series (0 when it does not exist);
 * for histograms, the number of observations. For tests and the admin API. */
double fy_metric_value(fy_metric *f, const char *const *values);

/* Appends the whole registry to OUT in the text exposition format: per
 * family "# HELP", "# TYPE", then its series in creation order. Returns 0,
 * FY_ETOOBIG (OUT's cap) or FY_ENOMEM; OUT may hold a partial page then. */
int fy_metrics_render(fy_metrics *m, fy_buf *out);

/* --- the gateway's metrics ------------------------------------------------------- */

typedef struct {
    fy_metrics *reg;
    fy_metric *requests;           /* ferry_requests_total{route,status} */
    fy_metric *duration;           /* ferry_request_duration_seconds{route} */
    fy_metric *ttfb;               /* ferry_request_ttfb_seconds{route} */
    fy_metric *bytes_received;     /* ferry_bytes_received_total{route} */
    fy_metric *bytes_sent;         /* ferry_bytes_sent_total{route} */
    fy_metric *tokens;             /* ferry_tokens_total{kind="prompt|completion"} */
    fy_metric *active_streams;     /* ferry_active_streams */
    fy_metric *connected_runners;  /* ferry_connected_runners */
    fy_metric *tunnel_connections; /* ferry_tunnel_connections */
    fy_metric *waiting;            /* ferry_waiting_requests: /v1 requests in the wait queue */
    fy_metric *ratelimited;        /* ferry_ratelimit_rejections_total{kind} */
    fy_metric *auth_failures;      /* ferry_auth_failures_total{reason} */
    fy_metric *hook_requests;      /* ferry_hook_requests_total{hook,outcome} */
    fy_metric *hook_deliveries;    /* ferry_hook_deliveries_total{hook,result} */
    fy_metric *shared_up;          /* ferry_shared_up: 1 while Redis (--shared) is reachable */
    fy_metric *shared_replicas;    /* ferry_shared_replicas: replicas alive at the last heartbeat */
    fy_metric *shared_local;       /* ferry_shared_local_admissions_total: decided locally (down) */
} fy_metrics_gw;

/* Latency buckets in seconds, shared by the duration and TTFB histograms:
 * from 5 ms (a cached answer) to 5 min (a long generation). */
#define FY_METRICS_GW_LATENCY_BUCKETS                                             \
    {                                                                             \
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 \
    }

/* Creates the registry and registers every family above; the label sets
 * known in advance (rate-limit kinds, auth failure reasons, token kinds) are
 * created at 0. Returns 0 or FY_ENOMEM. */
int fy_metrics_gw_init(fy_metrics_gw *g);
void fy_metrics_gw_close(fy_metrics_gw *g);

/* One finished request: ROUTE is a bounded route name ("/v1/chat/completions",
 * "/r", "/hooks", "other"), STATUS the HTTP status sent, SECONDS the total
 * latency, TTFB_SECONDS the time to the first response byte (< 0: none was
 * sent), BYTES_IN/OUT the body bytes received and sent. */
void fy_metrics_gw_request(fy_metrics_gw *g, const char *route, int status, double seconds,
                           double ttfb_seconds, uint64_t bytes_in, uint64_t bytes_out);
/* REASON: fy_auth_reason(outcome). */
void fy_metrics_gw_auth_failure(fy_metrics_gw *g, const char *reason);
/* KIND: fy_rl_kind_name(kind). */
void fy_metrics_gw_ratelimited(fy_metrics_gw *g, const char *kind);
void fy_metrics_gw_tokens(fy_metrics_gw *g, uint64_t prompt, uint64_t completion);

#endif
