/* tok_encode.c: text to ids, the way Hugging Face tokenizers does it for BPE.
 *
 *   1. added tokens are cut out of the input first (leftmost, longest match;
 *      special ones only when parse_special), with lstrip/rstrip;
 *   2. each text segment between them is normalized (Prepend, Replace, NFC..,
 *      Lowercase, Strip), then pre-tokenized into pieces (Split with a PCRE2
 *      regex, Metaspace, ByteLevel, Digits);
 *   3. each piece is split into characters (vocabulary ids, else <0xNN> byte
 *      fallback, else unk) and BPE merges are applied lowest rank first, ties
 *      to the leftmost pair, exactly as HF's Word::merge_all;
 *   4. the post-processor's special tokens are added when asked.
 *
 * Complexity: added-token scanning is O(n * k) for k added tokens sharing a
 * first byte (a handful in practice); each pre-tokenizer stage is linear plus
 * the regex engine's cost (PCRE2 JIT, linear for the GPT-2 / Llama 3 / Qwen2
 * patterns, and capped by a match limit); BPE on a piece of m characters is
 * O(m log m): symbols sit in a linked list and candidate pairs in a binary
 * heap keyed by (rank, position), stale entries being skipped when popped.
 * A SentencePiece-style tokenizer with no pre-tokenizer splits makes a whole
 * segment one piece, which this keeps at O(n log n). Memory is O(n).
 *
 * Nothing here writes to the tokenizer: every call owns its scratch (PCRE2
 * match data, piece lists, the heap), so concurrent calls are safe.
 *
 * One deliberate difference from HF's Metaspace pre-tokenizer: it adds the
 * "▁" prefix even when the text already starts with a space, as SentencePiece
 * (add_dummy_prefix) and llama.cpp do. HF skips it then, which makes " Hello"
 * encode like "Hello" and breaks decode(encode(s)) == s; the Llama 2
 * reference vectors (" Hello" -> 29871 15043) follow SentencePiece. */
#include "runner/engine/tok_internal.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- pieces ---------------------------------------------------------------- */

typedef struct {
    size_t off, len;
    int first; /* starts at offset 0 of the original text (Metaspace "first") */
} tok_piece;

typedef struct {
    fy_buf text;
    tok_piece *p;
    size_t n, cap;
} tok_plist;

static void pl_init(tok_plist *l)
{
    memset(l, 0, sizeof *l);
    fy_buf_init(&l->text, (size_t)TOK_MAX_TEXT * 8);
}

static void pl_free(tok_plist *l)
{
    fy_buf_free(&l->text);
    free(l->p);
    memset(l, 0, sizeof *l);
}

static int pl_commit(tok_plist *l, size_t start, int first);

static int pl_add(tok_plist *l, const char *s, size_t n, int first)
{
    size_t start = l->text.len; /* empty splits are dropped, as HF does */
    int rc = fy_buf_append(&l->text, s, n);
    return rc ? rc : pl_commit(l, start, first);
}

/* Registers the bytes appended to L's text since START as one piece. */
static int pl_commit(tok_plist *l, size_t start, int first)
{
    if (l->text.len == start) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        tok_piece *p = realloc(l->p, cap * sizeof *p);
        if (!p) {
            return FY_ENOMEM;
        }
        l->p = p;
        l->cap = cap;
    }
    l->p[l->n++] = (tok_piece){start, l->text.len - start, first};
    return 0;
}

/* ---- scratch ---------------------------------------------------------------- */

typedef struct {
    int32_t id;
    int32_t prev, next;
    uint32_t len; /* bytes; 0 once merged into its left neighbour */
} tok_sym;

typedef struct {
    int32_t rank;
    uint32_t pos;
    int32_t id;
} tok_hent;

typedef struct {
    size_t s, e;
    int m;
} tok_span;

typedef struct {
    const fy_tokenizer *t;
    tok_ids *ids;
    tok_sym *sym;
    size_t symcap;
    tok_hent *heap;
    size_t hn, hcap;
    tok_span *sp, *sp2;
    size_t spn, spcap;
} tok_enc;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    size_t c = *cap ? *cap : 64;
    while (c < need) {
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) {
        return FY_ENOMEM;
    }
    *p = q;
    *cap = c;
    return 0;
}

/* ---- regex ---------------------------------------------------------------- */

static int re_exec(const pcre2_code *re, const char *s, size_t n, size_t off, uint32_t opts,
                   pcre2_match_data *md, pcre2_match_context *mc)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, opts | PCRE2_NO_UTF_CHECK, md, mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        /* The interpreter keeps its backtracking state on the heap. */
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, opts | PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                         mc);
    }
    return rc;
}

static size_t char_len(const char *s, size_t n)
{
    uint32_t cp;
    size_t k = fy_utf8_char(s, n, &cp);
    return k ? k : 1;
}

/* Calls FN(arg, start, end) for each non-empty match of RE in S[0..N). */
typedef int (*match_fn)(void *arg, size_t s, size_t e);

static int re_foreach(const pcre2_code *re, const char *s, size_t n, match_fn fn, void *arg)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    int rc = md && mc ? 0 : FY_ENOMEM;
    if (mc) {
        pcre2_set_match_limit(mc, TOK_MATCH_LIMIT);
        pcre2_set_depth_limit(mc, TOK_DEPTH_LIMIT);
    }
    size_t off = 0;
    uint32_t opts = 0;
    while (rc == 0 && off <= n) {
        int r = re_exec(re, s, n, off, opts, md, mc);
        if (r == PCRE2_ERROR_NOMATCH) {
            if (opts == 0 || off >= n) {
                break;
            }
            off += char_len(s + off, n - off); /* after an empty match, move on one character */
            opts = 0;
            continue;
        }
        if (r < 0) {
            rc = r == PCRE2_ERROR_NOMEMORY ? FY_ENOMEM : FY_ELIMIT;
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me < ms || me > n) { /* \K tricks; refuse rather than loop */
            rc = FY_EINVAL;
            break;
        }
        if (me > ms) {
            rc = fn(arg, ms, me);
        }
        off = me;
        opts = me == ms ? PCRE2_NOTEMPTY_ATSTART | PCRE2_ANCHORED : 0;
    }
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    return rc;
}

typedef struct {
    const char *s;
    size_t last;
    const char *rep;
    size_t replen;
    fy_buf *out;
} replace_arg;

static int replace_cb(void *p, size_t s, size_t e)
{
    replace_arg *a = p;
    int rc = fy_buf_append(a->out, a->s + a->last, s - a->last);
    if (rc == 0) {
        rc = fy_buf_append(a->out, a->rep, a->replen);
    }
    a->last = e;
    return rc;
}

int fy__tok_re_replace(const pcre2_code *re, const char *s, size_t n, const char *rep,
                       size_t replen, fy_buf *out)
{
    replace_arg a = {s, 0, rep, replen, out};
    int rc = re_foreach(re, s, n, replace_cb, &a);
    return rc ? rc : fy_buf_append(out, s + a.last, n - a.last);
}

/* ---- splitting with a behavior ----------------------------------------- */

static int span_push(tok_enc *e, size_t s, size_t end, int m)
{
    int rc = grow((void **)&e->sp, &e->spcap, e->spn + 1, sizeof *e->sp);
    if (rc == 0) {
        e->sp[e->spn++] = (tok_span){s, end, m};
    }
    return rc;
}

typedef struct {
    tok_enc *e;
    size_t last;
} span_arg;

static int span_cb(void *p, size_t s, size_t end)
{
    span_arg *a = p;
    int rc = 0;
    if (s > a->last) {
        rc = span_push(a->e, a->last, s, 0);
    }
    if (rc == 0) {
        rc = span_push(a->e, s, end, 1);
    }
    a->last = end;
    return rc;
}

/* Groups the spans of one piece as HF's SplitDelimiterBehavior does; the
 * result is in e->sp2[0..*out_n). */
static int group_spans(tok_enc *e, int behavior, int invert, size_t *out_n)
{
    size_t k = 0;
    tok_span *o = malloc((e->spn ? e->spn : 1) * sizeof *o);
    if (!o) {
        return FY_ENOMEM;
    }
    int prev = 0;
    if (behavior == TOK_SPLIT_MERGED_NEXT) {
        for (size_t i = e->spn; i-- > 0;) {
            tok_span s = e->sp[i];
            s.m ^= invert;
            if (s.m && !prev && k) {
                o[k - 1].s = s.s;
            } else {
                o[k++] = s;
            }
            prev = s.m;
        }
        for (size_t i = 0; i < k / 2; i++) {
            tok_span tmp = o[i];
            o[i] = o[k - 1 - i];
            o[k - 1 - i] = tmp;
        }
    } else {
        for (size_t i = 0; i < e->spn; i++) {
            tok_span s = e->sp[i];
            s.m ^= invert;
            if (behavior == TOK_SPLIT_REMOVED) {
                if (!s.m) {
                    o[k++] = s;
                }
            } else if (behavior == TOK_SPLIT_ISOLATED) {
                o[k++] = s;
            } else if (behavior == TOK_SPLIT_MERGED_PREV && s.m && !prev && k) {
                o[k - 1].e = s.e;
            } else if (behavior == TOK_SPLIT_CONTIGUOUS && s.m == prev && k) {
                o[k - 1].e = s.e;
            } else {
                o[k++] = s;
            }
            prev = s.m;
        }
    }
    free(e->sp2);
    e->sp2 = o;
    *out_n = k;
    return 0;
}

/* Splits S[0..N) on RE with BEHAVIOR, appending the parts to OUT; FIRST marks
 * a piece that starts the original text (only its first part keeps it). */
static int split_piece(tok_enc *e, const pcre2_code *re, int behavior, int invert, const char *s,
                       size_t n, int first, tok_plist *out,
                       int (*each)(tok_enc *, const char *, size_t, int, tok_plist *))
{
    e->spn = 0;
    span_arg a = {e, 0};
    int rc = re_foreach(re, s, n, span_cb, &a);
    if (rc == 0 && a.last < n) {
        rc = span_push(e, a.last, n, 0);
    }
    size_t k = 0;
    if (rc == 0) {
        rc = group_spans(e, behavior, invert, &k);
    }
    for (size_t i = 0; i < k && rc == 0; i++) {
        const tok_span *sp = &e->sp2[i];
        int f = first && sp->s == 0;
        rc = each ? each(e, s + sp->s, sp->e - sp->s, f, out)
                  : pl_add(out, s + sp->s, sp->e - sp->s, f);
    }
    return rc;
}

/* ---- pre-tokenizers ---------------------------------------------------- */

/* Appends S[0..N) mapped through GPT-2's byte-to-unicode table as one piece. */
static int bytelevel_map(tok_enc *e, const char *s, size_t n, int first, tok_plist *out)
{
    const fy_tokenizer *t = e->t;
    size_t start = out->text.len;
    int rc = fy_buf_reserve(&out->text, n * 2);
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char b = (unsigned char)s[i];
        rc = fy_buf_append(&out->text, t->bl_enc[b], t->bl_len[b]);
    }
    return rc ? rc : pl_commit(out, start, first);
}

static int pretok_bytelevel(tok_enc *e, const tok_step *st, const tok_piece *p, const char *s,
                            tok_plist *out)
{
    fy_buf b;
    fy_buf_init(&b, (size_t)TOK_MAX_TEXT * 8);
    int rc = 0;
    if (st->add_prefix_space && s[0] != ' ') {
        rc = fy_buf_append(&b, " ", 1);
    }
    if (rc == 0) {
        rc = fy_buf_append(&b, s, p->len);
    }
    if (rc == 0) {
        rc = st->re ? split_piece(e, st->re, TOK_SPLIT_ISOLATED, 0, b.data, b.len, p->first, out,
                                  bytelevel_map)
                    : bytelevel_map(e, b.data, b.len, p->first, out);
    }
    fy_buf_free(&b);
    return rc;
}

static int pretok_metaspace(tok_enc *e, const tok_step *st, const tok_piece *p, const char *s,
                            tok_plist *out)
{
    fy_buf b;
    fy_buf_init(&b, (size_t)TOK_MAX_TEXT * 8);
    int rc = 0;
    int prepend =
        st->prepend == TOK_PREPEND_ALWAYS || (st->prepend == TOK_PREPEND_FIRST && p->first);
    if (prepend) {
        rc = fy_buf_append(&b, st->a, st->alen);
    }
    if (rc == 0) {
        rc = fy__tok_replace_lit(s, p->len, " ", 1, st->a, st->alen, &b);
    }
    if (rc == 0) {
        rc = st->split ? split_piece(e, st->re, TOK_SPLIT_MERGED_NEXT, 0, b.data, b.len, p->first,
                                     out, NULL)
                       : pl_add(out, b.data, b.len, p->first);
    }
    fy_buf_free(&b);
    return rc;
}

static int pretokenize(tok_enc *e, tok_plist *l)
{
    const fy_tokenizer *t = e->t;
    for (int i = 0; i < t->n_pretok; i++) {
        const tok_step *st = &t->pretok[i];
        tok_plist out;
        pl_init(&out);
        int rc = 0;
        for (size_t k = 0; k < l->n && rc == 0; k++) {
            const tok_piece *p = &l->p[k];
            const char *s = l->text.data + p->off;
            switch (st->kind) {
            case TOK_P_SPLIT:
                rc = split_piece(e, st->re, st->behavior, st->invert, s, p->len, p->first, &out,
                                 NULL);
                break;
            case TOK_P_METASPACE:
                rc = pretok_metaspace(e, st, p, s, &out);
                break;
            case TOK_P_BYTELEVEL:
                rc = pretok_bytelevel(e, st, p, s, &out);
                break;
            default:
                rc = FY_EINVAL;
            }
        }
        pl_free(l);
        *l = out;
        if (rc) {
            return rc;
        }
    }
    return 0;
}

/* ---- normalizers -------------------------------------------------------- */

static int norm_utf8proc(const char *s, size_t n, utf8proc_option_t opt, fy_buf *out)
{
    utf8proc_uint8_t *res = NULL;
    utf8proc_ssize_t k =
        utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &res, opt | UTF8PROC_STABLE);
    if (k < 0) {
        return k == UTF8PROC_ERROR_NOMEM ? FY_ENOMEM : FY_EINVAL;
    }
    int rc = fy_buf_append(out, res, (size_t)k);
    free(res);
    return rc;
}

static int norm_lower(const char *s, size_t n, fy_buf *out)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        uint32_t cp;
        size_t k = fy_utf8_char(s + i, n - i, &cp);
        if (k == 0) {
            return FY_EINVAL;
        }
        utf8proc_uint8_t enc[4];
        utf8proc_ssize_t m = utf8proc_encode_char(utf8proc_tolower((utf8proc_int32_t)cp), enc);
        rc = fy_buf_append(out, enc, (size_t)m);
        i += k;
    }
    return rc;
}

static int norm_strip(const tok_step *st, const char *s, size_t n, fy_buf *out)
{
    size_t b = 0, e = n;
    uint32_t cp;
    size_t k;
    while (st->left && b < e && (k = fy_utf8_char(s + b, e - b, &cp)) && fy__tok_is_space(cp)) {
        b += k;
    }
    while (st->right && e > b) {
        size_t j = e - 1;
        while (j > b && ((unsigned char)s[j] & 0xc0) == 0x80) {
            j--;
        }
        if (!(k = fy_utf8_char(s + j, e - j, &cp)) || !fy__tok_is_space(cp)) {
            break;
        }
        e = j;
    }
    return fy_buf_append(out, s + b, e - b);
}

static int norm_step(const tok_step *st, const char *s, size_t n, fy_buf *out)
{
    switch (st->kind) {
    case TOK_N_PREPEND:
        if (n == 0) {
            return 0;
        }
        return fy_buf_append(out, st->a, st->alen) ? FY_ENOMEM : fy_buf_append(out, s, n);
    case TOK_N_REPLACE_RE:
        return st->a && st->alen ? fy__tok_replace_lit(s, n, st->a, st->alen, st->b, st->blen, out)
                                 : fy__tok_re_replace(st->re, s, n, st->b, st->blen, out);
    case TOK_N_NFC:
        return norm_utf8proc(s, n, UTF8PROC_COMPOSE, out);
    case TOK_N_NFD:
        return norm_utf8proc(s, n, UTF8PROC_DECOMPOSE, out);
    case TOK_N_NFKC:
        return norm_utf8proc(s, n, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case TOK_N_NFKD:
        return norm_utf8proc(s, n, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case TOK_N_LOWERCASE:
        return norm_lower(s, n, out);
    case TOK_N_STRIP:
        return norm_strip(st, s, n, out);
    }
    return FY_EINVAL;
}

/* Normalizes S[0..N) into the single piece of L. */
static int normalize(const fy_tokenizer *t, const char *s, size_t n, int first, tok_plist *l)
{
    fy_buf a, b;
    fy_buf_init(&a, (size_t)TOK_MAX_TEXT * 8);
    fy_buf_init(&b, (size_t)TOK_MAX_TEXT * 8);
    int rc = fy_buf_append(&a, s, n);
    for (int i = 0; i < t->n_norm && rc == 0; i++) {
        fy_buf_reset(&b);
        rc = norm_step(&t->norm[i], a.data ? a.data : "", a.len, &b);
        fy_buf tmp = a;
        a = b;
        b = tmp;
    }
    if (rc == 0) {
        rc = pl_add(l, a.data, a.len, first);
    }
    fy_buf_free(&a);
    fy_buf_free(&b);
    return rc;
}

/* ---- BPE -------------------------------------------------------------- */

static int heap_less(const tok_hent *a, const tok_hent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(tok_enc *e, tok_hent h)
{
    int rc = grow((void **)&e->heap, &e->hcap, e->hn + 1, sizeof *e->heap);
    if (rc) {
        return rc;
    }
    size_t i = e->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&h, &e->heap[p])) {
            break;
        }
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = h;
    return 0;
}

static tok_hent heap_pop(tok_enc *e)
{
    tok_hent top = e->heap[0], last = e->heap[--e->hn];
    size_t i = 0, n = e->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c])) {
            c++;
        }
        if (!heap_less(&e->heap[c], &last)) {
            break;
        }
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) {
        e->heap[i] = last;
    }
    return top;
}

static int sym_add(tok_enc *e, size_t *ns, int32_t id, uint32_t len)
{
    int rc = grow((void **)&e->sym, &e->symcap, *ns + 1, sizeof *e->sym);
    if (rc == 0) {
        e->sym[*ns] = (tok_sym){id, (int32_t)*ns - 1, (int32_t)*ns + 1, len};
        (*ns)++;
    }
    return rc;
}

/* W's characters as initial symbols (HF's BPE::merge_word, first half). */
static int bpe_symbols(tok_enc *e, const char *w, size_t n, size_t *ns)
{
    const fy_tokenizer *t = e->t;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    int rc = 0;
    *ns = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        size_t k = char_len(w + i, n - i);
        int32_t id = fy__tok_vocab_find(t, w + i, k);
        if (id >= 0) {
            if (unk >= 0) {
                rc = sym_add(e, ns, unk, unk_len);
                unk = -1;
            }
            if (rc == 0) {
                rc = sym_add(e, ns, id, (uint32_t)k);
            }
            i += k;
            continue;
        }
        int all = t->byte_fallback;
        for (size_t j = 0; j < k && all; j++) {
            all = t->byte_id[(unsigned char)w[i + j]] >= 0;
        }
        if (all) {
            for (size_t j = 0; j < k && rc == 0; j++) {
                rc = sym_add(e, ns, t->byte_id[(unsigned char)w[i + j]], 1);
            }
        } else if (t->unk_id >= 0) {
            if (unk >= 0 && t->fuse_unk) {
                unk_len += (uint32_t)k;
            } else {
                if (unk >= 0) {
                    rc = sym_add(e, ns, unk, unk_len);
                }
                unk = t->unk_id;
                unk_len = (uint32_t)k;
            }
        }
        /* else: no way to represent the character; HF drops it too. */
        i += k;
    }
    if (rc == 0 && unk >= 0) {
        rc = sym_add(e, ns, unk, unk_len);
    }
    if (rc == 0 && *ns) {
        e->sym[*ns - 1].next = -1;
    }
    return rc;
}

static int push_pair(tok_enc *e, size_t pos)
{
    int32_t next = e->sym[pos].next, rank, id;
    if (next >= 0 && fy__tok_merge_find(e->t, e->sym[pos].id, e->sym[next].id, &rank, &id)) {
        return heap_push(e, (tok_hent){rank, (uint32_t)pos, id});
    }
    return 0;
}

static int bpe_word(tok_enc *e, const char *w, size_t n)
{
    const fy_tokenizer *t = e->t;
    if (t->ignore_merges) {
        int32_t id = fy__tok_vocab_find(t, w, n);
        if (id >= 0) {
            return fy__tok_ids_push(e->ids, id);
        }
    }
    size_t ns;
    int rc = bpe_symbols(e, w, n, &ns);
    e->hn = 0;
    for (size_t i = 0; i + 1 < ns && rc == 0; i++) {
        rc = push_pair(e, i);
    }
    while (rc == 0 && e->hn) {
        tok_hent top = heap_pop(e);
        tok_sym *s = &e->sym[top.pos];
        int32_t rank, id;
        /* Stale: the left symbol was merged away, has no right neighbour, or
         * the pair there no longer makes this token (HF compares the id). */
        if (s->len == 0 || s->next < 0 ||
            !fy__tok_merge_find(t, s->id, e->sym[s->next].id, &rank, &id) || id != top.id) {
            continue;
        }
        tok_sym *r = &e->sym[s->next];
        s->id = top.id;
        s->len += r->len;
        s->next = r->next;
        r->len = 0;
        if (s->next >= 0) {
            e->sym[s->next].prev = (int32_t)top.pos;
        }
        if (s->prev >= 0) {
            rc = push_pair(e, (size_t)s->prev);
        }
        if (rc == 0) {
            rc = push_pair(e, top.pos);
        }
    }
    for (int32_t i = ns ? 0 : -1; i >= 0 && rc == 0; i = e->sym[i].next) {
        rc = fy__tok_ids_push(e->ids, e->sym[i].id);
    }
    return rc;
}

/* ---- segments and added tokens ---------------------------------------- */

static int encode_segment(tok_enc *e, const char *s, size_t n, int first)
{
    if (n == 0) {
        return 0;
    }
    tok_plist l;
    pl_init(&l);
    int rc = normalize(e->t, s, n, first, &l);
    if (rc == 0) {
        rc = pretokenize(e, &l);
    }
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        rc = bpe_word(e, l.text.data + l.p[i].off, l.p[i].len);
    }
    pl_free(&l);
    return rc;
}

static int is_word_char(const char *s, size_t n)
{
    uint32_t cp;
    if (!fy_utf8_char(s, n, &cp)) {
        return 0;
    }
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

static size_t prev_char(const char *s, size_t pos)
{
    size_t j = pos - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xc0) == 0x80) {
        j--;
    }
    return j;
}

/* The added token matching at S[POS..N) (longest first), or NULL. */
static const tok_added *added_at(const fy_tokenizer *t, const char *s, size_t pos, size_t n,
                                 int parse_special)
{
    unsigned char c = (unsigned char)s[pos];
    for (uint32_t k = t->added_first[c]; k < t->added_first[c + 1]; k++) {
        const tok_added *a = &t->added[k];
        if ((a->special && !parse_special) || a->len > n - pos ||
            memcmp(a->content, s + pos, a->len) != 0) {
            continue;
        }
        if (a->single_word &&
            ((pos > 0 && is_word_char(s + prev_char(s, pos), n)) ||
             (pos + a->len < n && is_word_char(s + pos + a->len, n - pos - a->len)))) {
            continue;
        }
        return a;
    }
    return NULL;
}

static int space_at(const char *s, size_t n)
{
    uint32_t cp;
    return fy_utf8_char(s, n, &cp) && fy__tok_is_space(cp);
}

static int encode_text(tok_enc *e, const char *s, size_t n, int parse_special)
{
    const fy_tokenizer *t = e->t;
    size_t seg = 0, pos = 0;
    int rc = 0;
    while (pos < n && rc == 0) {
        const tok_added *a = t->n_added ? added_at(t, s, pos, n, parse_special) : NULL;
        if (!a) {
            pos += char_len(s + pos, n - pos);
            continue;
        }
        size_t ms = pos, me = pos + a->len;
        while (a->lstrip && ms > seg && space_at(s + prev_char(s, ms), n - prev_char(s, ms))) {
            ms = prev_char(s, ms);
        }
        while (a->rstrip && me < n && space_at(s + me, n - me)) {
            me += char_len(s + me, n - me);
        }
        rc = encode_segment(e, s + seg, ms - seg, seg == 0);
        if (rc == 0) {
            rc = fy__tok_ids_push(e->ids, a->id);
        }
        pos = seg = me;
    }
    if (rc == 0) {
        rc = encode_segment(e, s + seg, n - seg, seg == 0);
    }
    return rc;
}

int fy_tokenizer_encode(const fy_tokenizer *t, const char *text, size_t len,
                        const fy_encode_options *o, int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!t || (len && !text)) {
        return FY_EINVAL;
    }
    if (len > TOK_MAX_TEXT) {
        return FY_ETOOBIG;
    }
    if (!fy_utf8_valid(text ? text : "", len)) {
        return FY_EINVAL;
    }
    fy_encode_options none = {0, 0};
    if (!o) {
        o = &none;
    }
    tok_ids out = {0};
    tok_enc e = {.t = t, .ids = &out};
    int rc = 0;
    for (int i = 0; o->add_special && i < t->n_pre && rc == 0; i++) {
        rc = fy__tok_ids_push(&out, t->pre[i]);
    }
    if (rc == 0) {
        rc = encode_text(&e, text ? text : "", len, o->parse_special);
    }
    for (int i = 0; o->add_special && i < t->n_post && rc == 0; i++) {
        rc = fy__tok_ids_push(&out, t->post[i]);
    }
    free(e.sym);
    free(e.heap);
    free(e.sp);
    free(e.sp2);
    if (rc == 0 && !out.v) { /* an empty result is still a valid allocation */
        out.v = malloc(sizeof *out.v);
        rc = out.v ? 0 : FY_ENOMEM;
    }
    if (rc) {
        free(out.v);
        return rc;
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}
