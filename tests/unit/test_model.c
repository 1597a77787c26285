/* Model loading: config.json and safetensors validation (every refusal
 * names the file, the tensor or field, and the problem), the real
 * stories260K model, tied/untied heads, Qwen2 biases, shards and RoPE
 * frequencies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "runner/engine/model.h"
#include "runner/engine/safetensors.h"
#include "support/model_fixture.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const fx_shape tiny = {.vocab = 32,
                              .hidden = 16,
                              .inter = 24,
                              .layers = 2,
                              .heads = 4,
                              .kv_heads = 2,
                              .dt = FY_DT_F32};

static char *tmpdir_new(void)
{
    char *d = strdup("/tmp/fy_test_model_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void tmpdir_free(char *d)
{
    DIR *dir = opendir(d);
    struct dirent *e;
    char p[512];
    while (dir && (e = readdir(dir))) {
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", d, e->d_name);
            unlink(p);
        }
    }
    if (dir) {
        closedir(dir);
    }
    rmdir(d);
    free(d);
}

/* Loads DIR expecting failure RC with every string of MSGS in the message. */
static void expect_refused(const char *dir, int rc, const char *const *msgs)
{
    fy_model *m = (fy_model *)1;
    char err[512] = "";
    assert_int_equal(fy_model_load(dir, &m, err, sizeof err), rc);
    assert_null(m);
    for (int i = 0; msgs[i]; i++) {
        if (!strstr(err, msgs[i])) {
            fail_msg("message '%s' lacks '%s'", err, msgs[i]);
        }
    }
}

/* --- config.json ---------------------------------------------------------------- */

#define BASE_CFG                                                                      \
    "\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":100,\"hidden_size\":64," \
    "\"intermediate_size\":128,\"num_hidden_layers\":2"

static void test_config_ok(void **state)
{
    (void)state;
    const char *j =
        "{" BASE_CFG ",\"num_attention_heads\":8,\"num_key_value_heads\":2,"
        "\"rope_theta\":500000,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8.0,"
        "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
        "\"original_max_position_embeddings\":8192},\"eos_token_id\":[2,3],"
        "\"bos_token_id\":null}";
    fy_model_config c;
    char err[256] = "";
    assert_int_equal(fy_model_config_parse(j, strlen(j), &c, err, sizeof err), 0);
    assert_string_equal(c.arch, "LlamaForCausalLM");
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.rope_type, FY_ROPE_LLAMA3);
    assert_int_equal(c.rope_orig_max_pos, 8192);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_ids[1], 3);
    assert_int_equal(c.bos_id, -1);
    assert_float_equal(c.rms_eps, 1e-6, 1e-12);
    assert_int_equal(c.max_pos, 2048);
    assert_false(c.tie_embeddings);

    const char *q = "{\"architectures\":[\"Qwen2ForCausalLM\"],\"vocab_size\":100,"
                    "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,"
                    "\"num_attention_heads\":4,\"head_dim\":32,\"rope_scaling\":{\"type\":"
                    "\"linear\",\"factor\":2},\"tie_word_embeddings\":true}";
    assert_int_equal(fy_model_config_parse(q, strlen(q), &c, err, sizeof err), 0);
    assert_true(c.qkv_bias);
    assert_int_equal(c.head_dim, 32);
    assert_int_equal(c.n_kv_heads, 4);
    assert_int_equal(c.rope_type, FY_ROPE_LINEAR);
    assert_float_equal(c.rope_factor, 2.0, 0);
    assert_true(c.tie_embeddings);
}

static void test_config_refused(void **state)
{
    (void)state;
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"[1]", "not a JSON object"},
        {"{", "config.json"},
        {"{\"architectures\":[\"GPT2LMHeadModel\"]}", "GPT2LMHeadModel"},
        {"{\"architectures\":\"LlamaForCausalLM\"}", "'architectures'"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64}",
         "'vocab_size' is missing"},
        {"{" BASE_CFG ",\"num_attention_heads\":\"8\"}", "'num_attention_heads' is not an integer"},
        {"{" BASE_CFG ",\"num_attention_heads\":0}", "'num_attention_heads' is 0"},
        {"{" BASE_CFG ",\"num_attention_heads\":-4}", "'num_attention_heads' is -4"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"num_key_value_heads\":3}", "not a multiple"},
        {"{" BASE_CFG ",\"num_attention_heads\":6}", "hidden_size 64 is not a multiple"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"head_dim\":7}", "head_dim"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"rope_theta\":-1}", "'rope_theta'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"rms_norm_eps\":\"x\"}", "'rms_norm_eps'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"rope_scaling\":{\"type\":\"yarn\"}}", "yarn"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"rope_scaling\":{\"type\":\"linear\"}}",
         "'factor' is missing"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"rope_scaling\":7}", "'rope_scaling'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"tie_word_embeddings\":1}",
         "'tie_word_embeddings'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"eos_token_id\":1000}", "'eos_token_id'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"bos_token_id\":100}", "'bos_token_id'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"hidden_act\":\"gelu\"}", "'hidden_act'"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"attention_bias\":true}", "attention_bias"},
        {"{" BASE_CFG ",\"num_attention_heads\":8,\"vocab_size\":1}", "duplicate"},
        {"{\"architectures\":[\"LlamaForCausalLM\"],\"vocab_size\":100,\"hidden_size\":"
         "99999999999,\"intermediate_size\":1,\"num_hidden_layers\":1,\"num_attention_heads\":1}",
         "'hidden_size'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fy_model_config c;
        char err[256] = "";
        int rc = fy_model_config_parse(cases[i].json, strlen(cases[i].json), &c, err, sizeof err);
        if (rc >= 0 || !strstr(err, cases[i].msg)) {
            fail_msg("case %zu: rc %d, message '%s' (wanted '%s')", i, rc, err, cases[i].msg);
        }
    }
}

/* --- safetensors headers ------------------------------------------------------------ */

static void st_expect(const char *hdr, size_t data_len, const char *msg)
{
    size_t hl = strlen(hdr), len = 8 + hl + data_len;
    uint8_t *buf = calloc(1, len);
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    }
    memcpy(buf + 8, hdr, hl);
    fy_st_header h;
    char err[256] = "";
    int rc = fy_st_parse(buf, len, &h, err, sizeof err);
    if (!msg) {
        if (rc != 0) {
            fail_msg("'%s' refused: %s", hdr, err);
        }
        fy_st_header_free(&h);
    } else if (rc >= 0 || !strstr(err, msg)) {
        fail_msg("'%s': rc %d, message '%s' (wanted '%s')", hdr, rc, err, msg);
    }
    free(buf);
}

static void test_safetensors_header(void **state)
{
    (void)state;
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
              "\"__metadata__\":{\"format\":\"pt\"}}",
              24, NULL);
    st_expect("{\"e\":{\"dtype\":\"BF16\",\"shape\":[0],\"data_offsets\":[0,0]}}  ", 0, NULL);
    st_expect("{\"a\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
              "tensor 'a': unknown dtype 'F12'");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 8,
              "tensor 'a': data_offsets end 12 is past the data section");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
              "tensor 'a': data_offsets cover 8 bytes but 3 elements of F32 need 12");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8,
              "tensor 'a': shape[0] is not a non-negative integer");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    st_expect("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
              "\"data_offsets\":[0,8]}}",
              8, "tensor 'a': element count overflows");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
              "begin 8 > end 0");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
              "tensor 'a': data_offsets missing");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor 'a': data_offsets missing");
    st_expect("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': dtype missing");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor 'a': shape missing");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8,
              "unknown field 'x'");
    st_expect("{\"a\":[]}", 8, "tensor 'a': not a JSON object");
    st_expect("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
              12, "overlap");
    st_expect("{\"__metadata__\":{\"a\":1}}", 0, "__metadata__");
    st_expect("[]", 0, "not a JSON object");
    st_expect("{\"a\":", 0, "header JSON");

    /* Header length past the end, or absurd. */
    uint8_t small[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    fy_st_header h;
    char err[256] = "";
    assert_int_equal(fy_st_parse(small, sizeof small, &h, err, sizeof err), FY_EPARSE);
    assert_non_null(strstr(err, "header length 65535 runs past the end"));
    small[7] = 0x80;
    assert_int_equal(fy_st_parse(small, sizeof small, &h, err, sizeof err), FY_EPARSE);
    assert_non_null(strstr(err, "exceeds"));
    assert_int_equal(fy_st_parse(small, 5, &h, err, sizeof err), FY_EPARSE);
    assert_non_null(strstr(err, "shorter than"));
}

/* --- Files ------------------------------------------------------------------------------ */

static void test_load_tiny_variants(void **state)
{
    (void)state;
    for (int v = 0; v < 4; v++) {
        char *d = tmpdir_new();
        fx_shape s = tiny;
        s.qwen = v & 1;
        s.tied = (v >> 1) & 1;
        s.dt = v == 1 ? FY_DT_BF16 : v == 2 ? FY_DT_F16 : FY_DT_F32;
        assert_int_equal(fx_write_model(d, &s, 7u + (uint32_t)v), 0);
        fy_model *m = NULL;
        char err[512] = "";
        if (fy_model_load(d, &m, err, sizeof err) != 0) {
            fail_msg("variant %d: %s", v, err);
        }
        assert_int_equal(m->cfg.qkv_bias, s.qwen);
        assert_int_equal(m->cfg.tie_embeddings, s.tied);
        assert_true((m->lm_head.data == m->embed.data) == !!s.tied);
        assert_int_equal(m->embed.dtype, s.dt);
        assert_int_equal(m->layers[1].k.rows, 2 * 4);
        assert_int_equal(m->layers[1].k.cols, 16);
        assert_true((m->layers[0].q_bias.data != NULL) == !!s.qwen);
        assert_int_equal(m->layers[0].down.cols, 24);
        size_t hd = 4, per_layer = 16 * 2 + 16 * 16 * 2 + 2 * 8 * 16 + 3 * 16 * 24 +
                                   (s.qwen ? 16 + 2 * 8 : 0);
        (void)hd;
        size_t want = (32 * 16 * (s.tied ? 1 : 2) + 16 + 2 * per_layer) * fy_dtype_size(s.dt);
        assert_int_equal(m->weight_bytes, want);
        assert_string_equal(m->name, strrchr(d, '/') + 1);
        fy_model_free(m);
        tmpdir_free(d);
    }
}

static void test_load_refusals(void **state)
{
    (void)state;
    char *d = tmpdir_new(), path[512];
    fx_shape s = tiny;

    /* A missing tensor and a wrong shape, each named. */
    s.skip = "model.layers.1.mlp.up_proj.weight";
    assert_int_equal(fx_write_model(d, &s, 1), 0);
    expect_refused(d, FY_ENOENT,
                   (const char *[]){"model.safetensors", "model.layers.1.mlp.up_proj.weight",
                                    "missing", NULL});
    s.skip = NULL;
    s.bad_shape = "model.layers.0.self_attn.k_proj.weight";
    assert_int_equal(fx_write_model(d, &s, 1), 0);
    expect_refused(d, FY_EINVAL,
                   (const char *[]){"model.safetensors", "model.layers.0.self_attn.k_proj.weight",
                                    "shape [9, 16]", "needs [8, 16]", NULL});
    s.bad_shape = "model.norm.weight";
    assert_int_equal(fx_write_model(d, &s, 1), 0);
    expect_refused(d, FY_EINVAL,
                   (const char *[]){"'model.norm.weight' has shape [17]", "needs [16]", NULL});

    /* Truncated: the last tensor's bytes are cut off. */
    s.bad_shape = NULL;
    assert_int_equal(fx_write_model(d, &s, 1), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fclose(f);
    assert_int_equal(truncate(path, len - 10), 0);
    expect_refused(d, FY_EPARSE,
                   (const char *[]){"model.safetensors", "past the data section", NULL});
    assert_int_equal(truncate(path, 100), 0);
    expect_refused(d, FY_EPARSE,
                   (const char *[]){"model.safetensors", "runs past the end of the file", NULL});
    assert_int_equal(truncate(path, 3), 0);
    expect_refused(d, FY_EPARSE, (const char *[]){"model.safetensors", "truncated", NULL});

    /* Wrong dtypes and bad offsets, written by hand. */
    assert_int_equal(fx_write_raw(path,
                                  "{\"model.embed_tokens.weight\":{\"dtype\":\"I32\",\"shape\":"
                                  "[32,16],\"data_offsets\":[0,2048]}}",
                                  2048),
                     0);
    expect_refused(
        d, FY_ENOTSUP,
        (const char *[]){"model.safetensors", "model.embed_tokens.weight", "dtype I32", NULL});
    assert_int_equal(fx_write_raw(path,
                                  "{\"model.embed_tokens.weight\":{\"dtype\":\"F32\",\"shape\":"
                                  "[32,16],\"data_offsets\":[100,2148]}}",
                                  2048),
                     0);
    expect_refused(d, FY_EPARSE,
                   (const char *[]){"model.safetensors", "model.embed_tokens.weight",
                                    "past the data section", NULL});
    assert_int_equal(fx_write_raw(path,
                                  "{\"model.embed_tokens.weight\":{\"dtype\":\"Q4\",\"shape\":"
                                  "[32,16],\"data_offsets\":[0,2048]}}",
                                  2048),
                     0);
    expect_refused(d, FY_EPARSE,
                   (const char *[]){"model.embed_tokens.weight", "unknown dtype 'Q4'", NULL});

    /* A bad config field names the field; no weights file names the file. */
    unlink(path);
    expect_refused(d, FY_ENOENT, (const char *[]){"model.safetensors", NULL});
    assert_int_equal(fx_write_config(d, &s, "\"num_key_value_heads\": 3"), FY_OK);
    expect_refused(d, FY_EPARSE, (const char *[]){"duplicate", NULL});
    snprintf(path, sizeof path, "%s/config.json", d);
    unlink(path);
    expect_refused(d, FY_ENOENT, (const char *[]){"config.json", NULL});
    tmpdir_free(d);
}

/* A misaligned header (no padding) still loads: tensors get aligned copies. */
static void test_load_misaligned(void **state)
{
    (void)state;
    char *d = tmpdir_new(), path[512];
    fx_shape s = {.vocab = 4,
                  .hidden = 2,
                  .inter = 2,
                  .layers = 1,
                  .heads = 1,
                  .kv_heads = 1,
                  .tied = 1,
                  .dt = FY_DT_F32};
    assert_int_equal(fx_write_model(d, &s, 3), 0);
    /* Rewrite with one extra header byte so every tensor is off by one. */
    fy_model *m = NULL;
    char err[512];
    assert_int_equal(fy_model_load(d, &m, err, sizeof err), 0);
    float want = ((const float *)m->layers[0].gate.data)[1];
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    FILE *f = fopen(path, "rb");
    uint8_t buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    fy_model_free(m);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) {
        hl = hl << 8 | buf[i];
    }
    f = fopen(path, "wb");
    uint64_t nl = hl + 1;
    for (int i = 0; i < 8; i++) {
        fputc((int)(uint8_t)(nl >> (8 * i)), f);
    }
    fwrite(buf + 8, 1, hl, f);
    fputc(' ', f);
    fwrite(buf + 8 + hl, 1, n - 8 - hl, f);
    fclose(f);
    if (fy_model_load(d, &m, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal((uintptr_t)m->layers[0].gate.data % 4, 0);
    assert_float_equal(((const float *)m->layers[0].gate.data)[1], want, 0);
    fy_model_free(m);
    tmpdir_free(d);
}

static void test_load_sharded(void **state)
{
    (void)state;
    char *d = tmpdir_new(), path[512];
    fx_shape s = tiny;
    assert_int_equal(fx_write_model(d, &s, 5), 0);
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/model.safetensors", d);
    snprintf(b, sizeof b, "%s/model-00001-of-00001.safetensors", d);
    assert_int_equal(rename(a, b), 0);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", d);
    FILE *f = fopen(path, "w");
    fx_tensor t[64];
    int n = fx_tensors(&s, t);
    fprintf(f, "{\"metadata\":{},\"weight_map\":{");
    for (int i = 0; i < n; i++) {
        fprintf(f, "%s\"%s\":\"model-00001-of-00001.safetensors\"", i ? "," : "", t[i].name);
    }
    fprintf(f, "}}");
    fclose(f);
    fy_model *m = NULL;
    char err[512] = "";
    if (fy_model_load(d, &m, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    fy_model_free(m);
    /* A shard outside the directory is refused. */
    f = fopen(path, "w");
    fprintf(f, "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
    fclose(f);
    expect_refused(d, FY_EPARSE, (const char *[]){"model.norm.weight", "invalid file name", NULL});
    f = fopen(path, "w");
    fprintf(f, "{\"weight_map\":{\"model.norm.weight\":\"model-00001-of-00001.safetensors\"}}");
    fclose(f);
    expect_refused(d, FY_ENOENT,
                   (const char *[]){"model.safetensors.index.json", "model.embed_tokens.weight",
                                    "missing", NULL});
    tmpdir_free(d);
}

static void test_stories260k(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    char dir[1024];
    if (!td) {
        printf("skipped: FERRY_TESTDATA is not set\n");
        skip();
    }
    snprintf(dir, sizeof dir, "%s/models/stories260K", td);
    if (access(dir, R_OK) != 0) {
        printf("skipped: %s is absent\n", dir);
        skip();
    }
    fy_model *m = NULL;
    char err[512] = "";
    if (fy_model_load(dir, &m, err, sizeof err) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(m->name, "stories260K");
    assert_int_equal(m->cfg.n_layers, 5);
    assert_int_equal(m->cfg.n_kv_heads, 4);
    assert_int_equal(m->cfg.head_dim, 8);
    assert_int_equal(m->cfg.bos_id, 1);
    assert_int_equal(m->cfg.n_eos, 1);
    assert_true(m->lm_head.data == m->embed.data);
    assert_int_equal(m->embed.dtype, FY_DT_F32);
    fy_model_free(m);
}

static void test_rope_inv_freq(void **state)
{
    (void)state;
    fy_model_config c = {.head_dim = 128, .rope_theta = 500000.0f};
    float base[64], lin[64], l3[64];
    fy_model_rope_inv_freq(&c, base);
    assert_float_equal(base[0], 1.0, 0);
    assert_float_equal(base[1], pow(500000.0, -2.0 / 128), 1e-9);
    c.rope_type = FY_ROPE_LINEAR;
    c.rope_factor = 4.0f;
    fy_model_rope_inv_freq(&c, lin);
    for (int i = 0; i < 64; i++) {
        assert_float_equal(lin[i], base[i] / 4.0f, 1e-6 * base[i]);
    }
    c.rope_type = FY_ROPE_LLAMA3;
    c.rope_factor = 8.0f;
    c.rope_low_freq_factor = 1.0f;
    c.rope_high_freq_factor = 4.0f;
    c.rope_orig_max_pos = 8192;
    fy_model_rope_inv_freq(&c, l3);
    int kept = 0, scaled = 0, blended = 0;
    for (int i = 0; i < 64; i++) {
        double wl = 2 * M_PI / base[i];
        if (wl < 8192 / 4.0) {
            assert_float_equal(l3[i], base[i], 1e-7 * base[i]);
            kept++;
        } else if (wl > 8192) {
            assert_float_equal(l3[i], base[i] / 8, 1e-6 * base[i]);
            scaled++;
        } else {
            assert_true(l3[i] < base[i] && l3[i] > base[i] / 8);
            blended++;
        }
    }
    assert_true(kept > 0 && scaled > 0 && blended > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_ok),          cmocka_unit_test(test_config_refused),
        cmocka_unit_test(test_safetensors_header), cmocka_unit_test(test_load_tiny_variants),
        cmocka_unit_test(test_load_refusals),      cmocka_unit_test(test_load_misaligned),
        cmocka_unit_test(test_load_sharded),       cmocka_unit_test(test_stories260k),
        cmocka_unit_test(test_rope_inv_freq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
