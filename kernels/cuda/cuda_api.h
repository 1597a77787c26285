/* cuda_api.h: what the CUDA backend offers beyond the ops table of
 * kernels/backend.h, callable from C (no CUDA types): sampling on device
 * logits, the KV-cache budget, and tensor parallelism over the GPUs of one
 * box (NCCL). Every function takes a backend made by fy_cuda_backend_create
 * or fy_cuda_tp_create; passing another backend is refused with FY_EINVAL.
 *
 * Tensor parallelism (Megatron layout), for N ranks r = 0..N-1, one host
 * thread per rank, each driving its own backend:
 *   - column-parallel q, k, v, gate, up: rank r holds rows
 *     [r*R/N, (r+1)*R/N) of W [R x C] (its heads / its MLP columns) and
 *     computes its slice of the output with the ordinary matmul op;
 *   - attention runs on the rank's n_heads/N query and n_kv_heads/N kv heads
 *     (its own KV cache holds only those heads);
 *   - row-parallel o and down: rank r holds columns [r*C/N, (r+1)*C/N) of
 *     W [R x C]; its matmul yields a partial sum of the full output, and
 *     fy_cuda_tp_all_reduce() adds the partials of all ranks in place;
 *   - embeddings, norms and lm_head are replicated (every rank computes the
 *     same residual stream).
 * The all-reduce is a collective: every rank must call it, in the same
 * order, with the same N. */
#ifndef FY_CUDA_API_H
#define FY_CUDA_API_H

#include "kernels/backend.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Per-row sampling parameters for fy_cuda_sample_filter (device memory).
 * Order applied: repetition then presence/frequency penalty on tokens seen
 * (count > 0), temperature (logit * inv_temperature), top-k (logits below
 * the k-th largest become -inf; ties with it are kept; top_k <= 0 or >=
 * vocab: off), top-p (the largest threshold whose kept set, logits >= it,
 * holds at least top_p of the probability mass; top_p <= 0 or >= 1: off). */
typedef struct {
    float inv_temperature; /* 1/temperature; temperature 0 is greedy: use argmax */
    float repetition;      /* 1: off */
    float presence, frequency;
    float top_p;
    int32_t top_k;
} fy_sample_params;

/* Queues the filter on N rows of VOCAB logits (device memory, in place).
 * COUNTS: [N x VOCAB] occurrences per token (device memory) or NULL. Errors
 * surface at the next sync(). */
void fy_cuda_sample_filter(fy_backend *be, float *logits, const int32_t *counts,
                           const fy_sample_params *params, int n, int vocab);

/* Bytes for the KV cache under --gpu-memory-utilization FRACTION: that
 * fraction of the device memory free NOW (call it after the weights and the
 * step scratch are allocated), rounded down to a MiB. 0 when FRACTION is not
 * in (0, 1]. */
size_t fy_cuda_kv_budget(fy_backend *be, double fraction);

/* Which decode-attention kernel the attention op runs for a batch of
 * N_TOKENS single-token rows whose longest context is MAX_CTX: 1 (single
 * pass) or 2 (partitioned + reduce); the rule is documented in
 * kernels/cuda/paged_attention.cuh. 0 for a non-CUDA backend. */
int fy_cuda_attention_variant(fy_backend *be, int max_ctx, int n_tokens, int n_heads);

/* --- Tensor parallelism ----------------------------------------------------- */

typedef struct fy_cuda_tp fy_cuda_tp;

/* Makes N backends, one per device DEVICES[i] (NULL: 0..N-1), joined by one
 * NCCL communicator (ncclCommInitAll). N in [1, 16]. Fails with FY_ENOTSUP
 * when the build has no NCCL or fewer than N devices are present. */
int fy_cuda_tp_create(int n, const int *devices, fy_cuda_tp **out, char *err, size_t errlen);
/* Destroys the communicator and the backends. */
void fy_cuda_tp_destroy(fy_cuda_tp *tp);
int fy_cuda_tp_size(const fy_cuda_tp *tp);
/* Rank R's backend (owned by TP; do not destroy it on its own). */
fy_backend *fy_cuda_tp_backend(fy_cuda_tp *tp, int r);

/* Sum of BUF (N floats, device memory of BE) over every rank, in place, on
 * BE's stream. A backend outside a TP group of size > 1 leaves BUF as is. */
void fy_cuda_tp_all_reduce(fy_backend *be, float *buf, size_t n);

/* Shards of a host weight W [R x C] for rank R of N, uploaded to BE:
 * column-parallel (COLUMN = 1) takes rows [r*R/N, (r+1)*R/N); row-parallel
 * (COLUMN = 0) takes columns [r*C/N, (r+1)*C/N) of every row (one strided
 * copy, no host staging). A 1-D tensor (rows == 1: a q/k/v bias) is split
 * along its only dimension when column-parallel and replicated otherwise.
 * The split dimension must divide by N. On success *OUT describes device
 * memory owned by the caller (free it with be->ops->free). */
int fy_cuda_tp_shard(fy_backend *be, const fy_tensor *w, int column, int rank, int n,
                     fy_tensor *out, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
