/* model.h: a Hugging Face model directory, validated and memory-mapped.
 *
 * config.json is read into fy_model_config (every field checked); weights
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

#include <stddef.h>
#include <stdint.h>

enum { FY_ROPE_NONE = 0, FY_ROPE_LINEAR, FY_ROPE_LLAMA3 };
#define FY_MODEL_MAX_EOS 8

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
    char name[256];                 /* the directory's last component, the API's model id */
    fy_tensor embed, norm, lm_head; /* lm_head == embed when tied */
    fy_layer *layers;
    size_t weight_bytes; /* bytes of all tensors used */
    void *priv;          /* mappings */
} fy_model;

/* Parses and validates config.json text (for tests and fuzzing). */
int fy_model_config_parse(const char *json, size_t len, fy_model_config *cfg, char *err,
                          size_t errlen);
/* Loads DIR. On failure returns an FY_E* code, ERR says what and where. */
int fy_model_load(const char *dir, fy_model **out, char *err, size_t errlen);
void fy_model_free(fy_model *m);

/* inv_freq[i] for i < head_dim/2: theta^(-2i/head_dim), with the config's
 * rope_scaling (linear: divided by factor; llama3: Meta's smooth
 * wavelength-dependent interpolation). */
void fy_model_rope_inv_freq(const fy_model_config *c, float *inv_freq);

#endif
