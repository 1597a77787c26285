/* openai_tools.c: the parts of an OpenAI request that constrain its output
 * (tools, tool_choice, parallel_tool_calls, response_format and vLLM's
 * structured_outputs) and the tool_calls shapes of the responses. Parsing
 * only: what the constraints compile to is runner/api/constrain.h's. */
#include "runner/api/openai.h"

#include "common/crypto.h"
#include "common/utf8.h"

#include <stdio.h>
#include <string.h>

/* OpenAI's function names: 1..64 of [a-zA-Z0-9_-]. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

static int parse_tool_list(fy_oai_request *r, fy_oai_error *e)
{
    const json_t *tools = r->tools;
    if (json_array_size(tools) > FY_OAI_MAX_TOOLS) {
        return fy_oai_fail(e, 400, "tools", "invalid_value", "'tools' holds more than %d tools",
                           FY_OAI_MAX_TOOLS);
    }
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        char p[96];
        snprintf(p, sizeof p, "tools[%zu]", i);
        json_t *type = json_object_get(t, "type");
        if (!json_is_object(t) || !json_is_string(type) ||
            strcmp(json_string_value(type), "function") != 0) {
            return fy_oai_fail(e, 400, p, "invalid_value",
                               "'%s' must be {\"type\": \"function\", \"function\": {...}}", p);
        }
        json_t *f = json_object_get(t, "function");
        snprintf(p, sizeof p, "tools[%zu].function", i);
        if (!json_is_object(f)) {
            return fy_oai_fail(e, 400, p, "invalid_type", "'%s' must be an object, got %s", p,
                               f ? fy__oai_jtype(f) : "nothing");
        }
        json_t *name = json_object_get(f, "name");
        snprintf(p, sizeof p, "tools[%zu].function.name", i);
        if (!json_is_string(name) || !name_ok(json_string_value(name))) {
            return fy_oai_fail(e, 400, p, "invalid_value",
                               "'%s' must be 1 to 64 letters, digits, '_' or '-'", p);
        }
        for (size_t k = 0; k < i; k++) {
            json_t *o =
                json_object_get(json_object_get(json_array_get(tools, k), "function"), "name");
            if (strcmp(json_string_value(o), json_string_value(name)) == 0) {
                return fy_oai_fail(e, 400, p, "invalid_value", "two tools are named '%s'",
                                   json_string_value(name));
            }
        }
        json_t *params = json_object_get(f, "parameters");
        snprintf(p, sizeof p, "tools[%zu].function.parameters", i);
        if (params && !json_is_object(params)) {
            return fy_oai_fail(e, 400, p, "invalid_type", "'%s' must be a JSON Schema object", p);
        }
        json_t *strict = json_object_get(f, "strict");
        snprintf(p, sizeof p, "tools[%zu].function.strict", i);
        if (strict && !json_is_null(strict) && !json_is_boolean(strict)) {
            return fy_oai_fail(e, 400, p, "invalid_type", "'%s' must be a boolean", p);
        }
    }
    return 0;
}

static int parse_tool_choice(fy_oai_request *r, fy_oai_error *e)
{
    json_t *tc = json_object_get(r->root, "tool_choice");
    int have = r->tools && json_array_size(r->tools) > 0;
    r->tool_choice = have ? FY_OAI_TOOL_AUTO : FY_OAI_TOOL_NONE;
    if (!tc || json_is_null(tc)) {
        return 0;
    }
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        if (strcmp(s, "none") == 0) {
            r->tool_choice = FY_OAI_TOOL_NONE;
            return 0;
        }
        if (strcmp(s, "auto") != 0 && strcmp(s, "required") != 0) {
            return fy_oai_fail(e, 400, "tool_choice", "invalid_value",
                               "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                               "{\"type\": \"function\", \"function\": {\"name\": ...}}");
        }
        if (!have) {
            return fy_oai_fail(e, 400, "tool_choice", "invalid_value",
                               "'tool_choice' \"%s\" needs a non-empty 'tools'", s);
        }
        r->tool_choice = strcmp(s, "auto") == 0 ? FY_OAI_TOOL_AUTO : FY_OAI_TOOL_REQUIRED;
        return 0;
    }
    json_t *f = json_is_object(tc) ? json_object_get(tc, "function") : NULL;
    json_t *type = json_is_object(tc) ? json_object_get(tc, "type") : NULL;
    json_t *name = json_is_object(f) ? json_object_get(f, "name") : NULL;
    if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0 ||
        !json_is_string(name)) {
        return fy_oai_fail(e, 400, "tool_choice", "invalid_value",
                           "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                           "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    size_t i;
    json_t *t;
    json_array_foreach(r->tools, i, t)
    {
        json_t *n = json_object_get(json_object_get(t, "function"), "name");
        if (strcmp(json_string_value(n), json_string_value(name)) == 0) {
            r->tool_choice = FY_OAI_TOOL_NAMED;
            r->tool_name = json_string_value(name);
            r->named_tool = t;
            return 0;
        }
    }
    return fy_oai_fail(e, 400, "tool_choice.function.name", "invalid_value",
                       "'tool_choice' names '%.64s', which is not in 'tools'",
                       json_string_value(name));
}

int fy__oai_parse_tools(fy_oai_request *r, fy_oai_error *e)
{
    r->parallel_tool_calls = 1;
    json_t *p = json_object_get(r->root, "parallel_tool_calls");
    if (p && !json_is_null(p)) {
        if (!json_is_boolean(p)) {
            return fy_oai_fail(e, 400, "parallel_tool_calls", "invalid_type",
                               "'parallel_tool_calls' must be a boolean, got %s", fy__oai_jtype(p));
        }
        r->parallel_tool_calls = json_is_true(p);
    }
    if (r->tools && parse_tool_list(r, e)) {
        return -1;
    }
    return parse_tool_choice(r, e);
}

/* response_format: text, json_object, or json_schema {name, schema, strict}. */
static int parse_response_format(fy_oai_request *r, const json_t *v, fy_oai_error *e)
{
    json_t *t = json_is_object(v) ? json_object_get(v, "type") : NULL;
    const char *ts = json_string_value(t);
    if (!ts) {
        return fy_oai_fail(e, 400, "response_format.type", "invalid_value",
                           "'response_format' must be {\"type\": \"text\" | \"json_object\" | "
                           "\"json_schema\", ...}");
    }
    if (strcmp(ts, "text") == 0) {
        return 0;
    }
    if (strcmp(ts, "json_object") == 0) {
        r->output = FY_OAI_OUT_JSON_OBJECT;
        r->output_param = "response_format";
        return 0;
    }
    if (strcmp(ts, "json_schema") != 0) {
        return fy_oai_fail(e, 400, "response_format.type", "invalid_value",
                           "'response_format.type' must be \"text\", \"json_object\" or "
                           "\"json_schema\", got \"%.40s\"",
                           ts);
    }
    json_t *js = json_object_get(v, "json_schema");
    if (!json_is_object(js)) {
        return fy_oai_fail(e, 400, "response_format.json_schema", "missing_required_parameter",
                           "'response_format.json_schema' must be an object {\"name\", "
                           "\"schema\", \"strict\"}");
    }
    json_t *name = json_object_get(js, "name");
    if (!json_is_string(name) || !name_ok(json_string_value(name))) {
        return fy_oai_fail(e, 400, "response_format.json_schema.name", "invalid_value",
                           "'response_format.json_schema.name' must be 1 to 64 letters, digits, "
                           "'_' or '-'");
    }
    json_t *schema = json_object_get(js, "schema"), *strict = json_object_get(js, "strict");
    if (schema && !json_is_object(schema) && !json_is_boolean(schema)) {
        return fy_oai_fail(e, 400, "response_format.json_schema.schema", "invalid_type",
                           "'response_format.json_schema.schema' must be a JSON Schema object");
    }
    if (strict && !json_is_null(strict) && !json_is_boolean(strict)) {
        return fy_oai_fail(e, 400, "response_format.json_schema.strict", "invalid_type",
                           "'response_format.json_schema.strict' must be a boolean");
    }
    r->output = schema ? FY_OAI_OUT_JSON_SCHEMA : FY_OAI_OUT_JSON_OBJECT;
    r->schema = schema;
    r->schema_strict = json_is_true(strict);
    r->output_param = "response_format.json_schema.schema";
    return 0;
}

/* vLLM's structured_outputs {json | regex | choice | json_object} (one of
 * them), and its older guided_json / guided_regex / guided_choice. */
static int parse_structured(fy_oai_request *r, fy_oai_error *e)
{
    json_t *so = json_object_get(r->root, "structured_outputs");
    static const struct {
        const char *key, *legacy, *param;
        fy_oai_output kind;
    } kinds[] = {
        {"json", "guided_json", "structured_outputs.json", FY_OAI_OUT_JSON_SCHEMA},
        {"regex", "guided_regex", "structured_outputs.regex", FY_OAI_OUT_REGEX},
        {"choice", "guided_choice", "structured_outputs.choice", FY_OAI_OUT_CHOICE},
        {"json_object", NULL, "structured_outputs.json_object", FY_OAI_OUT_JSON_OBJECT},
    };
    if (so && !json_is_null(so) && !json_is_object(so)) {
        return fy_oai_fail(e, 400, "structured_outputs", "invalid_type",
                           "'structured_outputs' must be an object");
    }
    if (so && json_is_object(so)) {
        const char *k;
        json_t *v;
        json_object_foreach(so, k, v)
        {
            int known = 0;
            for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
                known |= strcmp(k, kinds[i].key) == 0;
            }
            if (!known && !json_is_null(v)) {
                char p[96];
                snprintf(p, sizeof p, "structured_outputs.%.60s", k);
                return fy_oai_fail(e, 400, p, "unsupported_parameter",
                                   "'%s' is not supported (json, regex, choice and json_object "
                                   "are)",
                                   p);
            }
        }
    }
    int found = 0;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        json_t *v = so && json_is_object(so) ? json_object_get(so, kinds[i].key) : NULL;
        const char *param = kinds[i].param;
        if ((!v || json_is_null(v)) && kinds[i].legacy) {
            v = json_object_get(r->root, kinds[i].legacy);
            param = kinds[i].legacy;
        }
        if (!v || json_is_null(v)) {
            continue;
        }
        if (found++ || r->output != FY_OAI_OUT_TEXT) {
            return fy_oai_fail(e, 400, param, "invalid_value",
                               "only one of response_format and structured_outputs' json, regex, "
                               "choice and json_object may constrain the output");
        }
        r->output_param = param;
        switch (kinds[i].kind) {
        case FY_OAI_OUT_JSON_SCHEMA:
            if (json_is_string(v)) {
                /* vLLM takes the schema as a JSON string too. */
                json_t *parsed = json_loads(json_string_value(v), 0, NULL);
                if (!json_is_object(parsed)) {
                    json_decref(parsed);
                    return fy_oai_fail(e, 400, param, "invalid_value",
                                       "'%s' must be a JSON Schema (an object, or a string "
                                       "holding one)",
                                       param);
                }
                json_object_set_new(r->root, "__ferry_schema", parsed); /* owned by root */
                v = parsed;
            } else if (!json_is_object(v)) {
                return fy_oai_fail(e, 400, param, "invalid_type",
                                   "'%s' must be a JSON Schema object", param);
            }
            r->schema = v;
            break;
        case FY_OAI_OUT_REGEX:
            if (!json_is_string(v) || json_string_length(v) == 0) {
                return fy_oai_fail(e, 400, param, "invalid_type", "'%s' must be a non-empty string",
                                   param);
            }
            r->regex = json_string_value(v);
            r->regex_len = json_string_length(v);
            break;
        case FY_OAI_OUT_CHOICE: {
            size_t k;
            json_t *c;
            if (!json_is_array(v) || json_array_size(v) == 0 ||
                json_array_size(v) > FY_OAI_MAX_CHOICE) {
                return fy_oai_fail(e, 400, param, "invalid_value",
                                   "'%s' must be a list of 1 to %d strings", param,
                                   FY_OAI_MAX_CHOICE);
            }
            json_array_foreach(v, k, c)
            {
                if (!json_is_string(c) || json_string_length(c) == 0) {
                    return fy_oai_fail(e, 400, param, "invalid_value",
                                       "'%s' must be a list of non-empty strings", param);
                }
            }
            r->choices = v;
            break;
        }
        case FY_OAI_OUT_JSON_OBJECT:
            if (!json_is_true(v)) {
                if (json_is_false(v)) {
                    found--;
                    continue;
                }
                return fy_oai_fail(e, 400, param, "invalid_type", "'%s' must be a boolean", param);
            }
            break;
        default:
            break;
        }
        r->output = kinds[i].kind;
    }
    return 0;
}

int fy__oai_parse_output(fy_oai_request *r, fy_oai_error *e)
{
    json_t *v = json_object_get(r->root, "response_format");
    if (v && !json_is_null(v) && parse_response_format(r, v, e)) {
        return -1;
    }
    if (parse_structured(r, e)) {
        return -1;
    }
    if (r->output != FY_OAI_OUT_TEXT &&
        (r->tool_choice == FY_OAI_TOOL_REQUIRED || r->tool_choice == FY_OAI_TOOL_NAMED ||
         r->tool_choice == FY_OAI_TOOL_AUTO)) {
        return fy_oai_fail(e, 400, r->output_param, "invalid_value",
                           "'%s' cannot be combined with tools unless 'tool_choice' is \"none\"",
                           r->output_param);
    }
    return 0;
}

/* --- tool_calls in responses ------------------------------------------------ */

json_t *fy_oai_tool_call_json(const char *id, const char *name, const char *args, size_t args_len)
{
    return json_pack("{s:s, s:s, s:{s:s, s:o}}", "id", id, "type", "function", "function", "name",
                     name, "arguments", fy_utf8_json(args, args_len, "\xEF\xBF\xBD", 3));
}

void fy_oai_tool_call_id(char *out, size_t outlen, int nine)
{
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint8_t rnd[24];
    if (fy_random_bytes(rnd, sizeof rnd) < 0) {
        memset(rnd, 0, sizeof rnd);
    }
    char id[40];
    size_t n = 0;
    if (!nine) {
        memcpy(id, "call_", 5);
        n = 5;
    }
    for (int i = 0; i < (nine ? 9 : 24); i++) {
        id[n++] = alnum[rnd[i] % (sizeof alnum - 1)];
    }
    id[n] = 0;
    snprintf(out, outlen, "%s", id);
}

char *fy_oai_tool_chunk_sse(const char *id, int64_t created, const char *model, int index,
                            int role_first, int call_index, const char *call_id, const char *name,
                            const char *args, size_t args_len, size_t *len)
{
    json_t *fn = json_object();
    if (name) {
        json_object_set_new(fn, "name", json_string(name));
    }
    json_object_set_new(fn, "arguments",
                        fy_utf8_json(args ? args : "", args ? args_len : 0, "\xEF\xBF\xBD", 3));
    json_t *call = json_pack("{s:i}", "index", call_index);
    if (call_id) {
        json_object_set_new(call, "id", json_string(call_id));
        json_object_set_new(call, "type", json_string("function"));
    }
    json_object_set_new(call, "function", fn);
    json_t *delta = json_object();
    if (role_first) {
        json_object_set_new(delta, "role", json_string("assistant"));
        json_object_set_new(delta, "content", json_null());
    }
    json_object_set_new(delta, "tool_calls", json_pack("[o]", call));
    json_t *ch = json_pack("{s:i, s:o, s:n, s:n}", "index", index, "delta", delta, "logprobs",
                           "finish_reason");
    return fy__oai_chunk_dump(id, created, model, ch, len);
}
