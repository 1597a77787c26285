// prefill_attention.cuh: causal attention for (chunked) prefill over the
// paged KV cache. A sequence's query tokens are this step's chunk, at
// positions start .. start+n-1; their K/V are already in the cache
// (cache_write runs first), so a chunk sees the earlier chunks' keys
// through the block table exactly like its own.
#ifndef FY_CUDA_PREFILL_ATTENTION_CUH
#define FY_CUDA_PREFILL_ATTENTION_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define FY_PF_THREADS 128
#define FY_PF_QT      16 // query rows per block
#define FY_PF_KT      16 // key rows per shared-memory tile

// The attention op picks this kernel when some sequence brings more than
// FY_PF_MIN_QUERY tokens; below that the decode kernels (one query row per
// token) are cheaper and the rows re-read from L2 are few.
#define FY_PF_MIN_QUERY 4

typedef struct {
    float *out;
    const float *q;
    const void *k_cache, *v_cache; // of kv_dtype (fy_dtype: F16, BF16 or F32)
    int kv_dtype;
    const int32_t *positions, *seq_start, *ctx_len, *block_tables;
    int n_seqs, max_blocks;
    int n_heads, n_kv_heads, head_dim, block_size;
    float scale;
} fy_pf_params;

// Dynamic shared memory one block needs for HEAD_DIM.
size_t fy_pf_smem_bytes(int head_dim);

// Raises the kernel's shared-memory limit to BYTES when above the 48 KiB
// default (call once per device; BYTES must not exceed the device's opt-in).
cudaError_t fy_pf_set_smem(size_t bytes);

// Queues the kernel: grid (heads, sequences, query tiles of the longest chunk).
cudaError_t fy_pf_launch(cudaStream_t stream, const fy_pf_params *p, int max_query_len);

#endif
