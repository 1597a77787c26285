/* tokenizer.h: Hugging Face tokenizer.json BPE tokenizers.
 *
 * Both families: SentencePiece style (Llama 2, Mistral: Prepend/Replace
 * normalizer or Metaspace pre-tokenizer, byte fallback) and byte-level
 * (GPT-2, Llama 3, Qwen2 split patterns, run by PCRE2). Added/special tokens
 * are matched before the model; BOS/EOS come from the post-processor and
 * tokenizer_config.json beside tokenizer.json.
 *
 * A tokenizer is immutable once loaded and safe to share between threads. */
#ifndef FY_ENGINE_TOKENIZER_H
#define FY_ENGINE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct fy_tokenizer fy_tokenizer;

/* PATH: a tokenizer.json, or a directory holding one (and optionally
 * tokenizer_config.json). Errors name the file and the field. */
int fy_tokenizer_load(const char *path, fy_tokenizer **out, char *err, size_t errlen);
void fy_tokenizer_free(fy_tokenizer *t);

int fy_tokenizer_vocab_size(const fy_tokenizer *t);
int fy_tokenizer_bos(const fy_tokenizer *t);    /* -1 when none */
int fy_tokenizer_eos(const fy_tokenizer *t);    /* -1 when none */
int fy_tokenizer_is_special(const fy_tokenizer *t, int32_t id);
int32_t fy_tokenizer_token_id(const fy_tokenizer *t, const char *piece); /* -1 when unknown */
/* The token's vocabulary string (e.g. "▁the", "Ġthe", "<0x0A>"), NULL when out of range. */
const char *fy_tokenizer_piece(const fy_tokenizer *t, int32_t id);

typedef struct {
    int add_special;   /* add BOS/EOS as the post-processor says (a chat prompt's BOS) */
    int parse_special; /* special-token text in the input becomes that token */
} fy_encode_options;

/* Encodes TEXT[0..LEN) (UTF-8; invalid input is refused with FY_EINVAL).
 * *IDS is malloc'd; the caller frees it. */
int fy_tokenizer_encode(const fy_tokenizer *t, const char *text, size_t len,
                        const fy_encode_options *o, int32_t **ids, size_t *n);

/* Decodes IDS into a malloc'd NUL-terminated string (*OUT, length *LEN).
 * SKIP_SPECIAL drops special tokens. */
int fy_tokenizer_decode(const fy_tokenizer *t, const int32_t *ids, size_t n, int skip_special,
                        char **out, size_t *len);

/* Incremental detokenization for streaming: feed ids one at a time; each call
 * returns the new text that is now final. Never emits a partial UTF-8
 * sequence: bytes of an incomplete character are held until it completes
 * (or flushed as U+FFFD by fy_detok_finish). */
typedef struct fy_detok fy_detok;
fy_detok *fy_detok_new(const fy_tokenizer *t, int skip_special);
/* Appends ID; *OUT points at the new text (valid until the next call), *LEN its bytes. */
int fy_detok_push(fy_detok *d, int32_t id, const char **out, size_t *len);
/* End of stream: whatever is held, made valid UTF-8. */
int fy_detok_finish(fy_detok *d, const char **out, size_t *len);
void fy_detok_free(fy_detok *d);

#endif
