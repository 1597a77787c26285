/* value.c: the renderer's state and values: the first error, the step and
 * working-memory budgets, value constructors, UTF-8, printing (str, repr,
 * tojson), comparison, subscripts, arithmetic and argument access. */
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

/* Records the first render error; returns NULL so callers can "return fy_jinja__rfail(...)". */
json_t *fy_jinja__rfail(ctx *x, int rc, int line, const char *fmt, ...)
{
    if (x->rc) {
        return NULL;
    }
    x->rc = rc;
    va_list ap;
    va_start(ap, fmt);
    fy_jinja__put_error(x->err, x->errlen, 1, line, fmt, ap);
    va_end(ap);
    return NULL;
}

json_t *fy_jinja__fail_undef(ctx *x, int line)
{
    if (x->undef_name) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "'%s' is undefined", x->undef_name);
    }
    return fy_jinja__rfail(x, FY_EINVAL, line, "undefined value used");
}

int fy_jinja__charge(ctx *x, size_t bytes, int line)
{
    if (bytes > x->max_work - x->work) {
        x->work = x->max_work;
        fy_jinja__rfail(x, FY_ETOOBIG, line, "template used more than %zu bytes of working memory",
                        x->max_work);
        return -1;
    }
    x->work += bytes;
    return 0;
}

int fy_jinja__step(ctx *x, int line)
{
    if (++x->steps > x->max_steps) {
        fy_jinja__rfail(x, FY_ETOOBIG, line, "template ran more than %llu steps",
                        (unsigned long long)x->max_steps);
        return -1;
    }
    return 0;
}

json_t *fy_jinja__nomem(ctx *x)
{
    return fy_jinja__rfail(x, FY_ENOMEM, 0, "out of memory");
}

/* A new string value, counted against the limits. */
json_t *fy_jinja__mkstr(ctx *x, const char *s, size_t n, int line)
{
    if (n > x->max_str) {
        return fy_jinja__rfail(x, FY_ETOOBIG, line, "string of %zu bytes exceeds the limit of %zu",
                               n, x->max_str);
    }
    if (fy_jinja__charge(x, n + 48, line)) {
        return NULL;
    }
    json_t *v = json_stringn_nocheck(n ? s : "", n);
    return v ? v : fy_jinja__nomem(x);
}

json_t *fy_jinja__mkarray(ctx *x, size_t n, int line)
{
    if (n > x->max_work / 16) {
        return fy_jinja__rfail(x, FY_ETOOBIG, line,
                               "list of %zu items exceeds the working-memory limit", n);
    }
    if (fy_jinja__charge(x, 64 + n * 16, line)) {
        return NULL;
    }
    json_t *v = json_array();
    return v ? v : fy_jinja__nomem(x);
}

int fy_jinja__append_owned(ctx *x, json_t *arr, json_t *v)
{
    if (!v) {
        v = json_null(); /* an undefined element: lists cannot hold "undefined" */
    }
    if (json_array_append_new(arr, v)) {
        fy_jinja__nomem(x);
        return -1;
    }
    return 0;
}

const char *fy_jinja__type_name(const json_t *v)
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

int fy_jinja__truthy(const json_t *v)
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

int fy_jinja__is_namespace(const ctx *x, const json_t *v)
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

size_t fy_jinja__u8_len(const char *s, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    }
    return k;
}

/* Byte offset of code point IDX (N when past the end). */
size_t fy_jinja__u8_off(const char *s, size_t n, size_t idx)
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
size_t fy_jinja__u8_next(const char *s, size_t n, size_t i, int32_t *cp)
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

int fy_jinja__is_space_cp(int32_t c)
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

int fy_jinja__is_cased(int32_t c)
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

int fy_jinja__buf_put(ctx *x, fy_buf *b, const char *s, size_t n)
{
    int rc = fy_buf_append(b, s, n);
    if (rc == FY_ETOOBIG) {
        fy_jinja__rfail(x, FY_ETOOBIG, 0, "%s exceeds the limit of %zu bytes",
                        b == x->out ? "rendered output" : "string", b->max);
        return -1;
    }
    if (rc) {
        fy_jinja__nomem(x);
        return -1;
    }
    return 0;
}

static int put_repr_str(ctx *x, fy_buf *b, const char *s, size_t n)
{
    /* Python's repr: single quotes unless the text has ' and no ". */
    char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
    if (fy_jinja__buf_put(x, b, &q, 1)) {
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
        if (e ? fy_jinja__buf_put(x, b, e, strlen(e)) : fy_jinja__buf_put(x, b, s + i, 1)) {
            return -1;
        }
    }
    return fy_jinja__buf_put(x, b, &q, 1);
}

/* A list as Python prints it: its items' repr()s. */
static int put_list(ctx *x, fy_buf *b, const json_t *v, int depth)
{
    size_t i;
    json_t *e;
    if (fy_jinja__buf_put(x, b, "[", 1)) {
        return -1;
    }
    json_array_foreach(v, i, e)
    {
        if ((i && fy_jinja__buf_put(x, b, ", ", 2)) || fy_jinja__put_value(x, b, e, 1, depth + 1)) {
            return -1;
        }
    }
    return fy_jinja__buf_put(x, b, "]", 1);
}

/* A dict as Python prints it, a namespace() wrapped in <Namespace ...>. */
static int put_dict(ctx *x, fy_buf *b, const json_t *v, int depth)
{
    const char *k;
    json_t *e;
    int first = 1, ns = fy_jinja__is_namespace(x, v);
    if (ns && fy_jinja__buf_put(x, b, "<Namespace ", 11)) {
        return -1;
    }
    if (fy_jinja__buf_put(x, b, "{", 1)) {
        return -1;
    }
    json_object_foreach((json_t *)v, k, e)
    {
        if ((!first && fy_jinja__buf_put(x, b, ", ", 2)) || put_repr_str(x, b, k, strlen(k)) ||
            fy_jinja__buf_put(x, b, ": ", 2) || fy_jinja__put_value(x, b, e, 1, depth + 1)) {
            return -1;
        }
        first = 0;
    }
    return fy_jinja__buf_put(x, b, ns ? "}>" : "}", ns ? 2 : 1);
}

/* Appends str(V) (REPR: repr(V), for list and dict members) to B. */
int fy_jinja__put_value(ctx *x, fy_buf *b, const json_t *v, int repr, int depth)
{
    char tmp[64];
    if (depth > VALUE_DEPTH) {
        fy_jinja__rfail(x, FY_EINVAL, 0, "value nests deeper than %d levels", VALUE_DEPTH);
        return -1;
    }
    if (!v) {
        return repr ? fy_jinja__buf_put(x, b, "Undefined", 9) : 0;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return repr ? put_repr_str(x, b, S(v), SL(v)) : fy_jinja__buf_put(x, b, S(v), SL(v));
    case JSON_INTEGER:
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return fy_jinja__buf_put(x, b, tmp, strlen(tmp));
    case JSON_REAL:
        fmt_float(json_real_value(v), tmp, sizeof tmp);
        return fy_jinja__buf_put(x, b, tmp, strlen(tmp));
    case JSON_TRUE:
        return fy_jinja__buf_put(x, b, "True", 4);
    case JSON_FALSE:
        return fy_jinja__buf_put(x, b, "False", 5);
    case JSON_NULL:
        return fy_jinja__buf_put(x, b, "None", 4);
    case JSON_ARRAY:
        return put_list(x, b, v, depth);
    case JSON_OBJECT:
        return put_dict(x, b, v, depth);
    }
    return 0;
}

/* str(V) as a new string value. */
json_t *fy_jinja__to_str(ctx *x, const json_t *v, int line)
{
    if (is_str(v)) {
        return json_incref((json_t *)v);
    }
    fy_buf b;
    fy_buf_init(&b, x->max_str);
    if (fy_jinja__put_value(x, &b, v, 0, 0)) {
        fy_buf_free(&b);
        if (x->rc && x->err && line > 0 && !strstr(x->err, "(template line")) {
            size_t l = strlen(x->err);
            snprintf(x->err + l, x->errlen - l, " (template line %d)", line);
        }
        return NULL;
    }
    json_t *s = fy_jinja__mkstr(x, b.data, b.len, line);
    fy_buf_free(&b);
    return s;
}

/* A JSON string literal of S[0..N), non-ASCII bytes kept as they are. */
static int json_put_string(ctx *x, fy_buf *b, const char *s, size_t n)
{
    char tmp[16];
    if (fy_jinja__buf_put(x, b, "\"", 1)) {
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
        if (e ? fy_jinja__buf_put(x, b, e, strlen(e)) : fy_jinja__buf_put(x, b, s + i, 1)) {
            return -1;
        }
    }
    return fy_jinja__buf_put(x, b, "\"", 1);
}

/* A number as Python's json writes it (NaN and Infinity included). */
static int json_put_number(ctx *x, fy_buf *b, const json_t *v)
{
    char tmp[64];
    if (json_is_integer(v)) {
        snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return fy_jinja__buf_put(x, b, tmp, strlen(tmp));
    }
    double d = json_real_value(v);
    if (isnan(d)) {
        return fy_jinja__buf_put(x, b, "NaN", 3);
    }
    if (isinf(d)) {
        return d < 0 ? fy_jinja__buf_put(x, b, "-Infinity", 9)
                     : fy_jinja__buf_put(x, b, "Infinity", 8);
    }
    fmt_float(d, tmp, sizeof tmp);
    return fy_jinja__buf_put(x, b, tmp, strlen(tmp));
}

/* With INDENT >= 0: a newline and INDENT * LEVEL spaces; else nothing. */
static int json_put_break(ctx *x, fy_buf *b, int indent, int level)
{
    if (indent < 0) {
        return 0;
    }
    if (fy_jinja__buf_put(x, b, "\n", 1)) {
        return -1;
    }
    for (int s = 0; s < indent * level; s++) {
        if (fy_jinja__buf_put(x, b, " ", 1)) {
            return -1;
        }
    }
    return 0;
}

/* A list or dict V (N > 0 items), each item on its own line when INDENT >= 0. */
static int json_put_container(ctx *x, fy_buf *b, const json_t *v, size_t n, int indent, int level,
                              int depth)
{
    int arr = json_is_array(v);
    if (fy_jinja__buf_put(x, b, arr ? "[" : "{", 1)) {
        return -1;
    }
    void *it = arr ? NULL : json_object_iter((json_t *)v);
    for (size_t i = 0; i < n; i++) {
        if ((i && fy_jinja__buf_put(x, b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2)) ||
            json_put_break(x, b, indent, level + 1)) {
            return -1;
        }
        json_t *e;
        if (arr) {
            e = json_array_get(v, i);
        } else {
            const char *k = json_object_iter_key(it);
            e = json_object_iter_value(it);
            it = json_object_iter_next((json_t *)v, it);
            json_t *ks = json_string_nocheck(k);
            int rc = ks ? fy_jinja__put_json(x, b, ks, indent, level + 1, depth + 1) : -1;
            json_decref(ks);
            if (rc || fy_jinja__buf_put(x, b, ": ", 2)) {
                return -1;
            }
        }
        if (fy_jinja__put_json(x, b, e, indent, level + 1, depth + 1)) {
            return -1;
        }
    }
    if (json_put_break(x, b, indent, level)) {
        return -1;
    }
    return fy_jinja__buf_put(x, b, arr ? "]" : "}", 1);
}

/* json.dumps(V, ensure_ascii=False, indent=INDENT) as Hugging Face's tojson. */
int fy_jinja__put_json(ctx *x, fy_buf *b, const json_t *v, int indent, int level, int depth)
{
    if (depth > VALUE_DEPTH) {
        fy_jinja__rfail(x, FY_EINVAL, 0, "value nests deeper than %d levels", VALUE_DEPTH);
        return -1;
    }
    if (!v) {
        fy_jinja__rfail(x, FY_EINVAL, 0, "Object of type Undefined is not JSON serializable");
        return -1;
    }
    switch (json_typeof(v)) {
    case JSON_STRING:
        return json_put_string(x, b, S(v), SL(v));
    case JSON_INTEGER:
    case JSON_REAL:
        return json_put_number(x, b, v);
    case JSON_TRUE:
        return fy_jinja__buf_put(x, b, "true", 4);
    case JSON_FALSE:
        return fy_jinja__buf_put(x, b, "false", 5);
    case JSON_NULL:
        return fy_jinja__buf_put(x, b, "null", 4);
    case JSON_ARRAY:
    case JSON_OBJECT: {
        size_t n = json_is_array(v) ? json_array_size(v) : json_object_size(v);
        if (n == 0) {
            return fy_jinja__buf_put(x, b, json_is_array(v) ? "[]" : "{}", 2);
        }
        return json_put_container(x, b, v, n, indent, level, depth);
    }
    }
    return 0;
}

/* ------------------------------------------------------------------ comparisons */

int fy_jinja__values_eq(const json_t *a, const json_t *b, int depth)
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
            if (!fy_jinja__values_eq(json_array_get(a, i), json_array_get(b, i), depth + 1)) {
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
            if (!o || !fy_jinja__values_eq(e, o, depth + 1)) {
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
int fy_jinja__values_order(const json_t *a, const json_t *b, int *r, int depth)
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
            if (fy_jinja__values_eq(ea, eb, 0)) {
                continue;
            }
            return fy_jinja__values_order(ea, eb, r, depth + 1);
        }
        *r = (na > nb) - (na < nb);
        return 0;
    }
    return -1;
}

/* ITEM in CONTAINER: 1, 0, or -1 with an error recorded. */
int fy_jinja__contains(ctx *x, const json_t *item, const json_t *cont, int line)
{
    if (!cont) {
        fy_jinja__fail_undef(x, line);
        return -1;
    }
    if (json_is_string(cont)) {
        if (!is_str(item)) {
            fy_jinja__rfail(x, FY_EINVAL, line,
                            "'in <string>' requires string as left operand, not %s",
                            fy_jinja__type_name(item));
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
            if (fy_jinja__values_eq(item, e, 0)) {
                return 1;
            }
        }
        return 0;
    }
    if (json_is_object(cont)) {
        return is_str(item) && json_object_getn(cont, S(item), SL(item)) != NULL;
    }
    fy_jinja__rfail(x, FY_EINVAL, line, "argument of type '%s' is not iterable",
                    fy_jinja__type_name(cont));
    return -1;
}

/* The items a for loop (or a filter) walks: a new list. */
json_t *fy_jinja__to_list(ctx *x, const json_t *v, int line)
{
    if (!v) {
        return fy_jinja__mkarray(x, 0, line);
    }
    if (json_is_array(v)) {
        return json_incref((json_t *)v);
    }
    if (json_is_object(v)) {
        json_t *l = fy_jinja__mkarray(x, json_object_size(v), line);
        const char *k;
        json_t *e;
        if (!l) {
            return NULL;
        }
        json_object_foreach((json_t *)v, k, e)
        {
            (void)e;
            if (fy_jinja__append_owned(x, l, fy_jinja__mkstr(x, k, strlen(k), line))) {
                json_decref(l);
                return NULL;
            }
        }
        return l;
    }
    if (json_is_string(v)) {
        const char *s = S(v);
        size_t n = SL(v);
        json_t *l = fy_jinja__mkarray(x, n, line);
        for (size_t i = 0; l && i < n;) {
            int32_t cp;
            size_t k = fy_jinja__u8_next(s, n, i, &cp);
            if (fy_jinja__append_owned(x, l, fy_jinja__mkstr(x, s + i, k, line))) {
                json_decref(l);
                return NULL;
            }
            i += k;
        }
        return l;
    }
    return fy_jinja__rfail(x, FY_EINVAL, line, "'%s' object is not iterable",
                           fy_jinja__type_name(v));
}

void fy_jinja__free_args(args_t *a)
{
    for (size_t i = 0; i < a->n; i++) {
        json_decref(a->v[i]);
    }
    a->n = 0;
}

/* The positional argument POS (counted after a->skip) or the keyword KW;
 * *PRESENT tells whether it was given. Borrowed. */
json_t *fy_jinja__arg(const args_t *a, size_t pos, const char *kw, int *present)
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

size_t fy_jinja__npositional(const args_t *a)
{
    size_t k = 0;
    for (size_t i = 0; i < a->n; i++) {
        k += !a->kw[i];
    }
    return k > a->skip ? k - a->skip : 0;
}

/* Optional string argument: *OUT NULL when absent or none. */
int fy_jinja__arg_str(ctx *x, const args_t *a, size_t pos, const char *kw, const json_t **out,
                      const char *what, int line)
{
    int present;
    json_t *v = fy_jinja__arg(a, pos, kw, &present);
    *out = NULL;
    if (!present || (v && json_is_null(v))) {
        return 0;
    }
    if (!is_str(v)) {
        fy_jinja__rfail(x, FY_EINVAL, line, "%s expects a string argument, got %s", what,
                        fy_jinja__type_name(v));
        return -1;
    }
    *out = v;
    return 0;
}

int fy_jinja__arg_int(ctx *x, const args_t *a, size_t pos, const char *kw, long long def,
                      long long *out, const char *what, int line)
{
    int present;
    json_t *v = fy_jinja__arg(a, pos, kw, &present);
    *out = def;
    if (!present || (v && json_is_null(v))) {
        return 0;
    }
    if (!is_intlike(v)) {
        fy_jinja__rfail(x, FY_EINVAL, line, "%s expects an integer argument, got %s", what,
                        fy_jinja__type_name(v));
        return -1;
    }
    *out = ival(v);
    return 0;
}

int fy_jinja__arg_bool(const args_t *a, size_t pos, const char *kw)
{
    int present;
    json_t *v = fy_jinja__arg(a, pos, kw, &present);
    return present && fy_jinja__truthy(v);
}

/* obj.name / obj['name']: a borrowed value, or NULL for undefined. */
json_t *fy_jinja__get_attr(const json_t *obj, const char *name, size_t n)
{
    return obj && json_is_object(obj) ? json_object_getn(obj, name, n) : NULL;
}

json_t *fy_jinja__get_item(ctx *x, const json_t *obj, const json_t *key, int line)
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
        long long n = (long long)fy_jinja__u8_len(S(obj), SL(obj));
        if (i < 0) {
            i += n;
        }
        if (i < 0 || i >= n) {
            return NULL;
        }
        size_t a = fy_jinja__u8_off(S(obj), SL(obj), (size_t)i);
        size_t b = fy_jinja__u8_off(S(obj), SL(obj), (size_t)i + 1);
        return fy_jinja__mkstr(x, S(obj) + a, b - a, line);
    }
    return NULL;
}

json_t *fy_jinja__checked_int(ctx *x, int ok, long long v, int line)
{
    if (!ok) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "integer overflow");
    }
    json_t *r = json_integer(v);
    return r ? r : fy_jinja__nomem(x);
}

json_t *fy_jinja__mkreal(ctx *x, double d)
{
    if (!isfinite(d)) {
        /* JSON (and so jansson) has no inf or nan. */
        return fy_jinja__rfail(x, FY_EINVAL, 0, "float result is not finite");
    }
    json_t *r = json_real(d);
    return r ? r : fy_jinja__nomem(x);
}

static json_t *concat_str(ctx *x, const json_t *a, const json_t *b, int line)
{
    size_t la = SL(a), lb = SL(b);
    if (la + lb > x->max_str) {
        return fy_jinja__rfail(x, FY_ETOOBIG, line, "string of %zu bytes exceeds the limit of %zu",
                               la + lb, x->max_str);
    }
    char *p = malloc(la + lb + 1);
    if (!p) {
        return fy_jinja__nomem(x);
    }
    memcpy(p, S(a), la);
    memcpy(p + la, S(b), lb);
    json_t *r = fy_jinja__mkstr(x, p, la + lb, line);
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
            return fy_jinja__rfail(x, FY_ETOOBIG, line,
                                   "string repetition exceeds the limit of %zu bytes", x->max_str);
        }
        fy_buf b;
        fy_buf_init(&b, x->max_str);
        for (long long i = 0; i < times; i++) {
            if (fy_jinja__buf_put(x, &b, S(seq), n)) {
                fy_buf_free(&b);
                return NULL;
            }
        }
        json_t *r = fy_jinja__mkstr(x, b.data, b.len, line);
        fy_buf_free(&b);
        return r;
    }
    size_t n = json_array_size(seq);
    if (n && (unsigned long long)times > (x->max_work / 16) / n) {
        return fy_jinja__rfail(x, FY_ETOOBIG, line,
                               "list repetition exceeds the working-memory limit");
    }
    json_t *r = fy_jinja__mkarray(x, n * (size_t)times, line);
    for (long long i = 0; r && i < times; i++) {
        if (json_array_extend(r, (json_t *)seq)) {
            json_decref(r);
            return fy_jinja__nomem(x);
        }
    }
    return r;
}

static const char *op_name(int op)
{
    static const char *const names[] = {"?", "+", "-", "*", "/", "//", "%", "**", "~"};
    return op > 0 && op <= OP_CAT ? names[op] : "?";
}

/* a ~ b: both as strings, concatenated. */
static json_t *cat_values(ctx *x, const json_t *a, const json_t *b, int line)
{
    json_t *sa = fy_jinja__to_str(x, a, line), *sb = sa ? fy_jinja__to_str(x, b, line) : NULL;
    json_t *res = sa && sb ? concat_str(x, sa, sb, line) : NULL;
    json_decref(sa);
    json_decref(sb);
    return res;
}

/* Python's // and % (OP), flooring toward negative infinity. */
static json_t *floor_div_mod(ctx *x, int op, int ints, long long ia, long long ib, double da,
                             double db, int line)
{
    if (db == 0) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "integer division or modulo by zero");
    }
    if (!ints) {
        double m = fmod(da, db);
        if (m != 0 && ((m < 0) != (db < 0))) {
            m += db;
        }
        return fy_jinja__mkreal(x, op == OP_FDIV ? floor(da / db) : m);
    }
    if (ia == LLONG_MIN && ib == -1) {
        return fy_jinja__rfail(x, FY_EINVAL, line, "integer overflow");
    }
    long long q = ia / ib, m = ia % ib;
    if (m != 0 && ((m < 0) != (ib < 0))) {
        q--;
        m += ib;
    }
    return fy_jinja__checked_int(x, 1, op == OP_FDIV ? q : m, line);
}

/* IA ** IB for IB >= 0, failing on overflow: |ia| >= 2 overflows within 63
 * multiplications, so the loop is short. */
static json_t *int_pow(ctx *x, long long ia, long long ib, int line)
{
    long long acc = 1;
    if (ia == 0 || ia == 1) {
        acc = ib == 0 ? 1 : ia;
    } else if (ia == -1) {
        acc = ib % 2 ? -1 : 1;
    } else {
        for (long long i = 0; i < ib; i++) {
            if (__builtin_mul_overflow(acc, ia, &acc)) {
                return fy_jinja__rfail(x, FY_EINVAL, line, "integer overflow");
            }
        }
    }
    return fy_jinja__checked_int(x, 1, acc, line);
}

/* Arithmetic on two numbers (booleans count as 0 and 1). */
static json_t *num_binop(ctx *x, int op, const json_t *a, const json_t *b, int line)
{
    int ints = is_intlike(a) && is_intlike(b), ok = 1;
    long long ia = ints ? ival(a) : 0, ib = ints ? ival(b) : 0, r = 0;
    double da = dval(a), db = dval(b);
    switch (op) {
    case OP_ADD:
        if (!ints) {
            return fy_jinja__mkreal(x, da + db);
        }
        ok = !__builtin_add_overflow(ia, ib, &r);
        break;
    case OP_SUB:
        if (!ints) {
            return fy_jinja__mkreal(x, da - db);
        }
        ok = !__builtin_sub_overflow(ia, ib, &r);
        break;
    case OP_MUL:
        if (!ints) {
            return fy_jinja__mkreal(x, da * db);
        }
        ok = !__builtin_mul_overflow(ia, ib, &r);
        break;
    case OP_DIV:
        if (db == 0) {
            return fy_jinja__rfail(x, FY_EINVAL, line, "division by zero");
        }
        return fy_jinja__mkreal(x, da / db);
    case OP_FDIV:
    case OP_MOD:
        return floor_div_mod(x, op, ints, ia, ib, da, db, line);
    case OP_POW:
        return ints && ib >= 0 ? int_pow(x, ia, ib, line) : fy_jinja__mkreal(x, pow(da, db));
    default:
        return fy_jinja__rfail(x, FY_EINVAL, line,
                               "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op),
                               fy_jinja__type_name(a), fy_jinja__type_name(b));
    }
    return fy_jinja__checked_int(x, ok, r, line);
}

json_t *fy_jinja__binop(ctx *x, int op, const json_t *a, const json_t *b, int line)
{
    if (op == OP_CAT) {
        return cat_values(x, a, b, line);
    }
    if (!a || !b) {
        return fy_jinja__fail_undef(x, line);
    }
    if (is_num(a) && is_num(b)) {
        return num_binop(x, op, a, b, line);
    }
    if (op == OP_ADD && is_str(a) && is_str(b)) {
        return concat_str(x, a, b, line);
    }
    if (op == OP_ADD && json_is_array(a) && json_is_array(b)) {
        json_t *r = fy_jinja__mkarray(x, json_array_size(a) + json_array_size(b), line);
        if (r && (json_array_extend(r, (json_t *)a) || json_array_extend(r, (json_t *)b))) {
            json_decref(r);
            return fy_jinja__nomem(x);
        }
        return r;
    }
    if (op == OP_MUL && (is_str(a) || json_is_array(a)) && is_intlike(b)) {
        return repeat(x, a, ival(b), line);
    }
    if (op == OP_MUL && (is_str(b) || json_is_array(b)) && is_intlike(a)) {
        return repeat(x, b, ival(a), line);
    }
    return fy_jinja__rfail(x, FY_EINVAL, line, "unsupported operand type(s) for %s: '%s' and '%s'",
                           op_name(op), fy_jinja__type_name(a), fy_jinja__type_name(b));
}

int fy_jinja__compare(ctx *x, int op, const json_t *a, const json_t *b, int line)
{
    int r;
    switch (op) {
    case CMP_EQ:
        return fy_jinja__values_eq(a, b, 0);
    case CMP_NE:
        return !fy_jinja__values_eq(a, b, 0);
    case CMP_IN:
        return fy_jinja__contains(x, a, b, line);
    case CMP_NOTIN: {
        int c = fy_jinja__contains(x, a, b, line);
        return c < 0 ? -1 : !c;
    }
    }
    if (!a || !b) {
        fy_jinja__fail_undef(x, line);
        return -1;
    }
    if (fy_jinja__values_order(a, b, &r, 0)) {
        static const char *const names[] = {"", "==", "!=", "<", "<=", ">", ">="};
        fy_jinja__rfail(x, FY_EINVAL, line, "'%s' not supported between instances of '%s' and '%s'",
                        names[op], fy_jinja__type_name(a), fy_jinja__type_name(b));
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
