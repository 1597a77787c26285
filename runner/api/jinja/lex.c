/* lex.c: the compiler's basics (the arena, the first error) and the lexer:
 * source -> tokens (text runs, tag delimiters, expression tokens), applying
 * whitespace control, trim_blocks and lstrip_blocks. */
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

/* ------------------------------------------------------------------ arena */

void *fy_jinja__arena_alloc(arena_chunk **head, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    arena_chunk *c = *head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 32768 ? n : 32768;
        c = malloc(sizeof *c + cap);
        if (!c) {
            return NULL;
        }
        c->next = *head;
        c->used = 0;
        c->cap = cap;
        *head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void fy_jinja__arena_free(arena_chunk *c)
{
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
}

int fy_jinja__cfail(compiler *c, int rc, int line, const char *fmt, ...)
{
    if (c->rc) {
        return c->rc;
    }
    c->rc = rc;
    va_list ap;
    va_start(ap, fmt);
    fy_jinja__put_error(c->err, c->errlen, 0, line, fmt, ap);
    va_end(ap);
    return rc;
}

char *fy_jinja__cstrdup(compiler *c, const char *s, size_t n)
{
    char *p = fy_jinja__arena_alloc(&c->t->arena, n + 1);
    if (!p) {
        fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
        return NULL;
    }
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* ------------------------------------------------------------------ lexer */

static token *emit_tok(compiler *c, int type, int line)
{
    if (c->ntoks == c->captoks) {
        size_t cap = c->captoks ? c->captoks * 2 : 256;
        token *p = realloc(c->toks, cap * sizeof *p);
        if (!p) {
            fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
            return NULL;
        }
        c->toks = p;
        c->captoks = cap;
    }
    token *t = &c->toks[c->ntoks++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = line;
    return t;
}

static int count_nl(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        k += s[i] == '\n';
    }
    return k;
}

/* lstrip_blocks: drops the spaces and tabs that precede a block tag when
 * nothing else precedes it on its line. TEXT lies inside SRC. */
static void lstrip_line(const char *src, const char *text, size_t *tlen)
{
    size_t k = *tlen;
    while (k && (text[k - 1] == ' ' || text[k - 1] == '\t')) {
        k--;
    }
    if (k == 0) {
        if (text == src || text[-1] == '\n') {
            *tlen = 0;
        }
    } else if (text[k - 1] == '\n') {
        *tlen = k;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

/* Jinja writes every \r\n and \r of template text and string literals as
 * \n. Returns the new length (S is rewritten in place). */
size_t fy_jinja__normalize_newlines(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r') {
            s[o++] = '\n';
            i += i + 1 < n && s[i + 1] == '\n';
        } else {
            s[o++] = s[i];
        }
    }
    return o;
}

/* The byte a one-letter escape \E stands for, or -1 when E is not one. */
static int simple_escape(char e)
{
    static const char map[][2] = {{'n', '\n'}, {'t', '\t'}, {'r', '\r'}, {'\\', '\\'}, {'\'', '\''},
                                  {'"', '"'},  {'a', '\a'}, {'b', '\b'}, {'f', '\f'},  {'v', '\v'}};
    for (size_t i = 0; i < NELEM(map); i++) {
        if (map[i][0] == e) {
            return map[i][1];
        }
    }
    return -1;
}

/* Decodes the escape whose letter is at S[*K] (the backslash before it),
 * inside a literal ending at S[J], into OUT + *O; *K is left on its last
 * byte. Returns 0, or the error recorded for a truncated \x, \u or \U. */
static int lex_escape(compiler *c, const char *s, size_t j, size_t *k, char *out, size_t *o,
                      int *line)
{
    char e = s[*k];
    int ch = simple_escape(e), digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    long v = 0;
    if (ch >= 0) {
        out[(*o)++] = (char)ch;
    } else if (e == '\n') {
        (*line)++; /* line continuation */
    } else if (digits) {
        for (int m = 0; m < digits; m++) {
            int h = *k + 1 < j ? hexval(s[*k + 1]) : -1;
            if (h < 0) {
                return fy_jinja__cfail(c, FY_EPARSE, *line,
                                       "truncated \\%c escape in string literal", e);
            }
            v = v * 16 + h;
            (*k)++;
        }
        *o += utf8_put(out + *o, v);
    } else if (e >= '0' && e <= '7') {
        for (int m = 0; m < 3 && *k < j && s[*k] >= '0' && s[*k] <= '7'; m++) {
            v = v * 8 + (s[(*k)++] - '0');
        }
        (*k)--;
        *o += utf8_put(out + *o, v);
    } else {
        out[(*o)++] = '\\';
        out[(*o)++] = e;
    }
    return 0;
}

/* Lexes a string literal at S[*I] (the opening quote) with Python's escapes;
 * unknown escapes stay as written, as in Python. */
static int lex_string(compiler *c, const char *s, size_t n, size_t *i, int *line)
{
    char q = s[*i];
    size_t j = *i + 1;
    int start_line = *line;
    while (j < n && s[j] != q) {
        j += s[j] == '\\' && j + 1 < n ? 2 : 1;
    }
    if (j >= n) {
        return fy_jinja__cfail(c, FY_EPARSE, start_line, "unterminated string literal");
    }
    /* Decoded text is never longer than the source (a \x or \u escape is
     * at most as long as its UTF-8). */
    char *out = fy_jinja__arena_alloc(&c->t->arena, j - *i + 1);
    if (!out) {
        return fy_jinja__cfail(c, FY_ENOMEM, 0, "out of memory");
    }
    size_t o = 0;
    for (size_t k = *i + 1; k < j; k++) {
        if (s[k] == '\n') {
            (*line)++;
        }
        if (s[k] == '\r') {
            out[o++] = '\n';
            k += k + 1 < j && s[k + 1] == '\n';
        } else if (s[k] != '\\') {
            out[o++] = s[k];
        } else if (++k, lex_escape(c, s, j, &k, out, &o, line)) {
            return c->rc;
        }
    }
    out[o] = 0;
    token *t = emit_tok(c, T_STRING, start_line);
    if (!t) {
        return c->rc;
    }
    t->s = out;
    t->n = o;
    *i = j + 1;
    return 0;
}

static int lex_number(compiler *c, const char *s, size_t n, size_t *i, int line)
{
    size_t j = *i;
    int is_float = 0;
    while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) {
        j++;
    }
    int after_dot =
        c->ntoks && c->toks[c->ntoks - 1].type == T_OP && c->toks[c->ntoks - 1].s[0] == '.';
    if (!after_dot && j + 1 < n && s[j] == '.' && isdigit((unsigned char)s[j + 1])) {
        is_float = 1;
        j++;
        while (j < n && (isdigit((unsigned char)s[j]) || s[j] == '_')) {
            j++;
        }
    }
    if (!after_dot && j < n && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < n && (s[k] == '+' || s[k] == '-')) {
            k++;
        }
        if (k < n && isdigit((unsigned char)s[k])) {
            is_float = 1;
            j = k;
            while (j < n && isdigit((unsigned char)s[j])) {
                j++;
            }
        }
    }
    char buf[64];
    size_t o = 0;
    for (size_t k = *i; k < j; k++) {
        if (s[k] != '_') {
            if (o + 1 >= sizeof buf) {
                return fy_jinja__cfail(c, FY_EPARSE, line, "number literal too long");
            }
            buf[o++] = s[k];
        }
    }
    buf[o] = 0;
    token *t = emit_tok(c, is_float ? T_FLOAT : T_INT, line);
    if (!t) {
        return c->rc;
    }
    errno = 0;
    if (is_float) {
        t->fval = strtod(buf, NULL);
        if (!isfinite(t->fval)) {
            return fy_jinja__cfail(c, FY_ENOTSUP, line, "float literal %s out of range", buf);
        }
    } else {
        t->ival = strtoll(buf, NULL, 10);
        if (errno == ERANGE) {
            return fy_jinja__cfail(c, FY_ENOTSUP, line, "integer literal %s too large", buf);
        }
    }
    *i = j;
    return 0;
}

static const char *const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
static const char ops1[] = "+-*/%~<>=()[]{},.:|";

/* The length of the tag's closing delimiter at P ("}}" or "%}", after an
 * optional "-", or "+" in a block tag), 0 if there is none; *MOD gets the
 * "-" or "+". */
static size_t tag_close(const char *p, size_t left, char kind, char *mod)
{
    char close = kind == '{' ? '}' : '%';
    if (left >= 3 && (p[0] == '-' || (p[0] == '+' && kind == '%')) && p[1] == close &&
        p[2] == '}') {
        *mod = p[0];
        return 3;
    }
    return left >= 2 && p[0] == close && p[1] == '}' ? 2 : 0;
}

/* Emits a token of TYPE spelled P[0..LEN) and moves *I past it. */
static int emit_span(compiler *c, int type, const char *p, size_t len, size_t *i, int line)
{
    token *t = emit_tok(c, type, line);
    if (!t) {
        return c->rc;
    }
    t->s = p;
    t->n = len;
    *i += len;
    return 0;
}

/* The length of the operator at P (LEFT bytes remain), 0 if there is none. */
static size_t op_len(const char *p, size_t left)
{
    for (size_t k = 0; k < NELEM(ops2); k++) {
        if (left >= 2 && memcmp(p, ops2[k], 2) == 0) {
            return 2;
        }
    }
    return strchr(ops1, p[0]) ? 1 : 0;
}

/* Lexes one name, number, string or operator at S[*I] inside a tag; *BRACES
 * counts the open "{" so that a dict's "}" is not taken for the tag's end. */
static int lex_tag_token(compiler *c, const char *s, size_t n, size_t *i, int *line, int *braces)
{
    const char *p = s + *i;
    size_t left = n - *i;
    unsigned char ch = (unsigned char)p[0];
    if (isalpha(ch) || ch == '_') {
        size_t j = 1;
        while (j < left && (isalnum((unsigned char)p[j]) || p[j] == '_')) {
            j++;
        }
        return emit_span(c, T_NAME, p, j, i, *line);
    }
    if (isdigit(ch)) {
        return lex_number(c, s, n, i, *line);
    }
    if (ch == '\'' || ch == '"') {
        return lex_string(c, s, n, i, line);
    }
    size_t oplen = op_len(p, left);
    if (!oplen) {
        return fy_jinja__cfail(c, FY_EPARSE, *line, "unexpected character '%c' in tag",
                               isprint(ch) ? ch : '?');
    }
    *braces += ch == '{';
    *braces -= ch == '}' && *braces > 0;
    return emit_span(c, T_OP, p, oplen, i, *line);
}

/* Lexes the inside of a {{ }} or {% %} tag starting at *I, through its closing
 * delimiter. Returns 0, sets *TRIM_AFTER to '-' (strip following whitespace),
 * '+' (keep it) or 0. */
static int lex_tag(compiler *c, const char *s, size_t n, size_t *i, int *line, char kind,
                   char *trim_after)
{
    int braces = 0;
    int start_line = *line;
    for (;;) {
        while (*i < n && is_ws(s[*i])) {
            *line += s[*i] == '\n';
            (*i)++;
        }
        if (*i >= n) {
            return fy_jinja__cfail(c, FY_EPARSE, start_line, "unclosed %s tag",
                                   kind == '{' ? "{{" : "{%");
        }
        char mod = 0;
        size_t close = braces == 0 || kind == '%' ? tag_close(s + *i, n - *i, kind, &mod) : 0;
        if (close) {
            if (!emit_tok(c, kind == '{' ? T_VAR_END : T_BLOCK_END, *line)) {
                return c->rc;
            }
            *i += close;
            *trim_after = mod;
            return 0;
        }
        int rc = lex_tag_token(c, s, n, i, line, &braces);
        if (rc) {
            return rc;
        }
    }
}

static size_t skip_newline(const char *s, size_t n, size_t i, int *line)
{
    if (i < n && s[i] == '\n') {
        (*line)++;
        return i + 1;
    }
    if (i + 1 < n && s[i] == '\r' && s[i + 1] == '\n') {
        (*line)++;
        return i + 2;
    }
    return i;
}

/* The offset of the next "{{", "{%" or "{#" at or after POS, or N. */
static size_t next_tag(const char *s, size_t n, size_t pos)
{
    for (size_t i = pos; i + 1 < n; i++) {
        if (s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')) {
            return i;
        }
    }
    return n;
}

/* Emits the text S[POS..TAG) as a T_TEXT token after whitespace control:
 * its leading whitespace goes when LSTRIP_NEXT (the tag before it ended in
 * "-"), its trailing whitespace before a "{{-"/"{%-"/"{#-" tag, and with
 * lstrip_blocks the indentation before a block or comment tag ("{%+" keeps
 * it). *LINE advances over the text. Returns 0 or the error recorded. */
static int lex_text(compiler *c, const char *s, size_t n, size_t pos, size_t tag, int *line,
                    int lstrip_next)
{
    const char *text = s + pos;
    size_t tlen = tag - pos;
    int text_line = *line;
    *line += count_nl(text, tlen);
    while (lstrip_next && tlen && is_ws(*text)) {
        text_line += *text == '\n';
        text++;
        tlen--;
    }
    if (tag < n) {
        char kind = s[tag + 1], mod = tag + 2 < n ? s[tag + 2] : 0;
        if (mod == '-') {
            while (tlen && is_ws(text[tlen - 1])) {
                tlen--;
            }
        } else if (mod != '+' && kind != '{' && (c->flags & FY_JINJA_LSTRIP_BLOCKS)) {
            lstrip_line(s, text, &tlen);
        }
    }
    if (tlen) {
        token *t = emit_tok(c, T_TEXT, text_line);
        if (!t) {
            return c->rc;
        }
        t->s = text;
        t->n = tlen;
    }
    return 0;
}

/* Skips the comment whose body starts at *POS, past its "#}"; *TRIM_AFTER
 * gets its closing "-" or "+" if any. Returns 0 or the error recorded. */
static int lex_comment(compiler *c, const char *s, size_t n, size_t *pos, int *line,
                       char *trim_after)
{
    size_t end = *pos;
    while (end + 1 < n && !(s[end] == '#' && s[end + 1] == '}')) {
        end++;
    }
    if (end + 1 >= n) {
        return fy_jinja__cfail(c, FY_EPARSE, *line, "unclosed comment");
    }
    *line += count_nl(s + *pos, end - *pos);
    if (end > *pos && (s[end - 1] == '-' || s[end - 1] == '+')) {
        *trim_after = s[end - 1];
    }
    *pos = end + 2;
    return 0;
}

int fy_jinja__lex(compiler *c)
{
    const char *s = c->src;
    size_t n = c->len;
    /* keep_trailing_newline=False: one trailing newline is not part of it. */
    if (n && s[n - 1] == '\n') {
        n--;
        if (n && s[n - 1] == '\r') {
            n--;
        }
    }
    size_t pos = 0;
    int line = 1, lstrip_next = 0;
    for (;;) {
        size_t tag = next_tag(s, n, pos);
        if (lex_text(c, s, n, pos, tag, &line, lstrip_next)) {
            return c->rc;
        }
        if (tag >= n) {
            break;
        }
        char kind = s[tag + 1], mod = tag + 2 < n ? s[tag + 2] : 0, trim_after = 0;
        pos = tag + 2 + (mod == '-' || (mod == '+' && kind != '{'));
        int rc;
        if (kind == '#') {
            rc = lex_comment(c, s, n, &pos, &line, &trim_after);
        } else if (!emit_tok(c, kind == '{' ? T_VAR_BEGIN : T_BLOCK_BEGIN, line)) {
            return c->rc;
        } else {
            rc = lex_tag(c, s, n, &pos, &line, kind, &trim_after);
        }
        if (rc) {
            return rc;
        }
        lstrip_next = trim_after == '-';
        if (!lstrip_next && trim_after != '+' && kind != '{' && (c->flags & FY_JINJA_TRIM_BLOCKS)) {
            pos = skip_newline(s, n, pos, &line);
        }
    }
    return emit_tok(c, T_EOF, line) ? 0 : c->rc;
}
