/* tokenizer.c: loading and validating a Hugging Face tokenizer.json (BPE),
 * plus the accessors. Encoding is in tok_encode.c, decoding in tok_decode.c.
 *
 * Loading reads the file whole (at most TOK_MAX_FILE_BYTES), parses it with
 * jansson (duplicate keys refused) and checks every field it uses: a wrong
 * type, an unknown component type, a merge naming a token that is not in the
 * vocabulary, an id out of range or given twice is refused with a message
 * naming the file and the field. The result is immutable: encode and decode
 * only read it, so one tokenizer may serve any number of threads.
 *
 * Costs: the vocabulary and the merges go into open-addressing hash tables
 * (O(1) expected lookups); loading is linear in the file size. Each token's
 * decoded bytes are computed once here, so decoding is linear in its output. */
#include "runner/engine/tok_internal.h"

#include "common/err.h"
#include "common/fsutil.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char fy__tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int fy__tok_fail(tok_ctx *c, int rc, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int k = snprintf(c->err, c->errlen, "%s: ", c->file);
        if (k >= 0 && (size_t)k < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return rc;
}

/* ---- small helpers ---------------------------------------------------- */

int fy__tok_ids_push(tok_ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, cap * sizeof *v);
        if (!v) {
            return FY_ENOMEM;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
    return 0;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    key *= 0xc4ceb9fe1a85ec53ull;
    return key ^ (key >> 33);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) {
        c <<= 1;
    }
    return c;
}

static int32_t vocab_find_in(const int32_t *slots, size_t mask, char *const *vstr,
                             const uint32_t *vlen, const char *s, size_t n)
{
    size_t i = hash_bytes(s, n) & mask;
    for (;;) {
        int32_t id = slots[i];
        if (id < 0) {
            return -1;
        }
        if (vlen[id] == n && memcmp(vstr[id], s, n) == 0) {
            return id;
        }
        i = (i + 1) & mask;
    }
}

int32_t fy__tok_vocab_find(const fy_tokenizer *t, const char *s, size_t n)
{
    return vocab_find_in(t->vocab_slots, t->vocab_mask, t->vstr, t->vlen, s, n);
}

int fy__tok_merge_find(const fy_tokenizer *t, int32_t a, int32_t b, int32_t *rank, int32_t *id)
{
    if (!t->merges) {
        return 0;
    }
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(key) & t->merge_mask;
    for (;;) {
        const tok_merge_slot *s = &t->merges[i];
        if (s->key == UINT64_MAX) {
            return 0;
        }
        if (s->key == key) {
            *rank = s->rank;
            *id = s->id;
            return 1;
        }
        i = (i + 1) & t->merge_mask;
    }
}

/* ---- building a tokenizer (both loaders) --------------------------------- */

int fy__tok_vocab_alloc(fy_tokenizer *t, int32_t n_vocab, size_t n_entries)
{
    size_t nv = (size_t)n_vocab;
    t->n_vocab = n_vocab;
    t->piece = calloc(nv, sizeof *t->piece);
    t->piece_len = calloc(nv, sizeof *t->piece_len);
    t->special = calloc(nv, 1);
    t->vstr = calloc(nv, sizeof *t->vstr);
    t->vlen = calloc(nv, sizeof *t->vlen);
    size_t cap = pow2_at_least(n_entries * 2 + 1);
    t->vocab_slots = malloc(cap * sizeof *t->vocab_slots);
    if (!t->piece || !t->piece_len || !t->special || !t->vstr || !t->vlen || !t->vocab_slots) {
        return FY_ENOMEM;
    }
    memset(t->vocab_slots, 0xff, cap * sizeof *t->vocab_slots);
    t->vocab_mask = cap - 1;
    return 0;
}

int fy__tok_vocab_put(fy_tokenizer *t, int32_t id, const char *s, size_t n)
{
    if (!(t->vstr[id] = fy__tok_dup(s, n))) {
        return FY_ENOMEM;
    }
    t->vlen[id] = (uint32_t)n;
    t->piece[id] = t->vstr[id];
    t->piece_len[id] = (uint32_t)n;
    size_t i = hash_bytes(s, n) & t->vocab_mask;
    while (t->vocab_slots[i] >= 0) {
        i = (i + 1) & t->vocab_mask;
    }
    t->vocab_slots[i] = id;
    return 0;
}

int fy__tok_merges_alloc(fy_tokenizer *t, size_t n)
{
    size_t cap = pow2_at_least(n * 2 + 1);
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) {
        return FY_ENOMEM;
    }
    memset(t->merges, 0xff, cap * sizeof *t->merges);
    t->merge_mask = cap - 1;
    return 0;
}

void fy__tok_merge_put(fy_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t k = hash_pair(key) & t->merge_mask;
    while (t->merges[k].key != UINT64_MAX && t->merges[k].key != key) {
        k = (k + 1) & t->merge_mask;
    }
    if (t->merges[k].key == UINT64_MAX) {
        t->n_merges++;
    }
    t->merges[k] = (tok_merge_slot){key, rank, id};
}

/* ---- JSON field access -------------------------------------------------- */

/* Optional string field: *OUT NULL when absent or null. */
static int opt_str(tok_ctx *c, json_t *o, const char *key, const char *where, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: expected a string", where, key);
    }
    *out = json_string_value(v);
    return 0;
}

static int req_str(tok_ctx *c, json_t *o, const char *key, const char *where, const char **out)
{
    int rc = opt_str(c, o, key, where, out);
    if (rc == 0 && !*out) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: missing (a string is required)", where, key);
    }
    return rc;
}

/* Optional boolean: DEF when absent or null. */
static int opt_bool(tok_ctx *c, json_t *o, const char *key, const char *where, int def, int *out)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_boolean(v)) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: expected true or false", where, key);
    }
    *out = json_is_true(v);
    return 0;
}

static int opt_int(tok_ctx *c, json_t *o, const char *key, const char *where, long lo, long hi,
                   long def, long *out)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: expected an integer in [%ld, %ld]", where, key,
                            lo, hi);
    }
    *out = (long)json_integer_value(v);
    return 0;
}

char *fy__tok_dup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

int fy__tok_compile_re(tok_ctx *c, const char *pat, size_t len, int literal, const char *where,
                       pcre2_code **out)
{
    if (len > TOK_MAX_PATTERN) {
        return fy__tok_fail(c, FY_ETOOBIG, "%s: pattern longer than %d bytes", where,
                            TOK_MAX_PATTERN);
    }
    if (len == 0) {
        return fy__tok_fail(c, FY_EPARSE, "%s: empty pattern", where);
    }
    int ec = 0;
    PCRE2_SIZE eo = 0;
    /* PCRE2_LITERAL admits few other options; UCP and \C mean nothing to it. */
    uint32_t flags =
        literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, len, flags, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return fy__tok_fail(c, FY_EPARSE, "%s: bad regex at offset %zu: %s", where, (size_t)eo,
                            (const char *)msg);
    }
    /* JIT is an optimisation only: without it the interpreter gives the same matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return 0;
}

/* A {"String": s} or {"Regex": r} pattern object. */
static int load_pattern(tok_ctx *c, json_t *o, const char *where, pcre2_code **re, char **lit,
                        size_t *litlen)
{
    json_t *p = json_object_get(o, "pattern");
    if (!json_is_object(p)) {
        return fy__tok_fail(c, FY_EPARSE,
                            "%s.pattern: expected {\"String\": ...} or {\"Regex\": ...}", where);
    }
    json_t *s = json_object_get(p, "String");
    json_t *r = json_object_get(p, "Regex");
    if ((s != NULL) == (r != NULL) || !json_is_string(s ? s : r)) {
        return fy__tok_fail(c, FY_EPARSE, "%s.pattern: expected one string field String or Regex",
                            where);
    }
    json_t *v = s ? s : r;
    const char *txt = json_string_value(v);
    size_t n = json_string_length(v);
    if (lit) {
        *lit = NULL;
        *litlen = 0;
        if (s) {
            *lit = fy__tok_dup(txt, n);
            if (!*lit) {
                return FY_ENOMEM;
            }
            *litlen = n;
        }
    }
    return fy__tok_compile_re(c, txt, n, s != NULL, where, re);
}

static void step_free(tok_step *s)
{
    free(s->a);
    free(s->b);
    pcre2_code_free(s->re);
    memset(s, 0, sizeof *s);
}

static int type_of(tok_ctx *c, json_t *o, const char *where, const char **type)
{
    if (!json_is_object(o)) {
        return fy__tok_fail(c, FY_EPARSE, "%s: expected an object", where);
    }
    return req_str(c, o, "type", where, type);
}

static tok_step *new_step(tok_ctx *c, tok_step *steps, int *n, const char *where)
{
    if (*n >= TOK_MAX_STEPS) {
        fy__tok_fail(c, FY_ETOOBIG, "%s: more than %d steps", where, TOK_MAX_STEPS);
        return NULL;
    }
    tok_step *s = &steps[(*n)++];
    memset(s, 0, sizeof *s);
    return s;
}

static int set_str(tok_step *s, char **dst, size_t *dlen, const char *src, size_t n)
{
    (void)s;
    *dst = fy__tok_dup(src, n);
    if (!*dst) {
        return FY_ENOMEM;
    }
    *dlen = n;
    return 0;
}

/* A single-character string field (Metaspace replacement, Strip content). */
static int char_field(tok_ctx *c, json_t *o, const char *key, const char *where, const char *def,
                      const char **out, size_t *len)
{
    const char *v = NULL;
    int rc = opt_str(c, o, key, where, &v);
    if (rc) {
        return rc;
    }
    if (!v) {
        v = def;
    }
    if (!v) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: missing", where, key);
    }
    size_t n = strlen(v);
    uint32_t cp;
    if (n == 0 || fy_utf8_char(v, n, &cp) != n) {
        return fy__tok_fail(c, FY_EPARSE, "%s.%s: expected exactly one character", where, key);
    }
    *out = v;
    *len = n;
    return 0;
}

/* ---- normalizer ------------------------------------------------------------ */

static int load_normalizer(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where, int depth)
{
    if (!o || json_is_null(o)) {
        return 0;
    }
    const char *type;
    int rc = type_of(c, o, where, &type);
    if (rc) {
        return rc;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(o, "normalizers");
        if (!json_is_array(a)) {
            return fy__tok_fail(c, FY_EPARSE, "%s.normalizers: expected an array", where);
        }
        if (depth >= TOK_MAX_DEPTH) {
            return fy__tok_fail(c, FY_ETOOBIG, "%s: Sequence nested too deep", where);
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.normalizers[%zu]", where, i);
            if ((rc = load_normalizer(c, t, json_array_get(a, i), w, depth + 1))) {
                return rc;
            }
        }
        return 0;
    }
    tok_step *s = new_step(c, t->norm, &t->n_norm, where);
    if (!s) {
        return FY_ETOOBIG;
    }
    if (strcmp(type, "Prepend") == 0) {
        const char *p;
        if ((rc = req_str(c, o, "prepend", where, &p))) {
            return rc;
        }
        s->kind = TOK_N_PREPEND;
        return set_str(s, &s->a, &s->alen, p, strlen(p));
    }
    if (strcmp(type, "Replace") == 0) {
        const char *content;
        if ((rc = req_str(c, o, "content", where, &content))) {
            return rc;
        }
        s->kind = TOK_N_REPLACE_RE;
        if ((rc = load_pattern(c, o, where, &s->re, &s->a, &s->alen))) {
            return rc;
        }
        return set_str(s, &s->b, &s->blen, content, strlen(content));
    }
    static const struct {
        const char *name;
        int kind;
    } simple[] = {{"NFC", TOK_N_NFC},
                  {"NFD", TOK_N_NFD},
                  {"NFKC", TOK_N_NFKC},
                  {"NFKD", TOK_N_NFKD},
                  {"Lowercase", TOK_N_LOWERCASE}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
        if (strcmp(type, simple[i].name) == 0) {
            s->kind = simple[i].kind;
            return 0;
        }
    }
    if (strcmp(type, "Strip") == 0) {
        s->kind = TOK_N_STRIP;
        if ((rc = opt_bool(c, o, "left", where, 1, &s->left)) ||
            (rc = opt_bool(c, o, "right", where, 1, &s->right))) {
            return rc;
        }
        return 0;
    }
    return fy__tok_fail(c, FY_ENOTSUP, "%s.type: normalizer \"%s\" is not supported", where, type);
}

/* ---- pre-tokenizer ------------------------------------------------------- */

static int split_behavior(tok_ctx *c, json_t *o, const char *where, int *out)
{
    const char *b;
    int rc = req_str(c, o, "behavior", where, &b);
    if (rc) {
        return rc;
    }
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(b, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    return fy__tok_fail(c, FY_EPARSE, "%s.behavior: unknown value \"%s\"", where, b);
}

static int prepend_scheme(tok_ctx *c, json_t *o, const char *where, int *out)
{
    const char *p;
    int rc = opt_str(c, o, "prepend_scheme", where, &p);
    if (rc) {
        return rc;
    }
    if (!p) { /* older files: add_prefix_space */
        int aps;
        if ((rc = opt_bool(c, o, "add_prefix_space", where, 1, &aps))) {
            return rc;
        }
        *out = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
        return 0;
    }
    if (strcmp(p, "first") == 0) {
        *out = TOK_PREPEND_FIRST;
    } else if (strcmp(p, "always") == 0) {
        *out = TOK_PREPEND_ALWAYS;
    } else if (strcmp(p, "never") == 0) {
        *out = TOK_PREPEND_NEVER;
    } else {
        return fy__tok_fail(c, FY_EPARSE, "%s.prepend_scheme: unknown value \"%s\"", where, p);
    }
    return 0;
}

static int load_pretok(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where, int depth)
{
    if (!o || json_is_null(o)) {
        return 0;
    }
    const char *type;
    int rc = type_of(c, o, where, &type);
    if (rc) {
        return rc;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(o, "pretokenizers");
        if (!json_is_array(a)) {
            return fy__tok_fail(c, FY_EPARSE, "%s.pretokenizers: expected an array", where);
        }
        if (depth >= TOK_MAX_DEPTH) {
            return fy__tok_fail(c, FY_ETOOBIG, "%s: Sequence nested too deep", where);
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.pretokenizers[%zu]", where, i);
            if ((rc = load_pretok(c, t, json_array_get(a, i), w, depth + 1))) {
                return rc;
            }
        }
        return 0;
    }
    tok_step *s = new_step(c, t->pretok, &t->n_pretok, where);
    if (!s) {
        return FY_ETOOBIG;
    }
    if (strcmp(type, "Split") == 0) {
        s->kind = TOK_P_SPLIT;
        if ((rc = load_pattern(c, o, where, &s->re, NULL, NULL)) ||
            (rc = split_behavior(c, o, where, &s->behavior)) ||
            (rc = opt_bool(c, o, "invert", where, 0, &s->invert))) {
            return rc;
        }
        return 0;
    }
    if (strcmp(type, "Digits") == 0) {
        int individual;
        if ((rc = opt_bool(c, o, "individual_digits", where, 0, &individual))) {
            return rc;
        }
        /* HF splits on char::is_numeric: one match per digit (Isolated), or
         * runs of them (Contiguous), which is \p{N}+ isolated. */
        s->kind = TOK_P_SPLIT;
        s->behavior = TOK_SPLIT_ISOLATED;
        const char *pat = individual ? "\\p{N}" : "\\p{N}+";
        return fy__tok_compile_re(c, pat, strlen(pat), 0, where, &s->re);
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep;
        size_t n;
        s->kind = TOK_P_METASPACE;
        if ((rc = char_field(c, o, "replacement", where, "\xe2\x96\x81", &rep, &n)) ||
            (rc = prepend_scheme(c, o, where, &s->prepend)) ||
            (rc = opt_bool(c, o, "split", where, 1, &s->split))) {
            return rc;
        }
        if ((rc = set_str(s, &s->a, &s->alen, rep, n))) {
            return rc;
        }
        return s->split ? fy__tok_compile_re(c, rep, n, 1, where, &s->re) : 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        int use_regex;
        s->kind = TOK_P_BYTELEVEL;
        if ((rc = opt_bool(c, o, "add_prefix_space", where, 1, &s->add_prefix_space)) ||
            (rc = opt_bool(c, o, "use_regex", where, 1, &use_regex))) {
            return rc;
        }
        return use_regex ? fy__tok_compile_re(c, fy__tok_gpt2_pattern, strlen(fy__tok_gpt2_pattern),
                                              0, where, &s->re)
                         : 0;
    }
    return fy__tok_fail(c, FY_ENOTSUP, "%s.type: pre-tokenizer \"%s\" is not supported", where,
                        type);
}

/* ---- decoder ---------------------------------------------------------- */

static int load_decoder(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where, int depth,
                        int *fused)
{
    if (!o || json_is_null(o)) {
        return 0;
    }
    const char *type;
    int rc = type_of(c, o, where, &type);
    if (rc) {
        return rc;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(o, "decoders");
        if (!json_is_array(a)) {
            return fy__tok_fail(c, FY_EPARSE, "%s.decoders: expected an array", where);
        }
        if (depth >= TOK_MAX_DEPTH) {
            return fy__tok_fail(c, FY_ETOOBIG, "%s: Sequence nested too deep", where);
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.decoders[%zu]", where, i);
            if ((rc = load_decoder(c, t, json_array_get(a, i), w, depth + 1, fused))) {
                return rc;
            }
        }
        return 0;
    }
    if (strcmp(type, "Fuse") == 0) {
        *fused = 1; /* tokens are concatenated anyway */
        return 0;
    }
    if (strcmp(type, "Strip") == 0 && *fused) {
        const char *ch;
        size_t n;
        long start, stop;
        if ((rc = char_field(c, o, "content", where, NULL, &ch, &n)) ||
            (rc = opt_int(c, o, "start", where, 0, 64, 0, &start)) ||
            (rc = opt_int(c, o, "stop", where, 0, 64, 0, &stop))) {
            return rc;
        }
        /* After Fuse there is one string: strip its start. A strip at the
         * end would have to hold streamed text back; no model we know does it. */
        if (strcmp(ch, " ") != 0 || stop != 0) {
            return fy__tok_fail(c, FY_ENOTSUP,
                                "%s: only Strip of leading spaces after Fuse is supported", where);
        }
        t->dec_strip_start += (int)start;
        return 0;
    }
    if (*fused) {
        return fy__tok_fail(c, FY_ENOTSUP, "%s.type: decoder \"%s\" after Fuse is not supported",
                            where, type);
    }
    tok_step *s = new_step(c, t->dec, &t->n_dec, where);
    if (!s) {
        return FY_ETOOBIG;
    }
    if (strcmp(type, "Strip") == 0) {
        const char *ch;
        size_t n;
        long start, stop;
        s->kind = TOK_D_STRIP;
        if ((rc = char_field(c, o, "content", where, NULL, &ch, &n)) ||
            (rc = opt_int(c, o, "start", where, 0, 64, 0, &start)) ||
            (rc = opt_int(c, o, "stop", where, 0, 64, 0, &stop))) {
            return rc;
        }
        s->start = (int)start;
        s->stop = (int)stop;
        return set_str(s, &s->a, &s->alen, ch, n);
    }
    if (strcmp(type, "Replace") == 0) {
        const char *content;
        s->kind = TOK_D_REPLACE;
        if ((rc = req_str(c, o, "content", where, &content)) ||
            (rc = load_pattern(c, o, where, &s->re, &s->a, &s->alen))) {
            return rc;
        }
        return set_str(s, &s->b, &s->blen, content, strlen(content));
    }
    if (strcmp(type, "ByteFallback") == 0) {
        s->kind = TOK_D_BYTEFALLBACK;
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        s->kind = TOK_D_BYTELEVEL;
        return 0;
    }
    if (strcmp(type, "Metaspace") == 0) {
        const char *rep;
        size_t n;
        s->kind = TOK_D_METASPACE;
        if ((rc = char_field(c, o, "replacement", where, "\xe2\x96\x81", &rep, &n)) ||
            (rc = prepend_scheme(c, o, where, &s->prepend))) {
            return rc;
        }
        return set_str(s, &s->a, &s->alen, rep, n);
    }
    return fy__tok_fail(c, FY_ENOTSUP, "%s.type: decoder \"%s\" is not supported", where, type);
}

/* ---- post-processor ------------------------------------------------------ */

static int template_push(tok_ctx *c, int32_t *arr, int *n, int32_t id, const char *where)
{
    if (*n >= TOK_MAX_TEMPLATE) {
        return fy__tok_fail(c, FY_ETOOBIG, "%s: more than %d special tokens on one side", where,
                            TOK_MAX_TEMPLATE);
    }
    arr[(*n)++] = id;
    return 0;
}

static int check_id(tok_ctx *c, const fy_tokenizer *t, json_t *v, const char *where, int32_t *out)
{
    *out = -1; /* defined on every path, so callers never read an unset id */
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= t->n_vocab ||
        !t->piece[json_integer_value(v)]) {
        return fy__tok_fail(c, FY_EPARSE, "%s: expected the id of a token", where);
    }
    *out = (int32_t)json_integer_value(v);
    return 0;
}

static int load_template(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where)
{
    json_t *single = json_object_get(o, "single");
    json_t *specials = json_object_get(o, "special_tokens");
    if (!json_is_array(single)) {
        return fy__tok_fail(c, FY_EPARSE, "%s.single: expected an array", where);
    }
    if (specials && !json_is_object(specials)) {
        return fy__tok_fail(c, FY_EPARSE, "%s.special_tokens: expected an object", where);
    }
    int seen_seq = 0, rc;
    for (size_t i = 0; i < json_array_size(single); i++) {
        json_t *it = json_array_get(single, i);
        json_t *sp = json_object_get(it, "SpecialToken");
        json_t *sq = json_object_get(it, "Sequence");
        char w[160];
        snprintf(w, sizeof w, "%s.single[%zu]", where, i);
        if (!json_is_object(it) || (sp != NULL) == (sq != NULL)) {
            return fy__tok_fail(c, FY_EPARSE,
                                "%s: expected {\"SpecialToken\": ...} or {\"Sequence\": ...}", w);
        }
        if (sq) {
            const char *id;
            if ((rc = req_str(c, sq, "id", w, &id))) {
                return rc;
            }
            if (strcmp(id, "A") != 0 || seen_seq) {
                return fy__tok_fail(c, FY_EPARSE, "%s.Sequence.id: a single template holds $A once",
                                    w);
            }
            seen_seq = 1;
            continue;
        }
        const char *name;
        if ((rc = req_str(c, sp, "id", w, &name))) {
            return rc;
        }
        json_t *st = json_object_get(specials, name);
        json_t *ids = json_object_get(st, "ids");
        if (!json_is_array(ids) || json_array_size(ids) == 0) {
            return fy__tok_fail(c, FY_EPARSE,
                                "%s.special_tokens[\"%s\"].ids: expected an array of ids", where,
                                name);
        }
        for (size_t k = 0; k < json_array_size(ids); k++) {
            int32_t id;
            if ((rc = check_id(c, t, json_array_get(ids, k), w, &id)) ||
                (rc = template_push(c, seen_seq ? t->post : t->pre,
                                    seen_seq ? &t->n_post : &t->n_pre, id, w))) {
                return rc;
            }
        }
    }
    if (!seen_seq) {
        return fy__tok_fail(c, FY_EPARSE, "%s.single: no $A sequence", where);
    }
    return 0;
}

/* RobertaProcessing / BertProcessing: "cls": [text, id], "sep": [text, id]. */
static int load_cls_sep(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where)
{
    static const char *keys[] = {"cls", "sep"};
    for (int k = 0; k < 2; k++) {
        json_t *v = json_object_get(o, keys[k]);
        char w[160];
        snprintf(w, sizeof w, "%s.%s", where, keys[k]);
        if (!json_is_array(v) || json_array_size(v) != 2) {
            return fy__tok_fail(c, FY_EPARSE, "%s: expected [text, id]", w);
        }
        int32_t id;
        int rc = check_id(c, t, json_array_get(v, 1), w, &id);
        if (!rc) {
            rc = template_push(c, k ? t->post : t->pre, k ? &t->n_post : &t->n_pre, id, w);
        }
        if (rc) {
            return rc;
        }
    }
    return 0;
}

static int load_post(tok_ctx *c, fy_tokenizer *t, json_t *o, const char *where, int depth)
{
    if (!o || json_is_null(o)) {
        return 0;
    }
    const char *type;
    int rc = type_of(c, o, where, &type);
    if (rc) {
        return rc;
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *a = json_object_get(o, "processors");
        if (!json_is_array(a)) {
            return fy__tok_fail(c, FY_EPARSE, "%s.processors: expected an array", where);
        }
        if (depth >= TOK_MAX_DEPTH) {
            return fy__tok_fail(c, FY_ETOOBIG, "%s: Sequence nested too deep", where);
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            char w[128];
            snprintf(w, sizeof w, "%s.processors[%zu]", where, i);
            if ((rc = load_post(c, t, json_array_get(a, i), w, depth + 1))) {
                return rc;
            }
        }
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        return 0; /* offsets only */
    }
    if (strcmp(type, "TemplateProcessing") == 0) {
        return load_template(c, t, o, where);
    }
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        return load_cls_sep(c, t, o, where);
    }
    return fy__tok_fail(c, FY_ENOTSUP, "%s.type: post-processor \"%s\" is not supported", where,
                        type);
}

/* ---- model ---------------------------------------------------------------- */

static int load_vocab(tok_ctx *c, fy_tokenizer *f, json_t *vocab, json_t *added)
{
    fy_tokenizer *t = f;
    if (!json_is_object(vocab)) {
        return fy__tok_fail(c, FY_EPARSE, "model.vocab: expected an object");
    }
    size_t n = json_object_size(vocab);
    if (n > TOK_MAX_VOCAB) {
        return fy__tok_fail(c, FY_ETOOBIG, "model.vocab: more than %d entries", TOK_MAX_VOCAB);
    }
    /* The largest id sets the table size; added tokens may extend it. */
    long max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= TOK_MAX_VOCAB) {
            return fy__tok_fail(c, FY_EPARSE, "model.vocab[\"%.64s\"]: id out of range [0, %d)",
                                key, TOK_MAX_VOCAB);
        }
        if (json_integer_value(v) > max_id) {
            max_id = (long)json_integer_value(v);
        }
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *id = json_object_get(json_array_get(added, i), "id");
        if (json_is_integer(id) && json_integer_value(id) > max_id &&
            json_integer_value(id) < TOK_MAX_VOCAB) {
            max_id = (long)json_integer_value(id);
        }
    }
    if (max_id < 0) {
        return fy__tok_fail(c, FY_EPARSE, "model.vocab: empty");
    }
    int rc = fy__tok_vocab_alloc(t, (int32_t)(max_id + 1), n);
    if (rc) {
        return rc;
    }
    json_object_foreach(vocab, key, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        size_t kl = strlen(key);
        if (kl > TOK_MAX_TOKEN_BYTES) {
            return fy__tok_fail(c, FY_ETOOBIG, "model.vocab: token %d longer than %d bytes", id,
                                TOK_MAX_TOKEN_BYTES);
        }
        if (f->vstr[id]) {
            return fy__tok_fail(c, FY_EPARSE,
                                "model.vocab: id %d given twice (\"%.64s\" and \"%.64s\")", id,
                                f->vstr[id], key);
        }
        if ((rc = fy__tok_vocab_put(t, id, key, kl))) {
            return rc;
        }
    }
    return 0;
}

static int merge_side(tok_ctx *c, fy_tokenizer *t, const char *s, size_t n, size_t i, int32_t *id)
{
    *id = fy__tok_vocab_find(t, s, n);
    if (*id < 0) {
        return fy__tok_fail(c, FY_EPARSE, "model.merges[%zu]: \"%.*s\" is not in model.vocab", i,
                            (int)(n > 64 ? 64 : n), s);
    }
    return 0;
}

static int load_merges(tok_ctx *c, fy_tokenizer *t, json_t *merges)
{
    if (!merges || json_is_null(merges)) {
        return 0;
    }
    if (!json_is_array(merges)) {
        return fy__tok_fail(c, FY_EPARSE, "model.merges: expected an array");
    }
    size_t n = json_array_size(merges);
    if (n > TOK_MAX_MERGES) {
        return fy__tok_fail(c, FY_ETOOBIG, "model.merges: more than %d entries", TOK_MAX_MERGES);
    }
    if (fy__tok_merges_alloc(t, n)) {
        return FY_ENOMEM;
    }
    char joined[2 * TOK_MAX_TOKEN_BYTES + 1];
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t al, bl;
        if (json_is_string(m)) { /* "a b": exactly one space */
            a = json_string_value(m);
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                return fy__tok_fail(c, FY_EPARSE, "model.merges[%zu]: expected \"left right\"", i);
            }
            al = (size_t)(sp - a);
            b = sp + 1;
            bl = strlen(b);
        } else if (json_is_array(m) && json_array_size(m) == 2 &&
                   json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0));
            al = json_string_length(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            bl = json_string_length(json_array_get(m, 1));
        } else {
            return fy__tok_fail(c, FY_EPARSE,
                                "model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", i);
        }
        int32_t ia, ib, ij;
        int rc;
        if ((rc = merge_side(c, t, a, al, i, &ia)) || (rc = merge_side(c, t, b, bl, i, &ib))) {
            return rc;
        }
        memcpy(joined, a, al);
        memcpy(joined + al, b, bl);
        if ((rc = merge_side(c, t, joined, al + bl, i, &ij))) {
            return rc;
        }
        /* A pair listed twice keeps its later rank, as HF's map does. */
        fy__tok_merge_put(t, ia, ib, (int32_t)i, ij);
    }
    return 0;
}

static int load_model(tok_ctx *c, fy_tokenizer *f, json_t *m, json_t *added)
{
    fy_tokenizer *t = f;
    if (!json_is_object(m)) {
        return fy__tok_fail(c, FY_EPARSE, "model: expected an object");
    }
    const char *type;
    int rc = opt_str(c, m, "type", "model", &type);
    if (rc) {
        return rc;
    }
    if (type ? strcmp(type, "BPE") != 0 : !json_object_get(m, "merges")) {
        return fy__tok_fail(c, FY_ENOTSUP, "model.type: \"%s\" is not supported (only BPE)",
                            type ? type : "(none)");
    }
    if ((rc = load_vocab(c, f, json_object_get(m, "vocab"), added)) ||
        (rc = load_merges(c, t, json_object_get(m, "merges")))) {
        return rc;
    }
    if ((rc = opt_bool(c, m, "byte_fallback", "model", 0, &t->byte_fallback)) ||
        (rc = opt_bool(c, m, "fuse_unk", "model", 0, &t->fuse_unk)) ||
        (rc = opt_bool(c, m, "ignore_merges", "model", 0, &t->ignore_merges))) {
        return rc;
    }
    static const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s;
        if ((rc = opt_str(c, m, affixes[i], "model", &s))) {
            return rc;
        }
        if (s && *s) {
            return fy__tok_fail(c, FY_ENOTSUP, "model.%s: non-empty values are not supported",
                                affixes[i]);
        }
    }
    json_t *d = json_object_get(m, "dropout");
    if (d && !json_is_null(d) && !json_is_number(d)) {
        return fy__tok_fail(c, FY_EPARSE, "model.dropout: expected a number or null");
    }
    const char *unk;
    if ((rc = opt_str(c, m, "unk_token", "model", &unk))) {
        return rc;
    }
    t->unk_id = -1;
    if (unk && (t->unk_id = fy__tok_vocab_find(t, unk, strlen(unk))) < 0) {
        return fy__tok_fail(c, FY_EPARSE, "model.unk_token: \"%.64s\" is not in model.vocab", unk);
    }
    return 0;
}

/* ---- added tokens ------------------------------------------------------- */

static int added_cmp(const void *pa, const void *pb)
{
    const tok_added *a = pa, *b = pb;
    unsigned char ca = (unsigned char)a->content[0], cb = (unsigned char)b->content[0];
    if (ca != cb) {
        return ca < cb ? -1 : 1;
    }
    if (a->len != b->len) {
        return a->len > b->len ? -1 : 1; /* longest first */
    }
    return a->id < b->id ? -1 : a->id > b->id;
}

int fy__tok_added_alloc(fy_tokenizer *t, size_t n)
{
    t->added = calloc(n ? n : 1, sizeof *t->added);
    return t->added ? 0 : FY_ENOMEM;
}

int fy__tok_added_put(fy_tokenizer *t, tok_added a)
{
    if (!(a.content = fy__tok_dup(a.content, a.len))) {
        return FY_ENOMEM;
    }
    t->added[t->n_added++] = a;
    /* The added text is this id's text from now on (HF's id_to_token). */
    t->piece[a.id] = a.content;
    t->piece_len[a.id] = (uint32_t)a.len;
    t->special[a.id] = a.special;
    return 0;
}

void fy__tok_added_index(fy_tokenizer *t)
{
    qsort(t->added, t->n_added, sizeof *t->added, added_cmp);
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < t->n_added && (unsigned char)t->added[k].content[0] < b) {
            k++;
        }
        t->added_first[b] = (uint32_t)k;
    }
}

static int load_added(tok_ctx *c, fy_tokenizer *t, json_t *arr)
{
    if (!arr || json_is_null(arr)) {
        return 0;
    }
    if (!json_is_array(arr)) {
        return fy__tok_fail(c, FY_EPARSE, "added_tokens: expected an array");
    }
    size_t n = json_array_size(arr);
    if (n > TOK_MAX_ADDED) {
        return fy__tok_fail(c, FY_ETOOBIG, "added_tokens: more than %d entries", TOK_MAX_ADDED);
    }
    uint8_t *seen = calloc((size_t)t->n_vocab, 1);
    int rc = fy__tok_added_alloc(t, n);
    if (rc || !seen) {
        rc = FY_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(arr, i);
        char w[64];
        snprintf(w, sizeof w, "added_tokens[%zu]", i);
        if (!json_is_object(o)) {
            rc = fy__tok_fail(c, FY_EPARSE, "%s: expected an object", w);
            goto out;
        }
        json_t *id = json_object_get(o, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= t->n_vocab) {
            rc = fy__tok_fail(c, FY_EPARSE, "%s.id: expected an id in [0, %d)", w, TOK_MAX_VOCAB);
            goto out;
        }
        int32_t tid = (int32_t)json_integer_value(id);
        if (seen[tid]) {
            rc = fy__tok_fail(c, FY_EPARSE, "%s.id: %d given twice", w, tid);
            goto out;
        }
        seen[tid] = 1;
        const char *content;
        if ((rc = req_str(c, o, "content", w, &content))) {
            goto out;
        }
        size_t len = json_string_length(json_object_get(o, "content"));
        if (len == 0 || len > TOK_MAX_TOKEN_BYTES) {
            rc = fy__tok_fail(c, FY_EPARSE, "%s.content: empty or longer than %d bytes", w,
                              TOK_MAX_TOKEN_BYTES);
            goto out;
        }
        int sp, ls, rs, nm, sw;
        if ((rc = opt_bool(c, o, "special", w, 0, &sp)) ||
            (rc = opt_bool(c, o, "lstrip", w, 0, &ls)) ||
            (rc = opt_bool(c, o, "rstrip", w, 0, &rs)) ||
            (rc = opt_bool(c, o, "normalized", w, !sp, &nm)) ||
            (rc = opt_bool(c, o, "single_word", w, 0, &sw))) {
            goto out;
        }
        if ((rc = fy__tok_added_put(t,
                                    (tok_added){(char *)content, len, tid, (uint8_t)sp, (uint8_t)ls,
                                                (uint8_t)rs, (uint8_t)nm, (uint8_t)sw}))) {
            goto out;
        }
    }
    fy__tok_added_index(t);
out:
    free(seen);
    return rc;
}

/* ---- tokenizer_config.json -------------------------------------------- */

static int32_t find_token(const fy_tokenizer *t, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].len == n && memcmp(t->added[i].content, s, n) == 0) {
            return t->added[i].id;
        }
    }
    return fy__tok_vocab_find(t, s, n);
}

/* bos_token / eos_token: a string, {"content": ...} or null. */
static int config_token(tok_ctx *c, const fy_tokenizer *t, json_t *cfg, const char *key,
                        int32_t *out)
{
    json_t *v = json_object_get(cfg, key);
    *out = -1;
    if (!v || json_is_null(v)) {
        return 0;
    }
    const char *s = NULL;
    if (json_is_string(v)) {
        s = json_string_value(v);
    } else if (json_is_object(v) && json_is_string(json_object_get(v, "content"))) {
        s = json_string_value(json_object_get(v, "content"));
    } else {
        return fy__tok_fail(c, FY_EPARSE, "%s: expected a string or {\"content\": ...}", key);
    }
    if ((*out = find_token(t, s)) < 0) {
        return fy__tok_fail(c, FY_EPARSE, "%s: \"%.64s\" is not a token", key, s);
    }
    return 0;
}

static void template_set(int32_t *arr, int *n, int front, int32_t id, int want)
{
    int at = front ? 0 : *n - 1;
    int has = *n > 0 && arr[at] == id;
    if (want && !has && *n < TOK_MAX_TEMPLATE) {
        if (front) {
            memmove(arr + 1, arr, (size_t)*n * sizeof *arr);
            arr[0] = id;
        } else {
            arr[*n] = id;
        }
        (*n)++;
    } else if (!want && has) {
        if (front) {
            memmove(arr, arr + 1, (size_t)(*n - 1) * sizeof *arr);
        }
        (*n)--;
    }
}

static int load_config(tok_ctx *c, fy_tokenizer *t, const char *path)
{
    int32_t bos = -1, eos = -1;
    int rc = 0;
    json_t *cfg = NULL;
    if (path && fy_file_exists(path)) {
        char *data = NULL;
        size_t len = 0;
        if ((rc = fy_file_read(path, TOK_MAX_CONFIG_BYTES, &data, &len))) {
            return fy__tok_fail(c, rc, "cannot read %s: %s", path, fy_strerror(rc));
        }
        json_error_t je;
        cfg = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
        free(data);
        c->file = path;
        if (!json_is_object(cfg)) {
            rc = fy__tok_fail(c, FY_EPARSE, "line %d: %s", je.line,
                              cfg ? "expected an object" : je.text);
            goto out;
        }
        int add_bos, add_eos;
        json_t *ab = json_object_get(cfg, "add_bos_token"),
               *ae = json_object_get(cfg, "add_eos_token");
        if ((rc = config_token(c, t, cfg, "bos_token", &bos)) ||
            (rc = config_token(c, t, cfg, "eos_token", &eos)) ||
            (rc = opt_bool(c, cfg, "add_bos_token", "tokenizer_config", 0, &add_bos)) ||
            (rc = opt_bool(c, cfg, "add_eos_token", "tokenizer_config", 0, &add_eos))) {
            goto out;
        }
        /* Explicit add_*_token flags override the post-processor's template. */
        if (ab && json_is_boolean(ab) && (bos >= 0 || !add_bos)) {
            template_set(t->pre, &t->n_pre, 1, bos >= 0 ? bos : (t->n_pre ? t->pre[0] : -1),
                         add_bos);
        }
        if (ae && json_is_boolean(ae) && (eos >= 0 || !add_eos)) {
            template_set(t->post, &t->n_post, 0,
                         eos >= 0 ? eos : (t->n_post ? t->post[t->n_post - 1] : -1), add_eos);
        }
    }
    t->bos = bos >= 0 ? bos : (t->n_pre ? t->pre[0] : -1);
    t->eos = eos;
    if (t->eos < 0 && t->n_post) {
        t->eos = t->post[t->n_post - 1];
    }
    if (t->eos < 0) {
        /* No config: the conventional end-of-text specials (Llama 2's </s>,
         * GPT-2's <|endoftext|>), when the file declares them special. */
        static const char *names[] = {"</s>", "<|endoftext|>"};
        for (int i = 0; i < 2 && t->eos < 0; i++) {
            int32_t id = find_token(t, names[i]);
            if (id >= 0 && t->special[id]) {
                t->eos = id;
            }
        }
    }
out:
    json_decref(cfg);
    return rc;
}

/* ---- GPT-2 byte map and decode table ------------------------------------ */

static void bytelevel_init(fy_tokenizer *t)
{
    int extra = 0;
    for (int i = 0; i < 324; i++) {
        t->bl_dec[i] = -1;
    }
    for (int b = 0; b < 256; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        int cp = keep ? b : 256 + extra++;
        t->bl_dec[cp] = (int16_t)b;
        if (cp < 0x80) {
            t->bl_enc[b][0] = (char)cp;
            t->bl_len[b] = 1;
        } else {
            t->bl_enc[b][0] = (char)(0xc0 | (cp >> 6));
            t->bl_enc[b][1] = (char)(0x80 | (cp & 0x3f));
            t->bl_len[b] = 2;
        }
    }
}

static int build_decode_table(fy_tokenizer *t)
{
    fy_buf b;
    fy_buf_init(&b, UINT32_MAX / 2);
    t->dec_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->dec_off);
    if (!t->dec_off) {
        return FY_ENOMEM;
    }
    for (int32_t id = 0; id < t->n_vocab; id++) {
        t->dec_off[id] = (uint32_t)b.len;
        if (t->piece[id]) {
            int rc = fy__tok_decode_piece(t, id, 0, &b);
            if (rc) {
                fy_buf_free(&b);
                return rc;
            }
        }
    }
    t->dec_off[t->n_vocab] = (uint32_t)b.len;
    t->dec_bytes = b.data ? b.data : malloc(1);
    return t->dec_bytes ? 0 : FY_ENOMEM;
}

int fy__tok_finish(fy_tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_id[b] = fy__tok_vocab_find(t, name, 6);
    }
    bytelevel_init(t);
    return build_decode_table(t);
}

/* ---- entry points ---------------------------------------------------------- */

static int load_json(tok_ctx *c, fy_tokenizer *f, json_t *root)
{
    fy_tokenizer *t = f;
    int rc, fused = 0;
    if (!json_is_object(root)) {
        return fy__tok_fail(c, FY_EPARSE, "expected a JSON object");
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        return fy__tok_fail(c, FY_EPARSE, "added_tokens: expected an array");
    }
    if ((rc = load_model(c, f, json_object_get(root, "model"), added)) ||
        (rc = load_added(c, t, added)) ||
        (rc = load_normalizer(c, t, json_object_get(root, "normalizer"), "normalizer", 0)) ||
        (rc = load_pretok(c, t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0)) ||
        (rc = load_decoder(c, t, json_object_get(root, "decoder"), "decoder", 0, &fused)) ||
        (rc = load_post(c, t, json_object_get(root, "post_processor"), "post_processor", 0))) {
        return rc;
    }
    return 0;
}

static int tok_parse(tok_ctx *c, const char *data, size_t len, const char *config_path,
                     fy_tokenizer **out)
{
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        return fy__tok_fail(c, FY_EPARSE, "line %d column %d: %s", je.line, je.column, je.text);
    }
    fy_tokenizer *f = calloc(1, sizeof *f);
    int rc = f ? load_json(c, f, root) : FY_ENOMEM;
    json_decref(root);
    if (!rc) {
        rc = load_config(c, f, config_path);
    }
    if (!rc) {
        rc = fy__tok_finish(f);
    }
    if (rc) {
        if (rc == FY_ENOMEM) {
            fy__tok_fail(c, rc, "out of memory");
        }
        fy_tokenizer_free(f ? f : NULL);
        return rc;
    }
    *out = f;
    return 0;
}

int fy__tok_load_mem(const char *data, size_t len, const char *config_path, fy_tokenizer **out,
                     char *err, size_t errlen)
{
    tok_ctx c = {"tokenizer.json", err, errlen};
    *out = NULL;
    if (len > TOK_MAX_FILE_BYTES) {
        return fy__tok_fail(&c, FY_ETOOBIG, "larger than %u bytes", TOK_MAX_FILE_BYTES);
    }
    return tok_parse(&c, data, len, config_path, out);
}

int fy_tokenizer_load(const char *path, fy_tokenizer **out, char *err, size_t errlen)
{
    char file[4096], cfg[4096];
    struct stat st;
    tok_ctx c = {path, err, errlen};
    *out = NULL;
    if (stat(path, &st) != 0) {
        return fy__tok_fail(&c, FY_ENOENT, "no such file or directory");
    }
    if (S_ISDIR(st.st_mode)) {
        if (fy_path_join(file, sizeof file, path, "tokenizer.json") ||
            fy_path_join(cfg, sizeof cfg, path, "tokenizer_config.json")) {
            return fy__tok_fail(&c, FY_ETOOBIG, "path too long");
        }
    } else {
        size_t n = strlen(path);
        const char *slash = strrchr(path, '/');
        size_t dl = slash ? (size_t)(slash - path) : 0;
        if (n >= sizeof file || dl + 32 >= sizeof cfg) {
            return fy__tok_fail(&c, FY_ETOOBIG, "path too long");
        }
        memcpy(file, path, n + 1);
        snprintf(cfg, sizeof cfg, "%.*s%stokenizer_config.json", (int)dl, path, slash ? "/" : "");
    }
    c.file = file;
    char *data = NULL;
    size_t len = 0;
    int rc = fy_file_read(file, TOK_MAX_FILE_BYTES, &data, &len);
    if (rc) {
        return fy__tok_fail(&c, rc, "cannot read: %s", fy_strerror(rc));
    }
    rc = tok_parse(&c, data, len, cfg, out);
    free(data);
    return rc;
}

void fy_tokenizer_free(fy_tokenizer *t)
{
    if (!t) {
        return;
    }
    fy_tokenizer *f = t;
    if (f->vstr) {
        for (int32_t i = 0; i < t->n_vocab; i++) {
            free(f->vstr[i]);
        }
    }
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
    }
    for (int i = 0; i < t->n_norm; i++) {
        step_free(&t->norm[i]);
    }
    for (int i = 0; i < t->n_pretok; i++) {
        step_free(&t->pretok[i]);
    }
    for (int i = 0; i < t->n_dec; i++) {
        step_free(&t->dec[i]);
    }
    free(f->vstr);
    free(f->vlen);
    free(t->added);
    free(t->piece);
    free(t->piece_len);
    free(t->special);
    free(t->vocab_slots);
    free(t->merges);
    free(t->dec_bytes);
    free(t->dec_off);
    free(f);
}

int fy_tokenizer_vocab_size(const fy_tokenizer *t)
{
    return t->n_vocab;
}

int fy_tokenizer_bos(const fy_tokenizer *t)
{
    return t->bos;
}

int fy_tokenizer_eos(const fy_tokenizer *t)
{
    return t->eos;
}

int fy_tokenizer_is_special(const fy_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->special[id];
}

int32_t fy_tokenizer_token_id(const fy_tokenizer *t, const char *piece)
{
    return piece ? find_token(t, piece) : -1;
}

const char *fy_tokenizer_piece(const fy_tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->piece[id] : NULL;
}

const char *fy_tokenizer_token_bytes(const fy_tokenizer *t, int32_t id, size_t *len)
{
    *len = 0;
    if (id < 0 || id >= t->n_vocab || !t->piece[id]) {
        return NULL;
    }
    *len = t->dec_off[id + 1] - t->dec_off[id];
    return t->dec_bytes + t->dec_off[id];
}
