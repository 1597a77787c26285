// paged_attention.cuh: decode attention over the paged KV cache (one query
// row per token), single-pass (v1) and partitioned (v2 + reduce), and the
// rule that picks between them.
//
// KV layout (kernels/backend.h): cache[block][kv_head][slot][head_dim], F16.
// One key row is head_dim contiguous halves; a "thread group" of
// head_dim/8 threads (rounded up to a power of two) reads it as 16-byte
// vectors, and consecutive groups of a warp read consecutive slots of the
// same block, so a warp's load is one contiguous run of memory (fully
// coalesced 16-byte loads, 512 bytes per warp for head_dim 128).
#ifndef FY_CUDA_PAGED_ATTENTION_CUH
#define FY_CUDA_PAGED_ATTENTION_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define FY_PA_THREADS      128  // threads per block (4 warps)
#define FY_PA_PARTITION    512  // tokens per partition in v2
#define FY_PA_V1_MAX_CTX   8192 // v1 keeps every logit of a row in shared memory
#define FY_PA_MAX_HEAD_DIM 256

typedef struct {
    float *out;                  // [T x n_heads*head_dim]
    const float *q;              // [T x n_heads*head_dim]
    const void *k_cache;         // [blocks][n_kv_heads][block_size][head_dim] of kv_dtype
    const void *v_cache;         // same layout
    int kv_dtype;                // fy_dtype: F16, BF16 or F32
    const int32_t *positions;    // [T]; token t attends to positions 0..positions[t]
    const int32_t *seq_start;    // [S+1]
    const int32_t *ctx_len;      // [S]; a row never reads past its sequence's context
    const int32_t *block_tables; // [S x max_blocks]
    int n_tokens, n_seqs, max_blocks;
    int n_heads, n_kv_heads, head_dim, block_size;
    float scale;
    int partition_size; // v1: >= the longest context; v2: FY_PA_PARTITION
    int n_partitions;   // v2: partitions of the longest context
    float *tmp_out;     // v2: [T][n_heads][n_partitions][head_dim], unnormalised
    float *tmp_m;       // v2: [T][n_heads][n_partitions] partition max logit
    float *tmp_l;       // v2: [T][n_heads][n_partitions] partition sum of exp
} fy_pa_params;

// The dispatch rule, one place: v2 (partitioned) unless
//  - the longest context fits one partition (v2 would be v1 plus a reduce), or
//  - the context fits v1's shared memory (<= FY_PA_V1_MAX_CTX) AND the
//    (token, head) grid alone fills the GPU (>= 4 blocks per SM), where
//    splitting rows buys no parallelism and costs the partial-result writes
//    and the reduce launch.
// Long contexts with few sequences go to v2: each row is split into
// FY_PA_PARTITION-token pieces so all SMs stream the cache at once.
int fy_pa_use_v1(int max_ctx, int n_tokens, int n_heads, int sm_count);

// Floats of v2 scratch (tmp_out + tmp_m + tmp_l) for these sizes.
size_t fy_pa_v2_scratch_floats(int n_tokens, int n_heads, int head_dim, int n_partitions);

// Queue v1 or v2 on STREAM with P (P.partition_size / n_partitions / tmp_*
// filled by the call). MAX_CTX: longest context of the batch (host value).
// TMP: device scratch of fy_pa_v2_scratch_floats() floats (v2 only).
cudaError_t fy_pa_launch(cudaStream_t stream, fy_pa_params p, int max_ctx, int use_v1, float *tmp);

#endif
