/* jinja.c: the Jinja-subset interpreter of jinja.h.
 *
 * Three stages, each in its own section below:
 *   lexer      source -> tokens (text runs, tag delimiters, expression tokens),
 *              applying whitespace control, trim_blocks and lstrip_blocks;
 *   parser     tokens -> AST (statements and expressions), resolving every
 *              filter, test, function and method name to a builtin so that an
 *              unknown one is refused at compile time with its line;
 *   evaluator  AST + variables -> output, on jansson values, with every
 *              resource a template can consume (output bytes, steps, bytes of
 *              strings and lists created) counted against a limit.
 * The AST lives in an arena owned by the compiled template and is never
 * modified by rendering, so renders can run concurrently. */
#include "runner/api/jinja.h"

#include "common/buf.h"
#include "common/err.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

/* ------------------------------------------------------------------ arena */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

static void *arena_alloc(arena_chunk **head, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 32768 ? n : 32768;
        c = malloc(sizeof *c + cap);
        if (!c) {
            return NULL;
        }
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(arena_chunk *c)
{
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

/* ------------------------------------------------------------------ tokens */

enum {
    T_EOF = 0,
    T_TEXT,        /* literal text: s, n */
    T_VAR_BEGIN,   /* {{ */
    T_VAR_END,     /* }} */
    T_BLOCK_BEGIN, /* {% */
    T_BLOCK_END,   /* %} */
    T_NAME,        /* s, n */
    T_STRING,      /* decoded bytes: s, n */
    T_INT,         /* ival */
    T_FLOAT,       /* fval */
    T_OP,          /* s, n: the operator's spelling */
};

typedef struct {
    int type;
    int line;
    const char *s;
    size_t n;
    long long ival;
    double fval;
} token;

/* ------------------------------------------------------------------ AST */

enum {
    /* statements */
    S_TEXT = 1, /* str, len */
    S_OUT,      /* a */
    S_IF,       /* a: cond; body; orelse */
    S_FOR,      /* name (+name2): targets; a: iterable; b: filter or NULL; body; orelse */
    S_SET,      /* name (+attr for ns.attr); a */
    S_SETBLOCK, /* name; body */
    S_BREAK,
    S_CONTINUE,
    S_BODY, /* generation block: body */
    /* expressions */
    E_LIT,    /* lit */
    E_NAME,   /* name */
    E_LIST,   /* args */
    E_DICT,   /* args: key, value, key, value... */
    E_ATTR,   /* a.name */
    E_ITEM,   /* a[b] */
    E_SLICE,  /* a[b:c:d], each of b c d may be NULL */
    E_CALL,   /* op: function; args (+kwnames) */
    E_METHOD, /* a.op(args) */
    E_FILTER, /* a | op(args) */
    E_TEST,   /* a is [not] op(args); neg */
    E_NEG,    /* -a */
    E_POS,    /* +a */
    E_NOT,    /* not a */
    E_AND,    /* a and b */
    E_OR,     /* a or b */
    E_BIN,    /* a op b: arithmetic and ~ */
    E_CMP,    /* a op b (op c ...): args[0] and then args[i] with ops[i-1] */
    E_COND,   /* a if b else c */
};

typedef struct node node;
struct node {
    int kind;
    int line;
    int op;
    int neg;
    const char *name;
    const char *name2; /* second loop target, or the attribute of set ns.attr */
    const char *str;   /* S_TEXT */
    size_t len;
    json_t *lit; /* E_LIT: owned (freed with the template) */
    node *a, *b, *c, *d;
    node **args;
    const char **kwnames; /* kwnames[i] names args[i] (NULL: positional) */
    int *ops;             /* E_CMP operators */
    size_t nargs;
    node *body, *orelse;
    node *next; /* next statement of a block */
};

/* Binary and comparison operators. */
enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT };
enum { CMP_EQ = 1, CMP_NE, CMP_LT, CMP_LE, CMP_GT, CMP_GE, CMP_IN, CMP_NOTIN };

struct fy_jinja {
    arena_chunk *arena;
    node *root;
    json_t **lits; /* every literal, to free */
    size_t nlits, caplits;
};

/* ------------------------------------------------------------------ builtins
 * Names known to the compiler. Each table maps a name to an id used by the
 * evaluator's switch; a name missing here is refused at compile time. */

enum {
    F_ABS = 1,
    F_CAPITALIZE,
    F_COUNT,
    F_DEFAULT,
    F_ESCAPE,
    F_FIRST,
    F_FLOAT,
    F_INDENT,
    F_INT,
    F_ITEMS,
    F_JOIN,
    F_LAST,
    F_LENGTH,
    F_LIST,
    F_LOWER,
    F_MAP,
    F_MAX,
    F_MIN,
    F_REJECT,
    F_REJECTATTR,
    F_REPLACE,
    F_REVERSE,
    F_SAFE,
    F_SELECT,
    F_SELECTATTR,
    F_SORT,
    F_STRING,
    F_SUM,
    F_TITLE,
    F_TOJSON,
    F_TRIM,
    F_UNIQUE,
    F_UPPER,
    F_WORDCOUNT,
};

typedef struct {
    const char *name;
    int id;
} name_id;

static const name_id filter_names[] = {
    {"abs", F_ABS},
    {"capitalize", F_CAPITALIZE},
    {"count", F_COUNT},
    {"d", F_DEFAULT},
    {"default", F_DEFAULT},
    {"e", F_ESCAPE},
    {"escape", F_ESCAPE},
    {"first", F_FIRST},
    {"float", F_FLOAT},
    {"indent", F_INDENT},
    {"int", F_INT},
    {"items", F_ITEMS},
    {"join", F_JOIN},
    {"last", F_LAST},
    {"length", F_LENGTH},
    {"list", F_LIST},
    {"lower", F_LOWER},
    {"map", F_MAP},
    {"max", F_MAX},
    {"min", F_MIN},
    {"reject", F_REJECT},
    {"rejectattr", F_REJECTATTR},
    {"replace", F_REPLACE},
    {"reverse", F_REVERSE},
    {"safe", F_SAFE},
    {"select", F_SELECT},
    {"selectattr", F_SELECTATTR},
    {"sort", F_SORT},
    {"string", F_STRING},
    {"sum", F_SUM},
    {"title", F_TITLE},
    {"tojson", F_TOJSON},
    {"trim", F_TRIM},
    {"unique", F_UNIQUE},
    {"upper", F_UPPER},
    {"wordcount", F_WORDCOUNT},
};

enum {
    TS_DEFINED = 1,
    TS_UNDEFINED,
    TS_NONE,
    TS_STRING,
    TS_NUMBER,
    TS_INTEGER,
    TS_FLOAT,
    TS_BOOLEAN,
    TS_MAPPING,
    TS_SEQUENCE,
    TS_ITERABLE,
    TS_TRUE,
    TS_FALSE,
    TS_ODD,
    TS_EVEN,
    TS_DIVISIBLEBY,
    TS_EQ,
    TS_NE,
    TS_LT,
    TS_LE,
    TS_GT,
    TS_GE,
    TS_IN,
    TS_LOWER,
    TS_UPPER,
    TS_CALLABLE,
    TS_SAMEAS,
};

static const name_id test_names[] = {
    {"defined", TS_DEFINED},
    {"undefined", TS_UNDEFINED},
    {"none", TS_NONE},
    {"string", TS_STRING},
    {"number", TS_NUMBER},
    {"integer", TS_INTEGER},
    {"float", TS_FLOAT},
    {"boolean", TS_BOOLEAN},
    {"mapping", TS_MAPPING},
    {"sequence", TS_SEQUENCE},
    {"iterable", TS_ITERABLE},
    {"true", TS_TRUE},
    {"false", TS_FALSE},
    {"odd", TS_ODD},
    {"even", TS_EVEN},
    {"divisibleby", TS_DIVISIBLEBY},
    {"equalto", TS_EQ},
    {"eq", TS_EQ},
    {"==", TS_EQ},
    {"ne", TS_NE},
    {"!=", TS_NE},
    {"lt", TS_LT},
    {"<", TS_LT},
    {"lessthan", TS_LT},
    {"le", TS_LE},
    {"<=", TS_LE},
    {"gt", TS_GT},
    {">", TS_GT},
    {"greaterthan", TS_GT},
    {"ge", TS_GE},
    {">=", TS_GE},
    {"in", TS_IN},
    {"lower", TS_LOWER},
    {"upper", TS_UPPER},
    {"callable", TS_CALLABLE},
    {"sameas", TS_SAMEAS},
};

enum { FN_RANGE = 1, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME };

static const name_id func_names[] = {
    {"range", FN_RANGE},           {"namespace", FN_NAMESPACE},   {"dict", FN_DICT},
    {"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME},
};

enum {
    M_STRIP = 1,
    M_LSTRIP,
    M_RSTRIP,
    M_UPPER,
    M_LOWER,
    M_TITLE,
    M_CAPITALIZE,
    M_STARTSWITH,
    M_ENDSWITH,
    M_SPLIT,
    M_REPLACE,
    M_FIND,
    M_COUNT,
    M_JOIN,
    M_ITEMS,
    M_GET,
    M_KEYS,
    M_VALUES,
};

static const name_id method_names[] = {
    {"strip", M_STRIP},
    {"lstrip", M_LSTRIP},
    {"rstrip", M_RSTRIP},
    {"upper", M_UPPER},
    {"lower", M_LOWER},
    {"title", M_TITLE},
    {"capitalize", M_CAPITALIZE},
    {"startswith", M_STARTSWITH},
    {"endswith", M_ENDSWITH},
    {"split", M_SPLIT},
    {"replace", M_REPLACE},
    {"find", M_FIND},
    {"count", M_COUNT},
    {"join", M_JOIN},
    {"items", M_ITEMS},
    {"get", M_GET},
    {"keys", M_KEYS},
    {"values", M_VALUES},
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int lookup(const name_id *t, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        if (strlen(t[i].name) == len && memcmp(t[i].name, s, len) == 0) {
            return t[i].id;
        }
    }
    return 0;
}

static const char *name_of(const name_id *t, size_t n, int id)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i].id == id) {
            return t[i].name;
        }
    }
    return "?";
}

/* ------------------------------------------------------------------ compiler state */

typedef struct {
    fy_jinja *t;
    const char *src;
    size_t len;
    unsigned flags;
    token *toks;
    size_t ntoks, captoks;
    size_t pos; /* parser: index of the current token */
    int depth;
    int rc;
    char *err;
    size_t errlen;
} compiler;

/* Records the first error (with its line) and returns its code. */
static int cfail(compiler *c, int rc, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cfail(compiler *c, int rc, int line, const char *fmt, ...)
{
    if (c->rc) {
        return c->rc;
    }
    c->rc = rc;
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < c->errlen && line > 0) {
            snprintf(c->err + n, c->errlen - (size_t)n, " at line %d", line);
        }
    }
    return rc;
}

static char *cstrdup(compiler *c, const char *s, size_t n)
{
    char *p = arena_alloc(&c->t->arena, n + 1);
    if (!p) {
        cfail(c, FY_ENOMEM, 0, "out of memory");
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ------------------------------------------------------------------ lexer */

static token *emit_tok(compiler *c, int type, int line)
{
    if (c->ntoks == c->captoks) {
        size_t cap = c->captoks ? c->captoks * 2 : 256;
        token *p = realloc(c->toks, cap * sizeof *p);
        if (!p) {
            cfail(c, FY_ENOMEM, 0, "out of memory");
            return NULL;
        }
        c->toks = p;
        c->captoks = cap;
    }
    token *t = &c->toks[c->ntoks++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = line;
    return t;
}

static int count_nl(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        k += s[i] == '\n';
    }
    return k;
}

static int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* lstrip_blocks: drops the spaces and tabs that precede a block tag when
 * nothing else precedes it on its line. TEXT lies inside SRC. */
static void lstrip_line(const char *src, const char *text, size_t *tlen)
{
    size_t k = *tlen;
    while (k && (text[k - 1] == ' ' || text[k - 1] == '\t')) {
        k--;
    }
    if (k == 0) {
        if (text == src || text[-1] == '\n') {
            *tlen = 0;
        }
    } else if (text[k - 1] == '\n') {
        *tlen = k;
    }
}

/* Appends the UTF-8 encoding of CP to P; returns bytes written. */
static size_t utf8_put(char *p, long cp)
{
    if (cp < 0 || cp > 0x10FFFF) {
        cp = 0xFFFD;
    }
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)p);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Lexes a string literal at S[*I] (the opening quote) with Python's escapes;
 * unknown escapes stay as written, as in Python. */
/* Jinja writes every \r\n and \r of template text and string literals as
 * \n. Returns the new length (S is rewritten in place). */
static size_t normalize_newlines(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            s[o++] = '\n';
            i += i + 1 < n && s[i + 1] == '\n';
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

static int lex_string(compiler *c, const char *s, size_t n, size_t *i, int *line)
{
    char q = s[*i];
    size_t j = *i + 1;
    int start_line = *line;
    while (j < n && s[j] != q) {
        if (s[j] == '\\' && j + 1 < n) {
            j++;
        }
        j++;
    }
    if (j >= n) {
        return cfail(c, FY_EPARSE, start_line, "unterminated string literal");
    }
    /* Decoded text is never longer than the source (a \x or \u escape is
     * at most as long as its UTF-8). */
    char *out = arena_alloc(&c->t->arena, j - *i + 1);
    if (!out) {
        return cfail(c, FY_ENOMEM, 0, "out of memory");
    }
    size_t o = 0;
    for (size_t k = *i + 1; k < j; k++) {
        if (s[k] == '\n') {
            (*line)++;
        }
        if (s[k] == '\r') {
            out[o++] = '\n';
            k += k + 1 < j && s[k + 1] == '\n';
            continue;
        }
        if (s[k] != '\\') {
            out[o++] = s[k];
            continue;
        }
        char e = s[++k];
        int digits = 0;
        switch (e) {
        case 'n':
            out[o++] = '\n';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'r':
            out[o++] = '\r';
            break;
        case '\\':
            out[o++] = '\\';
            break;
        case '\'':
            out[o++] = '\'';
            break;
        case '"':
            out[o++] = '"';
            break;
        case 'a':
            out[o++] = '\a';
            break;
        case 'b':
            out[o++] = '\b';
            break;
        case 'f':
            out[o++] = '\f';
            break;
        case 'v':
            out[o++] = '\v';
            break;
        case '\n':
            (*line)++;
            break; /* line continuation */
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        default:
            if (e >= '0' && e <= '7') {
                long v = 0;
                int m = 0;
                while (m < 3 && k < j && s[k] >= '0' && s[k] <= '7') {
                    v = v * 8 + (s[k++] - '0');
                    m++;
                }
                k--;
                o += utf8_put(out + o, v);
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
        }
        if (digits) {
            long v = 0;
            for (int m = 0; m < digits; m++) {
                int h = k + 1 < j ? hexval(s[k + 1]) : -1;
                if (h < 0) {
                    return cfail(c, FY_EPARSE, *line, "truncated \\%c escape in string literal", e);
                }
                v = v * 16 + h;
                k++;
            }
            o += utf8_put(out + o, v);
        }
    }
    out[o] = 0;
    token *t = emit_tok(c, T_STRING, start_line);
    if (!t) {
        return c->rc;
    }
    t->s = out;
    t->n = o;
    *i = j + 1;
    return 0;
}

static int lex_number(compiler *c, const char *s, size_t n, size_t *i, int line)
{
    size_t j = *i;
    int is_float = 0;
    while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) {
        j++;
    }
    int after_dot =
        c->ntoks && c->toks[c->ntoks - 1].type == T_OP && c->toks[c->ntoks - 1].s[0] == '.';
    if (!after_dot && j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
        is_float = 1;
        j++;
        while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) {
            j++;
        }
    }
    if (!after_dot && j < n && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) {
            k++;
        }
        if (k < n && isdigit((unsigned char)s[k])) {
            is_float = 1;
            j = k;
            while (j < n && isdigit((unsigned char)s[j])) {
                j++;
            }
        }
    }
    char buf[64];
    size_t o = 0;
    for (size_t k = *i; k < j; k++) {
        if (s[k] != '_') {
            if (o + 1 >= sizeof buf) {
                return cfail(c, FY_EPARSE, line, "number literal too long");
            }
            buf[o++] = s[k];
        }
    }
    buf[o] = 0;
    token *t = emit_tok(c, is_float ? T_FLOAT : T_INT, line);
    if (!t) {
        return c->rc;
    }
    errno = 0;
    if (is_float) {
        t->fval = strtod(buf, NULL);
        if (!isfinite(t->fval)) {
            return cfail(c, FY_ENOTSUP, line, "float literal %s out of range", buf);
        }
    } else {
        t->ival = strtoll(buf, NULL, 10);
        if (errno == ERANGE) {
            return cfail(c, FY_ENOTSUP, line, "integer literal %s too large", buf);
        }
    }
    *i = j;
    return 0;
}

static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char ops1[] = "+-*/%~<>=()[]{},.:|";

/* Lexes the inside of a {{ }} or {% %} tag starting at *I, through its closing
 * delimiter. Returns 0, sets *TRIM_AFTER to '-' (strip following whitespace),
 * '+' (keep it) or 0. */
static int lex_tag(compiler *c, const char *s, size_t n, size_t *i, int *line, char kind,
                   char *trim_after)
{
    int braces = 0;
    int start_line = *line;
    for (;;) {
        while (*i < n && is_ws(s[*i])) {
            *line += s[*i] == '\n';
            (*i)++;
        }
        if (*i >= n) {
            return cfail(c, FY_EPARSE, start_line, "unclosed %s tag", kind == '{' ? "{{" : "{%");
        }
        const char *p = s + *i;
        size_t left = n - *i;
        char close = kind == '{' ? '}' : '%';
        if (braces == 0 || kind == '%') {
            size_t skip = 0;
            char mod = 0;
            if (left >= 3 && (p[0] == '-' || (p[0] == '+' && kind == '%')) && p[1] == close &&
                p[2] == '}') {
                mod = p[0];
                skip = 3;
            } else if (left >= 2 && p[0] == close && p[1] == '}') {
                skip = 2;
            }
            if (skip) {
                if (!emit_tok(c, kind == '{' ? T_VAR_END : T_BLOCK_END, *line)) {
                    return c->rc;
                }
                *i += skip;
                *trim_after = mod;
                return 0;
            }
        }
        unsigned char ch = (unsigned char)p[0];
        int rc = 0;
        if (isalpha(ch) || ch == '_') {
            size_t j = 1;
            while (j < left && (isalnum((unsigned char)p[j]) || p[j] == '_')) {
                j++;
            }
            token *t = emit_tok(c, T_NAME, *line);
            if (!t) {
                return c->rc;
            }
            t->s = p;
            t->n = j;
            *i += j;
        } else if (isdigit(ch)) {
            rc = lex_number(c, s, n, i, *line);
        } else if (ch == '\'' || ch == '"') {
            rc = lex_string(c, s, n, i, line);
        } else {
            size_t oplen = 0;
            for (size_t k = 0; k < NELEM(ops2); k++) {
                if (left >= 2 && memcmp(p, ops2[k], 2) == 0) {
                    oplen = 2;
                }
            }
            if (!oplen && strchr(ops1, ch)) {
                oplen = 1;
            }
            if (!oplen) {
                return cfail(c, FY_EPARSE, *line, "unexpected character '%c' in tag",
                             isprint(ch) ? ch : '?');
            }
            braces += ch == '{';
            braces -= ch == '}' && braces > 0;
            token *t = emit_tok(c, T_OP, *line);
            if (!t) {
                return c->rc;
            }
            t->s = p;
            t->n = oplen;
            *i += oplen;
        }
        if (rc) {
            return rc;
        }
    }
}

static size_t skip_newline(const char *s, size_t n, size_t i, int *line)
{
    if (i < n && s[i] == '\n') {
        (*line)++;
        return i + 1;
    }
    if (i + 1 < n && s[i] == '\r' && s[i + 1] == '\n') {
        (*line)++;
        return i + 2;
    }
    return i;
}

static int lex(compiler *c)
{
    const char *s = c->src;
    size_t n = c->len;
    /* keep_trailing_newline=False: one trailing newline is not part of it. */
    if (n && s[n - 1] == '\n') {
        n--;
        if (n && s[n - 1] == '\r') {
            n--;
        }
    }
    size_t pos = 0;
    int line = 1, lstrip_next = 0;
    for (;;) {
        size_t tag = n;
        for (size_t i = pos; i + 1 < n; i++) {
            if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) {
                tag = i;
                break;
            }
        }
        const char *text = s + pos;
        size_t tlen = tag - pos;
        int text_line = line;
        line += count_nl(text, tlen);
        if (lstrip_next) {
            while (tlen && is_ws(*text)) {
                text_line += *text == '\n';
                text++;
                tlen--;
            }
            lstrip_next = 0;
        }
        char kind = 0, mod = 0;
        if (tag < n) {
            kind = s[tag + 1];
            mod = tag + 2 < n ? s[tag + 2] : 0;
            if (mod == '-') {
                while (tlen && is_ws(text[tlen - 1])) {
                    tlen--;
                }
            } else if (mod == '+' && kind != '{') {
                /* {%+ keeps the whitespace before the tag. */
            } else if (kind != '{' && (c->flags & FY_JINJA_LSTRIP_BLOCKS)) {
                lstrip_line(s, text, &tlen);
            }
        }
        if (tlen) {
            token *t = emit_tok(c, T_TEXT, text_line);
            if (!t) {
                return c->rc;
            }
            t->s = text;
            t->n = tlen;
        }
        if (tag >= n) {
            break;
        }
        pos = tag + 2;
        if (mod == '-' || (mod == '+' && kind != '{')) {
            pos++;
        }
        char trim_after = 0;
        if (kind == '#') {
            size_t end = pos;
            while (end + 1 < n && !(s[end] == '#' && s[end + 1] == '}')) {
                end++;
            }
            if (end + 1 >= n) {
                return cfail(c, FY_EPARSE, line, "unclosed comment");
            }
            line += count_nl(s + pos, end - pos);
            if (end > pos && (s[end - 1] == '-' || s[end - 1] == '+')) {
                trim_after = s[end - 1];
            }
            pos = end + 2;
        } else {
            if (!emit_tok(c, kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, line)) {
                return c->rc;
            }
            int rc = lex_tag(c, s, n, &pos, &line, kind, &trim_after);
            if (rc) {
                return rc;
            }
        }
        if (trim_after == '-') {
            lstrip_next = 1;
        } else if (trim_after != '+' && kind != '{' && (c->flags & FY_JINJA_TRIM_BLOCKS)) {
            pos = skip_newline(s, n, pos, &line);
        }
    }
    return emit_tok(c, T_EOF, line) ? 0 : c->rc;
}

/* ------------------------------------------------------------------ parser */

static token *cur(compiler *c)
{
    return &c->toks[c->pos];
}

static int tok_is_op(const token *t, const char *op)
{
    return t->type == T_OP && t->n == strlen(op) && memcmp(t->s, op, t->n) == 0;
}

static int tok_is_name(const token *t, const char *nm)
{
    return t->type == T_NAME && t->n == strlen(nm) && memcmp(t->s, nm, t->n) == 0;
}

static int accept_op(compiler *c, const char *op)
{
    if (tok_is_op(cur(c), op)) {
        c->pos++;
        return 1;
    }
    return 0;
}

static int accept_name(compiler *c, const char *nm)
{
    if (tok_is_name(cur(c), nm)) {
        c->pos++;
        return 1;
    }
    return 0;
}

/* A readable name for a token in error messages. */
static void tok_desc(const token *t, char *buf, size_t n)
{
    switch (t->type) {
    case T_EOF:
        snprintf(buf, n, "end of template");
        break;
    case T_TEXT:
        snprintf(buf, n, "text");
        break;
    case T_VAR_BEGIN:
        snprintf(buf, n, "'{{'");
        break;
    case T_VAR_END:
        snprintf(buf, n, "'}}'");
        break;
    case T_BLOCK_BEGIN:
        snprintf(buf, n, "'{%%'");
        break;
    case T_BLOCK_END:
        snprintf(buf, n, "'%%}'");
        break;
    case T_STRING:
        snprintf(buf, n, "string literal");
        break;
    case T_INT:
    case T_FLOAT:
        snprintf(buf, n, "number");
        break;
    default:
        snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
    }
}

static int unexpected(compiler *c, const char *wanted)
{
    char d[64];
    tok_desc(cur(c), d, sizeof d);
    return cfail(c, FY_EPARSE, cur(c)->line, "expected %s, got %s", wanted, d);
}

static int expect_op(compiler *c, const char *op)
{
    if (accept_op(c, op)) {
        return 0;
    }
    char w[16];
    snprintf(w, sizeof w, "'%s'", op);
    return unexpected(c, w);
}

static int expect_type(compiler *c, int type, const char *what)
{
    if (cur(c)->type == type) {
        c->pos++;
        return 0;
    }
    return unexpected(c, what);
}

static node *new_node(compiler *c, int kind, int line)
{
    node *n = arena_alloc(&c->t->arena, sizeof *n);
    if (!n) {
        cfail(c, FY_ENOMEM, 0, "out of memory");
        return NULL;
    }
    n->kind = kind;
    n->line = line;
    return n;
}

static node *new_lit(compiler *c, json_t *v, int line)
{
    fy_jinja *t = c->t;
    if (!v) {
        cfail(c, FY_ENOMEM, 0, "out of memory");
        return NULL;
    }
    if (t->nlits == t->caplits) {
        size_t cap = t->caplits ? t->caplits * 2 : 64;
        json_t **p = realloc(t->lits, cap * sizeof *p);
        if (!p) {
            json_decref(v);
            cfail(c, FY_ENOMEM, 0, "out of memory");
            return NULL;
        }
        t->lits = p;
        t->caplits = cap;
    }
    t->lits[t->nlits++] = v;
    node *n = new_node(c, E_LIT, line);
    if (n) {
        n->lit = v;
    }
    return n;
}

/* Growable array of nodes (and keyword names) being collected. */
typedef struct {
    node **v;
    const char **kw;
    size_t n, cap;
} nodevec;

static int nv_push(compiler *c, nodevec *nv, node *n, const char *kw)
{
    if (nv->n == nv->cap) {
        size_t cap = nv->cap ? nv->cap * 2 : 8;
        node **v = arena_alloc(&c->t->arena, cap * sizeof *v);
        const char **k = arena_alloc(&c->t->arena, cap * sizeof *k);
        if (!v || !k) {
            return cfail(c, FY_ENOMEM, 0, "out of memory");
        }
        if (nv->n) {
            memcpy(v, nv->v, nv->n * sizeof *v);
            memcpy(k, nv->kw, nv->n * sizeof *k);
        }
        nv->v = v;
        nv->kw = k;
        nv->cap = cap;
    }
    nv->v[nv->n] = n;
    nv->kw[nv->n] = kw;
    nv->n++;
    return 0;
}

static node *parse_expr(compiler *c);
static node *parse_or(compiler *c);
static node *parse_unary(compiler *c, int with_filter);
static node *parse_primary(compiler *c);
static node *parse_postfix(compiler *c, node *n);

static int enter(compiler *c)
{
    if (++c->depth > FY_JINJA_MAX_DEPTH) {
        return cfail(c, FY_ETOOBIG, cur(c)->line, "template nests deeper than %d levels",
                     FY_JINJA_MAX_DEPTH);
    }
    return 0;
}

/* Parses "(a, b, k=v)" after the '(' has been seen; fills N's args. */
static int parse_call_args(compiler *c, node *n)
{
    nodevec nv = {0};
    int seen_kw = 0;
    while (!tok_is_op(cur(c), ")")) {
        if (tok_is_op(cur(c), "*") || tok_is_op(cur(c), "**")) {
            return cfail(c, FY_ENOTSUP, cur(c)->line, "unsupported *args/**kwargs in call");
        }
        const char *kw = NULL;
        if (cur(c)->type == T_NAME && tok_is_op(&c->toks[c->pos + 1], "=")) {
            kw = cstrdup(c, cur(c)->s, cur(c)->n);
            if (!kw) {
                return c->rc;
            }
            c->pos += 2;
            seen_kw = 1;
        } else if (seen_kw) {
            return cfail(c, FY_EPARSE, cur(c)->line,
                         "positional argument follows keyword argument");
        }
        node *a = parse_expr(c);
        if (!a || nv_push(c, &nv, a, kw)) {
            return c->rc;
        }
        if (!accept_op(c, ",")) {
            break;
        }
    }
    if (expect_op(c, ")")) {
        return c->rc;
    }
    n->args = nv.v;
    n->kwnames = nv.kw;
    n->nargs = nv.n;
    return 0;
}

static node *parse_primary(compiler *c)
{
    token *t = cur(c);
    int line = t->line;
    if (t->type == T_STRING) {
        /* Adjacent literals concatenate, as in Python. */
        fy_buf b;
        fy_buf_init(&b, FY_JINJA_MAX_SOURCE);
        while (cur(c)->type == T_STRING) {
            if (fy_buf_append(&b, cur(c)->s, cur(c)->n)) {
                fy_buf_free(&b);
                cfail(c, FY_ENOMEM, 0, "out of memory");
                return NULL;
            }
            c->pos++;
        }
        node *n = new_lit(c, json_stringn_nocheck(b.data ? b.data : "", b.len), line);
        fy_buf_free(&b);
        return n;
    }
    if (t->type == T_INT) {
        c->pos++;
        return new_lit(c, json_integer(t->ival), line);
    }
    if (t->type == T_FLOAT) {
        c->pos++;
        return new_lit(c, json_real(t->fval), line);
    }
    if (t->type == T_NAME) {
        c->pos++;
        if (tok_is_name(t, "true") || tok_is_name(t, "True")) {
            return new_lit(c, json_true(), line);
        }
        if (tok_is_name(t, "false") || tok_is_name(t, "False")) {
            return new_lit(c, json_false(), line);
        }
        if (tok_is_name(t, "none") || tok_is_name(t, "None")) {
            return new_lit(c, json_null(), line);
        }
        static const char *const kws[] = {"and", "or", "not", "in", "is", "if", "else"};
        for (size_t i = 0; i < NELEM(kws); i++) {
            if (tok_is_name(t, kws[i])) {
                c->pos--;
                unexpected(c, "an expression");
                return NULL;
            }
        }
        node *n = new_node(c, E_NAME, line);
        if (n && !(n->name = cstrdup(c, t->s, t->n))) {
            return NULL;
        }
        return n;
    }
    if (accept_op(c, "(")) {
        /* A parenthesised expression, or a tuple (kept as a list). */
        if (accept_op(c, ")")) {
            return new_node(c, E_LIST, line);
        }
        node *first = parse_expr(c);
        if (!first) {
            return NULL;
        }
        if (accept_op(c, ")")) {
            return first;
        }
        node *n = new_node(c, E_LIST, line);
        nodevec nv = {0};
        if (!n || nv_push(c, &nv, first, NULL)) {
            return NULL;
        }
        while (accept_op(c, ",")) {
            if (tok_is_op(cur(c), ")")) {
                break;
            }
            node *e = parse_expr(c);
            if (!e || nv_push(c, &nv, e, NULL)) {
                return NULL;
            }
        }
        if (expect_op(c, ")")) {
            return NULL;
        }
        n->args = nv.v;
        n->nargs = nv.n;
        return n;
    }
    if (accept_op(c, "[")) {
        node *n = new_node(c, E_LIST, line);
        nodevec nv = {0};
        if (!n) {
            return NULL;
        }
        while (!tok_is_op(cur(c), "]")) {
            node *e = parse_expr(c);
            if (!e || nv_push(c, &nv, e, NULL)) {
                return NULL;
            }
            if (!accept_op(c, ",")) {
                break;
            }
        }
        if (expect_op(c, "]")) {
            return NULL;
        }
        n->args = nv.v;
        n->nargs = nv.n;
        return n;
    }
    if (accept_op(c, "{")) {
        node *n = new_node(c, E_DICT, line);
        nodevec nv = {0};
        if (!n) {
            return NULL;
        }
        while (!tok_is_op(cur(c), "}")) {
            node *k = parse_expr(c);
            if (!k || expect_op(c, ":")) {
                return NULL;
            }
            node *v = parse_expr(c);
            if (!v || nv_push(c, &nv, k, NULL) || nv_push(c, &nv, v, NULL)) {
                return NULL;
            }
            if (!accept_op(c, ",")) {
                break;
            }
        }
        if (expect_op(c, "}")) {
            return NULL;
        }
        n->args = nv.v;
        n->nargs = nv.n;
        return n;
    }
    unexpected(c, "an expression");
    return NULL;
}

/* Parses a subscript after '[': an expression or a slice a:b:c. */
static node *parse_subscript(compiler *c, node *obj, int line)
{
    node *parts[3] = {NULL, NULL, NULL};
    int nparts = 0, colons = 0;
    for (;;) {
        if (tok_is_op(cur(c), ":")) {
            c->pos++;
            if (++colons > 2) {
                unexpected(c, "']'");
                return NULL;
            }
            nparts = colons;
            continue;
        }
        if (tok_is_op(cur(c), "]")) {
            break;
        }
        if (parts[nparts]) {
            unexpected(c, "':' or ']'");
            return NULL;
        }
        if (!(parts[nparts] = parse_expr(c))) {
            return NULL;
        }
    }
    c->pos++; /* ] */
    if (!colons && !parts[0]) {
        cfail(c, FY_EPARSE, line, "empty subscript");
        return NULL;
    }
    node *n = new_node(c, colons ? E_SLICE : E_ITEM, line);
    if (!n) {
        return NULL;
    }
    n->a = obj;
    n->b = parts[0];
    n->c = parts[1];
    n->d = parts[2];
    return n;
}

static node *parse_postfix(compiler *c, node *n)
{
    for (;;) {
        int line = cur(c)->line;
        if (accept_op(c, ".")) {
            token *t = cur(c);
            if (t->type == T_INT) {
                c->pos++;
                node *idx = new_lit(c, json_integer(t->ival), line);
                node *it = new_node(c, E_ITEM, line);
                if (!idx || !it) {
                    return NULL;
                }
                it->a = n;
                it->b = idx;
                n = it;
                continue;
            }
            if (t->type != T_NAME) {
                unexpected(c, "an attribute name");
                return NULL;
            }
            c->pos++;
            node *at = new_node(c, E_ATTR, line);
            if (!at || !(at->name = cstrdup(c, t->s, t->n))) {
                return NULL;
            }
            at->a = n;
            n = at;
        } else if (accept_op(c, "[")) {
            if (!(n = parse_subscript(c, n, line))) {
                return NULL;
            }
        } else if (accept_op(c, "(")) {
            node *call;
            if (n->kind == E_NAME) {
                int id = lookup(func_names, NELEM(func_names), n->name, strlen(n->name));
                if (!id) {
                    cfail(c, FY_ENOTSUP, line, "unsupported function '%s'", n->name);
                    return NULL;
                }
                call = new_node(c, E_CALL, line);
                if (!call) {
                    return NULL;
                }
                call->op = id;
                call->name = n->name;
            } else if (n->kind == E_ATTR) {
                int id = lookup(method_names, NELEM(method_names), n->name, strlen(n->name));
                if (!id) {
                    cfail(c, FY_ENOTSUP, line, "unsupported method '%s'", n->name);
                    return NULL;
                }
                call = new_node(c, E_METHOD, line);
                if (!call) {
                    return NULL;
                }
                call->op = id;
                call->name = n->name;
                call->a = n->a;
            } else {
                cfail(c, FY_ENOTSUP, line, "unsupported call of a computed value");
                return NULL;
            }
            if (parse_call_args(c, call)) {
                return NULL;
            }
            n = call;
        } else {
            return n;
        }
    }
}

/* Can the current token start a test's bare argument ("is divisibleby 3")? */
static int starts_test_arg(compiler *c)
{
    token *t = cur(c);
    if (t->type == T_STRING || t->type == T_INT || t->type == T_FLOAT) {
        return 1;
    }
    if (t->type == T_NAME) {
        static const char *const stop[] = {"and", "or", "else", "if", "in", "is", "not"};
        for (size_t i = 0; i < NELEM(stop); i++) {
            if (tok_is_name(t, stop[i])) {
                return 0;
            }
        }
        return 1;
    }
    return tok_is_op(t, "[") || tok_is_op(t, "{");
}

static node *parse_filters(compiler *c, node *n)
{
    for (;;) {
        int line = cur(c)->line;
        if (accept_op(c, "|")) {
            token *t = cur(c);
            if (t->type != T_NAME) {
                unexpected(c, "a filter name");
                return NULL;
            }
            c->pos++;
            int id = lookup(filter_names, NELEM(filter_names), t->s, t->n);
            if (!id) {
                cfail(c, FY_ENOTSUP, line, "unsupported filter '%.*s'", (int)t->n, t->s);
                return NULL;
            }
            node *f = new_node(c, E_FILTER, line);
            if (!f) {
                return NULL;
            }
            f->op = id;
            f->a = n;
            if (accept_op(c, "(") && parse_call_args(c, f)) {
                return NULL;
            }
            n = f;
        } else if (accept_name(c, "is")) {
            int neg = accept_name(c, "not");
            token *t = cur(c);
            int id = 0;
            if (t->type == T_NAME) {
                id = lookup(test_names, NELEM(test_names), t->s, t->n);
            } else if (t->type == T_OP) {
                id = lookup(test_names, NELEM(test_names), t->s, t->n);
            } else {
                unexpected(c, "a test name");
                return NULL;
            }
            if (!id) {
                cfail(c, FY_ENOTSUP, line, "unsupported test '%.*s'", (int)t->n, t->s);
                return NULL;
            }
            c->pos++;
            node *f = new_node(c, E_TEST, line);
            if (!f) {
                return NULL;
            }
            f->op = id;
            f->neg = neg;
            f->a = n;
            if (accept_op(c, "(")) {
                if (parse_call_args(c, f)) {
                    return NULL;
                }
            } else if (starts_test_arg(c)) {
                node *arg = parse_primary(c);
                if (!arg || !(arg = parse_postfix(c, arg))) {
                    return NULL;
                }
                nodevec nv = {0};
                if (nv_push(c, &nv, arg, NULL)) {
                    return NULL;
                }
                f->args = nv.v;
                f->kwnames = nv.kw;
                f->nargs = 1;
            }
            n = f;
        } else {
            return n;
        }
    }
}

static node *parse_unary(compiler *c, int with_filter)
{
    if (enter(c)) {
        return NULL;
    }
    int line = cur(c)->line;
    node *n;
    if (tok_is_op(cur(c), "-") || tok_is_op(cur(c), "+")) {
        int neg = tok_is_op(cur(c), "-");
        c->pos++;
        node *a = parse_unary(c, 0);
        if (!a || !(n = new_node(c, neg ? E_NEG : E_POS, line))) {
            return NULL;
        }
        n->a = a;
    } else if (!(n = parse_primary(c))) {
        return NULL;
    }
    if (!(n = parse_postfix(c, n))) {
        return NULL;
    }
    if (with_filter && !(n = parse_filters(c, n))) {
        return NULL;
    }
    c->depth--;
    return n;
}

static node *new_bin(compiler *c, int kind, int op, node *a, node *b, int line)
{
    node *n = new_node(c, kind, line);
    if (n) {
        n->op = op;
        n->a = a;
        n->b = b;
    }
    return n;
}

static node *parse_pow(compiler *c)
{
    node *n = parse_unary(c, 1);
    while (n && tok_is_op(cur(c), "**")) {
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_unary(c, 1);
        n = b ? new_bin(c, E_BIN, OP_POW, n, b, line) : NULL;
    }
    return n;
}

static node *parse_math2(compiler *c)
{
    node *n = parse_pow(c);
    for (;;) {
        int op = tok_is_op(cur(c), "*")    ? OP_MUL
                 : tok_is_op(cur(c), "/")  ? OP_DIV
                 : tok_is_op(cur(c), "//") ? OP_FDIV
                 : tok_is_op(cur(c), "%")  ? OP_MOD
                                           : 0;
        if (!n || !op) {
            return n;
        }
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_pow(c);
        n = b ? new_bin(c, E_BIN, op, n, b, line) : NULL;
    }
}

/* Jinja binds ~ tighter than + and -. */
static node *parse_concat(compiler *c)
{
    node *n = parse_math2(c);
    while (n && tok_is_op(cur(c), "~")) {
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_math2(c);
        n = b ? new_bin(c, E_BIN, OP_CAT, n, b, line) : NULL;
    }
    return n;
}

static node *parse_math1(compiler *c)
{
    node *n = parse_concat(c);
    for (;;) {
        int op = tok_is_op(cur(c), "+") ? OP_ADD : tok_is_op(cur(c), "-") ? OP_SUB : 0;
        if (!n || !op) {
            return n;
        }
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_concat(c);
        n = b ? new_bin(c, E_BIN, op, n, b, line) : NULL;
    }
}

static int cmp_op(compiler *c)
{
    static const struct {
        const char *s;
        int op;
    } ops[] = {{"==", CMP_EQ}, {"!=", CMP_NE}, {"<", CMP_LT},
               {"<=", CMP_LE}, {">", CMP_GT},  {">=", CMP_GE}};
    for (size_t i = 0; i < NELEM(ops); i++) {
        if (accept_op(c, ops[i].s)) {
            return ops[i].op;
        }
    }
    if (accept_name(c, "in")) {
        return CMP_IN;
    }
    if (tok_is_name(cur(c), "not") && tok_is_name(&c->toks[c->pos + 1], "in")) {
        c->pos += 2;
        return CMP_NOTIN;
    }
    return 0;
}

static node *parse_compare(compiler *c)
{
    int line = cur(c)->line;
    node *first = parse_math1(c);
    if (!first) {
        return NULL;
    }
    int op = cmp_op(c);
    if (!op) {
        return first;
    }
    nodevec nv = {0};
    int *ops = NULL;
    size_t nops = 0, capops = 0;
    if (nv_push(c, &nv, first, NULL)) {
        return NULL;
    }
    while (op) {
        node *b = parse_math1(c);
        if (!b || nv_push(c, &nv, b, NULL)) {
            return NULL;
        }
        if (nops == capops) {
            capops = capops ? capops * 2 : 4;
            int *p = arena_alloc(&c->t->arena, capops * sizeof *p);
            if (!p) {
                cfail(c, FY_ENOMEM, 0, "out of memory");
                return NULL;
            }
            if (nops) {
                memcpy(p, ops, nops * sizeof *p);
            }
            ops = p;
        }
        ops[nops++] = op;
        op = cmp_op(c);
    }
    node *n = new_node(c, E_CMP, line);
    if (n) {
        n->args = nv.v;
        n->nargs = nv.n;
        n->ops = ops;
    }
    return n;
}

static node *parse_not(compiler *c)
{
    int line = cur(c)->line;
    if (tok_is_name(cur(c), "not") && !tok_is_name(&c->toks[c->pos + 1], "in")) {
        c->pos++;
        if (enter(c)) {
            return NULL;
        }
        node *a = parse_not(c);
        c->depth--;
        node *n = a ? new_node(c, E_NOT, line) : NULL;
        if (n) {
            n->a = a;
        }
        return n;
    }
    return parse_compare(c);
}

static node *parse_and(compiler *c)
{
    node *n = parse_not(c);
    while (n && tok_is_name(cur(c), "and")) {
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_not(c);
        n = b ? new_bin(c, E_AND, 0, n, b, line) : NULL;
    }
    return n;
}

static node *parse_or(compiler *c)
{
    node *n = parse_and(c);
    while (n && tok_is_name(cur(c), "or")) {
        int line = cur(c)->line;
        c->pos++;
        node *b = parse_and(c);
        n = b ? new_bin(c, E_OR, 0, n, b, line) : NULL;
    }
    return n;
}

static node *parse_expr(compiler *c)
{
    if (enter(c)) {
        return NULL;
    }
    node *n = parse_or(c);
    while (n && tok_is_name(cur(c), "if")) {
        int line = cur(c)->line;
        c->pos++;
        node *cond = parse_or(c);
        if (!cond) {
            return NULL;
        }
        node *other = NULL;
        if (accept_name(c, "else") && !(other = parse_expr(c))) {
            return NULL;
        }
        node *e = new_node(c, E_COND, line);
        if (!e) {
            return NULL;
        }
        e->a = n;
        e->b = cond;
        e->c = other;
        n = e;
    }
    c->depth--;
    return n;
}

/* ------------------------------------------------------------------ statements */

typedef struct {
    node *head, *tail;
} stmtlist;

static void sl_push(stmtlist *l, node *n)
{
    if (l->tail) {
        l->tail->next = n;
    } else {
        l->head = n;
    }
    l->tail = n;
}

static int parse_block(compiler *c, const char *const *stops, const char **which, int loops,
                       const char *opener, int open_line, node **out);

static int end_tag(compiler *c)
{
    return expect_type(c, T_BLOCK_END, "'%}'");
}

static int parse_if(compiler *c, int line, int loops, node **out)
{
    static const char *const stops[] = {"elif", "else", "endif", NULL};
    node *n = new_node(c, S_IF, line);
    if (!n || !(n->a = parse_expr(c)) || end_tag(c)) {
        return c->rc ? c->rc : FY_EPARSE;
    }
    const char *which = NULL;
    if (parse_block(c, stops, &which, loops, "if", line, &n->body)) {
        return c->rc;
    }
    if (strcmp(which, "elif") == 0) {
        if (parse_if(c, cur(c)->line, loops, &n->orelse)) {
            return c->rc;
        }
    } else if (strcmp(which, "else") == 0) {
        static const char *const end[] = {"endif", NULL};
        if (end_tag(c) || parse_block(c, end, &which, loops, "if", line, &n->orelse) ||
            end_tag(c)) {
            return c->rc;
        }
    } else if (end_tag(c)) {
        return c->rc;
    }
    *out = n;
    return 0;
}

static const char *take_name(compiler *c, const char *what)
{
    token *t = cur(c);
    if (t->type != T_NAME) {
        unexpected(c, what);
        return NULL;
    }
    c->pos++;
    return cstrdup(c, t->s, t->n);
}

static int parse_for(compiler *c, int line, int loops, node **out)
{
    node *n = new_node(c, S_FOR, line);
    if (!n || !(n->name = take_name(c, "a loop variable"))) {
        return c->rc;
    }
    if (accept_op(c, ",")) {
        if (!(n->name2 = take_name(c, "a second loop variable"))) {
            return c->rc;
        }
        if (tok_is_op(cur(c), ",")) {
            return cfail(c, FY_ENOTSUP, line, "unsupported unpacking into more than two names");
        }
    }
    if (!accept_name(c, "in")) {
        return unexpected(c, "'in'");
    }
    /* The iterable has no conditional expression: "for x in y if z" filters. */
    if (!(n->a = parse_or(c))) {
        return c->rc;
    }
    if (accept_name(c, "if") && !(n->b = parse_expr(c))) {
        return c->rc;
    }
    if (tok_is_name(cur(c), "recursive")) {
        return cfail(c, FY_ENOTSUP, line, "unsupported recursive loop");
    }
    if (end_tag(c)) {
        return c->rc;
    }
    static const char *const stops[] = {"else", "endfor", NULL};
    const char *which = NULL;
    if (parse_block(c, stops, &which, loops + 1, "for", line, &n->body)) {
        return c->rc;
    }
    if (strcmp(which, "else") == 0) {
        static const char *const end[] = {"endfor", NULL};
        if (end_tag(c) || parse_block(c, end, &which, loops, "for", line, &n->orelse)) {
            return c->rc;
        }
    }
    if (end_tag(c)) {
        return c->rc;
    }
    *out = n;
    return 0;
}

static int parse_set(compiler *c, int line, int loops, node **out)
{
    node *n = new_node(c, S_SET, line);
    if (!n || !(n->name = take_name(c, "a variable name"))) {
        return c->rc;
    }
    if (accept_op(c, ".")) {
        if (!(n->name2 = take_name(c, "an attribute name"))) {
            return c->rc;
        }
    }
    if (tok_is_op(cur(c), ",")) {
        return cfail(c, FY_ENOTSUP, line, "unsupported tuple assignment in set");
    }
    if (accept_op(c, "=")) {
        if (!(n->a = parse_expr(c)) || end_tag(c)) {
            return c->rc;
        }
        *out = n;
        return 0;
    }
    if (tok_is_op(cur(c), "|")) {
        return cfail(c, FY_ENOTSUP, line, "unsupported filtered block set");
    }
    if (n->name2) {
        return unexpected(c, "'='");
    }
    if (end_tag(c)) {
        return c->rc;
    }
    static const char *const end[] = {"endset", NULL};
    const char *which;
    n->kind = S_SETBLOCK;
    if (parse_block(c, end, &which, loops, "set", line, &n->body) || end_tag(c)) {
        return c->rc;
    }
    *out = n;
    return 0;
}

/* Parses one {% tag ... %} whose name is the current token. */
static int parse_tag(compiler *c, int loops, node **out)
{
    token *t = cur(c);
    int line = t->line;
    if (t->type != T_NAME) {
        return unexpected(c, "a tag name");
    }
    c->pos++;
    if (tok_is_name(t, "if")) {
        return parse_if(c, line, loops, out);
    }
    if (tok_is_name(t, "for")) {
        return parse_for(c, line, loops, out);
    }
    if (tok_is_name(t, "set")) {
        return parse_set(c, line, loops, out);
    }
    if (tok_is_name(t, "break") || tok_is_name(t, "continue")) {
        if (!loops) {
            return cfail(c, FY_EPARSE, line, "'%.*s' outside a loop", (int)t->n, t->s);
        }
        node *n = new_node(c, tok_is_name(t, "break") ? S_BREAK : S_CONTINUE, line);
        if (!n || end_tag(c)) {
            return c->rc;
        }
        *out = n;
        return 0;
    }
    if (tok_is_name(t, "generation")) {
        static const char *const end[] = {"endgeneration", NULL};
        const char *which;
        node *n = new_node(c, S_BODY, line);
        if (!n || end_tag(c) || parse_block(c, end, &which, loops, "generation", line, &n->body) ||
            end_tag(c)) {
            return c->rc;
        }
        *out = n;
        return 0;
    }
    static const char *const misplaced[] = {"elif",   "else",   "endif",
                                            "endfor", "endset", "endgeneration"};
    for (size_t i = 0; i < NELEM(misplaced); i++) {
        if (tok_is_name(t, misplaced[i])) {
            return cfail(c, FY_EPARSE, line, "unexpected '%s'", misplaced[i]);
        }
    }
    return cfail(c, FY_ENOTSUP, line, "unsupported tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
}

/* Parses statements until a {% tag %} named in STOPS (NULL-terminated; NULL
 * STOPS: until the end). On return the stop tag's name has been consumed
 * and *WHICH names it; its '%}' has not. */
static int parse_block(compiler *c, const char *const *stops, const char **which, int loops,
                       const char *opener, int open_line, node **out)
{
    stmtlist l = {0};
    if (enter(c)) {
        return c->rc;
    }
    for (;;) {
        token *t = cur(c);
        node *n = NULL;
        if (t->type == T_EOF) {
            if (stops) {
                return cfail(c, FY_EPARSE, open_line, "'%s' block is never closed", opener);
            }
            break;
        }
        if (t->type == T_TEXT) {
            c->pos++;
            n = new_node(c, S_TEXT, t->line);
            char *text = n ? cstrdup(c, t->s, t->n) : NULL;
            if (!text) {
                return c->rc;
            }
            n->str = text;
            n->len = normalize_newlines(text, t->n);
        } else if (t->type == T_VAR_BEGIN) {
            c->pos++;
            n = new_node(c, S_OUT, t->line);
            if (!n || !(n->a = parse_expr(c)) || expect_type(c, T_VAR_END, "'}}'")) {
                return c->rc;
            }
        } else if (t->type == T_BLOCK_BEGIN) {
            c->pos++;
            token *nm = cur(c);
            for (size_t i = 0; stops && stops[i]; i++) {
                if (tok_is_name(nm, stops[i])) {
                    c->pos++;
                    *which = stops[i];
                    *out = l.head;
                    c->depth--;
                    return 0;
                }
            }
            if (parse_tag(c, loops, &n)) {
                return c->rc;
            }
        } else {
            return unexpected(c, "text or a tag");
        }
        sl_push(&l, n);
    }
    *out = l.head;
    c->depth--;
    return 0;
}

void fy_jinja_free(fy_jinja *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->nlits; i++) {
        json_decref(t->lits[i]);
    }
    free(t->lits);
    arena_free(t->arena);
    free(t);
}

int fy_jinja_compile(const char *src, size_t len, unsigned flags, fy_jinja **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    if (err && errlen) {
        err[0] = 0;
    }
    compiler c = {.src = src, .len = len, .flags = flags, .err = err, .errlen = errlen};
    if (len > FY_JINJA_MAX_SOURCE) {
        return cfail(&c, FY_ETOOBIG, 0, "template is %zu bytes, over the limit of %d", len,
                     FY_JINJA_MAX_SOURCE);
    }
    if (!(c.t = calloc(1, sizeof *c.t))) {
        return cfail(&c, FY_ENOMEM, 0, "out of memory");
    }
    if (!src) {
        c.src = "";
        c.len = 0;
    }
    int rc = lex(&c);
    if (!rc) {
        rc = parse_block(&c, NULL, NULL, 0, NULL, 0, &c.t->root);
    }
    free(c.toks);
    if (rc) {
        fy_jinja_free(c.t);
        return c.rc ? c.rc : rc;
    }
    *out = c.t;
    return 0;
}

/* ------------------------------------------------------------------ evaluator state */

#define MAX_SCOPES  (FY_JINJA_MAX_DEPTH + 8)
#define MAX_ARGS    8
#define VALUE_DEPTH 200 /* nesting followed when printing or comparing values */

typedef struct {
    const fy_jinja *t;
    const json_t *globals;
    json_t *scopes[MAX_SCOPES];
    int nscopes;
    json_t *namespaces; /* every namespace() made, to tell them from plain dicts */
    fy_buf *out;
    uint64_t steps, max_steps;
    size_t work, max_work, max_str, max_output;
    int rc;
    char *err;
    size_t errlen;
    int brk; /* S_BREAK or S_CONTINUE while unwinding to the loop */
    const char *undef_name;
} ctx;

static json_t *rfail(ctx *x, int rc, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the first render error; returns NULL so callers can "return rfail(...)". */
static json_t *rfail(ctx *x, int rc, int line, const char *fmt, ...)
{
    if (x->rc) {
        return NULL;
    }
    x->rc = rc;
    if (x->err && x->errlen) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(x->err, x->errlen, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < x->errlen && line > 0) {
            snprintf(x->err + n, x->errlen - (size_t)n, " (template line %d)", line);
        }
    }
    return NULL;
}

static json_t *fail_undef(ctx *x, int line)
{
    if (x->undef_name) {
        return rfail(x, FY_EINVAL, line, "'%s' is undefined", x->undef_name);
    }
    return rfail(x, FY_EINVAL, line, "undefined value used");
}

static int charge(ctx *x, size_t bytes, int line)
{
    if (bytes > x->max_work - x->work) {
        x->work = x->max_work;
        rfail(x, FY_ETOOBIG, line, "template used more than %zu bytes of working memory",
              x->max_work);
        return -1;
    }
    x->work += bytes;
    return 0;
}

static int step(ctx *x, int line)
{
    if (++x->steps > x->max_steps) {
        rfail(x, FY_ETOOBIG, line, "template ran more than %llu steps",
              (unsigned long long)x->max_steps);
        return -1;
    }
    return 0;
}

static json_t *nomem(ctx *x)
{
    return rfail(x, FY_ENOMEM, 0, "out of memory");
}

/* A new string value, counted against the limits. */
static json_t *mkstr(ctx *x, const char *s, size_t n, int line)
{
    if (n > x->max_str) {
        return rfail(x, FY_ETOOBIG, line, "string of %zu bytes exceeds the limit of %zu", n,
                     x->max_str);
    }
    if (charge(x, n + 48, line)) {
        return NULL;
    }
    json_t *v = json_stringn_nocheck(n ? s : "", n);
    return v ? v : nomem(x);
}

static json_t *mkarray(ctx *x, size_t n, int line)
{
    if (n > x->max_work / 16) {
        return rfail(x, FY_ETOOBIG, line, "list of %zu items exceeds the working-memory limit", n);
    }
    if (charge(x, 64 + n * 16, line)) {
        return NULL;
    }
    json_t *v = json_array();
    return v ? v : nomem(x);
}

static int append_owned(ctx *x, json_t *arr, json_t *v)
{
    if (!v) {
        v = json_null(); /* an undefined element: lists cannot hold "undefined" */
    }
    if (json_array_append_new(arr, v)) {
        nomem(x);
        return -1;
    }
    return 0;
}

static const char *S(const json_t *v)
{
    return json_string_value(v);
}

static size_t SL(const json_t *v)
{
    return json_string_length(v);
}

static int is_str(const json_t *v)
{
    return v && json_is_string(v);
}

static int is_intlike(const json_t *v)
{
    return v && (json_is_integer(v) || json_is_boolean(v));
}

static int is_num(const json_t *v)
{
    return v && (json_is_number(v) || json_is_boolean(v));
}

static long long ival(const json_t *v)
{
    return json_is_boolean(v) ? json_is_true(v) : (long long)json_integer_value(v);
}

static double dval(const json_t *v)
{
    return json_is_real(v) ? json_real_value(v) : (double)ival(v);
}

static const char *type_name(const json_t *v)
{
    if (!v) {
        return "undefined";
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "dict";
    case JSON_ARRAY:
        return "list";
    case JSON_STRING:
        return "str";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    default:
        return "NoneType";
    }
}

static int truthy(const json_t *v)
{
    if (!v) {
        return 0;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return json_object_size(v) > 0;
    case JSON_ARRAY:
        return json_array_size(v) > 0;
    case JSON_STRING:
        return SL(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0.0;
    case JSON_TRUE:
        return 1;
    default:
        return 0;
    }
}

static int is_namespace(const ctx *x, const json_t *v)
{
    size_t i;
    json_t *ns;
    json_array_foreach(x->namespaces, i, ns)
    {
        if (ns == v) {
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ UTF-8 */

static size_t u8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return k;
}

/* Byte offset of code point IDX (N when past the end). */
static size_t u8_off(const char *s, size_t n, size_t idx)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (k == idx) {
                return i;
            }
            k++;
        }
    }
    return n;
}

/* Decodes the code point at S[I]; returns its byte length (an invalid byte
 * is one "code point" of -1). */
static size_t u8_next(const char *s, size_t n, size_t i, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k =
        utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    if (k <= 0) {
        *cp = -1;
        return 1;
    }
    *cp = c;
    return (size_t)k;
}

static int is_space_cp(int32_t c)
{
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F) || c == 0x85) {
        return 1;
    }
    if (c < 0x80) {
        return 0;
    }
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
           cat == UTF8PROC_CATEGORY_ZP;
}

static int is_cased(int32_t c)
{
    if (c < 0) {
        return 0;
    }
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL ||
           cat == UTF8PROC_CATEGORY_LT;
}

/* ------------------------------------------------------------------ printing */

static void fmt_float(double d, char *buf, size_t n)
{
    if (isnan(d)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(d)) {
        snprintf(buf, n, d < 0 ? "-inf" : "inf");
        return;
    }
    char tmp[64];
    int prec;
    /* The shortest representation that reads back exactly, as Python's repr. */
    for (prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*e", prec - 1, d);
        if (strtod(tmp, NULL) == d) {
            break;
        }
    }
    int exp = atoi(strchr(tmp, 'e') + 1);
    if (exp < -4 || exp >= 16) {
        snprintf(buf, n, "%s", tmp);
        return;
    }
    int decimals = prec - 1 - exp;
    snprintf(buf, n, "%.*f", decimals > 0 ? decimals : 0, d);
    if (!strchr(buf, '.')) {
        size_t l = strlen(buf);
        snprintf(buf + l, n - l, ".0");
    }
}

static int buf_put(ctx *x, fy_buf *b, const char *s, size_t n)
{
    int rc = fy_buf_append(b, s, n);
    if (rc == FY_ETOOBIG) {
        rfail(x, FY_ETOOBIG, 0, "%s exceeds the limit of %zu bytes",
              b == x->out ? "rendered output" : "string", b->max);
        return -1;
    }
    if (rc) {
        nomem(x);
        return -1;
    }
    return 0;
}

static int put_repr_str(ctx *x, fy_buf *b, const char *s, size_t n)
{
    /* Python's repr: single quotes unless the text has ' and no ". */
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    if (buf_put(x, b, &q, 1)) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        const char *e = NULL;
        if (ch == '\\') {
            e = "\\\\";
        } else if (ch == (unsigned char)q) {
            e = q == '\'' ? "\\'" : "\\\"";
        } else if (ch == '\n') {
            e = "\\n";
        } else if (ch == '\r') {
            e = "\\r";
        } else if (ch == '\t') {
            e = "\\t";
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\x%02x", ch);
            e = esc;
        }
        if (e ? buf_put(x, b, e, strlen(e)) : buf_put(x, b, s + i, 1)) {
            return -1;
        }
    }
    return buf_put(x, b, &q, 1);
}

/* Appends str(V) (REPR: repr(V), for list and dict members) to B. */
static int put_value(ctx *x, fy_buf *b, const json_t *v, int repr, int depth)
{
    char tmp[64];
    if (depth > VALUE_DEPTH) {
        rfail(x, FY_EINVAL, 0, "value nests deeper than %d levels", VALUE_DEPTH);
        return -1;
    }
    if (!v) {
        return repr ? buf_put(x, b, "Undefined", 9) : 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return repr ? put_repr_str(x, b, S(v), SL(v)) : buf_put(x, b, S(v), SL(v));
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf_put(x, b, tmp, strlen(tmp));
    case JSON_REAL:
        fmt_float(json_real_value(v), tmp, sizeof tmp);
        return buf_put(x, b, tmp, strlen(tmp));
    case JSON_TRUE:
        return buf_put(x, b, "True", 4);
    case JSON_FALSE:
        return buf_put(x, b, "False", 5);
    case JSON_NULL:
        return buf_put(x, b, "None", 4);
    case JSON_ARRAY: {
        size_t i;
        json_t *e;
        if (buf_put(x, b, "[", 1)) {
            return -1;
        }
        json_array_foreach(v, i, e)
        {
            if ((i && buf_put(x, b, ", ", 2)) || put_value(x, b, e, 1, depth + 1)) {
                return -1;
            }
        }
        return buf_put(x, b, "]", 1);
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *e;
        int first = 1, ns = is_namespace(x, v);
        if (ns && buf_put(x, b, "<Namespace ", 11)) {
            return -1;
        }
        if (buf_put(x, b, "{", 1)) {
            return -1;
        }
        json_object_foreach((json_t *)v, k, e)
        {
            if ((!first && buf_put(x, b, ", ", 2)) || put_repr_str(x, b, k, strlen(k)) ||
                buf_put(x, b, ": ", 2) || put_value(x, b, e, 1, depth + 1)) {
                return -1;
            }
            first = 0;
        }
        return buf_put(x, b, ns ? "}>" : "}", ns ? 2 : 1);
    }
    }
    return 0;
}

/* str(V) as a new string value. */
static json_t *to_str(ctx *x, const json_t *v, int line)
{
    if (is_str(v)) {
        return json_incref((json_t *)v);
    }
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    if (put_value(x, &b, v, 0, 0)) {
        fy_buf_free(&b);
        if (x->rc && x->err && line > 0 && !strstr(x->err, "(template line")) {
            size_t l = strlen(x->err);
            snprintf(x->err + l, x->errlen - l, " (template line %d)", line);
        }
        return NULL;
    }
    json_t *s = mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return s;
}

/* json.dumps(V, ensure_ascii=False, indent=INDENT) as Hugging Face's tojson. */
static int put_json(ctx *x, fy_buf *b, const json_t *v, int indent, int level, int depth)
{
    char tmp[64];
    if (depth > VALUE_DEPTH) {
        rfail(x, FY_EINVAL, 0, "value nests deeper than %d levels", VALUE_DEPTH);
        return -1;
    }
    if (!v) {
        rfail(x, FY_EINVAL, 0, "Object of type Undefined is not JSON serializable");
        return -1;
    }
    switch (json_typeof(v)) {
    case JSON_STRING: {
        const char *s = S(v);
        size_t n = SL(v);
        if (buf_put(x, b, "\"", 1)) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)s[i];
            const char *e = NULL;
            switch (ch) {
            case '"':
                e = "\\\"";
                break;
            case '\\':
                e = "\\\\";
                break;
            case '\n':
                e = "\\n";
                break;
            case '\r':
                e = "\\r";
                break;
            case '\t':
                e = "\\t";
                break;
            case '\b':
                e = "\\b";
                break;
            case '\f':
                e = "\\f";
                break;
            default:
                if (ch < 0x20) {
                    snprintf(tmp, sizeof tmp, "\\u%04x", ch);
                    e = tmp;
                }
            }
            if (e ? buf_put(x, b, e, strlen(e)) : buf_put(x, b, s + i, 1)) {
                return -1;
            }
        }
        return buf_put(x, b, "\"", 1);
    }
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return buf_put(x, b, tmp, strlen(tmp));
    case JSON_REAL: {
        double d = json_real_value(v);
        if (isnan(d)) {
            return buf_put(x, b, "NaN", 3);
        }
        if (isinf(d)) {
            return d < 0 ? buf_put(x, b, "-Infinity", 9) : buf_put(x, b, "Infinity", 8);
        }
        fmt_float(d, tmp, sizeof tmp);
        return buf_put(x, b, tmp, strlen(tmp));
    }
    case JSON_TRUE:
        return buf_put(x, b, "true", 4);
    case JSON_FALSE:
        return buf_put(x, b, "false", 5);
    case JSON_NULL:
        return buf_put(x, b, "null", 4);
    case JSON_ARRAY:
    case JSON_OBJECT: {
        int arr = json_is_array(v);
        size_t n = arr ? json_array_size(v) : json_object_size(v);
        if (n == 0) {
            return buf_put(x, b, arr ? "[]" : "{}", 2);
        }
        if (buf_put(x, b, arr ? "[" : "{", 1)) {
            return -1;
        }
        size_t i = 0;
        const char *k = NULL;
        json_t *e = NULL;
        void *it = arr ? NULL : json_object_iter((json_t *)v);
        for (i = 0; i < n; i++) {
            if (i && buf_put(x, b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2)) {
                return -1;
            }
            if (indent >= 0) {
                if (buf_put(x, b, "\n", 1)) {
                    return -1;
                }
                for (int s = 0; s < indent * (level + 1); s++) {
                    if (buf_put(x, b, " ", 1)) {
                        return -1;
                    }
                }
            }
            if (arr) {
                e = json_array_get(v, i);
            } else {
                k = json_object_iter_key(it);
                e = json_object_iter_value(it);
                it = json_object_iter_next((json_t *)v, it);
                json_t *ks = json_string_nocheck(k);
                int rc = ks ? put_json(x, b, ks, indent, level + 1, depth + 1) : -1;
                json_decref(ks);
                if (rc || buf_put(x, b, ": ", 2)) {
                    return -1;
                }
            }
            if (put_json(x, b, e, indent, level + 1, depth + 1)) {
                return -1;
            }
        }
        if (indent >= 0) {
            if (buf_put(x, b, "\n", 1)) {
                return -1;
            }
            for (int s = 0; s < indent * level; s++) {
                if (buf_put(x, b, " ", 1)) {
                    return -1;
                }
            }
        }
        return buf_put(x, b, arr ? "]" : "}", 1);
    }
    }
    return 0;
}

/* ------------------------------------------------------------------ comparisons */

static int values_eq(const json_t *a, const json_t *b, int depth)
{
    if (!a || !b) {
        return !a && !b;
    }
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) {
            return ival(a) == ival(b);
        }
        return dval(a) == dval(b);
    }
    if (json_typeof(a) != json_typeof(b) || depth > VALUE_DEPTH) {
        return 0;
    }
    switch (json_typeof(a)) {
    case JSON_STRING:
        return SL(a) == SL(b) && memcmp(S(a), S(b), SL(a)) == 0;
    case JSON_NULL:
        return 1;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b)) {
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            if (!values_eq(json_array_get(a, i), json_array_get(b, i), depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    case JSON_OBJECT: {
        const char *k;
        json_t *e;
        if (json_object_size(a) != json_object_size(b)) {
            return 0;
        }
        json_object_foreach((json_t *)a, k, e)
        {
            json_t *o = json_object_get(b, k);
            if (!o || !values_eq(e, o, depth + 1)) {
                return 0;
            }
        }
        return 1;
    }
    default:
        return 0;
    }
}

/* Orders A and B as Python does: *R < 0, 0 or > 0. Returns -1 when they
 * cannot be ordered. */
static int values_order(const json_t *a, const json_t *b, int *r, int depth)
{
    if (is_num(a) && is_num(b)) {
        if (is_intlike(a) && is_intlike(b)) {
            *r = (ival(a) > ival(b)) - (ival(a) < ival(b));
        } else {
            *r = (dval(a) > dval(b)) - (dval(a) < dval(b));
        }
        return 0;
    }
    if (is_str(a) && is_str(b)) {
        size_t n = SL(a) < SL(b) ? SL(a) : SL(b);
        int c = memcmp(S(a), S(b), n);
        *r = c ? (c > 0) - (c < 0) : (SL(a) > SL(b)) - (SL(a) < SL(b));
        return 0;
    }
    if (a && b && json_is_array(a) && json_is_array(b) && depth < VALUE_DEPTH) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na && i < nb; i++) {
            json_t *ea = json_array_get(a, i), *eb = json_array_get(b, i);
            if (values_eq(ea, eb, 0)) {
                continue;
            }
            return values_order(ea, eb, r, depth + 1);
        }
        *r = (na > nb) - (na < nb);
        return 0;
    }
    return -1;
}

/* ITEM in CONTAINER: 1, 0, or -1 with an error recorded. */
static int contains(ctx *x, const json_t *item, const json_t *cont, int line)
{
    if (!cont) {
        fail_undef(x, line);
        return -1;
    }
    if (json_is_string(cont)) {
        if (!is_str(item)) {
            rfail(x, FY_EINVAL, line, "'in <string>' requires string as left operand, not %s",
                  type_name(item));
            return -1;
        }
        if (SL(item) == 0) {
            return 1;
        }
        return memmem(S(cont), SL(cont), S(item), SL(item)) != NULL;
    }
    if (json_is_array(cont)) {
        size_t i;
        json_t *e;
        json_array_foreach(cont, i, e)
        {
            if (values_eq(item, e, 0)) {
                return 1;
            }
        }
        return 0;
    }
    if (json_is_object(cont)) {
        return is_str(item) && json_object_getn(cont, S(item), SL(item)) != NULL;
    }
    rfail(x, FY_EINVAL, line, "argument of type '%s' is not iterable", type_name(cont));
    return -1;
}

/* The items a for loop (or a filter) walks: a new list. */
static json_t *to_list(ctx *x, const json_t *v, int line)
{
    if (!v) {
        return mkarray(x, 0, line);
    }
    if (json_is_array(v)) {
        return json_incref((json_t *)v);
    }
    if (json_is_object(v)) {
        json_t *l = mkarray(x, json_object_size(v), line);
        const char *k;
        json_t *e;
        if (!l) {
            return NULL;
        }
        json_object_foreach((json_t *)v, k, e)
        {
            (void)e;
            if (append_owned(x, l, mkstr(x, k, strlen(k), line))) {
                json_decref(l);
                return NULL;
            }
        }
        return l;
    }
    if (json_is_string(v)) {
        const char *s = S(v);
        size_t n = SL(v);
        json_t *l = mkarray(x, n, line);
        for (size_t i = 0; l && i < n;) {
            int32_t cp;
            size_t k = u8_next(s, n, i, &cp);
            if (append_owned(x, l, mkstr(x, s + i, k, line))) {
                json_decref(l);
                return NULL;
            }
            i += k;
        }
        return l;
    }
    return rfail(x, FY_EINVAL, line, "'%s' object is not iterable", type_name(v));
}

/* ------------------------------------------------------------------ expressions */

typedef struct {
    json_t *v[MAX_ARGS]; /* NULL: undefined */
    const char *kw[MAX_ARGS];
    size_t n;
    size_t skip; /* leading positional arguments already consumed (map, select) */
} args_t;

static json_t *eval(ctx *x, const node *n);

static void free_args(args_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        json_decref(a->v[i]);
    }
    a->n = 0;
}

static int eval_args(ctx *x, const node *n, args_t *a)
{
    memset(a, 0, sizeof *a);
    if (n->nargs > MAX_ARGS) {
        rfail(x, FY_EINVAL, n->line, "too many arguments (at most %d)", MAX_ARGS);
        return -1;
    }
    for (size_t i = 0; i < n->nargs; i++) {
        a->v[i] = eval(x, n->args[i]);
        a->kw[i] = n->kwnames ? n->kwnames[i] : NULL;
        a->n = i + 1;
        if (x->rc) {
            free_args(a);
            return -1;
        }
    }
    return 0;
}

/* The positional argument POS (counted after a->skip) or the keyword KW;
 * *PRESENT tells whether it was given. Borrowed. */
static json_t *arg(const args_t *a, size_t pos, const char *kw, int *present)
{
    size_t k = 0;
    *present = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (!a->kw[i]) {
            if (k++ == pos + a->skip) {
                *present = 1;
                return a->v[i];
            }
        } else if (kw && strcmp(a->kw[i], kw) == 0) {
            *present = 1;
            return a->v[i];
        }
    }
    return NULL;
}

static size_t npositional(const args_t *a)
{
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        k += !a->kw[i];
    }
    return k > a->skip ? k - a->skip : 0;
}

/* Optional string argument: *OUT NULL when absent or none. */
static int arg_str(ctx *x, const args_t *a, size_t pos, const char *kw, const json_t **out,
                   const char *what, int line)
{
    int present;
    json_t *v = arg(a, pos, kw, &present);
    *out = NULL;
    if (!present || (v && json_is_null(v))) {
        return 0;
    }
    if (!is_str(v)) {
        rfail(x, FY_EINVAL, line, "%s expects a string argument, got %s", what, type_name(v));
        return -1;
    }
    *out = v;
    return 0;
}

static int arg_int(ctx *x, const args_t *a, size_t pos, const char *kw, long long def,
                   long long *out, const char *what, int line)
{
    int present;
    json_t *v = arg(a, pos, kw, &present);
    *out = def;
    if (!present || (v && json_is_null(v))) {
        return 0;
    }
    if (!is_intlike(v)) {
        rfail(x, FY_EINVAL, line, "%s expects an integer argument, got %s", what, type_name(v));
        return -1;
    }
    *out = ival(v);
    return 0;
}

static int arg_bool(const args_t *a, size_t pos, const char *kw)
{
    int present;
    json_t *v = arg(a, pos, kw, &present);
    return present && truthy(v);
}

static json_t *lookup_var(ctx *x, const char *name)
{
    for (int i = x->nscopes - 1; i >= 0; i--) {
        json_t *v = json_object_get(x->scopes[i], name);
        if (v) {
            return v;
        }
    }
    return x->globals ? json_object_get(x->globals, name) : NULL;
}

/* obj.name / obj['name']: a borrowed value, or NULL for undefined. */
static json_t *get_attr(const json_t *obj, const char *name, size_t n)
{
    return obj && json_is_object(obj) ? json_object_getn(obj, name, n) : NULL;
}

static json_t *get_item(ctx *x, const json_t *obj, const json_t *key, int line)
{
    if (json_is_object(obj)) {
        if (is_str(key)) {
            json_t *v = json_object_getn(obj, S(key), SL(key));
            if (!v) {
                x->undef_name = "item";
            }
            return json_incref(v);
        }
        return NULL;
    }
    if (!is_intlike(key)) {
        return NULL;
    }
    long long i = ival(key);
    if (json_is_array(obj)) {
        long long n = (long long)json_array_size(obj);
        if (i < 0) {
            i += n;
        }
        return i >= 0 && i < n ? json_incref(json_array_get(obj, (size_t)i)) : NULL;
    }
    if (json_is_string(obj)) {
        long long n = (long long)u8_len(S(obj), SL(obj));
        if (i < 0) {
            i += n;
        }
        if (i < 0 || i >= n) {
            return NULL;
        }
        size_t a = u8_off(S(obj), SL(obj), (size_t)i);
        size_t b = u8_off(S(obj), SL(obj), (size_t)i + 1);
        return mkstr(x, S(obj) + a, b - a, line);
    }
    return NULL;
}

/* Python's slice index rules (PySlice_AdjustIndices). */
static long long slice_bound(const json_t *v, long long def, long long len, int step_neg)
{
    if (!v || json_is_null(v)) {
        return def;
    }
    long long i = ival(v);
    if (i < 0) {
        i += len;
        if (i < 0) {
            i = step_neg ? -1 : 0;
        }
    } else if (i >= len) {
        i = step_neg ? len - 1 : len;
    }
    return i;
}

static json_t *eval_slice(ctx *x, const node *n)
{
    json_t *obj = eval(x, n->a), *parts[3] = {NULL, NULL, NULL}, *res = NULL;
    const node *pn[3] = {n->b, n->c, n->d};
    if (x->rc) {
        return NULL;
    }
    if (!obj) {
        return fail_undef(x, n->line);
    }
    for (int i = 0; i < 3; i++) {
        if (pn[i] && !(parts[i] = eval(x, pn[i])) && x->rc) {
            goto out;
        }
        if (parts[i] && !json_is_null(parts[i]) && !is_intlike(parts[i])) {
            rfail(x, FY_EINVAL, n->line, "slice indices must be integers or none, not %s",
                  type_name(parts[i]));
            goto out;
        }
    }
    long long stepv = parts[2] && !json_is_null(parts[2]) ? ival(parts[2]) : 1;
    if (stepv == 0) {
        rfail(x, FY_EINVAL, n->line, "slice step cannot be zero");
        goto out;
    }
    int isstr = json_is_string(obj);
    if (!isstr && !json_is_array(obj)) {
        rfail(x, FY_EINVAL, n->line, "'%s' object is not subscriptable", type_name(obj));
        goto out;
    }
    long long len = isstr ? (long long)u8_len(S(obj), SL(obj)) : (long long)json_array_size(obj);
    int neg = stepv < 0;
    long long start = slice_bound(parts[0], neg ? len - 1 : 0, len, neg);
    long long stop = slice_bound(parts[1], neg ? -1 : len, len, neg);
    if (isstr) {
        fy_buf b;
        fy_buf_init(&b, x->max_str);
        for (long long i = start; neg ? i > stop : i < stop; i += stepv) {
            size_t a = u8_off(S(obj), SL(obj), (size_t)i);
            size_t e = u8_off(S(obj), SL(obj), (size_t)i + 1);
            if (buf_put(x, &b, S(obj) + a, e - a)) {
                fy_buf_free(&b);
                goto out;
            }
        }
        res = mkstr(x, b.data, b.len, n->line);
        fy_buf_free(&b);
    } else {
        long long cnt = neg ? (start > stop ? (start - stop - 1) / -stepv + 1 : 0)
                            : (stop > start ? (stop - start - 1) / stepv + 1 : 0);
        if (!(res = mkarray(x, (size_t)cnt, n->line))) {
            goto out;
        }
        for (long long i = start; neg ? i > stop : i < stop; i += stepv) {
            if (append_owned(x, res, json_incref(json_array_get(obj, (size_t)i)))) {
                json_decref(res);
                res = NULL;
                goto out;
            }
        }
    }
out:
    json_decref(obj);
    for (int i = 0; i < 3; i++) {
        json_decref(parts[i]);
    }
    return res;
}

static json_t *checked_int(ctx *x, int ok, long long v, int line)
{
    if (!ok) {
        return rfail(x, FY_EINVAL, line, "integer overflow");
    }
    json_t *r = json_integer(v);
    return r ? r : nomem(x);
}

static json_t *mkreal(ctx *x, double d)
{
    if (!isfinite(d)) {
        /* JSON (and so jansson) has no inf or nan. */
        return rfail(x, FY_EINVAL, 0, "float result is not finite");
    }
    json_t *r = json_real(d);
    return r ? r : nomem(x);
}

static json_t *concat_str(ctx *x, const json_t *a, const json_t *b, int line)
{
    size_t la = SL(a), lb = SL(b);
    if (la + lb > x->max_str) {
        return rfail(x, FY_ETOOBIG, line, "string of %zu bytes exceeds the limit of %zu", la + lb,
                     x->max_str);
    }
    char *p = malloc(la + lb + 1);
    if (!p) {
        return nomem(x);
    }
    memcpy(p, S(a), la);
    memcpy(p + la, S(b), lb);
    json_t *r = mkstr(x, p, la + lb, line);
    free(p);
    return r;
}

static json_t *repeat(ctx *x, const json_t *seq, long long times, int line)
{
    if (times < 0) {
        times = 0;
    }
    if (json_is_string(seq)) {
        size_t n = SL(seq);
        if (n && (unsigned long long)times > x->max_str / n) {
            return rfail(x, FY_ETOOBIG, line, "string repetition exceeds the limit of %zu bytes",
                         x->max_str);
        }
        fy_buf b;
        fy_buf_init(&b, x->max_str);
        for (long long i = 0; i < times; i++) {
            if (buf_put(x, &b, S(seq), n)) {
                fy_buf_free(&b);
                return NULL;
            }
        }
        json_t *r = mkstr(x, b.data, b.len, line);
        fy_buf_free(&b);
        return r;
    }
    size_t n = json_array_size(seq);
    if (n && (unsigned long long)times > (x->max_work / 16) / n) {
        return rfail(x, FY_ETOOBIG, line, "list repetition exceeds the working-memory limit");
    }
    json_t *r = mkarray(x, n * (size_t)times, line);
    for (long long i = 0; r && i < times; i++) {
        if (json_array_extend(r, (json_t *)seq)) {
            json_decref(r);
            return nomem(x);
        }
    }
    return r;
}

static const char *op_name(int op)
{
    static const char *const names[] = {"?", "+", "-", "*", "/", "//", "%", "**", "~"};
    return op > 0 && op <= OP_CAT ? names[op] : "?";
}

static json_t *binop(ctx *x, int op, const json_t *a, const json_t *b, int line)
{
    long long r = 0;
    int ok;
    if (op == OP_CAT) {
        json_t *sa = to_str(x, a, line), *sb = sa ? to_str(x, b, line) : NULL, *res = NULL;
        if (sa && sb) {
            res = concat_str(x, sa, sb, line);
        }
        json_decref(sa);
        json_decref(sb);
        return res;
    }
    if (!a || !b) {
        return fail_undef(x, line);
    }
    if (is_num(a) && is_num(b)) {
        int ints = is_intlike(a) && is_intlike(b);
        long long ia = ints ? ival(a) : 0, ib = ints ? ival(b) : 0;
        double da = dval(a), db = dval(b);
        switch (op) {
        case OP_ADD:
            if (!ints) {
                return mkreal(x, da + db);
            }
            ok = !__builtin_add_overflow(ia, ib, &r);
            return checked_int(x, ok, r, line);
        case OP_SUB:
            if (!ints) {
                return mkreal(x, da - db);
            }
            ok = !__builtin_sub_overflow(ia, ib, &r);
            return checked_int(x, ok, r, line);
        case OP_MUL:
            if (!ints) {
                return mkreal(x, da * db);
            }
            ok = !__builtin_mul_overflow(ia, ib, &r);
            return checked_int(x, ok, r, line);
        case OP_DIV:
            if (db == 0) {
                return rfail(x, FY_EINVAL, line, "division by zero");
            }
            return mkreal(x, da / db);
        case OP_FDIV:
        case OP_MOD:
            if (db == 0) {
                return rfail(x, FY_EINVAL, line, "integer division or modulo by zero");
            }
            if (ints) {
                if (ia == LLONG_MIN && ib == -1) {
                    return rfail(x, FY_EINVAL, line, "integer overflow");
                }
                long long q = ia / ib, m = ia % ib;
                if (m != 0 && ((m < 0) != (ib < 0))) {
                    q--;
                    m += ib;
                }
                return checked_int(x, 1, op == OP_FDIV ? q : m, line);
            } else {
                double m = fmod(da, db);
                if (m != 0 && ((m < 0) != (db < 0))) {
                    m += db;
                }
                return mkreal(x, op == OP_FDIV ? floor(da / db) : m);
            }
        case OP_POW:
            if (ints && ib >= 0) {
                /* |ia| >= 2 overflows within 63 multiplications. */
                long long acc = 1;
                if (ia == 0 || ia == 1) {
                    acc = ib == 0 ? 1 : ia;
                } else if (ia == -1) {
                    acc = ib % 2 ? -1 : 1;
                } else {
                    for (long long i = 0; i < ib; i++) {
                        if (__builtin_mul_overflow(acc, ia, &acc)) {
                            return rfail(x, FY_EINVAL, line, "integer overflow");
                        }
                    }
                }
                return checked_int(x, 1, acc, line);
            }
            return mkreal(x, pow(da, db));
        }
    }
    if (op == OP_ADD && is_str(a) && is_str(b)) {
        return concat_str(x, a, b, line);
    }
    if (op == OP_ADD && json_is_array(a) && json_is_array(b)) {
        json_t *r2 = mkarray(x, json_array_size(a) + json_array_size(b), line);
        if (r2 && (json_array_extend(r2, (json_t *)a) || json_array_extend(r2, (json_t *)b))) {
            json_decref(r2);
            return nomem(x);
        }
        return r2;
    }
    if (op == OP_MUL && (is_str(a) || json_is_array(a)) && is_intlike(b)) {
        return repeat(x, a, ival(b), line);
    }
    if (op == OP_MUL && (is_str(b) || json_is_array(b)) && is_intlike(a)) {
        return repeat(x, b, ival(a), line);
    }
    return rfail(x, FY_EINVAL, line, "unsupported operand type(s) for %s: '%s' and '%s'",
                 op_name(op), type_name(a), type_name(b));
}

static int compare(ctx *x, int op, const json_t *a, const json_t *b, int line)
{
    int r;
    switch (op) {
    case CMP_EQ:
        return values_eq(a, b, 0);
    case CMP_NE:
        return !values_eq(a, b, 0);
    case CMP_IN:
        return contains(x, a, b, line);
    case CMP_NOTIN: {
        int c = contains(x, a, b, line);
        return c < 0 ? -1 : !c;
    }
    }
    if (!a || !b) {
        fail_undef(x, line);
        return -1;
    }
    if (values_order(a, b, &r, 0)) {
        static const char *const names[] = {"", "==", "!=", "<", "<=", ">", ">="};
        rfail(x, FY_EINVAL, line, "'%s' not supported between instances of '%s' and '%s'",
              names[op], type_name(a), type_name(b));
        return -1;
    }
    switch (op) {
    case CMP_LT:
        return r < 0;
    case CMP_LE:
        return r <= 0;
    case CMP_GT:
        return r > 0;
    default:
        return r >= 0;
    }
}

static json_t *mkbool(int b)
{
    return b ? json_true() : json_false();
}

/* ------------------------------------------------------------------ strings */

/* Is code point CP one of the code points of CHARS (NULL: whitespace)? */
static int in_charset(int32_t cp, const json_t *chars)
{
    if (!chars) {
        return is_space_cp(cp);
    }
    const char *s = S(chars);
    size_t n = SL(chars);
    for (size_t i = 0; i < n;) {
        int32_t c;
        i += u8_next(s, n, i, &c);
        if (c == cp) {
            return 1;
        }
    }
    return 0;
}

/* WHICH: 1 left, 2 right, 3 both. */
static json_t *str_strip(ctx *x, const json_t *v, const json_t *chars, int which, int line)
{
    const char *s = S(v);
    size_t n = SL(v), a = 0, b = n;
    if (which & 1) {
        while (a < b) {
            int32_t cp;
            size_t k = u8_next(s, n, a, &cp);
            if (!in_charset(cp, chars)) {
                break;
            }
            a += k;
        }
    }
    if (which & 2) {
        while (b > a) {
            size_t p = b - 1;
            while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80) {
                p--;
            }
            int32_t cp;
            u8_next(s, n, p, &cp);
            if (!in_charset(cp, chars)) {
                break;
            }
            b = p;
        }
    }
    return mkstr(x, s + a, b - a, line);
}

enum { CASE_UPPER = 1, CASE_LOWER, CASE_PYTITLE, CASE_JTITLE, CASE_CAPITALIZE };

static json_t *str_case(ctx *x, const json_t *v, int mode, int line)
{
    const char *s = S(v);
    size_t n = SL(v);
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    int prev_cased = 0, word_start = 1;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        size_t k = u8_next(s, n, i, &cp);
        if (cp < 0) {
            if (buf_put(x, &b, s + i, k)) {
                goto fail;
            }
            i += k;
            continue;
        }
        int32_t o = cp;
        switch (mode) {
        case CASE_UPPER:
            o = utf8proc_toupper(cp);
            break;
        case CASE_LOWER:
            o = utf8proc_tolower(cp);
            break;
        case CASE_PYTITLE:
            o = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
            prev_cased = is_cased(cp);
            break;
        case CASE_JTITLE: {
            /* Jinja's title filter: words begin after whitespace - ( { [ <. */
            int sep =
                is_space_cp(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            o = sep ? cp : word_start ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            word_start = sep;
            break;
        }
        case CASE_CAPITALIZE:
            o = i == 0 ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            break;
        }
        char enc[8];
        if (buf_put(x, &b, enc, utf8_put(enc, o))) {
            goto fail;
        }
        i += k;
    }
    json_t *r = mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
fail:
    fy_buf_free(&b);
    return NULL;
}

static json_t *str_split(ctx *x, const json_t *v, const json_t *sep, long long maxsplit, int line)
{
    const char *s = S(v);
    size_t n = SL(v), i = 0;
    json_t *l = mkarray(x, 0, line);
    if (!l) {
        return NULL;
    }
    if (sep && SL(sep) == 0) {
        json_decref(l);
        return rfail(x, FY_EINVAL, line, "empty separator");
    }
    long long splits = 0;
    if (!sep) {
        /* Runs of whitespace separate; leading and trailing ones are dropped. */
        for (;;) {
            while (i < n) {
                int32_t cp;
                size_t k = u8_next(s, n, i, &cp);
                if (!is_space_cp(cp)) {
                    break;
                }
                i += k;
            }
            if (i >= n) {
                break;
            }
            size_t j = i;
            if (maxsplit >= 0 && splits >= maxsplit) {
                j = n;
                while (j > i) {
                    size_t p = j - 1;
                    while (p > i && ((unsigned char)s[p] & 0xC0) == 0x80) {
                        p--;
                    }
                    int32_t cp;
                    u8_next(s, n, p, &cp);
                    if (!is_space_cp(cp)) {
                        break;
                    }
                    j = p;
                }
            } else {
                while (j < n) {
                    int32_t cp;
                    size_t k = u8_next(s, n, j, &cp);
                    if (is_space_cp(cp)) {
                        break;
                    }
                    j += k;
                }
            }
            if (charge(x, 16, line) || append_owned(x, l, mkstr(x, s + i, j - i, line)) || x->rc) {
                json_decref(l);
                return NULL;
            }
            splits++;
            i = j;
        }
        return l;
    }
    for (;;) {
        const char *hit = NULL;
        if (maxsplit < 0 || splits < maxsplit) {
            hit = memmem(s + i, n - i, S(sep), SL(sep));
        }
        size_t j = hit ? (size_t)(hit - s) : n;
        if (charge(x, 16, line) || append_owned(x, l, mkstr(x, s + i, j - i, line)) || x->rc) {
            json_decref(l);
            return NULL;
        }
        if (!hit) {
            return l;
        }
        splits++;
        i = j + SL(sep);
    }
}

static json_t *str_replace(ctx *x, const json_t *v, const json_t *old, const json_t *new_,
                           long long count, int line)
{
    const char *s = S(v);
    size_t n = SL(v), i = 0;
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    long long done = 0;
    if (SL(old) == 0) {
        /* Python inserts NEW before every code point and at the end. */
        for (;;) {
            if ((count < 0 || done < count) && buf_put(x, &b, S(new_), SL(new_))) {
                goto fail;
            }
            done++;
            if (i >= n) {
                break;
            }
            int32_t cp;
            size_t k = u8_next(s, n, i, &cp);
            if (buf_put(x, &b, s + i, k)) {
                goto fail;
            }
            i += k;
        }
    } else {
        while (i <= n) {
            const char *hit =
                count < 0 || done < count ? memmem(s + i, n - i, S(old), SL(old)) : NULL;
            size_t j = hit ? (size_t)(hit - s) : n;
            if (buf_put(x, &b, s + i, j - i)) {
                goto fail;
            }
            if (!hit) {
                break;
            }
            if (buf_put(x, &b, S(new_), SL(new_))) {
                goto fail;
            }
            done++;
            i = j + SL(old);
        }
    }
    json_t *r = mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
fail:
    fy_buf_free(&b);
    return NULL;
}

/* startswith / endswith with a string or a list of strings. */
static json_t *str_affix(ctx *x, const json_t *v, const json_t *what, int end, int line)
{
    if (what && json_is_array(what)) {
        size_t i;
        json_t *e;
        json_array_foreach(what, i, e)
        {
            json_t *r = str_affix(x, v, e, end, line);
            if (!r || json_is_true(r)) {
                return r;
            }
        }
        return json_false();
    }
    if (!is_str(what)) {
        return rfail(x, FY_EINVAL, line, "%s first arg must be str or a tuple of str, not %s",
                     end ? "endswith" : "startswith", type_name(what));
    }
    size_t n = SL(v), k = SL(what);
    if (k > n) {
        return json_false();
    }
    return mkbool(memcmp(S(v) + (end ? n - k : 0), S(what), k) == 0);
}

static json_t *str_join(ctx *x, const json_t *sep, const json_t *items, const char *attr,
                        int strict, int line)
{
    json_t *l = to_list(x, items, line);
    if (!l) {
        return NULL;
    }
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    size_t i;
    json_t *e, *r = NULL;
    json_array_foreach(l, i, e)
    {
        if (attr) {
            e = get_attr(e, attr, strlen(attr));
        }
        if (strict && !is_str(e)) {
            rfail(x, FY_EINVAL, line, "sequence item %zu: expected str instance, %s found", i,
                  type_name(e));
            goto out;
        }
        if ((i && buf_put(x, &b, S(sep), SL(sep))) || put_value(x, &b, e, 0, 0)) {
            goto out;
        }
    }
    r = mkstr(x, b.data, b.len, line);
out:
    fy_buf_free(&b);
    json_decref(l);
    return r;
}

/* ------------------------------------------------------------------ methods and functions */

static json_t *dict_items(ctx *x, const json_t *d, int line)
{
    json_t *l = mkarray(x, json_object_size(d), line);
    const char *k;
    json_t *e;
    if (!l) {
        return NULL;
    }
    json_object_foreach((json_t *)d, k, e)
    {
        json_t *pair = json_array();
        if (!pair || append_owned(x, pair, mkstr(x, k, strlen(k), line)) ||
            json_array_append(pair, e) || append_owned(x, l, pair)) {
            json_decref(l);
            return x->rc ? NULL : nomem(x);
        }
    }
    return l;
}

static json_t *call_method(ctx *x, const node *n, const json_t *obj, args_t *a)
{
    int line = n->line;
    const json_t *s1, *s2;
    long long i1;
    int present;
    if (!obj) {
        return fail_undef(x, line);
    }
    if (json_is_object(obj)) {
        switch (n->op) {
        case M_ITEMS:
            return dict_items(x, obj, line);
        case M_KEYS:
            return to_list(x, obj, line);
        case M_VALUES: {
            json_t *l = mkarray(x, json_object_size(obj), line);
            const char *k;
            json_t *e;
            json_object_foreach((json_t *)obj, k, e)
            {
                (void)k;
                if (l && json_array_append(l, e)) {
                    json_decref(l);
                    return nomem(x);
                }
            }
            return l;
        }
        case M_GET: {
            json_t *key = arg(a, 0, NULL, &present), *def = arg(a, 1, NULL, &present);
            json_t *v = is_str(key) ? json_object_getn(obj, S(key), SL(key)) : NULL;
            if (v) {
                return json_incref(v);
            }
            return present ? json_incref(def) : json_null();
        }
        }
    } else if (json_is_string(obj)) {
        switch (n->op) {
        case M_STRIP:
        case M_LSTRIP:
        case M_RSTRIP:
            if (arg_str(x, a, 0, NULL, &s1, n->name, line)) {
                return NULL;
            }
            return str_strip(x, obj, s1, n->op == M_STRIP ? 3 : n->op == M_LSTRIP ? 1 : 2, line);
        case M_UPPER:
            return str_case(x, obj, CASE_UPPER, line);
        case M_LOWER:
            return str_case(x, obj, CASE_LOWER, line);
        case M_TITLE:
            return str_case(x, obj, CASE_PYTITLE, line);
        case M_CAPITALIZE:
            return str_case(x, obj, CASE_CAPITALIZE, line);
        case M_STARTSWITH:
        case M_ENDSWITH:
            return str_affix(x, obj, arg(a, 0, NULL, &present), n->op == M_ENDSWITH, line);
        case M_SPLIT:
            if (arg_str(x, a, 0, "sep", &s1, "split", line) ||
                arg_int(x, a, 1, "maxsplit", -1, &i1, "split", line)) {
                return NULL;
            }
            return str_split(x, obj, s1, i1, line);
        case M_REPLACE:
            if (arg_str(x, a, 0, NULL, &s1, "replace", line) ||
                arg_str(x, a, 1, NULL, &s2, "replace", line) ||
                arg_int(x, a, 2, "count", -1, &i1, "replace", line)) {
                return NULL;
            }
            if (!s1 || !s2) {
                return rfail(x, FY_EINVAL, line, "replace expects two string arguments");
            }
            return str_replace(x, obj, s1, s2, i1, line);
        case M_FIND:
        case M_COUNT: {
            if (arg_str(x, a, 0, NULL, &s1, n->name, line)) {
                return NULL;
            }
            if (!s1) {
                return rfail(x, FY_EINVAL, line, "%s expects a string argument", n->name);
            }
            if (n->op == M_FIND) {
                const char *hit = memmem(S(obj), SL(obj), S(s1), SL(s1));
                return checked_int(
                    x, 1, hit ? (long long)u8_len(S(obj), (size_t)(hit - S(obj))) : -1, line);
            }
            if (SL(s1) == 0) {
                return checked_int(x, 1, (long long)u8_len(S(obj), SL(obj)) + 1, line);
            }
            long long cnt = 0;
            for (const char *p = S(obj), *e = S(obj) + SL(obj);
                 (p = memmem(p, (size_t)(e - p), S(s1), SL(s1))); p += SL(s1)) {
                cnt++;
            }
            return checked_int(x, 1, cnt, line);
        }
        case M_JOIN:
            return str_join(x, obj, arg(a, 0, NULL, &present), NULL, 1, line);
        }
    }
    return rfail(x, FY_EINVAL, line, "'%s' object has no attribute '%s'", type_name(obj), n->name);
}

static json_t *call_function(ctx *x, const node *n, args_t *a)
{
    int line = n->line;
    int present;
    switch (n->op) {
    case FN_RANGE: {
        long long v[3] = {0, 0, 1};
        size_t np = npositional(a);
        if (np < 1 || np > 3) {
            return rfail(x, FY_EINVAL, line, "range expects 1 to 3 integer arguments");
        }
        for (size_t i = 0; i < np; i++) {
            if (arg_int(x, a, i, NULL, 0, &v[np == 1 ? 1 : i], "range", line)) {
                return NULL;
            }
        }
        if (v[2] == 0) {
            return rfail(x, FY_EINVAL, line, "range() arg 3 must not be zero");
        }
        long double span = (long double)v[1] - (long double)v[0];
        long double cnt = span / (long double)v[2];
        size_t count = cnt > 0 ? (size_t)ceill(cnt) : 0;
        json_t *l = mkarray(x, count, line);
        for (size_t i = 0; l && i < count; i++) {
            if (append_owned(x, l, json_integer(v[0] + (long long)i * v[2]))) {
                json_decref(l);
                return NULL;
            }
        }
        return l;
    }
    case FN_NAMESPACE:
    case FN_DICT: {
        json_t *o = json_object();
        if (!o || charge(x, 64, line)) {
            json_decref(o);
            return o ? NULL : nomem(x);
        }
        for (size_t i = 0; i < a->n; i++) {
            if (!a->kw[i]) {
                if (a->v[i] && json_is_object(a->v[i]) && !json_object_update(o, a->v[i])) {
                    continue;
                }
                json_decref(o);
                return rfail(x, FY_EINVAL, line, "%s() takes keyword arguments or a dict", n->name);
            }
            if (json_object_set(o, a->kw[i], a->v[i] ? a->v[i] : json_null())) {
                json_decref(o);
                return nomem(x);
            }
        }
        if (n->op == FN_NAMESPACE && json_array_append(x->namespaces, o)) {
            json_decref(o);
            return nomem(x);
        }
        return o;
    }
    case FN_RAISE: {
        json_t *m = arg(a, 0, NULL, &present);
        json_t *s = to_str(x, m, line);
        if (!s) {
            return NULL;
        }
        rfail(x, FY_EINVAL, 0, FY_JINJA_RAISED_PREFIX "%s", S(s));
        json_decref(s);
        return NULL;
    }
    case FN_STRFTIME: {
        const json_t *f;
        if (arg_str(x, a, 0, NULL, &f, "strftime_now", line)) {
            return NULL;
        }
        if (!f) {
            return rfail(x, FY_EINVAL, line, "strftime_now expects a format string");
        }
        char out[256];
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        size_t k = SL(f) < 128 ? strftime(out, sizeof out, S(f), &tm) : 0;
        return mkstr(x, out, k, line);
    }
    }
    return rfail(x, FY_EINVAL, line, "unknown function");
}

/* ------------------------------------------------------------------ tests and filters */

static int apply_test(ctx *x, int id, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *o = arg(a, 0, NULL, &present);
    switch (id) {
    case TS_DEFINED:
        return v != NULL;
    case TS_UNDEFINED:
        return v == NULL;
    case TS_NONE:
        return v && json_is_null(v);
    case TS_STRING:
        return is_str(v);
    case TS_NUMBER:
        return is_num(v);
    case TS_INTEGER:
        return v && json_is_integer(v);
    case TS_FLOAT:
        return v && json_is_real(v);
    case TS_BOOLEAN:
        return v && json_is_boolean(v);
    case TS_MAPPING:
        return v && json_is_object(v);
    case TS_SEQUENCE:
    case TS_ITERABLE:
        return v && (json_is_array(v) || json_is_string(v) || json_is_object(v));
    case TS_TRUE:
        return v && json_is_true(v);
    case TS_FALSE:
        return v && json_is_false(v);
    case TS_CALLABLE:
        return 0;
    case TS_LOWER:
    case TS_UPPER: {
        if (!is_str(v)) {
            return 0;
        }
        json_t *c = str_case(x, v, id == TS_LOWER ? CASE_LOWER : CASE_UPPER, line);
        int r = c && values_eq(c, v, 0);
        json_decref(c);
        return x->rc ? -1 : r;
    }
    case TS_ODD:
    case TS_EVEN:
    case TS_DIVISIBLEBY: {
        if (!is_intlike(v)) {
            rfail(x, FY_EINVAL, line, "test '%s' needs an integer, got %s",
                  name_of(test_names, NELEM(test_names), id), type_name(v));
            return -1;
        }
        long long i = ival(v);
        if (id == TS_ODD) {
            return i % 2 != 0;
        }
        if (id == TS_EVEN) {
            return i % 2 == 0;
        }
        if (!is_intlike(o) || ival(o) == 0) {
            rfail(x, FY_EINVAL, line, "divisibleby needs a nonzero integer argument");
            return -1;
        }
        return ival(o) == -1 || i % ival(o) == 0;
    }
    case TS_SAMEAS:
        if (v && o && (json_is_null(v) || json_is_boolean(v))) {
            return json_typeof(v) == json_typeof(o);
        }
        return v == o;
    case TS_EQ:
        return compare(x, CMP_EQ, v, o, line);
    case TS_NE:
        return compare(x, CMP_NE, v, o, line);
    case TS_LT:
        return compare(x, CMP_LT, v, o, line);
    case TS_LE:
        return compare(x, CMP_LE, v, o, line);
    case TS_GT:
        return compare(x, CMP_GT, v, o, line);
    case TS_GE:
        return compare(x, CMP_GE, v, o, line);
    case TS_IN:
        return contains(x, v, o, line);
    }
    rfail(x, FY_EINVAL, line, "unknown test");
    return -1;
}

static json_t *apply_filter(ctx *x, int id, const json_t *v, args_t *a, int line);

/* select / reject / selectattr / rejectattr / map over V. */
static json_t *filter_each(ctx *x, int id, const json_t *v, args_t *a, int line)
{
    int present;
    const char *attr = NULL;
    json_t *l = to_list(x, v, line), *res = NULL;
    if (!l) {
        return NULL;
    }
    int is_attr = id == F_SELECTATTR || id == F_REJECTATTR;
    int keep_when = id == F_SELECT || id == F_SELECTATTR;
    int fid = 0, tid = 0;
    args_t rest = *a;
    if (id == F_MAP) {
        json_t *at = arg(a, 0, "attribute", &present);
        if (present && is_str(at) && !(a->n && !a->kw[0])) {
            attr = S(at);
        } else {
            json_t *fname = arg(a, 0, NULL, &present);
            if (!is_str(fname) ||
                !(fid = lookup(filter_names, NELEM(filter_names), S(fname), SL(fname)))) {
                rfail(x, FY_EINVAL, line, "map needs attribute= or a supported filter name");
                goto out;
            }
            rest.skip = a->skip + 1;
        }
    } else {
        size_t ti = 0;
        if (is_attr) {
            json_t *at = arg(a, 0, NULL, &present);
            if (!is_str(at)) {
                rfail(x, FY_EINVAL, line, "%s needs an attribute name",
                      name_of(filter_names, NELEM(filter_names), id));
                goto out;
            }
            attr = S(at);
            ti = 1;
        }
        json_t *tname = arg(a, ti, NULL, &present);
        if (present) {
            if (!is_str(tname) ||
                !(tid = lookup(test_names, NELEM(test_names), S(tname), SL(tname)))) {
                rfail(x, FY_EINVAL, line, "unsupported test '%s'", is_str(tname) ? S(tname) : "?");
                goto out;
            }
        }
        rest.skip = a->skip + ti + 1;
    }
    if (!(res = mkarray(x, json_array_size(l), line))) {
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(l, i, e)
    {
        if (step(x, line)) {
            goto fail;
        }
        json_t *val = attr ? get_attr(e, attr, strlen(attr)) : e;
        if (id == F_MAP) {
            json_t *m = fid ? apply_filter(x, fid, val, &rest, line) : json_incref(val);
            if (x->rc || append_owned(x, res, m)) {
                json_decref(m);
                goto fail;
            }
            continue;
        }
        int t = tid ? apply_test(x, tid, val, &rest, line) : truthy(val);
        if (t < 0) {
            goto fail;
        }
        if (t == keep_when && json_array_append(res, e)) {
            nomem(x);
            goto fail;
        }
    }
    goto out;
fail:
    json_decref(res);
    res = NULL;
out:
    json_decref(l);
    return res;
}

/* Python's int(): an int, a truncated float, or a parsed string; else DEF. */
static json_t *to_int(ctx *x, const json_t *v, long long def, int line)
{
    if (is_intlike(v)) {
        return checked_int(x, 1, ival(v), line);
    }
    if (v && json_is_real(v)) {
        double d = json_real_value(v);
        return checked_int(x, 1, isfinite(d) && fabs(d) < 9.2e18 ? (long long)d : def, line);
    }
    if (is_str(v) && SL(v) < 64) {
        char buf[64], *end;
        memcpy(buf, S(v), SL(v));
        buf[SL(v)] = 0;
        errno = 0;
        long long i = strtoll(buf, &end, 10);
        while (*end && is_ws(*end)) {
            end++;
        }
        if (!errno && end != buf && !*end) {
            return checked_int(x, 1, i, line);
        }
        double d = strtod(buf, &end);
        while (*end && is_ws(*end)) {
            end++;
        }
        if (end != buf && !*end && isfinite(d) && fabs(d) < 9.2e18) {
            return checked_int(x, 1, (long long)d, line);
        }
    }
    return checked_int(x, 1, def, line);
}

static json_t *to_float(ctx *x, const json_t *v, double def)
{
    if (is_num(v)) {
        return mkreal(x, dval(v));
    }
    if (is_str(v) && SL(v) < 64) {
        char buf[64], *end;
        memcpy(buf, S(v), SL(v));
        buf[SL(v)] = 0;
        double d = strtod(buf, &end);
        if (end != buf && !*end) {
            return mkreal(x, d);
        }
    }
    return mkreal(x, def);
}

static json_t *sort_list(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *l = to_list(x, v, line);
    if (!l) {
        return NULL;
    }
    int rev = arg_bool(a, 0, "reverse"), cs = arg_bool(a, 1, "case_sensitive");
    json_t *at = arg(a, 2, "attribute", &present);
    const char *attr = is_str(at) ? S(at) : NULL;
    size_t n = json_array_size(l);
    json_t *r = mkarray(x, n, line), *keys = mkarray(x, n, line);
    if (!r || !keys || charge(x, n * n / 4 + 1, line)) {
        goto fail;
    }
    /* Insertion sort (stable) on keys lowercased unless case_sensitive; the
     * charge above bounds its quadratic cost. */
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(l, i);
        json_t *k = attr ? get_attr(e, attr, strlen(attr)) : e;
        k = is_str(k) && !cs ? str_case(x, k, CASE_LOWER, line) : json_incref(k);
        if (x->rc) {
            goto fail;
        }
        size_t pos = i;
        while (pos > 0) {
            int c;
            if (values_order(json_array_get(keys, pos - 1), k, &c, 0)) {
                json_decref(k);
                rfail(x, FY_EINVAL, line, "sort: values of types '%s' and '%s' cannot be ordered",
                      type_name(json_array_get(keys, pos - 1)), type_name(k));
                goto fail;
            }
            if (rev ? c >= 0 : c <= 0) {
                break;
            }
            pos--;
        }
        if (json_array_insert_new(keys, pos, k ? k : json_null()) || json_array_insert(r, pos, e)) {
            nomem(x);
            goto fail;
        }
    }
    json_decref(keys);
    json_decref(l);
    return r;
fail:
    json_decref(keys);
    json_decref(r);
    json_decref(l);
    return NULL;
}

static json_t *indent_str(ctx *x, const json_t *s, long long width, int first, int blank, int line)
{
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    const char *p = S(s), *e = p + SL(s);
    int at_start = 1;
    if (width < 0 || width > 1024) {
        width = 4;
    }
    for (int lineno = 0; p <= e; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(e - p);
        int pad = (lineno > 0 || first) && (len > 0 || blank);
        for (long long i = 0; pad && i < width; i++) {
            if (buf_put(x, &b, " ", 1)) {
                goto fail;
            }
        }
        if (buf_put(x, &b, p, len) || (nl && buf_put(x, &b, "\n", 1))) {
            goto fail;
        }
        at_start = 0;
        if (!nl) {
            break;
        }
        p = nl + 1;
    }
    (void)at_start;
    json_t *r = mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
fail:
    fy_buf_free(&b);
    return NULL;
}

static json_t *minmax(ctx *x, const json_t *v, int want_max, int line)
{
    json_t *l = to_list(x, v, line), *best = NULL;
    size_t i;
    json_t *e;
    if (!l) {
        return NULL;
    }
    json_array_foreach(l, i, e)
    {
        int c;
        if (!best) {
            best = e;
            continue;
        }
        if (values_order(e, best, &c, 0)) {
            json_decref(l);
            return rfail(x, FY_EINVAL, line, "values of types '%s' and '%s' cannot be ordered",
                         type_name(e), type_name(best));
        }
        if (want_max ? c > 0 : c < 0) {
            best = e;
        }
    }
    json_incref(best);
    json_decref(l);
    return best;
}

static json_t *apply_filter(ctx *x, int id, const json_t *v, args_t *a, int line)
{
    int present;
    const json_t *s1, *s2;
    long long i1;
    json_t *tmp, *r;
    if (step(x, line)) {
        return NULL;
    }
    switch (id) {
    case F_SAFE:
        return json_incref((json_t *)v);
    case F_DEFAULT: {
        json_t *d = arg(a, 0, "default_value", &present);
        if (!v || (arg_bool(a, 1, "boolean") && !truthy(v))) {
            return present ? json_incref(d) : mkstr(x, "", 0, line);
        }
        return json_incref((json_t *)v);
    }
    case F_STRING:
        return to_str(x, v, line);
    case F_LENGTH:
    case F_COUNT:
        if (!v) {
            return checked_int(x, 1, 0, line);
        }
        if (json_is_string(v)) {
            return checked_int(x, 1, (long long)u8_len(S(v), SL(v)), line);
        }
        if (json_is_array(v) || json_is_object(v)) {
            return checked_int(
                x, 1, (long long)(json_is_array(v) ? json_array_size(v) : json_object_size(v)),
                line);
        }
        return rfail(x, FY_EINVAL, line, "object of type '%s' has no len()", type_name(v));
    case F_TOJSON: {
        long long ind;
        if (arg_int(x, a, 0, "indent", -1, &ind, "tojson", line)) {
            return NULL;
        }
        fy_buf b;
        fy_buf_init(&b, x->max_str);
        r = put_json(x, &b, v,
                     ind < 0    ? -1
                     : ind > 64 ? 64
                                : (int)ind,
                     0, 0)
                ? NULL
                : mkstr(x, b.data, b.len, line);
        fy_buf_free(&b);
        if (!r && x->err && !strstr(x->err, "(template line")) {
            size_t l = strlen(x->err);
            snprintf(x->err + l, x->errlen - l, " (template line %d)", line);
        }
        return r;
    }
    case F_FIRST:
    case F_LAST: {
        if (v && json_is_string(v)) {
            json_t *idx = json_integer(id == F_FIRST ? 0 : -1);
            r = idx ? get_item(x, v, idx, line) : nomem(x);
            json_decref(idx);
            return r;
        }
        if (!(tmp = to_list(x, v, line))) {
            return NULL;
        }
        size_t n = json_array_size(tmp);
        r = n ? json_incref(json_array_get(tmp, id == F_FIRST ? 0 : n - 1)) : NULL;
        json_decref(tmp);
        return r;
    }
    case F_LIST:
        return to_list(x, v, line);
    case F_JOIN: {
        json_t *at = arg(a, 1, "attribute", &present);
        if (arg_str(x, a, 0, "d", &s1, "join", line)) {
            return NULL;
        }
        json_t *empty = s1 ? NULL : json_string("");
        r = str_join(x, s1 ? s1 : empty, v, is_str(at) ? S(at) : NULL, 0, line);
        json_decref(empty);
        return r;
    }
    case F_INT: {
        if (arg_int(x, a, 0, "default", 0, &i1, "int", line)) {
            return NULL;
        }
        return to_int(x, v, i1, line);
    }
    case F_FLOAT: {
        json_t *d = arg(a, 0, "default", &present);
        return to_float(x, v, is_num(d) ? dval(d) : 0.0);
    }
    case F_ABS:
        if (is_intlike(v)) {
            return checked_int(x, ival(v) != LLONG_MIN, llabs(ival(v)), line);
        }
        if (is_num(v)) {
            return mkreal(x, fabs(dval(v)));
        }
        return rfail(x, FY_EINVAL, line, "bad operand type for abs(): '%s'", type_name(v));
    case F_ITEMS:
        if (!v) {
            return mkarray(x, 0, line);
        }
        if (!json_is_object(v)) {
            return rfail(x, FY_EINVAL, line, "items expects a mapping, got %s", type_name(v));
        }
        return dict_items(x, v, line);
    case F_SELECT:
    case F_REJECT:
    case F_SELECTATTR:
    case F_REJECTATTR:
    case F_MAP:
        return filter_each(x, id, v, a, line);
    case F_REVERSE: {
        if (is_str(v)) {
            fy_buf b;
            fy_buf_init(&b, x->max_str);
            for (size_t e = SL(v); e > 0;) {
                size_t p = e - 1;
                while (p > 0 && ((unsigned char)S(v)[p] & 0xC0) == 0x80) {
                    p--;
                }
                if (buf_put(x, &b, S(v) + p, e - p)) {
                    fy_buf_free(&b);
                    return NULL;
                }
                e = p;
            }
            r = mkstr(x, b.data, b.len, line);
            fy_buf_free(&b);
            return r;
        }
        if (!(tmp = to_list(x, v, line))) {
            return NULL;
        }
        size_t n = json_array_size(tmp);
        r = mkarray(x, n, line);
        for (size_t i = 0; r && i < n; i++) {
            if (json_array_append(r, json_array_get(tmp, n - 1 - i))) {
                json_decref(r);
                r = nomem(x);
            }
        }
        json_decref(tmp);
        return r;
    }
    case F_SORT:
        return sort_list(x, v, a, line);
    case F_UNIQUE: {
        if (!(tmp = to_list(x, v, line))) {
            return NULL;
        }
        size_t n = json_array_size(tmp);
        r = mkarray(x, n, line);
        if (r && charge(x, n * n / 4 + 1, line)) {
            json_decref(r);
            r = NULL;
        }
        for (size_t i = 0; r && i < n; i++) {
            json_t *e = json_array_get(tmp, i);
            if (contains(x, e, r, line) == 0 && json_array_append(r, e)) {
                json_decref(r);
                r = nomem(x);
            }
        }
        json_decref(tmp);
        return r;
    }
    case F_SUM: {
        json_t *at = arg(a, 0, "attribute", &present), *start = arg(a, 1, "start", &present);
        if (!(tmp = to_list(x, v, line))) {
            return NULL;
        }
        r = present && start ? json_incref(start) : json_integer(0);
        size_t i;
        json_t *e;
        json_array_foreach(tmp, i, e)
        {
            json_t *val = is_str(at) ? get_attr(e, S(at), SL(at)) : e;
            json_t *nr = r ? binop(x, OP_ADD, r, val, line) : NULL;
            json_decref(r);
            if (!(r = nr)) {
                break;
            }
        }
        json_decref(tmp);
        return r;
    }
    case F_MAX:
    case F_MIN:
        return minmax(x, v, id == F_MAX, line);
    case F_WORDCOUNT: {
        if (!(tmp = to_str(x, v, line))) {
            return NULL;
        }
        long long words = 0;
        int in_word = 0;
        for (size_t i = 0; i < SL(tmp); i++) {
            unsigned char ch = (unsigned char)S(tmp)[i];
            int w = isalnum(ch) || ch == '_' || ch >= 0x80;
            words += w && !in_word;
            in_word = w;
        }
        json_decref(tmp);
        return checked_int(x, 1, words, line);
    }
    default:
        break;
    }
    /* The rest work on str(value). */
    if (!(tmp = to_str(x, v, line))) {
        return NULL;
    }
    r = NULL;
    switch (id) {
    case F_UPPER:
        r = str_case(x, tmp, CASE_UPPER, line);
        break;
    case F_LOWER:
        r = str_case(x, tmp, CASE_LOWER, line);
        break;
    case F_TITLE:
        r = str_case(x, tmp, CASE_JTITLE, line);
        break;
    case F_CAPITALIZE:
        r = str_case(x, tmp, CASE_CAPITALIZE, line);
        break;
    case F_TRIM:
        if (!arg_str(x, a, 0, "chars", &s1, "trim", line)) {
            r = str_strip(x, tmp, s1, 3, line);
        }
        break;
    case F_REPLACE:
        if (!arg_str(x, a, 0, NULL, &s1, "replace", line) &&
            !arg_str(x, a, 1, NULL, &s2, "replace", line) &&
            !arg_int(x, a, 2, "count", -1, &i1, "replace", line)) {
            r = s1 && s2 ? str_replace(x, tmp, s1, s2, i1, line)
                         : rfail(x, FY_EINVAL, line, "replace expects two string arguments");
        }
        break;
    case F_ESCAPE: {
        json_t *amp = json_string("&"), *amp2 = json_string("&amp;");
        r = amp && amp2 ? str_replace(x, tmp, amp, amp2, -1, line) : nomem(x);
        json_decref(amp);
        json_decref(amp2);
        static const char *const pairs[][2] = {
            {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&#34;"}, {"'", "&#39;"}};
        for (size_t i = 0; r && i < NELEM(pairs); i++) {
            json_t *o = json_string(pairs[i][0]), *nw = json_string(pairs[i][1]);
            json_t *nr = o && nw ? str_replace(x, r, o, nw, -1, line) : nomem(x);
            json_decref(o);
            json_decref(nw);
            json_decref(r);
            r = nr;
        }
        break;
    }
    case F_INDENT: {
        if (!arg_int(x, a, 0, "width", 4, &i1, "indent", line)) {
            r = indent_str(x, tmp, i1, arg_bool(a, 1, "first"), arg_bool(a, 2, "blank"), line);
        }
        break;
    }
    default:
        r = rfail(x, FY_EINVAL, line, "unknown filter");
    }
    json_decref(tmp);
    return r;
}

/* ------------------------------------------------------------------ eval */

static json_t *eval_inner(ctx *x, const node *n)
{
    json_t *a = NULL, *b = NULL, *r = NULL;
    args_t args;
    switch (n->kind) {
    case E_LIT:
        return json_incref(n->lit);
    case E_NAME: {
        json_t *v = lookup_var(x, n->name);
        if (!v) {
            x->undef_name = n->name;
        }
        return json_incref(v);
    }
    case E_LIST: {
        if (!(r = mkarray(x, n->nargs, n->line))) {
            return NULL;
        }
        for (size_t i = 0; i < n->nargs; i++) {
            a = eval(x, n->args[i]);
            if (x->rc || append_owned(x, r, a)) {
                json_decref(r);
                return NULL;
            }
        }
        return r;
    }
    case E_DICT: {
        if (charge(x, 64 + n->nargs * 32, n->line) || !(r = json_object())) {
            return x->rc ? NULL : nomem(x);
        }
        for (size_t i = 0; i + 1 < n->nargs; i += 2) {
            a = eval(x, n->args[i]);
            b = x->rc ? NULL : eval(x, n->args[i + 1]);
            if (!x->rc && !is_str(a)) {
                rfail(x, FY_EINVAL, n->line, "dict keys must be strings, not %s", type_name(a));
            }
            if (!x->rc && json_object_setn_nocheck(r, S(a), SL(a), b ? b : json_null())) {
                nomem(x);
            }
            json_decref(a);
            json_decref(b);
            if (x->rc) {
                json_decref(r);
                return NULL;
            }
        }
        return r;
    }
    case E_ATTR:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!a) {
            return fail_undef(x, n->line);
        }
        r = json_incref(get_attr(a, n->name, strlen(n->name)));
        if (!r) {
            x->undef_name = n->name;
        }
        json_decref(a);
        return r;
    case E_ITEM:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!a) {
            return fail_undef(x, n->line);
        }
        b = eval(x, n->b);
        if (!x->rc) {
            if (!b) {
                fail_undef(x, n->line);
            } else {
                r = get_item(x, a, b, n->line);
            }
        }
        json_decref(a);
        json_decref(b);
        return r;
    case E_SLICE:
        return eval_slice(x, n);
    case E_CALL:
        if (eval_args(x, n, &args)) {
            return NULL;
        }
        r = call_function(x, n, &args);
        free_args(&args);
        return r;
    case E_METHOD:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!eval_args(x, n, &args)) {
            r = call_method(x, n, a, &args);
            free_args(&args);
        }
        json_decref(a);
        return r;
    case E_FILTER:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!eval_args(x, n, &args)) {
            r = apply_filter(x, n->op, a, &args, n->line);
            free_args(&args);
        }
        json_decref(a);
        return r;
    case E_TEST: {
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!eval_args(x, n, &args)) {
            int t = apply_test(x, n->op, a, &args, n->line);
            free_args(&args);
            r = t < 0 ? NULL : mkbool(n->neg ? !t : t);
        }
        json_decref(a);
        return r;
    }
    case E_NEG:
    case E_POS:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (!is_num(a)) {
            r = a ? rfail(x, FY_EINVAL, n->line, "bad operand type for unary %c: '%s'",
                          n->kind == E_NEG ? '-' : '+', type_name(a))
                  : fail_undef(x, n->line);
        } else if (n->kind == E_POS) {
            r = is_intlike(a) ? checked_int(x, 1, ival(a), n->line) : json_incref(a);
        } else if (is_intlike(a)) {
            r = checked_int(x, ival(a) != LLONG_MIN, -ival(a), n->line);
        } else {
            r = mkreal(x, -json_real_value(a));
        }
        json_decref(a);
        return r;
    case E_NOT:
        a = eval(x, n->a);
        r = x->rc ? NULL : mkbool(!truthy(a));
        json_decref(a);
        return r;
    case E_AND:
    case E_OR:
        a = eval(x, n->a);
        if (x->rc) {
            return NULL;
        }
        if (truthy(a) == (n->kind == E_OR)) {
            return a;
        }
        json_decref(a);
        return eval(x, n->b);
    case E_BIN:
        a = eval(x, n->a);
        b = x->rc ? NULL : eval(x, n->b);
        r = x->rc ? NULL : binop(x, n->op, a, b, n->line);
        json_decref(a);
        json_decref(b);
        return r;
    case E_CMP: {
        /* a < b < c is (a < b) and (b < c), each operand evaluated once. */
        int ok = 1;
        a = eval(x, n->args[0]);
        for (size_t i = 1; !x->rc && ok && i < n->nargs; i++) {
            b = eval(x, n->args[i]);
            if (x->rc) {
                break;
            }
            int c = compare(x, n->ops[i - 1], a, b, n->line);
            ok = c > 0;
            json_decref(a);
            a = b;
            b = NULL;
        }
        json_decref(a);
        json_decref(b);
        return x->rc ? NULL : mkbool(ok);
    }
    case E_COND:
        a = eval(x, n->b);
        if (x->rc) {
            return NULL;
        }
        r = truthy(a) ? eval(x, n->a) : n->c ? eval(x, n->c) : NULL;
        json_decref(a);
        return r;
    }
    return rfail(x, FY_EINVAL, n->line, "unknown expression");
}

static json_t *eval(ctx *x, const node *n)
{
    json_t *r = eval_inner(x, n);
    if (x->rc) {
        json_decref(r);
        return NULL;
    }
    return r;
}

/* ------------------------------------------------------------------ statements */

static int exec_list(ctx *x, const node *n);

static int set_var(ctx *x, const char *name, json_t *v /* stolen, NULL: undefined */)
{
    json_t *scope = x->scopes[x->nscopes - 1];
    if (!v) {
        json_object_del(scope, name);
        return 0;
    }
    if (json_object_set_new(scope, name, v)) {
        nomem(x);
        return -1;
    }
    return 0;
}

static int push_scope(ctx *x, int line)
{
    if (x->nscopes >= MAX_SCOPES) {
        rfail(x, FY_ETOOBIG, line, "loops nest too deeply");
        return -1;
    }
    if (!(x->scopes[x->nscopes] = json_object())) {
        nomem(x);
        return -1;
    }
    x->nscopes++;
    return 0;
}

static void pop_scope(ctx *x)
{
    json_decref(x->scopes[--x->nscopes]);
}

static int bind_targets(ctx *x, const node *n, json_t *item)
{
    if (!n->name2) {
        return set_var(x, n->name, json_incref(item));
    }
    json_t *l =
        item && (json_is_array(item) || json_is_string(item)) ? to_list(x, item, n->line) : NULL;
    if (!l || json_array_size(l) != 2) {
        json_decref(l);
        if (!x->rc) {
            rfail(x, FY_EINVAL, n->line, "cannot unpack %s into two loop variables",
                  type_name(item));
        }
        return -1;
    }
    int rc = set_var(x, n->name, json_incref(json_array_get(l, 0))) ||
             set_var(x, n->name2, json_incref(json_array_get(l, 1)));
    json_decref(l);
    return rc ? -1 : 0;
}

static json_t *loop_object(ctx *x, json_t *items, size_t i, size_t len, int line)
{
    if (charge(x, 512, line)) {
        return NULL;
    }
    json_t *o = json_pack(
        "{sIsIsIsIsbsbsIsIsI}", "index", (json_int_t)(i + 1), "index0", (json_int_t)i, "revindex",
        (json_int_t)(len - i), "revindex0", (json_int_t)(len - i - 1), "first", i == 0, "last",
        i + 1 == len, "length", (json_int_t)len, "depth", (json_int_t)1, "depth0", (json_int_t)0);
    if (!o) {
        return nomem(x);
    }
    if ((i > 0 && json_object_set(o, "previtem", json_array_get(items, i - 1))) ||
        (i + 1 < len && json_object_set(o, "nextitem", json_array_get(items, i + 1)))) {
        json_decref(o);
        return nomem(x);
    }
    return o;
}

static int exec_for(ctx *x, const node *n)
{
    json_t *it = eval(x, n->a);
    if (x->rc) {
        return -1;
    }
    json_t *items = to_list(x, it, n->line);
    json_decref(it);
    if (!items) {
        return -1;
    }
    if (n->b) {
        /* "for x in xs if cond": filter first, so loop.* counts kept items. */
        json_t *kept = mkarray(x, json_array_size(items), n->line);
        size_t i;
        json_t *e;
        json_array_foreach(items, i, e)
        {
            if (!kept || step(x, n->line) || push_scope(x, n->line)) {
                break;
            }
            json_t *c = bind_targets(x, n, e) ? NULL : eval(x, n->b);
            int keep = !x->rc && truthy(c);
            json_decref(c);
            pop_scope(x);
            if (x->rc || (keep && json_array_append(kept, e))) {
                break;
            }
        }
        json_decref(items);
        if (x->rc || !kept) {
            json_decref(kept);
            return x->rc ? -1 : (nomem(x), -1);
        }
        items = kept;
    }
    size_t len = json_array_size(items);
    if (len == 0 && n->orelse) {
        json_decref(items);
        return exec_list(x, n->orelse);
    }
    for (size_t i = 0; i < len; i++) {
        if (step(x, n->line) || push_scope(x, n->line)) {
            break;
        }
        json_t *loop = loop_object(x, items, i, len, n->line);
        if (loop && !bind_targets(x, n, json_array_get(items, i))) {
            if (!set_var(x, "loop", loop)) { /* set_var took the reference */
                exec_list(x, n->body);
            }
        } else {
            json_decref(loop);
        }
        pop_scope(x);
        if (x->rc) {
            break;
        }
        int brk = x->brk;
        x->brk = 0;
        if (brk == S_BREAK) {
            break;
        }
    }
    json_decref(items);
    return x->rc ? -1 : 0;
}

static int exec_set(ctx *x, const node *n)
{
    json_t *v;
    if (n->kind == S_SETBLOCK) {
        fy_buf b, *saved = x->out;
        fy_buf_init(&b, x->max_str);
        x->out = &b;
        exec_list(x, n->body);
        x->out = saved;
        v = x->rc ? NULL : mkstr(x, b.data, b.len, n->line);
        fy_buf_free(&b);
    } else {
        v = eval(x, n->a);
    }
    if (x->rc) {
        return -1;
    }
    if (!n->name2) {
        return set_var(x, n->name, v);
    }
    json_t *ns = lookup_var(x, n->name);
    if (!ns || !is_namespace(x, ns)) {
        json_decref(v);
        rfail(x, FY_EINVAL, n->line, "cannot assign attribute '%s' on %s '%s': not a namespace",
              n->name2, type_name(ns), n->name);
        return -1;
    }
    if (v == ns) { /* jansson refuses an object inside itself */
        json_decref(v);
        rfail(x, FY_EINVAL, n->line, "cannot assign namespace '%s' to its own attribute '%s'",
              n->name, n->name2);
        return -1;
    }
    if (json_object_set_new(ns, n->name2, v ? v : json_null())) {
        nomem(x);
        return -1;
    }
    return 0;
}

static int exec_one(ctx *x, const node *n)
{
    if (step(x, n->line)) {
        return -1;
    }
    switch (n->kind) {
    case S_TEXT:
        return buf_put(x, x->out, n->str, n->len);
    case S_OUT: {
        json_t *v = eval(x, n->a);
        if (x->rc) {
            return -1;
        }
        int rc = put_value(x, x->out, v, 0, 0);
        json_decref(v);
        return rc;
    }
    case S_IF: {
        json_t *c = eval(x, n->a);
        if (x->rc) {
            return -1;
        }
        int t = truthy(c);
        json_decref(c);
        return exec_list(x, t ? n->body : n->orelse);
    }
    case S_FOR:
        return exec_for(x, n);
    case S_SET:
    case S_SETBLOCK:
        return exec_set(x, n);
    case S_BREAK:
    case S_CONTINUE:
        x->brk = n->kind;
        return 0;
    case S_BODY:
        return exec_list(x, n->body);
    }
    rfail(x, FY_EINVAL, n->line, "unknown statement");
    return -1;
}

static int exec_list(ctx *x, const node *n)
{
    for (; n && !x->rc && !x->brk; n = n->next) {
        exec_one(x, n);
    }
    return x->rc ? -1 : 0;
}

int fy_jinja_render(const fy_jinja *t, const json_t *vars, const fy_jinja_limits *limits,
                    char **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    if (len) {
        *len = 0;
    }
    if (err && errlen) {
        err[0] = 0;
    }
    ctx x = {.t = t, .globals = vars, .err = err, .errlen = errlen};
    x.max_output = limits && limits->max_output ? limits->max_output : FY_JINJA_MAX_OUTPUT;
    x.max_str = x.max_output;
    x.max_steps = limits && limits->max_steps ? limits->max_steps : FY_JINJA_MAX_STEPS;
    x.max_work =
        limits && limits->max_work_bytes ? limits->max_work_bytes : FY_JINJA_MAX_WORK_BYTES;
    if (vars && !json_is_object(vars)) {
        rfail(&x, FY_EINVAL, 0, "template variables must be an object");
        return x.rc;
    }
    fy_buf b;
    fy_buf_init(&b, x.max_output);
    x.out = &b;
    if (!(x.namespaces = json_array()) || push_scope(&x, 0)) {
        json_decref(x.namespaces);
        return FY_ENOMEM;
    }
    exec_list(&x, t->root);
    while (x.nscopes) {
        pop_scope(&x);
    }
    /* Namespaces may hold themselves (ns.self = ns): break such cycles. */
    size_t i;
    json_t *ns;
    json_array_foreach(x.namespaces, i, ns)
    {
        json_object_clear(ns);
    }
    json_decref(x.namespaces);
    if (x.rc) {
        fy_buf_free(&b);
        return x.rc;
    }
    if (!fy_buf_cstr(&b)) {
        fy_buf_free(&b);
        return FY_ENOMEM;
    }
    *out = fy_buf_steal(&b, len);
    return 0;
}
