/* jinja.h: a bounded interpreter for the subset of Jinja2 that chat templates
 * use (Llama 2/3, Mistral, Qwen2/ChatML, Zephyr and their tool variants).
 *
 * A template is compiled once (lexed and parsed to an AST); compiling refuses
 * any construct the interpreter does not implement, naming it and its line
 * ("unsupported filter 'xyz' at line 3"), so a model whose template we cannot
 * render is refused at start-up rather than on its first request. A compiled
 * template is immutable and may be rendered from several threads at once.
 *
 * Values are jansson values (json_t): null is Jinja's none, true/false its
 * booleans, integers and reals its numbers, arrays its lists (and tuples),
 * objects its dicts. A missing variable, attribute or item is "undefined" (it
 * prints as "", is false, and fails in arithmetic), as in Jinja2's default.
 *
 * Supported: text, {{ }}, {% %}, {# #}, whitespace control ({%- -%} {{- -}}
 * {#- -#}, {%+ +%}), and with FY_JINJA_TRIM_BLOCKS / FY_JINJA_LSTRIP_BLOCKS the
 * trim_blocks / lstrip_blocks options Hugging Face renders with; the single
 * trailing newline of a template is dropped (keep_trailing_newline=False).
 * Statements: if/elif/else, for (one name or "a, b" unpacking, optional
 * "if cond" filter, else, loop.index/index0/revindex/revindex0/first/last/
 * length/previtem/nextitem, break/continue), set (name, ns.attr, block set),
 * generation/endgeneration (rendered as its body).
 * Expressions: literals (strings with escapes, ints, floats, lists, dicts,
 * tuples, true/True, false/False, none/None), names, .attr, [item], [a:b:c]
 * slices, unary - + not, ** * / // % + - ~, comparisons, in / not in, and/or,
 * "x if c else y", filters "| name(args)", tests "is [not] name(args)".
 * Functions: range, namespace, dict, raise_exception(msg), strftime_now(fmt)
 * (local time, as Hugging Face's). A function's name that no variable shadows
 * is "defined" and "callable", as in Jinja2 (Llama 3.2 tests strftime_now).
 * String methods: strip lstrip rstrip upper lower title capitalize startswith
 * endswith split replace find count join; dict methods: items get keys values.
 * Filters: abs capitalize count d default e escape first float indent int
 * items join last length list lower map (attribute= or a filter name) max min
 * reject rejectattr replace reverse safe select selectattr sort string sum
 * title tojson (Hugging Face's: no HTML escaping, non-ASCII kept, indent=)
 * trim unique upper wordcount. Tests: defined undefined none string number
 * integer float boolean mapping sequence iterable true false odd even
 * divisibleby equalto/eq/==, ne/!=, lt/</lessthan, le/<=, gt/>/greaterthan,
 * ge/>=, in, lower, upper, callable, sameas.
 * Differences from Jinja2 a template can observe: tuples are lists (a
 * printed tuple shows [..]); integers are 64-bit (overflow is an error);
 * floats that are not finite are an error; an undefined element of a list
 * literal becomes none.
 *
 * Not supported (refused when compiling): macro, call, include, import,
 * extends, block, raw, filter blocks, with, recursive loops, tuple
 * assignment, *args, and any filter, test, function or method not listed
 * above. */
#ifndef FY_JINJA_H
#define FY_JINJA_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Caps (defaults; a render may lower or raise them through fy_jinja_limits). */
#define FY_JINJA_MAX_SOURCE (1024 * 1024)     /* template bytes */
#define FY_JINJA_MAX_DEPTH  64                /* nesting of blocks and expressions */
#define FY_JINJA_MAX_OUTPUT (8 * 1024 * 1024) /* rendered bytes, and any one string */
#define FY_JINJA_MAX_STEPS  10000000          /* statements + loop iterations + calls */
/* Bytes of strings and lists created in one render, cumulative: bounds both
 * peak memory and the work a template does on large messages. */
#define FY_JINJA_MAX_WORK_BYTES (64 * 1024 * 1024)

/* Compile options. */
#define FY_JINJA_TRIM_BLOCKS   1u /* drop the first newline after a block tag */
#define FY_JINJA_LSTRIP_BLOCKS 2u /* strip spaces and tabs before a block tag on its line */

typedef struct fy_jinja fy_jinja;

typedef struct {
    size_t max_output;     /* 0: FY_JINJA_MAX_OUTPUT */
    uint64_t max_steps;    /* 0: FY_JINJA_MAX_STEPS */
    size_t max_work_bytes; /* 0: FY_JINJA_MAX_WORK_BYTES */
} fy_jinja_limits;

/* Compiles SRC (LEN bytes; need not be NUL-terminated) with FLAGS
 * (FY_JINJA_*). Returns 0 and *OUT (free with fy_jinja_free), or FY_EPARSE
 * (syntax error), FY_ENOTSUP (a construct this interpreter lacks), FY_ETOOBIG
 * (over FY_JINJA_MAX_SOURCE or FY_JINJA_MAX_DEPTH) or FY_ENOMEM, with a
 * message naming the problem and its line in ERR. */
int fy_jinja_compile(const char *src, size_t len, unsigned flags, fy_jinja **out, char *err,
                     size_t errlen);

/* Renders T with the variables of VARS (an object, may be NULL; borrowed, never
 * modified). LIMITS may be NULL for the defaults. Returns 0 with *OUT a new
 * NUL-terminated string (caller frees) and *LEN its length (LEN may be NULL);
 * or FY_EINVAL (a type error, an undefined value used, raise_exception: ERR
 * holds the message, with the template line), FY_ETOOBIG (output, steps or
 * work over the limits) or FY_ENOMEM. On error *OUT is NULL. */
int fy_jinja_render(const fy_jinja *t, const json_t *vars, const fy_jinja_limits *limits,
                    char **out, size_t *len, char *err, size_t errlen);

/* Prefix raise_exception() messages carry in ERR, so callers can tell a
 * template's own refusal ("Conversation roles must alternate...") from a bug. */
#define FY_JINJA_RAISED_PREFIX "template error: "

void fy_jinja_free(fy_jinja *t);

#endif
