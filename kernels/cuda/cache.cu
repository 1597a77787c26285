// cache.cu: reshape-and-cache and block copy.
#include "kernels/cuda/cache.cuh"

#include "kernels/cuda/dtype.cuh"

// One block per token; each thread converts 8 consecutive values of K and of
// V to KV and stores them as one vector write each.
template <typename KV>
__global__ void fy_cache_write_kernel(KV *k_cache, KV *v_cache, const float *k, const float *v,
                                      const int32_t *slots, int n_kv_heads, int head_dim,
                                      int block_size)
{
    const int t = blockIdx.x;
    const int slot = slots[t];
    if (slot < 0) {
        return;
    }
    const int blk = slot / block_size, off = slot % block_size;
    const int nvec = head_dim / FY_KV_VEC, width = n_kv_heads * head_dim;
    for (int e = threadIdx.x; e < n_kv_heads * nvec; e += blockDim.x) {
        const int h = e / nvec, vi = e % nvec;
        const size_t src = (size_t)t * width + (size_t)h * head_dim + (size_t)vi * FY_KV_VEC;
        const size_t dst =
            (((size_t)blk * n_kv_heads + h) * block_size + off) * head_dim + (size_t)vi * FY_KV_VEC;
        fy_f8 kk, vv;
#pragma unroll
        for (int j = 0; j < FY_KV_VEC; j++) {
            kk.v[j] = k[src + j];
            vv.v[j] = v[src + j];
        }
        fy_kv_store8(k_cache + dst, kk);
        fy_kv_store8(v_cache + dst, vv);
    }
}

cudaError_t fy_cache_write_launch(cudaStream_t stream, int kv_dtype, void *k_cache, void *v_cache,
                                  const float *k, const float *v, const int32_t *slots, int T,
                                  int n_kv_heads, int head_dim, int block_size)
{
    int vecs = n_kv_heads * (head_dim / FY_KV_VEC);
    int threads = vecs < 128 ? 32 * ((vecs + 31) / 32) : 128;
    return fy_kv_dispatch(kv_dtype, [&](auto kv) {
        using KV = decltype(kv);
        fy_cache_write_kernel<KV><<<T, threads, 0, stream>>>(
            (KV *)k_cache, (KV *)v_cache, k, v, slots, n_kv_heads, head_dim, block_size);
        return cudaGetLastError();
    });
}

// grid (pairs, 2 caches): 16-byte copies of one block.
__global__ void fy_block_copy_kernel(uint4 *k_cache, uint4 *v_cache, const int32_t *src,
                                     const int32_t *dst, size_t block_vecs)
{
    uint4 *cache = blockIdx.y == 0 ? k_cache : v_cache;
    const size_t s = (size_t)src[blockIdx.x] * block_vecs, d = (size_t)dst[blockIdx.x] * block_vecs;
    for (size_t i = threadIdx.x; i < block_vecs; i += blockDim.x) {
        cache[d + i] = cache[s + i];
    }
}

cudaError_t fy_block_copy_launch(cudaStream_t stream, void *k_cache, void *v_cache,
                                 const int32_t *src, const int32_t *dst, int n_pairs,
                                 size_t block_bytes)
{
    dim3 grid(n_pairs, 2);
    fy_block_copy_kernel<<<grid, 256, 0, stream>>>((uint4 *)k_cache, (uint4 *)v_cache, src, dst,
                                                   block_bytes / 16);
    return cudaGetLastError();
}
