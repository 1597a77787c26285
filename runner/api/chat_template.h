/* chat_template.h: a model's chat template, loaded from its directory and
 * rendered with the Jinja subset of jinja.h, the way Hugging Face's
 * apply_chat_template does (trim_blocks, lstrip_blocks, the special tokens of
 * tokenizer_config.json as variables).
 *
 * Usage (the API server):
 *   at start-up   fy_chat_template_load(dir, override_or_NULL, &t, err, n)
 *                 -> a template the interpreter cannot compile is refused here
 *   per request   fy_chat_template_render(t, messages, tools_or_NULL, 1, &s, &len, err, n)
 *                 -> on FY_EINVAL answer 400 with ERR as the message
 *   at exit       fy_chat_template_free(t)
 * A loaded template is immutable; render may run on any thread concurrently. */
#ifndef FY_CHAT_TEMPLATE_H
#define FY_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

typedef struct fy_chat_template fy_chat_template;

/* Loads the chat template of the Hugging Face model directory MODEL_DIR.
 * The template text comes from, in order: OVERRIDE_FILE when not NULL (a
 * Jinja file, --chat-template); MODEL_DIR/chat_template.jinja; the
 * "chat_template" of MODEL_DIR/tokenizer_config.json (a string, or a list of
 * {"name","template"} of which "default" is used). bos_token, eos_token,
 * unk_token and pad_token come from tokenizer_config.json when it exists (a
 * string or {"content": ...}); missing ones are "". MODEL_DIR may be NULL when
 * OVERRIDE_FILE is given.
 * Returns 0 and *OUT; FY_ENOENT when the model has no chat template (the
 * caller decides whether chat requests are refused); FY_ENOTSUP / FY_EPARSE
 * when the template uses a construct the interpreter lacks or is malformed,
 * the construct and line named in ERR; FY_EPARSE for a malformed
 * tokenizer_config.json; FY_ETOOBIG, FY_EIO, FY_ENOMEM. */
int fy_chat_template_load(const char *model_dir, const char *override_file, fy_chat_template **out,
                          char *err, size_t errlen);

/* Builds a template from SOURCE (LEN bytes) with the given special tokens
 * (NULL means ""). Same compile errors as fy_chat_template_load. */
int fy_chat_template_new(const char *source, size_t len, const char *bos_token,
                         const char *eos_token, fy_chat_template **out, char *err, size_t errlen);

/* Renders MESSAGES, a JSON array of objects {"role": string, "content": string
 * | null | [{"type":"text","text":string}, ...], other fields kept} (borrowed,
 * not modified). A content list is joined into one string with "\n" between
 * its text parts (as vLLM's "string" content format); other part types are
 * refused. A tool call's "function.arguments" given as a JSON string holding
 * an object is passed to the template as that object (templates tojson it).
 * TOOLS (may be NULL: the template sees none) is the request's tools array.
 * ADD_GENERATION_PROMPT: nonzero to end with the assistant header.
 * Returns 0 with *OUT a new NUL-terminated string (caller frees) and *LEN its
 * length (may be NULL); FY_EINVAL for malformed messages, or when the
 * template refuses them (raise_exception) or fails on them (ERR says why, fit
 * for a 400 message); FY_ETOOBIG when the prompt would exceed
 * FY_JINJA_MAX_OUTPUT; FY_ENOMEM. */
int fy_chat_template_render(const fy_chat_template *t, const json_t *messages, const json_t *tools,
                            int add_generation_prompt, char **out, size_t *len, char *err,
                            size_t errlen);

/* The special tokens as read from tokenizer_config.json ("" when absent);
 * valid while T lives. The template itself decides whether BOS is written,
 * so a caller tokenizing the rendered prompt should not add BOS again when
 * the text already starts with it. */
const char *fy_chat_template_bos(const fy_chat_template *t);
const char *fy_chat_template_eos(const fy_chat_template *t);

/* The template's text (*LEN its length), valid while T lives. */
const char *fy_chat_template_source(const fy_chat_template *t, size_t *len);

/* Where the template came from (a path, or "<string>"), for logs. */
const char *fy_chat_template_origin(const fy_chat_template *t);

void fy_chat_template_free(fy_chat_template *t);

#endif
