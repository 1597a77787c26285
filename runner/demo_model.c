/* demo_model.c: `ferry-runner demo-model`, the small model ferry makes itself.
 *
 * Nothing can be downloaded on the machines ferry runs on, so the quick start
 * serves a model generated here: a Llama-architecture network (2 layers,
 * hidden 64, GQA 4/2 heads) whose weights are RANDOM, drawn from a seeded
 * generator (the same seed writes the same bytes), with a SentencePiece-style
 * BPE tokenizer (byte fallback over all 256 bytes, so any text round-trips)
 * and a ChatML chat template. It exercises every part of the serving path
 * (tokenizer, template, engine, API, tunnel); its text is gibberish. */
#include "runner/runner.h"

#include "common/args.h"
#include "common/err.h"
#include "common/fsutil.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The architecture. */
#define DM_HIDDEN 64
#define DM_INTER  172
#define DM_LAYERS 2
#define DM_HEADS  4
#define DM_KV     2
#define DM_HEAD   16
#define DM_CTX    2048

/* Token ids: specials, then the 256 byte tokens, then "▁", the printable
 * ASCII characters, then the merged pieces below. */
enum { T_UNK, T_BOS, T_EOS, T_IM_START, T_IM_END, T_BYTE0 };
#define T_SPACE (T_BYTE0 + 256)
#define T_CHAR0 (T_SPACE + 1) /* '!' .. '~' */

/* Merges, each of two pieces already in the vocabulary ("▁" written as _). */
static const char *const merges[][2] = {
    {"_", "t"}, {"h", "e"},  {"_", "a"}, {"_t", "he"}, {"i", "n"}, {"e", "r"},   {"a", "n"},
    {"_", "s"}, {"o", "n"},  {"r", "e"}, {"_", "w"},   {"n", "d"}, {"a", "t"},   {"e", "n"},
    {"o", "u"}, {"_", "o"},  {"_", "b"}, {"e", "d"},   {"_", "c"}, {"i", "s"},   {"_a", "nd"},
    {"_", "i"}, {"in", "g"}, {"_", "h"}, {"o", "r"},   {"_", "f"}, {"_", "m"},   {"i", "t"},
    {"a", "s"}, {"_", "d"},  {"_", "l"}, {"_", "p"},   {"l", "l"}, {"_w", "as"}, {"_o", "n"},
    {"_", "y"}, {"ou", "t"}, {"_", "n"}, {"_", "I"},   {"_", "T"}, {"_", "g"},   {"o", "m"},
};
#define N_MERGES (sizeof merges / sizeof merges[0])
#define DM_VOCAB (T_CHAR0 + 94 + (int)N_MERGES)

static const char chatml[] =
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* "_" stands for U+2581 in the merge table. */
static void piece_text(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (; *in && k + 4 < cap; in++) {
        if (*in == '_') {
            memcpy(out + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            out[k++] = *in;
        }
    }
    out[k] = '\0';
}

static json_t *tokenizer_json(void)
{
    json_t *vocab = json_object();
    char p[64];
    static const char *const special[] = {"<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"};
    json_t *added = json_array();
    for (int i = 0; i < T_BYTE0; i++) {
        json_object_set_new(vocab, special[i], json_integer(i));
        json_array_append_new(added, json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", i,
                                               "content", special[i], "single_word", 0, "lstrip", 0,
                                               "rstrip", 0, "normalized", 0, "special", 1));
    }
    for (int b = 0; b < 256; b++) {
        snprintf(p, sizeof p, "<0x%02X>", b);
        json_object_set_new(vocab, p, json_integer(T_BYTE0 + b));
    }
    json_object_set_new(vocab, "\xe2\x96\x81", json_integer(T_SPACE));
    for (int c = '!'; c <= '~'; c++) {
        p[0] = (char)c;
        p[1] = '\0';
        json_object_set_new(vocab, p, json_integer(T_CHAR0 + (c - '!')));
    }
    json_t *mj = json_array();
    for (size_t i = 0; i < N_MERGES; i++) {
        char a[32], b[32], ab[64], m[80];
        piece_text(merges[i][0], a, sizeof a);
        piece_text(merges[i][1], b, sizeof b);
        snprintf(ab, sizeof ab, "%s%s", a, b);
        snprintf(m, sizeof m, "%s %s", a, b);
        json_object_set_new(vocab, ab, json_integer(T_CHAR0 + 94 + (int)i));
        json_array_append_new(mj, json_string(m));
    }
    json_t *model = json_pack("{s:s, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                              "dropout", "unk_token", "<unk>", "continuing_subword_prefix",
                              "end_of_word_suffix", "fuse_unk", 1, "byte_fallback", 1,
                              "ignore_merges", 0, "vocab", vocab, "merges", mj);
    /* Spaces become "▁" and nothing is prepended, so every text (special
     * tokens included) decodes back to exactly itself. */
    json_t *normalizer =
        json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}]}", "type", "Sequence", "normalizers", "type",
                  "Replace", "pattern", "String", " ", "content", "\xe2\x96\x81");
    json_t *post =
        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                  "{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                  "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
                  "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>",
                  "type_id", 0, "Sequence", "id", "A", "type_id", 0, "SpecialToken", "id", "<s>",
                  "type_id", 1, "Sequence", "id", "B", "type_id", 1, "special_tokens", "<s>", "id",
                  "<s>", "ids", T_BOS, "tokens", "<s>");
    json_t *decoder = json_pack("{s:s, s:[{s:s, s:{s:s}, s:s}, {s:s}, {s:s}]}", "type", "Sequence",
                                "decoders", "type", "Replace", "pattern", "String", "\xe2\x96\x81",
                                "content", " ", "type", "ByteFallback", "type", "Fuse");
    return json_pack("{s:s, s:n, s:n, s:o, s:o, s:n, s:o, s:o, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer", normalizer,
                     "pre_tokenizer", "post_processor", post, "decoder", decoder, "model", model);
}

static json_t *config_json(int bf16)
{
    return json_pack("{s:[s], s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:n, "
                     "s:b, s:b, s:b, s:i, s:[i,i], s:s}",
                     "architectures", "LlamaForCausalLM", "model_type", "llama", "hidden_act",
                     "silu", "vocab_size", DM_VOCAB, "hidden_size", DM_HIDDEN, "intermediate_size",
                     DM_INTER, "num_hidden_layers", DM_LAYERS, "num_attention_heads", DM_HEADS,
                     "num_key_value_heads", DM_KV, "head_dim", DM_HEAD, "max_position_embeddings",
                     DM_CTX, "rms_norm_eps", 1e-5, "rope_theta", 10000.0, "rope_scaling",
                     "attention_bias", 0, "mlp_bias", 0, "tie_word_embeddings", 0, "bos_token_id",
                     T_BOS, "eos_token_id", T_EOS, T_IM_END, "torch_dtype",
                     bf16 ? "bfloat16" : "float32");
}

/* splitmix64: a small, well-mixed, seedable generator. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Roughly normal (sum of four uniforms), scaled to STD. */
static float next_normal(uint64_t *s, float std)
{
    double u = 0;
    for (int i = 0; i < 4; i++) {
        u += (double)(next_u64(s) >> 11) / 9007199254740992.0;
    }
    return (float)((u - 2.0) * 1.7320508 * std);
}

static uint16_t to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    x += 0x7FFF + ((x >> 16) & 1); /* round to nearest even */
    return (uint16_t)(x >> 16);
}

typedef struct {
    const char *name;
    int64_t rows, cols; /* cols 0: a vector */
    int norm;           /* RMSNorm weight: ones */
} dm_tensor;

/* Writes model.safetensors: the header (padded to 8 bytes), then every
 * tensor, each drawn in file order from the seeded generator. */
static int write_weights(const char *path, uint64_t seed, int bf16, char *err, size_t errlen)
{
    dm_tensor t[3 + DM_LAYERS * 9];
    char names[DM_LAYERS * 9][96];
    int n = 0;
    t[n++] = (dm_tensor){"model.embed_tokens.weight", DM_VOCAB, DM_HIDDEN, 0};
    static const struct {
        const char *fmt;
        int64_t rows, cols;
        int norm;
    } per_layer[] = {
        {"model.layers.%d.input_layernorm.weight", DM_HIDDEN, 0, 1},
        {"model.layers.%d.self_attn.q_proj.weight", DM_HEADS * DM_HEAD, DM_HIDDEN, 0},
        {"model.layers.%d.self_attn.k_proj.weight", DM_KV * DM_HEAD, DM_HIDDEN, 0},
        {"model.layers.%d.self_attn.v_proj.weight", DM_KV * DM_HEAD, DM_HIDDEN, 0},
        {"model.layers.%d.self_attn.o_proj.weight", DM_HIDDEN, DM_HEADS * DM_HEAD, 0},
        {"model.layers.%d.post_attention_layernorm.weight", DM_HIDDEN, 0, 1},
        {"model.layers.%d.mlp.gate_proj.weight", DM_INTER, DM_HIDDEN, 0},
        {"model.layers.%d.mlp.up_proj.weight", DM_INTER, DM_HIDDEN, 0},
        {"model.layers.%d.mlp.down_proj.weight", DM_HIDDEN, DM_INTER, 0},
    };
    for (int l = 0; l < DM_LAYERS; l++) {
        for (int k = 0; k < 9; k++) {
            char *nm = names[l * 9 + k];
            snprintf(nm, 96, per_layer[k].fmt, l);
            t[n++] = (dm_tensor){nm, per_layer[k].rows, per_layer[k].cols, per_layer[k].norm};
        }
    }
    t[n++] = (dm_tensor){"model.norm.weight", DM_HIDDEN, 0, 1};
    /* Untied: with tied embeddings the residual stream, dominated by the
     * input embedding, makes every token predict itself again. */
    t[n++] = (dm_tensor){"lm_head.weight", DM_VOCAB, DM_HIDDEN, 0};

    size_t esize = bf16 ? 2 : 4;
    json_t *hdr = json_pack("{s:{s:s}}", "__metadata__", "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t elems = (uint64_t)t[i].rows * (uint64_t)(t[i].cols ? t[i].cols : 1);
        json_t *shape = t[i].cols ? json_pack("[I,I]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].rows);
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", bf16 ? "BF16" : "F32",
                                      "shape", shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + elems * esize)));
        off += elems * esize;
    }
    char *hs = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    if (!hs) {
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    size_t hl = strlen(hs), padded = (hl + 7) & ~(size_t)7;
    size_t total = 8 + padded + off;
    uint8_t *buf = malloc(total);
    if (!buf) {
        free(hs);
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    for (int i = 0; i < 8; i++) {
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    }
    memcpy(buf + 8, hs, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(hs);
    uint8_t *p = buf + 8 + padded;
    uint64_t rng = seed;
    for (int i = 0; i < n; i++) {
        uint64_t elems = (uint64_t)t[i].rows * (uint64_t)(t[i].cols ? t[i].cols : 1);
        /* Embeddings larger than the projections; the head scaled so the
         * logits (std ~2.4) are neither flat nor one-hot. */
        float std = i == 0 ? 1.0f : i == n - 1 ? 0.3f : 0.08f;
        for (uint64_t k = 0; k < elems; k++) {
            float v = t[i].norm ? 1.0f : next_normal(&rng, std);
            if (bf16) {
                uint16_t h = to_bf16(v);
                memcpy(p, &h, 2); /* little-endian hosts only, as the loader */
            } else {
                memcpy(p, &v, 4);
            }
            p += esize;
        }
    }
    int rc = fy_file_write_atomic(path, buf, total, 0644);
    free(buf);
    if (rc) {
        snprintf(err, errlen, "cannot write %s: %s", path, fy_strerror(rc));
    }
    return rc;
}

static int write_json(const char *dir, const char *name, json_t *j, char *err, size_t errlen)
{
    char path[4096];
    char *s = j ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(j);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return FY_ENOMEM;
    }
    int rc = fy_path_join(path, sizeof path, dir, name);
    if (!rc) {
        rc = fy_file_write_atomic(path, s, strlen(s), 0644);
    }
    free(s);
    if (rc) {
        snprintf(err, errlen, "cannot write %s/%s: %s", dir, name, fy_strerror(rc));
    }
    return rc;
}

static const char readme[] =
    "# ferry demo model\n\n"
    "Written by `ferry-runner demo-model`. ITS WEIGHTS ARE RANDOM: it is a\n"
    "Llama-architecture network (2 layers, hidden 64) with weights drawn from a\n"
    "seeded generator, so its answers are gibberish. It exists so ferry can show\n"
    "the whole serving path (tokenizer, chat template, engine, OpenAI API,\n"
    "gateway tunnel) on a machine that cannot download a real model.\n\n"
    "Serve a real model with `ferry-runner run --model /path/to/hf-model-dir`.\n";

int fy_rn_demo_model_write(const char *dir, uint64_t seed, int bf16, char *err, size_t errlen)
{
    int rc = fy_mkdir_p(dir, 0755);
    if (rc) {
        snprintf(err, errlen, "cannot create %s: %s", dir, fy_strerror(rc));
        return rc;
    }
    char path[4096];
    if ((rc = write_json(dir, "config.json", config_json(bf16), err, errlen)) ||
        (rc = write_json(dir, "tokenizer.json", tokenizer_json(), err, errlen))) {
        return rc;
    }
    json_t *tc = json_pack("{s:s, s:s, s:s, s:b, s:b, s:s, s:i}", "bos_token", "<s>", "eos_token",
                           "<|im_end|>", "unk_token", "<unk>", "add_bos_token", 1, "add_eos_token",
                           0, "chat_template", chatml, "model_max_length", DM_CTX);
    if ((rc = write_json(dir, "tokenizer_config.json", tc, err, errlen))) {
        return rc;
    }
    if ((rc = fy_path_join(path, sizeof path, dir, "README.md")) ||
        (rc = fy_file_write_atomic(path, readme, sizeof readme - 1, 0644))) {
        snprintf(err, errlen, "cannot write %s/README.md: %s", dir, fy_strerror(rc));
        return rc;
    }
    if ((rc = fy_path_join(path, sizeof path, dir, "model.safetensors"))) {
        snprintf(err, errlen, "directory path too long");
        return rc;
    }
    return write_weights(path, seed, bf16, err, errlen);
}

int fy_rn_demo_model_main(int argc, char **argv)
{
    const char *out = NULL, *dtype = "f32";
    long long seed = 1;
    int help = 0;
    const fy_opt opts[] = {
        {"out", FY_OPT_STR, &out, "DIR", "directory to write the model into (required)"},
        {"seed", FY_OPT_INT, &seed, "N", "random seed of the weights (default 1)"},
        {"dtype", FY_OPT_STR, &dtype, "f32|bf16", "weight type (default f32)"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[512];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    int rc = fy_args_command(
        opts, argc, argv, pos, &npos, "ferry-runner demo-model", &help,
        "Usage: ferry-runner demo-model --out DIR [--seed N] [--dtype f32|bf16]\n\n"
        "Writes ferry's built-in demo model, a small Llama-architecture model in\n"
        "Hugging Face layout (config.json, model.safetensors, tokenizer.json,\n"
        "tokenizer_config.json with a ChatML chat template). ITS WEIGHTS ARE RANDOM\n"
        "(from --seed: the same seed writes the same files), so what it says is\n"
        "gibberish; it lets ferry show the whole serving path on a machine that\n"
        "cannot download a real model. Serve it with\n"
        "  ferry-runner run --model DIR --listen 127.0.0.1:8080\n\n"
        "Options:\n");
    if (rc >= 0) {
        return rc;
    }
    int bf16 = dtype && strcmp(dtype, "bf16") == 0;
    if (npos || !out || !dtype || (!bf16 && strcmp(dtype, "f32") != 0)) {
        fprintf(stderr, "ferry-runner demo-model: give --out DIR (and --dtype f32 or bf16)\n");
        return 2;
    }
    if (fy_rn_demo_model_write(out, (uint64_t)seed, bf16, err, sizeof err)) {
        fprintf(stderr, "ferry-runner demo-model: %s\n", err);
        return 1;
    }
    printf("wrote the demo model (random weights, seed %lld, %s) to %s\n", seed,
           bf16 ? "bf16" : "f32", out);
    return 0;
}
