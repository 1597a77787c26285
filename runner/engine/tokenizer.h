/* tokenizer.h: BPE tokenizers from Hugging Face tokenizer.json or GGUF metadata.
 *
 * Both families: SentencePiece style (Llama 2, Mistral: Prepend/Replace
 * normalizer or Metaspace pre-tokenizer, byte fallback) and byte-level
 * (GPT-2, Llama 3, Qwen2 split patterns, run by PCRE2). Added/special tokens
 * are matched before the model; BOS/EOS come from the post-processor and
 * tokenizer_config.json beside tokenizer.json.
 *
 * A tokenizer is immutable once loaded and safe to share between threads.
 *
 * Fidelity: ids equal Hugging Face tokenizers' for the supported components
 * (model BPE; normalizers Sequence, Prepend, Replace, NFC/NFD/NFKC/NFKD,
 * Lowercase, Strip; pre-tokenizers Sequence, Split, Metaspace, ByteLevel,
 * Digits; post-processors TemplateProcessing, ByteLevel, Roberta/Bert,
 * Sequence; decoders Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace).
 * Anything else is refused at load with FY_ENOTSUP naming the field.
 * Known, deliberate differences (see tok_encode.c / tok_decode.c):
 *   - Metaspace prepends "▁" even to text that starts with a space, as
 *     SentencePiece does (" Hello" -> "▁▁Hello"), so decode(encode(s)) == s;
 *   - invalid UTF-8 from byte tokens decodes to one U+FFFD per maximal
 *     ill-formed subsequence (HF's ByteFallback gives one per byte);
 *   - truncation/padding and transformers' clean_up_tokenization_spaces are
 *     not applied; added tokens are matched on the raw text (their
 *     "normalized" flag is not honoured).
 * Round trips: decode(encode(s), skip_special = 0) == s for all valid UTF-8
 * s, except that a SentencePiece-style tokenizer turns a literal U+2581 ("▁")
 * in s into a space, as HF does. */
#ifndef FY_ENGINE_TOKENIZER_H
#define FY_ENGINE_TOKENIZER_H

#include "runner/engine/gguf.h"
#include "runner/engine/gguf_write.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fy_tokenizer fy_tokenizer;

/* PATH: a tokenizer.json, or a directory holding one (and optionally
 * tokenizer_config.json). Errors name the file and the field. */
int fy_tokenizer_load(const char *path, fy_tokenizer **out, char *err, size_t errlen);
void fy_tokenizer_free(fy_tokenizer *t);

/* The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata
 * (runner/engine/tokenizer_gguf.c), built into the same structure as a
 * tokenizer.json one, so encoding and decoding are the same code:
 *   - model "llama": SentencePiece BPE. Adjacent symbols merge highest
 *     tokenizer.ggml.scores first (ties to the leftmost pair), text gets a
 *     "▁" prefix (add_space_prefix, default true: at the start and after each
 *     added token, as llama.cpp does) and spaces become "▁"; characters not
 *     in the vocabulary fall back to <0xNN> byte tokens. BOS added unless
 *     add_bos_token says no, EOS only when add_eos_token says so.
 *   - model "gpt2": byte-level BPE with tokenizer.ggml.merges ("left right",
 *     rank = index), split first by the pattern tokenizer.ggml.pre names:
 *     "default" (also when absent), "gpt-2", "llama-bpe" (Llama 3: whole
 *     words in the vocabulary skip the merges; BOS added by default) or
 *     "qwen2". add_bos_token / add_eos_token default to no otherwise.
 * Token types (tokenizer.ggml.token_type, optional: all normal): control (3)
 * and unknown (2) tokens are special (fy_tokenizer_is_special; matched in
 * text only with parse_special), user-defined (4) ones are matched in any
 * text; byte (6) tokens must read <0xNN>. Special ids come from
 * tokenizer.ggml.{bos,eos,unknown,padding}_token_id (0xFFFFFFFF: none);
 * for llama the defaults are llama.cpp's (1, 2, 0) when those ids exist.
 * Every array is checked: lengths agree with tokenizer.ggml.tokens, tokens
 * are valid UTF-8 of at most 4096 bytes without NUL and not given twice,
 * scores are numbers, types are 1-6, ids are in range, each merge names two
 * tokens whose concatenation is a token. A refusal returns FY_EPARSE
 * (FY_ENOTSUP for an unknown model or pre-tokenizer, FY_ETOOBIG past a
 * cap, FY_ENOMEM) with ERR naming the file, the key (and index) and the
 * reason. G may be freed once this returns: the tokenizer copies what it
 * keeps. */
int fy_tokenizer_from_gguf(const fy_gguf *g, fy_tokenizer **out, char *err, size_t errlen);

/* Adds T's tokenizer.ggml.* keys to W as llama.cpp's converter writes them
 * (runner/engine/tokenizer_export.c), so that fy_tokenizer_from_gguf of the
 * file encodes as T does: model "llama" (tokens, scores, token types,
 * bos/eos/unknown ids, add_bos/add_eos/add_space_prefix) for a
 * SentencePiece-style T, "gpt2" (tokens, token types, merges, pre: gpt-2,
 * llama-bpe or qwen2) for a byte-level one. The token list is padded with
 * "[PADn]" to N_VOCAB entries when N_VOCAB (the model's vocabulary) is
 * larger. Returns 0; FY_ENOTSUP (a byte-level split pattern without a
 * tokenizer.ggml.pre name), FY_EEXIST (a key W already has) or FY_ENOMEM with
 * ERR saying why. */
int fy_tokenizer_to_gguf(const fy_tokenizer *t, int32_t n_vocab, fy_gguf_writer *w, char *err,
                         size_t errlen);

int fy_tokenizer_vocab_size(const fy_tokenizer *t);
int fy_tokenizer_bos(const fy_tokenizer *t); /* -1 when none */
int fy_tokenizer_eos(const fy_tokenizer *t); /* -1 when none */
int fy_tokenizer_is_special(const fy_tokenizer *t, int32_t id);
int32_t fy_tokenizer_token_id(const fy_tokenizer *t, const char *piece); /* -1 when unknown */
/* The token's vocabulary string (e.g. "▁the", "Ġthe", "<0x0A>"), NULL when out of range. */
const char *fy_tokenizer_piece(const fy_tokenizer *t, int32_t id);
/* The bytes token ID stands for inside a text, i.e. not as its first token
 * (" the" for "▁the" and "Ġthe", one byte for "<0x0A>", a special token's
 * text): what it adds to a decode of the tokens before it, before the bytes
 * are made valid UTF-8 (a byte token may be part of a character). *LEN gets
 * the length; NULL (and 0) for an id without a token. Valid as long as T. */
const char *fy_tokenizer_token_bytes(const fy_tokenizer *t, int32_t id, size_t *len);

typedef struct {
    int add_special;   /* add BOS/EOS as the post-processor says (a chat prompt's BOS) */
    int parse_special; /* special-token text in the input becomes that token */
} fy_encode_options;

/* Encodes TEXT[0..LEN) (UTF-8; invalid input is refused with FY_EINVAL,
 * more than 64 MiB with FY_ETOOBIG). *IDS is malloc'd (also when *N is 0);
 * the caller frees it. O may be NULL (no specials added or parsed). Non-special
 * added tokens are always matched, as HF does. */
int fy_tokenizer_encode(const fy_tokenizer *t, const char *text, size_t len,
                        const fy_encode_options *o, int32_t **ids, size_t *n);

/* Decodes IDS into a malloc'd NUL-terminated string (*OUT, length *LEN),
 * always valid UTF-8. SKIP_SPECIAL drops special tokens. Ids with no token
 * (negative, >= vocab size, or a gap) are skipped, as HF does. A decoder's
 * Strip after Fuse (Llama 2) drops the one space at the start of the text
 * that the encoder's "▁" prefix stands for. Returns 0, FY_EINVAL or FY_ENOMEM. */
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
/* Feeds a prompt's IDS[0..N) to a new D without returning their text, so the
 * text D returns next continues the prompt's: a completion G of a prompt P
 * reads decode(P + G) minus decode(P), as vLLM's incremental detokenization
 * with the prompt as its prefix gives it. The start-of-text rules (a Strip
 * after Fuse's leading space, Metaspace's first "▁") are spent on P, so a
 * completion keeps the space of its first "▁word"; the bytes of a character
 * P leaves incomplete are held, to be completed by G. Reads only P's first
 * tokens (until its text began) and its last 4 bytes, whatever P's length.
 * Returns 0 or FY_ENOMEM. */
int fy_detok_prime(fy_detok *d, const int32_t *ids, size_t n);
/* End of stream: whatever is held, made valid UTF-8. */
int fy_detok_finish(fy_detok *d, const char **out, size_t *len);
void fy_detok_free(fy_detok *d);

#endif
