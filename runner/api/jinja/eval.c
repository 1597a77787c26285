/* eval.c: the evaluator: AST + variables -> output, on jansson values, with
 * scopes, loops and assignments, and every resource a template can consume
 * (output bytes, steps, bytes of strings and lists created) counted against
 * a limit. The AST is never modified by rendering, so renders can run
 * concurrently. */
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

static json_t *eval(ctx *x, const node *n);

static int eval_args(ctx *x, const node *n, args_t *a)
{
    memset(a, 0, sizeof *a);
    if (n->nargs > MAX_ARGS) {
        fy_jinja__rfail(x, FY_EINVAL, n->line, "too many arguments (at most %d)", MAX_ARGS);
        return -1;
    }
    for (size_t i = 0; i < n->nargs; i++) {
        a->v[i] = eval(x, n->args[i]);
        a->kw[i] = n->kwnames ? n->kwnames[i] : NULL;
        a->n = i + 1;
        if (x->rc) {
            fy_jinja__free_args(a);
            return -1;
        }
    }
    return 0;
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

/* Code points START, START + STEP, ... (before STOP) of the string OBJ. */
static json_t *slice_str(ctx *x, const json_t *obj, long long start, long long stop,
                         long long stepv, int line)
{
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    for (long long i = start; stepv < 0 ? i > stop : i < stop; i += stepv) {
        size_t a = fy_jinja__u8_off(S(obj), SL(obj), (size_t)i);
        size_t e = fy_jinja__u8_off(S(obj), SL(obj), (size_t)i + 1);
        if (fy_jinja__buf_put(x, &b, S(obj) + a, e - a)) {
            fy_buf_free(&b);
            return NULL;
        }
    }
    json_t *res = fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return res;
}

/* Items START, START + STEP, ... (before STOP) of the list OBJ. */
static json_t *slice_list(ctx *x, const json_t *obj, long long start, long long stop,
                          long long stepv, int line)
{
    int neg = stepv < 0;
    long long cnt = neg ? (start > stop ? (start - stop - 1) / -stepv + 1 : 0)
                        : (stop > start ? (stop - start - 1) / stepv + 1 : 0);
    json_t *res = fy_jinja__mkarray(x, (size_t)cnt, line);
    for (long long i = start; res && (neg ? i > stop : i < stop); i += stepv) {
        if (fy_jinja__append_owned(x, res, json_incref(json_array_get(obj, (size_t)i)))) {
            json_decref(res);
            res = NULL;
        }
    }
    return res;
}

/* OBJ[P0:P1:P2] once the bounds are evaluated (each NULL or null: absent). */
static json_t *slice_value(ctx *x, const json_t *obj, json_t *const parts[3], int line)
{
    for (int i = 0; i < 3; i++) {
        if (parts[i] && !json_is_null(parts[i]) && !is_intlike(parts[i])) {
            return fy_jinja__rfail(x, FY_EINVAL, line,
                                   "slice indices must be integers or none, not %s",
                                   fy_jinja__type_name(parts[i]));
        }
    }
    long long stepv = parts[2] && !json_is_null(parts[2]) ? ival(parts[2]) : 1;
    if (stepv == 0) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "slice step cannot be zero");
    }
    int isstr = json_is_string(obj);
    if (!isstr && !json_is_array(obj)) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "'%s' object is not subscriptable",
                               fy_jinja__type_name(obj));
    }
    long long len =
        isstr ? (long long)fy_jinja__u8_len(S(obj), SL(obj)) : (long long)json_array_size(obj);
    int neg = stepv < 0;
    long long start = slice_bound(parts[0], neg ? len - 1 : 0, len, neg);
    long long stop = slice_bound(parts[1], neg ? -1 : len, len, neg);
    return isstr ? slice_str(x, obj, start, stop, stepv, line)
                 : slice_list(x, obj, start, stop, stepv, line);
}

static json_t *eval_slice(ctx *x, const node *n)
{
    json_t *obj = eval(x, n->a), *parts[3] = {NULL, NULL, NULL}, *res = NULL;
    const node *pn[3] = {n->b, n->c, n->d};
    if (x->rc) {
        return NULL;
    }
    if (!obj) {
        return fy_jinja__fail_undef(x, n->line);
    }
    int i = 0;
    for (; i < 3; i++) {
        if (pn[i] && !(parts[i] = eval(x, pn[i])) && x->rc) {
            break;
        }
        if (parts[i] && !json_is_null(parts[i]) && !is_intlike(parts[i])) {
            break; /* slice_value names the bad index */
        }
    }
    if (!x->rc) {
        res = slice_value(x, obj, parts, n->line);
    }
    json_decref(obj);
    for (i = 0; i < 3; i++) {
        json_decref(parts[i]);
    }
    return res;
}

/* ------------------------------------------------------------------ eval */

static json_t *eval_name(ctx *x, const node *n)
{
    json_t *v = lookup_var(x, n->name);
    if (!v) {
        x->undef_name = n->name;
    }
    return json_incref(v);
}

static json_t *eval_list(ctx *x, const node *n)
{
    json_t *r = fy_jinja__mkarray(x, n->nargs, n->line);
    if (!r) {
        return NULL;
    }
    for (size_t i = 0; i < n->nargs; i++) {
        json_t *a = eval(x, n->args[i]);
        if (x->rc || fy_jinja__append_owned(x, r, a)) {
            json_decref(r);
            return NULL;
        }
    }
    return r;
}

static json_t *eval_dict(ctx *x, const node *n)
{
    json_t *r;
    if (fy_jinja__charge(x, 64 + n->nargs * 32, n->line) || !(r = json_object())) {
        return x->rc ? NULL : fy_jinja__nomem(x);
    }
    for (size_t i = 0; i + 1 < n->nargs; i += 2) {
        json_t *a = eval(x, n->args[i]);
        json_t *b = x->rc ? NULL : eval(x, n->args[i + 1]);
        if (!x->rc && !is_str(a)) {
            fy_jinja__rfail(x, FY_EINVAL, n->line, "dict keys must be strings, not %s",
                            fy_jinja__type_name(a));
        }
        if (!x->rc && json_object_setn_nocheck(r, S(a), SL(a), b ? b : json_null())) {
            fy_jinja__nomem(x);
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

/* The object n->a of an attribute, subscript or method: NULL when it failed
 * or (recorded as an error) when it is undefined. */
static json_t *eval_object(ctx *x, const node *n)
{
    json_t *a = eval(x, n->a);
    if (x->rc) {
        return NULL;
    }
    return a ? a : fy_jinja__fail_undef(x, n->line);
}

static json_t *eval_attr(ctx *x, const node *n)
{
    json_t *a = eval_object(x, n);
    if (!a) {
        return NULL;
    }
    json_t *r = json_incref(fy_jinja__get_attr(a, n->name, strlen(n->name)));
    if (!r) {
        x->undef_name = n->name;
    }
    json_decref(a);
    return r;
}

static json_t *eval_item(ctx *x, const node *n)
{
    json_t *a = eval_object(x, n), *r = NULL;
    if (!a) {
        return NULL;
    }
    json_t *b = eval(x, n->b);
    if (!x->rc) {
        r = b ? fy_jinja__get_item(x, a, b, n->line) : fy_jinja__fail_undef(x, n->line);
    }
    json_decref(a);
    json_decref(b);
    return r;
}

static json_t *eval_call(ctx *x, const node *n)
{
    args_t args;
    if (eval_args(x, n, &args)) {
        return NULL;
    }
    json_t *r = fy_jinja__call_function(x, n, &args);
    fy_jinja__free_args(&args);
    return r;
}

/* "NAME is [not] defined / undefined / callable" where NAME is a global
 * function no variable shadows: 1 or 0 for the test before n->neg, or -1
 * when that is not the case. In Jinja2 a global function is a variable like
 * any other, and templates probe for one before calling it: Llama 3.2's
 * writes today's date when "strftime_now is defined", which Hugging Face's
 * renderer makes true. Functions are not values here, so the three tests
 * that can see one are answered from the name. */
static int test_function_name(ctx *x, const node *n)
{
    if (n->kind != E_TEST || n->a->kind != E_NAME || lookup_var(x, n->a->name) ||
        !fy_jinja__find_function(n->a->name, strlen(n->a->name))) {
        return -1;
    }
    size_t ntests;
    const fy_jinja_test *tests = fy_jinja__tests(&ntests);
    if (n->op < 1 || (size_t)n->op > ntests) {
        return -1;
    }
    const char *name = tests[n->op - 1].name;
    if (strcmp(name, "defined") == 0 || strcmp(name, "callable") == 0) {
        return 1;
    }
    return strcmp(name, "undefined") == 0 ? 0 : -1;
}

/* E_METHOD, E_FILTER and E_TEST: n->a, then the arguments, then the builtin. */
static json_t *eval_applied(ctx *x, const node *n)
{
    int fn = test_function_name(x, n);
    if (fn >= 0) {
        return mkbool(n->neg ? !fn : fn);
    }
    args_t args;
    json_t *a = eval(x, n->a), *r = NULL;
    if (x->rc) {
        return NULL;
    }
    if (!eval_args(x, n, &args)) {
        if (n->kind == E_METHOD) {
            r = fy_jinja__call_method(x, n, a, &args);
        } else if (n->kind == E_FILTER) {
            r = fy_jinja__apply_filter(x, n->op, a, &args, n->line);
        } else {
            int t = fy_jinja__apply_test(x, n->op, a, &args, n->line);
            r = t < 0 ? NULL : mkbool(n->neg ? !t : t);
        }
        fy_jinja__free_args(&args);
    }
    json_decref(a);
    return r;
}

/* Unary - and +. */
static json_t *eval_sign(ctx *x, const node *n)
{
    json_t *a = eval(x, n->a), *r;
    if (x->rc) {
        return NULL;
    }
    if (!is_num(a)) {
        r = a ? fy_jinja__rfail(x, FY_EINVAL, n->line, "bad operand type for unary %c: '%s'",
                                n->kind == E_NEG ? '-' : '+', fy_jinja__type_name(a))
              : fy_jinja__fail_undef(x, n->line);
    } else if (n->kind == E_POS) {
        r = is_intlike(a) ? fy_jinja__checked_int(x, 1, ival(a), n->line) : json_incref(a);
    } else if (is_intlike(a)) {
        r = fy_jinja__checked_int(x, ival(a) != LLONG_MIN, -ival(a), n->line);
    } else {
        r = fy_jinja__mkreal(x, -json_real_value(a));
    }
    json_decref(a);
    return r;
}

static json_t *eval_not(ctx *x, const node *n)
{
    json_t *a = eval(x, n->a);
    json_t *r = x->rc ? NULL : mkbool(!fy_jinja__truthy(a));
    json_decref(a);
    return r;
}

/* and / or: Python's, returning the deciding operand. */
static json_t *eval_logic(ctx *x, const node *n)
{
    json_t *a = eval(x, n->a);
    if (x->rc) {
        return NULL;
    }
    if (fy_jinja__truthy(a) == (n->kind == E_OR)) {
        return a;
    }
    json_decref(a);
    return eval(x, n->b);
}

static json_t *eval_bin(ctx *x, const node *n)
{
    json_t *a = eval(x, n->a);
    json_t *b = x->rc ? NULL : eval(x, n->b);
    json_t *r = x->rc ? NULL : fy_jinja__binop(x, n->op, a, b, n->line);
    json_decref(a);
    json_decref(b);
    return r;
}

/* a < b < c is (a < b) and (b < c), each operand evaluated once. */
static json_t *eval_cmp(ctx *x, const node *n)
{
    int ok = 1;
    json_t *a = eval(x, n->args[0]), *b = NULL;
    for (size_t i = 1; !x->rc && ok && i < n->nargs; i++) {
        b = eval(x, n->args[i]);
        if (x->rc) {
            break;
        }
        int c = fy_jinja__compare(x, n->ops[i - 1], a, b, n->line);
        ok = c > 0;
        json_decref(a);
        a = b;
        b = NULL;
    }
    json_decref(a);
    json_decref(b);
    return x->rc ? NULL : mkbool(ok);
}

/* a if b else c (c may be absent: undefined). */
static json_t *eval_cond(ctx *x, const node *n)
{
    json_t *a = eval(x, n->b);
    if (x->rc) {
        return NULL;
    }
    json_t *r = fy_jinja__truthy(a) ? eval(x, n->a) : n->c ? eval(x, n->c) : NULL;
    json_decref(a);
    return r;
}

static json_t *eval_inner(ctx *x, const node *n)
{
    switch (n->kind) {
    case E_LIT:
        return json_incref(n->lit);
    case E_NAME:
        return eval_name(x, n);
    case E_LIST:
        return eval_list(x, n);
    case E_DICT:
        return eval_dict(x, n);
    case E_ATTR:
        return eval_attr(x, n);
    case E_ITEM:
        return eval_item(x, n);
    case E_SLICE:
        return eval_slice(x, n);
    case E_CALL:
        return eval_call(x, n);
    case E_METHOD:
    case E_FILTER:
    case E_TEST:
        return eval_applied(x, n);
    case E_NEG:
    case E_POS:
        return eval_sign(x, n);
    case E_NOT:
        return eval_not(x, n);
    case E_AND:
    case E_OR:
        return eval_logic(x, n);
    case E_BIN:
        return eval_bin(x, n);
    case E_CMP:
        return eval_cmp(x, n);
    case E_COND:
        return eval_cond(x, n);
    }
    return fy_jinja__rfail(x, FY_EINVAL, n->line, "unknown expression");
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
        fy_jinja__nomem(x);
        return -1;
    }
    return 0;
}

static int push_scope(ctx *x, int line)
{
    if (x->nscopes >= MAX_SCOPES) {
        fy_jinja__rfail(x, FY_ETOOBIG, line, "loops nest too deeply");
        return -1;
    }
    if (!(x->scopes[x->nscopes] = json_object())) {
        fy_jinja__nomem(x);
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
    json_t *l = item && (json_is_array(item) || json_is_string(item))
                    ? fy_jinja__to_list(x, item, n->line)
                    : NULL;
    if (!l || json_array_size(l) != 2) {
        json_decref(l);
        if (!x->rc) {
            fy_jinja__rfail(x, FY_EINVAL, n->line, "cannot unpack %s into two loop variables",
                            fy_jinja__type_name(item));
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
    if (fy_jinja__charge(x, 512, line)) {
        return NULL;
    }
    json_t *o = json_pack(
        "{sIsIsIsIsbsbsIsIsI}", "index", (json_int_t)(i + 1), "index0", (json_int_t)i, "revindex",
        (json_int_t)(len - i), "revindex0", (json_int_t)(len - i - 1), "first", i == 0, "last",
        i + 1 == len, "length", (json_int_t)len, "depth", (json_int_t)1, "depth0", (json_int_t)0);
    if (!o) {
        return fy_jinja__nomem(x);
    }
    if ((i > 0 && json_object_set(o, "previtem", json_array_get(items, i - 1))) ||
        (i + 1 < len && json_object_set(o, "nextitem", json_array_get(items, i + 1)))) {
        json_decref(o);
        return fy_jinja__nomem(x);
    }
    return o;
}

/* "for x in xs if cond": the items for which COND holds, filtered before
 * the loop runs so that loop.* counts kept items. Consumes ITEMS. */
static json_t *filter_loop_items(ctx *x, const node *n, json_t *items)
{
    json_t *kept = fy_jinja__mkarray(x, json_array_size(items), n->line);
    size_t i;
    json_t *e;
    json_array_foreach(items, i, e)
    {
        if (!kept || fy_jinja__step(x, n->line) || push_scope(x, n->line)) {
            break;
        }
        json_t *c = bind_targets(x, n, e) ? NULL : eval(x, n->b);
        int keep = !x->rc && fy_jinja__truthy(c);
        json_decref(c);
        pop_scope(x);
        if (x->rc || (keep && json_array_append(kept, e))) {
            break;
        }
    }
    json_decref(items);
    if (x->rc || !kept) {
        json_decref(kept);
        return x->rc ? NULL : fy_jinja__nomem(x);
    }
    return kept;
}

/* One pass of the loop body over item I of ITEMS (LEN of them), in its own
 * scope with the loop variables and "loop" bound. */
static void loop_pass(ctx *x, const node *n, json_t *items, size_t i, size_t len)
{
    json_t *loop = loop_object(x, items, i, len, n->line);
    if (loop && !bind_targets(x, n, json_array_get(items, i))) {
        if (!set_var(x, "loop", loop)) { /* set_var took the reference */
            exec_list(x, n->body);
        }
    } else {
        json_decref(loop);
    }
}

static int exec_for(ctx *x, const node *n)
{
    json_t *it = eval(x, n->a);
    if (x->rc) {
        return -1;
    }
    json_t *items = fy_jinja__to_list(x, it, n->line);
    json_decref(it);
    if (items && n->b) {
        items = filter_loop_items(x, n, items);
    }
    if (!items) {
        return -1;
    }
    size_t len = json_array_size(items);
    if (len == 0 && n->orelse) {
        json_decref(items);
        return exec_list(x, n->orelse);
    }
    for (size_t i = 0; i < len; i++) {
        if (fy_jinja__step(x, n->line) || push_scope(x, n->line)) {
            break;
        }
        loop_pass(x, n, items, i, len);
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
        v = x->rc ? NULL : fy_jinja__mkstr(x, b.data, b.len, n->line);
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
    if (!ns || !fy_jinja__is_namespace(x, ns)) {
        json_decref(v);
        fy_jinja__rfail(x, FY_EINVAL, n->line,
                        "cannot assign attribute '%s' on %s '%s': not a namespace", n->name2,
                        fy_jinja__type_name(ns), n->name);
        return -1;
    }
    if (v == ns) { /* jansson refuses an object inside itself */
        json_decref(v);
        fy_jinja__rfail(x, FY_EINVAL, n->line,
                        "cannot assign namespace '%s' to its own attribute '%s'", n->name,
                        n->name2);
        return -1;
    }
    if (json_object_set_new(ns, n->name2, v ? v : json_null())) {
        fy_jinja__nomem(x);
        return -1;
    }
    return 0;
}

static int exec_one(ctx *x, const node *n)
{
    if (fy_jinja__step(x, n->line)) {
        return -1;
    }
    switch (n->kind) {
    case S_TEXT:
        return fy_jinja__buf_put(x, x->out, n->str, n->len);
    case S_OUT: {
        json_t *v = eval(x, n->a);
        if (x->rc) {
            return -1;
        }
        int rc = fy_jinja__put_value(x, x->out, v, 0, 0);
        json_decref(v);
        return rc;
    }
    case S_IF: {
        json_t *c = eval(x, n->a);
        if (x->rc) {
            return -1;
        }
        int t = fy_jinja__truthy(c);
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
    fy_jinja__rfail(x, FY_EINVAL, n->line, "unknown statement");
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
        fy_jinja__rfail(&x, FY_EINVAL, 0, "template variables must be an object");
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
