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
 * manager (runner/engine/kvcache.h).
 *
 * Tensor parallelism (tensor_parallel = N > 1): the caller's backend is rank
 * 0 and the forward pass makes a communicator (kernels/backend.h) with N-1
 * more ranks of the same kind: CPU backends with as many threads as rank 0,
 * or CUDA devices D+1 .. D+N-1 for rank 0 on cuda:D, joined by NCCL. Each
 * rank holds rows [r*R/N, (r+1)*R/N) of q, k, v (and their biases), gate and
 * up, columns [r*C/N, (r+1)*C/N) of o and down, and a full copy of the
 * embeddings and norms (lm_head only on rank 0); it runs attention on
 * n_heads/N query and n_kv_heads/N key/value heads with its own KV cache of
 * those heads. The o and down outputs are summed across ranks before each
 * residual add. Rank 0 runs on the thread calling fy_fwd_step, ranks 1..N-1
 * on threads of their own, in lock-step. The model needs n_heads, n_kv_heads
 * and intermediate_size divisible by N. Sums are added in a different order
 * than with N = 1, so logits agree to float rounding, not bit for bit.
 *
 * What crosses host <-> device per step (weights are uploaded once, at
 * create time): up, to every rank, the step's token ids, positions and cache
 * slots [T], seq_start [S+1], ctx_len [S] and block tables [S x max_blocks]
 * (int32), and to rank 0 the rows whose logits are wanted [n_out]; down,
 * from rank 0 only, n_out x vocab float logits (fy_fwd_step) or n_out int32
 * ids (fy_fwd_step_argmax). fy_fwd_copy_blocks uploads its 2n block ids to
 * every rank. Nothing else: the residual stream and K/V never leave the
 * device. */
#ifndef FY_ENGINE_FORWARD_H
#define FY_ENGINE_FORWARD_H

#include "kernels/backend.h"
#include "runner/engine/model.h"

#include <stddef.h>
#include <stdint.h>

typedef struct fy_fwd fy_fwd;

typedef struct {
    int block_size;       /* tokens per KV block (default 16) */
    size_t kv_bytes;      /* memory for the KV cache, all layers, K and V, summed over ranks */
    int max_batch_tokens; /* most tokens one step may carry (scratch is sized for it) */
    int max_seqs;         /* most sequences one step may carry */
    int max_logit_rows;   /* most rows of logits one step may return (fy_fwd_seq.want_logits
                           * summed); 0 or less than max_seqs: max_seqs; at most max_batch_tokens
                           * are kept. Each row costs vocab floats of scratch. */
    int tensor_parallel;  /* ranks (--tensor-parallel); 0 or 1: one backend, as before */
    /* --gpu-memory-utilization: when > 0 (at most 1), kv_bytes is ignored and
     * each rank's KV cache takes this fraction of its backend's mem_free()
     * measured after the weights and step scratch are in place (the same
     * number of blocks on every rank: the smallest). Refused on a backend
     * without device memory (the CPU). 0: use kv_bytes. */
    double kv_mem_fraction;
    /* --kv-cache-dtype: "auto" (NULL), "f32", "f16" or "bf16" (fy_kv_dtype_parse); a type
     * the backend has no kernels for is refused. Read during fy_fwd_create only. */
    const char *kv_dtype;
} fy_fwd_options;

/* Bytes one KV block takes over all layers (K and V) with elements of
 * KV_DTYPE, summed over the ranks (each of N ranks holds 1/N of it). */
size_t fy_fwd_kv_block_bytes(const fy_model *m, fy_dtype kv_dtype, int block_size);
/* The same with BE's "auto" KV type (be->ops->kv_dtype). */
size_t fy_fwd_block_bytes(const fy_model *m, const fy_backend *be, int block_size);
/* The KV cache's element type (kv_dtype resolved). */
fy_dtype fy_fwd_kv_dtype(const fy_fwd *f);

/* Places M on BE (M and BE must outlive the result; with tensor_parallel > 1
 * BE becomes rank 0 and the other ranks' backends are made here and freed by
 * fy_fwd_destroy). num_blocks = kv_bytes / fy_fwd_block_bytes(), or what
 * kv_mem_fraction of the free device memory holds; fewer than 1 block is an
 * error. Errors (message in ERR): FY_EINVAL for bad options, a model whose
 * heads or intermediate size do not divide by tensor_parallel, too little KV
 * memory (naming the memory needed), or kv_mem_fraction on a backend without
 * device memory; FY_ENOTSUP when the ranks' devices (or NCCL) are missing;
 * FY_ENOMEM when weights, scratch or cache do not fit. */
int fy_fwd_create(const fy_model *m, fy_backend *be, const fy_fwd_options *o, fy_fwd **out,
                  char *err, size_t errlen);
void fy_fwd_destroy(fy_fwd *f);
int fy_fwd_num_blocks(const fy_fwd *f);
/* Rows of logits a step may return (max_logit_rows as clamped). */
int fy_fwd_max_logit_rows(const fy_fwd *f);
/* Ranks the forward pass runs on (1 without tensor parallelism). */
int fy_fwd_tensor_parallel(const fy_fwd *f);

/* One sequence's share of a step (host memory). */
typedef struct {
    const int32_t *tokens;      /* the N tokens to run, at positions start .. start+N-1 */
    int n_tokens;               /* N >= 1 */
    int start;                  /* position of tokens[0] == tokens already in the cache */
    const int32_t *block_table; /* blocks covering positions 0 .. start+N-1 */
    int n_blocks;
    int want_logits; /* 0 .. N: the logits of the last WANT_LOGITS tokens are returned (1: the
                      * last token's, to sample; more: prompt logprobs) */
} fy_fwd_seq;

/* Runs one step: writes every token's K/V into its slot and, for each
 * sequence, the vocabulary logits of its last want_logits tokens into LOGITS
 * (host memory, one row of vocab floats per such token, in sequence and
 * token order). FY_EINVAL when the rows exceed max_logit_rows. Returns 0 or
 * an FY_E* code. */
int fy_fwd_step(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, float *logits);

/* fy_fwd_step for greedy sampling: the same step, but for each row of logits
 * only its argmax (lowest id on ties) is written to IDS (host memory, one
 * int32 per row, in the same order), so a device backend downloads 4 bytes
 * per row instead of 4 x vocab. */
int fy_fwd_step_argmax(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, int32_t *ids);

/* Copy-on-write: block dst[i] becomes a copy of block src[i] in every
 * layer's K and V cache. */
int fy_fwd_copy_blocks(fy_fwd *f, const int32_t *src, const int32_t *dst, int n);

#endif
