/* sampler.h: picking the next token from a row of logits.
 *
 * Order of the transforms (vLLM's): a constrained request's mask, logit_bias (added), repetition penalty (HF/CTRL, over the
 * prompt and the generated tokens), presence and frequency penalties
 * (OpenAI, over the generated tokens), then greedy (temperature 0: argmax,
 * lowest id on ties) or temperature, top-k, top-p, min-p and a draw.
 * The per-element math is kernels/math.h's fy_logit_*, shared with CUDA.
 *
 * Randomness is counter-based: the draw for the token at position POS of
 * sample INDEX is a SplitMix64 hash of (seed, index, pos). The same seed
 * gives the same output whatever else is in the batch, and a sequence
 * recomputed after preemption draws the same numbers again.
 *
 * Logprobs are those of the raw model distribution (log-softmax of the
 * logits before logit_bias, penalties and temperature), as vLLM returns by
 * default:
 * the sampled token's and the top N alternatives', best first.
 *
 * For top-p, tokens whose logit is more than 30 below the maximum (relative
 * probability < 1e-13) are dropped before sorting: together they can't move
 * a float cumulative sum, and it keeps the sort short. */
#ifndef FY_ENGINE_SAMPLER_H
#define FY_ENGINE_SAMPLER_H

#include "runner/engine/engine.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fy_sampler fy_sampler;

/* Scratch for one row at a time (the engine thread has one). */
int fy_sampler_new(int vocab, fy_sampler **out);
void fy_sampler_free(fy_sampler *sm);

/* Checks S's ranges (logit_bias: count and values; its ids are the engine's
 * to check against the vocabulary); returns 0 or FY_EINVAL with ERR naming
 * the field. */
int fy_sampling_validate(const fy_sampling *s, char *err, size_t errlen);

/* The uniform draw in [0, 1) for (SEED, INDEX, POS). */
double fy_sampler_uniform(uint64_t seed, int index, int pos);

/* 1 when fy_sampler_pick would return the plain argmax of the raw logits
 * (greedy, no logit_bias, no penalties, no logprobs asked), so a backend may compute the
 * argmax where the logits are and skip the sampler. */
int fy_sampling_is_plain_argmax(const fy_sampling *s);

/* The raw logprob of ID in LOGITS (vocab floats, read only) and the N_TOP
 * likeliest ids' (best first) into OUT (id set to ID), as fy_sampler_pick
 * reports a sampled token's: for prompt tokens. */
void fy_sampler_logprobs(const fy_sampler *sm, const float *logits, int32_t id, int n_top,
                         fy_gen_token *out);

/* Picks the next token of a sequence whose tokens are TOKENS[0..N_TOKENS)
 * (the first N_PROMPT the prompt) from LOGITS (vocab floats, overwritten).
 * SEED and INDEX key the draw (see above); the position is N_TOKENS. Fills
 * OUT (id, and logprobs when S->logprobs >= 0) and returns the id. */
int32_t fy_sampler_pick(fy_sampler *sm, const fy_sampling *s, uint64_t seed, int index,
                        float *logits, const int32_t *tokens, int n_tokens, int n_prompt,
                        fy_gen_token *out);

/* fy_sampler_pick over only the tokens ALLOW has (bit I of allow[I / 32];
 * NULL: all): the others' logits become -inf before logit_bias, penalties,
 * temperature and top-k/p (constrained decoding's mask; the logprobs
 * reported stay those of the raw distribution). ALLOW must have at least
 * one token. */
int32_t fy_sampler_pick_masked(fy_sampler *sm, const fy_sampling *s, const uint32_t *allow,
                               uint64_t seed, int index, float *logits, const int32_t *tokens,
                               int n_tokens, int n_prompt, fy_gen_token *out);

#endif
