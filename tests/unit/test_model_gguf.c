/* runner/engine/model_gguf: models loaded from GGUF files.
 *   - a tiny random model written as a Hugging Face directory and as the
 *     GGUF llama.cpp's converter would write (q/k rows permuted into
 *     adjacent pairs for llama; rotate-half for qwen2) gives the same logits
 *     through both loaders: llama with GQA and an untied head, qwen2 with
 *     biases and a tied head, F32/F16/BF16, an explicit key_length, linear
 *     RoPE scaling, GGUF v2, alignments 1, 2, 8 and 64 (misaligned F32
 *     tensors are copied);
 *   - qwen3's q/k norms and rope_freqs.weight are read (the forward pass
 *     with them is checked against PyTorch in engine_ref.torch);
 *   - names: general.name, else the file's stem;
 *   - a table of broken files, each refused with its message (the file,
 *     the key or tensor, the reason);
 *   - the shared stories260K.gguf decodes the 196 greedy ids of
 *     expected_greedy.json, with the safetensors copy's logits.
 * The shared test data's cases skip with a message when it is absent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/engine/forward.h"
#include "runner/engine/model_gguf.h"
#include "support/gguf_model.h"
#include "support/model_fixture.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BS 16
#define NP 12 /* prompt tokens whose logits are compared */

static char g_tmp[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/fy_model_gguf.XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void tmp_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%.255s/%.200s", g_tmp, name);
}

/* A fixture model directory NAME with shape S (written once). */
static const char *fixture_dir(const char *name, const fx_shape *s, const char *extra_config)
{
    static char dir[512];
    tmp_path(dir, sizeof dir, name);
    if (access(dir, F_OK) != 0) {
        assert_int_equal(mkdir(dir, 0700), 0);
        assert_int_equal(fx_write_model(dir, s, 1234), 0);
        if (extra_config) {
            assert_int_equal(fx_write_config(dir, s, extra_config), 0);
        }
    }
    return dir;
}

static fy_model *load_ok(const char *path)
{
    fy_model *m = NULL;
    char err[512] = "";
    if (fy_model_load(path, &m, err, sizeof err) != 0) {
        fail_msg("%s: %s", path, err);
    }
    return m;
}

/* Logits of every position of a fixed prompt, [NP x vocab] (caller frees). */
static float *logits_of(const fy_model *m)
{
    char err[512] = "";
    float *l = fx_prompt_logits(m, NP, err, sizeof err);
    if (!l) {
        fail_msg("%s", err);
    }
    return l;
}

/* max |a - b| <= REL x max |b|. */
static void expect_close(const float *a, const float *b, size_t n, double rel, const char *what)
{
    double d = fx_max_rel_diff(a, b, n);
    if (!(d <= rel)) {
        fail_msg("%s: max |diff| is %g of max |b|, more than %g", what, d, rel);
    }
}

/* --- The same model through both loaders ------------------------------------------------ */

typedef struct {
    const char *what;
    fx_shape shape;
    const char *config; /* extra config.json fields */
    gm_opts opts;
} equiv_case;

static void check_equiv(const equiv_case *k)
{
    char name[64], path[512];
    snprintf(name, sizeof name, "hf_%s", k->what);
    const char *dir = fixture_dir(name, &k->shape, k->config);
    fy_model *hf = load_ok(dir);
    snprintf(name, sizeof name, "%s.gguf", k->what);
    tmp_path(path, sizeof path, name);
    assert_int_equal(gm_write(path, hf, &k->opts), 0);
    fy_model *gg = load_ok(path);
    const fy_model_config *a = &hf->cfg, *b = &gg->cfg;
    assert_int_equal(b->vocab_size, a->vocab_size);
    assert_int_equal(b->hidden, a->hidden);
    assert_int_equal(b->intermediate, a->intermediate);
    assert_int_equal(b->n_layers, a->n_layers);
    assert_int_equal(b->n_heads, a->n_heads);
    assert_int_equal(b->n_kv_heads, a->n_kv_heads);
    assert_int_equal(b->head_dim, a->head_dim);
    assert_int_equal(b->max_pos, a->max_pos);
    assert_int_equal(b->rope_type, a->rope_type);
    assert_true(b->rope_factor == a->rope_factor && b->rope_theta == a->rope_theta);
    assert_true(b->rms_eps == a->rms_eps);
    assert_int_equal(b->tie_embeddings, a->tie_embeddings);
    assert_int_equal(b->qkv_bias, a->qkv_bias);
    assert_int_equal(b->bos_id, a->bos_id);
    assert_int_equal(b->n_eos, 1);
    assert_int_equal(b->eos_ids[0], a->eos_ids[0]);
    const char *arch = k->opts.arch ? k->opts.arch : "llama";
    assert_string_equal(b->arch, arch);
    assert_int_equal(b->rope_pairs,
                     strcmp(arch, "llama") == 0 ? FY_ROPE_PAIRS_ADJACENT : FY_ROPE_PAIRS_HALF);
    assert_ptr_equal(gg->lm_head.data == gg->embed.data, hf->lm_head.data == hf->embed.data);
    assert_non_null(gg->gguf);
    assert_false(fy_dtype_is_block(gg->embed.dtype) || fy_dtype_is_block(gg->layers[0].q.dtype));
    float *la = logits_of(hf), *lb = logits_of(gg);
    /* Permuted q/k rows sum the attention scores in another order, and an
     * aligned copy or an F16/BF16 row is the same numbers: f32 rounding
     * only (~1e-6 relative); a wrong pair order or bias moves logits by far
     * more than 1e-2. */
    expect_close(lb, la, (size_t)NP * (size_t)a->vocab_size, 2e-5, k->what);
    free(la);
    free(lb);
    fy_model_free(hf);
    fy_model_free(gg);
}

static void test_equiv(void **state)
{
    (void)state;
    /* SHAPE(vocab, hidden, intermediate, layers, heads, kv_heads, more fields) */
#define SHAPE(v, h, i, l, nh, nkv, ...)                                                 \
    {                                                                                   \
        .vocab = v, .hidden = h, .inter = i, .layers = l, .heads = nh, .kv_heads = nkv, \
        __VA_ARGS__                                                                     \
    }
    const equiv_case cases[] = {
        {"llama_gqa_f32", SHAPE(64, 32, 48, 2, 4, 2, .dt = FY_DT_F32), NULL, {.name = "gqa"}},
        {"llama_f16_v2_align1",
         SHAPE(64, 32, 48, 2, 4, 4, .dt = FY_DT_F16),
         NULL,
         {.wtype = GW_F16, .version = 2, .align = 1}},
        {"llama_f32_align2", SHAPE(48, 32, 40, 1, 2, 1, .dt = FY_DT_F32), NULL, {.align = 2}},
        {"llama_bf16_align64_headdim",
         SHAPE(64, 32, 48, 2, 4, 2, .head_dim = 12, .dt = FY_DT_BF16),
         NULL,
         {.wtype = GW_BF16, .align = 64, .key_length = 1}},
        {"llama_linear_align8",
         SHAPE(64, 32, 48, 2, 4, 2, .dt = FY_DT_F32),
         "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}",
         {.align = 8, .tokens = 1}},
        {"qwen2_bias_tied_f16",
         SHAPE(72, 48, 64, 2, 4, 1, .qwen = 1, .tied = 1, .dt = FY_DT_F16),
         NULL,
         {.arch = "qwen2", .wtype = GW_F16}},
    };
#undef SHAPE
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_equiv(&cases[i]);
    }
}

/* --- What only GGUF has ------------------------------------------------------------------ */

static const fx_shape small = {.vocab = 64,
                               .hidden = 32,
                               .inter = 64,
                               .layers = 2,
                               .heads = 4,
                               .kv_heads = 2,
                               .dt = FY_DT_F32};

static fy_model *small_src(void)
{
    return load_ok(fixture_dir("hf_small", &small, NULL));
}

static void test_qwen3_and_rope_freqs(void **state)
{
    (void)state;
    fy_model *src = small_src();
    char path[512];
    tmp_path(path, sizeof path, "qwen3.gguf");
    gm_opts o = {.arch = "qwen3", .qk_norm = 1};
    assert_int_equal(gm_write(path, src, &o), 0);
    fy_model *m = load_ok(path);
    assert_string_equal(m->cfg.arch, "qwen3");
    assert_int_equal(m->cfg.rope_pairs, FY_ROPE_PAIRS_HALF);
    assert_int_equal(m->cfg.qkv_bias, 0);
    for (int l = 0; l < 2; l++) {
        assert_non_null(m->layers[l].q_norm.data);
        assert_non_null(m->layers[l].k_norm.data);
        assert_int_equal(m->layers[l].q_norm.cols, 8);
        assert_null(m->layers[l].q_bias.data);
    }
    float *lq = logits_of(m); /* runs; its values are engine_ref.torch's business */
    free(lq);
    fy_model_free(m);

    tmp_path(path, sizeof path, "rope_freqs.gguf");
    gm_opts r = {.rope_freqs = 1};
    assert_int_equal(gm_write(path, src, &r), 0);
    m = load_ok(path);
    assert_non_null(m->cfg.rope_freq_factors);
    float inv[4], base[4];
    fy_model_rope_inv_freq(&m->cfg, inv);
    fy_model_rope_inv_freq(&src->cfg, base);
    for (int i = 0; i < 4; i++) {
        assert_float_equal(inv[i], base[i] / (1.0f + (float)i / 4.0f), 1e-7);
    }
    fy_model_free(m);
    fy_model_free(src);
}

static void test_names_and_packed(void **state)
{
    (void)state;
    fy_model *src = small_src();
    char path[512];
    tmp_path(path, sizeof path, "Tiny-Model.Q8_0.gguf");
    gm_opts o = {.wtype = GW_Q8_0};
    assert_int_equal(gm_write(path, src, &o), 0);
    fy_model *m = load_ok(path);
    assert_string_equal(m->name, "Tiny-Model.Q8_0"); /* no general.name: the stem */
    assert_int_equal(m->embed.dtype, FY_DT_Q8_0);
    assert_int_equal(m->layers[0].q.dtype, FY_DT_Q8_0);
    assert_int_equal(m->norm.dtype, FY_DT_F32);
    fy_model_free(m);
    char err[256];
    assert_int_equal(fy__model_gguf_load(path, "tiny:q8", &m, err, sizeof err), 0);
    assert_string_equal(m->name, "tiny:q8");
    fy_model_free(m);

    tmp_path(path, sizeof path, "named");
    gm_opts n = {.name = "My Model 7B"};
    assert_int_equal(gm_write(path, src, &n), 0);
    m = load_ok(path);
    assert_string_equal(m->name, "My Model 7B");
    fy_model_free(m);
    fy_model_free(src);
}

/* --- Refusals ------------------------------------------------------------------------------ */

static void kv_yarn(gw_writer *w, const char *arch)
{
    char k[96];
    snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
    gw_kv_str(w, k, "yarn");
}

static void kv_partial_rotary(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_u32(w, "llama.rope.dimension_count", 4);
}

static void kv_experts(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_u32(w, "llama.expert_count", 8);
}

static void kv_bad_eos(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_u32(w, "tokenizer.ggml.eot_token_id", 64);
}

static void kv_bos_string(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_str(w, "tokenizer.ggml.eom_token_id", "2");
}

static void kv_per_layer(gw_writer *w, const char *arch)
{
    (void)arch;
    int32_t v[2] = {4, 4};
    gw_kv_i32s(w, "llama.attention.value_length", v, 2);
}

static void kv_tokens_short(gw_writer *w, const char *arch)
{
    (void)arch;
    const char *t[3] = {"a", "b", "c"};
    gw_kv_strs(w, "tokenizer.ggml.tokens", t, 3);
}

static void kv_vocab_size(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_u64(w, "llama.vocab_size", 65);
}

static void kv_kv_heads(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_u32(w, "llama.feed_forward_length_x", 1); /* harmless unknown key */
}

static void kv_eps_negative(gw_writer *w, const char *arch)
{
    (void)arch;
    gw_kv_f32(w, "llama.attention.layer_norm_rms_epsilon", -1.0f);
}

typedef struct {
    const char *what;
    gm_opts o;
    const char *want; /* after "FILE: " */
} refusal;

static void test_refusals(void **state)
{
    (void)state;
    fy_model *src = small_src();
    const refusal cases[] = {
        {"arch",
         {.arch = "gpt2"},
         "architecture 'gpt2' (key 'general.architecture') is not supported: ferry serves llama, "
         "qwen2 and qwen3"},
        {"no_arch", {.skip_key = "general.architecture"}, "key 'general.architecture' is missing"},
        {"no_blocks", {.skip_key = "llama.block_count"}, "key 'llama.block_count' is missing"},
        {"no_eps",
         {.skip_key = "llama.attention.layer_norm_rms_epsilon"},
         "key 'llama.attention.layer_norm_rms_epsilon' is missing"},
        {"eps",
         {.skip_key = "llama.attention.layer_norm_rms_epsilon", .more_kv = kv_eps_negative},
         "key 'llama.attention.layer_norm_rms_epsilon' is -1, outside (0, 1]"},
        {"missing", {.skip = "blk.1.ffn_up.weight"}, "tensor 'blk.1.ffn_up.weight' is missing"},
        {"no_embd", {.skip = "token_embd.weight"}, "tensor 'token_embd.weight' is missing"},
        {"shape",
         {.grow = "blk.0.attn_k.weight"},
         "tensor 'blk.0.attn_k.weight' has dims [32, 17] but the metadata needs [32, 16]"},
        {"shape_vec",
         {.grow = "output_norm.weight"},
         "tensor 'output_norm.weight' has dims [33] but the metadata needs [32]"},
        {"shape_head",
         {.grow = "output.weight"},
         "tensor 'output.weight' has dims [32, 65] but the metadata needs [32, 64]"},
        {"norm_type",
         {.retype = "blk.0.attn_norm.weight", .retype_to = GW_Q8_0},
         "tensor 'blk.0.attn_norm.weight' is Q8_0, but a norm must be F32, F16 or BF16"},
        {"extra",
         {.extra = "blk.2.attn_norm.weight"},
         "tensor 'blk.2.attn_norm.weight' is not part of a llama model with 2 layers (the "
         "tensors disagree with the metadata)"},
        {"qwen2_bias", {.arch = "qwen2"}, "tensor 'blk.0.attn_q.bias' is missing"},
        {"qwen3_norm", {.arch = "qwen3"}, "tensor 'blk.0.attn_q_norm.weight' is missing"},
        {"qk_norm_llama",
         {.qk_norm = 1},
         "tensor 'blk.0.attn_q_norm.weight' is not part of a llama model with 2 layers (the "
         "tensors disagree with the metadata)"},
        {"yarn",
         {.more_kv = kv_yarn},
         "key 'llama.rope.scaling.type' is 'yarn': ferry supports none and linear (llama3-style "
         "scaling comes as the tensor rope_freqs.weight)"},
        {"partial",
         {.skip_key = "llama.rope.dimension_count", .more_kv = kv_partial_rotary},
         "key 'llama.rope.dimension_count' is 4 but heads have 8 dimensions: partial rotary "
         "embeddings are not supported"},
        {"moe",
         {.more_kv = kv_experts},
         "key 'llama.expert_count' is 8: mixtures of experts are not supported"},
        {"eot",
         {.more_kv = kv_bad_eos},
         "key 'tokenizer.ggml.eot_token_id' is not a token id below the vocabulary's 64"},
        {"eom_type",
         {.more_kv = kv_bos_string},
         "key 'tokenizer.ggml.eom_token_id' is string, not an integer"},
        {"per_layer",
         {.more_kv = kv_per_layer},
         "key 'llama.attention.value_length' is an array (per-layer values are not supported)"},
        {"tokens",
         {.more_kv = kv_tokens_short},
         "key 'tokenizer.ggml.tokens' lists 3 tokens but tensor 'token_embd.weight' has 64 rows"},
        {"vocab_size",
         {.more_kv = kv_vocab_size},
         "key 'llama.vocab_size' is 65 but tensor 'token_embd.weight' has 64 rows"},
        {"rope_freqs",
         {.rope_freqs = 1, .grow = "rope_freqs.weight"},
         "tensor 'rope_freqs.weight' has dims [5] but the metadata needs [4]"},
        {"harmless", {.more_kv = kv_kv_heads}, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512], want[1024], err[1024] = "";
        snprintf(want, sizeof want, "bad_%s.gguf", cases[i].what);
        tmp_path(path, sizeof path, want);
        assert_int_equal(gm_write(path, src, &cases[i].o), 0);
        fy_model *m = NULL;
        int rc = fy_model_load(path, &m, err, sizeof err);
        if (!cases[i].want) {
            if (rc != 0) {
                fail_msg("%s: refused: %s", cases[i].what, err);
            }
            fy_model_free(m);
            continue;
        }
        snprintf(want, sizeof want, "%s: %s", path, cases[i].want);
        if (rc == 0 || strcmp(err, want) != 0) {
            fail_msg("%s: rc %d\n  got:  %s\n  want: %s", cases[i].what, rc, err, want);
        }
        assert_null(m);
    }
    fy_model_free(src);
}

/* A zero factor in rope_freqs.weight, and files the reader refuses. */
static void test_refusals_raw(void **state)
{
    (void)state;
    fy_model *src = small_src();
    char path[512], err[1024] = "";
    fy_model *m = NULL;
    tmp_path(path, sizeof path, "zero_factor.gguf");
    gm_opts o = {.rope_freqs = 1};
    assert_int_equal(gm_write(path, src, &o), 0);
    /* Zero the first factor in place: find the tensor's bytes through the reader. */
    fy_gguf *g = NULL;
    assert_int_equal(fy_gguf_open(path, &g, err, sizeof err), 0);
    long off = (long)fy_gguf_tensor_find(g, "rope_freqs.weight")->offset;
    fy_gguf_free(g);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    float z = 0;
    assert_int_equal(fseek(f, off, SEEK_SET), 0);
    assert_int_equal(fwrite(&z, 4, 1, f), 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(fy_model_load(path, &m, err, sizeof err), FY_EINVAL);
    char want[1024];
    snprintf(want, sizeof want,
             "%s: tensor 'rope_freqs.weight' has factor 0 at 0 (each must be finite and > 0)",
             path);
    assert_string_equal(err, want);

    /* Not a GGUF file, and a truncated one: the reader's refusals, naming the file. */
    tmp_path(path, sizeof path, "not.gguf");
    f = fopen(path, "wb");
    fputs("{\"this\": \"is JSON\"}", f);
    fclose(f);
    assert_int_equal(fy_model_load(path, &m, err, sizeof err), FY_EPARSE);
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, "not a GGUF file"));
    tmp_path(path, sizeof path, "cut.gguf");
    gw_writer w;
    gw_init(&w);
    gw_kv_str(&w, "general.architecture", "llama");
    gw_tensor(&w, "token_embd.weight", GW_F32, 2, (uint64_t[]){32, 64}, NULL, 32 * 64 * 4);
    size_t n;
    uint8_t *b;
    gw_finish(&w, &b, &n);
    f = fopen(path, "wb");
    assert_int_equal(fwrite(b, 1, n - 100, f), n - 100);
    fclose(f);
    free(b);
    gw_free(&w);
    assert_int_equal(fy_model_load(path, &m, err, sizeof err), FY_EPARSE);
    assert_true(strncmp(err, path, strlen(path)) == 0);
    assert_non_null(strstr(err, "token_embd.weight"));
    tmp_path(path, sizeof path, "absent.gguf");
    assert_int_equal(fy_model_load(path, &m, err, sizeof err), FY_ENOENT);
    snprintf(want, sizeof want,
             "%s: no such file or directory (a model is a Hugging Face directory, a GGUF file or "
             "ollama:NAME[:TAG])",
             path);
    assert_string_equal(err, want);
    fy_model_free(src);
}

/* --- The shared stories260K.gguf --------------------------------------------------------- */

static void test_stories_gguf(void **state)
{
    (void)state;
    const char *dir = fx_stories_dir();
    if (!dir) {
        skip();
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/stories260K.gguf", dir);
    if (access(path, R_OK) != 0) {
        print_message("skipped: %s is absent\n", path);
        skip();
    }
    fy_model *m = load_ok(path), *hf = load_ok(dir);
    assert_string_equal(m->name, "llama"); /* its general.name */
    assert_int_equal(m->cfg.vocab_size, 512);
    assert_int_equal(m->cfg.n_layers, 5);
    assert_int_equal(m->cfg.rope_pairs, FY_ROPE_PAIRS_ADJACENT);
    assert_int_equal(m->cfg.bos_id, 1);
    assert_int_equal(m->cfg.n_eos, 1);
    assert_int_equal(m->cfg.eos_ids[0], 2);
    float *la = logits_of(m), *lb = logits_of(hf);
    expect_close(la, lb, (size_t)NP * 512, 2e-5, "stories260K.gguf vs model.safetensors");
    free(la);
    free(lb);

    fx_greedy gr;
    assert_int_equal(fx_greedy_load(dir, &gr), 0);
    assert_int_equal(gr.n_ids, 196);
    char err[256];
    fy_backend *be;
    fy_fwd *f;
    assert_int_equal(fy_backend_create("cpu", 2, &be, err, sizeof err), 0);
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * 16,
                        .max_batch_tokens = 16,
                        .max_seqs = 1};
    assert_int_equal(fy_fwd_create(m, be, &o, &f, err, sizeof err), 0);
    int got, bad = fx_greedy_run(f, 512, &gr, BS, &got);
    if (bad >= 0) {
        fail_msg("stories260K.gguf: token %d is %d, expected %d", bad, got, gr.ids[bad]);
    }
    fy_fwd_destroy(f);
    fy_backend_destroy(be);
    fy_model_free(m);
    fy_model_free(hf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equiv),
        cmocka_unit_test(test_qwen3_and_rope_freqs),
        cmocka_unit_test(test_names_and_packed),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_refusals_raw),
        cmocka_unit_test(test_stories_gguf),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
