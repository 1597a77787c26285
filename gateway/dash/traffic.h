/* traffic.h: the dashboard's live traffic: the last FY_TRAFFIC_RING public
 * requests, newest first, and a stream of each one as it ends.
 *
 *   GET /admin/v1/traffic?limit=N&key=&status=&model=&runner=
 *       {"requests":[record...]} newest first; limit 1..FY_TRAFFIC_RING
 *       (default 100); key matches the key's id or name; status is a code
 *       ("200") or a class ("4xx"); model and runner match exactly.
 *   GET /admin/v1/traffic/stream
 *       text/event-stream: "event: request\ndata: <record>\n\n" for each
 *       request that ends, ": ping" every FY_TRAFFIC_PING_MS. At most
 *       FY_TRAFFIC_MAX_STREAMS at once (503 beyond); a stream whose client
 *       does not keep up (its socket's queue above the stream high
 *       watermark when a record comes) is ended, never buffered without
 *       bound.
 *   GET /admin/v1/traffic/<id>
 *       the record plus "request_headers" and "response_headers" as
 *       [[name, value], ...], secrets redacted (fy_traffic_secret_header).
 *
 * A record: {"id","time" (unix ms),"key_id","key_name","runner","model",
 * "method","path","status","latency_ms","prompt_tokens",
 * "completion_tokens","kind"} (unknown values null). Never a body, never a
 * key: paths lose their query and anything shaped like a ferry key.
 *
 * Records come from the gateway's request news (reqdone.h): dash.c
 * subscribes fy_traffic_add. Key names are looked up in the store (cached
 * for FY_TRAFFIC_NAME_TTL_S). Memory is bounded: the ring, at most
 * FY_TRAFFIC_HEADERS_MAX bytes of headers per record, the streams' count. */
#ifndef FY_GATEWAY_DASH_TRAFFIC_H
#define FY_GATEWAY_DASH_TRAFFIC_H

#include "common/http.h"
#include "gateway/reqdone.h"
#include "gateway/store.h"

#include <stdint.h>
#include <uv.h>

#define FY_TRAFFIC_RING        1000
#define FY_TRAFFIC_MAX_STREAMS 16
#define FY_TRAFFIC_PING_MS     15000
#define FY_TRAFFIC_HEADERS_MAX 8192 /* bytes of one record's headers (names and values) */
#define FY_TRAFFIC_NAME_TTL_S  10   /* a key's cached name is looked up again after this */

typedef struct fy_traffic fy_traffic;

/* Totals since start, for /admin/v1/overview. */
typedef struct {
    uint64_t requests, prompt_tokens, completion_tokens;
    uint64_t by_status[200]; /* requests answered 400 + i */
} fy_traffic_totals;

/* A ring on LOOP naming keys from STORE (may be NULL: no names). */
int fy_traffic_new(uv_loop_t *loop, fy_store *store, fy_traffic **out);

/* Ends every stream and stops the ping timer (the gateway stops). Free
 * after the loop ran the close. NULL is ok. */
void fy_traffic_close(fy_traffic *t);
void fy_traffic_free(fy_traffic *t);

/* Records a request that ended (a reqdone.h subscriber's fn; ARG: T). */
void fy_traffic_add(const fy_reqdone *d, void *arg);

/* Answers an admin request under /admin/v1/traffic (already authorized). */
void fy_traffic_request(fy_traffic *t, fy_http_req *req);

const fy_traffic_totals *fy_traffic_get_totals(const fy_traffic *t);

/* GET /admin/v1/hooks/HOOK_ID/deliveries?limit=N (already authorized):
 * {"deliveries":[{"id" (the event's dlv_ id when queued, else the request's),
 * "request_id","time","status","latency_ms","verified","state"
 * ("delivered": forwarded to the runner; "queued"; "refused": answered by
 * the gateway, a bad signature among others),"attempts","replay_of":null,
 * "captured":false}]}, newest first, from the ring: this replica's
 * requests among the last FY_TRAFFIC_RING. A queued event stays "queued"
 * here whatever the queue does with it later. */
void fy_traffic_deliveries(fy_traffic *t, fy_http_req *req, const char *hook_id);

/* 1 when header NAME's value is a secret shown as "[redacted]":
 * authorization, proxy-authorization, cookie, set-cookie, x-api-key, and any
 * name containing "signature", "secret" or "token" (case-insensitive). */
int fy_traffic_secret_header(const char *name);

#endif
