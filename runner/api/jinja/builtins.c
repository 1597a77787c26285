/* builtins.c: the filters, tests, methods and global functions a template
 * can call, on values the evaluator has already computed. */
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

/* ------------------------------------------------------------------ lookup */

/* Binary search of a table sorted by name (strcmp order) whose entries, N
 * of them STRIDE bytes apart, each start with a const char *name: the index
 * + 1 of the entry named S[0..LEN), or 0. S need not be NUL-terminated. */
static int find_sorted(const void *table, size_t n, size_t stride, const char *s, size_t len)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *name = *(const char *const *)((const char *)table + mid * stride);
        size_t nl = strlen(name);
        int c = memcmp(name, s, nl < len ? nl : len);
        if (c == 0) {
            c = nl < len ? -1 : nl > len;
        }
        if (c == 0) {
            return (int)mid + 1;
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ strings */

/* Is code point CP one of the code points of CHARS (NULL: whitespace)? */
static int in_charset(int32_t cp, const json_t *chars)
{
    if (!chars) {
        return fy_jinja__is_space_cp(cp);
    }
    const char *s = S(chars);
    size_t n = SL(chars);
    for (size_t i = 0; i < n;) {
        int32_t c;
        i += fy_jinja__u8_next(s, n, i, &c);
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
            size_t k = fy_jinja__u8_next(s, n, a, &cp);
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
            fy_jinja__u8_next(s, n, p, &cp);
            if (!in_charset(cp, chars)) {
                break;
            }
            b = p;
        }
    }
    return fy_jinja__mkstr(x, s + a, b - a, line);
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
        size_t k = fy_jinja__u8_next(s, n, i, &cp);
        if (cp < 0) {
            if (fy_jinja__buf_put(x, &b, s + i, k)) {
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
            prev_cased = fy_jinja__is_cased(cp);
            break;
        case CASE_JTITLE: {
            /* Jinja's title filter: words begin after whitespace - ( { [ <. */
            int sep = fy_jinja__is_space_cp(cp) || cp == '-' || cp == '(' || cp == '{' ||
                      cp == '[' || cp == '<';
            o = sep ? cp : word_start ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            word_start = sep;
            break;
        }
        case CASE_CAPITALIZE:
            o = i == 0 ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
            break;
        }
        char enc[8];
        if (fy_jinja__buf_put(x, &b, enc, utf8_put(enc, o))) {
            goto fail;
        }
        i += k;
    }
    json_t *r = fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
fail:
    fy_buf_free(&b);
    return NULL;
}

/* The first byte at or after I of S[0..N) that does not start a space. */
static size_t skip_spaces(const char *s, size_t n, size_t i)
{
    while (i < n) {
        int32_t cp;
        size_t k = fy_jinja__u8_next(s, n, i, &cp);
        if (!fy_jinja__is_space_cp(cp)) {
            break;
        }
        i += k;
    }
    return i;
}

/* The first byte at or after I of S[0..N) that starts a space, or N. */
static size_t word_end(const char *s, size_t n, size_t i)
{
    while (i < n) {
        int32_t cp;
        size_t k = fy_jinja__u8_next(s, n, i, &cp);
        if (fy_jinja__is_space_cp(cp)) {
            break;
        }
        i += k;
    }
    return i;
}

/* The end of S[I..N) once trailing spaces are dropped. */
static size_t trim_end(const char *s, size_t n, size_t i)
{
    size_t j = n;
    while (j > i) {
        size_t p = j - 1;
        while (p > i && ((unsigned char)s[p] & 0xC0) == 0x80) {
            p--;
        }
        int32_t cp;
        fy_jinja__u8_next(s, n, p, &cp);
        if (!fy_jinja__is_space_cp(cp)) {
            break;
        }
        j = p;
    }
    return j;
}

/* Appends S[I..J) to the list L: 0, or -1 with x->rc set. */
static int push_piece(ctx *x, json_t *l, const char *s, size_t i, size_t j, int line)
{
    if (fy_jinja__charge(x, 16, line) ||
        fy_jinja__append_owned(x, l, fy_jinja__mkstr(x, s + i, j - i, line)) || x->rc) {
        return -1;
    }
    return 0;
}

/* str.split() without a separator into L: runs of whitespace separate, and
 * leading and trailing ones are dropped. */
static int split_spaces(ctx *x, json_t *l, const char *s, size_t n, long long maxsplit, int line)
{
    for (long long splits = 0;; splits++) {
        size_t i = skip_spaces(s, n, 0);
        if (i >= n) {
            return 0;
        }
        size_t j = maxsplit >= 0 && splits >= maxsplit ? trim_end(s, n, i) : word_end(s, n, i);
        if (push_piece(x, l, s, i, j, line)) {
            return -1;
        }
        s += j;
        n -= j;
    }
}

/* str.split(SEP) into L. */
static int split_sep(ctx *x, json_t *l, const char *s, size_t n, const json_t *sep,
                     long long maxsplit, int line)
{
    size_t i = 0;
    for (long long splits = 0;; splits++) {
        const char *hit = NULL;
        if (maxsplit < 0 || splits < maxsplit) {
            hit = memmem(s + i, n - i, S(sep), SL(sep));
        }
        size_t j = hit ? (size_t)(hit - s) : n;
        if (push_piece(x, l, s, i, j, line)) {
            return -1;
        }
        if (!hit) {
            return 0;
        }
        i = j + SL(sep);
    }
}

static json_t *str_split(ctx *x, const json_t *v, const json_t *sep, long long maxsplit, int line)
{
    json_t *l = fy_jinja__mkarray(x, 0, line);
    if (!l) {
        return NULL;
    }
    if (sep && SL(sep) == 0) {
        json_decref(l);
        return fy_jinja__rfail(x, FY_EINVAL, line, "empty separator");
    }
    if (sep ? split_sep(x, l, S(v), SL(v), sep, maxsplit, line)
            : split_spaces(x, l, S(v), SL(v), maxsplit, line)) {
        json_decref(l);
        return NULL;
    }
    return l;
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
            if ((count < 0 || done < count) && fy_jinja__buf_put(x, &b, S(new_), SL(new_))) {
                goto fail;
            }
            done++;
            if (i >= n) {
                break;
            }
            int32_t cp;
            size_t k = fy_jinja__u8_next(s, n, i, &cp);
            if (fy_jinja__buf_put(x, &b, s + i, k)) {
                goto fail;
            }
            i += k;
        }
    } else {
        while (i <= n) {
            const char *hit =
                count < 0 || done < count ? memmem(s + i, n - i, S(old), SL(old)) : NULL;
            size_t j = hit ? (size_t)(hit - s) : n;
            if (fy_jinja__buf_put(x, &b, s + i, j - i)) {
                goto fail;
            }
            if (!hit) {
                break;
            }
            if (fy_jinja__buf_put(x, &b, S(new_), SL(new_))) {
                goto fail;
            }
            done++;
            i = j + SL(old);
        }
    }
    json_t *r = fy_jinja__mkstr(x, b.data, b.len, line);
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
        return fy_jinja__rfail(x, FY_EINVAL, line,
                               "%s first arg must be str or a tuple of str, not %s",
                               end ? "endswith" : "startswith", fy_jinja__type_name(what));
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
    json_t *l = fy_jinja__to_list(x, items, line);
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
            e = fy_jinja__get_attr(e, attr, strlen(attr));
        }
        if (strict && !is_str(e)) {
            fy_jinja__rfail(x, FY_EINVAL, line,
                            "sequence item %zu: expected str instance, %s found", i,
                            fy_jinja__type_name(e));
            goto out;
        }
        if ((i && fy_jinja__buf_put(x, &b, S(sep), SL(sep))) ||
            fy_jinja__put_value(x, &b, e, 0, 0)) {
            goto out;
        }
    }
    r = fy_jinja__mkstr(x, b.data, b.len, line);
out:
    fy_buf_free(&b);
    json_decref(l);
    return r;
}

/* ------------------------------------------------------------------ methods and functions */

static json_t *dict_items(ctx *x, const json_t *d, int line)
{
    json_t *l = fy_jinja__mkarray(x, json_object_size(d), line);
    const char *k;
    json_t *e;
    if (!l) {
        return NULL;
    }
    json_object_foreach((json_t *)d, k, e)
    {
        json_t *pair = json_array();
        if (!pair || fy_jinja__append_owned(x, pair, fy_jinja__mkstr(x, k, strlen(k), line)) ||
            json_array_append(pair, e) || fy_jinja__append_owned(x, l, pair)) {
            json_decref(l);
            return x->rc ? NULL : fy_jinja__nomem(x);
        }
    }
    return l;
}

/* ------------------------------------------------------------------ methods
 * Each is (ctx, object, arguments, line) -> a new value, or NULL with x->rc
 * set; the table says which type of object has it. */

static json_t *m_items(ctx *x, const json_t *obj, args_t *a, int line)
{
    return dict_items(x, obj, line);
}

static json_t *m_keys(ctx *x, const json_t *obj, args_t *a, int line)
{
    return fy_jinja__to_list(x, obj, line);
}

static json_t *m_values(ctx *x, const json_t *obj, args_t *a, int line)
{
    json_t *l = fy_jinja__mkarray(x, json_object_size(obj), line);
    const char *k;
    json_t *e;
    json_object_foreach((json_t *)obj, k, e)
    {
        (void)k;
        if (l && json_array_append(l, e)) {
            json_decref(l);
            return fy_jinja__nomem(x);
        }
    }
    return l;
}

static json_t *m_get(ctx *x, const json_t *obj, args_t *a, int line)
{
    int present;
    json_t *key = fy_jinja__arg(a, 0, NULL, &present), *def = fy_jinja__arg(a, 1, NULL, &present);
    json_t *v = is_str(key) ? json_object_getn(obj, S(key), SL(key)) : NULL;
    if (v) {
        return json_incref(v);
    }
    return present ? json_incref(def) : json_null();
}

/* strip, lstrip and rstrip (WHICH: 3, 1, 2) with optional characters. */
static json_t *strip_method(ctx *x, const json_t *obj, args_t *a, int which, const char *name,
                            int line)
{
    const json_t *chars;
    if (fy_jinja__arg_str(x, a, 0, NULL, &chars, name, line)) {
        return NULL;
    }
    return str_strip(x, obj, chars, which, line);
}

static json_t *m_strip(ctx *x, const json_t *obj, args_t *a, int line)
{
    return strip_method(x, obj, a, 3, "strip", line);
}

static json_t *m_lstrip(ctx *x, const json_t *obj, args_t *a, int line)
{
    return strip_method(x, obj, a, 1, "lstrip", line);
}

static json_t *m_rstrip(ctx *x, const json_t *obj, args_t *a, int line)
{
    return strip_method(x, obj, a, 2, "rstrip", line);
}

static json_t *m_upper(ctx *x, const json_t *obj, args_t *a, int line)
{
    return str_case(x, obj, CASE_UPPER, line);
}

static json_t *m_lower(ctx *x, const json_t *obj, args_t *a, int line)
{
    return str_case(x, obj, CASE_LOWER, line);
}

static json_t *m_title(ctx *x, const json_t *obj, args_t *a, int line)
{
    return str_case(x, obj, CASE_PYTITLE, line);
}

static json_t *m_capitalize(ctx *x, const json_t *obj, args_t *a, int line)
{
    return str_case(x, obj, CASE_CAPITALIZE, line);
}

static json_t *m_startswith(ctx *x, const json_t *obj, args_t *a, int line)
{
    int present;
    return str_affix(x, obj, fy_jinja__arg(a, 0, NULL, &present), 0, line);
}

static json_t *m_endswith(ctx *x, const json_t *obj, args_t *a, int line)
{
    int present;
    return str_affix(x, obj, fy_jinja__arg(a, 0, NULL, &present), 1, line);
}

static json_t *m_split(ctx *x, const json_t *obj, args_t *a, int line)
{
    const json_t *sep;
    long long maxsplit;
    if (fy_jinja__arg_str(x, a, 0, "sep", &sep, "split", line) ||
        fy_jinja__arg_int(x, a, 1, "maxsplit", -1, &maxsplit, "split", line)) {
        return NULL;
    }
    return str_split(x, obj, sep, maxsplit, line);
}

static json_t *m_replace(ctx *x, const json_t *obj, args_t *a, int line)
{
    const json_t *s1, *s2;
    long long count;
    if (fy_jinja__arg_str(x, a, 0, NULL, &s1, "replace", line) ||
        fy_jinja__arg_str(x, a, 1, NULL, &s2, "replace", line) ||
        fy_jinja__arg_int(x, a, 2, "count", -1, &count, "replace", line)) {
        return NULL;
    }
    if (!s1 || !s2) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "replace expects two string arguments");
    }
    return str_replace(x, obj, s1, s2, count, line);
}

/* The string argument find and count (NAME) need: 0, or -1 (recorded). */
static int needle_arg(ctx *x, args_t *a, const char *name, const json_t **out, int line)
{
    if (fy_jinja__arg_str(x, a, 0, NULL, out, name, line)) {
        return -1;
    }
    if (!*out) {
        fy_jinja__rfail(x, FY_EINVAL, line, "%s expects a string argument", name);
        return -1;
    }
    return 0;
}

static json_t *m_find(ctx *x, const json_t *obj, args_t *a, int line)
{
    const json_t *s1;
    if (needle_arg(x, a, "find", &s1, line)) {
        return NULL;
    }
    const char *hit = memmem(S(obj), SL(obj), S(s1), SL(s1));
    long long at = hit ? (long long)fy_jinja__u8_len(S(obj), (size_t)(hit - S(obj))) : -1;
    return fy_jinja__checked_int(x, 1, at, line);
}

static json_t *m_count(ctx *x, const json_t *obj, args_t *a, int line)
{
    const json_t *s1;
    if (needle_arg(x, a, "count", &s1, line)) {
        return NULL;
    }
    if (SL(s1) == 0) {
        return fy_jinja__checked_int(x, 1, (long long)fy_jinja__u8_len(S(obj), SL(obj)) + 1, line);
    }
    long long cnt = 0;
    for (const char *p = S(obj), *e = S(obj) + SL(obj);
         (p = memmem(p, (size_t)(e - p), S(s1), SL(s1))); p += SL(s1)) {
        cnt++;
    }
    return fy_jinja__checked_int(x, 1, cnt, line);
}

static json_t *m_join(ctx *x, const json_t *obj, args_t *a, int line)
{
    int present;
    return str_join(x, obj, fy_jinja__arg(a, 0, NULL, &present), NULL, 1, line);
}

/* A method: its name, the type of object that has it, and what it does. */
typedef struct {
    const char *name;
    json_type on;
    json_t *(*fn)(ctx *x, const json_t *obj, args_t *a, int line);
} method;

/* Sorted by name (strcmp order), for fy_jinja__find_method. */
static const method methods[] = {
    {"capitalize", JSON_STRING, m_capitalize},
    {"count", JSON_STRING, m_count},
    {"endswith", JSON_STRING, m_endswith},
    {"find", JSON_STRING, m_find},
    {"get", JSON_OBJECT, m_get},
    {"items", JSON_OBJECT, m_items},
    {"join", JSON_STRING, m_join},
    {"keys", JSON_OBJECT, m_keys},
    {"lower", JSON_STRING, m_lower},
    {"lstrip", JSON_STRING, m_lstrip},
    {"replace", JSON_STRING, m_replace},
    {"rstrip", JSON_STRING, m_rstrip},
    {"split", JSON_STRING, m_split},
    {"startswith", JSON_STRING, m_startswith},
    {"strip", JSON_STRING, m_strip},
    {"title", JSON_STRING, m_title},
    {"upper", JSON_STRING, m_upper},
    {"values", JSON_OBJECT, m_values},
};

int fy_jinja__find_method(const char *s, size_t len)
{
    return find_sorted(methods, NELEM(methods), sizeof methods[0], s, len);
}

json_t *fy_jinja__call_method(ctx *x, const node *n, const json_t *obj, args_t *a)
{
    if (!obj) {
        return fy_jinja__fail_undef(x, n->line);
    }
    if (n->op >= 1 && (size_t)n->op <= NELEM(methods) &&
        json_typeof(obj) == methods[n->op - 1].on) {
        return methods[n->op - 1].fn(x, obj, a, n->line);
    }
    return fy_jinja__rfail(x, FY_EINVAL, n->line, "'%s' object has no attribute '%s'",
                           fy_jinja__type_name(obj), n->name);
}

/* ------------------------------------------------------------------ global functions */

static json_t *fn_range(ctx *x, args_t *a, int line)
{
    long long v[3] = {0, 0, 1};
    size_t np = fy_jinja__npositional(a);
    if (np < 1 || np > 3) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "range expects 1 to 3 integer arguments");
    }
    for (size_t i = 0; i < np; i++) {
        if (fy_jinja__arg_int(x, a, i, NULL, 0, &v[np == 1 ? 1 : i], "range", line)) {
            return NULL;
        }
    }
    if (v[2] == 0) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "range() arg 3 must not be zero");
    }
    long double span = (long double)v[1] - (long double)v[0];
    long double cnt = span / (long double)v[2];
    size_t count = cnt > 0 ? (size_t)ceill(cnt) : 0;
    json_t *l = fy_jinja__mkarray(x, count, line);
    for (size_t i = 0; l && i < count; i++) {
        if (fy_jinja__append_owned(x, l, json_integer(v[0] + (long long)i * v[2]))) {
            json_decref(l);
            return NULL;
        }
    }
    return l;
}

/* dict() and namespace() (NAME): a dict of the keyword arguments, merged
 * over any dicts given positionally. */
static json_t *make_dict(ctx *x, args_t *a, const char *name, int line)
{
    json_t *o = json_object();
    if (!o || fy_jinja__charge(x, 64, line)) {
        json_decref(o);
        return o ? NULL : fy_jinja__nomem(x);
    }
    for (size_t i = 0; i < a->n; i++) {
        if (!a->kw[i]) {
            if (a->v[i] && json_is_object(a->v[i]) && !json_object_update(o, a->v[i])) {
                continue;
            }
            json_decref(o);
            return fy_jinja__rfail(x, FY_EINVAL, line, "%s() takes keyword arguments or a dict",
                                   name);
        }
        if (json_object_set(o, a->kw[i], a->v[i] ? a->v[i] : json_null())) {
            json_decref(o);
            return fy_jinja__nomem(x);
        }
    }
    return o;
}

static json_t *fn_dict(ctx *x, args_t *a, int line)
{
    return make_dict(x, a, "dict", line);
}

/* A namespace is a dict remembered in x->namespaces, so set ns.attr can
 * tell it from a plain one. */
static json_t *fn_namespace(ctx *x, args_t *a, int line)
{
    json_t *o = make_dict(x, a, "namespace", line);
    if (o && json_array_append(x->namespaces, o)) {
        json_decref(o);
        return fy_jinja__nomem(x);
    }
    return o;
}

static json_t *fn_raise(ctx *x, args_t *a, int line)
{
    int present;
    json_t *s = fy_jinja__to_str(x, fy_jinja__arg(a, 0, NULL, &present), line);
    if (!s) {
        return NULL;
    }
    fy_jinja__rfail(x, FY_EINVAL, 0, FY_JINJA_RAISED_PREFIX "%s", S(s));
    json_decref(s);
    return NULL;
}

static json_t *fn_strftime(ctx *x, args_t *a, int line)
{
    const json_t *f;
    if (fy_jinja__arg_str(x, a, 0, NULL, &f, "strftime_now", line)) {
        return NULL;
    }
    if (!f) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "strftime_now expects a format string");
    }
    char out[256];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    size_t k = SL(f) < 128 ? strftime(out, sizeof out, S(f), &tm) : 0;
    return fy_jinja__mkstr(x, out, k, line);
}

typedef struct {
    const char *name;
    json_t *(*fn)(ctx *x, args_t *a, int line);
} function;

/* Sorted by name (strcmp order), for fy_jinja__find_function. */
static const function functions[] = {
    {"dict", fn_dict},   {"namespace", fn_namespace},   {"raise_exception", fn_raise},
    {"range", fn_range}, {"strftime_now", fn_strftime},
};

int fy_jinja__find_function(const char *s, size_t len)
{
    return find_sorted(functions, NELEM(functions), sizeof functions[0], s, len);
}

json_t *fy_jinja__call_function(ctx *x, const node *n, args_t *a)
{
    if (n->op < 1 || (size_t)n->op > NELEM(functions)) {
        return fy_jinja__rfail(x, FY_EINVAL, n->line, "unknown function");
    }
    return functions[n->op - 1].fn(x, a, n->line);
}

/* ------------------------------------------------------------------ the tests
 * Each is (ctx, value, arguments, line) -> 1 or 0, or -1 with x->rc set. V is
 * NULL for an undefined value; the tests' one argument is positional. */

static json_t *test_arg(args_t *a)
{
    int present;
    return fy_jinja__arg(a, 0, NULL, &present);
}

static int t_defined(ctx *x, const json_t *v, args_t *a, int line)
{
    return v != NULL;
}

static int t_undefined(ctx *x, const json_t *v, args_t *a, int line)
{
    return v == NULL;
}

static int t_none(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_null(v);
}

static int t_string(ctx *x, const json_t *v, args_t *a, int line)
{
    return is_str(v);
}

static int t_number(ctx *x, const json_t *v, args_t *a, int line)
{
    return is_num(v);
}

static int t_integer(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_integer(v);
}

static int t_float(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_real(v);
}

static int t_boolean(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_boolean(v);
}

static int t_mapping(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_object(v);
}

/* sequence and iterable: what a for loop can walk. */
static int t_iterable(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && (json_is_array(v) || json_is_string(v) || json_is_object(v));
}

static int t_true(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_true(v);
}

static int t_false(ctx *x, const json_t *v, args_t *a, int line)
{
    return v && json_is_false(v);
}

static int t_callable(ctx *x, const json_t *v, args_t *a, int line)
{
    return 0;
}

/* lower and upper: a string its own lower or upper case. */
static int case_test(ctx *x, const json_t *v, int mode, int line)
{
    if (!is_str(v)) {
        return 0;
    }
    json_t *c = str_case(x, v, mode, line);
    int r = c && fy_jinja__values_eq(c, v, 0);
    json_decref(c);
    return x->rc ? -1 : r;
}

static int t_lower(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_test(x, v, CASE_LOWER, line);
}

static int t_upper(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_test(x, v, CASE_UPPER, line);
}

/* The integer value the test NAME needs: 0, or -1 (recorded) when V has none. */
static int int_operand(ctx *x, const json_t *v, const char *name, int line)
{
    if (!is_intlike(v)) {
        fy_jinja__rfail(x, FY_EINVAL, line, "test '%s' needs an integer, got %s", name,
                        fy_jinja__type_name(v));
        return -1;
    }
    return 0;
}

static int t_odd(ctx *x, const json_t *v, args_t *a, int line)
{
    return int_operand(x, v, "odd", line) ? -1 : ival(v) % 2 != 0;
}

static int t_even(ctx *x, const json_t *v, args_t *a, int line)
{
    return int_operand(x, v, "even", line) ? -1 : ival(v) % 2 == 0;
}

static int t_divisibleby(ctx *x, const json_t *v, args_t *a, int line)
{
    json_t *o = test_arg(a);
    if (int_operand(x, v, "divisibleby", line)) {
        return -1;
    }
    if (!is_intlike(o) || ival(o) == 0) {
        fy_jinja__rfail(x, FY_EINVAL, line, "divisibleby needs a nonzero integer argument");
        return -1;
    }
    return ival(o) == -1 || ival(v) % ival(o) == 0;
}

static int t_sameas(ctx *x, const json_t *v, args_t *a, int line)
{
    json_t *o = test_arg(a);
    if (v && o && (json_is_null(v) || json_is_boolean(v))) {
        return json_typeof(v) == json_typeof(o);
    }
    return v == o;
}

static int t_eq(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_EQ, v, test_arg(a), line);
}

static int t_ne(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_NE, v, test_arg(a), line);
}

static int t_lt(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_LT, v, test_arg(a), line);
}

static int t_le(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_LE, v, test_arg(a), line);
}

static int t_gt(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_GT, v, test_arg(a), line);
}

static int t_ge(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__compare(x, CMP_GE, v, test_arg(a), line);
}

static int t_in(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__contains(x, v, test_arg(a), line);
}

/* Sorted by name (strcmp order: the operator spellings come first), for
 * fy_jinja__find_test's binary search; several names alias one test. */
static const fy_jinja_test tests[] = {
    {"!=", t_ne},
    {"<", t_lt},
    {"<=", t_le},
    {"==", t_eq},
    {">", t_gt},
    {">=", t_ge},
    {"boolean", t_boolean},
    {"callable", t_callable},
    {"defined", t_defined},
    {"divisibleby", t_divisibleby},
    {"eq", t_eq},
    {"equalto", t_eq},
    {"even", t_even},
    {"false", t_false},
    {"float", t_float},
    {"ge", t_ge},
    {"greaterthan", t_gt},
    {"gt", t_gt},
    {"in", t_in},
    {"integer", t_integer},
    {"iterable", t_iterable},
    {"le", t_le},
    {"lessthan", t_lt},
    {"lower", t_lower},
    {"lt", t_lt},
    {"mapping", t_mapping},
    {"ne", t_ne},
    {"none", t_none},
    {"number", t_number},
    {"odd", t_odd},
    {"sameas", t_sameas},
    {"sequence", t_iterable},
    {"string", t_string},
    {"true", t_true},
    {"undefined", t_undefined},
    {"upper", t_upper},
};

const fy_jinja_test *fy_jinja__tests(size_t *n)
{
    *n = NELEM(tests);
    return tests;
}

int fy_jinja__find_test(const char *s, size_t len)
{
    return find_sorted(tests, NELEM(tests), sizeof tests[0], s, len);
}

int fy_jinja__apply_test(ctx *x, int id, const json_t *v, args_t *a, int line)
{
    if (id < 1 || (size_t)id > NELEM(tests)) {
        fy_jinja__rfail(x, FY_EINVAL, line, "unknown test");
        return -1;
    }
    return tests[id - 1].fn(x, v, a, line);
}

/* ------------------------------------------------------------------ filters over items */

/* What filter_each does with each item. */
enum { EACH_SELECT, EACH_REJECT, EACH_SELECTATTR, EACH_REJECTATTR, EACH_MAP };

static const char *const each_names[] = {"select", "reject", "selectattr", "rejectattr", "map"};

/* The plan of one filter_each call, read from its arguments. */
typedef struct {
    const char *attr; /* the attribute looked at, or NULL for the item */
    int fid, tid;     /* map's filter, select's test (0: none) */
    args_t rest;      /* the arguments left for that filter or test */
} each_plan;

/* map(attribute=...) or map('filter', args...). */
static int plan_map(ctx *x, args_t *a, each_plan *p, int line)
{
    int present;
    json_t *at = fy_jinja__arg(a, 0, "attribute", &present);
    if (present && is_str(at) && !(a->n && !a->kw[0])) {
        p->attr = S(at);
        return 0;
    }
    json_t *fname = fy_jinja__arg(a, 0, NULL, &present);
    if (!is_str(fname) || !(p->fid = fy_jinja__find_filter(S(fname), SL(fname)))) {
        fy_jinja__rfail(x, FY_EINVAL, line, "map needs attribute= or a supported filter name");
        return -1;
    }
    p->rest.skip = a->skip + 1;
    return 0;
}

/* select('test', args...), selectattr('attr', 'test', args...) and the rejects. */
static int plan_select(ctx *x, int mode, args_t *a, each_plan *p, int line)
{
    int present;
    size_t ti = 0;
    if (mode == EACH_SELECTATTR || mode == EACH_REJECTATTR) {
        json_t *at = fy_jinja__arg(a, 0, NULL, &present);
        if (!is_str(at)) {
            fy_jinja__rfail(x, FY_EINVAL, line, "%s needs an attribute name", each_names[mode]);
            return -1;
        }
        p->attr = S(at);
        ti = 1;
    }
    json_t *tname = fy_jinja__arg(a, ti, NULL, &present);
    if (present && (!is_str(tname) || !(p->tid = fy_jinja__find_test(S(tname), SL(tname))))) {
        fy_jinja__rfail(x, FY_EINVAL, line, "unsupported test '%s'",
                        is_str(tname) ? S(tname) : "?");
        return -1;
    }
    p->rest.skip = a->skip + ti + 1;
    return 0;
}

/* Adds item E (its value VAL) of filter_each to RES: 0, or -1 with x->rc set. */
static int each_item(ctx *x, int mode, each_plan *p, json_t *res, json_t *e, int line)
{
    json_t *val = p->attr ? fy_jinja__get_attr(e, p->attr, strlen(p->attr)) : e;
    if (mode == EACH_MAP) {
        json_t *m =
            p->fid ? fy_jinja__apply_filter(x, p->fid, val, &p->rest, line) : json_incref(val);
        if (x->rc || fy_jinja__append_owned(x, res, m)) {
            json_decref(m);
            return -1;
        }
        return 0;
    }
    int t = p->tid ? fy_jinja__apply_test(x, p->tid, val, &p->rest, line) : fy_jinja__truthy(val);
    if (t < 0) {
        return -1;
    }
    int keep_when = mode == EACH_SELECT || mode == EACH_SELECTATTR;
    if (t == keep_when && json_array_append(res, e)) {
        fy_jinja__nomem(x);
        return -1;
    }
    return 0;
}

/* select / reject / selectattr / rejectattr / map over V. */
static json_t *filter_each(ctx *x, int mode, const json_t *v, args_t *a, int line)
{
    json_t *l = fy_jinja__to_list(x, v, line), *res = NULL;
    if (!l) {
        return NULL;
    }
    each_plan p = {.rest = *a};
    if ((mode == EACH_MAP ? plan_map(x, a, &p, line) : plan_select(x, mode, a, &p, line)) ||
        !(res = fy_jinja__mkarray(x, json_array_size(l), line))) {
        goto out;
    }
    size_t i;
    json_t *e;
    json_array_foreach(l, i, e)
    {
        if (fy_jinja__step(x, line) || each_item(x, mode, &p, res, e, line)) {
            json_decref(res);
            res = NULL;
            break;
        }
    }
out:
    json_decref(l);
    return res;
}

/* Python's int(): an int, a truncated float, or a parsed string; else DEF. */
static json_t *to_int(ctx *x, const json_t *v, long long def, int line)
{
    if (is_intlike(v)) {
        return fy_jinja__checked_int(x, 1, ival(v), line);
    }
    if (v && json_is_real(v)) {
        double d = json_real_value(v);
        return fy_jinja__checked_int(x, 1, isfinite(d) && fabs(d) < 9.2e18 ? (long long)d : def,
                                     line);
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
            return fy_jinja__checked_int(x, 1, i, line);
        }
        double d = strtod(buf, &end);
        while (*end && is_ws(*end)) {
            end++;
        }
        if (end != buf && !*end && isfinite(d) && fabs(d) < 9.2e18) {
            return fy_jinja__checked_int(x, 1, (long long)d, line);
        }
    }
    return fy_jinja__checked_int(x, 1, def, line);
}

static json_t *to_float(ctx *x, const json_t *v, double def)
{
    if (is_num(v)) {
        return fy_jinja__mkreal(x, dval(v));
    }
    if (is_str(v) && SL(v) < 64) {
        char buf[64], *end;
        memcpy(buf, S(v), SL(v));
        buf[SL(v)] = 0;
        double d = strtod(buf, &end);
        if (end != buf && !*end) {
            return fy_jinja__mkreal(x, d);
        }
    }
    return fy_jinja__mkreal(x, def);
}

static json_t *sort_list(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *l = fy_jinja__to_list(x, v, line);
    if (!l) {
        return NULL;
    }
    int rev = fy_jinja__arg_bool(a, 0, "reverse"), cs = fy_jinja__arg_bool(a, 1, "case_sensitive");
    json_t *at = fy_jinja__arg(a, 2, "attribute", &present);
    const char *attr = is_str(at) ? S(at) : NULL;
    size_t n = json_array_size(l);
    json_t *r = fy_jinja__mkarray(x, n, line), *keys = fy_jinja__mkarray(x, n, line);
    if (!r || !keys || fy_jinja__charge(x, n * n / 4 + 1, line)) {
        goto fail;
    }
    /* Insertion sort (stable) on keys lowercased unless case_sensitive; the
     * charge above bounds its quadratic cost. */
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(l, i);
        json_t *k = attr ? fy_jinja__get_attr(e, attr, strlen(attr)) : e;
        k = is_str(k) && !cs ? str_case(x, k, CASE_LOWER, line) : json_incref(k);
        if (x->rc) {
            goto fail;
        }
        size_t pos = i;
        while (pos > 0) {
            int c;
            if (fy_jinja__values_order(json_array_get(keys, pos - 1), k, &c, 0)) {
                /* The message names K's type, so K is released after it. */
                fy_jinja__rfail(
                    x, FY_EINVAL, line, "sort: values of types '%s' and '%s' cannot be ordered",
                    fy_jinja__type_name(json_array_get(keys, pos - 1)), fy_jinja__type_name(k));
                json_decref(k);
                goto fail;
            }
            if (rev ? c >= 0 : c <= 0) {
                break;
            }
            pos--;
        }
        if (json_array_insert_new(keys, pos, k ? k : json_null()) || json_array_insert(r, pos, e)) {
            fy_jinja__nomem(x);
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
            if (fy_jinja__buf_put(x, &b, " ", 1)) {
                goto fail;
            }
        }
        if (fy_jinja__buf_put(x, &b, p, len) || (nl && fy_jinja__buf_put(x, &b, "\n", 1))) {
            goto fail;
        }
        at_start = 0;
        if (!nl) {
            break;
        }
        p = nl + 1;
    }
    (void)at_start;
    json_t *r = fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
fail:
    fy_buf_free(&b);
    return NULL;
}

static json_t *minmax(ctx *x, const json_t *v, int want_max, int line)
{
    json_t *l = fy_jinja__to_list(x, v, line), *best = NULL;
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
        if (fy_jinja__values_order(e, best, &c, 0)) {
            json_decref(l);
            return fy_jinja__rfail(x, FY_EINVAL, line,
                                   "values of types '%s' and '%s' cannot be ordered",
                                   fy_jinja__type_name(e), fy_jinja__type_name(best));
        }
        if (want_max ? c > 0 : c < 0) {
            best = e;
        }
    }
    json_incref(best);
    json_decref(l);
    return best;
}

/* ------------------------------------------------------------------ the filters
 * Each is (ctx, value, arguments, line) -> a new value, or NULL with x->rc
 * set (a NULL without x->rc is an undefined result, as first of []). */

static json_t *f_safe(ctx *x, const json_t *v, args_t *a, int line)
{
    return json_incref((json_t *)v);
}

static json_t *f_default(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *d = fy_jinja__arg(a, 0, "default_value", &present);
    if (!v || (fy_jinja__arg_bool(a, 1, "boolean") && !fy_jinja__truthy(v))) {
        return present ? json_incref(d) : fy_jinja__mkstr(x, "", 0, line);
    }
    return json_incref((json_t *)v);
}

static json_t *f_string(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__to_str(x, v, line);
}

static json_t *f_length(ctx *x, const json_t *v, args_t *a, int line)
{
    if (!v) {
        return fy_jinja__checked_int(x, 1, 0, line);
    }
    if (json_is_string(v)) {
        return fy_jinja__checked_int(x, 1, (long long)fy_jinja__u8_len(S(v), SL(v)), line);
    }
    if (json_is_array(v) || json_is_object(v)) {
        return fy_jinja__checked_int(
            x, 1, (long long)(json_is_array(v) ? json_array_size(v) : json_object_size(v)), line);
    }
    return fy_jinja__rfail(x, FY_EINVAL, line, "object of type '%s' has no len()",
                           fy_jinja__type_name(v));
}

static json_t *f_tojson(ctx *x, const json_t *v, args_t *a, int line)
{
    long long ind;
    if (fy_jinja__arg_int(x, a, 0, "indent", -1, &ind, "tojson", line)) {
        return NULL;
    }
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    int indent = ind < 0 ? -1 : ind > 64 ? 64 : (int)ind;
    json_t *r =
        fy_jinja__put_json(x, &b, v, indent, 0, 0) ? NULL : fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    if (!r && x->err && !strstr(x->err, "(template line")) {
        size_t l = strlen(x->err);
        snprintf(x->err + l, x->errlen - l, " (template line %d)", line);
    }
    return r;
}

/* first and last: a string's first or last character, a sequence's item. */
static json_t *first_last(ctx *x, const json_t *v, int last, int line)
{
    json_t *r;
    if (v && json_is_string(v)) {
        json_t *idx = json_integer(last ? -1 : 0);
        r = idx ? fy_jinja__get_item(x, v, idx, line) : fy_jinja__nomem(x);
        json_decref(idx);
        return r;
    }
    json_t *tmp = fy_jinja__to_list(x, v, line);
    if (!tmp) {
        return NULL;
    }
    size_t n = json_array_size(tmp);
    r = n ? json_incref(json_array_get(tmp, last ? n - 1 : 0)) : NULL;
    json_decref(tmp);
    return r;
}

static json_t *f_first(ctx *x, const json_t *v, args_t *a, int line)
{
    return first_last(x, v, 0, line);
}

static json_t *f_last(ctx *x, const json_t *v, args_t *a, int line)
{
    return first_last(x, v, 1, line);
}

static json_t *f_list(ctx *x, const json_t *v, args_t *a, int line)
{
    return fy_jinja__to_list(x, v, line);
}

static json_t *f_join(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    const json_t *s1;
    json_t *at = fy_jinja__arg(a, 1, "attribute", &present);
    if (fy_jinja__arg_str(x, a, 0, "d", &s1, "join", line)) {
        return NULL;
    }
    json_t *empty = s1 ? NULL : json_string("");
    json_t *r = str_join(x, s1 ? s1 : empty, v, is_str(at) ? S(at) : NULL, 0, line);
    json_decref(empty);
    return r;
}

static json_t *f_int(ctx *x, const json_t *v, args_t *a, int line)
{
    long long def;
    if (fy_jinja__arg_int(x, a, 0, "default", 0, &def, "int", line)) {
        return NULL;
    }
    return to_int(x, v, def, line);
}

static json_t *f_float(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *d = fy_jinja__arg(a, 0, "default", &present);
    return to_float(x, v, is_num(d) ? dval(d) : 0.0);
}

static json_t *f_abs(ctx *x, const json_t *v, args_t *a, int line)
{
    if (is_intlike(v)) {
        return fy_jinja__checked_int(x, ival(v) != LLONG_MIN, llabs(ival(v)), line);
    }
    if (is_num(v)) {
        return fy_jinja__mkreal(x, fabs(dval(v)));
    }
    return fy_jinja__rfail(x, FY_EINVAL, line, "bad operand type for abs(): '%s'",
                           fy_jinja__type_name(v));
}

static json_t *f_items(ctx *x, const json_t *v, args_t *a, int line)
{
    if (!v) {
        return fy_jinja__mkarray(x, 0, line);
    }
    if (!json_is_object(v)) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "items expects a mapping, got %s",
                               fy_jinja__type_name(v));
    }
    return dict_items(x, v, line);
}

static json_t *f_select(ctx *x, const json_t *v, args_t *a, int line)
{
    return filter_each(x, EACH_SELECT, v, a, line);
}

static json_t *f_reject(ctx *x, const json_t *v, args_t *a, int line)
{
    return filter_each(x, EACH_REJECT, v, a, line);
}

static json_t *f_selectattr(ctx *x, const json_t *v, args_t *a, int line)
{
    return filter_each(x, EACH_SELECTATTR, v, a, line);
}

static json_t *f_rejectattr(ctx *x, const json_t *v, args_t *a, int line)
{
    return filter_each(x, EACH_REJECTATTR, v, a, line);
}

static json_t *f_map(ctx *x, const json_t *v, args_t *a, int line)
{
    return filter_each(x, EACH_MAP, v, a, line);
}

/* A string reversed by code point (continuation bytes stay with their lead). */
static json_t *reverse_str(ctx *x, const json_t *v, int line)
{
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    for (size_t e = SL(v); e > 0;) {
        size_t p = e - 1;
        while (p > 0 && ((unsigned char)S(v)[p] & 0xC0) == 0x80) {
            p--;
        }
        if (fy_jinja__buf_put(x, &b, S(v) + p, e - p)) {
            fy_buf_free(&b);
            return NULL;
        }
        e = p;
    }
    json_t *r = fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return r;
}

static json_t *f_reverse(ctx *x, const json_t *v, args_t *a, int line)
{
    if (is_str(v)) {
        return reverse_str(x, v, line);
    }
    json_t *tmp = fy_jinja__to_list(x, v, line);
    if (!tmp) {
        return NULL;
    }
    size_t n = json_array_size(tmp);
    json_t *r = fy_jinja__mkarray(x, n, line);
    for (size_t i = 0; r && i < n; i++) {
        if (json_array_append(r, json_array_get(tmp, n - 1 - i))) {
            json_decref(r);
            r = fy_jinja__nomem(x);
        }
    }
    json_decref(tmp);
    return r;
}

static json_t *f_sort(ctx *x, const json_t *v, args_t *a, int line)
{
    return sort_list(x, v, a, line);
}

static json_t *f_unique(ctx *x, const json_t *v, args_t *a, int line)
{
    json_t *tmp = fy_jinja__to_list(x, v, line);
    if (!tmp) {
        return NULL;
    }
    size_t n = json_array_size(tmp);
    json_t *r = fy_jinja__mkarray(x, n, line);
    if (r && fy_jinja__charge(x, n * n / 4 + 1, line)) {
        json_decref(r);
        r = NULL;
    }
    for (size_t i = 0; r && i < n; i++) {
        json_t *e = json_array_get(tmp, i);
        if (fy_jinja__contains(x, e, r, line) == 0 && json_array_append(r, e)) {
            json_decref(r);
            r = fy_jinja__nomem(x);
        }
    }
    json_decref(tmp);
    return r;
}

static json_t *f_sum(ctx *x, const json_t *v, args_t *a, int line)
{
    int present;
    json_t *at = fy_jinja__arg(a, 0, "attribute", &present);
    json_t *start = fy_jinja__arg(a, 1, "start", &present);
    json_t *tmp = fy_jinja__to_list(x, v, line);
    if (!tmp) {
        return NULL;
    }
    json_t *r = present && start ? json_incref(start) : json_integer(0);
    size_t i;
    json_t *e;
    json_array_foreach(tmp, i, e)
    {
        json_t *val = is_str(at) ? fy_jinja__get_attr(e, S(at), SL(at)) : e;
        json_t *nr = r ? fy_jinja__binop(x, OP_ADD, r, val, line) : NULL;
        json_decref(r);
        if (!(r = nr)) {
            break;
        }
    }
    json_decref(tmp);
    return r;
}

static json_t *f_max(ctx *x, const json_t *v, args_t *a, int line)
{
    return minmax(x, v, 1, line);
}

static json_t *f_min(ctx *x, const json_t *v, args_t *a, int line)
{
    return minmax(x, v, 0, line);
}

static json_t *f_wordcount(ctx *x, const json_t *v, args_t *a, int line)
{
    json_t *tmp = fy_jinja__to_str(x, v, line);
    if (!tmp) {
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
    return fy_jinja__checked_int(x, 1, words, line);
}

/* The filters below work on str(value): they convert it first, then read
 * their arguments, as the one switch they came from did. */

static json_t *case_filter(ctx *x, const json_t *v, int mode, int line)
{
    json_t *tmp = fy_jinja__to_str(x, v, line);
    json_t *r = tmp ? str_case(x, tmp, mode, line) : NULL;
    json_decref(tmp);
    return r;
}

static json_t *f_upper(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_filter(x, v, CASE_UPPER, line);
}

static json_t *f_lower(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_filter(x, v, CASE_LOWER, line);
}

static json_t *f_title(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_filter(x, v, CASE_JTITLE, line);
}

static json_t *f_capitalize(ctx *x, const json_t *v, args_t *a, int line)
{
    return case_filter(x, v, CASE_CAPITALIZE, line);
}

static json_t *f_trim(ctx *x, const json_t *v, args_t *a, int line)
{
    const json_t *chars;
    json_t *tmp = fy_jinja__to_str(x, v, line), *r = NULL;
    if (tmp && !fy_jinja__arg_str(x, a, 0, "chars", &chars, "trim", line)) {
        r = str_strip(x, tmp, chars, 3, line);
    }
    json_decref(tmp);
    return r;
}

static json_t *f_replace(ctx *x, const json_t *v, args_t *a, int line)
{
    const json_t *s1, *s2;
    long long count;
    json_t *tmp = fy_jinja__to_str(x, v, line), *r = NULL;
    if (tmp && !fy_jinja__arg_str(x, a, 0, NULL, &s1, "replace", line) &&
        !fy_jinja__arg_str(x, a, 1, NULL, &s2, "replace", line) &&
        !fy_jinja__arg_int(x, a, 2, "count", -1, &count, "replace", line)) {
        r = s1 && s2 ? str_replace(x, tmp, s1, s2, count, line)
                     : fy_jinja__rfail(x, FY_EINVAL, line, "replace expects two string arguments");
    }
    json_decref(tmp);
    return r;
}

/* Replaces every FROM in R (consumed) with TO; returns the new string. */
static json_t *replace_all(ctx *x, json_t *r, const char *from, const char *to, int line)
{
    json_t *o = json_string(from), *nw = json_string(to);
    json_t *nr = o && nw ? str_replace(x, r, o, nw, -1, line) : fy_jinja__nomem(x);
    json_decref(o);
    json_decref(nw);
    json_decref(r);
    return nr;
}

static json_t *f_escape(ctx *x, const json_t *v, args_t *a, int line)
{
    static const char *const pairs[][2] = {
        {"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&#34;"}, {"'", "&#39;"}};
    json_t *r = fy_jinja__to_str(x, v, line);
    for (size_t i = 0; r && i < NELEM(pairs); i++) {
        r = replace_all(x, r, pairs[i][0], pairs[i][1], line);
    }
    return r;
}

static json_t *f_indent(ctx *x, const json_t *v, args_t *a, int line)
{
    long long width;
    json_t *tmp = fy_jinja__to_str(x, v, line), *r = NULL;
    if (tmp && !fy_jinja__arg_int(x, a, 0, "width", 4, &width, "indent", line)) {
        r = indent_str(x, tmp, width, fy_jinja__arg_bool(a, 1, "first"),
                       fy_jinja__arg_bool(a, 2, "blank"), line);
    }
    json_decref(tmp);
    return r;
}

/* Sorted by name (strcmp order), for fy_jinja__find_filter's binary search;
 * "d" and "e" are Jinja's aliases of default and escape. */
static const fy_jinja_filter filters[] = {
    {"abs", f_abs},
    {"capitalize", f_capitalize},
    {"count", f_length},
    {"d", f_default},
    {"default", f_default},
    {"e", f_escape},
    {"escape", f_escape},
    {"first", f_first},
    {"float", f_float},
    {"indent", f_indent},
    {"int", f_int},
    {"items", f_items},
    {"join", f_join},
    {"last", f_last},
    {"length", f_length},
    {"list", f_list},
    {"lower", f_lower},
    {"map", f_map},
    {"max", f_max},
    {"min", f_min},
    {"reject", f_reject},
    {"rejectattr", f_rejectattr},
    {"replace", f_replace},
    {"reverse", f_reverse},
    {"safe", f_safe},
    {"select", f_select},
    {"selectattr", f_selectattr},
    {"sort", f_sort},
    {"string", f_string},
    {"sum", f_sum},
    {"title", f_title},
    {"tojson", f_tojson},
    {"trim", f_trim},
    {"unique", f_unique},
    {"upper", f_upper},
    {"wordcount", f_wordcount},
};

const fy_jinja_filter *fy_jinja__filters(size_t *n)
{
    *n = NELEM(filters);
    return filters;
}

int fy_jinja__find_filter(const char *s, size_t len)
{
    return find_sorted(filters, NELEM(filters), sizeof filters[0], s, len);
}

json_t *fy_jinja__apply_filter(ctx *x, int id, const json_t *v, args_t *a, int line)
{
    if (fy_jinja__step(x, line)) {
        return NULL;
    }
    if (id < 1 || (size_t)id > NELEM(filters)) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "unknown filter");
    }
    return filters[id - 1].fn(x, v, a, line);
}
