/* Quantization mixes (runner/engine/gguf_quantize.h) on the files llama.cpp
 * wrote: ferry quantizes tiny256-F32.gguf under each mix and the result has,
 * tensor for tensor, the types llama.cpp's llama-quantize chose for the same
 * model (../shared/testdata/gguf/tiny256-<MIX>.gguf), the same file type,
 * the input's metadata, and weights close to the F32 ones. stories260K,
 * whose 172-wide FFN rows llama.cpp cannot quantize, gets wider types for
 * exactly the tensors that do not fit.
 *
 * And of a Hugging Face directory, and the tokenizer's GGUF export (tokenizer.h's fy_tokenizer_to_gguf):
 *   - stories260K's safetensors quantized to F16 give, through the engine,
 *     exactly expected_greedy.json's 196 ids: q and k were permuted into
 *     GGUF's RoPE order;
 *   - every tensor of that file is, within F16 rounding, the tensor of the
 *     same name, shape and row order in llama.cpp's stories260K.gguf, and it
 *     has each of them but the tied head llama.cpp also wrote; Q8_0 gets the types of the GGUF path;
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
#include "runner/engine/gguf.h"
#include "runner/engine/engine.h"
#include "runner/engine/gguf_quantize.h"
#include "runner/engine/gguf_write.h"
#include "runner/engine/tok_internal.h"
#include "runner/engine/tokenizer.h"
#include "support/model_fixture.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_td[512], g_dir[256];

static int setup(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    snprintf(g_td, sizeof g_td, "%s", td ? td : "");
    snprintf(g_dir, sizeof g_dir, "/tmp/fy_gguf_quantize.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
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

static void need(const char *path)
{
    if (access(path, R_OK) != 0) {
        print_message("skipping: %s is absent (FERRY_TESTDATA=%s)\n", path, g_td);
        skip();
    }
}

typedef struct {
    size_t n;
    char names[64][80];
} fallbacks;

static void collect(void *data, const fy_quantize_step *s)
{
    fallbacks *f = data;
    if (s->name && s->fallback && f->n < 64) {
        snprintf(f->names[f->n++], 80, "%s=%s", s->name, fy_dtype_name(s->to));
    }
}

/* Relative RMS difference between the dequantized tensors A and B. */
static double tensor_rel_rms(const fy_gguf_tensor *a, const fy_gguf_tensor *b)
{
    size_t n = (size_t)a->n_elems;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (uint64_t r = 0; r < a->n_rows; r++) {
        size_t c = (size_t)a->dims[0];
        assert_int_equal(
            fy_q_dequant(a->type, (const uint8_t *)a->data + r * a->row_bytes, x + r * c, c), 0);
        assert_int_equal(
            fy_q_dequant(b->type, (const uint8_t *)b->data + r * b->row_bytes, y + r * c, c), 0);
    }
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    free(x);
    free(y);
    return s > 0 ? sqrt(e / s) : 0;
}

static void test_mixes_match_llama_cpp(void **state)
{
    (void)state;
    char in[700], ref[700], out[400], err[1024];
    snprintf(in, sizeof in, "%s/gguf/tiny256-F32.gguf", g_td);
    need(in);
    static const struct {
        fy_qmix mix;
        const char *ref; /* llama.cpp's file of the mix */
        double max_err;  /* relative RMS error of any matrix (random normal weights) */
    } cases[] = {
        {FY_QMIX_Q8_0, "Q8_0", 0.01},     {FY_QMIX_Q4_0, "Q4_0", 0.13},
        {FY_QMIX_Q4_K_M, "Q4_K_M", 0.13}, {FY_QMIX_Q5_K_M, "Q5_K_M", 0.065},
        {FY_QMIX_Q6_K, "Q6_K", 0.035},    {FY_QMIX_F16, NULL, 0.001},
    };
    fy_gguf *src = open_or_fail(in);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(out, sizeof out, "%s/tiny256-%s.gguf", g_dir, fy_qmix_name(cases[k].mix));
        fallbacks fb = {0};
        if (fy_quantize_gguf(in, out, cases[k].mix, k % 2 ? 3 : 1, collect, &fb, err, sizeof err)) {
            fail_msg("quantize %s: %s", fy_qmix_name(cases[k].mix), err);
        }
        assert_int_equal(fb.n, 0);
        fy_gguf *q = open_or_fail(out);
        assert_int_equal(q->n_tensors, src->n_tensors);
        /* Every key of the input, with its value (file type and quantization version aside). */
        for (uint64_t i = 0; i < src->n_kv; i++) {
            const char *key = src->kv[i].key;
            const fy_gguf_kv *kv = fy_gguf_find(q, key);
            if (strcmp(key, "general.file_type") == 0) {
                continue;
            }
            if (!kv || kv->v.type != src->kv[i].v.type) {
                fail_msg("%s: key %s missing or retyped", out, key);
            }
            if (kv->v.type == FY_GGUF_STR) {
                assert_int_equal(kv->v.s.len, src->kv[i].v.s.len);
                assert_memory_equal(kv->v.s.p, src->kv[i].v.s.p, (size_t)kv->v.s.len);
            } else if (kv->v.type == FY_GGUF_ARR) {
                assert_int_equal(kv->v.a.n, src->kv[i].v.a.n);
                fy_gguf_val a, b;
                uint64_t last = kv->v.a.n - 1;
                assert_int_equal(fy_gguf_arr_get(&kv->v.a, last, &a), 0);
                assert_int_equal(fy_gguf_arr_get(&src->kv[i].v.a, last, &b), 0);
                if (a.type == FY_GGUF_STR) {
                    assert_int_equal(a.s.len, b.s.len);
                    assert_memory_equal(a.s.p, b.s.p, (size_t)a.s.len);
                }
            }
        }
        uint32_t ft = 0, qv = 0;
        assert_int_equal(fy_gguf_get_u32(q, "general.quantization_version", &qv, err, sizeof err),
                         0);
        assert_int_equal(qv, 2);
        assert_int_equal(fy_gguf_get_u32(q, "general.file_type", &ft, err, sizeof err), 0);
        fy_gguf *r = NULL;
        if (cases[k].ref) {
            snprintf(ref, sizeof ref, "%s/gguf/tiny256-%s.gguf", g_td, cases[k].ref);
            r = open_or_fail(ref);
            uint32_t rft = 0;
            assert_int_equal(fy_gguf_get_u32(r, "general.file_type", &rft, err, sizeof err), 0);
            assert_int_equal(ft, rft);
        }
        double worst = 0;
        for (uint64_t i = 0; i < src->n_tensors; i++) {
            const fy_gguf_tensor *s = &src->t[i], *t = fy_gguf_tensor_find(q, s->name);
            assert_non_null(t);
            assert_int_equal(t->n_dims, s->n_dims);
            assert_memory_equal(t->dims, s->dims, sizeof t->dims);
            if (r) {
                const fy_gguf_tensor *u = fy_gguf_tensor_find(r, s->name);
                assert_non_null(u);
                if (t->type != u->type) {
                    fail_msg("%s: %s is %s, llama.cpp's %s has %s", fy_qmix_name(cases[k].mix),
                             s->name, fy_dtype_name(t->type), cases[k].ref, fy_dtype_name(u->type));
                }
                assert_int_equal(t->n_bytes, u->n_bytes);
            }
            double e = tensor_rel_rms(s, t);
            worst = e > worst ? e : worst;
        }
        print_message("%-6s %s; worst relative rms error %.4f\n", fy_qmix_name(cases[k].mix),
                      r ? "every tensor's type as llama.cpp's" : "no llama.cpp file", worst);
        assert_true(worst <= cases[k].max_err);
        fy_gguf_free(r);
        fy_gguf_free(q);
    }
    fy_gguf_free(src);
}

static void test_stories_fallbacks(void **state)
{
    (void)state;
    char in[700], out[400], err[1024];
    snprintf(in, sizeof in, "%s/models/stories260K/stories260K.gguf", g_td);
    need(in);
    snprintf(out, sizeof out, "%s/stories-q4_k_m.gguf", g_dir);
    fallbacks fb = {0};
    if (fy_quantize_gguf(in, out, FY_QMIX_Q4_K_M, 2, collect, &fb, err, sizeof err)) {
        fail_msg("%s", err);
    }
    /* hidden 64: every matrix's rows are 64 (Q5_0, llama.cpp's Q4_K fallback; Q8_0 for the
     * tied head and the Q6_K layers) but ffn_down's 172, which is F16. */
    fy_gguf *q = open_or_fail(out);
    size_t want = 0;
    for (uint64_t i = 0; i < q->n_tensors; i++) {
        const fy_gguf_tensor *t = &q->t[i];
        if (t->n_dims < 2) {
            assert_int_equal(t->type, FY_DT_F32);
            continue;
        }
        want += strcmp(t->name, "token_embd.weight") != 0; /* Q8_0 by the head's own rule */
        if (strstr(t->name, "ffn_down")) {
            assert_int_equal(t->type, FY_DT_F16);
        } else {
            assert_true(t->type == FY_DT_Q5_0 || t->type == FY_DT_Q8_0);
        }
    }
    assert_int_equal(fb.n, want);
    fy_gguf_free(q);
}

static void test_refusals(void **state)
{
    (void)state;
    char out[400], err[1024] = "";
    snprintf(out, sizeof out, "%s/never.gguf", g_dir);
    assert_int_equal(
        fy_quantize_gguf("/nonexistent.gguf", out, FY_QMIX_Q8_0, 1, NULL, NULL, err, sizeof err),
        FY_ENOENT);
    assert_non_null(strstr(err, "/nonexistent.gguf"));
    assert_int_equal(access(out, F_OK), -1);
    fy_qmix m;
    assert_int_equal(fy_qmix_parse("Q4_K_M", &m), 0);
    assert_int_equal(m, FY_QMIX_Q4_K_M);
    assert_int_equal(fy_qmix_parse("q3_k_m", &m), FY_EINVAL);
    /* The choice itself, on a 32-layer model. */
    int fb;
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.0.attn_v.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K);
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.5.attn_v.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q4_K); /* (5 - 4) % 3 != 2 */
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.6.ffn_down.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K); /* (6 - 4) % 3 == 2 */
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.28.ffn_down.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K); /* the last eighth */
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "token_embd.weight", 2, 4096, 32, 1, &fb),
                     FY_DT_Q6_K); /* tied: the head */
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q4_0, "output.weight", 2, 4096, 32, 0, &fb),
                     FY_DT_Q6_K);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q8_0, "output.weight", 2, 4096, 32, 0, &fb),
                     FY_DT_Q8_0);
    assert_int_equal(fb, 0);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "blk.0.ffn_up.weight", 2, 96, 32, 0, &fb),
                     FY_DT_Q8_0);
    assert_int_equal(fb, 1);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "blk.0.ffn_up.weight", 2, 100, 32, 0, &fb),
                     FY_DT_F16);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "output_norm.weight", 1, 4096, 32, 0, &fb),
                     FY_DT_F32);
}

/* --- A Hugging Face directory (and its tokenizer) ------------------------------------ */

static const char *td_path(const char *rel, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", g_td, rel);
    if (!g_td[0] || access(out, R_OK) != 0) {
        print_message("skipping: %s is absent (FERRY_TESTDATA=%s)\n", out, g_td);
        skip();
    }
    return out;
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
                fail_msg("%s: \"%s\" (specials %d): %zu ids from the source, %zu from the GGUF",
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
    /* ... and as the vocabulary llama.cpp wrote into stories260K.gguf. */
    char ref[1024];
    fy_gguf *l = open_or_fail(td_path("models/stories260K/stories260K.gguf", ref, sizeof ref));
    fy_tokenizer *c = NULL;
    if (fy_tokenizer_from_gguf(l, &c, err, sizeof err)) {
        fail_msg("%s", err);
    }
    same_encoding(c, b, "llama-spm");
    fy_tokenizer_free(c);
    fy_gguf_free(l);
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

/* A random model of each converted architecture, with stories260K's
 * tokenizer beside it, as F16 safetensors: the F16 mix loses nothing, so
 * the GGUF's logits are the directory's up to f32 rounding (the permuted
 * q/k rows sum in another order). A wrong row permutation, bias, RoPE
 * scaling key or rope_freqs factor moves them by far more. */
/* g_dir/hf_WHAT: a random model of SHAPE (CONFIG: extra config.json fields)
 * with stories260K's tokenizer.json; DIR and PATH (g_dir/WHAT.gguf) get
 * the names. */
static void hf_fixture(const char *what, const fx_shape *shape, const char *config, char dir[512],
                       char path[600])
{
    char tok[1024], link[600];
    td_path("models/stories260K/tokenizer.json", tok, sizeof tok);
    snprintf(dir, 512, "%s/hf_%s", g_dir, what);
    snprintf(link, sizeof link, "%s/tokenizer.json", dir);
    snprintf(path, 600, "%s/%s.gguf", g_dir, what);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(fx_write_model(dir, shape, 99), 0);
    if (config) {
        assert_int_equal(fx_write_config(dir, shape, config), 0);
    }
    assert_int_equal(symlink(tok, link), 0);
}

static void check_hf_equiv(const char *what, const fx_shape *shape, const char *config)
{
    char dir[512], path[600], err[1024];
    hf_fixture(what, shape, config, dir, path);
    if (fy_quantize_gguf(dir, path, FY_QMIX_F16, 2, NULL, NULL, err, sizeof err)) {
        fail_msg("%s: %s", what, err);
    }
    fy_model *hf = NULL, *gg = NULL;
    if (fy_model_load(dir, &hf, err, sizeof err) || fy_model_load(path, &gg, err, sizeof err)) {
        fail_msg("%s: %s", what, err);
    }
    assert_string_equal(gg->cfg.arch, shape->qwen ? "qwen2" : "llama");
    assert_int_equal(gg->cfg.head_dim, hf->cfg.head_dim);
    if (hf->cfg.rope_type == FY_ROPE_LLAMA3) {
        assert_non_null(gg->cfg.rope_freq_factors); /* how llama.cpp keeps it */
    } else {
        assert_int_equal(gg->cfg.rope_type, hf->cfg.rope_type);
    }
    assert_int_equal(gg->cfg.tie_embeddings, hf->cfg.tie_embeddings);
    float *la = fx_prompt_logits(hf, 12, err, sizeof err),
          *lb = fx_prompt_logits(gg, 12, err, sizeof err);
    assert_non_null(la);
    assert_non_null(lb);
    double d = fx_max_rel_diff(lb, la, (size_t)12 * (size_t)hf->cfg.vocab_size);
    if (!(d <= 2e-5)) {
        fail_msg("%s: the GGUF's logits differ from the directory's by %g of their range", what, d);
    }
    free(la);
    free(lb);
    fy_model_free(hf);
    fy_model_free(gg);
}

static void test_hf_architectures(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        fx_shape s;
        const char *config;
    } cases[] = {
        /* vocab, hidden, inter, layers, heads, kv_heads, head_dim, qwen, tied, dtype, skip,
         * bad_shape */
        {"llama_gqa_headdim", {512, 32, 48, 2, 4, 2, 12, 0, 0, FY_DT_F16, NULL, NULL}, NULL},
        {"llama_linear",
         {512, 32, 48, 2, 4, 4, 0, 0, 1, FY_DT_F16, NULL, NULL},
         "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}"},
        {"llama3_scaling",
         {512, 64, 48, 2, 2, 1, 0, 0, 0, FY_DT_F16, NULL, NULL},
         "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": "
         "1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}"},
        {"qwen2_bias", {520, 48, 64, 2, 4, 1, 0, 1, 0, FY_DT_F16, NULL, NULL}, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_hf_equiv(cases[i].what, &cases[i].s, cases[i].config);
    }
    /* A tokenizer with more tokens than the model has embeddings. */
    char dir[512], path[600], err[1024] = "";
    fx_shape small = {256, 32, 48, 1, 4, 4, 0, 0, 0, FY_DT_F16, NULL, NULL};
    hf_fixture("small_vocab", &small, NULL, dir, path);
    assert_int_equal(fy_quantize_gguf(dir, path, FY_QMIX_Q8_0, 1, NULL, NULL, err, sizeof err),
                     FY_EINVAL);
    assert_non_null(
        strstr(err, "tokenizer.json has 512 tokens but config.json's vocab_size is 256"));
    assert_int_equal(access(path, F_OK), -1);
}

/* Llama 3's and Qwen2's split patterns before a regex-less ByteLevel, on
 * GPT-2's vocabulary: each is written as the tokenizer.ggml.pre that names
 * it, and reads back encoding the GPT-2 vectors alike. */
static void check_pre(const char *pattern, int ignore_merges, const char *want)
{
    char src[1024], path[600], err[1024];
    json_error_t je;
    json_t *j = json_load_file(td_path("tokenizers/gpt2/tokenizer.json", src, sizeof src), 0, &je);
    assert_non_null(j);
    json_object_set_new(j, "pre_tokenizer",
                        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}",
                                  "type", "Sequence", "pretokenizers", "type", "Split", "pattern",
                                  "Regex", pattern, "behavior", "Isolated", "invert", 0, "type",
                                  "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                                  "use_regex", 0));
    json_object_set_new(json_object_get(j, "model"), "ignore_merges", json_boolean(ignore_merges));
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    fy_tokenizer *a = NULL, *b = NULL;
    if (fy__tok_load_mem(text, strlen(text), NULL, &a, err, sizeof err)) {
        fail_msg("%s", err);
    }
    free(text);
    fy_gguf_writer *w = NULL;
    assert_int_equal(fy_gguf_w_new(0, &w), 0);
    if (fy_tokenizer_to_gguf(a, 0, w, err, sizeof err)) {
        fail_msg("%s", err);
    }
    snprintf(path, sizeof path, "%s/pre-%s.gguf", g_dir, want);
    if (fy_gguf_w_begin(w, path, err, sizeof err) || fy_gguf_w_commit(w, err, sizeof err)) {
        fail_msg("%s", err);
    }
    fy_gguf_w_free(w);
    fy_gguf *g = open_or_fail(path);
    expect_str(g, "tokenizer.ggml.pre", want);
    if (fy_tokenizer_from_gguf(g, &b, err, sizeof err)) {
        fail_msg("%s", err);
    }
    same_encoding(a, b, "gpt-2");
    fy_tokenizer_free(a);
    fy_tokenizer_free(b);
    fy_gguf_free(g);
}

static void test_bpe_pre_names(void **state)
{
    (void)state;
    check_pre("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
              1, "llama-bpe");
    check_pre("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
              "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
              0, "qwen2");
}

/* tokenizer.chat_template from chat_template.jinja beside the weights. */
static void test_chat_template(void **state)
{
    (void)state;
    char st[1024], jinja[1024], dir[512], from[1100], to[700], path[600], err[1024];
    td_path("models/stories260K", st, sizeof st);
    td_path("tokenizers/llama2/chat_template.jinja", jinja, sizeof jinja);
    snprintf(dir, sizeof dir, "%s/hf_chat", g_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    static const char *files[] = {"config.json", "model.safetensors", "tokenizer.json"};
    for (size_t i = 0; i < 4; i++) {
        if (i < 3) {
            snprintf(from, sizeof from, "%s/%s", st, files[i]);
        } else {
            snprintf(from, sizeof from, "%s", jinja);
        }
        snprintf(to, sizeof to, "%s/%s", dir, i < 3 ? files[i] : "chat_template.jinja");
        assert_int_equal(symlink(from, to), 0);
    }
    snprintf(path, sizeof path, "%s/chat.gguf", g_dir);
    if (fy_quantize_gguf(dir, path, FY_QMIX_Q8_0, 2, NULL, NULL, err, sizeof err)) {
        fail_msg("%s", err);
    }
    FILE *f = fopen(jinja, "rb");
    assert_non_null(f);
    static char want[1 << 16];
    size_t n = fread(want, 1, sizeof want - 1, f);
    fclose(f);
    want[n] = 0;
    fy_gguf *g = open_or_fail(path);
    expect_str(g, "tokenizer.chat_template", want);
    expect_str(g, "general.name", "hf_chat");
    fy_gguf_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixes_match_llama_cpp),
        cmocka_unit_test(test_stories_fallbacks),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_f16_greedy),
        cmocka_unit_test(test_f16_tensors_match_llama_cpp),
        cmocka_unit_test(test_q8_0_types),
        cmocka_unit_test(test_hf_architectures),
        cmocka_unit_test(test_stories_metadata_and_tokenizer),
        cmocka_unit_test(test_llama2_tokenizer_roundtrip),
        cmocka_unit_test(test_gpt2_tokenizer_roundtrip),
        cmocka_unit_test(test_bpe_pre_names),
        cmocka_unit_test(test_chat_template),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
