/* tokenizer_export.c: a tokenizer written as a GGUF file's tokenizer.ggml.*
 * keys, as llama.cpp's converter writes them (tokenizer.h).
 *
 * The inverse of tokenizer_gguf.c: what that file reads back must encode
 * alike, so the conventions it assumes are the ones written here.
 *
 *   SentencePiece style (no ByteLevel step): model "llama". A GGUF carries
 *   no merge table for it; the reader merges the pair whose concatenation
 *   scores highest. So each piece's score is minus the rank of the first
 *   merge that makes it, which orders the reader's merges as the table did
 *   (HF's converter built that table from SentencePiece's scores the same
 *   way). Pieces no merge makes get -1e9 - id: below every merge result.
 *
 *   Byte-level: model "gpt2", merges "left right" in rank order, and
 *   tokenizer.ggml.pre naming the split pattern. A tokenizer keeps only the
 *   compiled pattern, so it is recognised by what it does: GPT-2's is the
 *   ByteLevel step's own regex; Llama 3's and Qwen2's are a Split before it
 *   that differ in taking digits three at a time or one at a time.
 *
 * Token types: control for special added tokens (unknown for the unk
 * token), user-defined for the other added tokens, byte for the <0xNN>
 * byte-fallback pieces, normal otherwise; ids no token has (and those up to
 * N_VOCAB) become "[PADn]", unused, as llama.cpp writes them. */
#include "runner/engine/tok_internal.h"

#include "common/err.h"
#include "runner/engine/gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GG_NORMAL = 1, GG_UNKNOWN = 2, GG_CONTROL = 3, GG_USER = 4, GG_UNUSED = 5, GG_BYTE = 6 };

#define GG_NO_ID    0xffffffffu
#define NO_MERGE_SC -1e9f

typedef struct {
    int32_t rank, a, b, id;
} ex_merge;

static int merge_cmp(const void *pa, const void *pb)
{
    const ex_merge *x = pa, *y = pb;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* The merge table's pairs in rank order: *OUT malloc'd, *N of them. */
static int sorted_merges(const fy_tokenizer *t, ex_merge **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!t->merges || t->n_merges == 0) {
        return 0;
    }
    ex_merge *m = malloc(t->n_merges * sizeof *m);
    if (!m) {
        return FY_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i <= t->merge_mask && k < t->n_merges; i++) {
        const tok_merge_slot *s = &t->merges[i];
        if (s->key != UINT64_MAX) {
            m[k++] = (ex_merge){s->rank, (int32_t)(s->key >> 32), (int32_t)(s->key & 0xffffffffu),
                                s->id};
        }
    }
    qsort(m, k, sizeof *m, merge_cmp);
    *out = m;
    *n = k;
    return 0;
}

static const tok_step *find_step(const tok_step *s, int n, int kind)
{
    for (int i = 0; i < n; i++) {
        if (s[i].kind == kind) {
            return &s[i];
        }
    }
    return NULL;
}

/* Length of RE's first match in "12345", -1 when none. */
static int first_digit_run(const pcre2_code *re)
{
    static const char probe[] = "12345";
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    int len = -1;
    if (md && pcre2_match(re, (PCRE2_SPTR)probe, 5, 0, 0, md, NULL) > 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        len = ov[0] == 0 ? (int)(ov[1] - ov[0]) : -1;
    }
    pcre2_match_data_free(md);
    return len;
}

/* tokenizer.ggml.pre of a byte-level tokenizer, NULL when it is none the
 * reader knows. */
static const char *pre_name(const fy_tokenizer *t)
{
    const tok_step *split = find_step(t->pretok, t->n_pretok, TOK_P_SPLIT),
                   *bl = find_step(t->pretok, t->n_pretok, TOK_P_BYTELEVEL);
    if (!split && bl && bl->re && t->n_pretok == 1) {
        return "gpt-2";
    }
    if (split && split->re && t->n_pretok == 2 && bl && !bl->re) {
        int run = first_digit_run(split->re);
        return run == 3 ? "llama-bpe" : run == 1 ? "qwen2" : NULL;
    }
    return NULL;
}

static int is_added_user(const fy_tokenizer *t, int32_t id)
{
    for (size_t i = 0; i < t->n_added; i++) {
        if (t->added[i].id == id && !t->added[i].special) {
            return 1;
        }
    }
    return 0;
}

int fy_tokenizer_to_gguf(const fy_tokenizer *t, int32_t n_vocab, fy_gguf_writer *w, char *err,
                         size_t errlen)
{
    int bytelevel = find_step(t->pretok, t->n_pretok, TOK_P_BYTELEVEL) != NULL;
    const char *pre = bytelevel ? pre_name(t) : NULL;
    if (bytelevel && !pre) {
        snprintf(err, errlen,
                 "tokenizer: a byte-level pre-tokenizer other than GPT-2's, Llama 3's or "
                 "Qwen2's has no tokenizer.ggml.pre name ferry knows");
        return FY_ENOTSUP;
    }
    int32_t n = n_vocab > t->n_vocab ? n_vocab : t->n_vocab;
    const char **tok = calloc((size_t)n, sizeof *tok);
    size_t *len = calloc((size_t)n, sizeof *len);
    int32_t *type = calloc((size_t)n, sizeof *type);
    float *score = calloc((size_t)n, sizeof *score);
    char(*pad)[24] = NULL;
    char **mstr = NULL;
    size_t *mlen = NULL, n_merges = 0;
    ex_merge *m = NULL;
    size_t n_pad = 0;
    int rc = tok && len && type && score ? sorted_merges(t, &m, &n_merges) : FY_ENOMEM;
    for (int32_t i = 0; i < n && rc == 0; i++) {
        n_pad += i >= t->n_vocab || !t->piece[i];
    }
    if (rc == 0 && n_pad && !(pad = calloc(n_pad, sizeof *pad))) {
        rc = FY_ENOMEM;
    }
    size_t k = 0;
    for (int32_t i = 0; i < n && rc == 0; i++) {
        score[i] = NO_MERGE_SC - (float)i;
        if (i >= t->n_vocab || !t->piece[i]) {
            len[i] = (size_t)snprintf(pad[k], sizeof pad[k], "[PAD%d]", (int)i);
            tok[i] = pad[k++];
            type[i] = GG_UNUSED;
            continue;
        }
        tok[i] = t->piece[i];
        len[i] = t->piece_len[i];
        type[i] = i == t->unk_id        ? GG_UNKNOWN
                  : t->special[i]       ? GG_CONTROL
                  : is_added_user(t, i) ? GG_USER
                                        : GG_NORMAL;
    }
    if (rc == 0 && !bytelevel && t->byte_fallback) {
        for (int b = 0; b < 256; b++) {
            if (t->byte_id[b] >= 0 && type[t->byte_id[b]] == GG_NORMAL) {
                type[t->byte_id[b]] = GG_BYTE;
            }
        }
    }
    if (rc == 0 && !bytelevel) {
        /* Ranks ascend, so the first merge to make a piece sets its score. */
        for (size_t i = n_merges; i-- > 0;) {
            if (m[i].id >= 0 && m[i].id < n) {
                score[m[i].id] = -(float)m[i].rank;
            }
        }
    }
    if (rc == 0 && bytelevel && n_merges) {
        mstr = calloc(n_merges, sizeof *mstr);
        mlen = calloc(n_merges, sizeof *mlen);
        rc = mstr && mlen ? 0 : FY_ENOMEM;
        for (size_t i = 0; i < n_merges && rc == 0; i++) {
            const ex_merge *e = &m[i];
            size_t al = t->vlen[e->a], bl = t->vlen[e->b];
            if (!(mstr[i] = malloc(al + bl + 1))) {
                rc = FY_ENOMEM;
                break;
            }
            memcpy(mstr[i], t->vstr[e->a], al);
            mstr[i][al] = ' ';
            memcpy(mstr[i] + al + 1, t->vstr[e->b], bl);
            mlen[i] = al + bl + 1;
        }
    }
    if (rc == 0) {
        const char *model = bytelevel ? "gpt2" : "llama";
        rc = fy_gguf_w_str(w, "tokenizer.ggml.model", model, strlen(model));
    }
    if (rc == 0 && pre) {
        rc = fy_gguf_w_str(w, "tokenizer.ggml.pre", pre, strlen(pre));
    }
    if (rc == 0) {
        rc = fy_gguf_w_arr_str(w, "tokenizer.ggml.tokens", tok, len, (size_t)n);
    }
    if (rc == 0 && !bytelevel) {
        rc = fy_gguf_w_arr_f32(w, "tokenizer.ggml.scores", score, (size_t)n);
    }
    if (rc == 0) {
        rc = fy_gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (size_t)n);
    }
    if (rc == 0 && bytelevel) {
        rc = fy_gguf_w_arr_str(w, "tokenizer.ggml.merges", (const char *const *)mstr, mlen,
                               n_merges);
    }
    /* The reader defaults a llama vocabulary's missing ids to 1, 2 and 0:
     * "none" is written out for it. */
    const struct {
        const char *key;
        int32_t id;
    } ids[] = {{"tokenizer.ggml.bos_token_id", t->bos},
               {"tokenizer.ggml.eos_token_id", t->eos},
               {"tokenizer.ggml.unknown_token_id", t->unk_id}};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0] && rc == 0; i++) {
        if (ids[i].id >= 0 || !bytelevel) {
            rc = fy_gguf_w_u32(w, ids[i].key, ids[i].id >= 0 ? (uint32_t)ids[i].id : GG_NO_ID);
        }
    }
    int add_bos = t->n_pre > 0 && t->bos >= 0 && t->pre[0] == t->bos,
        add_eos = t->n_post > 0 && t->eos >= 0 && t->post[t->n_post - 1] == t->eos;
    if (rc == 0) {
        rc = fy_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    }
    if (rc == 0) {
        rc = fy_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", add_eos);
    }
    if (rc == 0 && !bytelevel) {
        const tok_step *ms = find_step(t->pretok, t->n_pretok, TOK_P_METASPACE);
        int prefix = find_step(t->norm, t->n_norm, TOK_N_PREPEND) != NULL ||
                     (ms && ms->prepend != TOK_PREPEND_NEVER);
        rc = fy_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", prefix);
    }
    if (rc) {
        snprintf(err, errlen, "tokenizer: %s", fy_strerror(rc));
    }
    for (size_t i = 0; mstr && i < n_merges; i++) {
        free(mstr[i]);
    }
    free(mstr);
    free(mlen);
    free(m);
    free(pad);
    free(tok);
    free(len);
    free(type);
    free(score);
    return rc;
}
