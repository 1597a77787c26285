/* jinja_internal.h: what the parts of the Jinja-subset interpreter (jinja.h)
 * share: tokens, AST nodes, compiler and render state, and the functions one
 * part offers another. Only runner/api/jinja.c, the files of
 * runner/api/jinja/ and their unit tests include it.
 *
 * Which file calls which; calls go only this way, never back:
 *   compile:  jinja.c -> parse.c, lex.c
 *             parse.c -> lex.c, builtins.c (resolving builtin names)
 *   render:   eval.c -> builtins.c, value.c
 *             builtins.c -> value.c
 * lex.c and value.c call no other part.
 * lex.c also owns the compiler's basics (arena, first error); value.c owns the
 * renderer's (first error, the step and memory budgets, value constructors,
 * printing, comparison, argument access). Builtins never evaluate AST nodes:
 * they receive evaluated values and arguments.
 *
 * Values are jansson values; NULL stands for "undefined". Unless a contract
 * says otherwise a json_t * returned is a new reference the caller owns, and
 * NULL with x->rc set is an error already recorded in the render context. */
#ifndef FERRY_RUNNER_API_JINJA_JINJA_INTERNAL_H
#define FERRY_RUNNER_API_JINJA_JINJA_INTERNAL_H

#include "runner/api/jinja.h"

#include "common/buf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <utf8proc.h>

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ arena */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    max_align_t data[];
} arena_chunk;

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
    int op; /* E_BIN: OP_*; E_CALL, E_METHOD, E_FILTER, E_TEST: the builtin's id */
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

/* ------------------------------------------------------------------ call arguments */

/* The evaluated arguments of a call, filter or test (references owned). */
typedef struct {
    json_t *v[MAX_ARGS]; /* NULL: undefined */
    const char *kw[MAX_ARGS];
    size_t n;
    size_t skip; /* leading positional arguments already consumed (map, select) */
} args_t;

/* ------------------------------------------------------------------ small value helpers
 * S and SL: a string value's bytes and length. The is_* tests take NULL
 * (undefined) and count booleans as integers, as Python does; ival and dval
 * read a number or boolean. is_ws is ASCII whitespace; utf8_put writes CP
 * (U+FFFD when out of range) as UTF-8 and returns its length. */

static inline const char *S(const json_t *v)
{
    return json_string_value(v);
}

static inline size_t SL(const json_t *v)
{
    return json_string_length(v);
}

static inline int is_str(const json_t *v)
{
    return v && json_is_string(v);
}

static inline int is_intlike(const json_t *v)
{
    return v && (json_is_integer(v) || json_is_boolean(v));
}

static inline int is_num(const json_t *v)
{
    return v && (json_is_number(v) || json_is_boolean(v));
}

static inline long long ival(const json_t *v)
{
    return json_is_boolean(v) ? json_is_true(v) : (long long)json_integer_value(v);
}

static inline double dval(const json_t *v)
{
    return json_is_real(v) ? json_real_value(v) : (double)ival(v);
}

static inline json_t *mkbool(int b)
{
    return b ? json_true() : json_false();
}

static inline int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

static inline size_t utf8_put(char *p, long cp)
{
    if (cp < 0 || cp > 0x10FFFF) {
        cp = 0xFFFD;
    }
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)p);
}

/* Writes FMT's message into ERR[0..ERRLEN) (nothing when ERR is NULL or
 * ERRLEN 0), then, when LINE > 0 and it fits, where it happened: " at line N"
 * for a compile error, " (template line N)" for a render error (RENDER). */
__attribute__((format(printf, 5, 0))) static inline void
fy_jinja__put_error(char *err, size_t errlen, int render, int line, const char *fmt, va_list ap)
{
    if (!err || !errlen) {
        return;
    }
    int n = vsnprintf(err, errlen, fmt, ap);
    if (n >= 0 && (size_t)n < errlen && line > 0) {
        snprintf(err + n, errlen - (size_t)n, render ? " (template line %d)" : " at line %d", line);
    }
}

/* ------------------------------------------------------------------ lex.c: compiler basics, lexer */

/* Returns N zeroed bytes from the arena at *HEAD (a new chunk is pushed when
 * the current one is full); NULL when out of memory. Freed only as a whole. */
void *fy_jinja__arena_alloc(arena_chunk **head, size_t n);

/* Frees every chunk of the arena C (NULL is fine). */
void fy_jinja__arena_free(arena_chunk *c);

/* Records the first compile error (RC and the message, with " at line N"
 * when LINE > 0) in C; later errors are ignored. Returns C's first code. */
int fy_jinja__cfail(compiler *c, int rc, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Copies S[0..N) into the template's arena, NUL-terminated; NULL (and
 * FY_ENOMEM recorded) when out of memory. */
char *fy_jinja__cstrdup(compiler *c, const char *s, size_t n);

/* Rewrites every \r\n and \r of S[0..N) as \n in place; returns the new length. */
size_t fy_jinja__normalize_newlines(char *s, size_t n);

/* Turns c->src into c->toks (ending in T_EOF), applying whitespace control
 * and c->flags. Returns 0, or the error recorded with fy_jinja__cfail. */
int fy_jinja__lex(compiler *c);

/* ------------------------------------------------------------------ parse.c: the parser */

/* Parses c->toks into c->t->root (nodes in c->t's arena, literals listed in
 * c->t->lits). Returns 0, or the error recorded with fy_jinja__cfail. */
int fy_jinja__parse(compiler *c);

/* ------------------------------------------------------------------ builtins.c: filters, tests, methods, functions */

/* A filter: V (NULL: undefined) filtered with the arguments A, as a new
 * value; NULL with x->rc set on error (NULL without it: undefined). */
typedef json_t *fy_jinja_filter_fn(ctx *x, const json_t *v, args_t *a, int line);

typedef struct {
    const char *name;
    fy_jinja_filter_fn *fn;
} fy_jinja_filter;

/* The filter table, sorted by name in strcmp order; *N gets its size. */
const fy_jinja_filter *fy_jinja__filters(size_t *n);

/* A test: 1 when V (NULL: undefined) passes with the arguments A, else 0;
 * -1 with x->rc set on error. */
typedef int fy_jinja_test_fn(ctx *x, const json_t *v, args_t *a, int line);

typedef struct {
    const char *name;
    fy_jinja_test_fn *fn;
} fy_jinja_test;

/* The test table, sorted by name in strcmp order; *N gets its size. */
const fy_jinja_test *fy_jinja__tests(size_t *n);

/* The id of the builtin named S[0..LEN), which the evaluator passes back to
 * the fy_jinja__apply_* and fy_jinja__call_* below; 0 when there is none.
 * An id is the index of the name in its table (each sorted by strcmp) + 1. */
int fy_jinja__find_filter(const char *s, size_t len);
int fy_jinja__find_test(const char *s, size_t len);
int fy_jinja__find_function(const char *s, size_t len);
int fy_jinja__find_method(const char *s, size_t len);

/* Counts a step, then applies filter ID to V (NULL: undefined) with
 * arguments A at LINE; an ID not in the table fails with "unknown filter". */
json_t *fy_jinja__apply_filter(ctx *x, int id, const json_t *v, args_t *a, int line);

/* Applies test ID to V with arguments A: 1 or 0, or -1 with x->rc set (an
 * ID not in the table fails with "unknown test"). */
int fy_jinja__apply_test(ctx *x, int id, const json_t *v, args_t *a, int line);

/* Calls method n->op (named n->name) on OBJ with arguments A; fails with
 * "'<type>' object has no attribute '<name>'" when OBJ's type lacks it. */
json_t *fy_jinja__call_method(ctx *x, const node *n, const json_t *obj, args_t *a);

/* Calls global function n->op (named n->name) with arguments A. */
json_t *fy_jinja__call_function(ctx *x, const node *n, args_t *a);

/* ------------------------------------------------------------------ value.c: render state and values */

/* Records the first render error (with " (template line N)" when LINE > 0);
 * later ones are ignored. Returns NULL, so callers can return it. */
json_t *fy_jinja__rfail(ctx *x, int rc, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fails for the use of an undefined value, naming x->undef_name if set. */
json_t *fy_jinja__fail_undef(ctx *x, int line);

/* Fails with FY_ENOMEM. */
json_t *fy_jinja__nomem(ctx *x);

/* Charges BYTES to the working-memory budget: 0, or -1 (FY_ETOOBIG recorded). */
int fy_jinja__charge(ctx *x, size_t bytes, int line);

/* Counts one step against the step budget: 0, or -1 (FY_ETOOBIG recorded). */
int fy_jinja__step(ctx *x, int line);

/* New values, each counted against the limits. */
json_t *fy_jinja__mkstr(ctx *x, const char *s, size_t n, int line);
json_t *fy_jinja__mkarray(ctx *x, size_t n, int line);
json_t *fy_jinja__mkreal(ctx *x, double d);
/* An integer V when OK, else fails with "integer overflow". */
json_t *fy_jinja__checked_int(ctx *x, int ok, long long v, int line);

/* Appends V to ARR, stealing V (NULL appends null): 0, or -1 (FY_ENOMEM). */
int fy_jinja__append_owned(ctx *x, json_t *arr, json_t *v);

/* Python's type name of V ("undefined" for NULL); a static string. */
const char *fy_jinja__type_name(const json_t *v);

/* Python's truth value of V (undefined is false). */
int fy_jinja__truthy(const json_t *v);

/* Whether V is a namespace() made during this render. */
int fy_jinja__is_namespace(const ctx *x, const json_t *v);

/* UTF-8 over S[0..N): code points, the byte offset of code point IDX (N when
 * past the end), and the code point at byte I (its byte length returned, an
 * invalid byte being one code point of -1). */
size_t fy_jinja__u8_len(const char *s, size_t n);
size_t fy_jinja__u8_off(const char *s, size_t n, size_t idx);
size_t fy_jinja__u8_next(const char *s, size_t n, size_t i, int32_t *cp);

/* Python's str.isspace() and "is cased" for one code point. */
int fy_jinja__is_space_cp(int32_t c);
int fy_jinja__is_cased(int32_t c);

/* Appends S[0..N) to B within its cap: 0, or -1 (FY_ETOOBIG or FY_ENOMEM). */
int fy_jinja__buf_put(ctx *x, fy_buf *b, const char *s, size_t n);

/* Appends V as Python's str() (REPR: repr()) to B: 0 or -1. */
int fy_jinja__put_value(ctx *x, fy_buf *b, const json_t *v, int repr, int depth);

/* Appends V as tojson does (INDENT < 0: on one line) to B: 0 or -1. */
int fy_jinja__put_json(ctx *x, fy_buf *b, const json_t *v, int indent, int level, int depth);

/* Python's str(V) as a new string value. */
json_t *fy_jinja__to_str(ctx *x, const json_t *v, int line);

/* V as a list (a new reference): a list itself, a string's characters, a
 * dict's keys, [] for undefined; other types fail as not iterable. */
json_t *fy_jinja__to_list(ctx *x, const json_t *v, int line);

/* Python's == (1 or 0), following at most VALUE_DEPTH levels. */
int fy_jinja__values_eq(const json_t *a, const json_t *b, int depth);

/* Python's ordering: sets *R to <0, 0 or >0 and returns 0, or -1 when A and
 * B cannot be ordered. */
int fy_jinja__values_order(const json_t *a, const json_t *b, int *r, int depth);

/* ITEM in CONT: 1 or 0, or -1 with x->rc set. */
int fy_jinja__contains(ctx *x, const json_t *item, const json_t *cont, int line);

/* Arithmetic operator OP (OP_*) on A and B. */
json_t *fy_jinja__binop(ctx *x, int op, const json_t *a, const json_t *b, int line);

/* Comparison OP (CMP_*) of A and B: 1 or 0, or -1 with x->rc set. */
int fy_jinja__compare(ctx *x, int op, const json_t *a, const json_t *b, int line);

/* OBJ.NAME[0..N) for a dict; a borrowed reference, NULL when absent. */
json_t *fy_jinja__get_attr(const json_t *obj, const char *name, size_t n);

/* OBJ[KEY] for a list, string (by code point) or dict, negative indexes
 * counting from the end; NULL (undefined, no error) when there is none. */
json_t *fy_jinja__get_item(ctx *x, const json_t *obj, const json_t *key, int line);

/* Drops the references A holds. */
void fy_jinja__free_args(args_t *a);

/* Argument POS (counted after a->skip positional ones) or keyword KW; a
 * borrowed reference; *PRESENT says whether it was given. */
json_t *fy_jinja__arg(const args_t *a, size_t pos, const char *kw, int *present);

/* How many positional arguments A has after a->skip. */
size_t fy_jinja__npositional(const args_t *a);

/* A string argument into *OUT (NULL when absent or none), or an integer one
 * (DEF when absent): 0, or -1 when it has another type (WHAT names the
 * caller in the message). */
int fy_jinja__arg_str(ctx *x, const args_t *a, size_t pos, const char *kw, const json_t **out,
                      const char *what, int line);
int fy_jinja__arg_int(ctx *x, const args_t *a, size_t pos, const char *kw, long long def,
                      long long *out, const char *what, int line);

/* A boolean argument's truth (absent: false). */
int fy_jinja__arg_bool(const args_t *a, size_t pos, const char *kw);

#endif
