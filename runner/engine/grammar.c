/* grammar.c: the grammar builder, the pushdown parse state and the masker.
 *
 * Layout of a finished grammar: every alternative is a run of elements in
 * one flat array, ended by an END element; a rule is the list of its
 * alternatives' start positions. A stack frame is a position in that array
 * (the next element to match) and, for a repetition, how many times it has
 * matched so far; a stack's top frame always points at a byte set once the
 * state is expanded, so taking a byte is: for each stack whose top set has
 * the byte, advance the top and expand again (pop finished alternatives,
 * push the alternatives of referenced rules). */
#include "runner/engine/grammar.h"

#include "common/err.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { G_END = 0, G_BYTES, G_REF, G_REPEAT };

#define G_INF           UINT32_MAX
#define G_EXPAND_BUDGET 20000 /* expansion steps per byte taken, over all stacks */
#define G_MAX_TOKEN     256   /* longer tokens are never allowed */

typedef struct {
    uint8_t kind;
    uint32_t a; /* BYTES: set index; REF / REPEAT: rule */
    uint32_t min, max;
} gel;

/* --- Builder ----------------------------------------------------------------------------- */

typedef struct {
    gel *v;
    int n, cap;
} elist;

typedef struct {
    elist *alts;
    int n_alts, cap_alts;
} brule;

struct fy_gbuild {
    brule *rules;
    int n_rules, cap_rules;
    fy_byteset *sets;
    int n_sets, cap_sets;
    int single[256]; /* set index of each one-byte set, -1 when none yet */
    int n_elems;
    int rc;
};

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    int c = *cap ? *cap * 2 : 8;
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

int fy_gbuild_new(fy_gbuild **out)
{
    fy_gbuild *b = calloc(1, sizeof *b);
    if (!b) {
        return FY_ENOMEM;
    }
    for (int i = 0; i < 256; i++) {
        b->single[i] = -1;
    }
    *out = b;
    return 0;
}

void fy_gbuild_free(fy_gbuild *b)
{
    if (!b) {
        return;
    }
    for (int i = 0; i < b->n_rules; i++) {
        for (int j = 0; j < b->rules[i].n_alts; j++) {
            free(b->rules[i].alts[j].v);
        }
        free(b->rules[i].alts);
    }
    free(b->rules);
    free(b->sets);
    free(b);
}

int fy_gbuild_error(const fy_gbuild *b)
{
    return b->rc;
}

static int b_fail(fy_gbuild *b, int rc)
{
    if (!b->rc) {
        b->rc = rc;
    }
    return b->rc;
}

static int b_alt_new(fy_gbuild *b, brule *r)
{
    if (grow((void **)&r->alts, &r->cap_alts, r->n_alts + 1, sizeof *r->alts) < 0) {
        return b_fail(b, FY_ENOMEM);
    }
    r->alts[r->n_alts++] = (elist){0};
    return 0;
}

int fy_gb_rule(fy_gbuild *b)
{
    if (b->rc) {
        return b->rc;
    }
    if (b->n_rules >= FY_GRAMMAR_MAX_RULES) {
        return b_fail(b, FY_ELIMIT);
    }
    if (grow((void **)&b->rules, &b->cap_rules, b->n_rules + 1, sizeof *b->rules) < 0) {
        return b_fail(b, FY_ENOMEM);
    }
    brule *r = &b->rules[b->n_rules];
    *r = (brule){0};
    if (b_alt_new(b, r) < 0) {
        return b->rc;
    }
    return b->n_rules++;
}

static brule *b_rule(fy_gbuild *b, int rule)
{
    if (b->rc) {
        return NULL;
    }
    if (rule < 0 || rule >= b->n_rules) {
        b_fail(b, FY_EINVAL);
        return NULL;
    }
    return &b->rules[rule];
}

int fy_gb_alt(fy_gbuild *b, int rule)
{
    brule *r = b_rule(b, rule);
    return r ? b_alt_new(b, r) : b->rc;
}

static int b_push(fy_gbuild *b, int rule, gel e)
{
    brule *r = b_rule(b, rule);
    if (!r) {
        return b->rc;
    }
    if (b->n_elems + r->n_alts + 1 >= FY_GRAMMAR_MAX_ELEMENTS) {
        return b_fail(b, FY_ELIMIT);
    }
    elist *l = &r->alts[r->n_alts - 1];
    if (grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v) < 0) {
        return b_fail(b, FY_ENOMEM);
    }
    l->v[l->n++] = e;
    b->n_elems++;
    return 0;
}

static int b_set_index(fy_gbuild *b, const fy_byteset *set)
{
    int one = -1, count = 0;
    for (int w = 0; w < 4; w++) {
        count += __builtin_popcountll(set->w[w]);
        if (set->w[w] && one < 0) {
            one = w * 64 + __builtin_ctzll(set->w[w]);
        }
    }
    if (count == 1 && b->single[one] >= 0) {
        return b->single[one];
    }
    if (count > 1) {
        for (int i = 0; i < b->n_sets; i++) {
            if (memcmp(&b->sets[i], set, sizeof *set) == 0) {
                return i;
            }
        }
    }
    if (grow((void **)&b->sets, &b->cap_sets, b->n_sets + 1, sizeof *b->sets) < 0) {
        return b_fail(b, FY_ENOMEM);
    }
    b->sets[b->n_sets] = *set;
    if (count == 1) {
        b->single[one] = b->n_sets;
    }
    return b->n_sets++;
}

int fy_gb_bytes(fy_gbuild *b, int rule, const fy_byteset *set)
{
    if (b->rc) {
        return b->rc;
    }
    if (!(set->w[0] | set->w[1] | set->w[2] | set->w[3])) {
        return b_fail(b, FY_EINVAL);
    }
    int si = b_set_index(b, set);
    if (si < 0) {
        return si;
    }
    return b_push(b, rule, (gel){.kind = G_BYTES, .a = (uint32_t)si});
}

int fy_gb_byte_range(fy_gbuild *b, int rule, unsigned lo, unsigned hi)
{
    fy_byteset s = {{0}};
    fy_byteset_add_range(&s, lo, hi);
    return fy_gb_bytes(b, rule, &s);
}

int fy_gb_lit(fy_gbuild *b, int rule, const char *s, size_t n)
{
    for (size_t i = 0; i < n && !b->rc; i++) {
        fy_gb_byte_range(b, rule, (uint8_t)s[i], (uint8_t)s[i]);
    }
    return b->rc;
}

int fy_gb_ref(fy_gbuild *b, int rule, int target)
{
    if (!b->rc && (target < 0 || target >= b->n_rules)) {
        return b_fail(b, FY_EINVAL);
    }
    return b_push(b, rule, (gel){.kind = G_REF, .a = (uint32_t)target});
}

int fy_gb_repeat(fy_gbuild *b, int rule, int target, int min, int max)
{
    if (!b->rc &&
        (target < 0 || target >= b->n_rules || min < 0 || max < -1 || (max >= 0 && max < min) ||
         min > FY_GRAMMAR_REPEAT_MAX || max > FY_GRAMMAR_REPEAT_MAX)) {
        return b_fail(b, FY_EINVAL);
    }
    if (max == 0) {
        return b->rc; /* nothing */
    }
    if (min == 1 && max == 1) {
        return fy_gb_ref(b, rule, target);
    }
    return b_push(b, rule,
                  (gel){.kind = G_REPEAT,
                        .a = (uint32_t)target,
                        .min = (uint32_t)min,
                        .max = max < 0 ? G_INF : (uint32_t)max});
}

int fy_gb_choice(fy_gbuild *b, const int *alts, int n)
{
    int r = fy_gb_rule(b);
    for (int i = 0; i < n && r >= 0; i++) {
        if (i > 0) {
            fy_gb_alt(b, r);
        }
        fy_gb_ref(b, r, alts[i]);
    }
    return b->rc ? b->rc : r;
}

static int cprange_cmp(const void *a, const void *b)
{
    const fy_cprange *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int utf8_len(uint32_t c)
{
    return c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
}

static void utf8_put(uint32_t c, int n, uint8_t *o)
{
    static const uint8_t lead[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    for (int i = n - 1; i > 0; i--) {
        o[i] = (uint8_t)(0x80 | (c & 0x3F));
        c >>= 6;
    }
    o[0] = (uint8_t)(n == 1 ? c : lead[n] | c);
}

/* Adds to RULE the alternatives spelling [LO, HI] (one encoded length) as
 * sequences of byte ranges: the range is split until, at every byte, the
 * bytes between LO's and HI's encodings are exactly the code points between
 * (the way regex engines compile Unicode classes to UTF-8 automata). */
static void charclass_split(fy_gbuild *b, int rule, uint32_t lo, uint32_t hi, int *first)
{
    int n = utf8_len(lo);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0) {
                charclass_split(b, rule, lo, lo | m, first);
                charclass_split(b, rule, (lo | m) + 1, hi, first);
                return;
            }
            if ((hi & m) != m) {
                charclass_split(b, rule, lo, (hi & ~m) - 1, first);
                charclass_split(b, rule, hi & ~m, hi, first);
                return;
            }
        }
    }
    uint8_t l[4], h[4];
    utf8_put(lo, n, l);
    utf8_put(hi, n, h);
    if (!*first) {
        fy_gb_alt(b, rule);
    }
    *first = 0;
    for (int i = 0; i < n; i++) {
        fy_gb_byte_range(b, rule, l[i], h[i]);
    }
}

int fy_gb_charclass(fy_gbuild *b, const fy_cprange *r, int n)
{
    if (b->rc) {
        return b->rc;
    }
    fy_cprange *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v) {
        return b_fail(b, FY_ENOMEM);
    }
    if (n > 0) {
        memcpy(v, r, (size_t)n * sizeof *r);
    }
    qsort(v, (size_t)n, sizeof *v, cprange_cmp);
    int rule = fy_gb_rule(b), first = 1;
    /* Merge, then cut at the encoded-length boundaries and the surrogates. */
    static const uint32_t cuts[][2] = {
        {0, 0x7F}, {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
    for (int i = 0; i < n && rule >= 0;) {
        uint32_t lo = v[i].lo, hi = v[i].hi;
        for (i++; i < n && v[i].lo <= hi + 1 && hi != UINT32_MAX; i++) {
            hi = v[i].hi > hi ? v[i].hi : hi;
        }
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            uint32_t a = lo > cuts[k][0] ? lo : cuts[k][0], z = hi < cuts[k][1] ? hi : cuts[k][1];
            if (a <= z && lo <= hi) {
                charclass_split(b, rule, a, z, &first);
            }
        }
    }
    free(v);
    if (rule >= 0 && first) {
        return b_fail(b, FY_EINVAL);
    }
    return b->rc ? b->rc : rule;
}

/* --- The frozen grammar ------------------------------------------------------------------ */

struct fy_grammar {
    atomic_int refs;
    uint64_t id;
    gel *el; /* every alternative, each ended by G_END */
    int n_el;
    uint32_t *alt_start; /* [n_alts] */
    uint32_t *rule_alt0; /* [n_rules + 1]: rule R's alternatives are alt_start[rule_alt0[R] ..
                            rule_alt0[R + 1]) */
    int n_rules;
    fy_byteset *sets;
    int n_sets;
    int root;
};

static atomic_uint_fast64_t g_next_id = 1;

/* A fixpoint over rules: R is marked once some alternative has only
 * elements that hold. An element holds when it is a byte set and BYTES_HOLD
 * (productive: a finite sentence exists; nullable: it can match nothing, so
 * byte sets never hold), a reference to a marked rule, or a repetition whose
 * minimum is 0 or whose rule is marked. */
static void rule_fixpoint(const fy_grammar *g, int bytes_hold, uint8_t *mark)
{
    memset(mark, 0, (size_t)g->n_rules);
    for (int changed = 1; changed;) {
        changed = 0;
        for (int r = 0; r < g->n_rules; r++) {
            if (mark[r]) {
                continue;
            }
            for (uint32_t a = g->rule_alt0[r]; a < g->rule_alt0[r + 1] && !mark[r]; a++) {
                int all = 1;
                for (const gel *e = &g->el[g->alt_start[a]]; e->kind != G_END && all; e++) {
                    all = (e->kind == G_BYTES && bytes_hold) || (e->kind == G_REF && mark[e->a]) ||
                          (e->kind == G_REPEAT && (e->min == 0 || mark[e->a]));
                }
                if (all) {
                    mark[r] = 1;
                    changed = 1;
                }
            }
        }
    }
}

/* Left recursion: R reaches itself through references at the start of an
 * alternative (past nullable elements). Depth-first with colours; returns
 * the rule on a cycle, or -1. */
static int left_cycle(const fy_grammar *g, const uint8_t *nullable, int r, uint8_t *colour)
{
    colour[r] = 1;
    for (uint32_t a = g->rule_alt0[r]; a < g->rule_alt0[r + 1]; a++) {
        for (const gel *e = &g->el[g->alt_start[a]]; e->kind != G_END; e++) {
            if (e->kind == G_BYTES) {
                break;
            }
            int t = (int)e->a;
            if (colour[t] == 1) {
                return t;
            }
            if (colour[t] == 0) {
                int c = left_cycle(g, nullable, t, colour);
                if (c >= 0) {
                    return c;
                }
            }
            int passes = nullable[t] || (e->kind == G_REPEAT && e->min == 0);
            if (!passes) {
                break;
            }
        }
    }
    colour[r] = 2;
    return -1;
}

static int grammar_check(const fy_grammar *g, char *err, size_t errlen)
{
    uint8_t *flags = calloc((size_t)g->n_rules, 3);
    if (!flags) {
        return FY_ENOMEM;
    }
    uint8_t *nullable = flags, *prod = flags + g->n_rules, *colour = flags + 2 * g->n_rules;
    rule_fixpoint(g, 0, nullable);
    rule_fixpoint(g, 1, prod);
    int rc = 0;
    for (int i = 0; i < g->n_el && rc == 0; i++) {
        const gel *e = &g->el[i];
        if (e->kind == G_REPEAT && e->max == G_INF && nullable[e->a]) {
            rc = fy_fail(err, errlen, FY_EINVAL,
                         "grammar: rule %u repeats without bound and can match nothing", e->a);
        }
    }
    if (rc == 0 && !prod[g->root]) {
        rc = fy_fail(err, errlen, FY_EINVAL, "grammar: no finite text matches it");
    }
    for (int r = 0; r < g->n_rules && rc == 0; r++) {
        if (colour[r] == 0) {
            int c = left_cycle(g, nullable, r, colour);
            if (c >= 0) {
                rc = fy_fail(err, errlen, FY_EINVAL,
                             "grammar: rule %d is left-recursive (it can reach itself before "
                             "any byte)",
                             c);
            }
        }
    }
    free(flags);
    return rc;
}

int fy_gbuild_finish(fy_gbuild *b, int root, fy_grammar **out, char *err, size_t errlen)
{
    *out = NULL;
    if (b->rc) {
        return fy_fail(err, errlen, b->rc,
                       "grammar: %s while building (at most %d rules and %d "
                       "elements)",
                       fy_strerror(b->rc), FY_GRAMMAR_MAX_RULES, FY_GRAMMAR_MAX_ELEMENTS);
    }
    if (root < 0 || root >= b->n_rules) {
        return fy_fail(err, errlen, FY_EINVAL, "grammar: no root rule");
    }
    fy_grammar *g = calloc(1, sizeof *g);
    int n_alts = 0;
    for (int r = 0; r < b->n_rules; r++) {
        n_alts += b->rules[r].n_alts;
    }
    if (!g) {
        return FY_ENOMEM;
    }
    g->n_rules = b->n_rules;
    g->root = root;
    g->el = malloc((size_t)(b->n_elems + n_alts) * sizeof *g->el);
    g->alt_start = malloc((size_t)n_alts * sizeof *g->alt_start);
    g->rule_alt0 = malloc((size_t)(b->n_rules + 1) * sizeof *g->rule_alt0);
    g->sets = malloc((size_t)(b->n_sets ? b->n_sets : 1) * sizeof *g->sets);
    if (!g->el || !g->alt_start || !g->rule_alt0 || !g->sets) {
        fy_grammar_unref(fy_grammar_ref(g)); /* refs 0 -> 1 -> free */
        return FY_ENOMEM;
    }
    if (b->n_sets) {
        memcpy(g->sets, b->sets, (size_t)b->n_sets * sizeof *g->sets);
    }
    g->n_sets = b->n_sets;
    int ai = 0;
    for (int r = 0; r < b->n_rules; r++) {
        g->rule_alt0[r] = (uint32_t)ai;
        for (int j = 0; j < b->rules[r].n_alts; j++) {
            const elist *l = &b->rules[r].alts[j];
            g->alt_start[ai++] = (uint32_t)g->n_el;
            if (l->n) {
                memcpy(g->el + g->n_el, l->v, (size_t)l->n * sizeof *l->v);
            }
            g->n_el += l->n;
            g->el[g->n_el++] = (gel){.kind = G_END};
        }
    }
    g->rule_alt0[b->n_rules] = (uint32_t)ai;
    atomic_init(&g->refs, 1);
    g->id = atomic_fetch_add(&g_next_id, 1);
    int rc = grammar_check(g, err, errlen);
    if (rc < 0) {
        fy_grammar_unref(g);
        return rc;
    }
    *out = g;
    return 0;
}

fy_grammar *fy_grammar_ref(fy_grammar *g)
{
    if (g) {
        atomic_fetch_add(&g->refs, 1);
    }
    return g;
}

void fy_grammar_unref(fy_grammar *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1) {
        return;
    }
    free(g->el);
    free(g->alt_start);
    free(g->rule_alt0);
    free(g->sets);
    free(g);
}

uint64_t fy_grammar_id(const fy_grammar *g)
{
    return g->id;
}

int fy_grammar_n_rules(const fy_grammar *g)
{
    return g->n_rules;
}

int fy_grammar_n_elements(const fy_grammar *g)
{
    return g->n_el;
}

/* --- Parse state ------------------------------------------------------------------------- */

typedef struct {
    uint32_t pos, cnt;
} frame;

/* Stacks, bottom frame first, concatenated in FR; stack I is
 * fr[off[I] .. off[I] + len[I]). The accepting (empty) stack is a flag. */
typedef struct {
    frame *fr;
    int n_fr, cap_fr;
    int off[FY_GRAMMAR_MAX_STACKS];
    int len[FY_GRAMMAR_MAX_STACKS];
    uint64_t hash[FY_GRAMMAR_MAX_STACKS];
    int n_st;
    int accepting;
} stacks;

struct fy_gstate {
    fy_grammar *g;
    stacks cur, next;
    frame work[FY_GRAMMAR_MAX_DEPTH + 1];
};

static void stacks_clear(stacks *s)
{
    s->n_fr = 0;
    s->n_st = 0;
    s->accepting = 0;
}

static uint64_t frames_hash(const frame *f, int n)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        h = (h ^ f[i].pos) * 1099511628211ull;
        h = (h ^ f[i].cnt) * 1099511628211ull;
    }
    return h;
}

/* Expansion context: the grammar, the output and what is left of the budget. */
typedef struct {
    const fy_grammar *g;
    stacks *out;
    int budget;
    int oom;
    int first_only; /* stop at the first stack (or acceptance): is the result non-empty? */
    int found;
} xctx;

static void emit(xctx *x, const frame *w, int d)
{
    if (x->first_only) {
        x->found = 1;
        x->budget = -1; /* the rest of the expansion returns at once */
        return;
    }
    stacks *o = x->out;
    uint64_t h = frames_hash(w, d);
    for (int i = 0; i < o->n_st; i++) {
        if (o->hash[i] == h && o->len[i] == d &&
            memcmp(o->fr + o->off[i], w, (size_t)d * sizeof *w) == 0) {
            return;
        }
    }
    if (o->n_st >= FY_GRAMMAR_MAX_STACKS) {
        return; /* past the cap: dropped (the others are still valid parses) */
    }
    if (grow((void **)&o->fr, &o->cap_fr, o->n_fr + d, sizeof *o->fr) < 0) {
        x->oom = 1;
        return;
    }
    memcpy(o->fr + o->n_fr, w, (size_t)d * sizeof *w);
    o->off[o->n_st] = o->n_fr;
    o->len[o->n_st] = d;
    o->hash[o->n_st] = h;
    o->n_st++;
    o->n_fr += d;
}

/* Expands the stack W[0..D) until every resulting stack's top is a byte set
 * (or the stack is empty: accepting), emitting each into X->out. Returns
 * with W[0..D) as it found them (each case puts back its top frame), so a
 * caller's stack is intact for its next alternative. */
static void expand(xctx *x, frame *w, int d)
{
    if (--x->budget < 0 || x->oom) {
        return;
    }
    if (d == 0) {
        if (x->first_only) {
            x->found = 1;
            x->budget = -1;
        } else {
            x->out->accepting = 1;
        }
        return;
    }
    const fy_grammar *g = x->g;
    frame t = w[d - 1];
    const gel *e = &g->el[t.pos];
    switch (e->kind) {
    case G_END:
        /* The frame below already points past its reference. Expanding it
         * may push over this frame's slot: put it back. */
        expand(x, w, d - 1);
        w[d - 1] = t;
        return;
    case G_BYTES:
        emit(x, w, d);
        return;
    case G_REF:
        if (d >= FY_GRAMMAR_MAX_DEPTH) {
            return;
        }
        w[d - 1] = (frame){t.pos + 1, 0};
        for (uint32_t a = g->rule_alt0[e->a]; a < g->rule_alt0[e->a + 1]; a++) {
            w[d] = (frame){g->alt_start[a], 0};
            expand(x, w, d + 1);
        }
        w[d - 1] = t;
        return;
    case G_REPEAT:
        if (t.cnt >= e->min) {
            w[d - 1] = (frame){t.pos + 1, 0};
            expand(x, w, d);
        }
        if ((e->max == G_INF || t.cnt < e->max) && d < FY_GRAMMAR_MAX_DEPTH) {
            uint32_t c = t.cnt + 1;
            if (e->max == G_INF && c > e->min) {
                c = e->min; /* past the minimum an unbounded count no longer matters */
            }
            w[d - 1] = (frame){t.pos, c};
            for (uint32_t a = g->rule_alt0[e->a]; a < g->rule_alt0[e->a + 1]; a++) {
                w[d] = (frame){g->alt_start[a], 0};
                expand(x, w, d + 1);
            }
        }
        w[d - 1] = t;
        return;
    }
}

static int initial(const fy_grammar *g, stacks *out, frame *work)
{
    stacks_clear(out);
    xctx x = {g, out, G_EXPAND_BUDGET, 0, 0, 0};
    for (uint32_t a = g->rule_alt0[g->root]; a < g->rule_alt0[g->root + 1]; a++) {
        work[0] = (frame){g->alt_start[a], 0};
        expand(&x, work, 1);
    }
    return x.oom ? FY_ENOMEM : 0;
}

/* OUT = IN after byte B (OUT may end up empty: B is not allowed). */
static int step(const fy_grammar *g, const stacks *in, unsigned b, stacks *out, frame *work)
{
    stacks_clear(out);
    xctx x = {g, out, G_EXPAND_BUDGET, 0, 0, 0};
    for (int i = 0; i < in->n_st; i++) {
        int d = in->len[i];
        const frame *s = in->fr + in->off[i];
        const gel *e = &g->el[s[d - 1].pos];
        if (!fy_byteset_has(&g->sets[e->a], b)) {
            continue;
        }
        memcpy(work, s, (size_t)d * sizeof *s);
        work[d - 1] = (frame){s[d - 1].pos + 1, 0};
        expand(&x, work, d);
    }
    return x.oom ? FY_ENOMEM : 0;
}

/* 1 when byte B leaves some stack of IN alive: step() without building the
 * result. The expansion runs in the same order under the same budget, so it
 * answers exactly what step's result being empty would. */
static int step_any(const fy_grammar *g, const stacks *in, unsigned b, frame *work)
{
    xctx x = {g, NULL, G_EXPAND_BUDGET, 0, 1, 0};
    for (int i = 0; i < in->n_st && !x.found; i++) {
        int d = in->len[i];
        const frame *s = in->fr + in->off[i];
        const gel *e = &g->el[s[d - 1].pos];
        if (!fy_byteset_has(&g->sets[e->a], b)) {
            continue;
        }
        memcpy(work, s, (size_t)d * sizeof *s);
        work[d - 1] = (frame){s[d - 1].pos + 1, 0};
        expand(&x, work, d);
    }
    return x.found;
}

static int stacks_copy(stacks *dst, const stacks *src)
{
    if (grow((void **)&dst->fr, &dst->cap_fr, src->n_fr, sizeof *dst->fr) < 0) {
        return FY_ENOMEM;
    }
    if (src->n_fr) {
        memcpy(dst->fr, src->fr, (size_t)src->n_fr * sizeof *src->fr);
    }
    dst->n_fr = src->n_fr;
    dst->n_st = src->n_st;
    dst->accepting = src->accepting;
    memcpy(dst->off, src->off, (size_t)src->n_st * sizeof *src->off);
    memcpy(dst->len, src->len, (size_t)src->n_st * sizeof *src->len);
    memcpy(dst->hash, src->hash, (size_t)src->n_st * sizeof *src->hash);
    return 0;
}

static void next_bytes(const fy_grammar *g, const stacks *s, fy_byteset *set)
{
    memset(set, 0, sizeof *set);
    for (int i = 0; i < s->n_st; i++) {
        const gel *e = &g->el[s->fr[s->off[i] + s->len[i] - 1].pos];
        for (int w = 0; w < 4; w++) {
            set->w[w] |= g->sets[e->a].w[w];
        }
    }
}

int fy_gstate_new(fy_grammar *g, fy_gstate **out)
{
    fy_gstate *s = calloc(1, sizeof *s);
    if (!s) {
        return FY_ENOMEM;
    }
    s->g = fy_grammar_ref(g);
    int rc = initial(g, &s->cur, s->work);
    if (rc < 0) {
        fy_gstate_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void fy_gstate_free(fy_gstate *s)
{
    if (!s) {
        return;
    }
    fy_grammar_unref(s->g);
    free(s->cur.fr);
    free(s->next.fr);
    free(s);
}

int fy_gstate_copy(fy_gstate *dst, const fy_gstate *src)
{
    return stacks_copy(&dst->cur, &src->cur);
}

int fy_gstate_reset(fy_gstate *s)
{
    return initial(s->g, &s->cur, s->work);
}

int fy_gstate_feed(fy_gstate *s, const void *bytes, size_t n)
{
    if (n == 0) {
        return 0;
    }
    /* Work on NEXT and a copy so a refused byte leaves CUR as it was. */
    stacks saved = {0};
    int rc = stacks_copy(&saved, &s->cur);
    const uint8_t *p = bytes;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = step(s->g, &s->cur, p[i], &s->next, s->work);
        if (rc == 0 && s->next.n_st == 0 && !s->next.accepting) {
            rc = FY_EINVAL;
        }
        if (rc == 0) {
            stacks t = s->cur;
            s->cur = s->next;
            s->next = t;
        }
    }
    if (rc < 0 && saved.fr) {
        stacks_copy(&s->cur, &saved);
    }
    free(saved.fr);
    return rc;
}

int fy_gstate_accepting(const fy_gstate *s)
{
    return s->cur.accepting;
}

int fy_gstate_can_continue(const fy_gstate *s)
{
    return s->cur.n_st > 0;
}

void fy_gstate_next_bytes(const fy_gstate *s, fy_byteset *set)
{
    next_bytes(s->g, &s->cur, set);
}

/* --- Masker ------------------------------------------------------------------------------ */

typedef struct {
    int first_child, next_sibling;
    int end_head; /* first token ending here (-1), chained through tok_next */
    uint8_t byte;
} tnode;

typedef struct centry {
    uint64_t gid, hash;
    uint32_t *key; /* the state's canonical form, key_len words */
    int key_len;
    int n_allowed;
    uint32_t *mask;
    struct centry *next;
} centry;

#define CACHE_BUCKETS 4096

struct fy_gmasker {
    int vocab, words;
    tnode *nodes;
    int n_nodes, cap_nodes;
    int32_t *tok_next;
    int32_t *end_ids;
    int n_end;
    /* The walk: a state per trie depth. */
    stacks depth[G_MAX_TOKEN + 1];
    frame work[FY_GRAMMAR_MAX_DEPTH + 1];
    uint32_t *mask;
    uint32_t *key;
    int key_cap;
    centry *buckets[CACHE_BUCKETS];
    size_t cache_bytes, cache_cap;
    fy_gmasker_stats st;
};

static int trie_child(fy_gmasker *m, int node, uint8_t byte)
{
    for (int c = m->nodes[node].first_child; c >= 0; c = m->nodes[c].next_sibling) {
        if (m->nodes[c].byte == byte) {
            return c;
        }
    }
    if (grow((void **)&m->nodes, &m->cap_nodes, m->n_nodes + 1, sizeof *m->nodes) < 0) {
        return FY_ENOMEM;
    }
    int c = m->n_nodes++;
    m->nodes[c] = (tnode){.first_child = -1,
                          .next_sibling = m->nodes[node].first_child,
                          .end_head = -1,
                          .byte = byte};
    m->nodes[node].first_child = c;
    return c;
}

int fy_gmasker_new(int vocab, const char *const *bytes, const size_t *lens, const int32_t *end_ids,
                   int n_end, size_t cache_bytes, fy_gmasker **out)
{
    fy_gmasker *m = calloc(1, sizeof *m);
    if (!m) {
        return FY_ENOMEM;
    }
    m->vocab = vocab;
    m->words = (vocab + 31) / 32;
    m->cache_cap = cache_bytes ? cache_bytes : (size_t)64 << 20;
    m->tok_next = malloc((size_t)vocab * sizeof *m->tok_next);
    m->mask = malloc((size_t)m->words * sizeof *m->mask);
    m->end_ids = malloc((size_t)(n_end > 0 ? n_end : 1) * sizeof *m->end_ids);
    int rc = !m->tok_next || !m->mask || !m->end_ids ? FY_ENOMEM : 0;
    if (rc == 0) {
        if (n_end > 0) {
            memcpy(m->end_ids, end_ids, (size_t)n_end * sizeof *end_ids);
        }
        m->n_end = n_end;
        rc = grow((void **)&m->nodes, &m->cap_nodes, 1, sizeof *m->nodes);
    }
    if (rc == 0) {
        m->nodes[0] = (tnode){.first_child = -1, .next_sibling = -1, .end_head = -1};
        m->n_nodes = 1;
    }
    for (int i = 0; i < vocab && rc == 0; i++) {
        m->tok_next[i] = -1;
        if (!bytes[i] || lens[i] == 0 || lens[i] > G_MAX_TOKEN) {
            continue;
        }
        int node = 0;
        for (size_t k = 0; k < lens[i] && node >= 0; k++) {
            node = trie_child(m, node, (uint8_t)bytes[i][k]);
        }
        if (node < 0) {
            rc = node;
            break;
        }
        m->tok_next[i] = m->nodes[node].end_head;
        m->nodes[node].end_head = i;
    }
    if (rc < 0) {
        fy_gmasker_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

static void cache_clear(fy_gmasker *m)
{
    for (int i = 0; i < CACHE_BUCKETS; i++) {
        for (centry *c = m->buckets[i], *n; c; c = n) {
            n = c->next;
            free(c->key);
            free(c->mask);
            free(c);
        }
        m->buckets[i] = NULL;
    }
    m->cache_bytes = 0;
    m->st.entries = 0;
}

void fy_gmasker_free(fy_gmasker *m)
{
    if (!m) {
        return;
    }
    cache_clear(m);
    for (int i = 0; i <= G_MAX_TOKEN; i++) {
        free(m->depth[i].fr);
    }
    free(m->nodes);
    free(m->tok_next);
    free(m->end_ids);
    free(m->mask);
    free(m->key);
    free(m);
}

int fy_gmasker_words(const fy_gmasker *m)
{
    return m->words;
}

void fy_gmasker_get_stats(const fy_gmasker *m, fy_gmasker_stats *st)
{
    *st = m->st;
    st->bytes = m->cache_bytes;
}

static void allow_ends(fy_gmasker *m, int node, int *count)
{
    for (int t = m->nodes[node].end_head; t >= 0; t = m->tok_next[t]) {
        uint32_t bit = 1u << (t & 31);
        if (!(m->mask[t >> 5] & bit)) {
            m->mask[t >> 5] |= bit;
            (*count)++;
        }
    }
}

/* Depth-first over the trie below NODE with M->depth[D] the state there. */
static int walk(fy_gmasker *m, const fy_grammar *g, int node, int d, int *count)
{
    fy_byteset next;
    next_bytes(g, &m->depth[d], &next);
    for (int c = m->nodes[node].first_child; c >= 0; c = m->nodes[c].next_sibling) {
        if (!fy_byteset_has(&next, m->nodes[c].byte)) {
            continue;
        }
        if (m->nodes[c].first_child < 0 || d + 1 >= G_MAX_TOKEN) {
            /* A leaf: only whether some stack survives matters. */
            if (step_any(g, &m->depth[d], m->nodes[c].byte, m->work)) {
                allow_ends(m, c, count);
            }
            continue;
        }
        stacks *s = &m->depth[d + 1];
        if (step(g, &m->depth[d], m->nodes[c].byte, s, m->work) < 0) {
            return FY_ENOMEM;
        }
        if (s->n_st == 0 && !s->accepting) {
            continue;
        }
        allow_ends(m, c, count);
        if (m->nodes[c].first_child >= 0 && s->n_st > 0 && d + 1 < G_MAX_TOKEN) {
            int rc = walk(m, g, c, d + 1, count);
            if (rc < 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* The canonical form of S: its stacks sorted (by hash, then frames), as
 * words [accepting, n, (len, frames...)...], into M->key. */
static int state_key(fy_gmasker *m, const stacks *s, int *len)
{
    int order[FY_GRAMMAR_MAX_STACKS];
    for (int i = 0; i < s->n_st; i++) {
        int j = i;
        while (j > 0 && s->hash[order[j - 1]] > s->hash[i]) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    int need = 2 + s->n_st + 2 * s->n_fr;
    if (grow((void **)&m->key, &m->key_cap, need, sizeof *m->key) < 0) {
        return FY_ENOMEM;
    }
    int k = 0;
    m->key[k++] = (uint32_t)s->accepting;
    m->key[k++] = (uint32_t)s->n_st;
    for (int i = 0; i < s->n_st; i++) {
        const frame *f = s->fr + s->off[order[i]];
        m->key[k++] = (uint32_t)s->len[order[i]];
        for (int j = 0; j < s->len[order[i]]; j++) {
            m->key[k++] = f[j].pos;
            m->key[k++] = f[j].cnt;
        }
    }
    *len = k;
    return 0;
}

static uint64_t key_hash(const uint32_t *k, int n, uint64_t gid)
{
    uint64_t h = 1469598103934665603ull ^ (gid * 0x9e3779b97f4a7c15ull);
    for (int i = 0; i < n; i++) {
        h = (h ^ k[i]) * 1099511628211ull;
    }
    return h;
}

static void cache_put(fy_gmasker *m, uint64_t gid, uint64_t h, int key_len, int n_allowed)
{
    size_t cost = sizeof(centry) + (size_t)key_len * 4 + (size_t)m->words * 4;
    if (m->cache_bytes + cost > m->cache_cap) {
        cache_clear(m);
    }
    centry *c = calloc(1, sizeof *c);
    uint32_t *key = malloc((size_t)key_len * sizeof *key);
    uint32_t *mask = malloc((size_t)m->words * sizeof *mask);
    if (!c || !key || !mask) {
        free(c);
        free(key);
        free(mask);
        return; /* not cached: the next lookup walks again */
    }
    memcpy(key, m->key, (size_t)key_len * sizeof *key);
    memcpy(mask, m->mask, (size_t)m->words * sizeof *mask);
    *c = (centry){gid, h, key, key_len, n_allowed, mask, m->buckets[h % CACHE_BUCKETS]};
    m->buckets[h % CACHE_BUCKETS] = c;
    m->cache_bytes += cost;
    m->st.entries++;
}

const uint32_t *fy_gmasker_mask(fy_gmasker *m, const fy_gstate *s, int *n_allowed)
{
    const fy_grammar *g = s->g;
    int key_len = 0;
    if (state_key(m, &s->cur, &key_len) < 0) {
        return NULL;
    }
    uint64_t h = key_hash(m->key, key_len, g->id);
    m->st.lookups++;
    for (centry *c = m->buckets[h % CACHE_BUCKETS]; c; c = c->next) {
        if (c->gid == g->id && c->hash == h && c->key_len == key_len &&
            memcmp(c->key, m->key, (size_t)key_len * sizeof *m->key) == 0) {
            m->st.hits++;
            *n_allowed = c->n_allowed;
            return c->mask;
        }
    }
    m->st.walks++;
    memset(m->mask, 0, (size_t)m->words * sizeof *m->mask);
    int count = 0;
    if (stacks_copy(&m->depth[0], &s->cur) < 0 || walk(m, g, 0, 0, &count) < 0) {
        return NULL;
    }
    if (s->cur.accepting) {
        for (int i = 0; i < m->n_end; i++) {
            int32_t t = m->end_ids[i];
            if (t >= 0 && t < m->vocab && !(m->mask[t >> 5] & (1u << (t & 31)))) {
                m->mask[t >> 5] |= 1u << (t & 31);
                count++;
            }
        }
    }
    cache_put(m, g->id, h, key_len, count);
    *n_allowed = count;
    return m->mask;
}
