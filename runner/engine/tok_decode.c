/* tok_decode.c: ids back to text, whole (fy_tokenizer_decode) or streamed
 * (fy_detok_*), and the UTF-8 helpers both directions share.
 *
 * Each token's decoder chain (Replace, ByteFallback, ByteLevel, Metaspace,
 * per-token Strip) depends only on the token, so tokenizer.c runs it once per
 * id at load and decoding concatenates those bytes: O(output). What depends
 * on context is handled here, identically in both paths:
 *   - a Strip after Fuse drops up to N spaces at the start of the output
 *     (Llama 2: the space the encoder's "▁" prefix stands for);
 *   - a Metaspace decoder drops the replacement characters of the first token;
 *   - the bytes are made valid UTF-8 by replacing each maximal ill-formed
 *     subsequence with U+FFFD, as Rust's String::from_utf8_lossy does for
 *     HF's ByteLevel decoder. (HF's ByteFallback decoder instead replaces a
 *     whole run of <0xNN> tokens byte by byte when the run is not valid
 *     UTF-8; the two differ only on invalid byte sequences.)
 * The streaming detokenizer holds at most the 3 bytes of an incomplete
 * character, so concatenating its chunks gives exactly the full decode. */
#include "runner/engine/tok_internal.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

#define TOK_OUT_MAX ((size_t)TOK_MAX_TEXT * 4)

/* ---- characters ----------------------------------------------------------- */

/* The Unicode White_Space property (what Rust's char::is_whitespace tests). */
int fy__tok_is_space(uint32_t cp)
{
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* ---- one token's decoder chain ------------------------------------------ */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

static int step_bytefallback(const char *s, size_t n, fy_buf *o)
{
    if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' && hexval(s[3]) >= 0 &&
        hexval(s[4]) >= 0) {
        char b = (char)(hexval(s[3]) * 16 + hexval(s[4]));
        return fy_buf_append(o, &b, 1);
    }
    return fy_buf_append(o, s, n);
}

/* GPT-2's map back to bytes; a token with a character outside the map keeps
 * its UTF-8 bytes whole (as HF does, e.g. for added tokens). */
static int step_bytelevel(const fy_tokenizer *t, const char *s, size_t n, fy_buf *o)
{
    size_t start = o->len;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = fy_utf8_char(s + i, n - i, &cp);
        if (k == 0 || cp >= 324 || t->bl_dec[cp] < 0) {
            o->len = start;
            return fy_buf_append(o, s, n);
        }
        char b = (char)t->bl_dec[cp];
        int rc = fy_buf_append(o, &b, 1);
        if (rc) {
            return rc;
        }
        i += k;
    }
    return 0;
}

int fy__tok_replace_lit(const char *s, size_t n, const char *a, size_t alen, const char *rep,
                        size_t replen, fy_buf *o)
{
    size_t i = 0, run = 0;
    int rc;
    while (alen && i + alen <= n) {
        if (memcmp(s + i, a, alen) != 0) {
            i++;
            continue;
        }
        if ((rc = fy_buf_append(o, s + run, i - run)) || (rc = fy_buf_append(o, rep, replen))) {
            return rc;
        }
        i += alen;
        run = i;
    }
    return fy_buf_append(o, s + run, n - run);
}

static int step_strip(const tok_step *st, const char *s, size_t n, fy_buf *o)
{
    size_t b = 0, e = n;
    for (int k = 0; k < st->start && b + st->alen <= e && memcmp(s + b, st->a, st->alen) == 0;
         k++) {
        b += st->alen;
    }
    for (int k = 0;
         k < st->stop && e >= b + st->alen && memcmp(s + e - st->alen, st->a, st->alen) == 0; k++) {
        e -= st->alen;
    }
    return fy_buf_append(o, s + b, e - b);
}

static int apply_step(const fy_tokenizer *t, const tok_step *st, int first, const char *s, size_t n,
                      fy_buf *o)
{
    switch (st->kind) {
    case TOK_D_REPLACE:
        return st->a ? fy__tok_replace_lit(s, n, st->a, st->alen, st->b, st->blen, o)
                     : fy__tok_re_replace(st->re, s, n, st->b, st->blen, o);
    case TOK_D_BYTEFALLBACK:
        return step_bytefallback(s, n, o);
    case TOK_D_BYTELEVEL:
        return step_bytelevel(t, s, n, o);
    case TOK_D_METASPACE:
        return fy__tok_replace_lit(s, n, st->a, st->alen, " ",
                                   first && st->prepend != TOK_PREPEND_NEVER ? 0 : 1, o);
    case TOK_D_STRIP:
        return step_strip(st, s, n, o);
    }
    return FY_EINVAL;
}

int fy__tok_decode_piece(const fy_tokenizer *t, int32_t id, int first, fy_buf *out)
{
    fy_buf a, b;
    fy_buf_init(&a, TOK_MAX_TOKEN_BYTES * 4);
    fy_buf_init(&b, TOK_MAX_TOKEN_BYTES * 4);
    int rc = fy_buf_append(&a, t->piece[id], t->piece_len[id]);
    for (int i = 0; i < t->n_dec && rc == 0; i++) {
        fy_buf_reset(&b);
        rc = apply_step(t, &t->dec[i], first, a.data ? a.data : "", a.len, &b);
        fy_buf tmp = a;
        a = b;
        b = tmp;
    }
    if (rc == 0) {
        rc = fy_buf_append(out, a.data ? a.data : "", a.len);
    }
    fy_buf_free(&a);
    fy_buf_free(&b);
    return rc;
}

static int first_differs(const fy_tokenizer *t)
{
    for (int i = 0; i < t->n_dec; i++) {
        if (t->dec[i].kind == TOK_D_METASPACE && t->dec[i].prepend != TOK_PREPEND_NEVER) {
            return 1;
        }
    }
    return 0;
}

/* Whether ID produces text at all (HF skips ids it has no token for). */
static int decodable(const fy_tokenizer *t, int32_t id, int skip_special)
{
    return id >= 0 && id < t->n_vocab && t->piece[id] && !(skip_special && t->special[id]);
}

/* Appends token ID's bytes; FIRST for the first token decoded. */
static int token_bytes(const fy_tokenizer *t, int32_t id, int first, fy_buf *o)
{
    if (first && first_differs(t)) {
        return fy__tok_decode_piece(t, id, 1, o);
    }
    return fy_buf_append(o, t->dec_bytes + t->dec_off[id], t->dec_off[id + 1] - t->dec_off[id]);
}

int fy_tokenizer_decode(const fy_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                        char **out, size_t *len)
{
    fy_buf raw, txt;
    fy_buf_init(&raw, TOK_OUT_MAX);
    fy_buf_init(&txt, TOK_OUT_MAX);
    int rc = 0, first = 1;
    *out = NULL;
    *len = 0;
    if (!t || (n && !ids)) {
        return FY_EINVAL;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (decodable(t, ids[i], skip_special)) {
            rc = token_bytes(t, ids[i], first, &raw);
            first = 0;
        }
    }
    size_t skip = 0;
    while (rc == 0 && skip < (size_t)t->dec_strip_start && skip < raw.len &&
           raw.data[skip] == ' ') {
        skip++;
    }
    if (rc == 0) {
        long k = fy_utf8_sanitize(raw.data ? raw.data + skip : "", raw.len - skip, 1, &txt);
        rc = k < 0 ? (int)k : fy_buf_append(&txt, "", 0);
    }
    if (rc == 0 && !fy_buf_cstr(&txt)) {
        rc = FY_ENOMEM;
    }
    fy_buf_free(&raw);
    if (rc) {
        fy_buf_free(&txt);
        return rc;
    }
    *out = fy_buf_steal(&txt, len);
    return 0;
}

/* ---- streaming ---------------------------------------------------------- */

struct fy_detok {
    const fy_tokenizer *t;
    int skip_special;
    int first;      /* no token decoded yet */
    int strip_left; /* leading spaces still to drop (Strip after Fuse) */
    fy_buf pend;    /* bytes not yet emitted: at most an incomplete character */
    fy_buf tok;     /* the current token's bytes */
    fy_buf out;     /* the chunk returned by the last call */
};

fy_detok *fy_detok_new(const fy_tokenizer *t, int skip_special)
{
    fy_detok *d = t ? calloc(1, sizeof *d) : NULL;
    if (!d) {
        return NULL;
    }
    d->t = t;
    d->skip_special = skip_special;
    d->first = 1;
    d->strip_left = t->dec_strip_start;
    fy_buf_init(&d->pend, TOK_OUT_MAX);
    fy_buf_init(&d->tok, TOK_OUT_MAX);
    fy_buf_init(&d->out, TOK_OUT_MAX);
    return d;
}

static int emit(fy_detok *d, int final, const char **out, size_t *len)
{
    long k = fy_utf8_sanitize(d->pend.data ? d->pend.data : "", d->pend.len, final, &d->out);
    if (k < 0) {
        return (int)k;
    }
    fy_buf_consume(&d->pend, (size_t)k);
    *out = d->out.data ? d->out.data : "";
    *len = d->out.len;
    return 0;
}

int fy_detok_push(fy_detok *d, int32_t id, const char **out, size_t *len)
{
    *out = "";
    *len = 0;
    fy_buf_reset(&d->out);
    if (!decodable(d->t, id, d->skip_special)) {
        return 0;
    }
    fy_buf_reset(&d->tok);
    int rc = token_bytes(d->t, id, d->first, &d->tok);
    if (rc) {
        return rc;
    }
    d->first = 0;
    size_t skip = 0;
    while (d->strip_left > 0 && skip < d->tok.len && d->tok.data[skip] == ' ') {
        skip++;
        d->strip_left--;
    }
    if (skip < d->tok.len) {
        d->strip_left = 0; /* the output has begun */
    }
    if ((rc = fy_buf_append(&d->pend, d->tok.data ? d->tok.data + skip : "", d->tok.len - skip))) {
        return rc;
    }
    return emit(d, 0, out, len);
}

/* Bytes of ID's text in the middle of a text (0 for an id D skips). */
static size_t token_len(const fy_detok *d, int32_t id)
{
    if (!decodable(d->t, id, d->skip_special)) {
        return 0;
    }
    return d->t->dec_off[id + 1] - d->t->dec_off[id];
}

int fy_detok_prime(fy_detok *d, const int32_t *ids, size_t n)
{
    const char *out;
    size_t len, i = 0, j = n, tail = 0;
    int rc = 0;
    /* The start: until the text began, the first token and the strip rule
     * make a difference. */
    while (rc == 0 && i < n && (d->first || d->strip_left > 0)) {
        rc = fy_detok_push(d, ids[i++], &out, &len);
    }
    /* The end: what the detokenizer holds is an incomplete character, which
     * begins within the last 3 bytes at a byte that is not a continuation
     * byte, where UTF-8 validation restarts whatever came before it. So the
     * last 4 bytes give the same held bytes as the whole prompt would. */
    while (j > i && tail < 4) {
        tail += token_len(d, ids[--j]);
    }
    if (j > i) {
        fy_buf_reset(&d->pend); /* more bytes follow: whatever it held is final */
    }
    while (rc == 0 && j < n) {
        rc = fy_detok_push(d, ids[j++], &out, &len);
    }
    fy_buf_reset(&d->out);
    return rc;
}

int fy_detok_finish(fy_detok *d, const char **out, size_t *len)
{
    fy_buf_reset(&d->out);
    return emit(d, 1, out, len);
}

void fy_detok_free(fy_detok *d)
{
    if (!d) {
        return;
    }
    fy_buf_free(&d->pend);
    fy_buf_free(&d->tok);
    fy_buf_free(&d->out);
    free(d);
}
