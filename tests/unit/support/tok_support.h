/* tok_support.h: what the tokenizer tests share: finding the shared test
 * data (skipping a test without it) and encoding with a failure message.
 * Header-only; include after <cmocka.h>. */
#ifndef FY_TEST_TOK_SUPPORT_H
#define FY_TEST_TOK_SUPPORT_H

#include "common/buf.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* $FERRY_TESTDATA/REL in BUF when that file exists, else NULL. */
static inline const char *testdata(const char *rel, char *buf, size_t len)
{
    const char *root = getenv("FERRY_TESTDATA");
    if (!root || !*root) {
        return NULL;
    }
    snprintf(buf, len, "%s/%s", root, rel);
    return fy_file_exists(buf) ? buf : NULL;
}

/* Declares VAR, the path of test data REL, or skips the test. */
#define NEED_TESTDATA(var, rel)                                                              \
    char var##_buf[4096];                                                                    \
    const char *var = testdata(rel, var##_buf, sizeof var##_buf);                            \
    if (!var) {                                                                              \
        print_message("skipped: %s not found (set FERRY_TESTDATA to run this test)\n", rel); \
        skip();                                                                              \
    }

/* Encodes S[0..N) into *IDS (the caller frees it); fails the test on error. */
static inline size_t encode(const fy_tokenizer *t, const char *s, size_t n, int add_special,
                            int parse_special, int32_t **ids)
{
    fy_encode_options o = {add_special, parse_special};
    size_t k = 0;
    int rc = fy_tokenizer_encode(t, s, n, &o, ids, &k);
    if (rc) {
        fail_msg("encode \"%.*s\": %s", (int)n, s, fy_strerror(rc));
    }
    return k;
}

/* Streams IDS[0..N) through a detokenizer primed with PRIME[0..NP) (skipping
 * specials): every chunk is valid UTF-8 and together they read TEXT. */
static inline void expect_stream(const fy_tokenizer *t, const int32_t *prime, size_t np,
                                 const int32_t *ids, size_t n, const char *text)
{
    fy_detok *d = fy_detok_new(t, 1);
    assert_non_null(d);
    assert_int_equal(fy_detok_prime(d, prime, np), 0);
    fy_buf acc;
    fy_buf_init(&acc, 1 << 20);
    const char *chunk;
    size_t len;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(fy_detok_push(d, ids[i], &chunk, &len), 0);
        assert_true(fy_utf8_valid(chunk, len));
        assert_int_equal(fy_buf_append(&acc, chunk, len), 0);
    }
    assert_int_equal(fy_detok_finish(d, &chunk, &len), 0);
    assert_int_equal(fy_buf_append(&acc, chunk, len), 0);
    assert_int_equal(acc.len, strlen(text));
    assert_memory_equal(acc.data, text, acc.len);
    fy_buf_free(&acc);
    fy_detok_free(d);
}

/* A whole file, at most 64 MiB; fails the test when unreadable. */
static inline char *read_all(const char *path, size_t *len)
{
    char *data = NULL;
    int rc = fy_file_read(path, 64 << 20, &data, len);
    if (rc) {
        fail_msg("read %s: %s", path, fy_strerror(rc));
    }
    return data;
}

/* The reference vectors DIR/NAME.inp (inputs separated by
 * "\n__ggml_vocab_test__\n") and NAME.out (one line of ids per input). */
typedef struct {
    size_t n;
    const char **s; /* [n] inputs, into inp */
    size_t *len;    /* [n] */
    int32_t **want; /* [n] expected ids */
    size_t *nwant;  /* [n] */
    char *inp, *out;
} tok_vectors;

static inline void tok_vectors_load(tok_vectors *v, const char *dir, const char *name)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    char p[4096];
    size_t ilen, olen;
    memset(v, 0, sizeof *v);
    if (snprintf(p, sizeof p, "%s/%s.inp", dir, name) >= (int)sizeof p) {
        fail_msg("path too long");
    }
    v->inp = read_all(p, &ilen);
    if (snprintf(p, sizeof p, "%s/%s.out", dir, name) >= (int)sizeof p) {
        fail_msg("path too long");
    }
    v->out = read_all(p, &olen);
    size_t cap = 0;
    char *s = v->inp, *line = v->out;
    for (char *end; (end = strstr(s, sep)) != NULL; s = end + sizeof sep - 1) {
        char *nl = strchr(line, '\n');
        if (!nl) {
            fail_msg("%s.out: fewer lines than inputs", name);
        }
        *nl = 0;
        if (v->n == cap) {
            cap = cap ? cap * 2 : 64;
            v->s = realloc(v->s, cap * sizeof *v->s);
            v->len = realloc(v->len, cap * sizeof *v->len);
            v->want = realloc(v->want, cap * sizeof *v->want);
            v->nwant = realloc(v->nwant, cap * sizeof *v->nwant);
            assert_true(v->s && v->len && v->want && v->nwant);
        }
        v->s[v->n] = s;
        v->len[v->n] = (size_t)(end - s);
        v->want[v->n] = malloc((strlen(line) / 2 + 1) * sizeof **v->want);
        assert_non_null(v->want[v->n]);
        size_t k = 0;
        for (char *q = line, *e2;; q = e2) {
            long id = strtol(q, &e2, 10);
            if (e2 == q) {
                break;
            }
            v->want[v->n][k++] = (int32_t)id;
        }
        v->nwant[v->n++] = k;
        line = nl + 1;
    }
}

static inline void tok_vectors_free(tok_vectors *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->want[i]);
    }
    free(v->s);
    free(v->len);
    free(v->want);
    free(v->nwant);
    free(v->inp);
    free(v->out);
    memset(v, 0, sizeof *v);
}

/* "IDS[0..N)" as " 1 2 3" in BUF (truncated to fit). */
static inline const char *ids_str(const int32_t *ids, size_t n, char *buf, size_t len)
{
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < n && k + 16 < len; i++) {
        k += (size_t)snprintf(buf + k, len - k, " %d", ids[i]);
    }
    return buf;
}

/* decode(ids) must equal S[0..N), and so must the streamed chunks, each of
 * them valid UTF-8. Returns 1 when all holds. */
static inline int check_decode(const fy_tokenizer *t, const int32_t *ids, size_t nids,
                               const char *s, size_t n, char *why, size_t whylen)
{
    char *out = NULL;
    size_t len = 0;
    int rc = fy_tokenizer_decode(t, ids, nids, 0, &out, &len);
    if (rc || len != n || memcmp(out, s, n) != 0 || out[len] != 0) {
        snprintf(why, whylen, "decode gave \"%.*s\" (rc %d)", (int)(out ? len : 0), out ? out : "",
                 rc);
        free(out);
        return 0;
    }
    free(out);
    fy_detok *d = fy_detok_new(t, 0);
    char *acc = malloc(n * 3 + 16);
    size_t alen = 0;
    int ok = d && acc;
    for (size_t i = 0; i <= nids && ok; i++) {
        const char *chunk;
        size_t cl;
        rc = i < nids ? fy_detok_push(d, ids[i], &chunk, &cl) : fy_detok_finish(d, &chunk, &cl);
        if (rc || !fy_utf8_valid(chunk, cl) || alen + cl > n * 3 + 16) {
            snprintf(why, whylen, "detok chunk %zu invalid (rc %d)", i, rc);
            ok = 0;
            break;
        }
        memcpy(acc + alen, chunk, cl);
        alen += cl;
    }
    if (ok && (alen != n || memcmp(acc, s, n) != 0)) {
        snprintf(why, whylen, "detok gave \"%.*s\"", (int)alen, acc);
        ok = 0;
    }
    free(acc);
    fy_detok_free(d);
    return ok;
}

static inline void round_trip(const fy_tokenizer *t, const char *s, size_t n)
{
    int32_t *ids = NULL;
    size_t k = encode(t, s, n, 0, 0, &ids);
    char why[600];
    int ok = check_decode(t, ids, k, s, n, why, sizeof why);
    free(ids);
    if (!ok) {
        fail_msg("round trip of \"%.*s\" (%zu bytes): %s", (int)n, s, n, why);
    }
}

/* Appends the UTF-8 encoding of CP. */
static inline size_t put_cp(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static inline uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A random valid UTF-8 string of up to MAXCP characters, mixing ASCII words
 * and white space, Latin, Cyrillic, CJK, combining marks and emoji. U+2581
 * is left out: SentencePiece tokenizers decode it as a space (as HF does). */
static inline size_t random_text(uint64_t *rng, char *o, size_t maxcp)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7e},       {'a', 'z'},       {0x09, 0x0d},        {0x20, 0x20},
        {0xa0, 0x24f},      {0x400, 0x4ff},   {0x300, 0x36f},      {0x4e00, 0x9fff},
        {0x1f300, 0x1faff}, {0x2000, 0x206f}, {0x10000, 0x10ffff}, {0xe000, 0xfffd},
        {0x0, 0x1f},
    };
    size_t n = rng_next(rng) % (maxcp + 1), len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = rng_next(rng) % (sizeof ranges / sizeof ranges[0]);
        uint32_t cp = ranges[r][0] + (uint32_t)(rng_next(rng) % (ranges[r][1] - ranges[r][0] + 1));
        if ((cp >= 0xd800 && cp <= 0xdfff) || cp == 0x2581) {
            cp = 'x';
        }
        len += put_cp(o + len, cp);
    }
    return len;
}

/* The tokenizer J (a tokenizer.json document) describes; fails the test when refused. */
static inline fy_tokenizer *load_json(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    assert_non_null(s);
    fy_tokenizer *t = NULL;
    char err[512] = "";
    int rc = fy__tok_load_mem(s, strlen(s), NULL, &t, err, sizeof err);
    free(s);
    if (rc) {
        fail_msg("load: %s", err);
    }
    return t;
}

/* COUNT random texts of up to MAXCP (at most 128) characters from SEED, each
 * round-tripped through T. */
static inline void round_trips(const fy_tokenizer *t, uint64_t seed, int count, size_t maxcp)
{
    char buf[128 * 4 + 1];
    assert_true(maxcp <= 128);
    for (int i = 0; i < count; i++) {
        size_t len = random_text(&seed, buf, maxcp);
        round_trip(t, buf, len);
    }
}

#endif
