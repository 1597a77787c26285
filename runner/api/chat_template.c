/* chat_template.c: a model's chat template (chat_template.h) on the Jinja
 * subset of jinja.h, rendered the way Hugging Face's apply_chat_template
 * does: trim_blocks and lstrip_blocks on, the special tokens of
 * tokenizer_config.json, messages, tools and add_generation_prompt as
 * variables. */
#include "runner/api/chat_template.h"

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/api/jinja.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CT_MAX_CONFIG_BYTES (8 * 1024 * 1024) /* tokenizer_config.json can embed long templates */
#define CT_MAX_TOKEN_BYTES  256

struct fy_chat_template {
    fy_jinja *tmpl;
    char *origin;
    char *source; /* the template text (its tool-call family is read from it) */
    size_t source_len;
    char *bos, *eos, *unk, *pad;
};

/* A special token of tokenizer_config.json: a string or {"content": string}. */
static char *token_text(const json_t *cfg, const char *key)
{
    const json_t *v = cfg ? json_object_get(cfg, key) : NULL;
    if (json_is_object(v)) {
        v = json_object_get(v, "content");
    }
    const char *s = json_is_string(v) && json_string_length(v) <= CT_MAX_TOKEN_BYTES
                        ? json_string_value(v)
                        : "";
    return strdup(s);
}

void fy_chat_template_free(fy_chat_template *t)
{
    if (!t) {
        return;
    }
    fy_jinja_free(t->tmpl);
    free(t->origin);
    free(t->source);
    free(t->bos);
    free(t->eos);
    free(t->unk);
    free(t->pad);
    free(t);
}

/* Builds the template from SOURCE with the special tokens of CFG (may be
 * NULL). */
static int ct_build(const char *source, size_t len, const json_t *cfg, const char *origin,
                    fy_chat_template **out, char *err, size_t errlen)
{
    char cerr[256];
    fy_chat_template *t = calloc(1, sizeof *t);
    if (!t) {
        return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    t->origin = strdup(origin);
    t->source = malloc(len + 1);
    if (t->source) {
        memcpy(t->source, source, len);
        t->source[len] = 0;
        t->source_len = len;
    }
    t->bos = token_text(cfg, "bos_token");
    t->eos = token_text(cfg, "eos_token");
    t->unk = token_text(cfg, "unk_token");
    t->pad = token_text(cfg, "pad_token");
    if (!t->origin || !t->source || !t->bos || !t->eos || !t->unk || !t->pad) {
        fy_chat_template_free(t);
        return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    int rc = fy_jinja_compile(source, len, FY_JINJA_TRIM_BLOCKS | FY_JINJA_LSTRIP_BLOCKS, &t->tmpl,
                              cerr, sizeof cerr);
    if (rc) {
        fy_chat_template_free(t);
        return fy_fail(err, errlen, rc, "chat template %s: %s", origin, cerr);
    }
    *out = t;
    return 0;
}

int fy_chat_template_new(const char *source, size_t len, const char *bos_token,
                         const char *eos_token, fy_chat_template **out, char *err, size_t errlen)
{
    *out = NULL;
    json_t *cfg = json_pack("{ssss}", "bos_token", bos_token ? bos_token : "", "eos_token",
                            eos_token ? eos_token : "");
    if (!cfg) {
        return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    int rc = ct_build(source, len, cfg, "<string>", out, err, errlen);
    json_decref(cfg);
    return rc;
}

/* The "chat_template" of tokenizer_config.json: a string, or the "default"
 * entry of a list of {"name","template"}. NULL when absent. */
static const char *config_template(const json_t *cfg, const char *path, int *rc, char *err,
                                   size_t errlen)
{
    const json_t *ct = json_object_get(cfg, "chat_template");
    *rc = 0;
    if (!ct || json_is_null(ct)) {
        return NULL;
    }
    if (json_is_string(ct)) {
        return json_string_value(ct);
    }
    if (json_is_array(ct)) {
        size_t i;
        json_t *e;
        json_array_foreach(ct, i, e)
        {
            const char *name = json_string_value(json_object_get(e, "name"));
            const char *tmpl = json_string_value(json_object_get(e, "template"));
            if (name && tmpl && strcmp(name, "default") == 0) {
                return tmpl;
            }
        }
        *rc = fy_fail(err, errlen, FY_ENOENT,
                      "%s: chat_template is a list with no entry named \"default\"", path);
        return NULL;
    }
    *rc = fy_fail(err, errlen, FY_EPARSE, "%s: chat_template is neither a string nor a list", path);
    return NULL;
}

int fy_chat_template_load(const char *model_dir, const char *override_file, fy_chat_template **out,
                          char *err, size_t errlen)
{
    char cfg_path[4096] = "", jinja_path[4096] = "";
    char *text = NULL;
    size_t len = 0;
    json_t *cfg = NULL;
    int rc;
    *out = NULL;
    if (!model_dir && !override_file) {
        return fy_fail(err, errlen, FY_EINVAL, "no model directory or chat template file given");
    }
    if (model_dir) {
        if (fy_path_join(cfg_path, sizeof cfg_path, model_dir, "tokenizer_config.json") ||
            fy_path_join(jinja_path, sizeof jinja_path, model_dir, "chat_template.jinja")) {
            return fy_fail(err, errlen, FY_ETOOBIG, "model directory path too long");
        }
        if (fy_file_exists(cfg_path)) {
            json_error_t je;
            rc = fy_file_read(cfg_path, CT_MAX_CONFIG_BYTES, &text, &len);
            if (rc) {
                return fy_fail(err, errlen, rc, "%s: %s", cfg_path, fy_strerror(rc));
            }
            cfg = json_loadb(text, len, 0, &je);
            free(text);
            text = NULL;
            if (!json_is_object(cfg)) {
                json_decref(cfg);
                return fy_fail(err, errlen, FY_EPARSE, "%s: not a JSON object (line %d: %s)",
                               cfg_path, je.line, je.text);
            }
        }
    }
    const char *origin = NULL;
    const char *src = NULL;
    if (override_file) {
        origin = override_file;
    } else if (fy_file_exists(jinja_path)) {
        origin = jinja_path;
    } else if (cfg) {
        src = config_template(cfg, cfg_path, &rc, err, errlen);
        if (rc) {
            json_decref(cfg);
            return rc;
        }
        origin = cfg_path;
    }
    if (origin && !src) {
        rc = fy_file_read(origin, FY_JINJA_MAX_SOURCE, &text, &len);
        if (rc) {
            json_decref(cfg);
            return fy_fail(err, errlen, rc, "chat template %s: %s", origin, fy_strerror(rc));
        }
        src = text;
    }
    if (!src) {
        json_decref(cfg);
        return fy_fail(err, errlen, FY_ENOENT,
                       "model %s has no chat template (no chat_template.jinja, and no "
                       "chat_template in tokenizer_config.json)",
                       model_dir);
    }
    rc = ct_build(src, text ? len : strlen(src), cfg, origin, out, err, errlen);
    free(text);
    json_decref(cfg);
    return rc;
}

/* A copy of message M (index I) with list content joined and tool-call
 * arguments parsed, as the template expects them. */
static json_t *normalize_message(const json_t *m, size_t i, char *err, size_t errlen, int *rc)
{
    *rc = FY_EINVAL;
    if (!json_is_object(m)) {
        fy_fail(err, errlen, FY_EINVAL, "messages[%zu] is not an object", i);
        return NULL;
    }
    if (!json_is_string(json_object_get(m, "role"))) {
        fy_fail(err, errlen, FY_EINVAL, "messages[%zu].role must be a string", i);
        return NULL;
    }
    json_t *c = json_deep_copy(m);
    if (!c) {
        *rc = fy_fail(err, errlen, FY_ENOMEM, "out of memory");
        return NULL;
    }
    json_t *content = json_object_get(c, "content");
    if (json_is_array(content)) {
        /* vLLM's "string" content format: text parts joined with newlines. */
        size_t k;
        json_t *part;
        size_t total = 0;
        json_array_foreach(content, k, part)
        {
            const char *type = json_string_value(json_object_get(part, "type"));
            json_t *text = json_object_get(part, "text");
            if (!type || strcmp(type, "text") != 0 || !json_is_string(text)) {
                fy_fail(err, errlen, FY_EINVAL,
                        "messages[%zu].content[%zu]: only {\"type\":\"text\",\"text\":...} "
                        "parts are supported",
                        i, k);
                json_decref(c);
                return NULL;
            }
            total += json_string_length(text) + 1;
        }
        char *joined = malloc(total + 1);
        size_t o = 0;
        if (!joined) {
            json_decref(c);
            *rc = fy_fail(err, errlen, FY_ENOMEM, "out of memory");
            return NULL;
        }
        json_array_foreach(content, k, part)
        {
            json_t *text = json_object_get(part, "text");
            if (k) {
                joined[o++] = '\n';
            }
            memcpy(joined + o, json_string_value(text), json_string_length(text));
            o += json_string_length(text);
        }
        int bad = json_object_set_new(c, "content", json_stringn(joined, o));
        free(joined);
        if (bad) {
            json_decref(c);
            *rc = fy_fail(err, errlen, FY_ENOMEM, "out of memory");
            return NULL;
        }
    } else if (content && !json_is_string(content) && !json_is_null(content)) {
        fy_fail(err, errlen, FY_EINVAL, "messages[%zu].content must be a string, null or a list",
                i);
        json_decref(c);
        return NULL;
    }
    json_t *calls = json_object_get(c, "tool_calls");
    size_t k;
    json_t *call;
    json_array_foreach(calls, k, call)
    {
        json_t *fn = json_object_get(call, "function");
        json_t *args = json_object_get(fn, "arguments");
        if (json_is_string(args)) {
            json_t *parsed = json_loadb(json_string_value(args), json_string_length(args),
                                        JSON_DECODE_ANY, NULL);
            if (json_is_object(parsed)) {
                json_object_set(fn, "arguments", parsed);
            }
            json_decref(parsed);
        }
    }
    *rc = 0;
    return c;
}

int fy_chat_template_render(const fy_chat_template *t, const json_t *messages, const json_t *tools,
                            int add_generation_prompt, char **out, size_t *len, char *err,
                            size_t errlen)
{
    *out = NULL;
    if (len) {
        *len = 0;
    }
    if (!json_is_array(messages)) {
        return fy_fail(err, errlen, FY_EINVAL, "messages must be an array");
    }
    if (tools && !json_is_array(tools) && !json_is_null(tools)) {
        return fy_fail(err, errlen, FY_EINVAL, "tools must be an array");
    }
    json_t *msgs = json_array(), *vars = NULL;
    int rc = msgs ? 0 : FY_ENOMEM;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        if (rc) {
            break;
        }
        json_t *c = normalize_message(m, i, err, errlen, &rc);
        if (c && json_array_append_new(msgs, c)) {
            rc = FY_ENOMEM;
        }
    }
    if (!rc) {
        vars =
            json_pack("{sOsssssssssbsO}", "messages", msgs, "bos_token", t->bos, "eos_token",
                      t->eos, "unk_token", t->unk, "pad_token", t->pad, "add_generation_prompt",
                      add_generation_prompt != 0, "tools", tools ? (json_t *)tools : json_null());
        if (!vars) {
            rc = FY_ENOMEM;
        }
    }
    if (rc == FY_ENOMEM) {
        fy_fail(err, errlen, rc, "out of memory");
    }
    if (!rc) {
        rc = fy_jinja_render(t->tmpl, vars, NULL, out, len, err, errlen);
    }
    json_decref(vars);
    json_decref(msgs);
    return rc;
}

const char *fy_chat_template_bos(const fy_chat_template *t)
{
    return t->bos;
}

const char *fy_chat_template_eos(const fy_chat_template *t)
{
    return t->eos;
}

const char *fy_chat_template_source(const fy_chat_template *t, size_t *len)
{
    *len = t->source_len;
    return t->source;
}

const char *fy_chat_template_origin(const fy_chat_template *t)
{
    return t->origin;
}
