// rope.cuh: rotary position embedding (either pair layout of backend.h).
#ifndef FY_CUDA_ROPE_CUH
#define FY_CUDA_ROPE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

// For every token t and head of Q ([T x n_heads*head_dim]) and K ([T x
// n_kv_heads*head_dim]): pair i of PAIRS (FY_ROPE_PAIRS_*) rotated by
// fy_rope_pair at angle pos[t] * inv_freq[i]. K may be NULL (n_kv_heads ignored).
cudaError_t fy_rope_launch(cudaStream_t stream, float *q, float *k, const int32_t *pos, int T,
                           int n_heads, int n_kv_heads, int head_dim, const float *inv_freq,
                           int pairs);

#endif
