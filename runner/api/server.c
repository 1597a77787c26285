/* server.c: the OpenAI-compatible API over the engine (server.h).
 *
 * A generation call lives from fy_api_handle() until its last finishing
 * transport call. Engine events arrive on the loop thread: a streamed call
 * turns each into SSE chunks at once (with ": ping" comments while nothing
 * was written for ping_ms, e.g. during a long prefill); a whole-response call
 * accumulates each sample's text and logprobs and answers when the last
 * sample finished. A client that goes away cancels the call, which aborts
 * the engine request: the engine frees its blocks at the next step. */
#include "runner/api/server.h"

#include "common/err.h"
#include "common/log.h"
#include "runner/api/constrain.h"
#include "runner/api/toolcall.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fy_api {
    uv_loop_t *loop;
    fy_engine *engine;
    const fy_tokenizer *tok;
    const fy_chat_template *tmpl;
    char model[256];
    unsigned ping_ms;
    int64_t created;
    fy_api_call *calls; /* live generation calls */
    fy_api_stats st;
    fy_constrain *cons;        /* compiled output constraints */
    fy_toolcall_family family; /* how tool calls are read from text (auto tool choice) */
};

/* A tool call of a choice, as it is read from the text. */
typedef struct {
    char id[48];
    char *name;
    fy_buf args;
} tcall;

/* One choice: prompt P's sample J is choice P * n + J. */
typedef struct {
    fy_buf text; /* whole response: the text so far (the echoed prompt first) */
    json_t *logprobs;
    int started; /* streamed: the role chunk went out */
    int done;
    int completion_tokens;
    const char *finish;
    /* Tools: the parser over the text, the calls it found, and for its
     * callbacks the call and this choice's index. */
    fy_toolcall_parser *tcp;
    tcall *calls;
    int n_calls;
    int primed; /* the parser read what comes before the text */
    fy_api_call *call;
    int index;
} sample;

/* One prompt of the call: one engine request of n samples. */
typedef struct {
    fy_api_call *c;
    int index;
    uint64_t engine_id;
    int submitted; /* in the engine, not yet finished */
    int n_done;    /* samples finished */
    int prompt_tokens, cached_tokens;
    int32_t *ids; /* its token ids, until the engine has them */
    size_t n_ids;
    /* echo: the prompt's text, and with logprobs its tokens' entries (the
     * first unscored, then one per engine prompt logprob) and text offsets. */
    char *echo;
    size_t echo_len;
    json_t *plp;
    size_t *poff; /* [n_ids] */
    size_t n_plp;
    int echoed; /* streamed: its choices' echo chunks went out */
} part;

struct fy_api_call {
    fy_api *api;
    fy_api_call *prev, *next;
    const fy_api_transport *tp;
    void *t;
    fy_oai_request r;
    part *parts; /* [n_parts] */
    int n_parts;
    sample *s; /* [n_parts * r.n] */
    int n_choices, n_done;
    size_t text_total; /* bytes held over all choices (whole responses) */
    fy_oai_usage usage;
    char id[48];
    int64_t created;
    uv_timer_t ping;
    int ping_on;
    uint64_t last_write;
    int failed; /* an error finish: its message is in err */
    fy_oai_error err;
    int in_tp;           /* inside a transport call: a cancel now is left to its caller */
    int gone;            /* cancelled from inside a transport call */
    fy_grammar *grammar; /* the output constraint, or NULL */
    fy_buf pend;         /* streamed: chunks the tool parser made, written after it returns */
    int oom;             /* building a chunk failed */
};

static json_t *tool_calls_json(const sample *s);

/* --- plain answers ------------------------------------------------------------ */

static const fy_http_header json_hdr[] = {{"content-type", "application/json", 0, 0}};

static void answer_json(const fy_api_transport *tp, void *t, int status, const char *body,
                        size_t len, const fy_oai_usage *u)
{
    tp->respond(t, status, json_hdr, 1, body, len, u);
}

static void answer_error(fy_api *a, const fy_api_transport *tp, void *t, const fy_oai_error *e)
{
    size_t len = 0;
    char *body = fy_oai_error_json(e, &len);
    if (e->status == 503) {
        static const fy_http_header h[] = {{"content-type", "application/json", 0, 0},
                                           {"retry-after", "1", 0, 0}};
        tp->respond(t, e->status, h, 2, body ? body : "", body ? len : 0, NULL);
    } else {
        answer_json(tp, t, e->status, body ? body : "", body ? len : 0, NULL);
    }
    free(body);
    a->st.errors++;
}

static void answer_jsonv(const fy_api_transport *tp, void *t, json_t *root)
{
    char *s = root ? json_dumps(root, JSON_COMPACT) : NULL;
    json_decref(root);
    if (!s) {
        char oom[128];
        size_t n = fy_http_error_json(oom, sizeof oom, 500, NULL, NULL, "out of memory");
        answer_json(tp, t, 500, oom, n, NULL);
        return;
    }
    answer_json(tp, t, 200, s, strlen(s), NULL);
    free(s);
}

/* --- token text for logprobs ------------------------------------------------------ */

/* A token's text as it reads inside the text (fy_tokenizer_token_bytes):
 * " time" for "▁time", so the tokens of a choice read as its text does.
 * Never fails, so the logprobs' lists stay aligned. */
static int tok_text(void *arg, int32_t id, char *buf, size_t cap)
{
    size_t len;
    const char *s = fy_tokenizer_token_bytes(arg, id, &len);
    if (!s) {
        s = ""; /* an id without a token (a model's padding rows) reads empty */
        len = 0;
    }
    if (len > cap - 1) {
        len = cap - 1;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    return (int)len;
}

/* --- calls --------------------------------------------------------------------- */

static void call_ping_closed(uv_handle_t *h)
{
    free(h->data);
}

static void part_free(part *p)
{
    free(p->ids);
    free(p->echo);
    free(p->poff);
    json_decref(p->plp);
}

/* Aborts C's engine requests still running and frees what C holds (not C). */
static void call_release(fy_api_call *c)
{
    for (int i = 0; c->parts && i < c->n_parts; i++) {
        if (c->parts[i].submitted) {
            fy_engine_abort(c->api->engine, c->parts[i].engine_id);
        }
        part_free(&c->parts[i]);
    }
    for (int i = 0; c->s && i < c->n_choices; i++) {
        sample *s = &c->s[i];
        fy_buf_free(&s->text);
        json_decref(s->logprobs);
        fy_toolcall_parser_free(s->tcp);
        for (int k = 0; k < s->n_calls; k++) {
            free(s->calls[k].name);
            fy_buf_free(&s->calls[k].args);
        }
        free(s->calls);
    }
    free(c->parts);
    free(c->s);
    fy_grammar_unref(c->grammar);
    fy_buf_free(&c->pend);
    fy_oai_request_free(&c->r);
}

static void call_free(fy_api_call *c)
{
    fy_api *a = c->api;
    if (c->prev) {
        c->prev->next = c->next;
    } else if (a->calls == c) {
        a->calls = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    a->st.active--;
    call_release(c);
    if (c->ping_on) {
        uv_timer_stop(&c->ping);
        uv_close((uv_handle_t *)&c->ping, call_ping_closed); /* frees C */
    } else {
        free(c);
    }
}

/* The transport failed or the client is gone: abort everything. The
 * cancellation is counted before the engine requests are aborted, so the
 * counter never lags the blocks the aborts free. */
static void call_abort(fy_api_call *c)
{
    c->tp->abort(c->t);
    c->api->st.canceled++;
    call_free(c);
}

void fy_api_call_cancel(fy_api_call *c)
{
    if (c->in_tp) {
        /* A transport whose write failed may report the hang-up from inside
         * that call (the HTTP server closes the connection there); the
         * caller finishes the call once, when the transport call returns. */
        c->gone = 1;
        return;
    }
    call_abort(c);
}

/* Writes to a streamed response. Returns 0, or -1 when the call is gone. */
static int call_write(fy_api_call *c, const char *data, size_t len)
{
    if (!data) {
        call_abort(c); /* out of memory building it */
        return -1;
    }
    c->in_tp = 1;
    int rc = c->tp->write(c->t, data, len);
    c->in_tp = 0;
    if (rc < 0 || c->gone) {
        call_abort(c);
        return -1;
    }
    c->last_write = uv_now(c->api->loop);
    return 0;
}

static int call_write_free(fy_api_call *c, char *data, size_t len)
{
    int rc = call_write(c, data, len);
    free(data);
    return rc;
}

static void on_ping(uv_timer_t *tm)
{
    fy_api_call *c = tm->data;
    if (uv_now(c->api->loop) - c->last_write >= c->api->ping_ms) {
        call_write(c, FY_OAI_SSE_PING, sizeof FY_OAI_SSE_PING - 1);
    }
}

/* The usage of the whole call: the prompts' and the choices' tokens summed. */
static void call_usage(fy_api_call *c)
{
    fy_oai_usage *u = &c->usage;
    memset(u, 0, sizeof *u);
    for (int i = 0; i < c->n_parts; i++) {
        u->prompt_tokens += c->parts[i].prompt_tokens;
        u->cached_tokens += c->parts[i].cached_tokens;
    }
    for (int i = 0; i < c->n_choices; i++) {
        u->completion_tokens += c->s[i].completion_tokens;
    }
}

/* The whole (non-streamed) answer, once every sample finished. The call is
 * freed; a cancel from inside the transport's respond has nothing left to do. */
static void call_respond(fy_api_call *c)
{
    c->in_tp = 1;
    if (c->failed) {
        answer_error(c->api, c->tp, c->t, &c->err);
        call_free(c);
        return;
    }
    fy_oai_choice *ch = calloc((size_t)c->n_choices, sizeof *ch);
    json_t **own = calloc((size_t)c->n_choices, sizeof *own);
    char *body = NULL;
    size_t len = 0;
    int ok = ch && own;
    for (int i = 0; ok && i < c->n_choices; i++) {
        part *p = &c->parts[i / c->r.n];
        ch[i].text = c->s[i].text.data ? c->s[i].text.data : "";
        ch[i].text_len = c->s[i].text.len;
        ch[i].finish_reason = c->s[i].finish;
        ch[i].logprobs = c->s[i].logprobs;
        ch[i].tool_calls = tool_calls_json(&c->s[i]);
        ok = c->s[i].n_calls == 0 || ch[i].tool_calls;
        if (p->plp && c->s[i].logprobs) {
            ok = (own[i] = fy_oai_logprobs_concat(p->plp, c->s[i].logprobs)) != NULL;
            ch[i].logprobs = own[i];
        }
    }
    if (ok) {
        call_usage(c);
        body = fy_oai_response_json(c->r.kind, c->id, c->created, c->api->model, ch, c->n_choices,
                                    &c->usage, &len);
    }
    for (int i = 0; own && i < c->n_choices; i++) {
        json_decref(own[i]);
        json_decref(ch[i].tool_calls);
    }
    free(own);
    free(ch);
    if (!body) {
        c->in_tp = 0;
        call_abort(c);
        return;
    }
    answer_json(c->tp, c->t, 200, body, len, &c->usage);
    free(body);
    c->api->st.completed++;
    call_free(c);
}

/* The end of a stream: usage chunk, [DONE], end with the usage. */
static void call_stream_end(fy_api_call *c)
{
    call_usage(c);
    if (c->failed) {
        size_t len;
        if (call_write_free(c, fy_oai_error_sse(&c->err, &len), len)) {
            return;
        }
    }
    if (c->r.include_usage) {
        size_t len;
        char *s =
            fy_oai_usage_chunk_sse(c->r.kind, c->id, c->created, c->api->model, &c->usage, &len);
        if (call_write_free(c, s, len)) {
            return;
        }
    }
    if (call_write(c, FY_OAI_SSE_DONE, sizeof FY_OAI_SSE_DONE - 1)) {
        return;
    }
    c->in_tp = 1;
    c->tp->end(c->t, &c->usage);
    c->api->st.completed++;
    call_free(c);
}

/* Streams the echoed prompt of P as the first chunk of each of its choices
 * (with the prompt tokens' logprobs when asked). Returns -1 when the call is
 * gone. */
static int stream_echo(fy_api_call *c, part *p)
{
    p->echoed = 1;
    for (int j = 0; j < c->r.n; j++) {
        size_t len;
        char *chunk =
            fy_oai_chunk_sse(c->r.kind, c->id, c->created, c->api->model, p->index * c->r.n + j, 0,
                             p->echo, p->echo_len, p->plp, NULL, &len);
        if (call_write_free(c, chunk, len)) {
            return -1;
        }
    }
    return 0;
}

/* Streams one event of choice INDEX. Returns -1 when the call is gone. */
static int stream_event(fy_api_call *c, const fy_engine_event *ev, int index, json_t *lp,
                        const char *finish)
{
    size_t len;
    char *chunk;
    fy_api *a = c->api;
    sample *s = &c->s[index];
    int role = c->r.kind == FY_OAI_CHAT && !s->started;
    if (role || ev->text_len || lp) {
        /* OpenAI's first chat chunk carries the role; text follows in the
         * same chunk when this event already has some. */
        chunk = fy_oai_chunk_sse(c->r.kind, c->id, c->created, a->model, index, role, ev->text,
                                 ev->text_len, lp, NULL, &len);
        s->started = 1;
        if (call_write_free(c, chunk, len)) {
            return -1;
        }
    }
    if (finish) {
        chunk = fy_oai_chunk_sse(c->r.kind, c->id, c->created, a->model, index, 0, "", 0, NULL,
                                 finish, &len);
        if (call_write_free(c, chunk, len)) {
            return -1;
        }
    }
    return 0;
}

/* echo with logprobs: the entries of the prompt tokens the engine scored. */
static int add_prompt_logprobs(fy_api_call *c, part *p, const fy_engine_event *ev)
{
    for (int i = 0; i < ev->n_prompt_logprobs && p->n_plp < p->n_ids; i++) {
        const fy_gen_token *g = &ev->prompt_logprobs[i];
        int rc = fy_oai_logprobs_add(p->plp, FY_OAI_COMPLETION, g, c->r.logprobs, p->poff[p->n_plp],
                                     tok_text, (void *)c->api->tok);
        if (rc < 0) {
            return rc;
        }
        p->n_plp++;
    }
    return 0;
}

/* Appends TEXT to choice S of a whole response (bounded over the call). */
static void hold_text(fy_api_call *c, sample *s, const char *text, size_t len)
{
    if (len && (c->text_total + len > FY_API_MAX_TEXT || fy_buf_append(&s->text, text, len))) {
        fy_oai_fail(&c->err, 500, NULL, "too_large", "the completion is too large to return");
        c->failed = 1;
        return;
    }
    c->text_total += len;
}

/* --- tool calls ------------------------------------------------------------------- */

/* Appends a built chunk to the call's pending bytes (streamed tools). */
static int pend_chunk(fy_api_call *c, char *chunk, size_t len)
{
    int rc = chunk ? fy_buf_append(&c->pend, chunk, len) : FY_ENOMEM;
    free(chunk);
    if (rc < 0) {
        c->oom = 1;
    }
    return rc;
}

static int tc_content(void *arg, const char *text, size_t len)
{
    sample *s = arg;
    fy_api_call *c = s->call;
    if (!c->r.stream) {
        hold_text(c, s, text, len);
        return c->failed ? FY_ETOOBIG : 0;
    }
    size_t n;
    char *chunk = fy_oai_chunk_sse(FY_OAI_CHAT, c->id, c->created, c->api->model, s->index,
                                   !s->started, text, len, NULL, NULL, &n);
    s->started = 1;
    return pend_chunk(c, chunk, n);
}

static int tc_begin(void *arg, int index, const char *name, size_t len)
{
    sample *s = arg;
    fy_api_call *c = s->call;
    tcall *nc = realloc(s->calls, (size_t)(s->n_calls + 1) * sizeof *nc);
    if (!nc) {
        return FY_ENOMEM;
    }
    s->calls = nc;
    tcall *t = &s->calls[s->n_calls];
    memset(t, 0, sizeof *t);
    if (!(t->name = strndup(name, len))) {
        return FY_ENOMEM;
    }
    s->n_calls++;
    fy_buf_init(&t->args, FY_TOOLCALL_MAX_BYTES);
    fy_oai_tool_call_id(t->id, sizeof t->id, c->api->family == FY_TOOLCALL_MISTRAL);
    if (!c->r.stream) {
        return 0;
    }
    size_t n;
    char *chunk = fy_oai_tool_chunk_sse(c->id, c->created, c->api->model, s->index, !s->started,
                                        index, t->id, t->name, "", 0, &n);
    s->started = 1;
    return pend_chunk(c, chunk, n);
}

static int tc_args(void *arg, int index, const char *piece, size_t len)
{
    sample *s = arg;
    fy_api_call *c = s->call;
    if (index < 0 || index >= s->n_calls) {
        return FY_EINVAL;
    }
    if (!c->r.stream) {
        return fy_buf_append(&s->calls[index].args, piece, len);
    }
    size_t n;
    char *chunk = fy_oai_tool_chunk_sse(c->id, c->created, c->api->model, s->index, 0, index, NULL,
                                        NULL, piece, len, &n);
    return pend_chunk(c, chunk, n);
}

static const fy_toolcall_ops tc_ops = {tc_content, tc_begin, tc_args};

/* The parser of choice S for R's tool choice. "required" output is a list
 * of {"name", "parameters"}: the Mistral parser reads it after its marker;
 * a named tool's output is its arguments: the same parser reads it inside
 * a call written up to them (finished by tool_parser_end). */
static int tool_parser_new(fy_api *a, const fy_oai_request *r, sample *s)
{
    fy_toolcall_family f = r->tool_choice == FY_OAI_TOOL_AUTO ? a->family : FY_TOOLCALL_MISTRAL;
    return fy_toolcall_parser_new(f, &tc_ops, s, &s->tcp);
}

/* What the parser reads before choice S's first text (at its first event,
 * so a streamed call's head goes out as a chunk). */
static int tool_parser_prime(const fy_oai_request *r, sample *s)
{
    s->primed = 1;
    if (r->tool_choice == FY_OAI_TOOL_REQUIRED) {
        return fy_toolcall_push(s->tcp, "[TOOL_CALLS]", 12);
    }
    if (r->tool_choice == FY_OAI_TOOL_NAMED) {
        char head[128];
        int n = snprintf(head, sizeof head,
                         "[TOOL_CALLS][{\"name\": \"%s\", \"arguments\": ", r->tool_name);
        return fy_toolcall_push(s->tcp, head, (size_t)n);
    }
    return 0;
}

/* The end of choice S's text: the parser's last words. */
static int tool_parser_end(fy_api_call *c, sample *s)
{
    int rc = 0;
    if (c->r.tool_choice == FY_OAI_TOOL_NAMED) {
        rc = fy_toolcall_push(s->tcp, "}]", 2);
    }
    return rc ? rc : fy_toolcall_finish(s->tcp);
}

/* The tool_calls list of choice S (NULL when it made none). */
static json_t *tool_calls_json(const sample *s)
{
    if (s->n_calls == 0) {
        return NULL;
    }
    json_t *l = json_array();
    for (int i = 0; l && i < s->n_calls; i++) {
        const tcall *t = &s->calls[i];
        json_t *j = fy_oai_tool_call_json(t->id, t->name, t->args.data ? t->args.data : "{}",
                                          t->args.data ? t->args.len : 2);
        if (!j || json_array_append_new(l, j) < 0) {
            json_decref(l);
            return NULL;
        }
    }
    return l;
}

static void on_engine_event(const fy_engine_event *ev, void *arg)
{
    part *p = arg;
    fy_api_call *c = p->c;
    if (ev->index < 0 || ev->index >= c->r.n) {
        return;
    }
    int index = p->index * c->r.n + ev->index;
    sample *s = &c->s[index];
    if (s->done) {
        return;
    }
    p->prompt_tokens = ev->prompt_tokens;
    p->cached_tokens = ev->cached_tokens;
    if (p->plp && ev->n_prompt_logprobs && add_prompt_logprobs(c, p, ev)) {
        call_abort(c);
        return;
    }
    /* The engine delivers the prompt's logprobs before any generated token:
     * the echo chunks go out once they are all in. */
    if (c->r.stream && c->r.echo && !p->echoed && (!p->plp || p->n_plp == p->n_ids) &&
        stream_echo(c, p)) {
        return;
    }
    const char *finish = NULL;
    if (ev->finish == FY_FINISH_ERROR || ev->finish == FY_FINISH_ABORT) {
        c->failed = 1;
        if (ev->finish == FY_FINISH_ABORT) {
            fy_oai_fail(&c->err, 503, NULL, "engine_stopped", "the engine is shutting down");
        } else {
            fy_oai_fail(&c->err, 500, NULL, "engine_error", "generation failed: %s",
                        ev->error ? ev->error : "unknown error");
        }
        finish = "abort";
    } else {
        finish = fy_oai_finish_reason(ev->finish);
    }
    /* Logprobs of this event's tokens; offsets in the choice's text, which
     * begins with the echoed prompt. */
    json_t *lp = NULL;
    if (c->r.logprobs >= 0 && ev->n_tokens > 0) {
        json_t *into = c->r.stream ? fy_oai_logprobs_new(c->r.kind) : s->logprobs;
        if (!into) {
            call_abort(c);
            return;
        }
        for (int i = 0; i < ev->n_tokens; i++) {
            if (fy_oai_logprobs_add(into, c->r.kind, &ev->tokens[i], c->r.logprobs,
                                    p->echo_len + ev->tokens[i].text_offset, tok_text,
                                    (void *)c->api->tok)) {
                break; /* out of memory: keep the rest of the answer */
            }
        }
        lp = c->r.stream ? into : NULL;
    }
    s->completion_tokens = ev->completion_tokens;
    if (s->tcp) {
        /* The text goes through the tool parser; what it makes of it is
         * content or calls (streamed: chunks written after it returns). */
        fy_buf_reset(&c->pend);
        int rc = s->primed ? 0 : tool_parser_prime(&c->r, s);
        if (rc == 0) {
            rc = fy_toolcall_push(s->tcp, ev->text, ev->text_len);
        }
        if (rc == 0 && finish) {
            rc = tool_parser_end(c, s);
        }
        if (finish && s->n_calls > 0 && ev->finish == FY_FINISH_STOP) {
            finish = "tool_calls";
        }
        if ((rc < 0 || c->oom) && !c->failed) {
            c->failed = 1;
            fy_oai_fail(&c->err, 500, NULL, "tool_parse_error", "reading tool calls: %s",
                        fy_strerror(rc < 0 ? rc : FY_ENOMEM));
        }
        if (c->r.stream) {
            fy_engine_event quiet = *ev;
            quiet.text = "";
            quiet.text_len = 0;
            if (c->pend.len && call_write(c, c->pend.data, c->pend.len)) {
                json_decref(lp);
                return;
            }
            rc = stream_event(c, &quiet, index, lp, finish);
            json_decref(lp);
            if (rc) {
                return;
            }
        }
    } else if (c->r.stream) {
        int rc = stream_event(c, ev, index, lp, finish);
        json_decref(lp);
        if (rc) {
            return;
        }
    } else {
        hold_text(c, s, ev->text, ev->text_len);
    }
    if (!finish) {
        return;
    }
    s->done = 1;
    s->finish = finish;
    if (++p->n_done == c->r.n) {
        p->submitted = 0; /* finished: nothing to abort */
    }
    if (++c->n_done < c->n_choices) {
        return;
    }
    if (c->r.stream) {
        call_stream_end(c);
    } else {
        call_respond(c);
    }
}

/* --- building the prompt ------------------------------------------------------------- */

/* The chat prompt text: the template over the messages; with
 * continue_final_message the text stops after the last message's content
 * (the model continues it). Returns 0 or -1 with E filled. */
static int chat_prompt(fy_api *a, const fy_oai_request *r, char **text, size_t *len,
                       fy_oai_error *e)
{
    if (!a->tmpl) {
        return fy_oai_fail(e, 400, "messages", "no_chat_template",
                           "this model has no chat template: use /v1/completions, or start the "
                           "runner with --chat-template FILE");
    }
    char err[512];
    int rc = fy_chat_template_render(a->tmpl, r->messages, r->tools, r->add_generation_prompt, text,
                                     len, err, sizeof err);
    if (rc == FY_EINVAL) {
        return fy_oai_fail(e, 400, "messages", "invalid_value", "%s", err);
    }
    if (rc == FY_ETOOBIG) {
        return fy_oai_fail(e, 400, "messages", "context_length_exceeded",
                           "the rendered chat prompt is too large");
    }
    if (rc) {
        return fy_oai_fail(e, 500, NULL, "template_error", "chat template: %s", err);
    }
    if (r->continue_final_message) {
        json_t *last = json_array_get(r->messages, json_array_size(r->messages) - 1);
        json_t *content = json_object_get(last, "content");
        const char *cs = json_is_string(content) ? json_string_value(content) : NULL;
        size_t cl = cs ? strlen(cs) : 0;
        char *at = NULL;
        for (char *p = cl ? *text : NULL; p && (p = strstr(p, cs)); p++) {
            at = p;
        }
        if (at) {
            *len = (size_t)(at - *text) + cl;
            (*text)[*len] = '\0';
        }
    }
    return 0;
}

/* The token ids of prompt Q (a completions prompt, or the chat messages when
 * Q is NULL) into *IDS (malloc'd). Returns 0 or -1 with E filled. */
static int prompt_ids(fy_api *a, const fy_oai_request *r, fy_oai_prompt *q, int32_t **ids,
                      size_t *n, fy_oai_error *e)
{
    const char *param = r->kind == FY_OAI_CHAT ? "messages" : "prompt";
    if (q && q->ids) {
        int vocab = fy_tokenizer_vocab_size(a->tok);
        for (size_t i = 0; i < q->n_ids; i++) {
            if (q->ids[i] >= vocab) {
                return fy_oai_fail(e, 400, "prompt", "invalid_value",
                                   "token id %d in 'prompt' is outside the vocabulary (%d tokens)",
                                   q->ids[i], vocab);
            }
        }
        *ids = q->ids;
        *n = q->n_ids;
        q->ids = NULL;
        return 0;
    }
    char *text = NULL;
    size_t len = 0;
    fy_encode_options eo = {.add_special = 1, .parse_special = 1};
    if (!q) {
        if (chat_prompt(a, r, &text, &len, e)) {
            return -1;
        }
        eo.add_special = 0; /* the template writes BOS itself when the model wants it */
    }
    int rc = fy_tokenizer_encode(a->tok, text ? text : q->text, text ? len : q->len, &eo, ids, n);
    free(text);
    if (rc == FY_EINVAL) {
        return fy_oai_fail(e, 400, param, "invalid_value", "the prompt is not valid UTF-8");
    }
    if (rc) {
        return fy_oai_fail(e, rc == FY_ETOOBIG ? 400 : 500, param, "tokenizer_error",
                           "cannot tokenize the prompt: %s", fy_strerror(rc));
    }
    return 0;
}

/* logit_bias ids must index the model's logits. Returns 0 or -1 with E filled. */
static int check_logit_bias(fy_api *a, const fy_oai_request *r, fy_oai_error *e)
{
    int vocab = fy_engine_config(a->engine)->vocab_size;
    for (int i = 0; i < r->n_logit_bias; i++) {
        if (r->logit_bias[i].id >= vocab) {
            return fy_oai_fail(e, 400, "logit_bias", "invalid_value",
                               "token id %d in 'logit_bias' is outside the vocabulary (%d tokens)",
                               (int)r->logit_bias[i].id, vocab);
        }
    }
    return 0;
}

/* Checks a prompt of N_PROMPT tokens and max_tokens against the context and
 * returns the max_tokens to ask for (the default: completions 16, chat the
 * rest of the context), or -1 with E filled. */
static int fit_context(fy_api *a, const fy_oai_request *r, size_t n_prompt, fy_oai_error *e)
{
    const char *param = r->kind == FY_OAI_CHAT ? "messages" : "prompt";
    long ctx = fy_engine_max_context(a->engine);
    long need = r->has_max_tokens && r->max_tokens == 0 ? 0 : 1;
    if (n_prompt == 0) {
        return fy_oai_fail(e, 400, param, "invalid_value", "the prompt is empty");
    }
    if ((long)n_prompt + need > ctx) {
        return fy_oai_fail(e, 400, param, "context_length_exceeded",
                           "this model's maximum context length is %ld tokens, but the prompt "
                           "has %zu tokens%s",
                           ctx, n_prompt, need ? " (at least one more is needed to generate)" : "");
    }
    long room = ctx - (long)n_prompt;
    if (r->has_max_tokens && r->max_tokens > room) {
        return fy_oai_fail(e, 400, r->kind == FY_OAI_CHAT ? "max_completion_tokens" : "max_tokens",
                           "context_length_exceeded",
                           "this model's maximum context length is %ld tokens; you asked for "
                           "%zu prompt tokens and %d completion tokens",
                           ctx, n_prompt, r->max_tokens);
    }
    if (r->has_max_tokens) {
        return r->max_tokens;
    }
    return r->kind == FY_OAI_CHAT ? (int)room : (room < 16 ? (int)room : 16);
}

/* echo: part P's text (a text prompt as given; token ids decoded as the
 * engine's detokenizer reads them) and, with logprobs, each prompt token's
 * text offset and the first token's unscored entry. Returns 0 or -1 with E. */
static int echo_prompt(fy_api *a, const fy_oai_request *r, const fy_oai_prompt *q, part *p,
                       fy_oai_error *e)
{
    fy_buf text;
    fy_buf_init(&text, FY_API_MAX_TEXT);
    fy_detok *d = fy_detok_new(a->tok, 1);
    int rc = d ? 0 : FY_ENOMEM;
    if (rc == 0 && r->logprobs >= 0 &&
        (!(p->poff = malloc(p->n_ids * sizeof *p->poff)) ||
         !(p->plp = fy_oai_logprobs_new(FY_OAI_COMPLETION)))) {
        rc = FY_ENOMEM;
    }
    for (size_t i = 0; rc == 0 && i < p->n_ids; i++) {
        const char *chunk;
        size_t len;
        if (p->poff) {
            p->poff[i] = text.len;
        }
        if ((rc = fy_detok_push(d, p->ids[i], &chunk, &len)) == 0) {
            rc = fy_buf_append(&text, chunk, len);
        }
    }
    if (rc == 0 && p->plp) {
        rc = fy_oai_logprobs_add_unscored(p->plp, p->ids[0], 0, tok_text, (void *)a->tok);
        p->n_plp = 1;
    }
    fy_detok_free(d);
    if (rc == 0 && q && q->text) {
        fy_buf_reset(&text);
        rc = fy_buf_append(&text, q->text, q->len);
    }
    if (rc == 0 && !fy_buf_cstr(&text)) {
        rc = FY_ENOMEM;
    }
    if (rc) {
        fy_buf_free(&text);
        return fy_oai_fail(e, rc == FY_ETOOBIG ? 400 : 500, "prompt", "too_large",
                           "cannot echo the prompt: %s", fy_strerror(rc));
    }
    p->echo = fy_buf_steal(&text, &p->echo_len);
    return 0;
}

/* Prepares part I of C: its ids, the context check, echo. MAX_TOKENS gets
 * what to ask the engine for. */
static int part_setup(fy_api *a, fy_api_call *c, int i, int *max_tokens, fy_oai_error *e)
{
    part *p = &c->parts[i];
    fy_oai_prompt *q = c->r.kind == FY_OAI_COMPLETION ? &c->r.prompts[i] : NULL;
    p->c = c;
    p->index = i;
    if (prompt_ids(a, &c->r, q, &p->ids, &p->n_ids, e) ||
        (*max_tokens = fit_context(a, &c->r, p->n_ids, e)) < 0) {
        if (e->status == 400 && c->n_parts > 1) {
            size_t n = strlen(e->message);
            snprintf(e->message + n, sizeof e->message - n, " (prompt %d of the batch)", i);
        }
        return -1;
    }
    p->prompt_tokens = (int)p->n_ids;
    if (c->r.echo && echo_prompt(a, &c->r, q, p, e)) {
        return -1;
    }
    for (int j = 0; j < c->r.n; j++) {
        sample *s = &c->s[i * c->r.n + j];
        fy_buf_init(&s->text, FY_API_MAX_TEXT);
        s->call = c;
        s->index = i * c->r.n + j;
        if (c->r.tool_choice != FY_OAI_TOOL_NONE && tool_parser_new(a, &c->r, s) < 0) {
            return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
        }
        if (c->r.logprobs >= 0 && !c->r.stream && !(s->logprobs = fy_oai_logprobs_new(c->r.kind))) {
            return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
        }
        if (!c->r.stream && c->r.echo) {
            hold_text(c, s, p->echo, p->echo_len);
        }
    }
    return 0;
}

/* Submits part I. Returns 0 or -1 with E filled. */
static int part_submit(fy_api *a, fy_api_call *c, int i, int max_tokens, const char *key_id,
                       fy_oai_error *e)
{
    part *p = &c->parts[i];
    fy_engine_request er = {
        .prompt = p->ids,
        .n_prompt = (int)p->n_ids,
        .n = c->r.n,
        .sampling = c->r.sampling,
        .key_id = key_id,
        .cb = on_engine_event,
        .arg = p,
    };
    er.sampling.max_tokens = max_tokens;
    char err[256] = "";
    int rc = fy_engine_submit(a->engine, &er, &p->engine_id, err, sizeof err);
    if (rc == FY_ELIMIT) {
        a->st.rejected_busy++;
        return fy_oai_fail(e, 503, NULL, "overloaded",
                           "the engine's queue is full: retry in a moment");
    }
    if (rc == FY_ETOOBIG) {
        return fy_oai_fail(e, 400, c->r.kind == FY_OAI_CHAT ? "messages" : "prompt",
                           "context_length_exceeded",
                           "the prompt does not fit the model's context: %s", err);
    }
    if (rc) {
        return fy_oai_fail(e, rc == FY_EINVAL ? 400 : 500, NULL, "invalid_value", "%s",
                           err[0] ? err : fy_strerror(rc));
    }
    p->submitted = 1;
    free(p->ids); /* the engine copied them; echo_prompt is done with them */
    p->ids = NULL;
    return 0;
}

/* The grammar C's output must follow, and what reading tool calls needs.
 * Returns 0 or -1 with E filled. */
static int constrain(fy_api *a, fy_api_call *c, fy_oai_error *e)
{
    fy_oai_request *r = &c->r;
    if (r->tool_choice == FY_OAI_TOOL_AUTO && a->family == FY_TOOLCALL_NONE) {
        return fy_oai_fail(e, 400, "tool_choice", "invalid_value",
                           "tool_choice \"auto\" needs a tool-call parser, and this model's chat "
                           "template names none: start the runner with --tool-call-parser "
                           "hermes|llama3|mistral, or ask for \"required\" or a named tool");
    }
    if (fy_constrain_request(a->cons, r, a->family, &c->grammar, e) < 0) {
        return -1;
    }
    r->sampling.grammar = c->grammar;
    r->sampling.grammar_trigger = fy_constrain_trigger(r, a->family);
    /* Llama 3's <|python_tag|> and Mistral's [TOOL_CALLS] are special
     * tokens: their parsers need the text (Hermes' <tool_call> is not). */
    r->sampling.keep_special =
        r->tool_choice == FY_OAI_TOOL_AUTO &&
        (a->family == FY_TOOLCALL_LLAMA3 || a->family == FY_TOOLCALL_MISTRAL);
    return 0;
}

static const fy_http_header sse_hdr[] = {
    {"content-type", "text/event-stream", 0, 0},
    {"cache-control", "no-cache", 0, 0},
    {"x-accel-buffering", "no", 0, 0},
};

static fy_api_call *generate(fy_api *a, fy_oai_kind kind, const fy_api_request *rq,
                             const fy_api_transport *tp, void *t)
{
    fy_oai_error e;
    fy_api_call *c = calloc(1, sizeof *c);
    int *max_tokens = NULL;
    if (!c) {
        fy_oai_fail(&e, 500, NULL, "out_of_memory", "out of memory");
        answer_error(a, tp, t, &e);
        return NULL;
    }
    c->api = a;
    c->tp = tp;
    c->t = t;
    if (fy_oai_parse(kind, rq->body, rq->body_len, &c->r, &e)) {
        goto fail;
    }
    if (c->r.model && strcmp(c->r.model, a->model) != 0) {
        fy_oai_fail(&e, 404, "model", "model_not_found",
                    "the model '%.100s' does not exist here (this runner serves '%s')", c->r.model,
                    a->model);
        goto fail;
    }
    c->n_parts = kind == FY_OAI_COMPLETION ? c->r.n_prompts : 1;
    c->n_choices = c->n_parts * c->r.n;
    c->parts = calloc((size_t)c->n_parts, sizeof *c->parts);
    c->s = calloc((size_t)c->n_choices, sizeof *c->s);
    max_tokens = calloc((size_t)c->n_parts, sizeof *max_tokens);
    if (!c->parts || !c->s || !max_tokens) {
        fy_oai_fail(&e, 500, NULL, "out_of_memory", "out of memory");
        goto fail;
    }
    if (check_logit_bias(a, &c->r, &e) || constrain(a, c, &e)) {
        goto fail;
    }
    fy_buf_init(&c->pend, FY_API_MAX_BACKLOG);
    for (int i = 0; i < c->n_parts; i++) {
        if (part_setup(a, c, i, &max_tokens[i], &e)) {
            goto fail;
        }
    }
    fy_oai_make_id(kind, c->id, sizeof c->id);
    c->created = (int64_t)time(NULL);
    for (int i = 0; i < c->n_parts; i++) {
        if (part_submit(a, c, i, max_tokens[i], rq->key_id, &e)) {
            goto fail;
        }
    }
    free(max_tokens);
    a->st.active++;
    c->next = a->calls;
    if (a->calls) {
        a->calls->prev = c;
    }
    a->calls = c;
    if (c->r.stream) {
        c->in_tp = 1;
        int rc = tp->start(t, 200, sse_hdr, 3);
        c->in_tp = 0;
        if (rc < 0 || c->gone) {
            call_abort(c);
            return NULL;
        }
        c->last_write = uv_now(a->loop);
        uv_timer_init(a->loop, &c->ping);
        c->ping.data = c;
        c->ping_on = 1;
        uv_timer_start(&c->ping, on_ping, a->ping_ms, a->ping_ms);
        /* Without prompt logprobs to wait for, the echoes go out at once. */
        for (int i = 0; c->r.echo && i < c->n_parts; i++) {
            part *p = &c->parts[i];
            if (!p->plp || p->n_plp == p->n_ids) {
                if (stream_echo(c, p)) {
                    return NULL;
                }
            }
        }
    }
    return c;
fail:
    free(max_tokens);
    answer_error(a, tp, t, &e);
    call_release(c); /* the parts already in the engine are aborted */
    free(c);
    return NULL;
}

/* --- other routes ---------------------------------------------------------------- */

static void route_models(fy_api *a, const fy_api_transport *tp, void *t)
{
    size_t len;
    char *s = fy_oai_models_json(a->model, a->created, fy_engine_max_context(a->engine), &len);
    if (!s) {
        tp->abort(t);
        return;
    }
    answer_json(tp, t, 200, s, len, NULL);
    free(s);
}

/* POST /tokenize: {"prompt": str, "add_special_tokens": true} or
 * {"messages": [...], "add_generation_prompt": true}. */
static void route_tokenize(fy_api *a, const fy_api_request *rq, const fy_api_transport *tp, void *t)
{
    fy_oai_error e = {0};
    json_error_t je;
    json_t *root = json_loadb(rq->body, rq->body_len, 0, &je);
    json_t *p = root ? json_object_get(root, "prompt") : NULL;
    json_t *m = root ? json_object_get(root, "messages") : NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (!json_is_object(root)) {
        fy_oai_fail(&e, 400, NULL, "invalid_json", "the body must be a JSON object");
        goto fail;
    }
    if (m) {
        fy_oai_request r;
        char *body = json_dumps(root, JSON_COMPACT);
        int rc = body ? fy_oai_parse(FY_OAI_CHAT, body, strlen(body), &r, &e) : -1;
        free(body);
        if (rc == 0) {
            int add_special = 0;
            json_t *as = json_object_get(root, "add_special_tokens");
            if (json_is_boolean(as)) {
                add_special = json_is_true(as);
            }
            char *text = NULL;
            size_t len = 0;
            rc = chat_prompt(a, &r, &text, &len, &e);
            if (rc == 0) {
                fy_encode_options eo = {.add_special = add_special, .parse_special = 1};
                if (fy_tokenizer_encode(a->tok, text, len, &eo, &ids, &n)) {
                    rc = fy_oai_fail(&e, 400, "messages", "invalid_value",
                                     "cannot tokenize the rendered messages");
                }
                free(text);
            }
        } else if (!body) {
            fy_oai_fail(&e, 500, NULL, "out_of_memory", "out of memory");
        }
        fy_oai_request_free(&r);
        if (rc) {
            goto fail;
        }
    } else {
        if (!json_is_string(p)) {
            fy_oai_fail(&e, 400, "prompt", p ? "invalid_type" : "missing_required_parameter",
                        "'prompt' (a string) or 'messages' is required");
            goto fail;
        }
        json_t *as = json_object_get(root, "add_special_tokens");
        if (as && !json_is_boolean(as)) {
            fy_oai_fail(&e, 400, "add_special_tokens", "invalid_type",
                        "'add_special_tokens' must be a boolean");
            goto fail;
        }
        fy_encode_options eo = {.add_special = !as || json_is_true(as), .parse_special = 1};
        if (fy_tokenizer_encode(a->tok, json_string_value(p), json_string_length(p), &eo, &ids,
                                &n)) {
            fy_oai_fail(&e, 400, "prompt", "invalid_value", "cannot tokenize 'prompt'");
            goto fail;
        }
    }
    json_t *toks = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(toks, json_integer(ids[i]));
    }
    free(ids);
    json_decref(root);
    answer_jsonv(tp, t,
                 json_pack("{s:I, s:i, s:o, s:n}", "count", (json_int_t)n, "max_model_len",
                           fy_engine_max_context(a->engine), "tokens", toks, "token_strs"));
    return;
fail:
    free(ids);
    json_decref(root);
    answer_error(a, tp, t, &e);
}

/* POST /detokenize: {"tokens": [ids]} -> {"prompt": text}. */
static void route_detokenize(fy_api *a, const fy_api_request *rq, const fy_api_transport *tp,
                             void *t)
{
    fy_oai_error e = {0};
    json_error_t je;
    json_t *root = json_loadb(rq->body, rq->body_len, 0, &je);
    json_t *toks = root ? json_object_get(root, "tokens") : NULL;
    int32_t *ids = NULL;
    if (!json_is_object(root)) {
        fy_oai_fail(&e, 400, NULL, "invalid_json", "the body must be a JSON object");
        goto fail;
    }
    if (!json_is_array(toks)) {
        fy_oai_fail(&e, 400, "tokens", toks ? "invalid_type" : "missing_required_parameter",
                    "'tokens' (a list of token ids) is required");
        goto fail;
    }
    size_t n = json_array_size(toks);
    ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        fy_oai_fail(&e, 500, NULL, "out_of_memory", "out of memory");
        goto fail;
    }
    int vocab = fy_tokenizer_vocab_size(a->tok);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(toks, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= vocab) {
            fy_oai_fail(&e, 400, "tokens", "invalid_value",
                        "'tokens' item %zu is not a token id of this model (0 to %d)", i,
                        vocab - 1);
            goto fail;
        }
        ids[i] = (int32_t)json_integer_value(x);
    }
    char *text = NULL;
    size_t len = 0;
    if (fy_tokenizer_decode(a->tok, ids, n, 0, &text, &len)) {
        fy_oai_fail(&e, 400, "tokens", "invalid_value", "cannot decode 'tokens'");
        goto fail;
    }
    json_t *s = json_stringn(text, len);
    free(text);
    free(ids);
    json_decref(root);
    if (!s) {
        s = json_string("\xef\xbf\xbd");
    }
    answer_jsonv(tp, t, json_pack("{s:o}", "prompt", s));
    return;
fail:
    free(ids);
    json_decref(root);
    answer_error(a, tp, t, &e);
}

static void route_metrics(fy_api *a, const fy_api_transport *tp, void *t)
{
    fy_engine_stats s;
    fy_engine_get_stats(a->engine, &s);
    fy_buf b;
    fy_buf_init(&b, 64 * 1024);
#define G(name, help, fmt, v)                                                                 \
    fy_buf_appendf(&b,                                                                        \
                   "# HELP ferry_" name " " help "\n# TYPE ferry_" name " gauge\nferry_" name \
                   " " fmt "\n",                                                              \
                   v)
#define C(name, help, v)                                                                        \
    fy_buf_appendf(&b,                                                                          \
                   "# HELP ferry_" name " " help "\n# TYPE ferry_" name " counter\nferry_" name \
                   " %llu\n",                                                                   \
                   (unsigned long long)(v))
    G("engine_kv_blocks_total", "KV cache blocks in the pool.", "%d", s.blocks_total);
    G("engine_kv_blocks_used", "KV cache blocks held by running sequences.", "%d", s.blocks_used);
    G("engine_kv_blocks_cached", "Free KV blocks kept for prefix-cache hits.", "%d",
      s.blocks_cached);
    G("engine_kv_blocks_free", "KV cache blocks free.", "%d", s.blocks_free);
    G("engine_kv_cache_usage_perc", "Fraction of KV blocks in use.", "%g",
      s.blocks_total ? (double)s.blocks_used / s.blocks_total : 0.0);
    G("engine_kv_bytes_wasted", "KV bytes allocated but not holding a token.", "%llu",
      (unsigned long long)s.kv_bytes_wasted);
    C("engine_prefix_cache_queries_total", "Full-block prefix-cache lookups.", s.prefix_queries);
    C("engine_prefix_cache_hits_total", "Full-block prefix-cache hits.", s.prefix_hits);
    G("engine_prefix_cache_hit_rate", "Prefix-cache hits per lookup.", "%g", s.prefix_hit_rate);
    G("engine_num_requests_running", "Requests being generated.", "%d", s.running);
    G("engine_num_requests_waiting", "Requests waiting for admission.", "%d", s.waiting);
    C("engine_preemptions_total", "Sequences preempted for lack of KV blocks.", s.preemptions);
    C("engine_steps_total", "Engine steps run.", s.steps);
    C("engine_prompt_tokens_total", "Prompt tokens processed.", s.prompt_tokens);
    C("engine_generation_tokens_total", "Tokens generated.", s.generated_tokens);
    C("api_requests_total", "Requests served by the API.", a->st.requests);
    G("api_requests_active", "Generation requests in flight.", "%llu",
      (unsigned long long)a->st.active);
    C("api_requests_canceled_total", "Generations stopped because the client went away.",
      a->st.canceled);
    C("api_errors_total", "Requests answered with an error.", a->st.errors);
    C("api_rejected_busy_total", "Requests refused with 503 (engine queue full).",
      a->st.rejected_busy);
#undef G
#undef C
    static const fy_http_header h[] = {{"content-type", "text/plain; version=0.0.4", 0, 0}};
    if (!b.data) {
        tp->abort(t);
    } else {
        tp->respond(t, 200, h, 1, b.data, b.len, NULL);
    }
    fy_buf_free(&b);
}

static int route_is(const fy_api_request *r, const char *path)
{
    return strcmp(r->path, path) == 0;
}

fy_api_call *fy_api_handle(fy_api *a, const fy_api_request *r, const fy_api_transport *tp, void *t)
{
    static const struct {
        const char *path;
        const char *method;
    } routes[] = {
        {"/v1/models", "GET"}, {"/v1/completions", "POST"}, {"/v1/chat/completions", "POST"},
        {"/health", "GET"},    {"/tokenize", "POST"},       {"/detokenize", "POST"},
        {"/metrics", "GET"},
    };
    fy_oai_error e = {0};
    a->st.requests++;
    size_t i = 0;
    while (i < sizeof routes / sizeof routes[0] && !route_is(r, routes[i].path)) {
        i++;
    }
    if (i == sizeof routes / sizeof routes[0]) {
        fy_oai_fail(&e, 404, NULL, "not_found", "no route for %.200s", r->path);
        answer_error(a, tp, t, &e);
        return NULL;
    }
    int head = strcmp(r->method, "HEAD") == 0 && strcmp(routes[i].method, "GET") == 0;
    if (strcmp(r->method, routes[i].method) != 0 && !head) {
        fy_oai_fail(&e, 405, NULL, "method_not_allowed", "%s takes %s", routes[i].path,
                    routes[i].method);
        answer_error(a, tp, t, &e);
        return NULL;
    }
    if (route_is(r, "/v1/completions")) {
        return generate(a, FY_OAI_COMPLETION, r, tp, t);
    }
    if (route_is(r, "/v1/chat/completions")) {
        return generate(a, FY_OAI_CHAT, r, tp, t);
    }
    if (route_is(r, "/v1/models")) {
        route_models(a, tp, t);
    } else if (route_is(r, "/health")) {
        tp->respond(t, 200, NULL, 0, "", 0, NULL);
    } else if (route_is(r, "/tokenize")) {
        route_tokenize(a, r, tp, t);
    } else if (route_is(r, "/detokenize")) {
        route_detokenize(a, r, tp, t);
    } else {
        route_metrics(a, tp, t);
    }
    return NULL;
}

/* --- the API object ---------------------------------------------------------------- */

int fy_api_new(const fy_api_options *o, fy_api **out)
{
    *out = NULL;
    if (!o->engine || !o->loop || !o->model_name) {
        return FY_EINVAL;
    }
    fy_api *a = calloc(1, sizeof *a);
    if (!a) {
        return FY_ENOMEM;
    }
    a->loop = o->loop;
    a->engine = o->engine;
    a->tok = fy_engine_tokenizer(o->engine);
    a->tmpl = o->tmpl;
    snprintf(a->model, sizeof a->model, "%s", o->model_name);
    a->ping_ms = o->ping_ms ? o->ping_ms : FY_API_PING_MS;
    a->created = (int64_t)time(NULL);
    if (o->tool_call_parser) {
        if (fy_toolcall_family_parse(o->tool_call_parser, &a->family) < 0) {
            free(a);
            return FY_EINVAL;
        }
    } else if (a->tmpl) {
        size_t len;
        const char *src = fy_chat_template_source(a->tmpl, &len);
        a->family = fy_toolcall_family_detect(src, len);
    }
    if (fy_constrain_new(&a->cons) < 0) {
        free(a);
        return FY_ENOMEM;
    }
    *out = a;
    return 0;
}

void fy_api_free(fy_api *a)
{
    if (!a) {
        return;
    }
    while (a->calls) {
        call_abort(a->calls);
    }
    fy_constrain_free(a->cons);
    free(a);
}

void fy_api_stats_get(const fy_api *a, fy_api_stats *s)
{
    *s = a->st;
}

/* --- the local HTTP transport ------------------------------------------------------- */

typedef struct {
    fy_http_req *req;
    fy_api *api;
    fy_api_call *call;
    size_t backlog; /* bytes written while the socket queue was above its watermark */
} http_io;

static void hx_drained(fy_http_req *req, void *arg)
{
    (void)req;
    ((http_io *)arg)->backlog = 0;
}

static int hx_respond(void *t, int status, const fy_http_header *h, size_t n, const char *body,
                      size_t len, const fy_oai_usage *u)
{
    (void)u;
    http_io *x = t;
    int rc = fy_http_respond(x->req, status, h, n, body, len);
    free(x);
    return rc;
}

static int hx_start(void *t, int status, const fy_http_header *h, size_t n)
{
    http_io *x = t;
    return fy_http_res_start(x->req, status, h, n, -1);
}

static int hx_write(void *t, const char *data, size_t len)
{
    http_io *x = t;
    int rc = fy_http_res_write(x->req, data, len);
    if (rc < 0) {
        return rc;
    }
    if (rc == 1) {
        /* A client that stops reading may leave this much queued, no more. */
        x->backlog += len;
        if (x->backlog > FY_API_MAX_BACKLOG) {
            return FY_ETOOBIG;
        }
        fy_http_res_on_drain(x->req, hx_drained, x);
    }
    return 0;
}

static int hx_end(void *t, const fy_oai_usage *u)
{
    (void)u;
    http_io *x = t;
    int rc = fy_http_res_end(x->req);
    free(x);
    return rc;
}

static void hx_abort(void *t)
{
    http_io *x = t;
    fy_http_res_abort(x->req);
    free(x);
}

static const fy_api_transport http_transport = {hx_respond, hx_start, hx_write, hx_end, hx_abort};

static void hx_on_abort(fy_http_req *req, int status, void *arg)
{
    (void)req;
    (void)status;
    http_io *x = arg;
    fy_api_call *c = x->call;
    if (c) {
        fy_api_call_cancel(c); /* calls hx_abort, which frees X */
    }
}

static void hx_serve(http_io *x)
{
    fy_slice body = fy_http_req_body(x->req);
    fy_api_request r = {
        .method = fy_http_req_method(x->req),
        .path = fy_http_req_path(x->req),
        .key_id = NULL, /* a local client cannot claim a gateway key */
        .body = body.base ? body.base : "",
        .body_len = body.len,
    };
    fy_http_req *req = x->req;
    fy_api_call *c = fy_api_handle(x->api, &r, &http_transport, x);
    if (c) {
        x->call = c;
        fy_http_req_on_abort(req, hx_on_abort, x);
    }
}

static void hx_body_done(fy_http_req *req, int status, void *arg)
{
    http_io *x = arg;
    if (status) {
        fy_http_res_abort(req); /* the server answered 413/408, or the client left */
        free(x);
        return;
    }
    hx_serve(x);
}

void fy_api_http_handler(fy_http_req *req, void *data)
{
    http_io *x = calloc(1, sizeof *x);
    if (!x) {
        fy_http_respond_error(req, 500, "out_of_memory", "out of memory");
        return;
    }
    x->req = req;
    x->api = data;
    if (strcmp(fy_http_req_method(req), "POST") == 0) {
        if (fy_http_req_buffer_body(req, hx_body_done, x)) {
            fy_http_res_abort(req);
            free(x);
        }
        return;
    }
    hx_serve(x);
}
