/* tokenizer_gguf.c: a tokenizer from a GGUF file's tokenizer.ggml.* keys.
 *
 * The result is the structure tokenizer.c builds from a tokenizer.json, made
 * through the same constructors (tok_internal.h), so tok_encode.c and
 * tok_decode.c serve both unchanged. What a tokenizer.json spells out, a
 * GGUF leaves to convention; this file writes those conventions down as the
 * steps HF would have loaded:
 *
 *   llama (SentencePiece BPE): normalizer Prepend "▁" (add_space_prefix) and
 *   Replace " " -> "▁"; no pre-tokenizer; byte fallback; decoder Replace
 *   "▁" -> " ", ByteFallback, and a Strip of the one leading space the
 *   prefix stands for. SentencePiece merges the adjacent pair whose
 *   concatenation is the highest-scoring piece, ties to the leftmost. That
 *   is BPE with a merge table: for every piece P and every split of P into
 *   two pieces (A, B), the merge (A, B) -> P at P's rank in descending score
 *   order (equal scores, equal ranks, so the leftmost pair wins as in
 *   SentencePiece and llama.cpp). HF's converter derives tokenizer.json's
 *   merges the same way, which is why both files tokenize alike. Only normal
 *   and user-defined pieces are merge results: SentencePiece never makes a
 *   control, unknown, byte or unused piece out of text.
 *
 *   gpt2 (byte-level BPE): Split steps (Isolated) with the patterns llama.cpp
 *   uses for tokenizer.ggml.pre, then ByteLevel without its own regex;
 *   merges in file order; decoder ByteLevel.
 *
 * The prefix goes at the start of every text segment (after each added
 * token too), as llama.cpp's SPM tokenizer does; a Metaspace tokenizer.json
 * with prepend_scheme "first" differs there, and only when the text holds
 * added tokens.
 *
 * Every value is read from the file through gguf.h's views and checked
 * before use; nothing of G is kept. Costs: linear in the vocabulary's bytes
 * (plus a sort of the scores), and for llama one vocabulary lookup pair per
 * character boundary of each piece. */
#include "runner/engine/tok_internal.h"

#include "common/err.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define K_MODEL   "tokenizer.ggml.model"
#define K_PRE     "tokenizer.ggml.pre"
#define K_TOKENS  "tokenizer.ggml.tokens"
#define K_SCORES  "tokenizer.ggml.scores"
#define K_TYPES   "tokenizer.ggml.token_type"
#define K_MERGES  "tokenizer.ggml.merges"
#define K_ADD_BOS "tokenizer.ggml.add_bos_token"
#define K_ADD_EOS "tokenizer.ggml.add_eos_token"
#define K_PREFIX  "tokenizer.ggml.add_space_prefix"

/* tokenizer.ggml.token_type values (gguf-py's TokenType). */
enum {
    GG_NORMAL = 1,
    GG_UNKNOWN = 2,
    GG_CONTROL = 3,
    GG_USER = 4,
    GG_UNUSED = 5,
    GG_BYTE = 6,
};

#define GG_NO_ID  0xffffffffu /* a special id meaning "none", as llama.cpp writes it */
#define GG_SHOW   64          /* bytes of a token quoted in a message */
#define METASPACE "\xe2\x96\x81"

/* Llama 3's split pattern; Qwen2's differs in taking digits one at a time.
 * The contractions are spelt out rather than (?i:...), which under UCP would
 * also fold "ſ" and "K" (Kelvin) into them. */
static const char LLAMA3_PATTERN[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* The pre-tokenizers of tokenizer.ggml.pre ferry knows: each a chain of
 * Isolated splits, as llama.cpp runs them. */
static const struct {
    const char *name;
    const char *re[4];
    int ignore_merges; /* a piece that is a token is taken whole */
    int add_bos;       /* add_bos_token's default */
} PRETOK[] = {
    /* llama.cpp's fallback for files that name none. */
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", fy__tok_gpt2_pattern, "\\p{N}+", "[0-9][0-9][0-9]"},
     0,
     0},
    {"gpt-2", {fy__tok_gpt2_pattern}, 0, 0},
    {"llama-bpe", {LLAMA3_PATTERN}, 1, 1},
    {"qwen2", {QWEN2_PATTERN}, 0, 0},
};

typedef struct {
    tok_ctx c;
    const fy_gguf *g;
    fy_gguf_arr tok;
    int32_t n;
    int spm;     /* model llama; else gpt2 */
    uint8_t *ty; /* [n] token types (GG_NORMAL when the file has none) */
    float *sc;   /* [n] scores (required for llama), or NULL */
} gg_ctx;

static int str_is(fy_gguf_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static int show_len(uint64_t n)
{
    return n > GG_SHOW ? GG_SHOW : (int)n;
}

/* A bool key; DEF when absent. *SET (may be NULL) tells whether it was there. */
static int opt_bool(gg_ctx *gg, const char *key, int def, int *out, int *set)
{
    const fy_gguf_kv *kv = fy_gguf_find(gg->g, key);
    *out = def;
    if (set) {
        *set = kv != NULL;
    }
    if (!kv) {
        return 0;
    }
    if (kv->v.type != FY_GGUF_BOOL) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: expected a bool, not %s", key,
                            fy_gguf_type_name(kv->v.type));
    }
    *out = kv->v.b;
    return 0;
}

/* A special token id key: DEF when absent, -1 for 0xFFFFFFFF. */
static int opt_id(gg_ctx *gg, const char *key, int32_t def, int32_t *out)
{
    uint32_t v;
    *out = def;
    if (!fy_gguf_find(gg->g, key)) {
        return 0;
    }
    int rc = fy_gguf_get_u32(gg->g, key, &v, gg->c.err, gg->c.errlen);
    if (rc) {
        return rc;
    }
    if (v == GG_NO_ID) {
        *out = -1;
        return 0;
    }
    if (v >= (uint32_t)gg->n) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: %u is not a token id (the vocabulary has %d)",
                            key, v, gg->n);
    }
    *out = (int32_t)v;
    return 0;
}

/* An array as long as tokenizer.ggml.tokens; unless REQUIRED, A->n is 0
 * when the key is absent. */
static int token_arr(gg_ctx *gg, const char *key, fy_gguf_type elem, int required, fy_gguf_arr *a)
{
    memset(a, 0, sizeof *a);
    if (!required && !fy_gguf_find(gg->g, key)) {
        return 0;
    }
    int rc = fy_gguf_get_arr(gg->g, key, elem, a, gg->c.err, gg->c.errlen);
    if (rc == 0 && a->n != (uint64_t)gg->n) {
        rc = fy__tok_fail(&gg->c, FY_EPARSE, "%s: %llu entries for %d tokens", key,
                          (unsigned long long)a->n, gg->n);
    }
    return rc;
}

/* ---- vocabulary, scores, types --------------------------------------------- */

static int load_vocab(gg_ctx *gg, fy_tokenizer *t)
{
    int rc = fy_gguf_get_arr(gg->g, K_TOKENS, FY_GGUF_STR, &gg->tok, gg->c.err, gg->c.errlen);
    if (rc) {
        return rc;
    }
    if (gg->tok.n == 0) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: empty", K_TOKENS);
    }
    if (gg->tok.n > TOK_MAX_VOCAB) {
        return fy__tok_fail(&gg->c, FY_ETOOBIG, "%s: more than %d tokens", K_TOKENS, TOK_MAX_VOCAB);
    }
    gg->n = (int32_t)gg->tok.n;
    if ((rc = fy__tok_vocab_alloc(t, gg->n, (size_t)gg->n))) {
        return rc;
    }
    for (int32_t i = 0; i < gg->n; i++) {
        fy_gguf_val v;
        fy_gguf_arr_get(&gg->tok, (uint64_t)i, &v); /* i < n: a string, by the element type */
        fy_gguf_str s = v.s;
        if (s.len > TOK_MAX_TOKEN_BYTES) {
            return fy__tok_fail(&gg->c, FY_ETOOBIG, "%s[%d]: longer than %d bytes", K_TOKENS, i,
                                TOK_MAX_TOKEN_BYTES);
        }
        if (memchr(s.p, 0, s.len) || !fy_utf8_valid(s.p, s.len)) {
            return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%d]: not valid UTF-8 text (or holds NUL)",
                                K_TOKENS, i);
        }
        int32_t dup = fy__tok_vocab_find(t, s.p, s.len);
        if (dup >= 0 && s.len > 0) {
            return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%d]: \"%.*s\" is token %d too", K_TOKENS, i,
                                show_len(s.len), s.p, dup);
        }
        if (dup >= 0) {
            /* Empty tokens (llama.cpp tolerates them) match nothing; only
             * the first is indexed. */
            if (!(t->vstr[i] = fy__tok_dup("", 0))) {
                return FY_ENOMEM;
            }
            t->piece[i] = t->vstr[i];
            continue;
        }
        if ((rc = fy__tok_vocab_put(t, i, s.p, s.len))) {
            return rc;
        }
    }
    return 0;
}

static int load_scores(gg_ctx *gg)
{
    fy_gguf_arr a;
    int rc = token_arr(gg, K_SCORES, FY_GGUF_F32, gg->spm, &a);
    if (rc || a.n == 0) {
        return rc; /* gpt2 needs none, but checks what it has */
    }
    if (!(gg->sc = malloc((size_t)gg->n * sizeof *gg->sc))) {
        return FY_ENOMEM;
    }
    for (int32_t i = 0; i < gg->n; i++) {
        fy_gguf_val v;
        fy_gguf_arr_get(&a, (uint64_t)i, &v);
        if (isnan(v.f)) {
            return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%d]: not a number", K_SCORES, i);
        }
        gg->sc[i] = (float)v.f;
    }
    return 0;
}

static int is_byte_name(fy_gguf_str s)
{
    static const char hex[] = "0123456789ABCDEF";
    return s.len == 6 && memcmp(s.p, "<0x", 3) == 0 && s.p[5] == '>' && s.p[3] &&
           strchr(hex, s.p[3]) && s.p[4] && strchr(hex, s.p[4]);
}

static int load_types(gg_ctx *gg, const fy_tokenizer *t)
{
    fy_gguf_arr a;
    int rc = token_arr(gg, K_TYPES, FY_GGUF_NTYPES, 0, &a);
    if (rc) {
        return rc;
    }
    if (!(gg->ty = malloc((size_t)gg->n))) {
        return FY_ENOMEM;
    }
    memset(gg->ty, GG_NORMAL, (size_t)gg->n);
    if (a.n && a.type != FY_GGUF_I32 && a.type != FY_GGUF_U32 && a.type != FY_GGUF_I8 &&
        a.type != FY_GGUF_U8 && a.type != FY_GGUF_I16 && a.type != FY_GGUF_U16) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: expected an array of integers, not of %s",
                            K_TYPES, fy_gguf_type_name(a.type));
    }
    for (uint64_t i = 0; i < a.n; i++) {
        fy_gguf_val v;
        fy_gguf_arr_get(&a, i, &v);
        int64_t k = v.type == FY_GGUF_I32 || v.type == FY_GGUF_I16 || v.type == FY_GGUF_I8
                        ? v.i
                        : (int64_t)v.u;
        if (k < GG_NORMAL || k > GG_BYTE) {
            return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%llu]: %lld is not a token type (1-6)",
                                K_TYPES, (unsigned long long)i, (long long)k);
        }
        gg->ty[i] = (uint8_t)k;
        fy_gguf_str s = {t->vstr[i], t->vlen[i]};
        if (k == GG_BYTE && !is_byte_name(s)) {
            return fy__tok_fail(&gg->c, FY_EPARSE,
                                "%s[%llu]: a byte token must read <0xNN>, not \"%.*s\"", K_TYPES,
                                (unsigned long long)i, show_len(s.len), s.p);
        }
    }
    return 0;
}

/* Unknown and control tokens are special (matched with parse_special);
 * user-defined ones are matched in any text. */
static int load_added(gg_ctx *gg, fy_tokenizer *t)
{
    size_t n = 0;
    for (int32_t i = 0; i < gg->n; i++) {
        uint8_t k = gg->ty[i];
        n += (k == GG_UNKNOWN || k == GG_CONTROL || k == GG_USER) && t->vlen[i] > 0;
    }
    if (n > TOK_MAX_ADDED) {
        return fy__tok_fail(&gg->c, FY_ETOOBIG, "%s: more than %d control and user-defined tokens",
                            K_TYPES, TOK_MAX_ADDED);
    }
    int rc = fy__tok_added_alloc(t, n);
    for (int32_t i = 0; i < gg->n && rc == 0; i++) {
        uint8_t k = gg->ty[i], sp = k == GG_UNKNOWN || k == GG_CONTROL;
        if ((sp || k == GG_USER) && t->vlen[i] > 0) {
            rc = fy__tok_added_put(t, (tok_added){t->vstr[i], t->vlen[i], i, sp, 0, 0, !sp, 0});
        }
        t->special[i] = sp;
    }
    if (rc == 0) {
        fy__tok_added_index(t);
    }
    return rc;
}

/* ---- merges ---------------------------------------------------------------- */

typedef struct {
    float score;
    int32_t id;
} gg_rank;

static int rank_cmp(const void *pa, const void *pb)
{
    const gg_rank *a = pa, *b = pb;
    if (a->score != b->score) {
        return a->score > b->score ? -1 : 1;
    }
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Calls, for every split of piece ID into two tokens (A, B), put (PASS 1)
 * or counts it (PASS 0) into *COUNT. */
static void spm_splits(fy_tokenizer *t, int32_t id, int32_t rank, int pass, size_t *count)
{
    const char *s = t->vstr[id];
    size_t len = t->vlen[id];
    for (size_t k = 1; k < len; k++) {
        if (((unsigned char)s[k] & 0xc0) == 0x80) {
            continue; /* inside a character */
        }
        int32_t a = fy__tok_vocab_find(t, s, k),
                b = a >= 0 ? fy__tok_vocab_find(t, s + k, len - k) : -1;
        if (b < 0) {
            continue;
        }
        if (pass) {
            fy__tok_merge_put(t, a, b, rank, id);
        }
        (*count)++;
    }
}

static int spm_merges(gg_ctx *gg, fy_tokenizer *t)
{
    size_t m = 0;
    gg_rank *r = malloc((size_t)gg->n * sizeof *r);
    int32_t *rank = malloc((size_t)gg->n * sizeof *rank);
    int rc = r && rank ? 0 : FY_ENOMEM;
    for (int32_t i = 0; i < gg->n && rc == 0; i++) {
        if ((gg->ty[i] == GG_NORMAL || gg->ty[i] == GG_USER) && t->vlen[i] > 1) {
            r[m++] = (gg_rank){gg->sc[i], i};
        }
    }
    if (rc == 0) {
        qsort(r, m, sizeof *r, rank_cmp);
        for (size_t i = 0; i < m; i++) {
            rank[r[i].id] = i > 0 && r[i].score == r[i - 1].score ? rank[r[i - 1].id] : (int32_t)i;
        }
    }
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        size_t count = 0;
        for (size_t i = 0; i < m && count <= TOK_MAX_MERGES; i++) {
            spm_splits(t, r[i].id, rank[r[i].id], pass, &count);
        }
        if (pass == 0 && count > TOK_MAX_MERGES) {
            rc = fy__tok_fail(&gg->c, FY_ETOOBIG, "%s: more than %d merges", K_TOKENS,
                              TOK_MAX_MERGES);
        } else if (pass == 0) {
            rc = fy__tok_merges_alloc(t, count);
        }
    }
    free(r);
    free(rank);
    return rc;
}

static int bpe_side(gg_ctx *gg, fy_tokenizer *t, uint64_t i, const char *s, size_t n, int32_t *id)
{
    *id = n <= TOK_MAX_TOKEN_BYTES ? fy__tok_vocab_find(t, s, n) : -1;
    if (*id < 0) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%llu]: \"%.*s\" is not a token", K_MERGES,
                            (unsigned long long)i, show_len(n), s);
    }
    return 0;
}

static int bpe_merges(gg_ctx *gg, fy_tokenizer *t)
{
    fy_gguf_arr a;
    int rc = fy_gguf_get_arr(gg->g, K_MERGES, FY_GGUF_STR, &a, gg->c.err, gg->c.errlen);
    if (rc) {
        return rc;
    }
    if (a.n > TOK_MAX_MERGES) {
        return fy__tok_fail(&gg->c, FY_ETOOBIG, "%s: more than %d entries", K_MERGES,
                            TOK_MAX_MERGES);
    }
    if ((rc = fy__tok_merges_alloc(t, (size_t)a.n))) {
        return rc;
    }
    char joined[2 * TOK_MAX_TOKEN_BYTES];
    for (uint64_t i = 0; i < a.n; i++) {
        fy_gguf_val v;
        fy_gguf_arr_get(&a, i, &v);
        /* "left right": the first space after the first byte separates them
         * (byte-level tokens hold no spaces). */
        const char *sp = v.s.len > 1 ? memchr(v.s.p + 1, ' ', v.s.len - 1) : NULL;
        if (!sp || sp + 1 == v.s.p + v.s.len) {
            return fy__tok_fail(&gg->c, FY_EPARSE, "%s[%llu]: \"%.*s\" is not \"left right\"",
                                K_MERGES, (unsigned long long)i, show_len(v.s.len), v.s.p);
        }
        size_t al = (size_t)(sp - v.s.p), bl = v.s.len - al - 1;
        int32_t ia, ib, ij;
        if ((rc = bpe_side(gg, t, i, v.s.p, al, &ia)) ||
            (rc = bpe_side(gg, t, i, sp + 1, bl, &ib))) {
            return rc;
        }
        memcpy(joined, v.s.p, al);
        memcpy(joined + al, sp + 1, bl);
        if ((rc = bpe_side(gg, t, i, joined, al + bl, &ij))) {
            return rc;
        }
        fy__tok_merge_put(t, ia, ib, (int32_t)i, ij);
    }
    return 0;
}

/* ---- steps ------------------------------------------------------------------- */

static tok_step *add_step(tok_step *steps, int *n, int kind, const char *a, const char *b)
{
    tok_step *s = &steps[(*n)++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    if (a) {
        s->alen = strlen(a);
        s->a = fy__tok_dup(a, s->alen);
    }
    if (b) {
        s->blen = strlen(b);
        s->b = fy__tok_dup(b, s->blen);
    }
    return (a && !s->a) || (b && !s->b) ? NULL : s;
}

static int spm_steps(gg_ctx *gg, fy_tokenizer *t)
{
    int prefix, rc = opt_bool(gg, K_PREFIX, 1, &prefix, NULL);
    if (rc) {
        return rc;
    }
    if ((prefix && !add_step(t->norm, &t->n_norm, TOK_N_PREPEND, METASPACE, NULL)) ||
        !add_step(t->norm, &t->n_norm, TOK_N_REPLACE_RE, " ", METASPACE) ||
        !add_step(t->dec, &t->n_dec, TOK_D_REPLACE, METASPACE, " ") ||
        !add_step(t->dec, &t->n_dec, TOK_D_BYTEFALLBACK, NULL, NULL)) {
        return FY_ENOMEM;
    }
    t->dec_strip_start = prefix;
    t->byte_fallback = 1;
    t->fuse_unk = 1;
    return 0;
}

/* Returns the index of the PRETOK entry in *WHICH. */
static int bpe_steps(gg_ctx *gg, fy_tokenizer *t, size_t *which)
{
    fy_gguf_str pre = {"default", 7};
    int rc = fy_gguf_find(gg->g, K_PRE)
                 ? fy_gguf_get_str(gg->g, K_PRE, &pre, gg->c.err, gg->c.errlen)
                 : 0;
    if (rc) {
        return rc;
    }
    size_t k = 0;
    while (k < sizeof PRETOK / sizeof PRETOK[0] && !str_is(pre, PRETOK[k].name)) {
        k++;
    }
    if (k == sizeof PRETOK / sizeof PRETOK[0]) {
        return fy__tok_fail(&gg->c, FY_ENOTSUP,
                            "%s: pre-tokenizer \"%.*s\" is not supported (default, gpt-2, "
                            "llama-bpe, qwen2)",
                            K_PRE, show_len(pre.len), pre.p);
    }
    for (int i = 0; i < 4 && PRETOK[k].re[i] && rc == 0; i++) {
        tok_step *s = add_step(t->pretok, &t->n_pretok, TOK_P_SPLIT, NULL, NULL);
        if (!s) {
            return FY_ENOMEM;
        }
        s->behavior = TOK_SPLIT_ISOLATED;
        rc = fy__tok_compile_re(&gg->c, PRETOK[k].re[i], strlen(PRETOK[k].re[i]), 0, K_PRE, &s->re);
    }
    if (rc == 0 && (!add_step(t->pretok, &t->n_pretok, TOK_P_BYTELEVEL, NULL, NULL) ||
                    !add_step(t->dec, &t->n_dec, TOK_D_BYTELEVEL, NULL, NULL))) {
        rc = FY_ENOMEM;
    }
    t->ignore_merges = PRETOK[k].ignore_merges;
    *which = k;
    return rc;
}

/* ---- special ids -------------------------------------------------------------- */

static int specials(gg_ctx *gg, fy_tokenizer *t, int bos_default)
{
    /* llama.cpp's SPM defaults, where the vocabulary has those ids. */
    int32_t d_unk = gg->spm && gg->n > 0 ? 0 : -1, d_bos = gg->spm && gg->n > 1 ? 1 : -1,
            d_eos = gg->spm && gg->n > 2 ? 2 : -1, pad, sep;
    int add_bos, add_eos, bos_set, eos_set;
    int rc;
    if ((rc = opt_id(gg, "tokenizer.ggml.bos_token_id", d_bos, &t->bos)) ||
        (rc = opt_id(gg, "tokenizer.ggml.eos_token_id", d_eos, &t->eos)) ||
        (rc = opt_id(gg, "tokenizer.ggml.unknown_token_id", d_unk, &t->unk_id)) ||
        (rc = opt_id(gg, "tokenizer.ggml.padding_token_id", -1, &pad)) ||
        (rc = opt_id(gg, "tokenizer.ggml.seperator_token_id", -1, &sep)) ||
        (rc = opt_bool(gg, K_ADD_BOS, bos_default, &add_bos, &bos_set)) ||
        (rc = opt_bool(gg, K_ADD_EOS, 0, &add_eos, &eos_set))) {
        return rc;
    }
    if (add_bos && t->bos < 0 && bos_set) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: true, but the file names no BOS token",
                            K_ADD_BOS);
    }
    if (add_eos && t->eos < 0 && eos_set) {
        return fy__tok_fail(&gg->c, FY_EPARSE, "%s: true, but the file names no EOS token",
                            K_ADD_EOS);
    }
    if (add_bos && t->bos >= 0) {
        t->pre[t->n_pre++] = t->bos;
    }
    if (add_eos && t->eos >= 0) {
        t->post[t->n_post++] = t->eos;
    }
    return 0;
}

/* ---- entry point ------------------------------------------------------------ */

static int build(gg_ctx *gg, fy_tokenizer *t)
{
    fy_gguf_str model;
    int rc = fy_gguf_get_str(gg->g, K_MODEL, &model, gg->c.err, gg->c.errlen);
    if (rc) {
        return rc;
    }
    gg->spm = str_is(model, "llama");
    if (!gg->spm && !str_is(model, "gpt2")) {
        return fy__tok_fail(&gg->c, FY_ENOTSUP,
                            "%s: \"%.*s\" is not supported (only llama and gpt2)", K_MODEL,
                            show_len(model.len), model.p);
    }
    size_t pre = 0;
    if ((rc = load_vocab(gg, t)) || (rc = load_scores(gg)) || (rc = load_types(gg, t)) ||
        (rc = load_added(gg, t))) {
        return rc;
    }
    if (gg->spm) {
        rc = spm_merges(gg, t);
        if (rc == 0) {
            rc = spm_steps(gg, t);
        }
    } else {
        rc = bpe_merges(gg, t);
        if (rc == 0) {
            rc = bpe_steps(gg, t, &pre);
        }
    }
    if (rc == 0) {
        rc = specials(gg, t, gg->spm ? 1 : PRETOK[pre].add_bos);
    }
    return rc ? rc : fy__tok_finish(t);
}

int fy_tokenizer_from_gguf(const fy_gguf *g, fy_tokenizer **out, char *err, size_t errlen)
{
    gg_ctx gg = {.c = {g && g->label ? g->label : "gguf", err, errlen}, .g = g};
    *out = NULL;
    if (!g) {
        return FY_EINVAL;
    }
    fy_tokenizer *t = calloc(1, sizeof *t);
    int rc = t ? build(&gg, t) : FY_ENOMEM;
    free(gg.ty);
    free(gg.sc);
    if (rc) {
        if (rc == FY_ENOMEM) {
            fy__tok_fail(&gg.c, rc, "out of memory");
        }
        fy_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}
