/* constrain.c: request constraints to grammars (constrain.h). */
#include "runner/api/constrain.h"

#include "common/err.h"
#include "runner/api/jsonschema.h"
#include "runner/api/regex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *key;
    fy_grammar *g;
    uint64_t used;
} centry;

struct fy_constrain {
    centry e[FY_CONSTRAIN_CACHE];
    uint64_t clock;
    fy_constrain_stats st;
};

int fy_constrain_new(fy_constrain **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : FY_ENOMEM;
}

void fy_constrain_free(fy_constrain *c)
{
    if (!c) {
        return;
    }
    for (int i = 0; i < FY_CONSTRAIN_CACHE; i++) {
        free(c->e[i].key);
        fy_grammar_unref(c->e[i].g);
    }
    free(c);
}

void fy_constrain_get_stats(const fy_constrain *c, fy_constrain_stats *st)
{
    *st = c->st;
}

/* The canonical text of R's constraint (malloc'd), or NULL when it has none
 * (*OOM set when out of memory). */
static char *constraint_key(const fy_oai_request *r, fy_toolcall_family family, int *oom)
{
    json_t *k = NULL;
    *oom = 0;
    if (r->tool_choice == FY_OAI_TOOL_AUTO) {
        if (!fy_constrain_trigger(r, family)) {
            return NULL;
        }
        k = json_pack("{s:s, s:i, s:b, s:O}", "k", "auto", "family", (int)family, "parallel",
                      r->parallel_tool_calls, "tools", r->tools);
    } else if (r->tool_choice == FY_OAI_TOOL_REQUIRED) {
        k = json_pack("{s:s, s:b, s:O}", "k", "required", "parallel", r->parallel_tool_calls,
                      "tools", r->tools);
    } else if (r->tool_choice == FY_OAI_TOOL_NAMED) {
        json_t *p = json_object_get(json_object_get(r->named_tool, "function"), "parameters");
        k = json_pack("{s:s, s:O?}", "k", "named", "parameters", p);
    } else if (r->output == FY_OAI_OUT_JSON_OBJECT) {
        k = json_pack("{s:s}", "k", "object");
    } else if (r->output == FY_OAI_OUT_JSON_SCHEMA) {
        k = json_pack("{s:s, s:b, s:O}", "k", "schema", "strict", r->schema_strict, "schema",
                      r->schema);
    } else if (r->output == FY_OAI_OUT_REGEX) {
        k = json_pack("{s:s, s:s%}", "k", "regex", "regex", r->regex, r->regex_len);
    } else if (r->output == FY_OAI_OUT_CHOICE) {
        k = json_pack("{s:s, s:O}", "k", "choice", "choice", r->choices);
    } else {
        return NULL;
    }
    char *s = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    *oom = s == NULL;
    return s;
}

/* A schema's error as the request's: 400 naming PARAM, with the pointer. */
static int schema_fail(fy_oai_error *e, int rc, const char *param, const fy_jsonschema_error *je)
{
    if (rc == FY_ENOMEM) {
        return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
    }
    return fy_oai_fail(e, 400, param, rc == FY_ELIMIT ? "schema_too_large" : "unsupported_schema",
                       "%s: %s (at JSON pointer '%s')", param, je->message,
                       je->pointer[0] ? je->pointer : "");
}

/* The rule for a tool's arguments: its parameters' schema, or any object. */
static int tool_args(fy_gbuild *b, const json_t *tool, size_t index, fy_oai_error *e)
{
    json_t *p = json_object_get(json_object_get(tool, "function"), "parameters");
    if (!p) {
        return fy_jsonschema_any(b, 1);
    }
    int strict = json_is_true(json_object_get(json_object_get(tool, "function"), "strict"));
    fy_jsonschema_error je;
    int r = fy_jsonschema_compile(b, p, strict, &je);
    if (r < 0) {
        char param[64];
        snprintf(param, sizeof param, "tools[%zu].function.parameters", index);
        schema_fail(e, r, param, &je);
    }
    return r;
}

/* KEY ws ":" ws, appended to RULE. */
static void key_colon(fy_gbuild *b, int rule, const char *key, int ws)
{
    fy_gb_lit(b, rule, key, strlen(key));
    fy_gb_ref(b, rule, ws);
    fy_gb_lit(b, rule, ":", 1);
    fy_gb_ref(b, rule, ws);
}

/* How a list of calls is written: OPEN item (SEP ws item)* CLOSE, each
 * item {"name": NAME, ARGS_KEY: ARGS}. */
typedef struct {
    const char *open, *sep, *close, *args_key;
} calls_shape;

/* "required": the list constrain.h describes. */
static const calls_shape required_shape = {"[", ",", "]", "\"parameters\""};

/* The calls R's tools allow, in SHAPE; one alone unless parallel_tool_calls.
 * A tool's arguments follow its schema; under ONLY_STRICT (tool_choice
 * auto) a tool that is not strict takes any object. */
static int calls_rule(fy_gbuild *b, const fy_oai_request *r, int ws, const calls_shape *shape,
                      int only_strict, fy_oai_error *e)
{
    size_t n = json_array_size(r->tools);
    int *items = calloc(n, sizeof *items);
    if (!items) {
        fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
        return FY_ENOMEM;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc >= 0; i++) {
        const json_t *t = json_array_get(r->tools, i);
        const json_t *f = json_object_get(t, "function");
        int args = only_strict && !json_is_true(json_object_get(f, "strict"))
                       ? fy_jsonschema_any(b, 1)
                       : tool_args(b, t, i, e);
        if (args < 0) {
            rc = args;
            break;
        }
        const char *name = json_string_value(json_object_get(f, "name"));
        int it = fy_gb_rule(b);
        fy_gb_lit(b, it, "{", 1);
        fy_gb_ref(b, it, ws);
        key_colon(b, it, "\"name\"", ws);
        fy_gb_lit(b, it, "\"", 1);
        fy_gb_lit(b, it, name, strlen(name)); /* names are [A-Za-z0-9_-] */
        fy_gb_lit(b, it, "\"", 1);
        fy_gb_ref(b, it, ws);
        fy_gb_lit(b, it, ",", 1);
        fy_gb_ref(b, it, ws);
        key_colon(b, it, shape->args_key, ws);
        fy_gb_ref(b, it, args);
        fy_gb_ref(b, it, ws);
        fy_gb_lit(b, it, "}", 1);
        items[i] = it;
    }
    int list = -1;
    if (rc >= 0) {
        int item = fy_gb_choice(b, items, (int)n), more = fy_gb_rule(b);
        list = fy_gb_rule(b);
        fy_gb_lit(b, more, shape->sep, strlen(shape->sep));
        fy_gb_ref(b, more, ws);
        fy_gb_ref(b, more, item);
        fy_gb_ref(b, more, ws);
        fy_gb_lit(b, list, shape->open, strlen(shape->open));
        fy_gb_ref(b, list, ws);
        fy_gb_ref(b, list, item);
        fy_gb_ref(b, list, ws);
        if (r->parallel_tool_calls && shape->sep[0]) {
            fy_gb_repeat(b, list, more, 0, -1);
        }
        fy_gb_lit(b, list, shape->close, strlen(shape->close));
    }
    free(items);
    return rc < 0 ? rc : list;
}

/* tool_choice auto with a strict tool: what a call looks like once its
 * marker (the trigger) was written, per family. Hermes: one object and
 * </tool_call> (the next call has its own marker); Llama 3: calls after
 * <|python_tag|>, ';'-separated; Mistral: the list after [TOOL_CALLS]. */
static const struct {
    fy_toolcall_family family;
    const char *trigger;
    calls_shape shape;
} lazy_shapes[] = {
    {FY_TOOLCALL_HERMES, "<tool_call>", {"", "", "</tool_call>", "\"arguments\""}},
    {FY_TOOLCALL_LLAMA3, "<|python_tag|>", {"", ";", "", "\"parameters\""}},
    {FY_TOOLCALL_MISTRAL, "[TOOL_CALLS]", {"[", ",", "]", "\"arguments\""}},
};

static int any_strict(const fy_oai_request *r)
{
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t)
    {
        if (json_is_true(json_object_get(json_object_get(t, "function"), "strict"))) {
            return 1;
        }
    }
    return 0;
}

/* The body rule of R's constraint in B (without the leading whitespace). */
static int body_rule(fy_gbuild *b, const fy_oai_request *r, fy_toolcall_family family, int ws,
                     int *lead_ws, fy_oai_error *e)
{
    *lead_ws = 1;
    if (r->tool_choice == FY_OAI_TOOL_REQUIRED) {
        return calls_rule(b, r, ws, &required_shape, 0, e);
    }
    if (r->tool_choice == FY_OAI_TOOL_AUTO) {
        for (size_t i = 0; i < sizeof lazy_shapes / sizeof lazy_shapes[0]; i++) {
            if (lazy_shapes[i].family == family) {
                return calls_rule(b, r, ws, &lazy_shapes[i].shape, 1, e);
            }
        }
        return FY_EINVAL;
    }
    if (r->tool_choice == FY_OAI_TOOL_NAMED) {
        size_t i = 0;
        while (json_array_get(r->tools, i) != r->named_tool) {
            i++;
        }
        return tool_args(b, r->named_tool, i, e);
    }
    fy_jsonschema_error je;
    int rc;
    switch (r->output) {
    case FY_OAI_OUT_JSON_OBJECT:
        return fy_jsonschema_any(b, 1);
    case FY_OAI_OUT_JSON_SCHEMA:
        rc = fy_jsonschema_compile(b, r->schema, r->schema_strict, &je);
        if (rc < 0) {
            schema_fail(e, rc, r->output_param, &je);
        }
        return rc;
    case FY_OAI_OUT_REGEX: {
        char err[256] = "";
        int rule = -1;
        *lead_ws = 0;
        rc = fy_regex_compile(b, r->regex, r->regex_len, FY_REGEX_RAW, &rule, err, sizeof err);
        if (rc < 0) {
            fy_oai_fail(e, rc == FY_ENOMEM ? 500 : 400, r->output_param,
                        rc == FY_ELIMIT ? "regex_too_large" : "unsupported_regex", "%s: %s",
                        r->output_param, err);
            return rc;
        }
        return rule;
    }
    case FY_OAI_OUT_CHOICE: {
        *lead_ws = 0;
        int rule = fy_gb_rule(b);
        size_t i;
        json_t *v;
        json_array_foreach(r->choices, i, v)
        {
            if (i > 0) {
                fy_gb_alt(b, rule);
            }
            fy_gb_lit(b, rule, json_string_value(v), json_string_length(v));
        }
        return rule;
    }
    default:
        return FY_EINVAL;
    }
}

static int compile(const fy_oai_request *r, fy_toolcall_family family, fy_grammar **out,
                   fy_oai_error *e)
{
    fy_gbuild *b = NULL;
    if (fy_gbuild_new(&b) < 0) {
        return fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory");
    }
    e->status = 0;
    int ws = fy_jsonschema_ws(b), lead = 1;
    int body = body_rule(b, r, family, ws, &lead, e);
    int rc = 0;
    if (body < 0) {
        if (e->status == 0) {
            fy_oai_fail(e, body == FY_ENOMEM ? 500 : 400, r->output_param, "invalid_value",
                        "the output constraint could not be built: %s", fy_strerror(body));
        }
        rc = -1;
    } else {
        int root = body;
        if (lead) {
            root = fy_gb_rule(b);
            fy_gb_ref(b, root, ws);
            fy_gb_ref(b, root, body);
        }
        char err[256] = "";
        int frc = fy_gbuild_finish(b, root, out, err, sizeof err);
        if (frc < 0) {
            const char *param =
                r->tool_choice == FY_OAI_TOOL_REQUIRED || r->tool_choice == FY_OAI_TOOL_NAMED
                    ? "tools"
                    : r->output_param;
            fy_oai_fail(e, frc == FY_ENOMEM ? 500 : 400, param,
                        frc == FY_ELIMIT ? "schema_too_large" : "unsupported_schema", "%s: %s",
                        param, err);
            rc = -1;
        }
    }
    fy_gbuild_free(b);
    return rc;
}

const char *fy_constrain_trigger(const fy_oai_request *r, fy_toolcall_family family)
{
    if (r->tool_choice != FY_OAI_TOOL_AUTO || !any_strict(r)) {
        return NULL;
    }
    for (size_t i = 0; i < sizeof lazy_shapes / sizeof lazy_shapes[0]; i++) {
        if (lazy_shapes[i].family == family) {
            return lazy_shapes[i].trigger;
        }
    }
    return NULL;
}

int fy_constrain_request(fy_constrain *c, const fy_oai_request *r, fy_toolcall_family family,
                         fy_grammar **out, fy_oai_error *e)
{
    *out = NULL;
    int oom;
    char *key = constraint_key(r, family, &oom);
    if (!key) {
        return oom ? fy_oai_fail(e, 500, NULL, "out_of_memory", "out of memory") : 0;
    }
    c->clock++;
    int lru = 0;
    for (int i = 0; i < FY_CONSTRAIN_CACHE; i++) {
        if (c->e[i].key && strcmp(c->e[i].key, key) == 0) {
            c->e[i].used = c->clock;
            c->st.hits++;
            *out = fy_grammar_ref(c->e[i].g);
            free(key);
            return 0;
        }
        if (c->e[i].used < c->e[lru].used) {
            lru = i;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    fy_grammar *g = NULL;
    if (compile(r, family, &g, e) < 0) {
        free(key);
        return -1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    c->st.compiles++;
    c->st.last_compile_ms =
        (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    free(c->e[lru].key);
    fy_grammar_unref(c->e[lru].g);
    c->e[lru] = (centry){key, fy_grammar_ref(g), c->clock};
    *out = g;
    return 0;
}
