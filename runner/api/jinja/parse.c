/* parse.c: tokens -> AST (statements and expressions), resolving every
 * filter, test, function and method name to a builtin so that an unknown one
 * is refused at compile time with its line. */
#include "runner/api/jinja/jinja_internal.h"

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
    return fy_jinja__cfail(c, FY_EPARSE, cur(c)->line, "expected %s, got %s", wanted, d);
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
    node *n = fy_jinja__arena_alloc(&c->t->arena, sizeof *n);
    if (!n) {
        fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
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
        fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
        return NULL;
    }
    if (t->nlits == t->caplits) {
        size_t cap = t->caplits ? t->caplits * 2 : 64;
        json_t **p = realloc(t->lits, cap * sizeof *p);
        if (!p) {
            json_decref(v);
            fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
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
        node **v = fy_jinja__arena_alloc(&c->t->arena, cap * sizeof *v);
        const char **k = fy_jinja__arena_alloc(&c->t->arena, cap * sizeof *k);
        if (!v || !k) {
            return fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
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
        return fy_jinja__cfail(c, FY_ETOOBIG, cur(c)->line, "template nests deeper than %d levels",
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
            return fy_jinja__cfail(c, FY_ENOTSUP, cur(c)->line,
                                   "unsupported *args/**kwargs in call");
        }
        const char *kw = NULL;
        if (cur(c)->type == T_NAME && tok_is_op(&c->toks[c->pos + 1], "=")) {
            kw = fy_jinja__cstrdup(c, cur(c)->s, cur(c)->n);
            if (!kw) {
                return c->rc;
            }
            c->pos += 2;
            seen_kw = 1;
        } else if (seen_kw) {
            return fy_jinja__cfail(c, FY_EPARSE, cur(c)->line,
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

/* Adjacent string literals concatenate, as in Python. */
static node *parse_strings(compiler *c, int line)
{
    fy_buf b;
    fy_buf_init(&b, FY_JINJA_MAX_SOURCE);
    while (cur(c)->type == T_STRING) {
        if (fy_buf_append(&b, cur(c)->s, cur(c)->n)) {
            fy_buf_free(&b);
            fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
            return NULL;
        }
        c->pos++;
    }
    node *n = new_lit(c, json_stringn_nocheck(b.data ? b.data : "", b.len), line);
    fy_buf_free(&b);
    return n;
}

/* A name token T (already consumed): a constant, or a variable; a keyword
 * here is refused. */
static node *parse_name(compiler *c, const token *t, int line)
{
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
    if (n && !(n->name = fy_jinja__cstrdup(c, t->s, t->n))) {
        return NULL;
    }
    return n;
}

/* After "(": a parenthesised expression, or a tuple (kept as a list). */
static node *parse_paren(compiler *c, int line)
{
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

/* After "[" (a list) or "{" (a dict, DICT set): the items up to CLOSE, each
 * a key: value pair for a dict, with an optional trailing comma. */
static node *parse_display(compiler *c, int dict, const char *close, int line)
{
    node *n = new_node(c, dict ? E_DICT : E_LIST, line);
    nodevec nv = {0};
    if (!n) {
        return NULL;
    }
    while (!tok_is_op(cur(c), close)) {
        node *k = parse_expr(c);
        if (!k || (dict && expect_op(c, ":"))) {
            return NULL;
        }
        node *v = dict ? parse_expr(c) : NULL;
        if ((dict && !v) || nv_push(c, &nv, k, NULL) || (dict && nv_push(c, &nv, v, NULL))) {
            return NULL;
        }
        if (!accept_op(c, ",")) {
            break;
        }
    }
    if (expect_op(c, close)) {
        return NULL;
    }
    n->args = nv.v;
    n->nargs = nv.n;
    return n;
}

static node *parse_primary(compiler *c)
{
    token *t = cur(c);
    int line = t->line;
    switch (t->type) {
    case T_STRING:
        return parse_strings(c, line);
    case T_INT:
        c->pos++;
        return new_lit(c, json_integer(t->ival), line);
    case T_FLOAT:
        c->pos++;
        return new_lit(c, json_real(t->fval), line);
    case T_NAME:
        c->pos++;
        return parse_name(c, t, line);
    }
    if (accept_op(c, "(")) {
        return parse_paren(c, line);
    }
    if (accept_op(c, "[")) {
        return parse_display(c, 0, "]", line);
    }
    if (accept_op(c, "{")) {
        return parse_display(c, 1, "}", line);
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
        fy_jinja__cfail(c, FY_EPARSE, line, "empty subscript");
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

/* After ".": an attribute, or an item for a number (x.0 is x[0]). */
static node *parse_dot(compiler *c, node *n, int line)
{
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
        return it;
    }
    if (t->type != T_NAME) {
        unexpected(c, "an attribute name");
        return NULL;
    }
    c->pos++;
    node *at = new_node(c, E_ATTR, line);
    if (!at || !(at->name = fy_jinja__cstrdup(c, t->s, t->n))) {
        return NULL;
    }
    at->a = n;
    return at;
}

/* After "(": a call of N, which must name a global function or be a
 * method of an object (N an attribute); either is resolved here. */
static node *parse_call(compiler *c, node *n, int line)
{
    int method = n->kind == E_ATTR;
    if (n->kind != E_NAME && !method) {
        fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported call of a computed value");
        return NULL;
    }
    size_t len = strlen(n->name);
    int id = method ? fy_jinja__find_method(n->name, len) : fy_jinja__find_function(n->name, len);
    if (!id) {
        fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported %s '%s'", method ? "method" : "function",
                        n->name);
        return NULL;
    }
    node *call = new_node(c, method ? E_METHOD : E_CALL, line);
    if (!call) {
        return NULL;
    }
    call->op = id;
    call->name = n->name;
    call->a = method ? n->a : NULL;
    return parse_call_args(c, call) ? NULL : call;
}

static node *parse_postfix(compiler *c, node *n)
{
    while (n) {
        int line = cur(c)->line;
        if (accept_op(c, ".")) {
            n = parse_dot(c, n, line);
        } else if (accept_op(c, "[")) {
            n = parse_subscript(c, n, line);
        } else if (accept_op(c, "(")) {
            n = parse_call(c, n, line);
        } else {
            return n;
        }
    }
    return NULL;
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

/* After "|": a filter, resolved here, with optional arguments. */
static node *parse_filter(compiler *c, node *n, int line)
{
    token *t = cur(c);
    if (t->type != T_NAME) {
        unexpected(c, "a filter name");
        return NULL;
    }
    c->pos++;
    int id = fy_jinja__find_filter(t->s, t->n);
    if (!id) {
        fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported filter '%.*s'", (int)t->n, t->s);
        return NULL;
    }
    node *f = new_node(c, E_FILTER, line);
    if (!f) {
        return NULL;
    }
    f->op = id;
    f->a = n;
    return accept_op(c, "(") && parse_call_args(c, f) ? NULL : f;
}

/* A test's one bare argument ("is divisibleby 3") into F. */
static int parse_test_arg(compiler *c, node *f)
{
    node *arg = parse_primary(c);
    if (!arg || !(arg = parse_postfix(c, arg))) {
        return -1;
    }
    nodevec nv = {0};
    if (nv_push(c, &nv, arg, NULL)) {
        return -1;
    }
    f->args = nv.v;
    f->kwnames = nv.kw;
    f->nargs = 1;
    return 0;
}

/* After "is": [not] a test (a name or an operator), resolved here, with
 * arguments in parentheses, one bare argument, or none. */
static node *parse_test(compiler *c, node *n, int line)
{
    int neg = accept_name(c, "not");
    token *t = cur(c);
    if (t->type != T_NAME && t->type != T_OP) {
        unexpected(c, "a test name");
        return NULL;
    }
    int id = fy_jinja__find_test(t->s, t->n);
    if (!id) {
        fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported test '%.*s'", (int)t->n, t->s);
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
        return parse_call_args(c, f) ? NULL : f;
    }
    return starts_test_arg(c) && parse_test_arg(c, f) ? NULL : f;
}

static node *parse_filters(compiler *c, node *n)
{
    while (n) {
        int line = cur(c)->line;
        if (accept_op(c, "|")) {
            n = parse_filter(c, n, line);
        } else if (accept_name(c, "is")) {
            n = parse_test(c, n, line);
        } else {
            return n;
        }
    }
    return NULL;
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
            int *p = fy_jinja__arena_alloc(&c->t->arena, capops * sizeof *p);
            if (!p) {
                fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
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
    return fy_jinja__cstrdup(c, t->s, t->n);
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
            return fy_jinja__cfail(c, FY_ENOTSUP, line,
                                   "unsupported unpacking into more than two names");
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
        return fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported recursive loop");
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
        return fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported tuple assignment in set");
    }
    if (accept_op(c, "=")) {
        if (!(n->a = parse_expr(c)) || end_tag(c)) {
            return c->rc;
        }
        *out = n;
        return 0;
    }
    if (tok_is_op(cur(c), "|")) {
        return fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported filtered block set");
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
            return fy_jinja__cfail(c, FY_EPARSE, line, "'%.*s' outside a loop", (int)t->n, t->s);
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
            return fy_jinja__cfail(c, FY_EPARSE, line, "unexpected '%s'", misplaced[i]);
        }
    }
    return fy_jinja__cfail(c, FY_ENOTSUP, line, "unsupported tag '%.*s'",
                           (int)(t->n > 40 ? 40 : t->n), t->s);
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
                return fy_jinja__cfail(c, FY_EPARSE, open_line, "'%s' block is never closed",
                                       opener);
            }
            break;
        }
        if (t->type == T_TEXT) {
            c->pos++;
            n = new_node(c, S_TEXT, t->line);
            char *text = n ? fy_jinja__cstrdup(c, t->s, t->n) : NULL;
            if (!text) {
                return c->rc;
            }
            n->str = text;
            n->len = fy_jinja__normalize_newlines(text, t->n);
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

int fy_jinja__parse(compiler *c)
{
    return parse_block(c, NULL, NULL, 0, NULL, 0, &c->t->root);
}
