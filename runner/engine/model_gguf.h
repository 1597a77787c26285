/* model_gguf.h: a model from a GGUF file (llama.cpp's and Ollama's
 * format), its weights used in place in the file's mapping.
 *
 * Reached through fy_model_load() (model.h); declared here for model.c.
 *
 * What is read, every value checked (FILE names the file in each refusal):
 *   - general.architecture: "llama" (Llama 2/3, Mistral, TinyLlama...;
 *     q/k rows in ggml's adjacent-pair RoPE order, FY_ROPE_PAIRS_ADJACENT,
 *     optional q/k/v biases), "qwen2" (q/k/v biases required) or "qwen3"
 *     (per-head RMSNorm on q and k), the last two in rotate-half order
 *     (FY_ROPE_PAIRS_HALF). Anything else is refused by name.
 *   - <arch>.embedding_length, .block_count, .feed_forward_length,
 *     .attention.head_count, .context_length, .attention.layer_norm_rms_epsilon
 *     (required); .attention.head_count_kv (default head_count),
 *     .attention.key_length (default embedding_length / head_count; equal to
 *     .attention.value_length when that is present), .rope.dimension_count
 *     (must equal the head size: partial rotary is refused), .rope.freq_base
 *     (default 10000), .rope.scaling.type ("none" or "linear"; "yarn" and
 *     others refused) with .rope.scaling.factor (or the older
 *     .rope.scale_linear) and .rope.scaling.original_context_length,
 *     .vocab_size (equal to the embedding's rows when present),
 *     .expert_count (0 or absent: mixtures of experts are refused). Integer
 *     keys may have any integer type; per-layer arrays are refused.
 *   - tokenizer.ggml.bos_token_id, .eos_token_id, .eot_token_id,
 *     .eom_token_id (the last three are stop ids; 0xffffffff or -1: none);
 *     tokenizer.ggml.tokens, when present, must list one token per row of
 *     token_embd.weight.
 *   - Tensors (dims[0], the row length, first): token_embd.weight [hidden,
 *     vocab]; output_norm.weight [hidden]; output.weight [hidden, vocab]
 *     (absent: tied to token_embd); per layer N blk.N.attn_norm.weight,
 *     attn_q/attn_k/attn_v/attn_output.weight (+ .bias), attn_q_norm and
 *     attn_k_norm.weight [head size] (qwen3), ffn_norm, ffn_gate, ffn_up,
 *     ffn_down.weight; rope_freqs.weight [head size / 2] (llama.cpp's form
 *     of Llama 3's RoPE scaling: F32 divisors of the frequencies, finite
 *     and > 0). Matrices may have any type the GGUF reader takes (F32, F16,
 *     BF16 and the ggml block types, which stay packed); norms and biases
 *     must be F32, F16 or BF16. Shapes must match the metadata exactly. A
 *     tensor the architecture does not use is refused (as llama.cpp does):
 *     it means the file is not what its metadata says.
 * F32/F16/BF16 tensors that the file's alignment leaves misaligned for
 * their element size get an aligned copy; everything else stays mapped. */
#ifndef FY_ENGINE_MODEL_GGUF_H
#define FY_ENGINE_MODEL_GGUF_H

#include "runner/engine/model.h"

/* Loads the GGUF file PATH. NAME (may be NULL) is the model's name (an
 * Ollama NAME:TAG); NULL: general.name, else the file's stem. Returns 0 and
 * *OUT, which fy_model_free() frees (it calls fy__model_gguf_free), or an
 * FY_E* code with ERR naming the file, the tensor or key, and the reason. */
int fy__model_gguf_load(const char *path, const char *name, fy_model **out, char *err,
                        size_t errlen);
/* The same from G, already parsed (the fuzzer's entry), which the model
 * takes over: G is freed with it, or at once on failure. G's label names
 * the file in messages and its stem is the default name. */
int fy__model_gguf_from(fy_gguf *g, const char *name, fy_model **out, char *err, size_t errlen);
/* Frees a model fy__model_gguf_load() made (M->gguf is set). */
void fy__model_gguf_free(fy_model *m);

#endif
