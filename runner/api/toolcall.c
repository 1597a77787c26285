/* toolcall.c: the streaming tool-call parsers of toolcall.h.
 *
 * One state machine serves the three families. Pushed text is appended to
 * `held`, the text not yet decided, and the machine scans it from `pos`;
 * every decision depends only on the bytes (a state that needs more bytes to
 * decide waits for them, or for the end), so where the text was split never
 * changes the result, only how it is cut into callbacks. While a call is
 * read, held starts at the call's marker (or separator) and keeps the whole
 * call until it ends: a call that fails before it is announced can then be
 * given back as content, marker and all, and the text after the marker
 * scanned again for a call. A call's JSON object is followed by a small
 * scanner that knows strings, escapes and bracket depth, and the members
 * "name", "arguments" and "parameters" at the top level; jansson decodes the
 * name and checks what is decided only when the object ends. */
#include "runner/api/toolcall.h"

#include "common/buf.h"
#include "common/err.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define TC_CHUNK (16 * 1024) /* bytes appended to held at a time */

#define TAG_HERMES_OPEN  "<tool_call>"
#define TAG_HERMES_CLOSE "</tool_call>"
#define TAG_PYTHON       "<|python_tag|>"
#define TAG_MISTRAL      "[TOOL_CALLS]"
#define TAG_MISTRAL_ARGS "[ARGS]"

enum {
    S_CONTENT, /* plain text, watched for the family's marker */
    S_TEXT,    /* plain text to the end */
    S_LEAD,    /* llama3: leading whitespace and <|python_tag|> */
    S_OPEN,    /* hermes: after <tool_call>, before '{' */
    S_LIST,    /* mistral: after [TOOL_CALLS], before '[' or a name */
    S_ITEM,    /* mistral: in the list, before '{'; llama3: after ';' */
    S_OBJ,     /* in a call's JSON object */
    S_NAME,    /* mistral: a name before [ARGS] */
    S_ARGS,    /* mistral: the object after [ARGS] */
    S_CLOSE,   /* hermes: after the object, before </tool_call> */
    S_SEP,     /* mistral: before ',' or ']'; llama3: before ';' */
    S_AFTER,   /* after a call: whitespace, dropped unless text follows */
};

/* Where the object scanner is among the object's top-level members. */
enum { M_KEY, M_KEYSTR, M_COLON, M_VAL, M_VSTR, M_VNEST, M_VSCALAR, M_SEP };

/* What the member being read is. */
enum { K_OTHER, K_NAME, K_ARGS };

/* What a state handler tells the loop. */
enum { NEED, MORE, FAIL };

struct fy_toolcall_parser {
    fy_toolcall_family family;
    fy_toolcall_ops ops;
    void *arg;
    const char *marker; /* the marker content is watched for, or NULL */
    size_t marker_len;
    int state;
    int eof;
    int err; /* sticky */
    int count;
    int tagged; /* llama3: <|python_tag|> seen (and cut out of held) */
    fy_buf held;
    size_t pos;  /* scan position in held */
    size_t skip; /* bytes at held's start that are content if the call fails */
    /* The call being read. */
    int announced;
    int ost, key;
    int depth, in_str, esc;
    size_t obj_start, key_start, val_start;
    int have_name;
    int have_args, args_closed, args_done;
    char args_kind; /* first byte of the arguments value */
    size_t args_start, args_end, args_sent;
    fy_buf name;
};

/* ------------------------------------------------------------------ families */

int fy_toolcall_family_parse(const char *name, fy_toolcall_family *out)
{
    static const struct {
        const char *name;
        fy_toolcall_family f;
    } names[] = {
        {"hermes", FY_TOOLCALL_HERMES},      {"qwen", FY_TOOLCALL_HERMES},
        {"qwen2_5", FY_TOOLCALL_HERMES},     {"llama3", FY_TOOLCALL_LLAMA3},
        {"llama3_json", FY_TOOLCALL_LLAMA3}, {"llama", FY_TOOLCALL_LLAMA3},
        {"mistral", FY_TOOLCALL_MISTRAL},
    };
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].f;
            return 0;
        }
    }
    return FY_EINVAL;
}

const char *fy_toolcall_family_name(fy_toolcall_family f)
{
    switch (f) {
    case FY_TOOLCALL_HERMES:
        return "hermes";
    case FY_TOOLCALL_LLAMA3:
        return "llama3";
    case FY_TOOLCALL_MISTRAL:
        return "mistral";
    default:
        return "none";
    }
}

static int has(const char *s, size_t n, const char *lit)
{
    return s && memmem(s, n, lit, strlen(lit)) != NULL;
}

fy_toolcall_family fy_toolcall_family_detect(const char *tmpl, size_t len)
{
    if (has(tmpl, len, TAG_HERMES_OPEN)) {
        return FY_TOOLCALL_HERMES;
    }
    if (has(tmpl, len, TAG_PYTHON) || has(tmpl, len, "Environment: ipython") ||
        (has(tmpl, len, "\"parameters\"") && has(tmpl, len, "<|start_header_id|>"))) {
        return FY_TOOLCALL_LLAMA3;
    }
    if (has(tmpl, len, TAG_MISTRAL) || has(tmpl, len, "[AVAILABLE_TOOLS]")) {
        return FY_TOOLCALL_MISTRAL;
    }
    return FY_TOOLCALL_NONE;
}

/* ------------------------------------------------------------------- helpers */

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* S[0..N) trimmed of JSON whitespace on both sides, into *S and *N. */
static void trim(const char **s, size_t *n)
{
    while (*n > 0 && is_ws(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && is_ws((*s)[*n - 1])) {
        (*n)--;
    }
}

/* N less a character cut short at the end of S[0..N), so no report splits one. */
static size_t utf8_whole(const char *s, size_t n)
{
    for (size_t k = 1; k <= 4 && k <= n; k++) {
        unsigned char c = (unsigned char)s[n - k];
        if ((c & 0xc0) == 0x80) {
            continue;
        }
        size_t need = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        return need > k ? n - k : n;
    }
    return n;
}

/* Length of the longest suffix of S[0..N) that is a proper prefix of LIT[0..L). */
static size_t prefix_tail(const char *s, size_t n, const char *lit, size_t l)
{
    for (size_t k = l - 1 < n ? l - 1 : n; k > 0; k--) {
        if (memcmp(s + n - k, lit, k) == 0) {
            return k;
        }
    }
    return 0;
}

/* How S[0..N) compares with the start of LIT: 2 it begins with all of LIT,
 * 1 it is a proper prefix of LIT, 0 neither. */
static int match(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    if (n >= l) {
        return memcmp(s, lit, l) == 0 ? 2 : 0;
    }
    return memcmp(s, lit, n) == 0 ? 1 : 0;
}

/* Skips whitespace from pos; 1 when a byte follows, 0 at the end of held. */
static int skip_ws(fy_toolcall_parser *p)
{
    while (p->pos < p->held.len && is_ws(p->held.data[p->pos])) {
        p->pos++;
    }
    return p->pos < p->held.len;
}

/* Inside a JSON string: 1 while C is part of it, 0 for its closing quote. */
static int str_byte(fy_toolcall_parser *p, char c)
{
    if (p->esc) {
        p->esc = 0;
        return 1;
    }
    if (c == '\\') {
        p->esc = 1;
        return 1;
    }
    return c != '"';
}

/* Inside an object or array value: 1 when C closes it. */
static int nest_byte(fy_toolcall_parser *p, char c)
{
    if (p->in_str) {
        p->in_str = str_byte(p, c);
        return 0;
    }
    if (c == '"') {
        p->in_str = 1;
    } else if (c == '{' || c == '[') {
        p->depth++;
    } else if (c == '}' || c == ']') {
        return --p->depth == 0;
    }
    return 0;
}

/* ------------------------------------------------------------------- reports */

/* Each returns 0, or the callback's nonzero return, which is also kept in p->err. */

static int emit_content(fy_toolcall_parser *p, const char *s, size_t n)
{
    if (n == 0 || !p->ops.content) {
        return 0;
    }
    return p->err = p->ops.content(p->arg, s, n);
}

static int emit_args(fy_toolcall_parser *p, const char *s, size_t n)
{
    if (n == 0 || !p->ops.call_args) {
        return 0;
    }
    return p->err = p->ops.call_args(p->arg, p->count - 1, s, n);
}

static int announce(fy_toolcall_parser *p)
{
    p->announced = 1;
    int index = p->count++;
    if (!p->ops.call_begin) {
        return 0;
    }
    return p->err = p->ops.call_begin(p->arg, index, p->name.data, p->name.len);
}

/* Content S[0..N) that is final up to a character cut short (unless at the end). */
static int emit_content_whole(fy_toolcall_parser *p, size_t n)
{
    size_t k = p->eof ? n : utf8_whole(p->held.data, n);
    int rc = emit_content(p, p->held.data, k);
    fy_buf_consume(&p->held, k);
    return rc;
}

/* The arguments of an object value up to END; unless FINAL, short of a
 * character cut short there. */
static int flush_args(fy_toolcall_parser *p, size_t end, int final)
{
    if (!final) {
        end = p->args_sent + utf8_whole(p->held.data + p->args_sent, end - p->args_sent);
    }
    int rc = emit_args(p, p->held.data + p->args_sent, end - p->args_sent);
    p->args_sent = end;
    return rc;
}

/* The decoded JSON string V[0..N) when it is a JSON object's text, trimmed. */
static int emit_string_args(fy_toolcall_parser *p, const char *v, size_t n)
{
    json_t *s = json_loadb(v, n, JSON_DECODE_ANY, NULL);
    const char *t = json_string_value(s);
    size_t tn = t ? json_string_length(s) : 0;
    trim(&t, &tn);
    json_t *o = t ? json_loadb(t, tn, 0, NULL) : NULL;
    int rc = json_is_object(o) ? emit_args(p, t, tn) : emit_args(p, v, n);
    json_decref(o);
    json_decref(s);
    return rc;
}

/* The rest of the arguments of an announced call, once their value has
 * ended, or the call has at END without it ending. */
static int finish_args(fy_toolcall_parser *p, size_t end)
{
    if (p->args_done) {
        return 0;
    }
    p->args_done = 1;
    if (!p->have_args) {
        return emit_args(p, "{}", 2);
    }
    size_t vend = p->args_closed ? p->args_end : end;
    if (p->args_kind == '{') {
        return flush_args(p, vend, 1);
    }
    const char *v = p->held.data + p->args_start;
    if (p->args_kind == '"' && p->args_closed) {
        return emit_string_args(p, v, vend - p->args_start);
    }
    return emit_args(p, v, vend - p->args_start);
}

/* ---------------------------------------------------------------- call ends */

static void call_reset(fy_toolcall_parser *p)
{
    p->announced = p->have_name = p->have_args = p->args_closed = p->args_done = 0;
    p->ost = M_KEY;
    p->key = K_OTHER;
    p->depth = p->in_str = p->esc = 0;
    p->args_kind = 0;
    fy_buf_reset(&p->name);
}

/* The call ends at END (its arguments finished, its text dropped); the
 * machine goes on in NEXT. */
static int call_done(fy_toolcall_parser *p, size_t end, int next)
{
    if (finish_args(p, end)) {
        return FAIL;
    }
    fy_buf_consume(&p->held, end);
    p->pos = p->skip = 0;
    p->state = next;
    call_reset(p);
    return MORE;
}

/* The call cannot be one. Announced, it ends at pos as it is and the rest is
 * content; not yet, its marker is content and the text after it is scanned again. */
static int call_fail(fy_toolcall_parser *p)
{
    int text = p->family == FY_TOOLCALL_LLAMA3 ? S_TEXT : S_CONTENT;
    if (p->announced) {
        return call_done(p, p->pos, text);
    }
    if (emit_content(p, p->held.data, p->skip)) {
        return FAIL;
    }
    fy_buf_consume(&p->held, p->skip);
    p->pos = p->skip = 0;
    p->state = text;
    call_reset(p);
    return MORE;
}

/* The state after a call's object, by family. */
static int after_object(const fy_toolcall_parser *p)
{
    return p->family == FY_TOOLCALL_HERMES ? S_CLOSE : S_SEP;
}

/* ------------------------------------------------------------- the object */

static int obj_begin(fy_toolcall_parser *p)
{
    call_reset(p);
    p->obj_start = p->pos++;
    p->state = S_OBJ;
    return MORE;
}

static int key_kind(const char *k, size_t n)
{
    if (n == 4 && memcmp(k, "name", 4) == 0) {
        return K_NAME;
    }
    if ((n == 9 && memcmp(k, "arguments", 9) == 0) ||
        (n == 10 && memcmp(k, "parameters", 10) == 0)) {
        return K_ARGS;
    }
    return K_OTHER;
}

/* The name's JSON string V[0..N) decoded into p->name; 0, or -1 when it is not a name. */
static int take_name(fy_toolcall_parser *p, const char *v, size_t n)
{
    json_t *s = json_loadb(v, n, JSON_DECODE_ANY, NULL);
    int rc = -1;
    if (json_string_value(s) && json_string_length(s) > 0) {
        fy_buf_reset(&p->name);
        rc = fy_buf_append(&p->name, json_string_value(s), json_string_length(s));
        if (rc == FY_ENOMEM) {
            p->err = rc;
        }
    }
    json_decref(s);
    return rc == 0 ? 0 : -1;
}

/* A top-level member's value ended at END (exclusive). MORE to go on. */
static int value_end(fy_toolcall_parser *p, size_t end)
{
    const char *v = p->held.data + p->val_start;
    if (p->key == K_NAME) {
        if (p->ost != M_VSTR || take_name(p, v, end - p->val_start) < 0) {
            return p->err ? FAIL : call_fail(p);
        }
        p->have_name = 1;
        if (!p->have_args && announce(p)) {
            return FAIL;
        }
    } else if (p->key == K_ARGS) {
        p->args_end = end;
        p->args_closed = 1;
        if (p->announced && finish_args(p, end)) {
            return FAIL;
        }
    }
    p->ost = M_SEP;
    return MORE;
}

/* A member's value begins with C at pos. */
static void value_begin(fy_toolcall_parser *p, char c)
{
    p->val_start = p->pos;
    p->ost = c == '"' ? M_VSTR : c == '{' || c == '[' ? M_VNEST : M_VSCALAR;
    p->depth = 1;
    p->in_str = p->esc = 0;
    if ((p->key == K_NAME && p->have_name) || (p->key == K_ARGS && p->have_args)) {
        p->key = K_OTHER; /* a repeated member: the first one counts */
    }
    if (p->key == K_ARGS) {
        p->have_args = 1;
        p->args_kind = c;
        p->args_start = p->args_sent = p->pos;
    }
}

/* The object closed with the '}' at pos. */
static int obj_end(fy_toolcall_parser *p)
{
    size_t end = p->pos + 1;
    if (!p->announced) {
        json_t *o = json_loadb(p->held.data + p->obj_start, end - p->obj_start, 0, NULL);
        int ok = json_is_object(o) && p->have_name;
        json_decref(o);
        if (!ok) {
            return call_fail(p);
        }
        if (announce(p)) {
            return FAIL;
        }
    }
    return call_done(p, end, after_object(p));
}

/* One byte C of the object at pos. MORE to go on to the next byte; else what
 * the handler returns (the byte's own handling moved pos or the state). */
static int obj_byte(fy_toolcall_parser *p, char c)
{
    switch (p->ost) {
    case M_KEY:
    case M_SEP:
        if (c == '}') {
            return obj_end(p);
        }
        if (p->ost == M_SEP && c == ',') {
            p->ost = M_KEY;
        } else if (p->ost == M_KEY && c == '"') {
            p->ost = M_KEYSTR;
            p->key_start = p->pos + 1;
            p->esc = 0;
        } else if (!is_ws(c)) {
            return call_fail(p);
        }
        break;
    case M_KEYSTR:
        if (!str_byte(p, c)) {
            p->key = key_kind(p->held.data + p->key_start, p->pos - p->key_start);
            p->ost = M_COLON;
        }
        break;
    case M_COLON:
        if (c == ':') {
            p->ost = M_VAL;
        } else if (!is_ws(c)) {
            return call_fail(p);
        }
        break;
    case M_VAL:
        if (c == '}' || c == ']' || c == ',' || c == ':') {
            return call_fail(p);
        }
        if (!is_ws(c)) {
            value_begin(p, c);
        }
        break;
    case M_VSTR:
        if (!str_byte(p, c)) {
            return value_end(p, p->pos + 1);
        }
        break;
    case M_VNEST:
        if (nest_byte(p, c)) {
            return value_end(p, p->pos + 1);
        }
        break;
    case M_VSCALAR:
        if (is_ws(c) || c == ',' || c == '}') {
            int rc = value_end(p, p->pos);
            return rc == MORE && p->state == S_OBJ ? obj_byte(p, c) : rc;
        }
        break;
    }
    return MORE;
}

static int st_obj(fy_toolcall_parser *p)
{
    while (p->pos < p->held.len) {
        int st = p->state, rc = obj_byte(p, p->held.data[p->pos]);
        if (rc != MORE || p->state != st) {
            return rc;
        }
        p->pos++;
    }
    if (p->eof && p->ost == M_VSCALAR) {
        int rc = value_end(p, p->pos);
        if (rc != MORE || p->state != S_OBJ) {
            return rc;
        }
    }
    if (p->eof) {
        return call_fail(p); /* truncated */
    }
    if (p->announced && p->have_args && !p->args_done && p->args_kind == '{') {
        return flush_args(p, p->pos, 0) ? FAIL : NEED;
    }
    return NEED;
}

/* -------------------------------------------------------------- the states */

static int st_content(fy_toolcall_parser *p)
{
    const char *h = p->held.data;
    size_t n = p->held.len;
    const char *m = n ? memmem(h, n, p->marker, p->marker_len) : NULL;
    if (m) {
        size_t i = (size_t)(m - h);
        if (emit_content(p, h, i)) {
            return FAIL;
        }
        fy_buf_consume(&p->held, i);
        p->pos = p->skip = p->marker_len;
        p->state = p->family == FY_TOOLCALL_HERMES ? S_OPEN : S_LIST;
        return MORE;
    }
    size_t keep = p->eof ? 0 : prefix_tail(h, n, p->marker, p->marker_len);
    return emit_content_whole(p, n - keep) ? FAIL : NEED;
}

static int st_text(fy_toolcall_parser *p)
{
    return emit_content_whole(p, p->held.len) ? FAIL : NEED;
}

static int st_lead(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        if (p->eof) {
            p->state = S_TEXT;
            return MORE;
        }
        return NEED;
    }
    char *h = p->held.data;
    size_t n = p->held.len, tl = strlen(TAG_PYTHON);
    int m = p->tagged ? 0 : match(h + p->pos, n - p->pos, TAG_PYTHON);
    if (m == 1 && !p->eof) {
        return NEED;
    }
    if (m == 2) {
        /* The tag is never content: cut it out. */
        memmove(h + p->pos, h + p->pos + tl, n - p->pos - tl);
        p->held.len -= tl;
        p->tagged = 1;
        return MORE;
    }
    if (h[p->pos] == '{') {
        return obj_begin(p);
    }
    p->state = S_TEXT;
    return MORE;
}

static int st_open(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return p->eof ? call_fail(p) : NEED;
    }
    return p->held.data[p->pos] == '{' ? obj_begin(p) : call_fail(p);
}

static int is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static int st_list(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return p->eof ? call_fail(p) : NEED;
    }
    char c = p->held.data[p->pos];
    if (c == '[') {
        p->pos++;
        p->state = S_ITEM;
        return MORE;
    }
    if (is_name_char(c)) {
        call_reset(p);
        p->val_start = p->pos;
        p->state = S_NAME;
        return MORE;
    }
    return call_fail(p);
}

static int st_item(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return p->eof ? call_fail(p) : NEED;
    }
    return p->held.data[p->pos] == '{' ? obj_begin(p) : call_fail(p);
}

/* mistral's newer form: [TOOL_CALLS]name[ARGS]{...}. */
static int st_name(fy_toolcall_parser *p)
{
    const char *h = p->held.data;
    while (p->pos < p->held.len && is_name_char(h[p->pos])) {
        p->pos++;
    }
    if (p->pos == p->held.len) {
        return p->eof ? call_fail(p) : NEED;
    }
    int m = match(h + p->pos, p->held.len - p->pos, TAG_MISTRAL_ARGS);
    if (m == 1 && !p->eof) {
        return NEED;
    }
    if (m != 2) {
        return call_fail(p);
    }
    int rc = fy_buf_append(&p->name, h + p->val_start, p->pos - p->val_start);
    if (rc < 0) {
        p->err = rc;
        return FAIL;
    }
    p->pos += strlen(TAG_MISTRAL_ARGS);
    p->state = S_ARGS;
    return announce(p) ? FAIL : MORE;
}

static int st_args(fy_toolcall_parser *p)
{
    if (!p->have_args) {
        if (!skip_ws(p)) {
            return p->eof ? call_done(p, p->pos, S_AFTER) : NEED;
        }
        if (p->held.data[p->pos] != '{') {
            return call_fail(p);
        }
        p->have_args = 1;
        p->args_kind = '{';
        p->args_start = p->args_sent = p->pos++;
        p->depth = 1;
    }
    while (p->pos < p->held.len) {
        if (nest_byte(p, p->held.data[p->pos++])) {
            return call_done(p, p->pos, S_AFTER);
        }
    }
    if (p->eof) {
        return call_done(p, p->pos, S_AFTER);
    }
    return flush_args(p, p->pos, 0) ? FAIL : NEED;
}

/* Whitespace to drop at the end of the output. */
static int drop_at_end(fy_toolcall_parser *p)
{
    if (p->eof) {
        fy_buf_reset(&p->held);
        p->pos = 0;
    }
    return NEED;
}

static int st_close(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return drop_at_end(p);
    }
    int m = match(p->held.data + p->pos, p->held.len - p->pos, TAG_HERMES_CLOSE);
    if (m == 1) {
        return p->eof ? drop_at_end(p) : NEED; /* a close tag cut short is the call's */
    }
    if (m == 2) {
        fy_buf_consume(&p->held, p->pos + strlen(TAG_HERMES_CLOSE));
    }
    p->pos = 0;
    p->state = S_AFTER;
    return MORE;
}

static int st_sep(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return drop_at_end(p);
    }
    char c = p->held.data[p->pos];
    int llama = p->family == FY_TOOLCALL_LLAMA3;
    if (c == (llama ? ';' : ',')) {
        p->pos++;
        p->state = S_ITEM;
    } else if (!llama && c == ']') {
        fy_buf_consume(&p->held, p->pos + 1);
        p->pos = 0;
        p->state = S_AFTER;
    } else {
        p->pos = 0;
        p->state = llama ? S_TEXT : S_CONTENT;
    }
    return MORE;
}

static int st_after(fy_toolcall_parser *p)
{
    if (!skip_ws(p)) {
        return drop_at_end(p);
    }
    int m = match(p->held.data + p->pos, p->held.len - p->pos, p->marker);
    if (m == 1 && !p->eof) {
        return NEED;
    }
    if (m == 2) {
        fy_buf_consume(&p->held, p->pos); /* the whitespace between calls */
        p->pos = p->skip = p->marker_len;
        p->state = p->family == FY_TOOLCALL_HERMES ? S_OPEN : S_LIST;
        return MORE;
    }
    p->pos = 0;
    p->state = S_CONTENT;
    return MORE;
}

/* Runs the machine until it needs more text. Returns 0 or p->err. */
static int step(fy_toolcall_parser *p)
{
    static int (*const handlers[])(fy_toolcall_parser *) = {
        [S_CONTENT] = st_content, [S_TEXT] = st_text,   [S_LEAD] = st_lead, [S_OPEN] = st_open,
        [S_LIST] = st_list,       [S_ITEM] = st_item,   [S_OBJ] = st_obj,   [S_NAME] = st_name,
        [S_ARGS] = st_args,       [S_CLOSE] = st_close, [S_SEP] = st_sep,   [S_AFTER] = st_after,
    };
    for (;;) {
        int rc = handlers[p->state](p);
        if (rc == FAIL || p->err) {
            return p->err ? p->err : FY_EINVAL;
        }
        if (rc == NEED) {
            return 0;
        }
    }
}

/* ------------------------------------------------------------------- the API */

int fy_toolcall_parser_new(fy_toolcall_family f, const fy_toolcall_ops *ops, void *arg,
                           fy_toolcall_parser **out)
{
    *out = NULL;
    if (!ops || f < FY_TOOLCALL_NONE || f > FY_TOOLCALL_MISTRAL) {
        return FY_EINVAL;
    }
    fy_toolcall_parser *p = calloc(1, sizeof *p);
    if (!p) {
        return FY_ENOMEM;
    }
    p->family = f;
    p->ops = *ops;
    p->arg = arg;
    fy_buf_init(&p->held, FY_TOOLCALL_MAX_BYTES);
    fy_buf_init(&p->name, FY_TOOLCALL_MAX_BYTES);
    call_reset(p);
    if (f == FY_TOOLCALL_HERMES || f == FY_TOOLCALL_MISTRAL) {
        p->marker = f == FY_TOOLCALL_HERMES ? TAG_HERMES_OPEN : TAG_MISTRAL;
        p->marker_len = strlen(p->marker);
        p->state = S_CONTENT;
    } else {
        p->state = f == FY_TOOLCALL_LLAMA3 ? S_LEAD : S_TEXT;
    }
    *out = p;
    return 0;
}

int fy_toolcall_push(fy_toolcall_parser *p, const char *text, size_t len)
{
    if (p->err || p->eof) {
        return p->err ? p->err : FY_EINVAL;
    }
    while (len > 0) {
        size_t room = p->held.max - p->held.len;
        size_t k = len < room ? len : room;
        k = k < TC_CHUNK ? k : TC_CHUNK;
        if (k == 0) {
            return p->err = FY_ETOOBIG;
        }
        int rc = fy_buf_append(&p->held, text, k);
        if (rc < 0) {
            return p->err = rc;
        }
        text += k;
        len -= k;
        if ((rc = step(p)) != 0) {
            return rc;
        }
    }
    return 0;
}

int fy_toolcall_finish(fy_toolcall_parser *p)
{
    if (p->err || p->eof) {
        return p->err;
    }
    p->eof = 1;
    return step(p);
}

int fy_toolcall_count(const fy_toolcall_parser *p)
{
    return p->count;
}

void fy_toolcall_parser_free(fy_toolcall_parser *p)
{
    if (!p) {
        return;
    }
    fy_buf_free(&p->held);
    fy_buf_free(&p->name);
    free(p);
}
