/* toolcall.h: a model's generated text turned into OpenAI tool calls, as it streams.
 *
 * Three families of output are understood:
 *   hermes   (Hermes 2 Pro, Qwen2.5): content, then zero or more
 *            <tool_call>{"name": "f", "arguments": {...}}</tool_call> blocks;
 *   llama3   (Llama 3.1/3.2 JSON tool calling): the whole output, after leading
 *            whitespace and an optional <|python_tag|>, is
 *            {"name": "f", "parameters": {...}}, several separated by ';';
 *   mistral: content, then [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...],
 *            or the newer [TOOL_CALLS]f[ARGS]{...} (repeated for parallel calls).
 * In every family the arguments key may be "arguments" or "parameters".
 *
 * The parser is pure: no I/O, no engine, no tokenizer. It sees the text the
 * runner detokenized with special tokens kept (so "<|python_tag|>" and
 * "[TOOL_CALLS]" are text), without EOS or stop tokens. It reports three
 * things through callbacks, in the order of the text:
 *   - content that is final (it can no longer be part of a marker or a call;
 *     a suffix that could still begin a marker is held back, as stop.c holds
 *     back stop-string prefixes, and so is a character cut short by a piece);
 *   - a call's beginning, once its name is known in full;
 *   - its arguments, in pieces, as they arrive.
 * The concatenation of a call's pieces is the raw text of its arguments value
 * as the model wrote it, trimmed of surrounding whitespace, so a streamed
 * response and a non-streamed one agree. Two cases differ from the raw text:
 *   - a JSON string whose content is a JSON object (some models quote their
 *     arguments) gives that content, trimmed;
 *   - a call without arguments gives "{}".
 * A string or scalar arguments value is given in one piece when it ends;
 * an object streams.
 *
 * What is not a call is content, never lost:
 *   - a call not yet announced that turns out malformed (not JSON, no string
 *     "name", truncated at the end) is content, its marker text included
 *     (llama3 drops a leading <|python_tag|> either way);
 *   - when "arguments" comes before "name", nothing is announced until the
 *     object ends and jansson accepts it;
 *   - a call already announced is never taken back: arguments that turn out
 *     not to be valid JSON are finished as the model wrote them, and at the
 *     end of the output the arguments streamed so far are final. Text that
 *     breaks the object's structure after the announcement ends the call
 *     (with "{}" if no arguments were seen) and is content from there on.
 * Whitespace between calls and after the last one is dropped; other text
 * after a call is content (hermes and mistral watch it for a new marker).
 *
 * Ownership: the pointers a callback gets are valid only during the call. A
 * callback must not call back into its parser. Every buffer is bounded: text
 * held undecided (in practice, one call) may not exceed FY_TOOLCALL_MAX_BYTES. */
#ifndef FY_API_TOOLCALL_H
#define FY_API_TOOLCALL_H

#include <stddef.h>

#define FY_TOOLCALL_MAX_BYTES (1 << 20) /* bytes of text held undecided, i.e. of one call */

typedef enum {
    FY_TOOLCALL_NONE = 0,
    FY_TOOLCALL_HERMES,
    FY_TOOLCALL_LLAMA3,
    FY_TOOLCALL_MISTRAL
} fy_toolcall_family;

/* "hermes" (alias "qwen", "qwen2_5"), "llama3" (alias "llama3_json",
 * "llama"), "mistral": 0 and *OUT set; anything else (NULL included):
 * FY_EINVAL, *OUT untouched. */
int fy_toolcall_family_parse(const char *name, fy_toolcall_family *out);

/* "hermes", "llama3", "mistral", or "none"; never NULL. */
const char *fy_toolcall_family_name(fy_toolcall_family f);

/* The family a chat template's source text TMPL[0..LEN) prompts for:
 * "<tool_call>" -> HERMES; "<|python_tag|>", "Environment: ipython", or
 * '"parameters"' together with "<|start_header_id|>" -> LLAMA3;
 * "[TOOL_CALLS]" or "[AVAILABLE_TOOLS]" -> MISTRAL; else NONE. Checked in
 * that order. */
fy_toolcall_family fy_toolcall_family_detect(const char *tmpl, size_t len);

/* The callbacks; any may be NULL (its reports are dropped). A nonzero return
 * stops the parser: push and finish return it, now and from then on. */
typedef struct {
    /* Content text that is final: it can no longer be part of a marker or a
     * call. Valid UTF-8 whenever what was pushed is. LEN > 0. */
    int (*content)(void *arg, const char *text, size_t len);
    /* A call begins: its index (0, 1, ...) and function name (known in full,
     * decoded from JSON, not NUL-terminated, LEN > 0). Called once per call. */
    int (*call_begin)(void *arg, int index, const char *name, size_t len);
    /* The next piece of call INDEX's arguments (LEN > 0): the concatenation
     * of all pieces of a call is exactly its final "arguments" string (see
     * above). Pieces of a call come after its call_begin and before the next
     * call's call_begin. */
    int (*call_args)(void *arg, int index, const char *piece, size_t len);
} fy_toolcall_ops;

typedef struct fy_toolcall_parser fy_toolcall_parser;

/* A parser for family F reporting to OPS (copied) with ARG. FY_TOOLCALL_NONE
 * makes a parser that passes everything through as content. Returns 0 and
 * *OUT, FY_EINVAL (no OPS, no such family) or FY_ENOMEM. */
int fy_toolcall_parser_new(fy_toolcall_family f, const fy_toolcall_ops *ops, void *arg,
                           fy_toolcall_parser **out);

/* Feeds TEXT[0..LEN): valid UTF-8 as a whole, split anywhere (a marker like
 * "<tool_call>" or "[TOOL_CALLS]" may arrive split across pieces, even one
 * byte at a time; so may a character). Returns 0, a callback's nonzero
 * return, FY_ENOMEM, FY_ETOOBIG (more than FY_TOOLCALL_MAX_BYTES held
 * undecided: a call that large) or FY_EINVAL (after finish). An error is
 * sticky: every later push and finish returns it. */
int fy_toolcall_push(fy_toolcall_parser *p, const char *text, size_t len);

/* End of output: flushes. Anything held that did not become a complete,
 * valid call is emitted as content (never lost, never a crash); an announced
 * call's arguments end as they are. Returns like push; a second finish
 * returns 0 and does nothing. */
int fy_toolcall_finish(fy_toolcall_parser *p);

/* Calls begun (announced) so far. */
int fy_toolcall_count(const fy_toolcall_parser *p);

/* Safe on NULL. */
void fy_toolcall_parser_free(fy_toolcall_parser *p);

#endif
