/* ferry-runner quantize of a Hugging Face directory (gguf_quantize.h) and
 * the tokenizer's GGUF export (tokenizer.h's fy_tokenizer_to_gguf):
 *   - stories260K's safetensors quantized to F16 give, through the engine,
 *     exactly expected_greedy.json's 196 ids: q and k were permuted into
 *     GGUF's RoPE order;
 *   - every tensor of that file is, within F16 rounding, the tensor of the
 *     same name, shape and row order in llama.cpp's stories260K.gguf, and it
 *     has no other tensors; Q8_0 gets the types of the GGUF path;
 *   - the file's metadata says what llama.cpp writes for it, and its
 *     tokenizer encodes the test vectors as tokenizer.json does;
 *   - the Llama 2 (SentencePiece) and GPT-2 (byte-level) tokenizer.json files
 *     survive fy_tokenizer_to_gguf -> fy_tokenizer_from_gguf encoding every
 *     test vector alike.
 * Each case skips with a message when the shared test data is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/engine.h"
#include "runner/engine/gguf.h"
#include "runner/engine/gguf_quantize.h"
#include "runner/engine/gguf_write.h"
#include "runner/engine/tokenizer.h"
#include "support/model_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_td[256], g_dir[256];

static int setup(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    snprintf(g_td, sizeof g_td, "%s", td ? td : "");
    snprintf(g_dir, sizeof g_dir, "/tmp/fy_quantize_hf.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *td_path(const char *rel, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", g_td, rel);
    if (!g_td[0] || access(out, R_OK) != 0) {
        print_message("skipping: %s is absent (FERRY_TESTDATA=%s)\n", out, g_td);
        skip();
    }
    return out;
}

static fy_gguf *open_or_fail(const char *path)
{
    fy_gguf *g;
    char err[512];
    if (fy_gguf_open(path, &g, err, sizeof err)) {
        fail_msg("%s", err);
    }
    return g;
}

/* stories260K quantized under MIX into g_dir; the output's path. */
static const char *stories_as(const char *mix, char *out, size_t n)
{
    char dir[1024], err[1024];
    td_path("models/stories260K/model.safetensors", dir, sizeof dir);
    td_path("models/stories260K", dir, sizeof dir);
    snprintf(out, n, "%s/stories-%s.gguf", g_dir, mix);
    if (access(out, R_OK) == 0) {
        return out;
    }
    fy_qmix m;
    assert_int_equal(fy_qmix_parse(mix, &m), 0);
    if (fy_quantize_gguf(dir, out, m, 2, NULL, NULL, err, sizeof err)) {
        fail_msg("quantize %s: %s", mix, err);
    }
    return out;
}

/* --- The weights ---------------------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    fy_engine *e;
    int32_t ids[256];
    int n, done;
} rig;

static void on_event(const fy_engine_event *ev, void *arg)
{
    rig *r = arg;
    for (int t = 0; t < ev->n_tokens && r->n < 256; t++) {
        r->ids[r->n++] = ev->tokens[t].id;
    }
    r->done = ev->finish != FY_FINISH_NONE;
}

static void test_f16_greedy(void **state)
{
    (void)state;
    char path[512], dir[1024];
    stories_as("f16", path, sizeof path);
    fx_greedy g;
    assert_int_equal(fx_greedy_load(td_path("models/stories260K", dir, sizeof dir), &g), 0);
    static rig r;
    memset(&r, 0, sizeof r);
    assert_int_equal(uv_loop_init(&r.loop), 0);
    fy_engine_options o = {.model_dir = path,
                           .threads = 2,
                           .kv_bytes = 64u << 20,
                           .max_seqs = 2,
                           .max_step_tokens = 256,
                           .loop = &r.loop};
    char err[1024] = "";
    if (fy_engine_create(&o, &r.e, err, sizeof err) != 0) {
        fail_msg("fy_engine_create(%s): %s", path, err);
    }
    assert_string_equal(fy_engine_model_name(r.e), "stories260K"); /* general.name */
    fy_sampling s;
    fy_sampling_defaults(&s);
    s.temperature = 0;
    s.max_tokens = g.n_ids;
    fy_engine_request req = {.prompt = g.prompt,
                             .n_prompt = g.n_prompt,
                             .n = 1,
                             .sampling = s,
                             .cb = on_event,
                             .arg = &r};
    uint64_t id;
    if (fy_engine_submit(r.e, &req, &id, err, sizeof err) != 0) {
        fail_msg("submit: %s", err);
    }
    while (!r.done) {
        uv_run(&r.loop, UV_RUN_ONCE);
    }
    assert_int_equal(r.n, 196);
    assert_memory_equal(r.ids, g.ids, 196 * sizeof g.ids[0]);
    fy_engine_destroy(r.e);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&r.loop), 0);
}

static float *dequant_all(const fy_gguf_tensor *t)
{
    float *x = malloc((size_t)t->n_elems * sizeof *x);
    assert_non_null(x);
    for (uint64_t r = 0; r < t->n_rows; r++) {
        assert_int_equal(fy_q_dequant(t->type, (const uint8_t *)t->data + r * t->row_bytes,
                                      x + r * t->dims[0], (size_t)t->dims[0]),
                         0);
    }
    return x;
}

static void test_f16_tensors_match_llama_cpp(void **state)
{
    (void)state;
    char path[512], ref[1024];
    stories_as("f16", path, sizeof path);
    fy_gguf *g = open_or_fail(path),
            *l = open_or_fail(td_path("models/stories260K/stories260K.gguf", ref, sizeof ref));
    /* llama.cpp's llama2.c converter wrote the tied head out as
     * output.weight too; convert_hf_to_gguf.py, like ferry, leaves it out
     * when config.json ties it. */
    assert_null(fy_gguf_tensor_find(g, "output.weight"));
    assert_non_null(fy_gguf_tensor_find(l, "output.weight"));
    assert_int_equal(g->n_tensors + 1, l->n_tensors);
    for (uint64_t i = 0; i < l->n_tensors; i++) {
        const fy_gguf_tensor *b = &l->t[i], *a = fy_gguf_tensor_find(g, b->name);
        if (strcmp(b->name, "output.weight") == 0) {
            a = fy_gguf_tensor_find(g, "token_embd.weight");
        }
        if (!a) {
            fail_msg("%s: no tensor '%s'", path, b->name);
        }
        assert_int_equal(a->n_dims, b->n_dims);
        for (int d = 0; d < FY_GGUF_MAX_DIMS; d++) {
            assert_int_equal(a->dims[d], b->dims[d]);
        }
        assert_int_equal(a->type, a->n_dims > 1 ? FY_DT_F16 : FY_DT_F32);
        float *x = dequant_all(a), *y = dequant_all(b);
        for (uint64_t k = 0; k < a->n_elems; k++) {
            /* F16 keeps 11 significant bits; tiny values are subnormal. */
            if (fabsf(x[k] - y[k]) > fabsf(y[k]) * 1e-3f + 1e-6f) {
                fail_msg("%s[%llu]: %g, llama.cpp's %g", b->name, (unsigned long long)k, x[k],
                         y[k]);
            }
        }
        free(x);
        free(y);
    }
    fy_gguf_free(g);
    fy_gguf_free(l);
}

static void test_q8_0_types(void **state)
{
    (void)state;
    char path[512];
    stories_as("q8_0", path, sizeof path);
    fy_gguf *g = open_or_fail(path);
    char err[256];
    uint32_t ft = 0;
    assert_int_equal(fy_gguf_get_u32(g, "general.file_type", &ft, err, sizeof err), 0);
    assert_int_equal(ft, 7);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fy_gguf_tensor *t = &g->t[i];
        assert_int_equal(
            t->type, fy_qmix_tensor_type(FY_QMIX_Q8_0, t->name, t->n_dims, t->dims[0], 5, 1, NULL));
    }
    fy_gguf_free(g);
}

/* --- Metadata and tokenizer --------------------------------------------------------------- */

static void expect_str(const fy_gguf *g, const char *key, const char *want)
{
    fy_gguf_str s;
    char err[256];
    if (fy_gguf_get_str(g, key, &s, err, sizeof err)) {
        fail_msg("%s", err);
    }
    if (s.len != strlen(want) || memcmp(s.p, want, s.len) != 0) {
        fail_msg("%s: \"%.*s\", not \"%s\"", key, (int)s.len, s.p, want);
    }
}

static void expect_u32(const fy_gguf *g, const char *key, uint32_t want)
{
    uint32_t v = 0;
    char err[256];
    if (fy_gguf_get_u32(g, key, &v, err, sizeof err)) {
        fail_msg("%s", err);
    }
    if (v != want) {
        fail_msg("%s: %u, not %u", key, v, want);
    }
}

/* Test strings of VEC (the vocab-test format): *N of them, malloc'd. */
static char **vectors(const char *vec, size_t *n)
{
    char rel[256], path[1024];
    snprintf(rel, sizeof rel, "tokenizers/vectors/%s.inp", vec);
    FILE *f = fopen(td_path(rel, path, sizeof path), "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    char **out = calloc(128, sizeof *out);
    const char *sep = "\n__ggml_vocab_test__\n", *p = buf;
    *n = 0;
    while (*n < 128 && *p) {
        const char *e = strstr(p, sep);
        size_t l = e ? (size_t)(e - p) : strlen(p);
        out[(*n)++] = strndup(p, l);
        p = e ? e + strlen(sep) : p + l;
    }
    return out;
}

/* A and B encode every string of VEC (and a few more) alike. */
static void same_encoding(const fy_tokenizer *a, const fy_tokenizer *b, const char *vec)
{
    size_t n;
    char **s = vectors(vec, &n);
    assert_true(n >= 40);
    /* No added tokens inside a text: there a Metaspace tokenizer.json
     * (prepend_scheme "first") and a GGUF (a prefix per segment, as llama.cpp
     * does) differ by design (tokenizer_gguf.c). */
    static const char *more[] = {"Once upon a time", "<s>", "  two  spaces\n",
                                 "emoji \xf0\x9f\x98\x80 and \xe4\xb8\xad\xe6\x96\x87"};
    for (size_t i = 0; i < n + 4; i++) {
        const char *t = i < n ? s[i] : more[i - n];
        for (int sp = 0; sp < 2; sp++) {
            fy_encode_options o = {.add_special = sp, .parse_special = sp};
            int32_t *x = NULL, *y = NULL;
            size_t nx = 0, ny = 0;
            assert_int_equal(fy_tokenizer_encode(a, t, strlen(t), &o, &x, &nx), 0);
            assert_int_equal(fy_tokenizer_encode(b, t, strlen(t), &o, &y, &ny), 0);
            if (nx != ny || memcmp(x, y, nx * sizeof *x) != 0) {
                fail_msg("%s: \"%s\" (specials %d): %zu ids from tokenizer.json, %zu from GGUF",
                         vec, t, sp, nx, ny);
            }
            free(x);
            free(y);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(s[i]);
    }
    free(s);
}

static void test_stories_metadata_and_tokenizer(void **state)
{
    (void)state;
    char path[512], dir[1024], err[1024];
    stories_as("f16", path, sizeof path);
    fy_gguf *g = open_or_fail(path);
    expect_str(g, "general.architecture", "llama");
    expect_str(g, "general.name", "stories260K");
    expect_str(g, "tokenizer.ggml.model", "llama");
    expect_u32(g, "general.file_type", 1);
    expect_u32(g, "general.quantization_version", 2);
    static const struct {
        const char *key;
        uint32_t v;
    } u[] = {{"llama.context_length", 512},
             {"llama.embedding_length", 64},
             {"llama.block_count", 5},
             {"llama.feed_forward_length", 172},
             {"llama.rope.dimension_count", 8},
             {"llama.attention.head_count", 8},
             {"llama.attention.head_count_kv", 4},
             {"llama.vocab_size", 512},
             {"tokenizer.ggml.bos_token_id", 1},
             {"tokenizer.ggml.eos_token_id", 2}};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        expect_u32(g, u[i].key, u[i].v);
    }
    fy_tokenizer *a = NULL, *b = NULL;
    if (fy_tokenizer_load(td_path("models/stories260K", dir, sizeof dir), &a, err, sizeof err) ||
        fy_tokenizer_from_gguf(g, &b, err, sizeof err)) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_tokenizer_vocab_size(b), 512);
    same_encoding(a, b, "llama-spm");
    fy_tokenizer_free(a);
    fy_tokenizer_free(b);
    fy_gguf_free(g);
}

/* TOKJSON through a GGUF file of metadata only, compared on VEC. */
static void roundtrip(const char *tokjson, const char *vec, const char *model)
{
    char src[1024], path[512], err[1024];
    td_path(tokjson, src, sizeof src);
    fy_tokenizer *a = NULL, *b = NULL;
    if (fy_tokenizer_load(src, &a, err, sizeof err)) {
        fail_msg("%s", err);
    }
    fy_gguf_writer *w = NULL;
    assert_int_equal(fy_gguf_w_new(0, &w), 0);
    if (fy_tokenizer_to_gguf(a, 0, w, err, sizeof err)) {
        fail_msg("%s", err);
    }
    snprintf(path, sizeof path, "%s/tok-%s.gguf", g_dir, vec);
    if (fy_gguf_w_begin(w, path, err, sizeof err) || fy_gguf_w_commit(w, err, sizeof err)) {
        fail_msg("%s", err);
    }
    fy_gguf_w_free(w);
    fy_gguf *g = open_or_fail(path);
    expect_str(g, "tokenizer.ggml.model", model);
    if (fy_tokenizer_from_gguf(g, &b, err, sizeof err)) {
        fail_msg("%s", err);
    }
    assert_int_equal(fy_tokenizer_vocab_size(a), fy_tokenizer_vocab_size(b));
    assert_int_equal(fy_tokenizer_bos(a), fy_tokenizer_bos(b));
    assert_int_equal(fy_tokenizer_eos(a), fy_tokenizer_eos(b));
    same_encoding(a, b, vec);
    fy_tokenizer_free(a);
    fy_tokenizer_free(b);
    fy_gguf_free(g);
}

static void test_llama2_tokenizer_roundtrip(void **state)
{
    (void)state;
    roundtrip("tokenizers/llama2/tokenizer.json", "llama-spm", "llama");
}

static void test_gpt2_tokenizer_roundtrip(void **state)
{
    (void)state;
    roundtrip("tokenizers/gpt2/tokenizer.json", "gpt-2", "gpt2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_greedy),
        cmocka_unit_test(test_f16_tensors_match_llama_cpp),
        cmocka_unit_test(test_q8_0_types),
        cmocka_unit_test(test_stories_metadata_and_tokenizer),
        cmocka_unit_test(test_llama2_tokenizer_roundtrip),
        cmocka_unit_test(test_gpt2_tokenizer_roundtrip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
