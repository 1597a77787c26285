/* fuzz_tokenizer.c: encode and decode arbitrary input.
 *
 * The tokenizers are loaded once: GPT-2's and Llama 2's from FERRY_TESTDATA
 * when it is set, else two small ones built here (a byte-level one and a
 * SentencePiece-style one with byte fallback). The first input byte picks the
 * tokenizer and the options; the rest is the text.
 *
 * Checked: encode never fails on valid UTF-8 and refuses invalid UTF-8;
 * decode(encode(s)) == s when no special tokens are added (and, for the
 * SentencePiece tokenizers, s holds no U+2581, which decodes as a space, and
 * special text is parsed only where the prefix scheme allows it); streaming
 * the ids gives the same text as decoding them at once, in valid UTF-8
 * chunks. The input bytes are also decoded as raw ids, and a detokenizer
 * primed with a prefix of them (fy_detok_prime) continues exactly as one fed
 * the prefix id by id. */
#include "common/buf.h"
#include "common/err.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static fy_tokenizer *toks[2];
static int spm_prepend_normalizer; /* toks[1] prepends "▁" to every segment */

/* ---- the built-in tokenizers (when FERRY_TESTDATA is absent) ------------- */

static void put_json_str(fy_buf *b, const char *s, size_t n)
{
    fy_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            fy_buf_appendf(b, "\\%c", c);
        } else if (c < 0x20) {
            fy_buf_appendf(b, "\\u%04x", c);
        } else {
            fy_buf_append(b, &s[i], 1);
        }
    }
    fy_buf_append(b, "\"", 1);
}

static size_t gpt2_char(int byte, char out[3])
{
    int extra = 0, cp = -1;
    for (int b = 0; b <= byte; b++) {
        int keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        cp = keep ? b : 256 + extra++;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static fy_tokenizer *build(int spm)
{
    fy_buf b;
    fy_buf_init(&b, 1 << 20);
    fy_buf_append_str(&b, "{\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true},"
                          "{\"id\":1,\"content\":\"</s>\",\"special\":true}],");
    if (spm) {
        fy_buf_append_str(
            &b,
            "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
            "\"prepend\":\"\xe2\x96\x81\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
            "\"content\":\"\xe2\x96\x81\"}]},\"pre_tokenizer\":null,"
            "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
            "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],"
            "\"special_tokens\":{\"<s>\":{\"id\":\"<s>\",\"ids\":[0],\"tokens\":[\"<s>\"]}}},"
            "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
            "{\"String\":\"\xe2\x96\x81\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
            "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,\"stop\":0}]},"
            "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"merges\":[\"\xe2\x96\x81 t\","
            "\"h e\",\"\xe2\x96\x81t he\"],\"vocab\":{\"<s>\":0,\"</s>\":1");
        for (int i = 0; i < 256; i++) {
            fy_buf_appendf(&b, ",\"<0x%02X>\":%d", i, i + 2);
        }
        fy_buf_append_str(&b, ",\"\xe2\x96\x81\":258,\"t\":259,\"h\":260,\"e\":261,"
                              "\"\xe2\x96\x81t\":262,\"he\":263,\"\xe2\x96\x81the\":264}}}");
    } else {
        fy_buf_append_str(
            &b, "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"ByteLevel\","
                "\"add_prefix_space\":false,\"use_regex\":true},\"post_processor\":null,"
                "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"merges\":["
                "\"\xc4\xa0 t\",\"h e\",\"\xc4\xa0t he\"],\"vocab\":{\"<s>\":0,\"</s>\":1");
        for (int i = 0; i < 256; i++) {
            char c[3];
            size_t n = gpt2_char(i, c);
            fy_buf_append(&b, ",", 1);
            put_json_str(&b, c, n);
            fy_buf_appendf(&b, ":%d", i + 2);
        }
        fy_buf_append_str(&b, ",\"\xc4\xa0t\":258,\"he\":259,\"\xc4\xa0the\":260}}}");
    }
    fy_tokenizer *t = NULL;
    char err[256];
    if (fy__tok_load_mem(b.data, b.len, NULL, &t, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: built-in tokenizer: %s\n", err);
        abort();
    }
    fy_buf_free(&b);
    return t;
}

static void init(void)
{
    const char *root = getenv("FERRY_TESTDATA");
    if (root && *root) {
        char p[4096], err[512];
        snprintf(p, sizeof p, "%s/tokenizers/gpt2/tokenizer.json", root);
        if (fy_tokenizer_load(p, &toks[0], err, sizeof err) == 0) {
            snprintf(p, sizeof p, "%s/tokenizers/llama2/tokenizer.json", root);
            if (fy_tokenizer_load(p, &toks[1], err, sizeof err) == 0) {
                return; /* Metaspace "first": only the start of the text gets "▁" */
            }
            fy_tokenizer_free(toks[0]);
            toks[0] = NULL;
        }
    }
    toks[0] = build(0);
    toks[1] = build(1);
    spm_prepend_normalizer = 1;
}

/* ---- checks ---------------------------------------------------------------- */

/* Full decode and streaming agree, every chunk valid UTF-8; returns the text. */
static char *decode_both(const fy_tokenizer *t, const int32_t *ids, size_t n, int skip, size_t *len)
{
    char *full = NULL;
    if (fy_tokenizer_decode(t, ids, n, skip, &full, len) != 0) {
        abort();
    }
    if (!fy_utf8_valid(full, *len) || full[*len] != 0) {
        abort();
    }
    fy_detok *d = fy_detok_new(t, skip);
    if (!d) {
        abort();
    }
    size_t at = 0;
    for (size_t i = 0; i <= n; i++) {
        const char *c;
        size_t cl;
        int rc = i < n ? fy_detok_push(d, ids[i], &c, &cl) : fy_detok_finish(d, &c, &cl);
        if (rc || !fy_utf8_valid(c, cl) || at + cl > *len || memcmp(full + at, c, cl) != 0) {
            abort();
        }
        at += cl;
    }
    if (at != *len) {
        abort();
    }
    fy_detok_free(d);
    return full;
}

/* A detokenizer primed with IDS[0..K) (fy_detok_prime, which reads only the
 * start and the last bytes) goes on chunk for chunk as one fed every id. */
static void prime_matches(const fy_tokenizer *t, const int32_t *ids, size_t n, size_t k, int skip)
{
    fy_detok *fed = fy_detok_new(t, skip), *primed = fy_detok_new(t, skip);
    const char *a, *b;
    size_t al, bl;
    if (!fed || !primed || fy_detok_prime(primed, ids, k) != 0) {
        abort();
    }
    for (size_t i = 0; i < k; i++) {
        if (fy_detok_push(fed, ids[i], &a, &al) != 0) {
            abort();
        }
    }
    for (size_t i = k; i <= n; i++) {
        int ra = i < n ? fy_detok_push(fed, ids[i], &a, &al) : fy_detok_finish(fed, &a, &al);
        int rb = i < n ? fy_detok_push(primed, ids[i], &b, &bl) : fy_detok_finish(primed, &b, &bl);
        if (ra || rb || al != bl || memcmp(a, b, al) != 0) {
            abort();
        }
    }
    fy_detok_free(fed);
    fy_detok_free(primed);
}

static int has_metaspace_char(const char *s, size_t n)
{
    return memmem(s, n, "\xe2\x96\x81", 3) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!toks[0]) {
        init();
    }
    if (size == 0 || size > 64 * 1024) {
        return 0;
    }
    int which = data[0] & 1, add_special = (data[0] >> 1) & 1, parse_special = (data[0] >> 2) & 1;
    const fy_tokenizer *t = toks[which];
    const char *text = (const char *)data + 1;
    size_t n = size - 1;

    fy_encode_options o = {add_special, parse_special};
    int32_t *ids = NULL;
    size_t nids = 0;
    int rc = fy_tokenizer_encode(t, text, n, &o, &ids, &nids);
    int valid = fy_utf8_valid(text, n);
    if (valid != (rc == 0) || (rc && rc != FY_EINVAL)) {
        abort();
    }
    if (rc == 0) {
        size_t len;
        char *out = decode_both(t, ids, nids, 0, &len);
        int expect_same = !add_special;
        if (which == 1) {
            expect_same = expect_same && !has_metaspace_char(text, n) &&
                          !(parse_special && spm_prepend_normalizer);
        }
        if (expect_same && (len != n || memcmp(out, text, n) != 0)) {
            abort();
        }
        free(out);
        free(ids);
    }

    /* The raw bytes as ids, two at a time (some out of range, some special). */
    size_t nraw = n / 2;
    int32_t *raw = malloc((nraw ? nraw : 1) * sizeof *raw);
    if (!raw) {
        return 0;
    }
    for (size_t i = 0; i < nraw; i++) {
        raw[i] = (int32_t)((uint32_t)(uint8_t)text[2 * i] << 8 | (uint8_t)text[2 * i + 1]) - 256;
    }
    size_t len;
    free(decode_both(t, raw, nraw, parse_special, &len));
    prime_matches(t, raw, nraw, nraw ? (size_t)data[size - 1] % (nraw + 1) : 0, parse_special);
    free(raw);
    return 0;
}
