/* gguf_quantize.h: `ferry-runner quantize`'s core: a model's weights
 * rewritten as a GGUF file of a chosen quantization mix.
 *
 * A mix names the type most matrices get and, for the _M mixes, which get a
 * larger one, as llama.cpp's llama-quantize chooses them (so a file ferry
 * writes has the tensor types a user of llama.cpp expects of "Q4_K_M"):
 *
 *   f16     every matrix F16
 *   q8_0    every matrix Q8_0
 *   q4_0    Q4_0; the output head Q6_K
 *   q4_k_m  Q4_K; the output head Q6_K; attn_v and ffn_down Q6_K in the
 *           layers llama.cpp gives more bits (the first and last eighth,
 *           and every third layer between: use_more_bits below)
 *   q5_k_m  the same with Q5_K
 *   q6_k    every matrix Q6_K
 *
 * 1-D tensors (norms, biases) stay F32. The output head is the output.weight
 * tensor, or token_embd.weight when the model ties them. A matrix whose rows
 * are not a whole number of the chosen type's blocks falls back as llama.cpp
 * does (Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0) and to F16 when even 32
 * does not divide its rows; such tensors are reported (fallback set).
 *
 * Not followed: llama.cpp's special cases for 70B models and for mixtures of
 * experts (neither is an architecture ferry serves). */
#ifndef FY_ENGINE_GGUF_QUANTIZE_H
#define FY_ENGINE_GGUF_QUANTIZE_H

#include "kernels/backend.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    FY_QMIX_F16 = 0,
    FY_QMIX_Q8_0,
    FY_QMIX_Q4_0,
    FY_QMIX_Q4_K_M,
    FY_QMIX_Q5_K_M,
    FY_QMIX_Q6_K,
    FY_QMIX_COUNT
} fy_qmix;

/* "f16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k" (case-insensitive).
 * Returns 0, or FY_EINVAL for another name. */
int fy_qmix_parse(const char *s, fy_qmix *out);
const char *fy_qmix_name(fy_qmix m);
/* The names, "f16|q8_0|...", for help texts. */
const char *fy_qmix_names(void);

/* The type tensor NAME gets under MIX: N_DIMS and COLS (its row length) as
 * in the file, N_LAYERS the model's block count, TIED 1 when the model has no
 * output.weight. *FALLBACK (may be NULL) is set to 1 when the mix's choice
 * did not fit the rows and a wider type was taken. */
fy_dtype fy_qmix_tensor_type(fy_qmix mix, const char *name, int n_dims, uint64_t cols, int n_layers,
                             int tied, int *fallback);

/* One tensor done (or being started, DONE < TOTAL): called in file order. */
typedef struct {
    size_t index, total;
    const char *name;
    fy_dtype from, to;
    int fallback;
} fy_quantize_step;
typedef void (*fy_quantize_progress)(void *data, const fy_quantize_step *s);

/* Writes the model IN as the GGUF file OUT under MIX. IN is
 *   - a GGUF file: every metadata key is kept (general.file_type and
 *     general.quantization_version are set to what the new file holds),
 *     tensors keep their names, shapes and order;
 *   - a Hugging Face directory (model.h's architectures): converted as
 *     llama.cpp's convert_hf_to_gguf.py does: general.architecture llama
 *     (Llama, Mistral) or qwen2, general.name the directory's name, the
 *     <arch>.* hyperparameters, the tokenizer (fy_tokenizer_to_gguf) and
 *     tokenizer.chat_template when the directory has one; tensors renamed
 *     (token_embd, output_norm, output when untied, blk.N.attn_q ...
 *     ffn_down), llama's q and k rows permuted into GGUF's adjacent-pair
 *     RoPE order, norms and biases F32, Llama 3's RoPE scaling as the
 *     rope_freqs.weight tensor.
 * Each matrix is dequantized and quantized to its type row by row. THREADS
 * (0 = one per core) quantize in parallel. The output appears at OUT only
 * when whole. Returns 0 or an FY_E* code with ERR naming the file, the
 * tensor and what went wrong (FY_ENOTSUP for an architecture without a
 * conversion, named). */
int fy_quantize_gguf(const char *in, const char *out, fy_qmix mix, int threads,
                     fy_quantize_progress cb, void *cb_data, char *err, size_t errlen);

#endif
