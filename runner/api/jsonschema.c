/* jsonschema.c: JSON Schema (the subset of jsonschema.h) to grammar rules.
 *
 * One pass over the schema, depth-first. Each subschema becomes a rule;
 * the shared pieces (whitespace, a string character, any value) are built
 * once per compile. A $ref target gets its rule before its body is
 * compiled, so a recursive reference is a reference to a rule under
 * construction. */
#include "runner/api/jsonschema.h"

#include "common/err.h"
#include "common/limits.h"
#include "runner/api/regex.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMO_MAX 512

typedef struct {
    fy_gbuild *b;
    const json_t *root;
    int strict;
    fy_jsonschema_error *e;
    size_t plen; /* bytes of e->pointer in use */
    int depth;
    struct {
        const json_t *node;
        int rule;
    } memo[MEMO_MAX];
    int n_memo;
    int ws, chr, str, num, intg, any, hex; /* shared rules, -1 until built */
} jsc;

static int js_fail(jsc *c, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int js_fail(jsc *c, int rc, const char *fmt, ...)
{
    if (c->e->message[0]) {
        return rc; /* the first error is the one reported */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->e->message, sizeof c->e->message, fmt, ap);
    va_end(ap);
    return rc;
}

/* The builder's error, as a schema error. */
static int js_built(jsc *c, int r)
{
    int rc = fy_gbuild_error(c->b);
    if (rc == FY_ELIMIT) {
        return js_fail(c, rc,
                       "the schema needs a grammar larger than the caps (%d rules, %d elements)",
                       FY_GRAMMAR_MAX_RULES, FY_GRAMMAR_MAX_ELEMENTS);
    }
    if (rc < 0) {
        return js_fail(c, rc, "building the grammar: %s", fy_strerror(rc));
    }
    return r;
}

/* Appends "/TOKEN" (RFC 6901 escaped) to the pointer; returns the old length. */
static size_t ptr_push(jsc *c, const char *tok)
{
    size_t old = c->plen, cap = sizeof c->e->pointer;
    char *p = c->e->pointer;
    if (c->plen + 1 < cap) {
        p[c->plen++] = '/';
    }
    for (const char *s = tok; *s && c->plen + 2 < cap; s++) {
        if (*s == '~' || *s == '/') {
            p[c->plen++] = '~';
            p[c->plen++] = *s == '~' ? '0' : '1';
        } else {
            p[c->plen++] = *s;
        }
    }
    p[c->plen] = 0;
    return old;
}

static size_t ptr_push_index(jsc *c, size_t i)
{
    char t[24];
    snprintf(t, sizeof t, "%zu", i);
    return ptr_push(c, t);
}

static void ptr_pop(jsc *c, size_t old)
{
    if (!c->e->message[0]) { /* on error the pointer names the fault */
        c->plen = old;
        c->e->pointer[old] = 0;
    }
}

/* --- Shared rules ------------------------------------------------------------------------ */

static int lit_rule(jsc *c, const char *s)
{
    int r = fy_gb_rule(c->b);
    fy_gb_lit(c->b, r, s, strlen(s));
    return r;
}

int fy_jsonschema_ws(fy_gbuild *b)
{
    /* "" | " " | "\n" " "{0,16} */
    int sp = fy_gb_rule(b), r = fy_gb_rule(b);
    fy_gb_lit(b, sp, " ", 1);
    fy_gb_alt(b, r);
    fy_gb_lit(b, r, " ", 1);
    fy_gb_alt(b, r);
    fy_gb_lit(b, r, "\n", 1);
    fy_gb_repeat(b, r, sp, 0, 16);
    return fy_gbuild_error(b) ? fy_gbuild_error(b) : r;
}

static int ws(jsc *c)
{
    if (c->ws < 0) {
        c->ws = fy_jsonschema_ws(c->b);
    }
    return c->ws;
}

static int hex_rule(jsc *c)
{
    if (c->hex < 0) {
        fy_byteset s = {{0}};
        fy_byteset_add_range(&s, '0', '9');
        fy_byteset_add_range(&s, 'a', 'f');
        fy_byteset_add_range(&s, 'A', 'F');
        c->hex = fy_gb_rule(c->b);
        fy_gb_bytes(c->b, c->hex, &s);
    }
    return c->hex;
}

/* One character of a JSON string: raw (not '"', '\' or a control), or an
 * escape; \u escapes never name a surrogate. */
static int char_rule(jsc *c)
{
    if (c->chr >= 0) {
        return c->chr;
    }
    fy_gbuild *b = c->b;
    const fy_cprange raw[] = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}};
    int rawc = fy_gb_charclass(b, raw, 3), h = hex_rule(c);
    int r = fy_gb_rule(b);
    fy_gb_ref(b, r, rawc);
    fy_gb_alt(b, r);
    fy_gb_lit(b, r, "\\", 1);
    fy_byteset esc = {{0}};
    for (const char *s = "\"\\/bfnrt"; *s; s++) {
        fy_byteset_add_range(&esc, (uint8_t)*s, (uint8_t)*s);
    }
    fy_gb_bytes(b, r, &esc);
    /* \u: a first hex digit other than d/D, or d/D then 0-7. */
    fy_byteset h1 = {{0}};
    fy_byteset_add_range(&h1, '0', '9');
    fy_byteset_add_range(&h1, 'a', 'c');
    fy_byteset_add_range(&h1, 'A', 'C');
    fy_byteset_add_range(&h1, 'e', 'f');
    fy_byteset_add_range(&h1, 'E', 'F');
    fy_gb_alt(b, r);
    fy_gb_lit(b, r, "\\u", 2);
    fy_gb_bytes(b, r, &h1);
    fy_gb_repeat(b, r, h, 3, 3);
    fy_byteset dd = {{0}};
    fy_byteset_add_range(&dd, 'd', 'd');
    fy_byteset_add_range(&dd, 'D', 'D');
    fy_gb_alt(b, r);
    fy_gb_lit(b, r, "\\u", 2);
    fy_gb_bytes(b, r, &dd);
    fy_gb_byte_range(b, r, '0', '7');
    fy_gb_repeat(b, r, h, 2, 2);
    c->chr = r;
    return r;
}

/* A string of MIN..MAX (-1: any) characters. */
static int string_rule(jsc *c, int min, int max)
{
    if (min == 0 && max < 0 && c->str >= 0) {
        return c->str;
    }
    int ch = char_rule(c), r = fy_gb_rule(c->b);
    fy_gb_lit(c->b, r, "\"", 1);
    fy_gb_repeat(c->b, r, ch, min, max);
    fy_gb_lit(c->b, r, "\"", 1);
    if (min == 0 && max < 0) {
        c->str = r;
    }
    return r;
}

static int digits_rule(jsc *c, int min, int max)
{
    int d = fy_gb_rule(c->b), r = fy_gb_rule(c->b);
    fy_gb_byte_range(c->b, d, '0', '9');
    fy_gb_repeat(c->b, r, d, min, max);
    return r;
}

/* "0" | [1-9] [0-9]{0,14} */
static int natural_rule(jsc *c)
{
    int r = fy_gb_rule(c->b), tail = digits_rule(c, 0, 14);
    fy_gb_lit(c->b, r, "0", 1);
    fy_gb_alt(c->b, r);
    fy_gb_byte_range(c->b, r, '1', '9');
    fy_gb_ref(c->b, r, tail);
    return r;
}

static int integer_rule(jsc *c)
{
    if (c->intg < 0) {
        int nat = natural_rule(c);
        c->intg = fy_gb_rule(c->b);
        fy_gb_repeat(c->b, c->intg, lit_rule(c, "-"), 0, 1);
        fy_gb_ref(c->b, c->intg, nat);
    }
    return c->intg;
}

/* NONNEG: no sign. */
static int number_rule(jsc *c, int nonneg)
{
    if (!nonneg && c->num >= 0) {
        return c->num;
    }
    fy_gbuild *b = c->b;
    int frac = fy_gb_rule(b), exp = fy_gb_rule(b), sign = fy_gb_rule(b), r = fy_gb_rule(b);
    fy_gb_lit(b, frac, ".", 1);
    fy_gb_ref(b, frac, digits_rule(c, 1, 15));
    fy_byteset e = {{0}}, pm = {{0}};
    fy_byteset_add_range(&e, 'e', 'e');
    fy_byteset_add_range(&e, 'E', 'E');
    fy_byteset_add_range(&pm, '+', '+');
    fy_byteset_add_range(&pm, '-', '-');
    fy_gb_bytes(b, sign, &pm);
    fy_gb_bytes(b, exp, &e);
    fy_gb_repeat(b, exp, sign, 0, 1);
    fy_gb_ref(b, exp, digits_rule(c, 1, 2));
    if (!nonneg) {
        fy_gb_repeat(b, r, lit_rule(c, "-"), 0, 1);
    }
    fy_gb_ref(b, r, natural_rule(c));
    fy_gb_repeat(b, r, frac, 0, 1);
    fy_gb_repeat(b, r, exp, 0, 1);
    if (!nonneg) {
        c->num = r;
    }
    return r;
}

/* "[" ws ( ITEM ( "," ws ITEM ){MIN-1, MAX-1} )? "]", items each followed by ws. */
static int list_rule(jsc *c, int open, int close, int item, int min, int max)
{
    fy_gbuild *b = c->b;
    int w = ws(c), more = fy_gb_rule(b), body = fy_gb_rule(b), r = fy_gb_rule(b);
    fy_gb_lit(b, more, ",", 1);
    fy_gb_ref(b, more, w);
    fy_gb_ref(b, more, item);
    fy_gb_ref(b, body, item);
    fy_gb_repeat(b, body, more, min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1);
    char o = (char)open, z = (char)close;
    fy_gb_lit(b, r, &o, 1);
    fy_gb_ref(b, r, w);
    if (max != 0) {
        fy_gb_repeat(b, r, body, min > 0 ? 1 : 0, 1);
    }
    fy_gb_lit(b, r, &z, 1);
    return r;
}

/* ITEM followed by optional whitespace. */
static int then_ws(jsc *c, int item)
{
    int r = fy_gb_rule(c->b);
    fy_gb_ref(c->b, r, item);
    fy_gb_ref(c->b, r, ws(c));
    return r;
}

/* KEY ws ":" ws VALUE ws, with KEY a string rule. */
static int member_rule(jsc *c, int key, int value)
{
    int r = fy_gb_rule(c->b), w = ws(c);
    fy_gb_ref(c->b, r, key);
    fy_gb_ref(c->b, r, w);
    fy_gb_lit(c->b, r, ":", 1);
    fy_gb_ref(c->b, r, w);
    fy_gb_ref(c->b, r, value);
    fy_gb_ref(c->b, r, w);
    return r;
}

static int any_rule(jsc *c, int object_only)
{
    if (c->any < 0) {
        fy_gbuild *b = c->b;
        c->any = fy_gb_rule(b); /* filled below: it refers to itself through lists */
        int val = c->any;
        int obj = list_rule(c, '{', '}', member_rule(c, string_rule(c, 0, -1), val), 0, -1);
        int arr = list_rule(c, '[', ']', then_ws(c, val), 0, -1);
        int alts[] = {obj,
                      arr,
                      string_rule(c, 0, -1),
                      number_rule(c, 0),
                      lit_rule(c, "true"),
                      lit_rule(c, "false"),
                      lit_rule(c, "null")};
        int ch = fy_gb_choice(b, alts, 7);
        fy_gb_ref(b, val, ch);
        if (object_only) {
            return obj;
        }
    }
    return c->any;
}

static void jsc_init(jsc *c, fy_gbuild *b, const json_t *root, int strict, fy_jsonschema_error *e)
{
    memset(c, 0, sizeof *c);
    c->b = b;
    c->root = root;
    c->strict = strict;
    c->e = e;
    e->pointer[0] = 0;
    e->message[0] = 0;
    c->ws = c->chr = c->str = c->num = c->intg = c->any = c->hex = -1;
}

int fy_jsonschema_any(fy_gbuild *b, int object_only)
{
    fy_jsonschema_error e;
    jsc c;
    jsc_init(&c, b, NULL, 0, &e);
    int r = any_rule(&c, object_only);
    return fy_gbuild_error(b) ? fy_gbuild_error(b) : r;
}

/* --- Formats and integer ranges ---------------------------------------------------------- */

/* A rule for one of the literal alternatives ALTS (NULL-terminated). */
static int lits_rule(jsc *c, const char *const *alts)
{
    int r = fy_gb_rule(c->b);
    for (int i = 0; alts[i]; i++) {
        if (i > 0) {
            fy_gb_alt(c->b, r);
        }
        fy_gb_lit(c->b, r, alts[i], strlen(alts[i]));
    }
    return r;
}

static int digit_range(jsc *c, int r, char lo, char hi)
{
    return fy_gb_byte_range(c->b, r, (uint8_t)lo, (uint8_t)hi);
}

/* YYYY-MM-DD, a real day (February has 28). */
static int date_rule(jsc *c)
{
    fy_gbuild *b = c->b;
    int d31 = fy_gb_rule(b), d30 = fy_gb_rule(b), d28 = fy_gb_rule(b), md = fy_gb_rule(b),
        r = fy_gb_rule(b);
    /* 01-09 | 10-19 | 20-28 (| 29 | 30 | 31) */
    int days[3] = {d28, d30, d31};
    for (int k = 0; k < 3; k++) {
        int x = days[k];
        fy_gb_lit(b, x, "0", 1);
        digit_range(c, x, '1', '9');
        fy_gb_alt(b, x);
        fy_gb_lit(b, x, "1", 1);
        digit_range(c, x, '0', '9');
        fy_gb_alt(b, x);
        fy_gb_lit(b, x, "2", 1);
        digit_range(c, x, '0', '8');
        if (k >= 1) {
            fy_gb_alt(b, x);
            fy_gb_lit(b, x, "29", 2);
            fy_gb_alt(b, x);
            fy_gb_lit(b, x, "30", 2);
        }
        if (k == 2) {
            fy_gb_alt(b, x);
            fy_gb_lit(b, x, "31", 2);
        }
    }
    static const char *const m31[] = {"01", "03", "05", "07", "08", "10", "12", NULL};
    static const char *const m30[] = {"04", "06", "09", "11", NULL};
    fy_gb_ref(b, md, lits_rule(c, m31));
    fy_gb_lit(b, md, "-", 1);
    fy_gb_ref(b, md, d31);
    fy_gb_alt(b, md);
    fy_gb_ref(b, md, lits_rule(c, m30));
    fy_gb_lit(b, md, "-", 1);
    fy_gb_ref(b, md, d30);
    fy_gb_alt(b, md);
    fy_gb_lit(b, md, "02-", 3);
    fy_gb_ref(b, md, d28);
    fy_gb_ref(b, r, digits_rule(c, 4, 4));
    fy_gb_lit(b, r, "-", 1);
    fy_gb_ref(b, r, md);
    return r;
}

/* HH:MM:SS(.frac)?(Z|+HH:MM|-HH:MM) */
static int time_rule(jsc *c)
{
    fy_gbuild *b = c->b;
    int hh = fy_gb_rule(b), mm = fy_gb_rule(b), frac = fy_gb_rule(b), off = fy_gb_rule(b),
        r = fy_gb_rule(b);
    digit_range(c, hh, '0', '1');
    digit_range(c, hh, '0', '9');
    fy_gb_alt(b, hh);
    fy_gb_lit(b, hh, "2", 1);
    digit_range(c, hh, '0', '3');
    digit_range(c, mm, '0', '5');
    digit_range(c, mm, '0', '9');
    fy_gb_lit(b, frac, ".", 1);
    fy_gb_ref(b, frac, digits_rule(c, 1, 6));
    fy_gb_lit(b, off, "Z", 1);
    fy_gb_alt(b, off);
    fy_byteset pm = {{0}};
    fy_byteset_add_range(&pm, '+', '+');
    fy_byteset_add_range(&pm, '-', '-');
    fy_gb_bytes(b, off, &pm);
    fy_gb_ref(b, off, hh);
    fy_gb_lit(b, off, ":", 1);
    fy_gb_ref(b, off, mm);
    fy_gb_ref(b, r, hh);
    fy_gb_lit(b, r, ":", 1);
    fy_gb_ref(b, r, mm);
    fy_gb_lit(b, r, ":", 1);
    fy_gb_ref(b, r, mm);
    fy_gb_repeat(b, r, frac, 0, 1);
    fy_gb_ref(b, r, off);
    return r;
}

static int uuid_rule(jsc *c)
{
    fy_gbuild *b = c->b;
    int h = hex_rule(c), r = fy_gb_rule(b);
    static const int groups[] = {8, 4, 4, 4, 12};
    for (int i = 0; i < 5; i++) {
        if (i > 0) {
            fy_gb_lit(b, r, "-", 1);
        }
        fy_gb_repeat(b, r, h, groups[i], groups[i]);
    }
    return r;
}

/* Digits of the decimal strings A..Z (same length N, no sign) into RULE's
 * current alternative and new alternatives: the classic split of a numeric
 * range into digit ranges. */
static void same_len_range(jsc *c, int rule, const char *a, const char *z, int n, int *first)
{
    fy_gbuild *b = c->b;
    if (!*first) {
        fy_gb_alt(b, rule);
    }
    *first = 0;
    int i = 0;
    while (i < n && a[i] == z[i]) {
        i++;
    }
    if (i == n) {
        fy_gb_lit(b, rule, a, (size_t)n);
        return;
    }
    int tail = n - i - 1;
    int a_low = 1, z_high = 1; /* a's tail all 0, z's tail all 9 */
    for (int k = i + 1; k < n; k++) {
        a_low &= a[k] == '0';
        z_high &= z[k] == '9';
    }
    if (a_low && z_high) {
        fy_gb_lit(b, rule, a, (size_t)i);
        digit_range(c, rule, a[i], z[i]);
        if (tail > 0) {
            fy_gb_ref(b, rule, digits_rule(c, tail, tail));
        }
        return;
    }
    /* a[i] a's tail .. 9s | (a[i]+1 .. z[i]-1) any | z[i] 0s .. z's tail */
    char lo[24], hi[24];
    memcpy(lo, a, (size_t)n);
    memcpy(hi, a, (size_t)n);
    for (int k = i + 1; k < n; k++) {
        hi[k] = '9';
    }
    int sub = fy_gb_rule(b), f2 = 1;
    same_len_range(c, sub, lo, hi, n, &f2);
    if (z[i] - a[i] > 1) {
        fy_gb_alt(b, sub);
        fy_gb_lit(b, sub, a, (size_t)i);
        digit_range(c, sub, (char)(a[i] + 1), (char)(z[i] - 1));
        fy_gb_ref(b, sub, digits_rule(c, tail, tail));
    }
    memcpy(lo, z, (size_t)n);
    for (int k = i + 1; k < n; k++) {
        lo[k] = '0';
    }
    same_len_range(c, sub, lo, z, n, &f2);
    fy_gb_ref(b, rule, sub);
}

/* Naturals in [LO, HI] (0 <= LO <= HI), no leading zeros. */
static void natural_range(jsc *c, int rule, long long lo, long long hi, int *first)
{
    long long p = 1;
    for (int len = 1; len <= 18 && lo <= hi; len++, p *= 10) {
        long long top = p * 10 - 1, bottom = len == 1 ? 0 : p;
        if (hi < bottom || lo > top) {
            continue;
        }
        char a[24], z[24];
        snprintf(a, sizeof a, "%lld", lo > bottom ? lo : bottom);
        snprintf(z, sizeof z, "%lld", hi < top ? hi : top);
        same_len_range(c, rule, a, z, len, first);
    }
}

#define INT_LIMIT 999999999999999LL /* 15 digits */

static int int_range_rule(jsc *c, long long lo, long long hi)
{
    fy_gbuild *b = c->b;
    int r = fy_gb_rule(b), first = 1;
    if (lo < 0) {
        int neg = fy_gb_rule(b), f2 = 1;
        natural_range(c, neg, hi < 0 ? -hi : 1, -lo, &f2);
        fy_gb_lit(b, r, "-", 1);
        fy_gb_ref(b, r, neg);
        first = 0;
    }
    if (hi >= 0) {
        natural_range(c, r, lo > 0 ? lo : 0, hi, &first);
    }
    return r;
}

/* --- Schemas ----------------------------------------------------------------------------- */

static int compile(jsc *c, const json_t *s);

static const char *const known[] = {"type",
                                    "properties",
                                    "required",
                                    "additionalProperties",
                                    "enum",
                                    "const",
                                    "items",
                                    "prefixItems",
                                    "minItems",
                                    "maxItems",
                                    "anyOf",
                                    "oneOf",
                                    "allOf",
                                    "$ref",
                                    "$defs",
                                    "definitions",
                                    "minLength",
                                    "maxLength",
                                    "pattern",
                                    "format",
                                    "minimum",
                                    "maximum",
                                    "exclusiveMinimum",
                                    "exclusiveMaximum",
                                    "nullable",
                                    "title",
                                    "description",
                                    "default",
                                    "examples",
                                    "$schema",
                                    "$id",
                                    "$comment",
                                    "deprecated",
                                    "readOnly",
                                    "writeOnly",
                                    NULL};

static const char *const annotations[] = {
    "title",      "description", "default",   "examples", "$schema",     "$id", "$comment",
    "deprecated", "readOnly",    "writeOnly", "$defs",    "definitions", NULL};

static int in_list(const char *k, const char *const *l)
{
    for (int i = 0; l[i]; i++) {
        if (strcmp(k, l[i]) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Every keyword of S is in the subset, and a combinator or $ref has no
 * constraining siblings (they would be generated as if absent). */
static int check_keywords(jsc *c, const json_t *s)
{
    const char *k;
    const json_t *v;
    const char *only = NULL;
    json_object_foreach((json_t *)s, k, v)
    {
        if (!in_list(k, known)) {
            size_t old = ptr_push(c, k);
            (void)old;
            return js_fail(c, FY_EINVAL,
                           "the keyword '%s' is not supported (ferry's JSON Schema "
                           "subset is in the README)",
                           k);
        }
        if (!strcmp(k, "anyOf") || !strcmp(k, "oneOf") || !strcmp(k, "allOf") ||
            !strcmp(k, "$ref") || !strcmp(k, "enum") || !strcmp(k, "const")) {
            only = k;
        }
    }
    if (!only) {
        return 0;
    }
    json_object_foreach((json_t *)s, k, v)
    {
        if (strcmp(k, only) != 0 && !in_list(k, annotations) &&
            !(strcmp(k, "type") == 0 && (!strcmp(only, "enum") || !strcmp(only, "const")))) {
            ptr_push(c, k);
            return js_fail(c, FY_EINVAL,
                           "'%s' beside '%s' is not supported: put it inside each branch", k, only);
        }
    }
    return 0;
}

static int get_count(jsc *c, const json_t *s, const char *key, long long cap, long long *out)
{
    json_t *v = json_object_get(s, key);
    if (!v) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        size_t old = ptr_push(c, key);
        (void)old;
        return js_fail(c, FY_EINVAL, "'%s' must be a non-negative integer", key);
    }
    if (json_integer_value(v) > cap) {
        ptr_push(c, key);
        return js_fail(c, FY_ELIMIT, "'%s' is above the cap of %lld", key, cap);
    }
    *out = json_integer_value(v);
    return 1;
}

/* A literal JSON value (enum member, const). */
static int value_literal(jsc *c, int rule, const json_t *v)
{
    char *t = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!t) {
        return js_fail(c, FY_ENOMEM, "out of memory");
    }
    fy_gb_lit(c->b, rule, t, strlen(t));
    free(t);
    return 0;
}

static int compile_enum(jsc *c, const json_t *s)
{
    json_t *en = json_object_get(s, "enum");
    int r = fy_gb_rule(c->b);
    if (!en) {
        value_literal(c, r, json_object_get(s, "const"));
        return js_built(c, r);
    }
    if (!json_is_array(en) || json_array_size(en) == 0) {
        ptr_push(c, "enum");
        return js_fail(c, FY_EINVAL, "'enum' must be a non-empty array");
    }
    size_t i;
    json_t *v;
    json_array_foreach(en, i, v)
    {
        if (i > 0) {
            fy_gb_alt(c->b, r);
        }
        value_literal(c, r, v);
    }
    return js_built(c, r);
}

static int compile_branches(jsc *c, const json_t *s, const char *key)
{
    json_t *l = json_object_get(s, key);
    size_t old = ptr_push(c, key);
    if (!json_is_array(l) || json_array_size(l) == 0) {
        return js_fail(c, FY_EINVAL, "'%s' must be a non-empty array of schemas", key);
    }
    if (!strcmp(key, "allOf") && json_array_size(l) != 1) {
        return js_fail(c, FY_EINVAL, "'allOf' with more than one schema is not supported");
    }
    int alts[64];
    size_t n = json_array_size(l);
    if (n > 64) {
        return js_fail(c, FY_ELIMIT, "'%s' has more than 64 branches", key);
    }
    for (size_t i = 0; i < n; i++) {
        size_t o2 = ptr_push_index(c, i);
        alts[i] = compile(c, json_array_get(l, i));
        if (alts[i] < 0) {
            return alts[i];
        }
        ptr_pop(c, o2);
    }
    ptr_pop(c, old);
    return js_built(c, fy_gb_choice(c->b, alts, (int)n));
}

/* The node a "$ref" names: "#" or "#/a/b" (RFC 6901, ~0 ~1 unescaped). */
static const json_t *resolve(jsc *c, const char *ref)
{
    if (ref[0] != '#') {
        return NULL;
    }
    const json_t *n = c->root;
    const char *p = ref + 1;
    while (*p == '/' && n) {
        p++;
        char tok[256];
        size_t k = 0;
        for (; *p && *p != '/' && k + 1 < sizeof tok; p++) {
            if (*p == '~' && (p[1] == '0' || p[1] == '1')) {
                tok[k++] = p[1] == '0' ? '~' : '/';
                p++;
            } else {
                tok[k++] = *p;
            }
        }
        tok[k] = 0;
        if (json_is_object(n)) {
            n = json_object_get(n, tok);
        } else if (json_is_array(n)) {
            char *end;
            unsigned long i = strtoul(tok, &end, 10);
            n = *end ? NULL : json_array_get(n, i);
        } else {
            n = NULL;
        }
    }
    return *p ? NULL : n;
}

static int compile_ref(jsc *c, const json_t *s)
{
    const char *ref = json_string_value(json_object_get(s, "$ref"));
    size_t old = ptr_push(c, "$ref");
    const json_t *t = ref ? resolve(c, ref) : NULL;
    if (!t) {
        return js_fail(c, FY_EINVAL,
                       "'$ref' must be a JSON pointer into this schema (\"#/$defs/NAME\"); '%.80s' "
                       "names nothing",
                       ref ? ref : "(not a string)");
    }
    for (int i = 0; i < c->n_memo; i++) {
        if (c->memo[i].node == t) {
            ptr_pop(c, old);
            return c->memo[i].rule;
        }
    }
    if (c->n_memo >= MEMO_MAX) {
        return js_fail(c, FY_ELIMIT, "more than %d distinct $ref targets", MEMO_MAX);
    }
    int r = fy_gb_rule(c->b);
    c->memo[c->n_memo].node = t;
    c->memo[c->n_memo].rule = r;
    c->n_memo++;
    /* The target's own errors are reported at its place in the document. */
    char saved[sizeof c->e->pointer];
    memcpy(saved, c->e->pointer, sizeof saved);
    size_t saved_len = c->plen;
    c->plen = (size_t)snprintf(c->e->pointer, sizeof c->e->pointer, "%s", ref + 1);
    if (c->plen >= sizeof c->e->pointer) {
        c->plen = sizeof c->e->pointer - 1;
    }
    int body = compile(c, t);
    if (body < 0) {
        return body;
    }
    memcpy(c->e->pointer, saved, sizeof saved);
    c->plen = saved_len;
    fy_gb_ref(c->b, r, body);
    ptr_pop(c, old);
    return js_built(c, r);
}

static int compile_string(jsc *c, const json_t *s)
{
    long long min = 0, max = -1;
    int rc;
    if ((rc = get_count(c, s, "minLength", FY_GRAMMAR_REPEAT_MAX, &min)) < 0 ||
        (rc = get_count(c, s, "maxLength", FY_GRAMMAR_REPEAT_MAX, &max)) < 0) {
        return rc;
    }
    if (max >= 0 && max < min) {
        ptr_push(c, "maxLength");
        return js_fail(c, FY_EINVAL, "maxLength is below minLength: no string fits");
    }
    json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    if ((fmt || pat) && (json_object_get(s, "minLength") || json_object_get(s, "maxLength"))) {
        ptr_push(c, fmt ? "format" : "pattern");
        return js_fail(c, FY_EINVAL, "'%s' together with minLength/maxLength is not supported",
                       fmt ? "format" : "pattern");
    }
    if (fmt && pat) {
        ptr_push(c, "pattern");
        return js_fail(c, FY_EINVAL, "'pattern' together with 'format' is not supported");
    }
    if (pat) {
        size_t old = ptr_push(c, "pattern");
        if (!json_is_string(pat)) {
            return js_fail(c, FY_EINVAL, "'pattern' must be a string");
        }
        char err[256] = "";
        int body = -1;
        rc = fy_regex_compile(c->b, json_string_value(pat), json_string_length(pat),
                              FY_REGEX_JSON_STRING, &body, err, sizeof err);
        if (rc < 0) {
            return js_fail(c, rc, "%s", err);
        }
        ptr_pop(c, old);
        int r = fy_gb_rule(c->b);
        fy_gb_lit(c->b, r, "\"", 1);
        fy_gb_ref(c->b, r, body);
        fy_gb_lit(c->b, r, "\"", 1);
        return js_built(c, r);
    }
    if (fmt) {
        const char *f = json_string_value(fmt);
        int body = -1;
        if (f && !strcmp(f, "date")) {
            body = date_rule(c);
        } else if (f && !strcmp(f, "date-time")) {
            int d = date_rule(c), t = time_rule(c);
            body = fy_gb_rule(c->b);
            fy_gb_ref(c->b, body, d);
            fy_gb_lit(c->b, body, "T", 1);
            fy_gb_ref(c->b, body, t);
        } else if (f && !strcmp(f, "uuid")) {
            body = uuid_rule(c);
        } else {
            ptr_push(c, "format");
            return js_fail(c, FY_EINVAL,
                           "format '%.40s' is not supported (date, date-time and uuid are)",
                           f ? f : "(not a string)");
        }
        int r = fy_gb_rule(c->b);
        fy_gb_lit(c->b, r, "\"", 1);
        fy_gb_ref(c->b, r, body);
        fy_gb_lit(c->b, r, "\"", 1);
        return js_built(c, r);
    }
    return js_built(c, string_rule(c, (int)min, (int)max));
}

/* A bound of KEY as an integer bound for integers (rounded inward). */
static int int_bound(jsc *c, const json_t *s, const char *key, int upper, int exclusive,
                     long long *out)
{
    json_t *v = json_object_get(s, key);
    if (!v) {
        return 0;
    }
    if (!json_is_number(v)) {
        ptr_push(c, key);
        return js_fail(c, FY_EINVAL, "'%s' must be a number", key);
    }
    double d = json_number_value(v);
    if (fabs(d) > (double)INT_LIMIT) {
        ptr_push(c, key);
        return js_fail(c, FY_EINVAL, "'%s' is beyond the 15-digit integers ferry generates", key);
    }
    double x = upper ? floor(d) : ceil(d);
    if (exclusive && x == d) {
        x += upper ? -1 : 1;
    }
    *out = (long long)x;
    return 1;
}

static int compile_integer(jsc *c, const json_t *s)
{
    long long lo = -INT_LIMIT, hi = INT_LIMIT, v;
    int rc;
    if ((rc = int_bound(c, s, "minimum", 0, 0, &v)) < 0) {
        return rc;
    }
    lo = rc ? v : lo;
    if ((rc = int_bound(c, s, "exclusiveMinimum", 0, 1, &v)) < 0) {
        return rc;
    }
    lo = rc && v > lo ? v : lo;
    if ((rc = int_bound(c, s, "maximum", 1, 0, &v)) < 0) {
        return rc;
    }
    hi = rc ? v : hi;
    if ((rc = int_bound(c, s, "exclusiveMaximum", 1, 1, &v)) < 0) {
        return rc;
    }
    hi = rc && v < hi ? v : hi;
    if (lo > hi) {
        ptr_push(c, json_object_get(s, "maximum") ? "maximum" : "exclusiveMaximum");
        return js_fail(c, FY_EINVAL, "the integer bounds leave no value");
    }
    if (lo == -INT_LIMIT && hi == INT_LIMIT) {
        return js_built(c, integer_rule(c));
    }
    return js_built(c, int_range_rule(c, lo, hi));
}

static int compile_number(jsc *c, const json_t *s)
{
    static const char *const bounds[] = {"minimum", "exclusiveMinimum", "maximum",
                                         "exclusiveMaximum"};
    int nonneg = 0;
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(s, bounds[i]);
        if (!v) {
            continue;
        }
        if (i < 2 && json_is_number(v) && json_number_value(v) == 0.0) {
            nonneg = 1;
            continue;
        }
        ptr_push(c, bounds[i]);
        return js_fail(c, FY_EINVAL,
                       "'%s' on a number is not supported (on integers it is; on numbers only a "
                       "minimum of 0)",
                       bounds[i]);
    }
    if (nonneg && json_object_get(s, "exclusiveMinimum")) {
        ptr_push(c, "exclusiveMinimum");
        return js_fail(c, FY_EINVAL, "'exclusiveMinimum' on a number is not supported");
    }
    return js_built(c, number_rule(c, nonneg));
}

static int compile_array(jsc *c, const json_t *s)
{
    long long min = 0, max = -1;
    int rc;
    if ((rc = get_count(c, s, "minItems", FY_GRAMMAR_REPEAT_MAX, &min)) < 0 ||
        (rc = get_count(c, s, "maxItems", FY_GRAMMAR_REPEAT_MAX, &max)) < 0) {
        return rc;
    }
    if (max >= 0 && max < min) {
        ptr_push(c, "maxItems");
        return js_fail(c, FY_EINVAL, "maxItems is below minItems: no array fits");
    }
    json_t *items = json_object_get(s, "items"), *prefix = json_object_get(s, "prefixItems");
    int item = -1;
    if (items && json_is_false(items)) {
        item = -2; /* no items past the prefix */
    } else if (items) {
        size_t old = ptr_push(c, "items");
        item = compile(c, items);
        if (item < 0) {
            return item;
        }
        ptr_pop(c, old);
    } else {
        item = any_rule(c, 0);
    }
    if (!prefix) {
        if (item == -2) {
            max = 0;
            item = any_rule(c, 0);
        }
        return js_built(c, list_rule(c, '[', ']', then_ws(c, item), (int)min, (int)max));
    }
    if (!json_is_array(prefix)) {
        ptr_push(c, "prefixItems");
        return js_fail(c, FY_EINVAL, "'prefixItems' must be an array of schemas");
    }
    /* "[" ws p0 ws ("," ws p1 ws ...) then the rest as items, counted to MIN..MAX in all. */
    size_t np = json_array_size(prefix);
    if (max >= 0 && (long long)np > max) {
        np = (size_t)max; /* the prefix is cut to maxItems */
    }
    if ((long long)np < min && item == -2) {
        ptr_push(c, "minItems");
        return js_fail(c, FY_EINVAL, "minItems exceeds prefixItems with items: false");
    }
    fy_gbuild *b = c->b;
    int w = ws(c);
    /* tail_k: what may follow after k prefix items were written (k >= 1). */
    int next = -1; /* the rule for "after prefix item i" */
    int rest = -1;
    if (item != -2 && (max < 0 || max > (long long)np)) {
        int more = fy_gb_rule(b);
        fy_gb_lit(b, more, ",", 1);
        fy_gb_ref(b, more, w);
        fy_gb_ref(b, more, then_ws(c, item));
        long long rmin = min > (long long)np ? min - (long long)np : 0;
        long long rmax = max < 0 ? -1 : max - (long long)np;
        rest = fy_gb_rule(b);
        fy_gb_repeat(b, rest, more, (int)rmin, (int)rmax);
    }
    for (size_t i = np; i-- > 0;) {
        size_t old = ptr_push(c, "prefixItems");
        ptr_push_index(c, i);
        int p = compile(c, json_array_get(prefix, i));
        if (p < 0) {
            return p;
        }
        ptr_pop(c, old);
        /* after_i ::= p_i ws ( "," ws after_{i+1} )? -- optional when i + 1 >= min */
        int after = fy_gb_rule(b);
        fy_gb_ref(b, after, p);
        fy_gb_ref(b, after, w);
        if (i + 1 < np) {
            int cont = fy_gb_rule(b);
            fy_gb_lit(b, cont, ",", 1);
            fy_gb_ref(b, cont, w);
            fy_gb_ref(b, cont, next);
            fy_gb_repeat(b, after, cont, (long long)(i + 1) < min ? 1 : 0, 1);
        } else if (rest >= 0) {
            fy_gb_ref(b, after, rest);
        }
        next = after;
    }
    int r = fy_gb_rule(b);
    fy_gb_lit(b, r, "[", 1);
    fy_gb_ref(b, r, w);
    if (next >= 0) {
        fy_gb_repeat(b, r, next, min > 0 ? 1 : 0, 1);
    }
    fy_gb_lit(b, r, "]", 1);
    return js_built(c, r);
}

static int compile_object(jsc *c, const json_t *s)
{
    fy_gbuild *b = c->b;
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required"),
           *add = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) {
        ptr_push(c, "properties");
        return js_fail(c, FY_EINVAL, "'properties' must be an object");
    }
    if (req && !json_is_array(req)) {
        ptr_push(c, "required");
        return js_fail(c, FY_EINVAL, "'required' must be an array of property names");
    }
    size_t i;
    json_t *v;
    json_array_foreach(req, i, v)
    {
        if (!json_is_string(v) || !json_object_get(props, json_string_value(v))) {
            ptr_push(c, "required");
            ptr_push_index(c, i);
            return js_fail(c, FY_EINVAL,
                           "'required' names %s%.60s%s, which 'properties' does not define",
                           json_is_string(v) ? "'" : "",
                           json_is_string(v) ? json_string_value(v) : "a non-string",
                           json_is_string(v) ? "'" : "");
        }
    }
    if (add && !json_is_boolean(add) && !json_is_object(add)) {
        ptr_push(c, "additionalProperties");
        return js_fail(c, FY_EINVAL, "'additionalProperties' must be a boolean or a schema");
    }
    size_t n = props ? json_object_size(props) : 0;
    int w = ws(c);
    if (n == 0) {
        /* A map: additionalProperties' schema (or any value) under string keys, unless false. */
        if (add && json_is_false(add)) {
            return js_built(c, list_rule(c, '{', '}', w, 0, 0));
        }
        int val;
        if (add && json_is_object(add)) {
            size_t old = ptr_push(c, "additionalProperties");
            val = compile(c, add);
            if (val < 0) {
                return val;
            }
            ptr_pop(c, old);
        } else {
            val = any_rule(c, 0);
        }
        return js_built(c,
                        list_rule(c, '{', '}', member_rule(c, string_rule(c, 0, -1), val), 0, -1));
    }
    if (n > 512) {
        ptr_push(c, "properties");
        return js_fail(c, FY_ELIMIT, "more than 512 properties");
    }
    /* Members in the schema's order; first_i / rest_i: the members from i on,
     * before any member was written / after one was (so a comma comes first). */
    int *kv = malloc(n * sizeof *kv);
    int *opt = malloc(n * sizeof *opt);
    if (!kv || !opt) {
        free(kv);
        free(opt);
        return js_fail(c, FY_ENOMEM, "out of memory");
    }
    const char *k;
    size_t idx = 0;
    int rc = 0;
    json_object_foreach(props, k, v)
    {
        size_t old = ptr_push(c, "properties");
        ptr_push(c, k);
        int val = compile(c, v);
        if (val < 0) {
            rc = val;
            break;
        }
        ptr_pop(c, old);
        json_t *key = json_string(k);
        int kr = fy_gb_rule(b);
        value_literal(c, kr, key);
        json_decref(key);
        kv[idx] = member_rule(c, kr, val);
        opt[idx] = 1;
        json_array_foreach(req, i, key)
        {
            if (!strcmp(json_string_value(key), k)) {
                opt[idx] = 0;
            }
        }
        idx++;
    }
    int first = -1;
    if (rc == 0) {
        int rest = fy_gb_rule(b); /* rest_n and first_n: nothing */
        first = fy_gb_rule(b);
        for (size_t j = n; j-- > 0;) {
            int nrest = fy_gb_rule(b), nfirst = fy_gb_rule(b);
            fy_gb_lit(b, nrest, ",", 1);
            fy_gb_ref(b, nrest, w);
            fy_gb_ref(b, nrest, kv[j]);
            fy_gb_ref(b, nrest, rest);
            fy_gb_ref(b, nfirst, kv[j]);
            fy_gb_ref(b, nfirst, rest);
            if (opt[j]) {
                fy_gb_alt(b, nrest);
                fy_gb_ref(b, nrest, rest);
                fy_gb_alt(b, nfirst);
                fy_gb_ref(b, nfirst, first);
            }
            rest = nrest;
            first = nfirst;
        }
    }
    free(kv);
    free(opt);
    if (rc < 0) {
        return rc;
    }
    int r = fy_gb_rule(b);
    fy_gb_lit(b, r, "{", 1);
    fy_gb_ref(b, r, w);
    fy_gb_ref(b, r, first);
    fy_gb_lit(b, r, "}", 1);
    return js_built(c, r);
}

/* The rule for type name T at S. */
static int compile_type(jsc *c, const json_t *s, const char *t)
{
    if (!strcmp(t, "string")) {
        return compile_string(c, s);
    }
    if (!strcmp(t, "integer")) {
        return compile_integer(c, s);
    }
    if (!strcmp(t, "number")) {
        return compile_number(c, s);
    }
    if (!strcmp(t, "boolean")) {
        static const char *const tf[] = {"true", "false", NULL};
        return js_built(c, lits_rule(c, tf));
    }
    if (!strcmp(t, "null")) {
        return js_built(c, lit_rule(c, "null"));
    }
    if (!strcmp(t, "object")) {
        return compile_object(c, s);
    }
    if (!strcmp(t, "array")) {
        return compile_array(c, s);
    }
    ptr_push(c, "type");
    return js_fail(c, FY_EINVAL, "unknown type '%.40s'", t);
}

/* The type a schema without "type" has, from its keywords (NULL: any). */
static const char *implied_type(const json_t *s)
{
    static const struct {
        const char *kw, *type;
    } map[] = {{"properties", "object"},      {"additionalProperties", "object"},
               {"required", "object"},        {"items", "array"},
               {"prefixItems", "array"},      {"minItems", "array"},
               {"maxItems", "array"},         {"minLength", "string"},
               {"maxLength", "string"},       {"pattern", "string"},
               {"format", "string"},          {"minimum", "number"},
               {"maximum", "number"},         {"exclusiveMinimum", "number"},
               {"exclusiveMaximum", "number"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        if (json_object_get(s, map[i].kw)) {
            return map[i].type;
        }
    }
    return NULL;
}

static int compile(jsc *c, const json_t *s)
{
    if (json_is_true(s)) {
        return js_built(c, any_rule(c, 0));
    }
    if (json_is_false(s)) {
        return js_fail(c, FY_EINVAL, "the schema 'false' accepts nothing");
    }
    if (!json_is_object(s)) {
        return js_fail(c, FY_EINVAL, "a schema must be an object or a boolean");
    }
    if (++c->depth > FY_JSONSCHEMA_MAX_DEPTH) {
        return js_fail(c, FY_ELIMIT, "the schema nests deeper than %d", FY_JSONSCHEMA_MAX_DEPTH);
    }
    int rc = check_keywords(c, s);
    if (rc < 0) {
        return rc;
    }
    int r;
    if (json_object_get(s, "enum") || json_object_get(s, "const")) {
        r = compile_enum(c, s);
    } else if (json_object_get(s, "$ref")) {
        r = compile_ref(c, s);
    } else if (json_object_get(s, "anyOf")) {
        r = compile_branches(c, s, "anyOf");
    } else if (json_object_get(s, "oneOf")) {
        r = compile_branches(c, s, "oneOf");
    } else if (json_object_get(s, "allOf")) {
        r = compile_branches(c, s, "allOf");
    } else {
        json_t *type = json_object_get(s, "type"), *nullable = json_object_get(s, "nullable");
        const char *names[8];
        int n = 0;
        if (json_is_string(type)) {
            names[n++] = json_string_value(type);
        } else if (json_is_array(type) && json_array_size(type) > 0 && json_array_size(type) <= 7) {
            size_t i;
            json_t *v;
            json_array_foreach(type, i, v)
            {
                if (!json_is_string(v)) {
                    ptr_push(c, "type");
                    return js_fail(c, FY_EINVAL, "'type' must be a name or a list of names");
                }
                names[n++] = json_string_value(v);
            }
        } else if (type) {
            ptr_push(c, "type");
            return js_fail(c, FY_EINVAL, "'type' must be a name or a list of 1 to 7 names");
        } else if (implied_type(s)) {
            names[n++] = implied_type(s);
        }
        if (nullable && json_is_true(nullable)) {
            names[n++] = "null";
        }
        if (n == 0) {
            r = js_built(c, any_rule(c, 0));
        } else {
            int alts[8];
            for (int i = 0; i < n; i++) {
                alts[i] = compile_type(c, s, names[i]);
                if (alts[i] < 0) {
                    return alts[i];
                }
            }
            r = n == 1 ? alts[0] : js_built(c, fy_gb_choice(c->b, alts, n));
        }
    }
    c->depth--;
    return r;
}

int fy_jsonschema_compile(fy_gbuild *b, const json_t *schema, int strict, fy_jsonschema_error *e)
{
    jsc *c = malloc(sizeof *c);
    if (!c) {
        snprintf(e->message, sizeof e->message, "out of memory");
        e->pointer[0] = 0;
        return FY_ENOMEM;
    }
    jsc_init(c, b, schema, strict, e);
    char *text = json_dumps(schema, JSON_ENCODE_ANY | JSON_COMPACT);
    size_t len = text ? strlen(text) : 0;
    free(text);
    int r;
    if (len > FY_JSONSCHEMA_MAX_BYTES) {
        r = js_fail(c, FY_ELIMIT, "the schema is %zu bytes, above the cap of %d", len,
                    FY_JSONSCHEMA_MAX_BYTES);
    } else {
        r = compile(c, schema);
    }
    free(c);
    return r;
}
