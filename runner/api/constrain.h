/* constrain.h: the grammar a chat or completions request's output must
 * follow, compiled from its constraints, with a cache of compiled ones.
 *
 * What compiles to what (each with optional leading whitespace, which a
 * model's first token often carries; jsonschema.h describes the JSON):
 *   response_format json_object, structured_outputs.json_object: any object;
 *   response_format json_schema, structured_outputs.json: the schema;
 *   structured_outputs.regex: the regex (runner/api/regex.h), no whitespace;
 *   structured_outputs.choice: one of the strings, no whitespace;
 *   tool_choice "required": a JSON list of {"name": NAME, "parameters": ARGS}
 *     with NAME one of the tools and ARGS valid against its parameters (one
 *     item when parallel_tool_calls is false), which runner/api/server.c
 *     reads back as tool calls;
 *   tool_choice {"function": {"name"}}: ARGS of that tool alone;
 *   tool_choice "auto" with a tool whose "strict" is true: nothing until the
 *     model writes its family's call marker (fy_constrain_trigger: Hermes'
 *     <tool_call>, Llama 3's <|python_tag|>, Mistral's [TOOL_CALLS]), then
 *     the call(s) in that family's shape, strict tools' arguments by their
 *     schema and the others' as any object; after the call the text is
 *     free again (the engine's lazy grammar, engine.h).
 * A tool without "parameters" takes any object.
 *
 * The cache is keyed by the constraint's canonical text (keys sorted), so a
 * repeated schema costs a lookup; the least recently used of
 * FY_CONSTRAIN_CACHE grammars goes first. Loop thread only. */
#ifndef FY_API_CONSTRAIN_H
#define FY_API_CONSTRAIN_H

#include "runner/api/openai.h"
#include "runner/api/toolcall.h"
#include "runner/engine/grammar.h"

#include <stdint.h>

#define FY_CONSTRAIN_CACHE 64

typedef struct fy_constrain fy_constrain;

int fy_constrain_new(fy_constrain **out);
void fy_constrain_free(fy_constrain *c);

/* The grammar R's output must follow into *OUT (a new reference), or NULL
 * when R has no constraint. Returns 0, or -1 with E filled: 400 naming the
 * parameter, with the schema's JSON pointer and keyword in the message for
 * a schema outside the subset or past a cap; 500 when out of memory. */
int fy_constrain_request(fy_constrain *c, const fy_oai_request *r, fy_toolcall_family family,
                         fy_grammar **out, fy_oai_error *e);

/* For tool_choice auto with a strict tool in FAMILY: the marker after which
 * the grammar applies (static text); NULL when R's grammar, if any, applies
 * from the start. */
const char *fy_constrain_trigger(const fy_oai_request *r, fy_toolcall_family family);

typedef struct {
    uint64_t hits, compiles;
    double last_compile_ms; /* the last compile's wall time */
} fy_constrain_stats;
void fy_constrain_get_stats(const fy_constrain *c, fy_constrain_stats *st);

#endif
