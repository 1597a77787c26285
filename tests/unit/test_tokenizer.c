/* Unit tests for the tokenizer (runner/engine/tokenizer.h).
 *
 * Always run: small tokenizer.json files built here (a SentencePiece-style
 * one with byte fallback, a Llama 3 style byte-level one), the loader's
 * refusals of malformed files, UTF-8 handling and the streaming detokenizer.
 * With FERRY_TESTDATA: the 46 reference vectors for Llama 2 and GPT-2, round
 * trips of those strings and of seeded random UTF-8, streaming equal to full
 * decoding, and stories260K's prompt and completion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"
#include "support/tok_support.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ---------------------------------------------------------------- */

static fy_tokenizer *load_or_fail(const char *path)
{
    char err[512] = "";
    fy_tokenizer *t = NULL;
    int rc = fy_tokenizer_load(path, &t, err, sizeof err);
    if (rc) {
        fail_msg("load %s: %s (%s)", path, err, fy_strerror(rc));
    }
    return t;
}

static void expect_ids(const fy_tokenizer *t, const char *s, const int32_t *want, size_t nwant)
{
    int32_t *ids = NULL;
    size_t n = encode(t, s, strlen(s), 0, 0, &ids);
    int ok = n == nwant && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok) {
        char got[512] = "";
        for (size_t i = 0; i < n && strlen(got) < 480; i++) {
            snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        }
        free(ids);
        fail_msg("encode \"%s\": got%s", s, got);
    }
    free(ids);
}

/* ---- small tokenizers built here ------------------------------------------- */

/* SentencePiece style (Llama 2 layout): <unk> <s> </s>, 256 byte tokens,
 * a few pieces and merges, Prepend/Replace normalizer, Strip decoder. */
static json_t *spm_json(int metaspace)
{
    json_t *vocab = json_object();
    const char *specials[] = {"<unk>", "<s>", "</s>"};
    int id = 0;
    for (int i = 0; i < 3; i++) {
        json_object_set_new(vocab, specials[i], json_integer(id++));
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        json_object_set_new(vocab, name, json_integer(id++));
    }
    /* 259.. */
    const char *pieces[] = {"\xe2\x96\x81",
                            "a",
                            "b",
                            "c",
                            "\xe2\x96\x81"
                            "a",
                            "ab",
                            "\xe2\x96\x81"
                            "ab",
                            "\xe2\x96\x81\xe2\x96\x81",
                            "bc",
                            "\xc3\xa9"};
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++) {
        json_object_set_new(vocab, pieces[i], json_integer(id++));
    }
    json_t *merges = json_pack("[s,[s,s],s,s,s]", "\xe2\x96\x81 a", "a", "b",
                               "\xe2\x96\x81"
                               "a b",
                               "\xe2\x96\x81 \xe2\x96\x81", "b c");
    json_t *added = json_array();
    for (int i = 0; i < 3; i++) {
        json_array_append_new(added, json_pack("{s:i,s:s,s:b,s:b,s:b,s:b,s:b}", "id", i, "content",
                                               specials[i], "single_word", 0, "lstrip", 0, "rstrip",
                                               0, "normalized", 0, "special", 1));
    }
    json_t *norm =
        metaspace ? json_null()
                  : json_pack("{s:s,s:[{s:s,s:s},{s:s,s:{s:s},s:s}]}", "type", "Sequence",
                              "normalizers", "type", "Prepend", "prepend", "\xe2\x96\x81", "type",
                              "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81");
    json_t *pre = metaspace ? json_pack("{s:s,s:s,s:s,s:b}", "type", "Metaspace", "replacement",
                                        "\xe2\x96\x81", "prepend_scheme", "first", "split", 0)
                            : json_null();
    json_t *dec = json_pack("{s:s,s:[{s:s,s:{s:s},s:s},{s:s},{s:s},{s:s,s:s,s:i,s:i}]}", "type",
                            "Sequence", "decoders", "type", "Replace", "pattern", "String",
                            "\xe2\x96\x81", "content", " ", "type", "ByteFallback", "type", "Fuse",
                            "type", "Strip", "content", " ", "start", 1, "stop", 0);
    json_t *post = json_pack("{s:s,s:[{s:{s:s,s:i}},{s:{s:s,s:i}}],s:{s:{s:s,s:[i],s:[s]}}}",
                             "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>",
                             "type_id", 0, "Sequence", "id", "A", "type_id", 0, "special_tokens",
                             "<s>", "id", "<s>", "ids", 1, "tokens", "<s>");
    json_t *model = json_pack("{s:s,s:o,s:o,s:b,s:b,s:s}", "type", "BPE", "vocab", vocab, "merges",
                              merges, "byte_fallback", 1, "fuse_unk", 1, "unk_token", "<unk>");
    return json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "version", "1.0", "added_tokens", added,
                     "normalizer", norm, "pre_tokenizer", pre, "post_processor", post, "decoder",
                     dec, "model", model);
}

/* The tokenizer of spm_json(METASPACE), loaded. */
static fy_tokenizer *load_spm(int metaspace)
{
    json_t *j = spm_json(metaspace);
    fy_tokenizer *t = load_json(j);
    json_decref(j);
    return t;
}

static void test_spm_small(void **state)
{
    (void)state;
    for (int metaspace = 0; metaspace < 2; metaspace++) {
        fy_tokenizer *t = load_spm(metaspace);
        assert_int_equal(fy_tokenizer_vocab_size(t), 269);
        assert_int_equal(fy_tokenizer_bos(t), 1);
        assert_int_equal(fy_tokenizer_eos(t), 2); /* the </s> convention: no config here */
        assert_true(fy_tokenizer_is_special(t, 1));
        assert_false(fy_tokenizer_is_special(t, 259));
        assert_int_equal(fy_tokenizer_token_id(t, "ab"), 264);
        assert_string_equal(fy_tokenizer_piece(t, 3), "<0x00>");
        assert_null(fy_tokenizer_piece(t, 269));

        /* "▁ab" merges through "▁a" + "b"; "c" stays; a leading space gives "▁▁". */
        expect_ids(t, "ab", (int32_t[]){265}, 1);
        expect_ids(t, "abc", (int32_t[]){265, 262}, 2);
        expect_ids(t, " ab", (int32_t[]){259, 265}, 2);
        expect_ids(t, "  a", (int32_t[]){266, 263}, 2);
        expect_ids(t, "bc", (int32_t[]){259, 267}, 2);
        /* é is a piece; ê falls back to its bytes C3 AA. */
        expect_ids(t, "\xc3\xa9\xc3\xaa", (int32_t[]){259, 268, 3 + 0xc3, 3 + 0xaa}, 4);
        expect_ids(t, "", NULL, 0);

        int32_t *ids = NULL;
        size_t n = encode(t, "ab", 2, 1, 0, &ids);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 1);
        free(ids);
        /* Special text is text unless parse_special. */
        n = encode(t, "a</s>", 5, 0, 1, &ids);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 263);
        assert_int_equal(ids[1], 2);
        free(ids);
        n = encode(t, "a</s>", 5, 0, 0, &ids);
        assert_true(n > 3);
        free(ids);

        round_trip(t, "ab c", strlen("ab c"));
        round_trip(t, " leading space", strlen(" leading space"));
        round_trip(t, "emoji \xf0\x9f\xa6\x99 and \xc3\xa9",
                   strlen("emoji \xf0\x9f\xa6\x99 and \xc3\xa9"));
        round_trips(t, 0x9e3779b97f4a7c15ull, 300, 64);
        fy_tokenizer_free(t);
    }
}

/* The emoji U+1F999 as four byte-fallback tokens, streamed: nothing until the
 * fourth, then the whole character; the decoder's Strip drops the space the
 * first "▁" stands for, in both paths. */
static void test_detok_split_emoji(void **state)
{
    (void)state;
    fy_tokenizer *t = load_spm(0);
    const int32_t ids[] = {259, 3 + 0xf0, 3 + 0x9f, 3 + 0xa6, 3 + 0x99, 260};
    fy_detok *d = fy_detok_new(t, 0);
    const char *chunk;
    size_t len;
    assert_int_equal(fy_detok_push(d, ids[0], &chunk, &len), 0);
    assert_int_equal(len, 0); /* " " stripped at the start */
    for (int i = 1; i < 4; i++) {
        assert_int_equal(fy_detok_push(d, ids[i], &chunk, &len), 0);
        assert_int_equal(len, 0);
    }
    assert_int_equal(fy_detok_push(d, ids[4], &chunk, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(chunk, "\xf0\x9f\xa6\x99", 4);
    assert_int_equal(fy_detok_push(d, ids[5], &chunk, &len), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(chunk, "a", 1);
    assert_int_equal(fy_detok_finish(d, &chunk, &len), 0);
    assert_int_equal(len, 0);
    fy_detok_free(d);

    /* A cut-off character at the end becomes U+FFFD, once, in both paths. */
    char why[600];
    const int32_t cut[] = {260, 3 + 0xf0, 3 + 0x9f};
    assert_true(check_decode(t, cut, 3, "a\xef\xbf\xbd", 4, why, sizeof why));
    /* A stray continuation byte and a bad lead each become U+FFFD. */
    const int32_t bad[] = {3 + 0x80, 260, 3 + 0xff, 3 + 0xe2, 260};
    assert_true(check_decode(t, bad, 5,
                             "\xef\xbf\xbd"
                             "a\xef\xbf\xbd\xef\xbf\xbd"
                             "a",
                             11, why, sizeof why));
    /* skip_special drops <s>; out-of-range ids are ignored like HF does. */
    const int32_t sp[] = {1, 259, 260, 99999, -5};
    char *out;
    assert_int_equal(fy_tokenizer_decode(t, sp, 5, 1, &out, &len), 0);
    assert_string_equal(out, "a");
    free(out);
    assert_int_equal(fy_tokenizer_decode(t, sp, 5, 0, &out, &len), 0);
    assert_string_equal(out, "<s> a");
    free(out);
    fy_tokenizer_free(t);
}

/* Llama 3 / Qwen2 style: Split(regex, Isolated) + ByteLevel(use_regex false),
 * ByteLevel decoder, ignore_merges. */
static void test_bytelevel_small(void **state)
{
    (void)state;
    fy_tokenizer *tmp = NULL;
    json_t *vocab = json_object();
    /* The 256 byte characters, in GPT-2's order, get ids 0..255. */
    tmp = load_spm(0);
    for (int b = 0; b < 256; b++) {
        char s[4] = {0};
        memcpy(s, tmp->bl_enc[b], tmp->bl_len[b]);
        json_object_set_new(vocab, s, json_integer(b));
    }
    fy_tokenizer_free(tmp);
    json_object_set_new(vocab, "he", json_integer(256));
    json_object_set_new(vocab, "ll", json_integer(257));
    json_object_set_new(vocab, "hell", json_integer(258));
    json_object_set_new(vocab, "\xc4\xa0w", json_integer(259)); /* "Ġw" */
    json_object_set_new(vocab, "world", json_integer(260));     /* reachable only whole */
    json_t *merges = json_pack("[s,s,s,s]", "h e", "l l", "he ll", "\xc4\xa0 w");
    const char *pat = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    json_t *j = json_pack(
        "{s:[{s:i,s:s,s:b}],s:n,s:{s:s,s:[{s:s,s:{s:s},s:s,s:b},{s:s,s:b,s:b,s:b}]},"
        "s:{s:s},s:{s:s,s:o,s:o,s:b}}",
        "added_tokens", "id", 261, "content", "<|eot|>", "special", 1, "normalizer",
        "pre_tokenizer", "type", "Sequence", "pretokenizers", "type", "Split", "pattern", "Regex",
        pat, "behavior", "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
        "trim_offsets", 1, "use_regex", 0, "decoder", "type", "ByteLevel", "model", "type", "BPE",
        "vocab", vocab, "merges", merges, "ignore_merges", 1);
    assert_non_null(j);
    fy_tokenizer *t = load_json(j);
    json_decref(j);
    assert_int_equal(fy_tokenizer_vocab_size(t), 262);
    expect_ids(t, "hell", (int32_t[]){258}, 1);
    expect_ids(t, "hello world", (int32_t[]){258, 'o', 259, 'o', 'r', 'l', 'd'}, 7);
    expect_ids(t, "world", (int32_t[]){260}, 1); /* ignore_merges: whole word in vocab */
    int32_t *ids = NULL;
    size_t n = encode(t, "hi<|eot|>", 9, 0, 1, &ids);
    assert_int_equal(n, 3);
    assert_int_equal(ids[2], 261);
    free(ids);
    assert_int_equal(fy_tokenizer_eos(t), -1); /* no </s>-like special, no config */
    round_trip(t, "Hello, WORLD! 123456 \n\n  x", strlen("Hello, WORLD! 123456 \n\n  x"));
    round_trips(t, 12345, 300, 64);
    fy_tokenizer_free(t);
}

/* Split's five behaviors (and invert), seen through a merge that can only
 * happen inside one piece: "e-" and "-e" are tokens. */
static void test_split_behaviors(void **state)
{
    (void)state;
    static const struct {
        const char *behavior;
        int invert;
        int32_t want[3];
        size_t n;
    } cases[] = {
        {"Removed", 0, {0, 0}, 2},
        {"Isolated", 0, {0, 1, 0}, 3},
        {"MergedWithPrevious", 0, {2, 0}, 2},
        {"MergedWithNext", 0, {0, 3}, 2},
        {"Contiguous", 0, {0, 1, 0}, 3},
        {"Removed", 1, {1}, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *j =
            json_pack("{s:{s:s,s:{s:s},s:s,s:b},s:{s:s,s:{s:i,s:i,s:i,s:i},s:[s,s]}}",
                      "pre_tokenizer", "type", "Split", "pattern", "String", "-", "behavior",
                      cases[i].behavior, "invert", cases[i].invert, "model", "type", "BPE", "vocab",
                      "e", 0, "-", 1, "e-", 2, "-e", 3, "merges", "e -", "- e");
        assert_non_null(j);
        fy_tokenizer *t = load_json(j);
        json_decref(j);
        expect_ids(t, "e-e", cases[i].want, cases[i].n);
        fy_tokenizer_free(t);
    }
}

/* ---- refusals ------------------------------------------------------------ */

static void test_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"", "line"},
        {"[]", "expected a JSON object"},
        {"{}", "model"},
        {"{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", "model.type"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":\"0\"},\"merges\":[]}}", "model.vocab"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":0},\"merges\":[]}}", "given twice"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"a\":1},\"merges\":[]}}", "line"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
         "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a c\"]}}",
         "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"ab\"]}}",
         "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}",
         "model.merges[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":{}}}", "model.merges"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"unk_token\":\"z\"}}",
         "model.unk_token"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[],\"byte_fallback\":1}}",
         "model.byte_fallback"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":{}}",
         "added_tokens"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}]}",
         "added_tokens[0].id"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"added_tokens\":[{\"id\":1,\"content\":\"x\"},{\"id\":1,\"content\":\"y\"}]}",
         "added_tokens[1].id"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"added_tokens\":[{\"id\":1,\"content\":\"\"}]}",
         "added_tokens[0].content"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},"
         "\"behavior\":\"Isolated\"}}",
         "pre_tokenizer: bad regex"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},"
         "\"behavior\":\"Sideways\"}}",
         "pre_tokenizer.behavior"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"pre_tokenizer\":{\"type\":\"Whitespace\"}}",
         "pre_tokenizer.type"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"ab\"}}",
         "pre_tokenizer.replacement"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Precompiled\"}]}}",
         "normalizer.normalizers[0].type"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"decoder\":{\"type\":\"WordPiece\"}}",
         "decoder.type"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
         "{\"id\":\"<s>\"}},{\"Sequence\":{\"id\":\"A\"}}],\"special_tokens\":{\"<s>\":"
         "{\"ids\":[7]}}}}",
         "post_processor.single[0]"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[]}}",
         "post_processor.single"},
        {"{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
         "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Sequence\","
         "\"normalizers\":[{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Sequence\","
         "\"normalizers\":[{\"type\":\"Sequence\",\"normalizers\":[]}]}]}]}]}}",
         "nested too deep"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        fy_tokenizer *t = (fy_tokenizer *)1;
        int rc = fy__tok_load_mem(cases[i].json, strlen(cases[i].json), NULL, &t, err, sizeof err);
        if (rc == 0 || t != NULL || !strstr(err, cases[i].want)) {
            fail_msg("case %zu: rc %d, err \"%s\", want \"%s\"", i, rc, err, cases[i].want);
        }
    }
    /* A missing file names itself. */
    char err[512] = "";
    fy_tokenizer *t = NULL;
    assert_int_equal(fy_tokenizer_load("/nonexistent/tok.json", &t, err, sizeof err), FY_ENOENT);
    assert_non_null(strstr(err, "/nonexistent/tok.json"));
}

static void test_invalid_input(void **state)
{
    (void)state;
    fy_tokenizer *t = load_spm(0);
    static const char *bad[] = {"\xff", "a\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        assert_int_equal(fy_tokenizer_encode(t, bad[i], strlen(bad[i]), NULL, &ids, &n), FY_EINVAL);
        assert_null(ids);
        assert_int_equal(n, 0);
    }
    fy_tokenizer_free(t);
}

/* ---- the reference vectors ------------------------------------------------- */

/* Runs NAME.inp / NAME.out against T; returns how many inputs matched. Every
 * input is also round-tripped and streamed. */
static int run_vectors(const fy_tokenizer *t, const char *dir, const char *name, int *total)
{
    tok_vectors v;
    tok_vectors_load(&v, dir, name);
    int pass = 0;
    for (size_t i = 0; i < v.n; i++) {
        int32_t *ids = NULL;
        size_t n = encode(t, v.s[i], v.len[i], 0, 0, &ids);
        if (n == v.nwant[i] && (n == 0 || memcmp(ids, v.want[i], n * sizeof *ids) == 0)) {
            pass++;
        } else {
            char got[256], want[256];
            print_message("%s vector %zu \"%.*s\": got%s, want%s\n", name, i,
                          (int)(v.len[i] > 40 ? 40 : v.len[i]), v.s[i],
                          ids_str(ids, n, got, sizeof got),
                          ids_str(v.want[i], v.nwant[i], want, sizeof want));
        }
        char why[600];
        if (!check_decode(t, ids, n, v.s[i], v.len[i], why, sizeof why)) {
            fail_msg("%s vector %zu round trip: %s", name, i, why);
        }
        free(ids);
    }
    *total = (int)v.n;
    tok_vectors_free(&v);
    return pass;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void vectors_for(const char *tok_rel, const char *name, uint64_t seed)
{
    NEED_TESTDATA(path, tok_rel);
    NEED_TESTDATA(dir, "tokenizers/vectors");
    double t0 = now_s();
    fy_tokenizer *t = load_or_fail(path);
    print_message("%s: loaded in %.3f s\n", tok_rel, now_s() - t0);
    int total = 0;
    int pass = run_vectors(t, dir, name, &total);
    print_message("%s: %d/%d vectors match\n", name, pass, total);
    assert_int_equal(total, 46);
    assert_int_equal(pass, total);
    round_trips(t, seed, 400, 96);
    fy_tokenizer_free(t);
}

static void test_llama2_vectors(void **state)
{
    (void)state;
    vectors_for("tokenizers/llama2/tokenizer.json", "llama-spm", 0x1234567ull);
}

static void test_gpt2_vectors(void **state)
{
    (void)state;
    vectors_for("tokenizers/gpt2/tokenizer.json", "gpt-2", 0x7654321ull);
}

/* A directory load picks up tokenizer_config.json; special text is parsed
 * only when asked. */
static void test_llama2_specials(void **state)
{
    (void)state;
    NEED_TESTDATA(dir, "tokenizers/llama2");
    fy_tokenizer *t = load_or_fail(dir);
    assert_int_equal(fy_tokenizer_vocab_size(t), 32000);
    assert_int_equal(fy_tokenizer_bos(t), 1);
    assert_int_equal(fy_tokenizer_eos(t), 2);
    assert_string_equal(fy_tokenizer_piece(t, 31353), ""); /* the copy's known defect */
    int32_t *ids = NULL;
    size_t n = encode(t, "<s>Hello</s>", 12, 1, 1, &ids);
    /* BOS, <s>, "Hello" (no "▁": not at the start of the text), </s> */
    assert_int_equal(n, 4);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 1);
    assert_int_equal(ids[3], 2);
    free(ids);
    n = encode(t, "<s>", 3, 0, 0, &ids);
    assert_true(n > 1);
    free(ids);
    /* The empty-text token decodes to nothing, without harm. */
    const int32_t odd[] = {15043, 31353, 3186};
    char *out;
    size_t len;
    assert_int_equal(fy_tokenizer_decode(t, odd, 3, 0, &out, &len), 0);
    assert_string_equal(out, "Hello world");
    free(out);
    fy_tokenizer_free(t);
}

static void test_gpt2_specials(void **state)
{
    (void)state;
    NEED_TESTDATA(dir, "tokenizers/gpt2");
    fy_tokenizer *t = load_or_fail(dir);
    assert_int_equal(fy_tokenizer_bos(t), 50256);
    assert_int_equal(fy_tokenizer_eos(t), 50256);
    int32_t *ids = NULL;
    size_t n = encode(t, "Hi<|endoftext|>", 15, 1, 1, &ids);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 50256);
    free(ids);
    fy_tokenizer_free(t);
}

/* stories260K: the prompt with BOS, and the reference completion's text. */
static void test_stories260k(void **state)
{
    (void)state;
    NEED_TESTDATA(path, "models/stories260K/tokenizer.json");
    NEED_TESTDATA(exp, "models/stories260K/expected_greedy.json");
    fy_tokenizer *t = load_or_fail(path);
    json_error_t je;
    json_t *j = json_load_file(exp, 0, &je);
    assert_non_null(j);
    const char *prompt = json_string_value(json_object_get(j, "prompt"));
    json_t *want = json_object_get(j, "prompt_ids_with_bos");
    json_t *comp = json_object_get(j, "completion_ids");
    const char *text = json_string_value(json_object_get(j, "completion_text"));
    assert_non_null(prompt);
    assert_non_null(text);
    assert_true(json_is_array(want) && json_is_array(comp));

    int32_t *ids = NULL;
    size_t n = encode(t, prompt, strlen(prompt), 1, 0, &ids);
    assert_int_equal(n, json_array_size(want));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ids[i], json_integer_value(json_array_get(want, i)));
    }
    free(ids);

    size_t nc = json_array_size(comp);
    int32_t *c = calloc(nc, sizeof *c);
    for (size_t i = 0; i < nc; i++) {
        c[i] = (int32_t)json_integer_value(json_array_get(comp, i));
    }
    char *out;
    size_t len;
    assert_int_equal(fy_tokenizer_decode(t, c, nc, 1, &out, &len), 0);
    assert_string_equal(out, text);
    free(out);
    /* Streamed, the pieces add up to the same text. */
    expect_stream(t, NULL, 0, c, nc, text);
    free(c);

    round_trips(t, 99, 200, 64);
    json_decref(j);
    fy_tokenizer_free(t);
}

/* ---- completions continue the prompt's text (fy_detok_prime) ----------------- */

/* A[0..AN) == B[0..BN), either may be NULL when empty. */
static int bytes_eq(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Streams G after P through a detokenizer primed with P; the text must be
 * decode(P + G) minus decode(P) with the chunks of a detokenizer fed all of
 * P (the slow path prime shortcuts) as decode(P)'s part: full == head +
 * completion, and the primed completion equals the fed one. Fails naming
 * LABEL. Returns the completion (malloc'd) for more checks. */
static char *check_continuation(const fy_tokenizer *t, const int32_t *p, size_t np,
                                const int32_t *g, size_t ng, const char *label, size_t *clen)
{
    int32_t *all = malloc((np + ng + 1) * sizeof *all);
    assert_non_null(all);
    memcpy(all, p, np * sizeof *p);
    memcpy(all + np, g, ng * sizeof *g);
    char *full = NULL;
    size_t flen = 0;
    assert_int_equal(fy_tokenizer_decode(t, all, np + ng, 1, &full, &flen), 0);
    fy_buf head, fed, primed;
    fy_buf_init(&head, 1 << 22);
    fy_buf_init(&fed, 1 << 22);
    fy_buf_init(&primed, 1 << 22);
    fy_detok *a = fy_detok_new(t, 1), *b = fy_detok_new(t, 1);
    assert_true(a && b);
    const char *chunk;
    size_t len;
    for (size_t i = 0; i < np; i++) {
        assert_int_equal(fy_detok_push(a, p[i], &chunk, &len), 0);
        assert_int_equal(fy_buf_append(&head, chunk, len), 0);
    }
    assert_int_equal(fy_detok_prime(b, p, np), 0);
    for (size_t i = 0; i <= ng; i++) {
        int ra = i < ng ? fy_detok_push(a, g[i], &chunk, &len) : fy_detok_finish(a, &chunk, &len);
        assert_int_equal(ra, 0);
        assert_true(fy_utf8_valid(chunk, len));
        assert_int_equal(fy_buf_append(&fed, chunk, len), 0);
        int rb = i < ng ? fy_detok_push(b, g[i], &chunk, &len) : fy_detok_finish(b, &chunk, &len);
        assert_int_equal(rb, 0);
        assert_true(fy_utf8_valid(chunk, len));
        assert_int_equal(fy_buf_append(&primed, chunk, len), 0);
    }
    if (!bytes_eq(primed.data, primed.len, fed.data, fed.len) || head.len + fed.len != flen ||
        !bytes_eq(full, head.len, head.data, head.len) ||
        !bytes_eq(full + head.len, fed.len, fed.data, fed.len)) {
        fail_msg("%s: decode(all) \"%.*s\", prompt part \"%.*s\", fed \"%.*s\", primed \"%.*s\"",
                 label, (int)flen, full, (int)head.len, head.data ? head.data : "", (int)fed.len,
                 fed.data ? fed.data : "", (int)primed.len, primed.data ? primed.data : "");
    }
    fy_detok_free(a);
    fy_detok_free(b);
    fy_buf_free(&head);
    fy_buf_free(&fed);
    free(full);
    free(all);
    assert_non_null(fy_buf_cstr(&primed));
    return fy_buf_steal(&primed, clen);
}

/* Text prompts P as the API encodes them (with BOS) and continuations as
 * text and as random ids (byte tokens, specials and all): prompt + completion
 * is the decode of all the ids, and the completion keeps a first token's
 * leading space. */
static void continuation_cases(const fy_tokenizer *t, const char *label, uint64_t seed)
{
    static const char *const prompts[] = {
        "Once upon a",
        "Once upon a ",
        "Once upon a ti",
        "Hello, w\xc3\xb6rld \xc3\xa9",
        "\xe6\x97\xa5\xe6\x9c\xac",
        "emoji \xf0\x9f\x91\x8b",
        "",
        " ",
        "  two spaces",
        "line\n",
        "tab\t",
        "x",
    };
    static const char *const conts[] = {
        " time", "time", ", there", "me", "\xc3\xa9t\xc3\xa9", " \xf0\x9f\xa6\x99!", "\n\nThe end",
    };
    int vocab = fy_tokenizer_vocab_size(t);
    char name[128];
    for (size_t i = 0; i < sizeof prompts / sizeof prompts[0]; i++) {
        int32_t *p = NULL;
        size_t np = encode(t, prompts[i], strlen(prompts[i]), 1, 0, &p);
        for (size_t k = 0; k < sizeof conts / sizeof conts[0]; k++) {
            /* The continuation's ids as the model would write them after the
             * prompt: the tail of encode(prompt + cont) past the prompt's
             * ids, when the prompt's ids are a prefix of it. */
            char both[256];
            snprintf(both, sizeof both, "%s%s", prompts[i], conts[k]);
            int32_t *ab = NULL;
            size_t nab = encode(t, both, strlen(both), 1, 0, &ab);
            if (nab > np && memcmp(ab, p, np * sizeof *p) == 0) {
                size_t clen;
                snprintf(name, sizeof name, "%s: \"%s\" + \"%s\"", label, prompts[i], conts[k]);
                char *c = check_continuation(t, p, np, ab + np, nab - np, name, &clen);
                /* decode(P) == P here, so the completion is the rest of BOTH. */
                size_t pl = strlen(prompts[i]);
                if (clen != strlen(both) - pl || memcmp(c, both + pl, clen) != 0) {
                    fail_msg("%s: completion \"%.*s\"", name, (int)clen, c);
                }
                free(c);
            }
            free(ab);
        }
        for (int r = 0; r < 40; r++) {
            int32_t rnd[24];
            size_t ng = 1 + rng_next(&seed) % 24;
            for (size_t k = 0; k < ng; k++) {
                rnd[k] = (int32_t)(rng_next(&seed) % (uint64_t)vocab);
            }
            size_t clen;
            snprintf(name, sizeof name, "%s: \"%s\" + random ids #%d", label, prompts[i], r);
            free(check_continuation(t, p, np, rnd, ng, name, &clen));
        }
        free(p);
    }
    /* Prompts of random ids: a prompt may end inside a character, or be
     * nothing but specials, spaces and byte tokens. */
    for (int r = 0; r < 300; r++) {
        int32_t p[40], g[12];
        size_t np = 1 + rng_next(&seed) % 40, ng = 1 + rng_next(&seed) % 12;
        for (size_t k = 0; k < np; k++) {
            p[k] = (int32_t)(rng_next(&seed) % (uint64_t)vocab);
        }
        for (size_t k = 0; k < ng; k++) {
            g[k] = (int32_t)(rng_next(&seed) % (uint64_t)vocab);
        }
        size_t clen;
        snprintf(name, sizeof name, "%s: random prompt #%d", label, r);
        free(check_continuation(t, p, np, g, ng, name, &clen));
    }
}

static void test_prime_small(void **state)
{
    (void)state;
    for (int metaspace = 0; metaspace < 2; metaspace++) {
        fy_tokenizer *t = load_spm(metaspace);
        continuation_cases(t, metaspace ? "spm (Metaspace)" : "spm", 0x51u + (uint64_t)metaspace);
        /* "▁a" after a prompt reads " a": the space is the completion's. */
        const int32_t p[] = {1, 263}, g[] = {263};
        size_t clen;
        char *c = check_continuation(t, p, 2, g, 1, "spm ' a'", &clen);
        assert_string_equal(c, " a");
        free(c);
        /* A prompt that ends inside a character: the completion gets the
         * whole character once its last byte comes (not U+FFFD twice). */
        const int32_t p2[] = {260, 3 + 0xf0, 3 + 0x9f}, g2[] = {3 + 0xa6, 3 + 0x99, 260};
        c = check_continuation(t, p2, 3, g2, 3, "spm split emoji", &clen);
        assert_string_equal(c, "\xf0\x9f\xa6\x99"
                               "a");
        free(c);
        /* Every split of 2-, 3- and 4-byte characters as byte tokens, after
         * text and after another character: the prompt holds 1 to 3 bytes. */
        static const char *const chars[] = {"\xc3\xaa", "\xe6\x97\xa5", "\xf0\x9f\xa6\x99"};
        for (int lead = 0; lead < 2; lead++) {
            for (size_t ci = 0; ci < 3; ci++) {
                size_t cl = strlen(chars[ci]);
                for (size_t k = 1; k < cl; k++) {
                    int32_t pp[8], gg[8];
                    size_t np = 0, ng = 0;
                    pp[np++] = lead ? 268 : 260; /* "é" (a piece) or "▁a" */
                    for (size_t b = 0; b < k; b++) {
                        pp[np++] = 3 + (unsigned char)chars[ci][b];
                    }
                    for (size_t b = k; b < cl; b++) {
                        gg[ng++] = 3 + (unsigned char)chars[ci][b];
                    }
                    gg[ng++] = 260;
                    char name[64];
                    snprintf(name, sizeof name, "spm char %zu split at %zu", ci, k);
                    c = check_continuation(t, pp, np, gg, ng, name, &clen);
                    assert_int_equal(clen, cl + 1);
                    assert_memory_equal(c, chars[ci], cl);
                    free(c);
                }
            }
        }
        fy_tokenizer_free(t);
    }
}

static void prime_file(const char *rel, uint64_t seed)
{
    NEED_TESTDATA(path, rel);
    fy_tokenizer *t = load_or_fail(path);
    continuation_cases(t, rel, seed);
    fy_tokenizer_free(t);
}

static void test_prime_stories260k(void **state)
{
    (void)state;
    prime_file("models/stories260K/tokenizer.json", 11);
    /* The case: "Once upon a" + ▁time ... reads " time, there". */
    NEED_TESTDATA(path, "models/stories260K/tokenizer.json");
    fy_tokenizer *t = load_or_fail(path);
    int32_t *p = NULL, *ab = NULL;
    size_t np = encode(t, "Once upon a", 11, 1, 0, &p);
    size_t nab = encode(t, "Once upon a time, there", 23, 1, 0, &ab);
    assert_true(nab > np && memcmp(ab, p, np * sizeof *p) == 0);
    size_t clen;
    char *c = check_continuation(t, p, np, ab + np, nab - np, "stories", &clen);
    assert_string_equal(c, " time, there");
    free(c);
    free(p);
    free(ab);
    fy_tokenizer_free(t);
}

static void test_prime_llama2(void **state)
{
    (void)state;
    prime_file("tokenizers/llama2/tokenizer.json", 12);
}

static void test_prime_gpt2(void **state)
{
    (void)state;
    prime_file("tokenizers/gpt2/tokenizer.json", 13);
}

/* One tokenizer, many threads' worth of state: encode of a large text (prints
 * throughput, asserts only the round trip). */
static void test_large_text(void **state)
{
    (void)state;
    NEED_TESTDATA(dir, "tokenizers/vectors");
    NEED_TESTDATA(l2, "tokenizers/llama2/tokenizer.json");
    NEED_TESTDATA(g2, "tokenizers/gpt2/tokenizer.json");
    size_t ilen;
    char p[4096];
    if (snprintf(p, sizeof p, "%s/gpt-2.inp", dir) >= (int)sizeof p) {
        fail_msg("path too long");
    }
    char *inp = read_all(p, &ilen);
    size_t want = 256 * 1024, n = 0;
    char *big = malloc(want + ilen);
    while (n < want) {
        memcpy(big + n, inp, ilen);
        n += ilen;
    }
    const char *paths[] = {l2, g2};
    for (int k = 0; k < 2; k++) {
        fy_tokenizer *t = load_or_fail(paths[k]);
        int32_t *ids = NULL;
        double t0 = now_s();
        size_t nids = encode(t, big, n, 0, 0, &ids);
        double dt = now_s() - t0;
        print_message("%s: %zu bytes -> %zu ids in %.3f s (%.1f MB/s)\n", paths[k], n, nids, dt,
                      n / 1e6 / (dt > 0 ? dt : 1e-9));
        char why[600];
        if (!check_decode(t, ids, nids, big, n, why, sizeof why)) {
            fail_msg("large round trip: %.200s", why);
        }
        free(ids);
        fy_tokenizer_free(t);
    }
    free(big);
    free(inp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_small),       cmocka_unit_test(test_detok_split_emoji),
        cmocka_unit_test(test_bytelevel_small), cmocka_unit_test(test_split_behaviors),
        cmocka_unit_test(test_malformed),       cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_llama2_vectors),  cmocka_unit_test(test_gpt2_vectors),
        cmocka_unit_test(test_llama2_specials), cmocka_unit_test(test_gpt2_specials),
        cmocka_unit_test(test_stories260k),     cmocka_unit_test(test_large_text),
        cmocka_unit_test(test_prime_small),     cmocka_unit_test(test_prime_stories260k),
        cmocka_unit_test(test_prime_llama2),    cmocka_unit_test(test_prime_gpt2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
