// cache.cuh: writes into the paged KV cache (reshape-and-cache) and
// copy-on-write block copies. Layout: kernels/backend.h, F16, BF16 or F32
// elements.
#ifndef FY_CUDA_CACHE_CUH
#define FY_CUDA_CACHE_CUH

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

// Token t's K and V rows [n_kv_heads*head_dim] (fp32) go to slot slots[t]
// (block slots[t] / block_size, row slots[t] % block_size); slots < 0 are
// padding and skipped, rounded to nearest to KV_DTYPE (fy_dtype: F16, BF16 or
// F32). head_dim % 8 == 0.
cudaError_t fy_cache_write_launch(cudaStream_t stream, int kv_dtype, void *k_cache, void *v_cache,
                                  const float *k, const float *v, const int32_t *slots, int T,
                                  int n_kv_heads, int head_dim, int block_size);

// For each pair i: block dst[i] of both caches becomes a copy of block
// src[i]. BLOCK_BYTES % 16 == 0.
cudaError_t fy_block_copy_launch(cudaStream_t stream, void *k_cache, void *v_cache,
                                 const int32_t *src, const int32_t *dst, int n_pairs,
                                 size_t block_bytes);

#endif
