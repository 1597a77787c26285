/* server.h: the runner's OpenAI-compatible API over the engine.
 *
 * One API object serves every request, whatever carried it: the local HTTP
 * listener (fy_api_http_handler, an fy_http_server handler) and tunnel
 * streams (runner/apistream.c) are both *transports*, a small table of
 * respond / start / write / end / abort calls over their own connection.
 * A transport reads the request (method, path, body up to its own cap) and
 * calls fy_api_handle(); the API answers through the table, so the same code
 * builds every response, and the tunnel's `end` also sends the usage
 * trailer the gateway charges.
 *
 * Routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions,
 * GET /health, POST /tokenize, POST /detokenize (vLLM's shapes), GET
 * /metrics (engine and API counters, Prometheus text).
 *
 * Everything runs on the loop thread the engine delivers events on. */
#ifndef FY_API_SERVER_H
#define FY_API_SERVER_H

#include "common/http.h"
#include "runner/api/chat_template.h"
#include "runner/api/openai.h"
#include "runner/engine/engine.h"

#include <uv.h>

#define FY_API_MAX_BODY    (8u << 20)  /* request body bytes: 413 above */
#define FY_API_MAX_BACKLOG (8u << 20)  /* response bytes a slow client may leave queued */
#define FY_API_PING_MS     5000        /* SSE comment ping after this long without a write */
#define FY_API_MAX_TEXT    (64u << 20) /* one sample's text in a non-streamed response */

typedef struct fy_api fy_api;
typedef struct fy_api_call fy_api_call;

typedef struct {
    uv_loop_t *loop;
    fy_engine *engine;            /* borrowed; outlives the API */
    const fy_chat_template *tmpl; /* NULL: chat requests get a 400 */
    const char *model_name;       /* the id clients use (copied) */
    unsigned ping_ms;             /* 0: FY_API_PING_MS */
    /* How tool calls are read from the model's text: "hermes", "llama3",
     * "mistral" (runner/api/toolcall.h); NULL: the family the chat
     * template's text prompts for. */
    const char *tool_call_parser;
} fy_api_options;

int fy_api_new(const fy_api_options *o, fy_api **out);
/* Aborts every call still running (their transports get `abort`), then
 * frees. NULL ok. */
void fy_api_free(fy_api *a);

/* A transport. Every call gets T back. Finishing calls -- respond, end,
 * abort -- are made exactly once per call; after one of them the call is
 * freed and the transport must forget it (no fy_api_call_cancel). */
typedef struct {
    /* A whole response. USAGE: the tokens it used, NULL when none. */
    int (*respond)(void *t, int status, const fy_http_header *h, size_t n, const char *body,
                   size_t len, const fy_oai_usage *usage);
    /* Starts a streamed response of unknown length. */
    int (*start)(void *t, int status, const fy_http_header *h, size_t n);
    /* Body bytes (copied). Returns 0, or a negative FY_E* code when the
     * client is gone or left too much unread: the API then stops and calls
     * abort. */
    int (*write)(void *t, const char *data, size_t len);
    /* Ends the streamed response; USAGE as in respond. */
    int (*end)(void *t, const fy_oai_usage *usage);
    /* Gives up: the client sees a truncated response (or none). */
    void (*abort)(void *t);
} fy_api_transport;

typedef struct {
    const char *method;
    const char *path;   /* without the query */
    const char *key_id; /* the gateway's API key id (tunnel only), or NULL */
    const char *body;
    size_t body_len;
} fy_api_request;

/* Serves R. Returns NULL when the answer is complete already (a finishing
 * transport call was made), or the running call: the transport calls
 * fy_api_call_cancel() if its client goes away before a finishing call. */
fy_api_call *fy_api_handle(fy_api *a, const fy_api_request *r, const fy_api_transport *tp, void *t);

/* The client went away: the engine request is aborted (its KV blocks freed
 * at the next step), the transport's abort is called, the call freed. */
void fy_api_call_cancel(fy_api_call *c);

/* fy_http_server handler (options.data = the fy_api) for the local
 * listener; the server's max_body should be FY_API_MAX_BODY. */
void fy_api_http_handler(fy_http_req *req, void *data);

typedef struct {
    uint64_t requests, active, completed, canceled, errors, rejected_busy;
} fy_api_stats;
void fy_api_stats_get(const fy_api *a, fy_api_stats *s);

#endif
