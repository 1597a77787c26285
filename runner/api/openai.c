/* openai.c: OpenAI request validation and response building (openai.h).
 *
 * Validation follows OpenAI's documented ranges and vLLM's extensions
 * (top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos,
 * add_generation_prompt): a parameter that is present with the wrong type or
 * out of range is refused with a 400 naming it; null means "absent" as in
 * the OpenAI SDKs; unknown members are ignored, as both servers do, so newer
 * clients keep working. */
#include "runner/api/openai.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/utf8.h"
#include "common/http.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fy_oai_fail(fy_oai_error *e, int status, const char *param, const char *code, const char *fmt,
                ...)
{
    e->status = status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    snprintf(e->code, sizeof e->code, "%s", code ? code : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* A JSON string of S[0..N), with each byte of an invalid UTF-8 sequence
 * (and each NUL) replaced by U+FFFD (engine text is valid already; token
 * pieces may not be). */
static json_t *jstr(const char *s, size_t n)
{
    return fy_utf8_json(s, n, "\xEF\xBF\xBD", 3);
}

char *fy_oai_error_json(const fy_oai_error *e, size_t *len)
{
    /* Sized so the message, param and code of an fy_oai_error always fit whole. */
    enum { CAP = 6 * (sizeof e->message + sizeof e->param + sizeof e->code) + 128 };
    char *s = malloc(CAP);
    if (!s) {
        return NULL;
    }
    size_t n = fy_http_error_json(s, CAP, e->status, e->code, e->param, e->message);
    if (len) {
        *len = n;
    }
    return s;
}

/* --- typed getters: 0 absent (or null), 1 present and valid, -1 error ------ */

const char *fy__oai_jtype(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static int get_bool(const json_t *root, const char *key, int *out, fy_oai_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        return fy_oai_fail(e, 400, key, "invalid_type", "'%s' must be a boolean, got %s", key,
                           fy__oai_jtype(v));
    }
    *out = json_is_true(v);
    return 1;
}

static int get_number(const json_t *root, const char *key, double lo, double hi, int lo_open,
                      double *out, fy_oai_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_number(v)) {
        return fy_oai_fail(e, 400, key, "invalid_type", "'%s' must be a number, got %s", key,
                           fy__oai_jtype(v));
    }
    double x = json_number_value(v);
    if (!isfinite(x) || x > hi || x < lo || (lo_open && x == lo)) {
        return fy_oai_fail(e, 400, key, "invalid_value", "'%s' must be %s %g and <= %g, got %g",
                           key, lo_open ? ">" : ">=", lo, hi, x);
    }
    *out = x;
    return 1;
}

static int get_int(const json_t *root, const char *key, long long lo, long long hi, long long *out,
                   fy_oai_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v);
    } else {
        return fy_oai_fail(e, 400, key, "invalid_type", "'%s' must be an integer, got %s", key,
                           fy__oai_jtype(v));
    }
    if (x < lo || x > hi) {
        return fy_oai_fail(e, 400, key, "invalid_value",
                           "'%s' must be between %lld and %lld, got %lld", key, lo, hi, x);
    }
    *out = x;
    return 1;
}

static int get_string(const json_t *root, const char *key, const char **out, fy_oai_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return fy_oai_fail(e, 400, key, "invalid_type", "'%s' must be a string, got %s", key,
                           fy__oai_jtype(v));
    }
    *out = json_string_value(v);
    return 1;
}

/* --- parameters ------------------------------------------------------------ */

static int parse_stop(fy_oai_request *r, fy_oai_error *e)
{
    json_t *v = json_object_get(r->root, "stop");
    if (!v || json_is_null(v)) {
        return 0;
    }
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > FY_OAI_MAX_STOP) {
            return fy_oai_fail(e, 400, "stop", "invalid_value",
                               "'stop' may hold at most %d strings, got %zu", FY_OAI_MAX_STOP, n);
        }
        items = NULL;
    } else if (!json_is_string(v)) {
        return fy_oai_fail(e, 400, "stop", "invalid_type",
                           "'stop' must be a string or a list of strings, got %s",
                           fy__oai_jtype(v));
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = items ? items[i] : json_array_get(v, i);
        if (!json_is_string(s)) {
            return fy_oai_fail(e, 400, "stop", "invalid_type",
                               "'stop' must be a string or a list of strings, item %zu is %s", i,
                               fy__oai_jtype(s));
        }
        size_t len = json_string_length(s);
        if (len == 0 || len > FY_OAI_MAX_STOP_LEN || strlen(json_string_value(s)) != len) {
            return fy_oai_fail(e, 400, "stop", "invalid_value",
                               "each stop string must be 1 to %d bytes (without NUL)",
                               FY_OAI_MAX_STOP_LEN);
        }
        r->stop[r->n_stop++] = json_string_value(s);
    }
    return 0;
}

static int parse_stop_ids(fy_oai_request *r, fy_oai_error *e)
{
    json_t *v = json_object_get(r->root, "stop_token_ids");
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_array(v) || json_array_size(v) > FY_OAI_MAX_STOP_IDS) {
        return fy_oai_fail(e, 400, "stop_token_ids", "invalid_value",
                           "'stop_token_ids' must be a list of at most %d token ids",
                           FY_OAI_MAX_STOP_IDS);
    }
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
            return fy_oai_fail(e, 400, "stop_token_ids", "invalid_value",
                               "'stop_token_ids' item %zu is not a token id", i);
        }
        r->stop_ids[r->n_stop_ids++] = (int32_t)json_integer_value(x);
    }
    return 0;
}

/* logit_bias: {"<token id>": bias in [-100, 100], ...}, OpenAI's shape. The
 * ids are checked against the vocabulary by the caller (it knows the model). */
static int parse_logit_bias(fy_oai_request *r, fy_oai_error *e)
{
    json_t *v = json_object_get(r->root, "logit_bias"), *x;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_object(v)) {
        return fy_oai_fail(e, 400, "logit_bias", "invalid_type",
                           "'logit_bias' must be an object mapping token ids to biases, got %s",
                           fy__oai_jtype(v));
    }
    size_t n = json_object_size(v), kl;
    if (n > FY_OAI_MAX_LOGIT_BIAS) {
        return fy_oai_fail(e, 400, "logit_bias", "invalid_value",
                           "'logit_bias' may hold at most %d entries, got %zu",
                           FY_OAI_MAX_LOGIT_BIAS, n);
    }
    if (n == 0) {
        return 0;
    }
    if (!(r->logit_bias = malloc(n * sizeof *r->logit_bias))) {
        return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
    }
    const char *key;
    json_object_keylen_foreach(v, key, kl, x)
    {
        long long id = 0;
        size_t i = 0;
        while (i < kl && i < 10 && key[i] >= '0' && key[i] <= '9') {
            id = id * 10 + (key[i++] - '0');
        }
        if (kl == 0 || i != kl || id > INT32_MAX) {
            return fy_oai_fail(e, 400, "logit_bias", "invalid_value",
                               "'logit_bias' keys must be token ids (decimal integers), got "
                               "'%.40s'",
                               key);
        }
        if (!json_is_number(x)) {
            return fy_oai_fail(e, 400, "logit_bias", "invalid_type",
                               "'logit_bias' value for token %lld must be a number, got %s", id,
                               fy__oai_jtype(x));
        }
        double b = json_number_value(x);
        if (!isfinite(b) || b < -100 || b > 100) {
            return fy_oai_fail(e, 400, "logit_bias", "invalid_value",
                               "'logit_bias' value for token %lld must be between -100 and 100, "
                               "got %g",
                               id, b);
        }
        r->logit_bias[r->n_logit_bias++] = (fy_logit_bias){(int32_t)id, (float)b};
    }
    return 0;
}

/* The sampling parameters both endpoints share. */
static int parse_sampling(fy_oai_request *r, fy_oai_error *e)
{
    fy_sampling *s = &r->sampling;
    double d;
    long long x;
    int rc;
    if ((rc = get_number(r->root, "temperature", 0, 2, 0, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->temperature = (float)d;
    }
    if ((rc = get_number(r->root, "top_p", 0, 1, 1, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->top_p = (float)d;
    }
    if ((rc = get_int(r->root, "top_k", -1, 1 << 20, &x, e)) < 0) {
        return -1;
    } else if (rc) {
        s->top_k = x <= 0 ? 0 : (int)x; /* -1 and 0 both mean off (vLLM) */
    }
    if ((rc = get_number(r->root, "min_p", 0, 1, 0, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->min_p = (float)d;
    }
    if ((rc = get_number(r->root, "presence_penalty", -2, 2, 0, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->presence_penalty = (float)d;
    }
    if ((rc = get_number(r->root, "frequency_penalty", -2, 2, 0, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->frequency_penalty = (float)d;
    }
    if ((rc = get_number(r->root, "repetition_penalty", 0, 10, 1, &d, e)) < 0) {
        return -1;
    } else if (rc) {
        s->repetition_penalty = (float)d;
    }
    if ((rc = get_int(r->root, "seed", INT64_MIN, INT64_MAX, &x, e)) < 0) {
        return -1;
    } else if (rc) {
        s->has_seed = 1;
        s->seed = (uint64_t)x;
    }
    if (get_bool(r->root, "ignore_eos", &s->ignore_eos, e) < 0) {
        return -1;
    }
    if (parse_stop(r, e) || parse_stop_ids(r, e) || parse_logit_bias(r, e)) {
        return -1;
    }
    s->stop = r->stop;
    s->n_stop = r->n_stop;
    s->stop_ids = r->stop_ids;
    s->n_stop_ids = r->n_stop_ids;
    s->logit_bias = r->logit_bias;
    s->n_logit_bias = r->n_logit_bias;
    return 0;
}

/* Parameters OpenAI defines that this server does not implement: refused
 * rather than silently ignored, so a client never gets a different answer
 * than it asked for. */
static int refuse_unsupported(fy_oai_request *r, fy_oai_error *e)
{
    json_t *v = json_object_get(r->root, "best_of");
    if (v && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == (json_int_t)r->n)) {
        return fy_oai_fail(e, 400, "best_of", "unsupported_parameter",
                           "'best_of' is not supported (only best_of == n)");
    }
    v = json_object_get(r->root, "suffix");
    if (v && !json_is_null(v)) {
        return fy_oai_fail(e, 400, "suffix", "unsupported_parameter", "'suffix' is not supported");
    }
    return 0;
}

/* A list of token ids, each 0..INT32_MAX, into *IDS (malloc'd). WHAT names
 * it in messages ("'prompt'" or "'prompt' item 3"). */
static int parse_ids(const json_t *p, const char *what, int32_t **ids, size_t *n, fy_oai_error *e)
{
    size_t k = json_array_size(p);
    if (k == 0) {
        return fy_oai_fail(e, 400, "prompt", "invalid_value", "%s is empty", what);
    }
    if (!(*ids = malloc(k * sizeof **ids))) {
        return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
    }
    for (size_t i = 0; i < k; i++) {
        json_t *x = json_array_get(p, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX) {
            return fy_oai_fail(e, 400, "prompt", "invalid_value",
                               "%s: token %zu is not a token id (%s)", what, i, fy__oai_jtype(x));
        }
        (*ids)[i] = (int32_t)json_integer_value(x);
    }
    *n = k;
    return 0;
}

/* prompt: a string, a list of token ids, or a batch -- a list of strings or
 * a list of token-id lists (OpenAI's four shapes). */
static int parse_prompt(fy_oai_request *r, fy_oai_error *e)
{
    json_t *p = json_object_get(r->root, "prompt");
    if (!p || json_is_null(p)) {
        return fy_oai_fail(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    }
    if (!json_is_string(p) && !json_is_array(p)) {
        return fy_oai_fail(e, 400, "prompt", "invalid_type",
                           "'prompt' must be a string, a list of strings, a list of token ids or "
                           "a list of token-id lists, got %s",
                           fy__oai_jtype(p));
    }
    size_t n = json_is_array(p) ? json_array_size(p) : 1;
    if (n == 0) {
        return fy_oai_fail(e, 400, "prompt", "invalid_value", "'prompt' is empty");
    }
    json_t *first = json_is_array(p) ? json_array_get(p, 0) : p;
    int batch = json_is_array(p) && (json_is_string(first) || json_is_array(first));
    if (!batch) {
        n = 1;
    }
    if (n > FY_OAI_MAX_PROMPTS || n * (size_t)r->n > FY_OAI_MAX_CHOICES) {
        return fy_oai_fail(e, 400, "prompt", "invalid_value",
                           "a batch may hold at most %d prompts and %d choices (prompts x n), "
                           "got %zu prompts x %d",
                           FY_OAI_MAX_PROMPTS, FY_OAI_MAX_CHOICES, n, r->n);
    }
    if (!(r->prompts = calloc(n, sizeof *r->prompts))) {
        return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
    }
    r->n_prompts = (int)n;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *x = batch ? json_array_get(p, i) : p;
        fy_oai_prompt *q = &r->prompts[i];
        char what[48];
        snprintf(what, sizeof what, batch ? "'prompt' item %zu" : "'prompt'", i);
        if (batch && json_typeof(x) != json_typeof(first)) {
            return fy_oai_fail(e, 400, "prompt", "invalid_type",
                               "a batch of prompts is all strings or all token-id lists: %s is %s",
                               what, fy__oai_jtype(x));
        }
        if (json_is_string(x)) {
            q->text = json_string_value(x);
            q->len = json_string_length(x);
        } else {
            if (json_array_size(x) > FY_OAI_MAX_PROMPT_IDS - total) {
                return fy_oai_fail(e, 400, "prompt", "invalid_value",
                                   "the prompts have more than %d tokens", FY_OAI_MAX_PROMPT_IDS);
            }
            if (parse_ids(x, what, &q->ids, &q->n_ids, e)) {
                return -1;
            }
            total += q->n_ids;
        }
    }
    return 0;
}

static int parse_content(const json_t *c, size_t i, int may_be_null, fy_oai_error *e)
{
    char param[96];
    snprintf(param, sizeof param, "messages[%zu].content", i);
    if (!c || json_is_null(c)) {
        if (may_be_null) {
            return 0;
        }
        return fy_oai_fail(e, 400, param, "missing_required_parameter",
                           "'%s' is required for this role", param);
    }
    if (json_is_string(c)) {
        return 0;
    }
    if (!json_is_array(c)) {
        return fy_oai_fail(e, 400, param, "invalid_type",
                           "'%s' must be a string or a list of content parts, got %s", param,
                           fy__oai_jtype(c));
    }
    size_t j;
    json_t *part;
    json_array_foreach(c, j, part)
    {
        json_t *type = json_is_object(part) ? json_object_get(part, "type") : NULL;
        snprintf(param, sizeof param, "messages[%zu].content[%zu].type", i, j);
        if (!json_is_string(type)) {
            return fy_oai_fail(e, 400, param, "invalid_type",
                               "each content part must be an object with a 'type'");
        }
        if (strcmp(json_string_value(type), "text") != 0) {
            return fy_oai_fail(e, 400, param, "unsupported_parameter",
                               "content part type '%s' is not supported (only 'text')",
                               json_string_value(type));
        }
        if (!json_is_string(json_object_get(part, "text"))) {
            snprintf(param, sizeof param, "messages[%zu].content[%zu].text", i, j);
            return fy_oai_fail(e, 400, param, "invalid_type", "'%s' must be a string", param);
        }
    }
    return 0;
}

static int parse_messages(fy_oai_request *r, fy_oai_error *e)
{
    static const char *const roles[] = {"system", "developer", "user", "assistant", "tool"};
    json_t *m = json_object_get(r->root, "messages");
    if (!m || json_is_null(m)) {
        return fy_oai_fail(e, 400, "messages", "missing_required_parameter",
                           "'messages' is required");
    }
    if (!json_is_array(m)) {
        return fy_oai_fail(e, 400, "messages", "invalid_type",
                           "'messages' must be a list of messages, got %s", fy__oai_jtype(m));
    }
    size_t n = json_array_size(m);
    if (n == 0) {
        return fy_oai_fail(e, 400, "messages", "invalid_value", "'messages' must not be empty");
    }
    if (n > FY_OAI_MAX_MESSAGES) {
        return fy_oai_fail(e, 400, "messages", "invalid_value",
                           "'messages' holds more than %d messages", FY_OAI_MAX_MESSAGES);
    }
    size_t i;
    json_t *msg;
    json_array_foreach(m, i, msg)
    {
        char param[96];
        if (!json_is_object(msg)) {
            snprintf(param, sizeof param, "messages[%zu]", i);
            return fy_oai_fail(e, 400, param, "invalid_type", "'%s' must be an object, got %s",
                               param, fy__oai_jtype(msg));
        }
        snprintf(param, sizeof param, "messages[%zu].role", i);
        json_t *role = json_object_get(msg, "role");
        if (!json_is_string(role)) {
            return fy_oai_fail(e, 400, param, "invalid_type", "'%s' must be a string", param);
        }
        const char *rs = json_string_value(role);
        int known = 0;
        for (size_t k = 0; k < sizeof roles / sizeof roles[0]; k++) {
            known |= strcmp(rs, roles[k]) == 0;
        }
        if (!known) {
            return fy_oai_fail(e, 400, param, "invalid_value",
                               "unknown role '%.40s' (system, developer, user, assistant or tool)",
                               rs);
        }
        int assistant = strcmp(rs, "assistant") == 0;
        if (parse_content(json_object_get(msg, "content"), i, assistant, e)) {
            return -1;
        }
    }
    r->messages = m;
    json_t *tools = json_object_get(r->root, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools)) {
            return fy_oai_fail(e, 400, "tools", "invalid_type", "'tools' must be a list");
        }
        r->tools = tools;
    }
    if (fy__oai_parse_tools(r, e)) {
        return -1;
    }
    if (get_bool(r->root, "add_generation_prompt", &r->add_generation_prompt, e) < 0 ||
        get_bool(r->root, "continue_final_message", &r->continue_final_message, e) < 0) {
        return -1;
    }
    if (r->add_generation_prompt && r->continue_final_message) {
        return fy_oai_fail(e, 400, "continue_final_message", "invalid_value",
                           "'continue_final_message' and 'add_generation_prompt' cannot both "
                           "be true");
    }
    return 0;
}

static int parse_logprobs(fy_oai_request *r, fy_oai_error *e)
{
    long long x;
    int rc;
    if (r->kind == FY_OAI_COMPLETION) {
        json_t *v = json_object_get(r->root, "logprobs");
        if (json_is_boolean(v)) {
            /* Some clients send the chat shape here; true means the token's own. */
            r->logprobs = json_is_true(v) ? 0 : -1;
            return 0;
        }
        if ((rc = get_int(r->root, "logprobs", 0, FY_MAX_LOGPROBS, &x, e)) < 0) {
            return -1;
        }
        r->logprobs = rc ? (int)x : -1;
        return 0;
    }
    int want = 0;
    if (get_bool(r->root, "logprobs", &want, e) < 0) {
        return -1;
    }
    if ((rc = get_int(r->root, "top_logprobs", 0, FY_MAX_LOGPROBS, &x, e)) < 0) {
        return -1;
    }
    if (rc && !want) {
        return fy_oai_fail(e, 400, "top_logprobs", "invalid_value",
                           "'top_logprobs' needs 'logprobs': true");
    }
    r->logprobs = want ? (rc ? (int)x : 0) : -1;
    return 0;
}

int fy_oai_parse(fy_oai_kind kind, const char *body, size_t len, fy_oai_request *r, fy_oai_error *e)
{
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->kind = kind;
    r->n = 1;
    r->logprobs = -1;
    r->add_generation_prompt = 1;
    fy_sampling_defaults(&r->sampling);
    json_error_t je;
    r->root = json_loadb(body, len, 0, &je);
    if (!r->root) {
        return fy_oai_fail(e, 400, NULL, "invalid_json",
                           "the body is not valid JSON: %s (line %d, column %d)", je.text, je.line,
                           je.column);
    }
    if (!json_is_object(r->root)) {
        return fy_oai_fail(e, 400, NULL, "invalid_type", "the body must be a JSON object");
    }
    long long x;
    int rc;
    if (get_string(r->root, "model", &r->model, e) < 0 ||
        get_bool(r->root, "stream", &r->stream, e) < 0) {
        return -1;
    }
    json_t *so = json_object_get(r->root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            return fy_oai_fail(e, 400, "stream_options", "invalid_type",
                               "'stream_options' must be an object");
        }
        if (!r->stream) {
            return fy_oai_fail(e, 400, "stream_options", "invalid_value",
                               "'stream_options' is only allowed when 'stream' is true");
        }
        if (get_bool(so, "include_usage", &r->include_usage, e) < 0) {
            snprintf(e->param, sizeof e->param, "stream_options.include_usage");
            return -1;
        }
    }
    if ((rc = get_int(r->root, "n", 1, FY_OAI_MAX_N, &x, e)) < 0) {
        return -1;
    } else if (rc) {
        r->n = (int)x;
    }
    if (kind == FY_OAI_COMPLETION && get_bool(r->root, "echo", &r->echo, e) < 0) {
        return -1;
    }
    /* max_completion_tokens replaces max_tokens in chat; either is accepted.
     * 0 scores a prompt without generating (echo), as vLLM allows it. */
    const char *mt_name = "max_completion_tokens";
    if ((rc = get_int(r->root, mt_name, 1, INT32_MAX, &x, e)) < 0) {
        return -1;
    }
    if (!rc) {
        mt_name = "max_tokens";
        if ((rc = get_int(r->root, mt_name, 0, INT32_MAX, &x, e)) < 0) {
            return -1;
        }
        if (rc && x == 0 && !r->echo) {
            return fy_oai_fail(e, 400, mt_name, "invalid_value",
                               "'max_tokens' must be at least 1 (0 only with 'echo': true, to "
                               "score the prompt without generating)");
        }
    }
    if (rc) {
        r->has_max_tokens = 1;
        r->max_tokens = (int)x;
        r->sampling.max_tokens = (int)x;
    }
    if (get_string(r->root, "user", &r->user, e) < 0) {
        return -1;
    }
    if (parse_sampling(r, e) || parse_logprobs(r, e) || refuse_unsupported(r, e)) {
        return -1;
    }
    r->sampling.logprobs = r->logprobs;
    if (kind == FY_OAI_COMPLETION) {
        if (r->echo) {
            /* The echoed prompt's tokens get logprobs as the completion's do. */
            r->sampling.prompt_logprobs = r->logprobs;
        }
        if (parse_prompt(r, e)) {
            return -1;
        }
    } else if (parse_messages(r, e)) {
        return -1;
    }
    return fy__oai_parse_output(r, e);
}

void fy_oai_request_free(fy_oai_request *r)
{
    if (!r) {
        return;
    }
    json_decref(r->root);
    for (int i = 0; r->prompts && i < r->n_prompts; i++) {
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    free(r->logit_bias);
    memset(r, 0, sizeof *r);
}

/* --- responses ------------------------------------------------------------- */

void fy_oai_make_id(fy_oai_kind kind, char *out, size_t outlen)
{
    uint8_t raw[12];
    char hex[25];
    if (fy_random_bytes(raw, sizeof raw)) {
        memset(raw, 0, sizeof raw);
    }
    fy_hex_encode(raw, sizeof raw, hex, sizeof hex);
    snprintf(out, outlen, "%s-%s", kind == FY_OAI_CHAT ? "chatcmpl" : "cmpl", hex);
}

const char *fy_oai_finish_reason(fy_finish f)
{
    switch (f) {
    case FY_FINISH_STOP:
        return "stop";
    case FY_FINISH_LENGTH:
        return "length";
    case FY_FINISH_ABORT:
        return "abort";
    case FY_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}

static json_t *usage_json(const fy_oai_usage *u)
{
    return json_pack("{s:i, s:i, s:i, s:{s:i}}", "prompt_tokens", u->prompt_tokens,
                     "completion_tokens", u->completion_tokens, "total_tokens",
                     u->prompt_tokens + u->completion_tokens, "prompt_tokens_details",
                     "cached_tokens", u->cached_tokens);
}

static json_t *envelope(fy_oai_kind kind, int chunk, const char *id, int64_t created,
                        const char *model)
{
    const char *object = kind == FY_OAI_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                             : "text_completion";
    return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", object, "created",
                     (json_int_t)created, "model", model);
}

static char *dump_free(json_t *root, const char *prefix, const char *suffix, size_t *len)
{
    if (!root) {
        return NULL;
    }
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) {
        return NULL;
    }
    size_t pl = strlen(prefix), sl = strlen(s), xl = strlen(suffix);
    char *o = malloc(pl + sl + xl + 1);
    if (o) {
        memcpy(o, prefix, pl);
        memcpy(o + pl, s, sl);
        memcpy(o + pl + sl, suffix, xl + 1);
        if (len) {
            *len = pl + sl + xl;
        }
    }
    free(s);
    return o;
}

static json_t *jlogprobs(const json_t *lp)
{
    return lp ? json_deep_copy(lp) : json_null();
}

char *fy_oai_response_json(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                           const fy_oai_choice *choices, int n, const fy_oai_usage *u, size_t *len)
{
    json_t *root = envelope(kind, 0, id, created, model);
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) {
        const fy_oai_choice *c = &choices[i];
        json_t *ch = json_pack("{s:i}", "index", i);
        json_t *text = jstr(c->text ? c->text : "", c->text ? c->text_len : 0);
        if (kind == FY_OAI_CHAT) {
            int calls = c->tool_calls && json_array_size(c->tool_calls) > 0;
            if (calls && c->text_len == 0) {
                json_decref(text);
                text = json_null();
            }
            json_t *msg = json_pack("{s:s, s:o}", "role", "assistant", "content", text);
            if (calls) {
                json_object_set(msg, "tool_calls", c->tool_calls);
            }
            json_object_set_new(ch, "message", msg);
        } else {
            json_object_set_new(ch, "text", text);
        }
        json_object_set_new(ch, "logprobs", jlogprobs(c->logprobs));
        json_object_set_new(ch, "finish_reason",
                            c->finish_reason ? json_string(c->finish_reason) : json_null());
        json_array_append_new(arr, ch);
    }
    json_object_set_new(root, "choices", arr);
    json_object_set_new(root, "usage", usage_json(u));
    return dump_free(root, "", "", len);
}

char *fy_oai_chunk_sse(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                       int index, int role_first, const char *text, size_t text_len,
                       const json_t *logprobs, const char *finish_reason, size_t *len)
{
    json_t *root = envelope(kind, 1, id, created, model);
    json_t *ch = json_pack("{s:i}", "index", index);
    json_t *t = jstr(text ? text : "", text ? text_len : 0);
    if (kind == FY_OAI_CHAT) {
        json_t *delta = json_object();
        if (role_first) {
            json_object_set_new(delta, "role", json_string("assistant"));
        }
        /* The last chunk of a choice carries an empty delta, as OpenAI's. */
        if (text_len || role_first || !finish_reason) {
            json_object_set_new(delta, "content", t);
        } else {
            json_decref(t);
        }
        json_object_set_new(ch, "delta", delta);
    } else {
        json_object_set_new(ch, "text", t);
    }
    json_object_set_new(ch, "logprobs", jlogprobs(logprobs));
    json_object_set_new(ch, "finish_reason",
                        finish_reason ? json_string(finish_reason) : json_null());
    json_object_set_new(root, "choices", json_pack("[o]", ch));
    return dump_free(root, "data: ", "\n\n", len);
}

char *fy__oai_chunk_dump(const char *id, int64_t created, const char *model, json_t *ch,
                         size_t *len)
{
    json_t *root = envelope(FY_OAI_CHAT, 1, id, created, model);
    json_object_set_new(root, "choices", json_pack("[o]", ch));
    return dump_free(root, "data: ", "\n\n", len);
}

char *fy_oai_usage_chunk_sse(fy_oai_kind kind, const char *id, int64_t created, const char *model,
                             const fy_oai_usage *u, size_t *len)
{
    json_t *root = envelope(kind, 1, id, created, model);
    json_object_set_new(root, "choices", json_array());
    json_object_set_new(root, "usage", usage_json(u));
    return dump_free(root, "data: ", "\n\n", len);
}

char *fy_oai_error_sse(const fy_oai_error *e, size_t *len)
{
    size_t n;
    char *j = fy_oai_error_json(e, &n);
    if (!j) {
        return NULL;
    }
    if (n && j[n - 1] == '\n') {
        n--; /* the event's own blank line ends it */
    }
    char *o = malloc(n + 9);
    if (o) {
        memcpy(o, "data: ", 6);
        memcpy(o + 6, j, n);
        memcpy(o + 6 + n, "\n\n", 3);
        if (len) {
            *len = n + 8;
        }
    }
    free(j);
    return o;
}

/* --- logprobs -------------------------------------------------------------- */

json_t *fy_oai_logprobs_new(fy_oai_kind kind)
{
    if (kind == FY_OAI_CHAT) {
        return json_pack("{s:[]}", "content");
    }
    return json_pack("{s:[], s:[], s:[], s:[]}", "tokens", "token_logprobs", "top_logprobs",
                     "text_offset");
}

/* A token's entry: {"token", "logprob", "bytes"} (chat) with the text as
 * given by the callback. */
static json_t *chat_token(int32_t id, float logprob, fy_oai_tok_text text, void *arg, int *rc)
{
    char buf[512];
    int n = text(arg, id, buf, sizeof buf);
    if (n < 0) {
        *rc = n;
        return NULL;
    }
    json_t *bytes = json_array();
    for (int i = 0; i < n; i++) {
        json_array_append_new(bytes, json_integer((unsigned char)buf[i]));
    }
    return json_pack("{s:o, s:f, s:o}", "token", jstr(buf, (size_t)n), "logprob", (double)logprob,
                     "bytes", bytes);
}

int fy_oai_logprobs_add(json_t *lp, fy_oai_kind kind, const fy_gen_token *tok, int top_n,
                        size_t text_offset, fy_oai_tok_text text, void *arg)
{
    int rc = 0;
    if (top_n > tok->n_top) {
        top_n = tok->n_top;
    }
    if (kind == FY_OAI_CHAT) {
        json_t *e = chat_token(tok->id, tok->logprob, text, arg, &rc);
        if (!e) {
            return rc ? rc : FY_ENOMEM;
        }
        json_t *tops = json_array();
        for (int i = 0; i < top_n; i++) {
            json_t *t = chat_token(tok->top[i].id, tok->top[i].logprob, text, arg, &rc);
            if (!t) {
                json_decref(tops);
                json_decref(e);
                return rc ? rc : FY_ENOMEM;
            }
            json_array_append_new(tops, t);
        }
        json_object_set_new(e, "top_logprobs", tops);
        return json_array_append_new(json_object_get(lp, "content"), e) ? FY_ENOMEM : 0;
    }
    char buf[512];
    int n = text(arg, tok->id, buf, sizeof buf);
    if (n < 0) {
        return n;
    }
    json_array_append_new(json_object_get(lp, "tokens"), jstr(buf, (size_t)n));
    json_array_append_new(json_object_get(lp, "token_logprobs"), json_real(tok->logprob));
    json_array_append_new(json_object_get(lp, "text_offset"),
                          json_integer((json_int_t)text_offset));
    json_t *tops = json_object();
    for (int i = 0; i < top_n; i++) {
        n = text(arg, tok->top[i].id, buf, sizeof buf);
        if (n < 0) {
            json_decref(tops);
            return n;
        }
        json_t *k = jstr(buf, (size_t)n);
        /* Two ids with the same text keep the likelier (listed first). */
        if (k && !json_object_get(tops, json_string_value(k))) {
            json_object_set_new(tops, json_string_value(k), json_real(tok->top[i].logprob));
        }
        json_decref(k);
    }
    json_array_append_new(json_object_get(lp, "top_logprobs"), top_n > 0 ? tops : json_null());
    if (top_n <= 0) {
        json_decref(tops);
    }
    return 0;
}

int fy_oai_logprobs_add_unscored(json_t *lp, int32_t id, size_t text_offset, fy_oai_tok_text text,
                                 void *arg)
{
    char buf[512];
    int n = text(arg, id, buf, sizeof buf);
    if (n < 0) {
        return n;
    }
    if (json_array_append_new(json_object_get(lp, "tokens"), jstr(buf, (size_t)n)) ||
        json_array_append_new(json_object_get(lp, "token_logprobs"), json_null()) ||
        json_array_append_new(json_object_get(lp, "top_logprobs"), json_null()) ||
        json_array_append_new(json_object_get(lp, "text_offset"),
                              json_integer((json_int_t)text_offset))) {
        return FY_ENOMEM;
    }
    return 0;
}

json_t *fy_oai_logprobs_concat(const json_t *a, const json_t *b)
{
    static const char *const keys[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    json_t *o = json_deep_copy(a);
    for (size_t i = 0; o && i < sizeof keys / sizeof keys[0]; i++) {
        json_t *more = json_deep_copy(json_object_get(b, keys[i]));
        if (!more || json_array_extend(json_object_get(o, keys[i]), more)) {
            json_decref(o);
            o = NULL;
        }
        json_decref(more);
    }
    return o;
}

/* --- other endpoints -------------------------------------------------------- */

char *fy_oai_models_json(const char *model, int64_t created, int max_model_len, size_t *len)
{
    json_t *m = json_pack("{s:s, s:s, s:I, s:s, s:s, s:i}", "id", model, "object", "model",
                          "created", (json_int_t)created, "owned_by", "ferry", "root", model,
                          "max_model_len", max_model_len);
    json_t *root = json_pack("{s:s, s:[o]}", "object", "list", "data", m);
    return dump_free(root, "", "", len);
}
