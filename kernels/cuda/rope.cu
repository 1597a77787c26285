// rope.cu: one thread per rotated pair; the rotation is kernels/math.h's.
#include "kernels/cuda/rope.cuh"

#include "kernels/math.h"

__global__ void fy_rope_kernel(float *q, float *k, const int32_t *pos, int n_heads, int n_kv_heads,
                               int head_dim, const float *inv_freq, int pairs)
{
    const int t = blockIdx.x, half = head_dim / 2;
    const int heads = n_heads + (k ? n_kv_heads : 0);
    const int p = pos[t];
    for (int e = threadIdx.x; e < heads * half; e += blockDim.x) {
        const int h = e / half, i = e % half;
        float *row = h < n_heads ? q + ((size_t)t * n_heads + h) * head_dim
                                 : k + ((size_t)t * n_kv_heads + (h - n_heads)) * head_dim;
        fy_rope_pair(&row[fy_rope_first(i, half, pairs)], &row[fy_rope_second(i, half, pairs)], p,
                     inv_freq[i]);
    }
}

cudaError_t fy_rope_launch(cudaStream_t stream, float *q, float *k, const int32_t *pos, int T,
                           int n_heads, int n_kv_heads, int head_dim, const float *inv_freq,
                           int pairs)
{
    fy_rope_kernel<<<T, 128, 0, stream>>>(q, k, pos, n_heads, n_kv_heads, head_dim, inv_freq,
                                          pairs);
    return cudaGetLastError();
}
