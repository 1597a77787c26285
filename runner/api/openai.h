/* openai.h: the OpenAI API's request and response shapes, without I/O.
 *
 * fy_oai_parse() turns a /v1/completions or /v1/chat/completions body into
 * an fy_oai_request, checking every parameter the way OpenAI (and vLLM) do
 * and naming the one at fault; the builders turn engine output into the
 * response objects and the SSE chunks. Nothing here touches the engine, the
 * tokenizer or a socket, so everything is unit-tested and fuzzable; what
 * needs a token's text takes an fy_oai_tok_text callback.
 *
 * Ownership: a parsed request keeps the body's JSON (`root`); its strings
 * (model, prompt, stop, user) point into it and live until
 * fy_oai_request_free(). Builders return malloc'd NUL-terminated strings (or
 * new jansson references) the caller frees. */
#ifndef FY_API_OPENAI_H
#define FY_API_OPENAI_H

#include "runner/engine/engine.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Caps on a request (each refused with a 400 naming the parameter). */
#define FY_OAI_MAX_N                   16        /* parallel samples */
#define FY_OAI_MAX_STOP                8         /* stop strings (OpenAI allows 4; vLLM more) */
#define FY_OAI_MAX_STOP_LEN            256       /* bytes per stop string */
#define FY_OAI_MAX_STOP_IDS            64        /* stop_token_ids */
#define FY_OAI_MAX_MESSAGES            4096      /* chat messages */
#define FY_OAI_MAX_PROMPT_IDS          (1 << 20) /* token ids over all of a request's prompts */
#define FY_OAI_MAX_PROMPTS             128       /* prompts in one completions request */
#define FY_OAI_MAX_CHOICES             128       /* prompts x n */
#define FY_OAI_MAX_COMPLETION_LOGPROBS 5         /* completions' logprobs int (OpenAI's cap) */
#define FY_OAI_MAX_LOGIT_BIAS          FY_MAX_LOGIT_BIAS /* logit_bias entries (OpenAI: 300) */
#define FY_OAI_MAX_TOOLS               128               /* tools (OpenAI: 128) */
#define FY_OAI_MAX_CHOICE              256               /* structured_outputs.choice strings */

typedef enum { FY_OAI_COMPLETION = 1, FY_OAI_CHAT } fy_oai_kind;

/* One prompt of a completions request: text, or token ids. */
typedef struct {
    const char *text; /* points into the body's JSON, or NULL */
    size_t len;
    int32_t *ids; /* malloc'd (text == NULL), not yet checked against the vocabulary */
    size_t n_ids;
} fy_oai_prompt;

/* What the output is constrained to (response_format, structured_outputs). */
typedef enum {
    FY_OAI_OUT_TEXT = 0,    /* free text */
    FY_OAI_OUT_JSON_OBJECT, /* any JSON object */
    FY_OAI_OUT_JSON_SCHEMA, /* JSON valid against `schema` */
    FY_OAI_OUT_REGEX,       /* a string the `regex` matches in full */
    FY_OAI_OUT_CHOICE,      /* one of the `choices` strings */
} fy_oai_output;

typedef enum {
    FY_OAI_TOOL_NONE = 0, /* no tools, or tool_choice "none": plain text */
    FY_OAI_TOOL_AUTO,     /* the model may call tools (parsed from its text) */
    FY_OAI_TOOL_REQUIRED, /* it must call one or more (constrained) */
    FY_OAI_TOOL_NAMED,    /* it must call `tool_name` (constrained) */
} fy_oai_tool_choice;

typedef struct {
    fy_oai_kind kind;
    json_t *root;      /* the parsed body (owned) */
    const char *model; /* NULL when absent */
    /* Completions: one prompt, or a batch (a list of strings or of token-id
     * lists); the choices are prompt-major, index = prompt * n + sample. */
    fy_oai_prompt *prompts; /* malloc'd [n_prompts] */
    int n_prompts;
    int echo; /* the prompt's text (and with logprobs, its tokens') before the completion's */
    /* Chat. */
    const json_t *messages; /* borrowed from root */
    const json_t *tools;    /* NULL when absent; each checked: {"type": "function",
                                 * "function": {"name", "parameters"?, "strict"?}}, names unique */
    fy_oai_tool_choice tool_choice;
    const char *tool_name;    /* NAMED */
    const json_t *named_tool; /* NAMED: its entry of tools */
    int parallel_tool_calls;  /* default 1 */
    /* Output constraints (both kinds). */
    fy_oai_output output;
    const char *output_param; /* the parameter that asked, for errors */
    const json_t *schema;     /* JSON_SCHEMA (borrowed from root) */
    int schema_strict;
    const char *regex; /* REGEX */
    size_t regex_len;
    const json_t *choices;      /* CHOICE: a list of strings */
    int add_generation_prompt;  /* vLLM extension; default 1 */
    int continue_final_message; /* vLLM extension */
    /* Both. */
    int stream;
    int include_usage; /* stream_options.include_usage */
    int n;
    int has_max_tokens; /* max_tokens or max_completion_tokens given */
    int max_tokens;     /* 0 only with echo: the prompt is scored, nothing generated */
    int logprobs;       /* -1: none; else alternatives per token */
    const char *user;
    const char *stop[FY_OAI_MAX_STOP];
    int n_stop;
    int32_t stop_ids[FY_OAI_MAX_STOP_IDS];
    int n_stop_ids;
    fy_logit_bias *logit_bias; /* malloc'd, or NULL; ids not yet checked against the vocabulary */
    int n_logit_bias;
    fy_sampling sampling; /* stop / stop_ids / logit_bias point at the fields above */
} fy_oai_request;

/* An error answer: status, message, the parameter at fault ("" for none) and
 * a code ("" for none). Its body is common/http.h's fy_http_error_json, the
 * one the gateway uses too (type from the status alone). */
typedef struct {
    int status;
    char param[96];
    char code[48];
    char message[512];
} fy_oai_error;

/* Fills E (snprintf-style message) and returns -1, so a parser can
 * `return fy_oai_fail(...)`. */
int fy_oai_fail(fy_oai_error *e, int status, const char *param, const char *code, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));

/* The error body {"error":{"message","type","param","code"}}\n of
 * fy_http_error_json (malloc'd, *LEN its length). NULL only when out of memory. */
char *fy_oai_error_json(const fy_oai_error *e, size_t *len);

/* Parses and validates BODY[0..LEN) as a KIND request. Returns 0 and fills R
 * (free with fy_oai_request_free, also after an error), or -1 with E filled
 * (400 for every problem with the input). */
int fy_oai_parse(fy_oai_kind kind, const char *body, size_t len, fy_oai_request *r,
                 fy_oai_error *e);
void fy_oai_request_free(fy_oai_request *r);

/* Writes the text of token ID into BUF (at most CAP - 1 bytes, NUL-ended)
 * and returns its length, or a negative FY_E* code. The bytes may be an
 * incomplete UTF-8 sequence (a byte-fallback token). */
typedef int (*fy_oai_tok_text)(void *arg, int32_t id, char *buf, size_t cap);

/* --- Responses ------------------------------------------------------------- */

/* What the whole request used. */
typedef struct {
    int prompt_tokens;
    int completion_tokens;
    int cached_tokens; /* prompt tokens served from the prefix cache */
} fy_oai_usage;

/* One sample's result, accumulated by the caller. */
typedef struct {
    const char *text;
    size_t text_len;
    const char *finish_reason; /* "stop", "length", "tool_calls", or NULL while streaming */
    json_t *logprobs;          /* a logprobs object (borrowed), or NULL */
    json_t *tool_calls;        /* chat: a list of fy_oai_tool_call_json (borrowed), or NULL;
                                * with calls and no text, "content" is null */
} fy_oai_choice;

/* "cmpl-<24 hex>" / "chatcmpl-<24 hex>" from 12 random bytes. */
void fy_oai_make_id(fy_oai_kind kind, char *out, size_t outlen);

/* The finish_reason string of an engine finish code (NULL for NONE). */
const char *fy_oai_finish_reason(fy_finish f);

/* A whole (non-streamed) response object, serialized. */
char *fy_oai_response_json(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                           const fy_oai_choice *choices, int n, const fy_oai_usage *u, size_t *len);

/* One SSE event "data: {chunk}\n\n" for choice INDEX carrying TEXT (may be
 * empty), the role (chat: on a choice's first chunk, ROLE_FIRST), LOGPROBS
 * (borrowed, may be NULL) and FINISH_REASON (NULL while more follows).
 * USAGE, when not NULL, is added as "usage" (continuous usage). */
char *fy_oai_chunk_sse(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                       int index, int role_first, const char *text, size_t text_len,
                       const json_t *logprobs, const char *finish_reason, size_t *len);

/* The final usage chunk of stream_options.include_usage: "choices": []. */
char *fy_oai_usage_chunk_sse(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                             const fy_oai_usage *u, size_t *len);

/* A chat chunk for choice INDEX carrying one piece of tool call CALL_INDEX:
 * its first has CALL_ID and NAME (then "type": "function" too), the later
 * ones NULL for both and the next ARGS piece. ROLE_FIRST as above. */
char *fy_oai_tool_chunk_sse(const char *id, int64_t created, const char *model, int index,
                            int role_first, int call_index, const char *call_id, const char *name,
                            const char *args, size_t args_len, size_t *len);

/* {"id", "type": "function", "function": {"name", "arguments"}} (a new
 * reference; NULL when out of memory). */
json_t *fy_oai_tool_call_json(const char *id, const char *name, const char *args, size_t args_len);

/* A new tool call id: "call_" and 24 random letters and digits, or (NINE)
 * 9 of them, as Mistral's templates require. */
void fy_oai_tool_call_id(char *out, size_t outlen, int nine);

/* An error inside a stream: "data: {"error":...}\n\n". */
char *fy_oai_error_sse(const fy_oai_error *e, size_t *len);

/* Internal to openai*.c: the tools / output parsers (after the sampling
 * parameters and the messages), and a chat chunk's envelope around CH. */
int fy__oai_parse_tools(fy_oai_request *r, fy_oai_error *e);
const char *fy__oai_jtype(const json_t *v); /* "an object", "a string", ... for messages */
int fy__oai_parse_output(fy_oai_request *r, fy_oai_error *e);
char *fy__oai_chunk_dump(const char *id, int64_t created, const char *model, json_t *ch,
                         size_t *len);

#define FY_OAI_SSE_DONE "data: [DONE]\n\n"
#define FY_OAI_SSE_PING ": ping\n\n"

/* Logprobs of generated tokens, in the shape of KIND: chat's
 * {"content": [{"token","logprob","bytes","top_logprobs": [...]}]} or
 * completions' {"tokens","token_logprobs","top_logprobs","text_offset"}.
 * Start with fy_oai_logprobs_new, append each generated token, pass the
 * object to a choice or chunk, json_decref it. TEXT_OFFSET is the token's
 * offset in the completion text (completions only). Returns 0 or FY_ENOMEM /
 * the callback's error. */
json_t *fy_oai_logprobs_new(fy_oai_kind kind);
int fy_oai_logprobs_add(json_t *lp, fy_oai_kind kind, const fy_gen_token *tok, int top_n,
                        size_t text_offset, fy_oai_tok_text text, void *arg);
/* A completions-shape entry for token ID without a logprob (the first token
 * of an echoed prompt: null logprob and null top_logprobs, as OpenAI's
 * legacy API and vLLM give it). */
int fy_oai_logprobs_add_unscored(json_t *lp, int32_t id, size_t text_offset, fy_oai_tok_text text,
                                 void *arg);
/* A new completions-shape object with A's entries then B's (NULL when out of
 * memory). */
json_t *fy_oai_logprobs_concat(const json_t *a, const json_t *b);

/* --- Other endpoints ----------------------------------------------------- */

/* GET /v1/models: one model. */
char *fy_oai_models_json(const char *model, int64_t created, int max_model_len, size_t *len);

#endif
