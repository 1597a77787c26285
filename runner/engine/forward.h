/* forward.h: a loaded model on a backend, and one engine step through it.
 *
 * fy_model (runner/engine/model.h) is the host-side description (config,
 * memory-mapped weights); fy_fwd places it on a backend (weights used in
 * place on the CPU, uploaded once on CUDA), owns the KV cache memory and
 * the step's scratch buffers, and runs the forward pass for a batch that
 * mixes decode and (chunked) prefill tokens of many sequences.
 *
 * The KV cache is NUM_BLOCKS blocks of BLOCK_SIZE token slots, per layer
 * (layout in kernels/backend.h). Block ids come from the engine's block
 * manager (runner/engine/kvcache.h). */
#ifndef FY_ENGINE_FORWARD_H
#define FY_ENGINE_FORWARD_H

#include "kernels/backend.h"
#include "runner/engine/model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fy_fwd fy_fwd;

typedef struct {
    int block_size;       /* tokens per KV block (default 16) */
    size_t kv_bytes;      /* memory for the KV cache, all layers, K and V */
    int max_batch_tokens; /* most tokens one step may carry (scratch is sized for it) */
    int max_seqs;         /* most sequences one step may carry */
} fy_fwd_options;

/* Bytes one KV block takes over all layers (K and V) on BE. */
size_t fy_fwd_block_bytes(const fy_model *m, const fy_backend *be, int block_size);

/* Places M on BE (M and BE must outlive the result). num_blocks =
 * kv_bytes / fy_fwd_block_bytes(); fewer than 1 block is an error (FY_EINVAL
 * with a message naming the memory needed). */
int fy_fwd_create(const fy_model *m, fy_backend *be, const fy_fwd_options *o, fy_fwd **out,
                  char *err, size_t errlen);
void fy_fwd_destroy(fy_fwd *f);
int fy_fwd_num_blocks(const fy_fwd *f);

/* One sequence's share of a step (host memory). */
typedef struct {
    const int32_t *tokens;      /* the N tokens to run, at positions start .. start+N-1 */
    int n_tokens;               /* N >= 1 */
    int start;                  /* position of tokens[0] == tokens already in the cache */
    const int32_t *block_table; /* blocks covering positions 0 .. start+N-1 */
    int n_blocks;
    int want_logits; /* 1: logits of the last token are returned */
} fy_fwd_seq;

/* Runs one step: writes every token's K/V into its slot and, for each
 * sequence with want_logits, the vocabulary logits of its last token into
 * LOGITS (host memory, one row of vocab floats per such sequence, in
 * sequence order). Returns 0 or an FY_E* code. */
int fy_fwd_step(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, float *logits);

/* Copy-on-write: block dst[i] becomes a copy of block src[i] in every
 * layer's K and V cache. */
int fy_fwd_copy_blocks(fy_fwd *f, const int32_t *src, const int32_t *dst, int n);

#endif
