/* regex.c: the regex subset of regex.h, parsed into a small tree and
 * emitted as grammar rules.
 *
 * The tree is simplified as it is built: empty and impossible parts fold
 * away, and a repetition of something that can match the empty string
 * repeats its non-empty part instead (X{n,m} = X'{0,m} when X matches the
 * empty string, X' being X without it), so the grammar never has to repeat a
 * rule that can match nothing. Emission inlines sequences into the rule at
 * hand and gives alternations, repeated parts and non-ASCII classes one rule
 * each, built once. */
#include "runner/api/regex.h"

#include "common/err.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { N_EMPTY, N_NOTHING, N_CHAR, N_CLASS, N_CAT, N_ALT, N_REP };

typedef struct {
    uint8_t kind, nullable, shared; /* shared: emitted as a reference to its rule */
    int a, n; /* CHAR: a is the code point; CLASS: ranges rg[a .. a+n); CAT, ALT: kids[a .. a+n);
                 REP: a is the child */
    int min, max; /* REP; max -1 is unbounded */
    int rule;     /* its rule once built, else -1 */
    int ne;       /* its non-empty part once derived, else -1 */
} rnode;

/* A class rule already built, for reuse by an equal class. */
typedef struct {
    int a, n, rule;
} rclass;

typedef struct {
    fy_gbuild *b;
    fy_regex_mode mode;
    const uint8_t *p;
    size_t len, pos;
    int depth;
    rnode *nd;
    int n_nd, cap_nd;
    int *kids;
    int n_kids, cap_kids;
    int *scr; /* the parser's stack of items being collected */
    int n_scr, cap_scr;
    fy_cprange *rg;
    int n_rg, cap_rg;
    rclass *cls;
    int n_cls, cap_cls;
    int dot; /* the node of '.', shared by every '.' */
    char *err;
    size_t errlen;
    int rc;
} rx;

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    int c = *cap ? *cap : 16;
    while (c < need) {
        c *= 2;
    }
    void *q = realloc(*p, (size_t)c * size);
    if (!q) {
        return FY_ENOMEM;
    }
    *p = q;
    *cap = c;
    return 0;
}

static int rx_oom(rx *x)
{
    if (!x->rc) {
        x->rc = fy_fail(x->err, x->errlen, FY_ENOMEM, "pattern: out of memory");
    }
    return -1;
}

#define RX_FAIL(x, code, ...) \
    ((x)->rc ? -1 : ((x)->rc = fy_fail((x)->err, (x)->errlen, code, "pattern: " __VA_ARGS__), -1))

/* --- The tree ---------------------------------------------------------------------------- */

static int node_new(rx *x, int kind)
{
    if (grow((void **)&x->nd, &x->cap_nd, x->n_nd + 1, sizeof *x->nd) < 0) {
        return rx_oom(x);
    }
    x->nd[x->n_nd] = (rnode){.kind = (uint8_t)kind, .rule = -1, .ne = -1};
    x->nd[x->n_nd].nullable = kind == N_EMPTY;
    return x->n_nd++;
}

static int mk_char(rx *x, uint32_t cp)
{
    int n = node_new(x, N_CHAR);
    if (n >= 0) {
        x->nd[n].a = (int)cp;
    }
    return n;
}

/* A sequence of IDS[0..N) (copied; IDS may not point into x->kids). */
static int mk_cat(rx *x, const int *ids, int n)
{
    int keep = 0, last = -1;
    for (int i = 0; i < n; i++) {
        if (x->nd[ids[i]].kind == N_NOTHING) {
            return node_new(x, N_NOTHING);
        }
        if (x->nd[ids[i]].kind != N_EMPTY) {
            keep++;
            last = ids[i];
        }
    }
    if (keep == 0) {
        return node_new(x, N_EMPTY);
    }
    if (keep == 1) {
        return last;
    }
    if (grow((void **)&x->kids, &x->cap_kids, x->n_kids + keep, sizeof *x->kids) < 0) {
        return rx_oom(x);
    }
    int a = x->n_kids, nullable = 1;
    for (int i = 0; i < n; i++) {
        if (x->nd[ids[i]].kind != N_EMPTY) {
            nullable &= x->nd[ids[i]].nullable;
            x->kids[x->n_kids++] = ids[i];
        }
    }
    int c = node_new(x, N_CAT);
    if (c >= 0) {
        x->nd[c].a = a;
        x->nd[c].n = keep;
        x->nd[c].nullable = (uint8_t)nullable;
    }
    return c;
}

/* One of IDS[0..N) (copied; IDS may not point into x->kids). */
static int mk_alt(rx *x, const int *ids, int n)
{
    int keep = 0, last = -1, empty = 0;
    for (int i = 0; i < n; i++) {
        int k = x->nd[ids[i]].kind;
        if (k != N_NOTHING && !(k == N_EMPTY && empty)) {
            keep++;
            last = ids[i];
            empty |= k == N_EMPTY;
        }
    }
    if (keep == 0) {
        return node_new(x, N_NOTHING);
    }
    if (keep == 1) {
        return last;
    }
    if (grow((void **)&x->kids, &x->cap_kids, x->n_kids + keep, sizeof *x->kids) < 0) {
        return rx_oom(x);
    }
    int a = x->n_kids, nullable = 0;
    empty = 0;
    for (int i = 0; i < n; i++) {
        int k = x->nd[ids[i]].kind;
        if (k != N_NOTHING && !(k == N_EMPTY && empty)) {
            empty |= k == N_EMPTY;
            nullable |= x->nd[ids[i]].nullable;
            x->kids[x->n_kids++] = ids[i];
        }
    }
    int c = node_new(x, N_ALT);
    if (c >= 0) {
        x->nd[c].a = a;
        x->nd[c].n = keep;
        x->nd[c].nullable = (uint8_t)nullable;
    }
    return c;
}

static int mk_rep(rx *x, int c, int min, int max);

/* N without the empty string: N itself when N cannot match it. Memoised. */
static int non_empty(rx *x, int n)
{
    if (!x->nd[n].nullable) {
        return n;
    }
    if (x->nd[n].ne >= 0) {
        return x->nd[n].ne;
    }
    int r = -1, k = x->nd[n].n;
    int *ids = NULL;
    switch (x->nd[n].kind) {
    case N_EMPTY:
        r = node_new(x, N_NOTHING);
        break;
    case N_REP:
        /* The child is never nullable (mk_rep saw to it): X{0,m}' = X{1,m}. */
        r = mk_rep(x, x->nd[n].a, 1, x->nd[n].max);
        break;
    case N_ALT:
        ids = malloc((size_t)k * sizeof *ids);
        if (!ids) {
            return rx_oom(x);
        }
        memcpy(ids, x->kids + x->nd[n].a, (size_t)k * sizeof *ids);
        for (int i = 0; i < k && x->rc == 0; i++) {
            ids[i] = non_empty(x, ids[i]);
        }
        r = x->rc ? -1 : mk_alt(x, ids, k);
        break;
    case N_CAT: {
        /* Every part can be empty: the first non-empty one is part I, so
         * (c1..ck)' = | over I of ( cI' c(I+1) .. ck ), quadratic in k. The
         * element cap would refuse a large k anyway; refuse it first. */
        if ((int64_t)k * (k + 1) / 2 > FY_GRAMMAR_MAX_ELEMENTS) {
            return RX_FAIL(x, FY_ELIMIT, "%d optional parts in one repeated sequence are too many",
                           k);
        }
        ids = malloc((size_t)(2 * k) * sizeof *ids);
        if (!ids) {
            return rx_oom(x);
        }
        int *seq = ids + k;
        for (int i = 0; i < k; i++) {
            int c = x->kids[x->nd[n].a + i];
            if (x->nd[c].kind == N_CAT) {
                x->nd[c].shared = 1; /* referenced from up to K sequences: build it once */
            }
        }
        for (int i = 0; i < k && x->rc == 0; i++) {
            memcpy(seq, x->kids + x->nd[n].a + i, (size_t)(k - i) * sizeof *seq);
            seq[0] = non_empty(x, seq[0]);
            ids[i] = x->rc ? -1 : mk_cat(x, seq, k - i);
        }
        r = x->rc ? -1 : mk_alt(x, ids, k);
        break;
    }
    }
    free(ids);
    if (r >= 0) {
        x->nd[n].ne = r;
    }
    return r;
}

/* C repeated MIN..MAX times (MAX -1: unbounded). */
static int mk_rep(rx *x, int c, int min, int max)
{
    if (max == 0 || x->nd[c].kind == N_EMPTY) {
        return node_new(x, N_EMPTY);
    }
    if (x->nd[c].kind == N_NOTHING) {
        return node_new(x, min == 0 ? N_EMPTY : N_NOTHING);
    }
    if (x->nd[c].nullable) {
        /* X{n,m} = X'{0,m}: the empty copies may make up any minimum. */
        c = non_empty(x, c);
        if (c < 0) {
            return -1;
        }
        if (x->nd[c].kind == N_NOTHING) {
            return node_new(x, N_EMPTY);
        }
        min = 0;
    }
    if (min == 1 && max == 1) {
        return c;
    }
    int r = node_new(x, N_REP);
    if (r >= 0) {
        x->nd[r].a = c;
        x->nd[r].min = min;
        x->nd[r].max = max;
        x->nd[r].nullable = min == 0;
    }
    return r;
}

static int cprange_cmp(const void *a, const void *b)
{
    const fy_cprange *p = a, *q = b;
    return p->lo < q->lo ? -1 : p->lo > q->lo;
}

/* A class of the ranges rg[A .. n_rg), negated when NEG: sorted, merged and
 * without surrogates, appended to rg. */
static int mk_class(rx *x, int a, int neg)
{
    int n = x->n_rg - a;
    qsort(x->rg + a, (size_t)n, sizeof *x->rg, cprange_cmp);
    /* Merged into the same place (it only shrinks). */
    int m = 0;
    for (int i = 0; i < n; i++) {
        fy_cprange r = x->rg[a + i];
        if (m > 0 && r.lo <= x->rg[a + m - 1].hi + 1) {
            if (r.hi > x->rg[a + m - 1].hi) {
                x->rg[a + m - 1].hi = r.hi;
            }
        } else {
            x->rg[a + m++] = r;
        }
    }
    x->n_rg = a + m;
    /* The result (negated, then cut at the surrogates) after the merged list. */
    int out = x->n_rg;
    fy_cprange tmp[2];
    uint32_t next = 0;
    for (int i = 0; i <= m; i++) {
        int nt = 0;
        if (!neg && i < m) {
            tmp[nt++] = x->rg[a + i];
        } else if (neg) {
            uint32_t end = i < m ? x->rg[a + i].lo : 0x110000;
            if (end > next) {
                tmp[nt++] = (fy_cprange){next, end - 1};
            }
            if (i < m) {
                next = x->rg[a + i].hi + 1;
            }
        }
        for (int t = 0; t < nt; t++) {
            fy_cprange r = tmp[t];
            fy_cprange parts[2] = {{r.lo, r.hi < 0xD7FF ? r.hi : 0xD7FF},
                                   {r.lo > 0xE000 ? r.lo : 0xE000, r.hi}};
            for (int p = 0; p < 2; p++) {
                if (parts[p].lo <= parts[p].hi) {
                    if (grow((void **)&x->rg, &x->cap_rg, x->n_rg + 1, sizeof *x->rg) < 0) {
                        return rx_oom(x);
                    }
                    x->rg[x->n_rg++] = parts[p];
                }
            }
        }
    }
    int c = node_new(x, x->n_rg > out ? N_CLASS : N_NOTHING);
    if (c >= 0) {
        x->nd[c].a = out;
        x->nd[c].n = x->n_rg - out;
    }
    return c;
}

/* --- Parsing ----------------------------------------------------------------------------- */

static int push_range(rx *x, uint32_t lo, uint32_t hi)
{
    if (grow((void **)&x->rg, &x->cap_rg, x->n_rg + 1, sizeof *x->rg) < 0) {
        return rx_oom(x);
    }
    x->rg[x->n_rg++] = (fy_cprange){lo, hi};
    return 0;
}

/* The ranges of shorthand C (d w s, or D W S for the complement). */
static int push_shorthand(rx *x, int c)
{
    static const fy_cprange d[] = {{'0', '9'}};
    static const fy_cprange w[] = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
    static const fy_cprange s[] = {{'\t', '\r'}, {' ', ' '}};
    const fy_cprange *r = d;
    int n = 1;
    int lc = c | 0x20;
    if (lc == 'w') {
        r = w;
        n = 4;
    } else if (lc == 's') {
        r = s;
        n = 2;
    }
    if (lc == c) {
        for (int i = 0; i < n; i++) {
            if (push_range(x, r[i].lo, r[i].hi) < 0) {
                return -1;
            }
        }
        return 0;
    }
    uint32_t next = 0;
    for (int i = 0; i <= n; i++) {
        uint32_t end = i < n ? r[i].lo : 0x110000;
        if (end > next && push_range(x, next, end - 1) < 0) {
            return -1;
        }
        if (i < n) {
            next = r[i].hi + 1;
        }
    }
    return 0;
}

/* One UTF-8 character at x->pos, strictly decoded (no overlong forms, no
 * surrogates, nothing past U+10FFFF); -1 with the error when invalid. */
static int64_t next_utf8(rx *x)
{
    const uint8_t *p = x->p + x->pos;
    size_t left = x->len - x->pos;
    uint32_t c = p[0];
    int n = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    if (n == 0 || (size_t)n > left) {
        return RX_FAIL(x, FY_EINVAL, "invalid UTF-8 at offset %zu", x->pos);
    }
    if (n > 1) {
        c &= 0x3Fu >> (n - 1);
    }
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return RX_FAIL(x, FY_EINVAL, "invalid UTF-8 at offset %zu", x->pos);
        }
        c = (c << 6) | (p[i] & 0x3Fu);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < least[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) {
        return RX_FAIL(x, FY_EINVAL, "invalid UTF-8 at offset %zu", x->pos);
    }
    x->pos += (size_t)n;
    return c;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* N hex digits at x->pos, or -1 (nothing consumed). */
static int64_t hex_digits(rx *x, int n)
{
    if (x->len - x->pos < (size_t)n) {
        return -1;
    }
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int h = hexval(x->p[x->pos + (size_t)i]);
        if (h < 0) {
            return -1;
        }
        v = v * 16 + (uint32_t)h;
    }
    x->pos += (size_t)n;
    return v;
}

enum { ESC_SET = -2 }; /* an escape() result: a shorthand, its letter in *SET */

/* The escape at x->pos (just past the '\'), at offset AT. Returns the code
 * point, ESC_SET with the shorthand letter in *SET, or -1 with the error. */
static int64_t escape(rx *x, size_t at, int in_class, int *set)
{
    if (x->pos >= x->len) {
        return RX_FAIL(x, FY_EINVAL, "trailing '\\' at offset %zu", at);
    }
    int c = x->p[x->pos++];
    switch (c) {
    case 'd':
    case 'D':
    case 'w':
    case 'W':
    case 's':
    case 'S':
        *set = c;
        return ESC_SET;
    case 'n':
        return '\n';
    case 't':
        return '\t';
    case 'r':
        return '\r';
    case 'f':
        return '\f';
    case 'v':
        return '\v';
    case '0':
        if (x->pos < x->len && x->p[x->pos] >= '0' && x->p[x->pos] <= '9') {
            return RX_FAIL(x, FY_EINVAL, "octal escape '\\0%c' at offset %zu is not supported",
                           x->p[x->pos], at);
        }
        return 0;
    case 'b':
        if (in_class) {
            return '\b';
        }
        return RX_FAIL(x, FY_EINVAL, "word boundary '\\b' at offset %zu is not supported", at);
    case 'B':
        return RX_FAIL(x, FY_EINVAL, "non-word boundary '\\B' at offset %zu is not supported", at);
    case 'k':
        return RX_FAIL(x, FY_EINVAL, "backreference '\\k' at offset %zu is not supported", at);
    case 'p':
    case 'P':
        return RX_FAIL(x, FY_EINVAL,
                       "Unicode property escape '\\%c' at offset %zu is not supported", c, at);
    case 'A':
    case 'z':
    case 'Z':
    case 'G':
        return RX_FAIL(x, FY_EINVAL, "anchor '\\%c' at offset %zu is not supported", c, at);
    case 'x': {
        int64_t v = hex_digits(x, 2);
        if (v < 0) {
            return RX_FAIL(x, FY_EINVAL, "escape '\\x' at offset %zu needs two hex digits", at);
        }
        return v;
    }
    case 'u': {
        int64_t v = hex_digits(x, 4);
        if (v < 0) {
            return RX_FAIL(x, FY_EINVAL, "escape '\\u' at offset %zu needs four hex digits", at);
        }
        if (v >= 0xD800 && v <= 0xDBFF && x->len - x->pos >= 6 && x->p[x->pos] == '\\' &&
            x->p[x->pos + 1] == 'u') {
            size_t save = x->pos;
            x->pos += 2;
            int64_t lo = hex_digits(x, 4);
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                return 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
            }
            x->pos = save;
        }
        if (v >= 0xD800 && v <= 0xDFFF) {
            return RX_FAIL(x, FY_EINVAL, "lone surrogate '\\u%04X' at offset %zu is not supported",
                           (unsigned)v, at);
        }
        return v;
    }
    }
    if (c >= '1' && c <= '9') {
        return RX_FAIL(x, FY_EINVAL, "backreference '\\%c' at offset %zu is not supported", c, at);
    }
    if (c > 0x20 && c < 0x7F &&
        !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
        return c; /* escaped punctuation is itself */
    }
    if (c == ' ') {
        return c;
    }
    if (c >= 0x80) {
        return RX_FAIL(x, FY_EINVAL,
                       "escape of a non-ASCII character at offset %zu is not "
                       "supported",
                       at);
    }
    if (c < 0x20 || c == 0x7F) {
        return RX_FAIL(x, FY_EINVAL,
                       "escape of control character 0x%02X at offset %zu is not "
                       "supported",
                       (unsigned)c, at);
    }
    return RX_FAIL(x, FY_EINVAL, "escape '\\%c' at offset %zu is not supported", c, at);
}

/* One class member at x->pos: a code point, ESC_SET (letter in *SET) or -1. */
static int64_t class_atom(rx *x, int *set)
{
    size_t at = x->pos;
    uint8_t c = x->p[x->pos];
    if (c == '\\') {
        x->pos++;
        return escape(x, at, 1, set);
    }
    if (c == '[' && x->pos + 1 < x->len &&
        (x->p[x->pos + 1] == ':' || x->p[x->pos + 1] == '=' || x->p[x->pos + 1] == '.')) {
        return RX_FAIL(x, FY_EINVAL, "POSIX class '[%c' at offset %zu is not supported",
                       x->p[x->pos + 1], at);
    }
    return next_utf8(x);
}

/* A class; x->pos is just past its '[' at offset AT. */
static int parse_class(rx *x, size_t at)
{
    int neg = 0, a = x->n_rg;
    if (x->pos < x->len && x->p[x->pos] == '^') {
        neg = 1;
        x->pos++;
    }
    if (x->pos < x->len && x->p[x->pos] == ']') {
        return RX_FAIL(x, FY_EINVAL,
                       "class starting with ']' at offset %zu is not supported (escape it)", at);
    }
    for (;;) {
        if (x->pos >= x->len) {
            return RX_FAIL(x, FY_EINVAL, "unbalanced '[' at offset %zu", at);
        }
        if (x->p[x->pos] == ']') {
            x->pos++;
            break;
        }
        size_t at1 = x->pos;
        int set = 0;
        int64_t lo = class_atom(x, &set);
        if (lo == -1) {
            return -1;
        }
        int range = x->pos + 1 < x->len && x->p[x->pos] == '-' && x->p[x->pos + 1] != ']';
        if (range && lo == ESC_SET) {
            return RX_FAIL(x, FY_EINVAL, "range from '\\%c' at offset %zu is not supported", set,
                           at1);
        }
        if (lo == ESC_SET) {
            if (push_shorthand(x, set) < 0) {
                return -1;
            }
            continue;
        }
        int64_t hi = lo;
        if (range) {
            x->pos++;
            size_t at2 = x->pos;
            hi = class_atom(x, &set);
            if (hi == -1) {
                return -1;
            }
            if (hi == ESC_SET) {
                return RX_FAIL(x, FY_EINVAL, "range to '\\%c' at offset %zu is not supported", set,
                               at2);
            }
            if (hi < lo) {
                return RX_FAIL(x, FY_EINVAL, "range out of order at offset %zu", at1);
            }
        }
        if (push_range(x, (uint32_t)lo, (uint32_t)hi) < 0) {
            return -1;
        }
    }
    return mk_class(x, a, neg);
}

/* A decimal number at x->pos (digits only), capped: -1 when none, and
 * FY_REGEX_MAX_REPEAT + 1 when larger. */
static long number(rx *x)
{
    long v = -1;
    while (x->pos < x->len && x->p[x->pos] >= '0' && x->p[x->pos] <= '9') {
        long d = x->p[x->pos++] - '0';
        v = v < 0 ? d : v * 10 + d;
        if (v > FY_REGEX_MAX_REPEAT) {
            v = FY_REGEX_MAX_REPEAT + 1;
        }
    }
    return v;
}

/* A '{' quantifier at x->pos: 1 with *MIN and *MAX (consumed), 0 when the
 * '{' is a literal (nothing consumed), -1 on an error. */
static int brace_quant(rx *x, long *min, long *max)
{
    size_t at = x->pos;
    x->pos++;
    if (x->pos < x->len && x->p[x->pos] == ',') {
        size_t save = x->pos++;
        if (number(x) >= 0 && x->pos < x->len && x->p[x->pos] == '}') {
            return RX_FAIL(x, FY_EINVAL, "quantifier '{,m}' at offset %zu is not supported", at);
        }
        x->pos = save;
    }
    long n = number(x), m = n;
    if (n >= 0 && x->pos < x->len && x->p[x->pos] == ',') {
        x->pos++;
        m = number(x);
        if (m < 0) {
            m = -1;
        }
    } else if (n < 0) {
        x->pos = at;
        return 0;
    }
    if (x->pos >= x->len || x->p[x->pos] != '}') {
        x->pos = at;
        return 0;
    }
    x->pos++;
    if (n > FY_REGEX_MAX_REPEAT || m > FY_REGEX_MAX_REPEAT) {
        return RX_FAIL(x, FY_ELIMIT, "repetition bound at offset %zu is over %d", at,
                       FY_REGEX_MAX_REPEAT);
    }
    if (m >= 0 && n > m) {
        return RX_FAIL(x, FY_EINVAL, "repetition '{%ld,%ld}' at offset %zu has min > max", n, m,
                       at);
    }
    *min = n;
    *max = m;
    return 1;
}

static int scr_push(rx *x, int v)
{
    if (grow((void **)&x->scr, &x->cap_scr, x->n_scr + 1, sizeof *x->scr) < 0) {
        return rx_oom(x);
    }
    x->scr[x->n_scr++] = v;
    return 0;
}

static int parse_alt(rx *x);

/* A group; x->pos is just past its '(' at offset AT. */
static int parse_group(rx *x, size_t at)
{
    const uint8_t *p = x->p;
    size_t left = x->len - x->pos;
    if (left >= 1 && p[x->pos] == '?') {
        const char *what = NULL, *name = NULL;
        size_t n = 0;
        int c1 = left >= 2 ? p[x->pos + 1] : -1, c2 = left >= 3 ? p[x->pos + 2] : -1;
        if (c1 == ':') {
            n = 2;
        } else if ((c1 == '<' && c2 != '=' && c2 != '!') || (c1 == 'P' && c2 == '<')) {
            size_t i = x->pos + (c1 == 'P' ? 3 : 2), s = i;
            while (i < x->len &&
                   (p[i] == '_' || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                    (i > s && p[i] >= '0' && p[i] <= '9'))) {
                i++;
            }
            if (i == s || i >= x->len || p[i] != '>') {
                return RX_FAIL(x, FY_EINVAL, "malformed group name at offset %zu", at);
            }
            n = i + 1 - x->pos;
        } else if (c1 == '=') {
            what = "lookahead", name = "(?=";
        } else if (c1 == '!') {
            what = "negative lookahead", name = "(?!";
        } else if (c1 == '<' && c2 == '=') {
            what = "lookbehind", name = "(?<=";
        } else if (c1 == '<') {
            what = "negative lookbehind", name = "(?<!";
        } else if (c1 == 'P' && c2 == '=') {
            what = "backreference", name = "(?P=";
        } else if (c1 == 'P' && c2 == '>') {
            what = "recursion", name = "(?P>";
        } else if (c1 == '>') {
            what = "atomic group", name = "(?>";
        } else if (c1 == '#') {
            what = "comment", name = "(?#";
        } else if (c1 == '(') {
            what = "conditional", name = "(?(";
        } else if (c1 == '|') {
            what = "branch reset", name = "(?|";
        } else if (c1 == 'R' || c1 == '&' || (c1 >= '0' && c1 <= '9') || c1 == '+') {
            what = "recursion", name = "(?R";
        } else if (c1 == '-' || c1 == '^' || (c1 >= 'a' && c1 <= 'z') || (c1 >= 'A' && c1 <= 'Z')) {
            return RX_FAIL(x, FY_EINVAL, "inline flags '(?%c' at offset %zu are not supported", c1,
                           at);
        } else {
            what = "group", name = "(?";
        }
        if (what) {
            return RX_FAIL(x, FY_EINVAL, "%s '%s' at offset %zu is not supported", what, name, at);
        }
        x->pos += n;
    }
    if (++x->depth > FY_REGEX_MAX_DEPTH) {
        return RX_FAIL(x, FY_ELIMIT, "groups nested deeper than %d at offset %zu",
                       FY_REGEX_MAX_DEPTH, at);
    }
    int r = parse_alt(x);
    x->depth--;
    if (r < 0) {
        return -1;
    }
    if (x->pos >= x->len || p[x->pos] != ')') {
        return RX_FAIL(x, FY_EINVAL, "unbalanced '(' at offset %zu", at);
    }
    x->pos++;
    return r;
}

/* An atom at x->pos: a node, -1 on an error, or -2 for none (an anchor). */
static int parse_atom(rx *x)
{
    size_t at = x->pos;
    uint8_t c = x->p[x->pos];
    switch (c) {
    case '(':
        x->pos++;
        return parse_group(x, at);
    case '[':
        x->pos++;
        return parse_class(x, at);
    case '.':
        x->pos++;
        if (x->dot < 0) {
            int a = x->n_rg;
            if (push_range(x, 0, '\n' - 1) < 0 || push_range(x, '\n' + 1, 0x10FFFF) < 0) {
                return -1;
            }
            x->dot = mk_class(x, a, 0);
        }
        return x->dot;
    case '\\': {
        x->pos++;
        int set = 0;
        int64_t v = escape(x, at, 0, &set);
        if (v == -1) {
            return -1;
        }
        if (v == ESC_SET) {
            int a = x->n_rg;
            return push_shorthand(x, set) < 0 ? -1 : mk_class(x, a, 0);
        }
        return mk_char(x, (uint32_t)v);
    }
    case '^':
        if (at == 0) {
            x->pos++;
            return -2;
        }
        return RX_FAIL(x, FY_EINVAL,
                       "anchor '^' at offset %zu is not supported (only as the first byte)", at);
    case '$':
        if (at == x->len - 1 && x->depth == 0) {
            x->pos++;
            return -2;
        }
        return RX_FAIL(x, FY_EINVAL,
                       "anchor '$' at offset %zu is not supported (only as the last byte)", at);
    case ']':
        return RX_FAIL(x, FY_EINVAL, "unbalanced ']' at offset %zu", at);
    case '*':
    case '+':
    case '?':
        return RX_FAIL(x, FY_EINVAL, "quantifier '%c' at offset %zu has nothing to repeat", c, at);
    case '{': {
        long mn, mx;
        int q = brace_quant(x, &mn, &mx);
        if (q < 0) {
            return -1;
        }
        if (q > 0) {
            return RX_FAIL(x, FY_EINVAL, "quantifier '{' at offset %zu has nothing to repeat", at);
        }
        x->pos++;
        return mk_char(x, '{');
    }
    }
    int64_t v = next_utf8(x);
    return v < 0 ? -1 : mk_char(x, (uint32_t)v);
}

/* A quantifier at x->pos applied to ATOM: the new node, -3 when there is
 * none (a literal '{'), -1 on an error. */
static int parse_quant(rx *x, int atom, int *quantified)
{
    size_t at = x->pos;
    uint8_t c = x->p[x->pos];
    long mn, mx;
    if (c == '*' || c == '+' || c == '?') {
        x->pos++;
        mn = c == '+';
        mx = c == '?' ? 1 : -1;
    } else if (c == '{') {
        int q = brace_quant(x, &mn, &mx);
        if (q <= 0) {
            return q < 0 ? -1 : -3;
        }
    } else {
        return -3;
    }
    if (*quantified) {
        return RX_FAIL(x, FY_EINVAL, "quantifier '%c' at offset %zu has nothing to repeat", c, at);
    }
    *quantified = 1;
    if (x->pos < x->len && x->p[x->pos] == '?') {
        x->pos++; /* lazy: the same language */
    } else if (x->pos < x->len && x->p[x->pos] == '+') {
        return RX_FAIL(x, FY_EINVAL, "possessive quantifier '%.*s+' at offset %zu is not supported",
                       (int)(x->pos - at), (const char *)x->p + at, at);
    }
    return mk_rep(x, atom, (int)mn, (int)mx);
}

/* The single-character atom of item N (a character, a class, or one of
 * them repeated) into *ATOM with its counts; 0 when N is something else. */
static int single_item(const rx *x, int n, int *atom, int *min, int *max)
{
    const rnode *d = &x->nd[n];
    if (d->kind == N_REP) {
        *min = d->min;
        *max = d->max;
        n = d->a;
        d = &x->nd[n];
    } else {
        *min = *max = 1;
    }
    *atom = n;
    return d->kind == N_CHAR || d->kind == N_CLASS;
}

/* Merges the scratch stack's last two items when they repeat the same
 * single-character atom (a{0,5}a{0,5} is a{0,10}): the same language, and
 * the parse state then keeps one count instead of one stack per split. */
static int merge_last(rx *x, int base)
{
    if (x->n_scr - base < 2) {
        return 0;
    }
    int p = x->scr[x->n_scr - 2], q = x->scr[x->n_scr - 1], a, b, amin, amax, bmin, bmax;
    if (!single_item(x, p, &a, &amin, &amax) || !single_item(x, q, &b, &bmin, &bmax) ||
        (x->nd[p].kind != N_REP && x->nd[q].kind != N_REP)) {
        return 0;
    }
    const rnode *da = &x->nd[a], *db = &x->nd[b];
    int same = a == b || (da->kind == db->kind && da->kind == N_CHAR && da->a == db->a) ||
               (da->kind == db->kind && da->kind == N_CLASS && da->n == db->n &&
                memcmp(x->rg + da->a, x->rg + db->a, (size_t)da->n * sizeof *x->rg) == 0);
    int min = amin + bmin, max = amax < 0 || bmax < 0 ? -1 : amax + bmax;
    if (!same || min > FY_REGEX_MAX_REPEAT || max > FY_REGEX_MAX_REPEAT) {
        return 0;
    }
    int r = mk_rep(x, a, min, max);
    if (r < 0) {
        return -1;
    }
    x->n_scr--;
    x->scr[x->n_scr - 1] = r;
    return 0;
}

/* A sequence, up to '|', ')' or the end. */
static int parse_cat(rx *x)
{
    int base = x->n_scr, quantified = 0, have = 0;
    while (x->pos < x->len && x->p[x->pos] != '|' && x->p[x->pos] != ')') {
        uint8_t c = x->p[x->pos];
        if (have && (c == '*' || c == '+' || c == '?' || c == '{')) {
            int q = parse_quant(x, x->scr[x->n_scr - 1], &quantified);
            if (q == -1) {
                return -1;
            }
            if (q >= 0) {
                x->scr[x->n_scr - 1] = q;
                continue;
            }
        }
        int a = parse_atom(x);
        if (a == -1) {
            return -1;
        }
        quantified = 0;
        have = a >= 0;
        if (have && (merge_last(x, base) < 0 || scr_push(x, a) < 0)) {
            return -1;
        }
    }
    if (merge_last(x, base) < 0) {
        return -1;
    }
    int r = mk_cat(x, x->scr ? x->scr + base : NULL, x->n_scr - base);
    x->n_scr = base;
    return r;
}

static int parse_alt(rx *x)
{
    int base = x->n_scr;
    for (;;) {
        int c = parse_cat(x);
        if (c < 0 || scr_push(x, c) < 0) {
            return -1;
        }
        if (x->pos >= x->len || x->p[x->pos] != '|') {
            break;
        }
        x->pos++;
    }
    int r = mk_alt(x, x->scr ? x->scr + base : NULL, x->n_scr - base);
    x->n_scr = base;
    return r;
}

/* --- Emission ---------------------------------------------------------------------------- */

static int is_json_escaped(uint32_t c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* The JSON spelling of C into OUT; its length. */
static size_t spell(const rx *x, uint32_t c, char *out)
{
    if (x->mode == FY_REGEX_JSON_STRING && is_json_escaped(c)) {
        static const char short_esc[] = "btn\0fr";
        out[0] = '\\';
        if (c == '"' || c == '\\') {
            out[1] = (char)c;
            return 2;
        }
        if (c >= 8 && c <= 13 && c != 11) {
            out[1] = short_esc[c - 8];
            return 2;
        }
        static const char hex[] = "0123456789abcdef";
        memcpy(out + 1, "u00", 3);
        out[4] = hex[c >> 4];
        out[5] = hex[c & 15];
        return 6;
    }
    if (c < 0x80) {
        out[0] = (char)c;
        return 1;
    }
    int n = c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (int i = n - 1; i > 0; i--) {
        out[i] = (char)(0x80 | (c & 0x3F));
        c >>= 6;
    }
    out[0] = (char)(lead[n] | c);
    return (size_t)n;
}

/* 1 when class N is one byte in this mode (ASCII, nothing to escape). */
static int class_is_byte(const rx *x, int n)
{
    const fy_cprange *r = x->rg + x->nd[n].a;
    int k = x->nd[n].n;
    if (r[k - 1].hi >= 0x80) {
        return 0;
    }
    for (int i = 0; i < k && x->mode == FY_REGEX_JSON_STRING; i++) {
        for (uint32_t c = r[i].lo; c <= r[i].hi; c++) {
            if (is_json_escaped(c)) {
                return 0;
            }
        }
    }
    return 1;
}

/* The rule of class N (not one byte): its raw characters through
 * fy_gb_charclass, and in JSON mode the escaped ones spelled out. Equal
 * classes share one rule. */
static int class_rule(rx *x, int n)
{
    const fy_cprange *r = x->rg + x->nd[n].a;
    int k = x->nd[n].n;
    for (int i = 0; i < x->n_cls; i++) {
        if (x->cls[i].n == k && memcmp(x->rg + x->cls[i].a, r, (size_t)k * sizeof *r) == 0) {
            return x->cls[i].rule;
        }
    }
    fy_gbuild *b = x->b;
    int rule = -1;
    if (x->mode == FY_REGEX_RAW) {
        rule = fy_gb_charclass(b, r, k);
    } else {
        /* Raw: the class minus the escaped characters. */
        static const fy_cprange raw_ok[] = {{0x20, 0x21}, {0x23, 0x5B}, {0x5D, 0x10FFFF}};
        fy_cprange *raw = malloc((size_t)(k + 3) * sizeof *raw);
        if (!raw) {
            return rx_oom(x);
        }
        int nr = 0;
        fy_byteset shorts = {{0}}, u0 = {{0}}, u1 = {{0}};
        int n_short = 0, n_u0 = 0, n_u1 = 0;
        for (int i = 0; i < k; i++) {
            for (int j = 0; j < 3; j++) {
                uint32_t lo = r[i].lo > raw_ok[j].lo ? r[i].lo : raw_ok[j].lo;
                uint32_t hi = r[i].hi < raw_ok[j].hi ? r[i].hi : raw_ok[j].hi;
                if (lo <= hi) {
                    raw[nr++] = (fy_cprange){lo, hi};
                }
            }
            for (uint32_t c = r[i].lo; c <= r[i].hi && c <= 0x5C; c++) {
                char s[8];
                if (!is_json_escaped(c)) {
                    continue;
                }
                size_t len = spell(x, c, s);
                if (len == 2) {
                    fy_byteset_add_range(&shorts, (uint8_t)s[1], (uint8_t)s[1]);
                    n_short++;
                } else if (c < 0x10) {
                    fy_byteset_add_range(&u0, (uint8_t)s[5], (uint8_t)s[5]);
                    n_u0++;
                } else {
                    fy_byteset_add_range(&u1, (uint8_t)s[5], (uint8_t)s[5]);
                    n_u1++;
                }
            }
        }
        int chars = nr > 0 ? fy_gb_charclass(b, raw, nr) : -1;
        free(raw);
        if (n_short + n_u0 + n_u1 == 0) {
            rule = chars;
        } else {
            rule = fy_gb_rule(b);
            int first = 1;
            if (chars >= 0) {
                fy_gb_ref(b, rule, chars);
                first = 0;
            }
            if (n_short) {
                if (!first) {
                    fy_gb_alt(b, rule);
                }
                fy_gb_lit(b, rule, "\\", 1);
                fy_gb_bytes(b, rule, &shorts);
                first = 0;
            }
            if (n_u0) {
                if (!first) {
                    fy_gb_alt(b, rule);
                }
                fy_gb_lit(b, rule, "\\u000", 5);
                fy_gb_bytes(b, rule, &u0);
                first = 0;
            }
            if (n_u1) {
                if (!first) {
                    fy_gb_alt(b, rule);
                }
                fy_gb_lit(b, rule, "\\u001", 5);
                fy_gb_bytes(b, rule, &u1);
            }
        }
    }
    if (fy_gbuild_error(b)) {
        return -1;
    }
    if (grow((void **)&x->cls, &x->cap_cls, x->n_cls + 1, sizeof *x->cls) < 0) {
        return rx_oom(x);
    }
    x->cls[x->n_cls++] = (rclass){x->nd[n].a, k, rule};
    return rule;
}

static int rule_of(rx *x, int n);

/* Appends N's elements to RULE's last alternative. */
static void emit(rx *x, int rule, int n)
{
    fy_gbuild *b = x->b;
    if (x->rc || fy_gbuild_error(b)) {
        return;
    }
    const rnode *d = &x->nd[n];
    switch (d->kind) {
    case N_EMPTY:
    case N_NOTHING: /* folded away before emission */
        return;
    case N_CHAR: {
        char s[8];
        fy_gb_lit(b, rule, s, spell(x, (uint32_t)d->a, s));
        return;
    }
    case N_CLASS:
        if (class_is_byte(x, n)) {
            fy_byteset set = {{0}};
            for (int i = 0; i < d->n; i++) {
                fy_byteset_add_range(&set, x->rg[d->a + i].lo, x->rg[d->a + i].hi);
            }
            fy_gb_bytes(b, rule, &set);
        } else {
            int c = class_rule(x, n);
            if (c >= 0) {
                fy_gb_ref(b, rule, c);
            }
        }
        return;
    case N_CAT:
        for (int i = 0; i < x->nd[n].n; i++) {
            int k = x->kids[x->nd[n].a + i];
            if (x->nd[k].shared) {
                int r = rule_of(x, k);
                if (r >= 0) {
                    fy_gb_ref(b, rule, r);
                }
            } else {
                emit(x, rule, k);
            }
        }
        return;
    case N_ALT: {
        int r = rule_of(x, n);
        if (r >= 0) {
            fy_gb_ref(b, rule, r);
        }
        return;
    }
    case N_REP: {
        int min = d->min, max = d->max, r = rule_of(x, d->a);
        if (r >= 0) {
            fy_gb_repeat(b, rule, r, min, max);
        }
        return;
    }
    }
}

/* N's own rule, built once. */
static int rule_of(rx *x, int n)
{
    if (x->nd[n].rule >= 0) {
        return x->nd[n].rule;
    }
    int r;
    if (x->nd[n].kind == N_CLASS && !class_is_byte(x, n)) {
        r = class_rule(x, n);
    } else {
        r = fy_gb_rule(x->b);
        if (r < 0) {
            return -1;
        }
        if (x->nd[n].kind == N_ALT) {
            for (int i = 0; i < x->nd[n].n; i++) {
                if (i > 0) {
                    fy_gb_alt(x->b, r);
                }
                int k = x->kids[x->nd[n].a + i];
                if (x->nd[k].shared) {
                    int kr = rule_of(x, k);
                    if (kr >= 0) {
                        fy_gb_ref(x->b, r, kr);
                    }
                } else {
                    emit(x, r, k);
                }
            }
        } else {
            emit(x, r, n);
        }
    }
    if (x->rc || fy_gbuild_error(x->b)) {
        return -1;
    }
    x->nd[n].rule = r;
    return r;
}

int fy_regex_compile(fy_gbuild *b, const char *pattern, size_t len, fy_regex_mode mode, int *rule,
                     char *err, size_t errlen)
{
    if (len > FY_REGEX_MAX_LEN) {
        return fy_fail(err, errlen, FY_ELIMIT, "pattern: %zu bytes is over the limit of %d", len,
                       FY_REGEX_MAX_LEN);
    }
    if (fy_gbuild_error(b)) {
        return fy_fail(err, errlen, fy_gbuild_error(b), "pattern: grammar builder: %s",
                       fy_strerror(fy_gbuild_error(b)));
    }
    rx x = {.b = b,
            .mode = mode,
            .p = (const uint8_t *)pattern,
            .len = len,
            .dot = -1,
            .err = err,
            .errlen = errlen};
    int root = parse_alt(&x);
    if (root >= 0 && x.pos < x.len) {
        RX_FAIL(&x, FY_EINVAL, "unbalanced ')' at offset %zu", x.pos);
    }
    if (!x.rc && x.nd[root].kind == N_NOTHING) {
        RX_FAIL(&x, FY_EINVAL, "no string matches it");
    }
    int r = -1;
    if (!x.rc) {
        /* The root always gets a rule of its own, even when it is a class. */
        r = fy_gb_rule(b);
        emit(&x, r, root);
    }
    if (!x.rc && fy_gbuild_error(b)) {
        x.rc =
            fy_fail(err, errlen, fy_gbuild_error(b),
                    "pattern: grammar builder: %s (at most %d rules and %d elements)",
                    fy_strerror(fy_gbuild_error(b)), FY_GRAMMAR_MAX_RULES, FY_GRAMMAR_MAX_ELEMENTS);
    }
    free(x.nd);
    free(x.kids);
    free(x.scr);
    free(x.rg);
    free(x.cls);
    if (x.rc) {
        return x.rc;
    }
    *rule = r;
    return r;
}
