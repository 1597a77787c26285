/* Unit tests for the tokenizer from GGUF metadata (fy_tokenizer_from_gguf).
 *
 * With FERRY_TESTDATA: each tokenizer.json of the test data is written into
 * a GGUF here (tokenizer.ggml.* keys from its vocabulary, merges and added
 * tokens, as llama.cpp's converter writes them), and the tokenizer read back
 * from it must be the tokenizer.json one: the same pieces, the reference
 * vectors and random text to the same ids, the same decoding. Also the
 * SentencePiece vocabularies llama.cpp's tools wrote into stories260K.gguf
 * and tiny256-F32.gguf give llama.cpp's prompt ids (llama_cpp_reference.json)
 * and the ids of stories260K's tokenizer.json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/gguf.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"
#include "support/gguf_writer.h"
#include "support/tok_support.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------- */

static fy_tokenizer *from_gguf_file(const char *path)
{
    char err[512] = "";
    fy_gguf *g = NULL;
    int rc = fy_gguf_open(path, &g, err, sizeof err);
    if (rc) {
        fail_msg("open %s: %s", path, err);
    }
    fy_tokenizer *t = NULL;
    rc = fy_tokenizer_from_gguf(g, &t, err, sizeof err);
    fy_gguf_free(g);
    if (rc) {
        fail_msg("tokenizer of %s: %s (%s)", path, err, fy_strerror(rc));
    }
    return t;
}

/* Parses the GGUF W holds and reads its tokenizer; the file and its view
 * are freed before this returns (the tokenizer keeps nothing of them). */
static int try_gguf(const gw_writer *w, fy_tokenizer **t, char *err, size_t errlen)
{
    uint8_t *file;
    size_t len;
    gw_finish(w, &file, &len);
    fy_gguf *g = NULL;
    int rc = fy_gguf_parse(file, len, "t.gguf", &g, err, errlen);
    if (rc) {
        fail_msg("parse: %s", err);
    }
    rc = fy_tokenizer_from_gguf(g, t, err, errlen);
    fy_gguf_free(g);
    memset(file, 0xa5, len); /* anything still pointing into it reads junk */
    free(file);
    return rc;
}

static fy_tokenizer *gguf_or_fail(const gw_writer *w)
{
    char err[512] = "";
    fy_tokenizer *t = NULL;
    if (try_gguf(w, &t, err, sizeof err)) {
        fail_msg("tokenizer: %s", err);
    }
    return t;
}

/* ---- a small vocabulary written here (always run) -------------------------- */

/* <unk> <s> </s>, the 256 byte tokens (ids 3..258), then these. */
static const struct {
    const char *text;
    float score;
    int type;
} PIECES[] = {
    {"\xe2\x96\x81h", -1, 1},      /* 259 */
    {"ll", -2, 1},                 /* 260 */
    {"\xe2\x96\x81he", -3, 1},     /* 261 */
    {"llo", -4, 1},                /* 262 */
    {"\xe2\x96\x81hello", -5, 1},  /* 263 */
    {"or", -6, 1},                 /* 264 */
    {"\xe2\x96\x81w", -7, 1},      /* 265 */
    {"\xe2\x96\x81wor", -8, 1},    /* 266 */
    {"ld", -9, 1},                 /* 267 */
    {"\xe2\x96\x81world", -10, 1}, /* 268 */
    {"\xe2\x96\x81", -100, 1},     /* 269 */
    {"h", -101, 1},                /* 270 */
    {"e", -102, 1},                /* 271 */
    {"l", -103, 1},                /* 272 */
    {"o", -104, 1},                /* 273 */
    {"w", -105, 1},                /* 274 */
    {"r", -106, 1},                /* 275 */
    {"d", -107, 1},                /* 276 */
    {"<|user|>", 0, 4},            /* 277 */
    {"<|ctl|>", 0, 3},             /* 278 */
    {"a", -108, 1},                /* 279 */
    {"b", -109, 1},                /* 280 */
    {"c", -110, 1},                /* 281 */
    {"ab", -20, 1},                /* 282 */
    {"bc", -19, 1},                /* 283: scores higher than "ab", so "abc" is a + bc */
    {"lld", 0, 5},                 /* 284: unused, scoring above "ll" + "d" */
};
#define GG_NONE 0xffffffffll /* a special id meaning "none" */
#define N_SMALL (259 + (int)(sizeof PIECES / sizeof PIECES[0]))

/* Tri-state flags: UNSET leaves the key out. */
enum { UNSET, NO, YES };

/* What small() writes; all zero is the valid file, cases change one thing. */
typedef struct {
    const char *model;             /* tokenizer.ggml.model; NULL: "llama" */
    const char *pre;               /* tokenizer.ggml.pre, NULL: not written */
    const char *extra;             /* a token appended (type normal, score 0), or NULL */
    size_t extra_len;              /* its bytes; 0: strlen */
    int scores_delta, types_delta; /* entries more than (or fewer than) the tokens */
    int no_scores, nan_at;         /* nan_at > 0: that score is NaN */
    int type_at, type;             /* type != 0: token TYPE_AT gets TYPE */
    int64_t bos, eos;              /* 0: not written */
    int add_bos, add_eos, prefix;  /* UNSET, NO, YES */
    int add_bos_u32;               /* add_bos_token written as a u32 */
    const char *const *merges;     /* gpt2: the merges written */
    int n_merges;
} small_spec;

static void kv_flag(gw_writer *w, const char *key, int v)
{
    if (v != UNSET) {
        gw_kv_bool(w, key, v == YES);
    }
}

static void small(const small_spec *sp, gw_writer *w)
{
    int n = N_SMALL + (sp->extra != NULL);
    gw_kv_str(w, "tokenizer.ggml.model", sp->model ? sp->model : "llama");
    if (sp->pre) {
        gw_kv_str(w, "tokenizer.ggml.pre", sp->pre);
    }
    gw_arr(w, "tokenizer.ggml.tokens", FY_GGUF_STR, (uint64_t)n);
    gw_str(w, "<unk>");
    gw_str(w, "<s>");
    gw_str(w, "</s>");
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        gw_str(w, name);
    }
    for (int i = 0; i < N_SMALL - 259; i++) {
        gw_str(w, PIECES[i].text);
    }
    if (sp->extra) {
        gw_strn(w, sp->extra, sp->extra_len ? sp->extra_len : strlen(sp->extra));
    }
    if (!sp->no_scores) {
        gw_arr(w, "tokenizer.ggml.scores", FY_GGUF_F32, (uint64_t)(n + sp->scores_delta));
        for (int i = 0; i < n + sp->scores_delta; i++) {
            float f = i >= 259 && i < N_SMALL ? PIECES[i - 259].score : 0;
            gw_f32(w, i == sp->nan_at && sp->nan_at ? NAN : f);
        }
    }
    gw_arr(w, "tokenizer.ggml.token_type", FY_GGUF_I32, (uint64_t)(n + sp->types_delta));
    for (int i = 0; i < n + sp->types_delta; i++) {
        int ty = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : i < N_SMALL ? PIECES[i - 259].type : 1;
        gw_i32(w, sp->type && i == sp->type_at ? sp->type : ty);
    }
    if (sp->merges) {
        gw_arr(w, "tokenizer.ggml.merges", FY_GGUF_STR, (uint64_t)sp->n_merges);
        for (int i = 0; i < sp->n_merges; i++) {
            gw_str(w, sp->merges[i]);
        }
    }
    if (sp->bos) {
        gw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)sp->bos);
    }
    if (sp->eos) {
        gw_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)sp->eos);
    }
    if (sp->add_bos_u32) {
        gw_kv_u32(w, "tokenizer.ggml.add_bos_token", 1);
    }
    kv_flag(w, "tokenizer.ggml.add_bos_token", sp->add_bos);
    kv_flag(w, "tokenizer.ggml.add_eos_token", sp->add_eos);
    kv_flag(w, "tokenizer.ggml.add_space_prefix", sp->prefix);
}

static fy_tokenizer *small_tok(const small_spec *sp)
{
    gw_writer w;
    gw_init(&w);
    small(sp, &w);
    fy_tokenizer *t = gguf_or_fail(&w);
    gw_free(&w);
    return t;
}

static void expect(const fy_tokenizer *t, const char *s, int add_special, int parse_special,
                   const int32_t *want, size_t nwant)
{
    int32_t *ids = NULL;
    size_t n = encode(t, s, strlen(s), add_special, parse_special, &ids);
    if (n != nwant || (n && memcmp(ids, want, n * sizeof *ids) != 0)) {
        char got[256], exp[256];
        fail_msg("\"%s\": got%s, want%s", s, ids_str(ids, n, got, sizeof got),
                 ids_str(want, nwant, exp, sizeof exp));
    }
    free(ids);
}

#define EXPECT(t, s, as, ps, ...)                                    \
    do {                                                             \
        static const int32_t want_[] = {__VA_ARGS__};                \
        expect(t, s, as, ps, want_, sizeof want_ / sizeof want_[0]); \
    } while (0)

static void expect_decode(const fy_tokenizer *t, const int32_t *ids, size_t n, int skip,
                          const char *want)
{
    char *out = NULL;
    size_t len = 0;
    assert_int_equal(fy_tokenizer_decode(t, ids, n, skip, &out, &len), 0);
    assert_string_equal(out, want);
    free(out);
}

static void test_small_spm(void **state)
{
    (void)state;
    small_spec sp = {0};
    fy_tokenizer *t = small_tok(&sp);
    assert_int_equal(fy_tokenizer_vocab_size(t), N_SMALL);
    assert_int_equal(fy_tokenizer_bos(t), 1);
    assert_int_equal(fy_tokenizer_eos(t), 2);
    assert_true(fy_tokenizer_is_special(t, 0));
    assert_true(fy_tokenizer_is_special(t, 1));
    assert_true(fy_tokenizer_is_special(t, 278));
    assert_false(fy_tokenizer_is_special(t, 277)); /* user-defined */
    assert_false(fy_tokenizer_is_special(t, 263));
    assert_string_equal(fy_tokenizer_piece(t, 263), "\xe2\x96\x81hello");
    assert_int_equal(fy_tokenizer_token_id(t, "<|ctl|>"), 278);

    EXPECT(t, "hello world", 0, 0, 263, 268);
    EXPECT(t, "hello world", 1, 0, 1, 263, 268); /* BOS by default, no EOS */
    EXPECT(t, "abc", 0, 0, 269, 279, 283);       /* the higher score merges first */
    EXPECT(t, "hi", 0, 0, 259, 3 + 'i');         /* byte fallback */
    EXPECT(t, "\xc3\xa9", 0, 0, 269, 3 + 0xc3, 3 + 0xa9);
    EXPECT(t, "<|user|>hello", 0, 0, 277, 263); /* user-defined: always whole */
    EXPECT(t, "<|ctl|>hello", 0, 1, 278, 263);  /* control: only when parsing specials */
    EXPECT(t, "<s>hello", 1, 1, 1, 1, 263);
    int32_t *ids = NULL;
    size_t n = encode(t, "<|ctl|>", 7, 0, 0, &ids);
    assert_true(n > 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_not_equal(ids[i], 278);
    }
    free(ids);
    /* An unused piece is never made out of text, though its halves are there. */
    EXPECT(t, "lld", 0, 0, 269, 260, 276);
    const int32_t hw[] = {1, 263, 268, 2};
    expect_decode(t, hw, 4, 1, "hello world");
    expect_decode(t, hw, 4, 0, "<s> hello world</s>");
    expect_decode(t, hw + 1, 2, 0, "hello world");
    const int32_t bytes[] = {269, 3 + 0xc3, 3 + 0xa9, 278};
    expect_decode(t, bytes, 4, 1, "\xc3\xa9");
    expect_stream(t, NULL, 0, hw, 4, "hello world");
    round_trips(t, 7, 300, 48);
    fy_tokenizer_free(t);
}

static void test_small_flags(void **state)
{
    (void)state;
    small_spec sp = {0};
    sp.add_bos = NO;
    sp.add_eos = YES;
    sp.prefix = NO;
    fy_tokenizer *t = small_tok(&sp);
    EXPECT(t, "hello", 1, 0, 270, 271, 262, 2); /* no "▁" prefix, no BOS, EOS */
    const int32_t ids[] = {270, 271, 262, 265, 2};
    expect_decode(t, ids, 5, 1, "hello w"); /* no leading space to strip */
    fy_tokenizer_free(t);

    sp = (small_spec){0};
    sp.bos = 2;
    sp.eos = GG_NONE;
    t = small_tok(&sp);
    assert_int_equal(fy_tokenizer_bos(t), 2);
    assert_int_equal(fy_tokenizer_eos(t), -1);
    EXPECT(t, "hello", 1, 0, 2, 263);
    fy_tokenizer_free(t);

    /* Empty token texts (llama.cpp tolerates them) are no duplicates, and decode to nothing. */
    sp = (small_spec){0};
    sp.extra = "";
    t = small_tok(&sp);
    assert_int_equal(fy_tokenizer_vocab_size(t), N_SMALL + 1);
    const int32_t e[] = {263, N_SMALL, 268};
    expect_decode(t, e, 3, 0, "hello world");
    fy_tokenizer_free(t);
}

/* gpt2 with merges given here: "l l", "ll o" over the same pieces. */
static void test_small_gpt2(void **state)
{
    (void)state;
    static const char *const merges[] = {"l l", "ll o", "h e"};
    small_spec sp = {0};
    sp.model = "gpt2";
    sp.pre = "gpt-2";
    sp.no_scores = 1;
    sp.merges = merges;
    sp.n_merges = 2;
    sp.extra = "he";
    fy_tokenizer *t = small_tok(&sp);
    EXPECT(t, "hello", 1, 0, 270, 271, 262); /* no BOS by default; "h e" is not a merge here */
    assert_int_equal(fy_tokenizer_bos(t), -1);
    fy_tokenizer_free(t);
    sp.n_merges = 3;
    t = small_tok(&sp);
    EXPECT(t, "hello", 0, 0, N_SMALL, 262);
    fy_tokenizer_free(t);
}

/* ---- refusals ---------------------------------------------------------------- */

typedef struct {
    const char *name;
    small_spec sp;
    int rc;
    const char *msg; /* a part of the message after "t.gguf: " */
} refusal;

#define GPT2_MERGES(...)                                             \
    .model = "gpt2", .no_scores = 1, .merges = (const char *const[]) \
    {                                                                \
        __VA_ARGS__                                                  \
    }

static void test_refusals(void **state)
{
    (void)state;
    const refusal cases[] = {
        {"model", {.model = "bert"}, FY_ENOTSUP, "tokenizer.ggml.model: \"bert\" is not supported"},
        {"pre",
         {GPT2_MERGES("l l"), .n_merges = 1, .pre = "tekken"},
         FY_ENOTSUP,
         "tokenizer.ggml.pre: pre-tokenizer \"tekken\" is not supported"},
        {"scores short",
         {.scores_delta = -1},
         FY_EPARSE,
         "tokenizer.ggml.scores: 284 entries for 285 tokens"},
        {"types long",
         {.types_delta = 1},
         FY_EPARSE,
         "tokenizer.ggml.token_type: 286 entries for 285 tokens"},
        {"no scores", {.no_scores = 1}, FY_ENOENT, "tokenizer.ggml.scores"},
        {"nan score", {.nan_at = 260}, FY_EPARSE, "tokenizer.ggml.scores[260]: not a number"},
        {"type",
         {.type_at = 5, .type = 7},
         FY_EPARSE,
         "tokenizer.ggml.token_type[5]: 7 is not a token type"},
        {"byte name",
         {.type_at = 259, .type = 6},
         FY_EPARSE,
         "tokenizer.ggml.token_type[259]: a byte token must read <0xNN>"},
        {"duplicate",
         {.extra = "ll"},
         FY_EPARSE,
         "tokenizer.ggml.tokens[285]: \"ll\" is token 260 too"},
        {"utf8", {.extra = "a\xff"}, FY_EPARSE, "tokenizer.ggml.tokens[285]: not valid UTF-8"},
        {"nul",
         {.extra = "a\0b", .extra_len = 3},
         FY_EPARSE,
         "tokenizer.ggml.tokens[285]: not valid UTF-8"},
        {"bos range",
         {.bos = 285},
         FY_EPARSE,
         "tokenizer.ggml.bos_token_id: 285 is not a token id (the vocabulary has 285)"},
        {"eos range",
         {.eos = 100000},
         FY_EPARSE,
         "tokenizer.ggml.eos_token_id: 100000 is not a token id"},
        {"add_bos type",
         {.add_bos_u32 = 1},
         FY_EPARSE,
         "tokenizer.ggml.add_bos_token: expected a bool, not u32"},
        {"add_bos no bos",
         {.add_bos = YES, .bos = GG_NONE},
         FY_EPARSE,
         "tokenizer.ggml.add_bos_token: true, but the file names no BOS token"},
        {"merge side",
         {GPT2_MERGES("l l", "ll zz"), .n_merges = 2},
         FY_EPARSE,
         "tokenizer.ggml.merges[1]: \"zz\" is not a token"},
        {"merge result",
         {GPT2_MERGES("h o"), .n_merges = 1},
         FY_EPARSE,
         "tokenizer.ggml.merges[0]: \"ho\" is not a token"},
        {"merge shape",
         {GPT2_MERGES("ll"), .n_merges = 1},
         FY_EPARSE,
         "tokenizer.ggml.merges[0]: \"ll\" is not \"left right\""},
        {"gpt2 scores",
         {.model = "gpt2",
          .merges = (const char *const[]){"l l"},
          .n_merges = 1,
          .scores_delta = 2},
         FY_EPARSE,
         "tokenizer.ggml.scores: 287 entries for 285 tokens"},
        {"no merges", {.model = "gpt2", .no_scores = 1}, FY_ENOENT, "tokenizer.ggml.merges"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_writer w;
        gw_init(&w);
        small(&cases[i].sp, &w);
        char err[512] = "";
        fy_tokenizer *t = (fy_tokenizer *)&w; /* must be reset to NULL on failure */
        int rc = try_gguf(&w, &t, err, sizeof err);
        gw_free(&w);
        if (rc != cases[i].rc || t != NULL || strncmp(err, "t.gguf: ", 8) != 0 ||
            !strstr(err, cases[i].msg)) {
            fail_msg("%s: rc %d (%s), \"%s\"; want %d and \"%s\"", cases[i].name, rc,
                     fy_strerror(rc), err, cases[i].rc, cases[i].msg);
        }
    }
}

/* Overlong tokens: past TOK_MAX_TOKEN_BYTES. */
static void test_refuse_long_token(void **state)
{
    (void)state;
    char *big = malloc(TOK_MAX_TOKEN_BYTES + 2);
    assert_non_null(big);
    memset(big, 'x', TOK_MAX_TOKEN_BYTES + 1);
    big[TOK_MAX_TOKEN_BYTES + 1] = 0;
    small_spec sp = {0};
    sp.extra = big;
    gw_writer w;
    gw_init(&w);
    small(&sp, &w);
    char err[512] = "";
    fy_tokenizer *t = NULL;
    assert_int_equal(try_gguf(&w, &t, err, sizeof err), FY_ETOOBIG);
    assert_non_null(strstr(err, "tokenizer.ggml.tokens[285]: longer than 4096 bytes"));
    gw_free(&w);
    free(big);
}

/* ---- tokenizer.json -> GGUF, the way llama.cpp's converter writes it -------- */

typedef struct {
    const char *model; /* tokenizer.ggml.model: "llama" or "gpt2" */
    const char *pre;   /* tokenizer.ggml.pre; NULL: not written */
    int32_t bos, eos;  /* -1: not written */
    int add_bos;       /* -1: not written */
} conv_opts;

#define NO_SCORE (-1e9f)

/* Writes TJ (a parsed tokenizer.json) as tokenizer.ggml.* keys into W.
 * Token texts are model.vocab's, renamed by added_tokens (HF's id_to_token);
 * types: added special tokens control (unk_token: unknown), other added
 * tokens user-defined, <0xNN> byte for llama, the rest normal. A llama
 * vocabulary has no merges in GGUF but scores: a token made by merge r
 * scores -r (SentencePiece's scores order its merges the same way), every
 * other token NO_SCORE. gpt2 keeps the merges as "left right" strings. */
static void convert(json_t *tj, const conv_opts *o, gw_writer *w)
{
    json_t *m = json_object_get(tj, "model"), *vocab = json_object_get(m, "vocab");
    json_t *merges = json_object_get(m, "merges"), *added = json_object_get(tj, "added_tokens");
    const char *unk = json_string_value(json_object_get(m, "unk_token"));
    int llama = strcmp(o->model, "llama") == 0;
    assert_true(json_is_object(vocab) && json_is_array(merges));
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v)
    {
        n = (size_t)json_integer_value(v) + 1 > n ? (size_t)json_integer_value(v) + 1 : n;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        size_t id = (size_t)json_integer_value(json_object_get(json_array_get(added, i), "id"));
        n = id + 1 > n ? id + 1 : n;
    }
    const char **text = calloc(n, sizeof *text);
    int32_t *type = calloc(n, sizeof *type);
    float *score = calloc(n, sizeof *score);
    assert_true(text && type && score);
    json_object_foreach(vocab, key, v)
    {
        size_t id = (size_t)json_integer_value(v);
        text[id] = key;
        type[id] = llama && strlen(key) == 6 && strncmp(key, "<0x", 3) == 0 ? 6 : 1;
        score[id] = NO_SCORE;
    }
    for (size_t i = 0; i < json_array_size(added); i++) {
        json_t *a = json_array_get(added, i);
        size_t id = (size_t)json_integer_value(json_object_get(a, "id"));
        text[id] = json_string_value(json_object_get(a, "content"));
        int special = json_is_true(json_object_get(a, "special"));
        type[id] = !special ? 4 : unk && strcmp(text[id], unk) == 0 ? 2 : 3;
        score[id] = NO_SCORE;
    }
    for (size_t i = 0; i < n; i++) {
        assert_non_null(text[i]); /* the test data has no gaps */
    }
    /* Each merge as "left right", and (llama) its rank as its token's score. */
    size_t nm = json_array_size(merges);
    char **ms = calloc(nm ? nm : 1, sizeof *ms);
    assert_non_null(ms);
    for (size_t r = 0; r < nm; r++) {
        json_t *e = json_array_get(merges, r);
        const char *a = json_string_value(json_is_array(e) ? json_array_get(e, 0) : e);
        const char *b = json_is_array(e) ? json_string_value(json_array_get(e, 1)) : "";
        assert_non_null(a);
        ms[r] = malloc(strlen(a) + strlen(b) + 2);
        assert_non_null(ms[r]);
        snprintf(ms[r], strlen(a) + strlen(b) + 2, "%s%s%s", a, *b ? " " : "", b);
        if (llama) {
            char *joined = strdup(ms[r]), *sp = strchr(joined, ' ');
            assert_non_null(sp);
            memmove(sp, sp + 1, strlen(sp));
            json_t *id = json_object_get(vocab, joined);
            assert_non_null(id);
            if (score[json_integer_value(id)] == NO_SCORE) {
                score[json_integer_value(id)] = -(float)r;
            }
            free(joined);
        }
    }
    gw_kv_str(w, "tokenizer.ggml.model", o->model);
    if (o->pre) {
        gw_kv_str(w, "tokenizer.ggml.pre", o->pre);
    }
    gw_arr(w, "tokenizer.ggml.tokens", FY_GGUF_STR, n);
    for (size_t i = 0; i < n; i++) {
        gw_str(w, text[i]);
    }
    if (llama) {
        gw_arr(w, "tokenizer.ggml.scores", FY_GGUF_F32, n);
        for (size_t i = 0; i < n; i++) {
            gw_f32(w, score[i]);
        }
    }
    gw_arr(w, "tokenizer.ggml.token_type", FY_GGUF_I32, n);
    for (size_t i = 0; i < n; i++) {
        gw_i32(w, type[i]);
    }
    if (!llama) {
        gw_arr(w, "tokenizer.ggml.merges", FY_GGUF_STR, nm);
        for (size_t r = 0; r < nm; r++) {
            gw_str(w, ms[r]);
        }
    }
    if (o->bos >= 0) {
        gw_kv_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)o->bos);
    }
    if (o->eos >= 0) {
        gw_kv_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)o->eos);
    }
    if (o->add_bos >= 0) {
        gw_kv_bool(w, "tokenizer.ggml.add_bos_token", o->add_bos);
    }
    for (size_t r = 0; r < nm; r++) {
        free(ms[r]);
    }
    free(ms);
    free(text);
    free(type);
    free(score);
}

/* The tokenizer of the GGUF written from TJ with O. */
static fy_tokenizer *convert_tok(json_t *tj, const conv_opts *o)
{
    gw_writer w;
    gw_init(&w);
    convert(tj, o, &w);
    fy_tokenizer *t = gguf_or_fail(&w);
    gw_free(&w);
    return t;
}

/* T and H hold the same tokens: texts, decoded bytes, specialness. */
static void same_vocab(const fy_tokenizer *t, const fy_tokenizer *h)
{
    assert_int_equal(fy_tokenizer_vocab_size(t), fy_tokenizer_vocab_size(h));
    for (int32_t id = 0; id < fy_tokenizer_vocab_size(t); id++) {
        assert_string_equal(fy_tokenizer_piece(t, id), fy_tokenizer_piece(h, id));
        size_t a, b;
        const char *pa = fy_tokenizer_token_bytes(t, id, &a),
                   *pb = fy_tokenizer_token_bytes(h, id, &b);
        assert_int_equal(a, b);
        assert_memory_equal(pa, pb, a);
        assert_int_equal(fy_tokenizer_is_special(t, id), fy_tokenizer_is_special(h, id));
    }
}

/* S[0..N) encodes to the same ids through T and H (the ids in *IDS, *N_OUT). */
static void same_ids(const fy_tokenizer *t, const fy_tokenizer *h, const char *s, size_t n,
                     int add_special, int parse_special)
{
    int32_t *a = NULL, *b = NULL;
    size_t na = encode(t, s, n, add_special, parse_special, &a);
    size_t nb = encode(h, s, n, add_special, parse_special, &b);
    if (na != nb || (na && memcmp(a, b, na * sizeof *a) != 0)) {
        char ga[256], gb[256];
        fail_msg("\"%.*s\": GGUF gives%s, tokenizer.json%s", (int)(n > 60 ? 60 : n), s,
                 ids_str(a, na, ga, sizeof ga), ids_str(b, nb, gb, sizeof gb));
    }
    char why[600];
    if (!parse_special && !add_special && !check_decode(t, a, na, s, n, why, sizeof why)) {
        fail_msg("round trip of \"%.*s\": %s", (int)n, s, why);
    }
    free(a);
    free(b);
}

static json_t *load_tj(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) {
        fail_msg("%s: %s", path, je.text);
    }
    return j;
}

/* The tokenizer.json REL and the GGUF written from it agree on the
 * vocabulary, every vector of VEC (which must give the reference ids) and
 * SEED's random texts. */
static void same_as_json(const char *rel, const conv_opts *o, const char *vec, uint64_t seed)
{
    NEED_TESTDATA(path, rel);
    NEED_TESTDATA(dir, "tokenizers/vectors");
    json_t *tj = load_tj(path);
    fy_tokenizer *h = load_json(tj);
    fy_tokenizer *t = convert_tok(tj, o);
    same_vocab(t, h);
    tok_vectors v;
    tok_vectors_load(&v, dir, vec);
    assert_int_equal(v.n, 46);
    for (size_t i = 0; i < v.n; i++) {
        same_ids(t, h, v.s[i], v.len[i], 0, 0);
        int32_t *ids = NULL;
        size_t n = encode(t, v.s[i], v.len[i], 0, 0, &ids);
        assert_int_equal(n, v.nwant[i]);
        assert_memory_equal(ids, v.want[i], n * sizeof *ids);
        free(ids);
    }
    tok_vectors_free(&v);
    char buf[96 * 4 + 1];
    for (int i = 0; i < 300; i++) {
        size_t len = random_text(&seed, buf, 96);
        same_ids(t, h, buf, len, 0, 0);
    }
    fy_tokenizer_free(t);
    fy_tokenizer_free(h);
    json_decref(tj);
}

static void test_llama2_as_gguf(void **state)
{
    (void)state;
    conv_opts o = {"llama", NULL, 1, 2, -1};
    same_as_json("tokenizers/llama2/tokenizer.json", &o, "llama-spm", 0x5eedull);
}

static void test_gpt2_as_gguf(void **state)
{
    (void)state;
    conv_opts o = {"gpt2", "gpt-2", 50256, 50256, 0};
    same_as_json("tokenizers/gpt2/tokenizer.json", &o, "gpt-2", 0xfeedull);
}

/* GPT-2's vocabulary under another pre-tokenizer: the GGUF naming it and the
 * tokenizer.json spelling HF's (or llama.cpp's) patterns out as Split steps. */
static void gpt2_with_pre(const char *pre, const char *const *re, int n_re, int ignore_merges,
                          uint64_t seed)
{
    NEED_TESTDATA(path, "tokenizers/gpt2/tokenizer.json");
    NEED_TESTDATA(dir, "tokenizers/vectors");
    json_t *tj = load_tj(path);
    json_t *seq = json_array();
    for (int i = 0; i < n_re; i++) {
        json_array_append_new(seq, json_pack("{s:s, s:{s:s}, s:s, s:b}", "type", "Split", "pattern",
                                             "Regex", re[i], "behavior", "Isolated", "invert", 0));
    }
    json_array_append_new(seq, json_pack("{s:s, s:b, s:b}", "type", "ByteLevel", "add_prefix_space",
                                         0, "use_regex", 0));
    json_object_set_new(tj, "pre_tokenizer",
                        json_pack("{s:s, s:o}", "type", "Sequence", "pretokenizers", seq));
    json_object_set_new(json_object_get(tj, "model"), "ignore_merges", json_boolean(ignore_merges));
    fy_tokenizer *h = load_json(tj);
    conv_opts o = {"gpt2", pre, 50256, 50256, -1};
    fy_tokenizer *t = convert_tok(tj, &o);
    tok_vectors v;
    tok_vectors_load(&v, dir, "gpt-2");
    for (size_t i = 0; i < v.n; i++) {
        same_ids(t, h, v.s[i], v.len[i], 0, 0);
    }
    tok_vectors_free(&v);
    char buf[96 * 4 + 1];
    for (int i = 0; i < 300; i++) {
        size_t len = random_text(&seed, buf, 96);
        same_ids(t, h, buf, len, 0, 0);
    }
    /* BOS: llama-bpe adds it by default, the others do not. */
    int32_t *ids = NULL;
    size_t n = encode(t, "Hi", 2, 1, 0, &ids);
    assert_int_equal(n, ignore_merges ? 2 : 1);
    assert_int_equal(ids[0] == 50256, ignore_merges);
    free(ids);
    fy_tokenizer_free(t);
    fy_tokenizer_free(h);
    json_decref(tj);
}

static void test_gpt2_pre_llama_bpe(void **state)
{
    (void)state;
    /* Llama 3's tokenizer.json pattern, case-insensitive group and all. */
    static const char *re[] = {
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    gpt2_with_pre("llama-bpe", re, 1, 1, 0x11);
}

static void test_gpt2_pre_qwen2(void **state)
{
    (void)state;
    static const char *re[] = {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"};
    gpt2_with_pre("qwen2", re, 1, 0, 0x22);
}

static void test_gpt2_pre_default(void **state)
{
    (void)state;
    /* llama.cpp's chain for BPE files that name no pre-tokenizer. */
    static const char *re[] = {
        "[\\p{P}\\$\\+<=>\\^~\\|]+",
        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)",
        "\\p{N}+",
        "[0-9][0-9][0-9]",
    };
    gpt2_with_pre("default", re, 4, 0, 0x33);
    gpt2_with_pre(NULL, re, 4, 0, 0x44);
}

/* stories260K's tokenizer.json as a GGUF equals both the tokenizer.json and
 * the GGUF llama.cpp wrote (its own scores), specials and BOS included. */
static void test_stories260k_as_gguf(void **state)
{
    (void)state;
    NEED_TESTDATA(path, "models/stories260K/tokenizer.json");
    NEED_TESTDATA(real, "models/stories260K/stories260K.gguf");
    json_t *tj = load_tj(path);
    fy_tokenizer *h = load_json(tj);
    fy_tokenizer *r = from_gguf_file(real);
    conv_opts o = {"llama", NULL, 1, 2, -1};
    fy_tokenizer *t = convert_tok(tj, &o);
    same_vocab(t, h);
    same_vocab(r, h);
    static const char *cases[] = {"Once upon a time", "The little dog", "<s>Hi</s> there",
                                  " two  spaces\n\nand lines", "caf\xc3\xa9 \xe2\x82\xac 42"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int sp = 0; sp < 4; sp++) {
            same_ids(t, h, cases[i], strlen(cases[i]), sp & 1, sp >> 1);
            same_ids(r, h, cases[i], strlen(cases[i]), sp & 1, sp >> 1);
        }
    }
    uint64_t seed = 260;
    char buf[64 * 4 + 1];
    for (int i = 0; i < 300; i++) {
        size_t len = random_text(&seed, buf, 64);
        same_ids(t, h, buf, len, 1, 0);
        same_ids(r, h, buf, len, 1, 0);
    }
    fy_tokenizer_free(t);
    fy_tokenizer_free(r);
    fy_tokenizer_free(h);
    json_decref(tj);
}

/* ---- the GGUF files of the test data ----------------------------------------- */

/* Each prompt of REF_KEY in llama_cpp_reference.json encodes (with BOS) to
 * llama.cpp's ids, and to the ids stories260K's tokenizer.json gives. */
static void reference_prompts(const char *gguf_rel, const char *ref_key)
{
    NEED_TESTDATA(path, gguf_rel);
    NEED_TESTDATA(ref, "gguf/llama_cpp_reference.json");
    NEED_TESTDATA(tj, "models/stories260K/tokenizer.json");
    fy_tokenizer *t = from_gguf_file(path);
    char err[512] = "";
    fy_tokenizer *h = NULL;
    if (fy_tokenizer_load(tj, &h, err, sizeof err)) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_tokenizer_vocab_size(t), 512);
    assert_int_equal(fy_tokenizer_bos(t), 1);
    assert_int_equal(fy_tokenizer_eos(t), 2);
    assert_string_equal(fy_tokenizer_piece(t, 1), "<s>");
    assert_string_equal(fy_tokenizer_piece(t, 2), "</s>");
    assert_true(fy_tokenizer_is_special(t, 1));
    assert_true(fy_tokenizer_is_special(t, 2));
    assert_false(fy_tokenizer_is_special(t, 300));

    json_error_t je;
    json_t *j = json_load_file(ref, 0, &je);
    assert_non_null(j);
    json_t *cases = json_object_get(j, ref_key);
    assert_true(json_is_array(cases) && json_array_size(cases) >= 2);
    for (size_t c = 0; c < json_array_size(cases); c++) {
        json_t *cs = json_array_get(cases, c);
        const char *prompt = json_string_value(json_object_get(cs, "prompt"));
        json_t *want = json_object_get(cs, "prompt_ids_with_bos");
        assert_non_null(prompt);
        int32_t *ids = NULL, *hids = NULL;
        size_t n = encode(t, prompt, strlen(prompt), 1, 0, &ids);
        size_t hn = encode(h, prompt, strlen(prompt), 1, 0, &hids);
        assert_int_equal(n, json_array_size(want));
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(ids[i], json_integer_value(json_array_get(want, i)));
        }
        assert_int_equal(hn, n);
        assert_memory_equal(hids, ids, n * sizeof *ids);
        /* Back to the prompt, BOS dropped as special. */
        char *out;
        size_t len;
        assert_int_equal(fy_tokenizer_decode(t, ids, n, 1, &out, &len), 0);
        assert_string_equal(out, prompt);
        free(out);
        /* And the greedy continuation decodes to llama.cpp's text. */
        json_t *g = json_object_get(cs, "greedy_ids");
        const char *text = json_string_value(json_object_get(cs, "text"));
        if (json_is_array(g) && text) {
            size_t ng = json_array_size(g);
            int32_t *gi = calloc(ng, sizeof *gi);
            for (size_t i = 0; i < ng; i++) {
                gi[i] = (int32_t)json_integer_value(json_array_get(g, i));
            }
            expect_stream(t, ids, n, gi, ng, text);
            free(gi);
        }
        free(ids);
        free(hids);
    }
    json_decref(j);
    fy_tokenizer_free(h);
    fy_tokenizer_free(t);
}

static void test_stories260k_gguf(void **state)
{
    (void)state;
    reference_prompts("models/stories260K/stories260K.gguf", "stories260K-F32.gguf");
}

static void test_tiny256_gguf(void **state)
{
    (void)state;
    reference_prompts("gguf/tiny256-F32.gguf", "tiny256-F32.gguf");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_spm),          cmocka_unit_test(test_small_flags),
        cmocka_unit_test(test_small_gpt2),         cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_refuse_long_token),  cmocka_unit_test(test_stories260k_gguf),
        cmocka_unit_test(test_tiny256_gguf),       cmocka_unit_test(test_stories260k_as_gguf),
        cmocka_unit_test(test_llama2_as_gguf),     cmocka_unit_test(test_gpt2_as_gguf),
        cmocka_unit_test(test_gpt2_pre_llama_bpe), cmocka_unit_test(test_gpt2_pre_qwen2),
        cmocka_unit_test(test_gpt2_pre_default),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
