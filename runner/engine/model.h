/* model.h: a model, validated and memory-mapped, from a Hugging Face
 * directory, a GGUF file (model_gguf.h) or Ollama's store (ollama.h).
 *
 * Hugging Face: config.json is read into fy_model_config (every field checked); weights
 * come from model.safetensors or the shards listed in
 * model.safetensors.index.json, each file mapped read-only. Every tensor the
 * architecture needs is looked up by its HF name and checked against the
 * config (shape, dtype F32/F16/BF16, bytes inside the file); a problem is
 * refused with a message naming the file, the tensor and what is wrong.
 *
 * Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM
 * (q/k/v bias). The tensors' data pointers are host memory (the mappings). */
#ifndef FY_ENGINE_MODEL_H
#define FY_ENGINE_MODEL_H

#include "kernels/backend.h"
#include "runner/engine/gguf.h"

#include <stddef.h>
#include <stdint.h>

enum { FY_ROPE_NONE = 0, FY_ROPE_LINEAR, FY_ROPE_LLAMA3 };
#define FY_MODEL_MAX_EOS 8

/* Upper bounds on shapes, for every loader: far above any model ferry can
 * run, low enough that products of them (element counts, byte sizes) cannot
 * overflow. */
#define FY_MODEL_MAX_VOCAB        (1 << 22)
#define FY_MODEL_MAX_HIDDEN       (1 << 16)
#define FY_MODEL_MAX_INTERMEDIATE (1 << 19)
#define FY_MODEL_MAX_LAYERS       1024
#define FY_MODEL_MAX_HEADS        1024
#define FY_MODEL_MAX_HEAD_DIM     1024
#define FY_MODEL_MAX_POS          (1 << 24)

typedef struct {
    char arch[64]; /* "LlamaForCausalLM", ... */
    int vocab_size;
    int hidden; /* hidden_size */
    int intermediate;
    int n_layers;
    int n_heads;
    int n_kv_heads;
    int head_dim; /* head_dim, or hidden / n_heads */
    int max_pos;  /* max_position_embeddings */
    float rms_eps;
    float rope_theta;
    int rope_type; /* FY_ROPE_* */
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos; /* llama3: original_max_position_embeddings */
    int rope_pairs;        /* FY_ROPE_PAIRS_* (kernels/backend.h): how q/k rows are ordered */
    /* [head_dim/2] per-frequency divisors of inv_freq (GGUF's rope_freqs.weight,
     * how llama.cpp stores Llama 3's scaling), host memory owned by the model;
     * NULL: none. */
    const float *rope_freq_factors;
    int tie_embeddings;
    int qkv_bias;
    int bos_id; /* -1 when none */
    int eos_ids[FY_MODEL_MAX_EOS];
    int n_eos;
} fy_model_config;

typedef struct {
    fy_tensor attn_norm, q, k, v, o, q_bias, k_bias, v_bias;
    fy_tensor q_norm,
        k_norm; /* Qwen3: RMSNorm over each head of q and k, [head_dim]; else absent */
    fy_tensor mlp_norm, gate, up, down;
} fy_layer;

typedef struct fy_model {
    fy_model_config cfg;
    /* The API's model id: the directory's last component (Hugging Face);
     * NAME:TAG (Ollama); general.name, else the file's stem (GGUF). */
    char name[256];
    fy_tensor embed, norm, lm_head; /* lm_head == embed when tied */
    fy_layer *layers;
    size_t weight_bytes; /* bytes of all tensors used */
    /* The GGUF file the weights point into (its tokenizer and chat template
     * are read from it), alive as long as the model; NULL for a directory. */
    const fy_gguf *gguf;
    void *priv; /* mappings */
} fy_model;

/* Parses and validates config.json text (for tests and fuzzing). */
int fy_model_config_parse(const char *json, size_t len, fy_model_config *cfg, char *err,
                          size_t errlen);
/* Loads PATH: "ollama:NAME[:TAG]" (ollama.h), a regular file (GGUF,
 * model_gguf.h) or a Hugging Face directory. On failure returns an FY_E*
 * code, ERR says what and where (the file, the tensor or key, the reason). */
int fy_model_load(const char *path, fy_model **out, char *err, size_t errlen);
void fy_model_free(fy_model *m);

/* inv_freq[i] for i < head_dim/2: theta^(-2i/head_dim), with the config's
 * rope_scaling (linear: divided by factor; llama3: Meta's smooth
 * wavelength-dependent interpolation), then divided by rope_freq_factors[i]
 * when there are such. */
void fy_model_rope_inv_freq(const fy_model_config *c, float *inv_freq);

#endif
