// paged_attention.cu: decode attention kernels over the paged KV cache.
//
// One thread block computes one (token, query head, partition): it walks the
// partition's key slots through the sequence's block table, keeps the
// partition's logits in shared memory, folds them into an online-softmax
// state (kernels/math.h, the same math the CPU backend runs), then streams
// the values weighted by the normalised scores. GQA: query head h reads
// kv head h / (n_heads / n_kv_heads); the heads of one group hit the same
// cache lines back to back, which L2 serves.
//
// v1 (single pass) writes the normalised row. v2 writes, per partition, the
// unnormalised output and its (max, sum) softmax state; the reduce kernel
// merges them with fy_softmax_merge. Accumulation is fp32 throughout.
#include "kernels/cuda/paged_attention.cuh"

#include "kernels/cuda/dtype.cuh"
#include "kernels/math.h"

// Sequence of token T: the last s with seq_start[s] <= t (binary search).
__device__ __forceinline__ int fy_pa_seq_of(const int32_t *seq_start, int n_seqs, int t)
{
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (seq_start[mid] <= t) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Keys token T (of sequence SEQ) attends to: positions 0 .. positions[t],
// never past the sequence's context or what its block table can hold.
__device__ __forceinline__ int fy_pa_ctx(const fy_pa_params &p, int t, int seq)
{
    int ctx = min(p.positions[t] + 1, p.ctx_len[seq]);
    return min(ctx, p.max_blocks * p.block_size);
}

// Threads per key row: head_dim/8 vectors, rounded up to a power of two so a
// group is an aligned piece of a warp and xor-shuffles stay inside it.
__host__ __device__ __forceinline__ int fy_pa_group(int head_dim)
{
    int nvec = head_dim / FY_KV_VEC, g = 1;
    while (g < nvec) {
        g <<= 1;
    }
    return g;
}

// Merges the block's per-thread softmax states; every thread gets the result.
__device__ __forceinline__ fy_softmax_state fy_pa_block_state(fy_softmax_state st, float *red)
{
    float fa, fb;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        fy_softmax_state b;
        b.m = __shfl_xor_sync(0xffffffffu, st.m, o);
        b.l = __shfl_xor_sync(0xffffffffu, st.l, o);
        fy_softmax_merge(&st, b, &fa, &fb);
    }
    const int warp = threadIdx.x / 32, nwarps = FY_PA_THREADS / 32;
    if ((threadIdx.x & 31) == 0) {
        red[2 * warp] = st.m;
        red[2 * warp + 1] = st.l;
    }
    __syncthreads();
    fy_softmax_state all = fy_softmax_init();
#pragma unroll
    for (int w = 0; w < nwarps; w++) {
        fy_softmax_state b;
        b.m = red[2 * w];
        b.l = red[2 * w + 1];
        fy_softmax_merge(&all, b, &fa, &fb);
    }
    return all;
}

template <typename KV, bool PARTITIONED>
__global__ void __launch_bounds__(FY_PA_THREADS) fy_paged_attention_kernel(fy_pa_params p)
{
    const KV *k_cache = (const KV *)p.k_cache, *v_cache = (const KV *)p.v_cache;
    extern __shared__ float smem[];
    const int head = blockIdx.x, t = blockIdx.y, part = blockIdx.z;
    const int D = p.head_dim, nvec = D / FY_KV_VEC;
    const int seq = fy_pa_seq_of(p.seq_start, p.n_seqs, t);
    const int ctx = fy_pa_ctx(p, t, seq);
    const int start = part * p.partition_size;
    if (ctx <= 0 || start >= ctx) {
        // v2: the reduce only reads partitions that hold keys. v1: a row
        // with no keys (only from a malformed batch) is zeros, not garbage.
        if (!PARTITIONED) {
            for (int d = threadIdx.x; d < D; d += FY_PA_THREADS) {
                p.out[((size_t)t * p.n_heads + head) * D + d] = 0.0f;
            }
        }
        return;
    }
    const int n = min(ctx - start, p.partition_size);
    const int kvh = head / (p.n_heads / p.n_kv_heads);
    const int tg = fy_pa_group(D);
    const int lane = threadIdx.x % tg, group = threadIdx.x / tg, ngroups = FY_PA_THREADS / tg;
    const bool has_vec = lane < nvec;
    const int32_t *bt = p.block_tables + (size_t)seq * p.max_blocks;
    const size_t head_off = (size_t)kvh * p.block_size * D + (size_t)lane * FY_KV_VEC;
    const size_t block_stride = (size_t)p.n_kv_heads * p.block_size * D;

    float *logits = smem;                 // [partition_size]
    float *red = smem + p.partition_size; // [FY_PA_THREADS * 8] (and warp states)

    // This thread's 8 query values, pre-scaled.
    fy_f8 q;
    const float *qrow = p.q + ((size_t)t * p.n_heads + head) * D + lane * FY_KV_VEC;
#pragma unroll
    for (int j = 0; j < FY_KV_VEC; j++) {
        q.v[j] = has_vec ? qrow[j] * p.scale : 0.0f;
    }

    // 1. Scores. Every thread runs the same number of iterations so the
    // group's shuffles always have all lanes present.
    for (int base = 0; base < n; base += ngroups) {
        const int i = base + group;
        float dot = 0.0f;
        if (i < n && has_vec) {
            const int tok = start + i;
            const int blk = bt[tok / p.block_size];
            const KV *kp =
                k_cache + (size_t)blk * block_stride + head_off + (size_t)(tok % p.block_size) * D;
            fy_f8 k = fy_kv_load8(kp);
#pragma unroll
            for (int j = 0; j < FY_KV_VEC; j++) {
                dot = fmaf(q.v[j], k.v[j], dot);
            }
        }
        for (int o = tg >> 1; o > 0; o >>= 1) {
            dot += __shfl_xor_sync(0xffffffffu, dot, o);
        }
        if (i < n && lane == 0) {
            logits[i] = dot;
        }
    }
    __syncthreads();

    // 2. Softmax over the partition with the shared online-softmax math.
    fy_softmax_state st = fy_softmax_init();
    for (int i = threadIdx.x; i < n; i += FY_PA_THREADS) {
        float w;
        (void)fy_softmax_push(&st, logits[i], &w);
    }
    st = fy_pa_block_state(st, red);
    const float inv_l = PARTITIONED ? 1.0f : 1.0f / st.l;
    for (int i = threadIdx.x; i < n; i += FY_PA_THREADS) {
        logits[i] = expf(logits[i] - st.m) * inv_l;
    }
    __syncthreads();

    // 3. Weighted values: each group accumulates the rows it visits.
    fy_f8 acc;
#pragma unroll
    for (int j = 0; j < FY_KV_VEC; j++) {
        acc.v[j] = 0.0f;
    }
    for (int base = 0; base < n; base += ngroups) {
        const int i = base + group;
        if (i < n && has_vec) {
            const int tok = start + i;
            const int blk = bt[tok / p.block_size];
            const KV *vp =
                v_cache + (size_t)blk * block_stride + head_off + (size_t)(tok % p.block_size) * D;
            fy_f8 v = fy_kv_load8(vp);
            const float w = logits[i];
#pragma unroll
            for (int j = 0; j < FY_KV_VEC; j++) {
                acc.v[j] = fmaf(w, v.v[j], acc.v[j]);
            }
        }
    }
    // Sum the groups' partial rows through shared memory: red[group][D].
    if (has_vec) {
#pragma unroll
        for (int j = 0; j < FY_KV_VEC; j++) {
            red[group * D + lane * FY_KV_VEC + j] = acc.v[j];
        }
    }
    __syncthreads();
    const size_t row = (size_t)t * p.n_heads + head;
    for (int d = threadIdx.x; d < D; d += FY_PA_THREADS) {
        float s = 0.0f;
        for (int g = 0; g < ngroups; g++) {
            s += red[g * D + d];
        }
        if (PARTITIONED) {
            p.tmp_out[(row * p.n_partitions + part) * D + d] = s;
        } else {
            p.out[row * D + d] = s;
        }
    }
    if (PARTITIONED && threadIdx.x == 0) {
        p.tmp_m[row * p.n_partitions + part] = st.m;
        p.tmp_l[row * p.n_partitions + part] = st.l;
    }
}

// v2 reduce: one block per (head, token) merges the partitions that hold keys.
__global__ void __launch_bounds__(FY_PA_THREADS) fy_paged_attention_reduce_kernel(fy_pa_params p)
{
    const int head = blockIdx.x, t = blockIdx.y, D = p.head_dim;
    const int ctx = fy_pa_ctx(p, t, fy_pa_seq_of(p.seq_start, p.n_seqs, t));
    const size_t row = (size_t)t * p.n_heads + head;
    if (ctx <= 0) {
        for (int d = threadIdx.x; d < D; d += FY_PA_THREADS) {
            p.out[row * D + d] = 0.0f;
        }
        return;
    }
    const int nparts = min((ctx + p.partition_size - 1) / p.partition_size, p.n_partitions);
    for (int d = threadIdx.x; d < D; d += FY_PA_THREADS) {
        fy_softmax_state st = fy_softmax_init();
        float acc = 0.0f, fa, fb;
        for (int k = 0; k < nparts; k++) {
            fy_softmax_state b;
            b.m = p.tmp_m[row * p.n_partitions + k];
            b.l = p.tmp_l[row * p.n_partitions + k];
            fy_softmax_merge(&st, b, &fa, &fb);
            acc = acc * fa + p.tmp_out[(row * p.n_partitions + k) * D + d] * fb;
        }
        p.out[row * D + d] = st.l > 0.0f ? acc / st.l : 0.0f;
    }
}

int fy_pa_use_v1(int max_ctx, int n_tokens, int n_heads, int sm_count)
{
    if (max_ctx <= FY_PA_PARTITION) {
        return 1;
    }
    return max_ctx <= FY_PA_V1_MAX_CTX && (long)n_tokens * n_heads >= 4L * sm_count;
}

size_t fy_pa_v2_scratch_floats(int n_tokens, int n_heads, int head_dim, int n_partitions)
{
    size_t rows = (size_t)n_tokens * n_heads * n_partitions;
    return rows * head_dim + 2 * rows;
}

cudaError_t fy_pa_launch(cudaStream_t stream, fy_pa_params p, int max_ctx, int use_v1, float *tmp)
{
    const size_t red = (size_t)FY_PA_THREADS * FY_KV_VEC;
    if (use_v1) {
        // Round up to a whole number of 32 so the shared arrays stay aligned.
        p.partition_size = (max_ctx + 31) & ~31;
        p.n_partitions = 1;
        size_t smem = ((size_t)p.partition_size + red) * sizeof(float);
        dim3 grid(p.n_heads, p.n_tokens, 1);
        return fy_kv_dispatch(p.kv_dtype, [&](auto kv) {
            fy_paged_attention_kernel<decltype(kv), false>
                <<<grid, FY_PA_THREADS, smem, stream>>>(p);
            return cudaGetLastError();
        });
    }
    p.partition_size = FY_PA_PARTITION;
    p.n_partitions = (max_ctx + FY_PA_PARTITION - 1) / FY_PA_PARTITION;
    size_t rows = (size_t)p.n_tokens * p.n_heads * p.n_partitions;
    p.tmp_out = tmp;
    p.tmp_m = tmp + rows * p.head_dim;
    p.tmp_l = p.tmp_m + rows;
    size_t smem = ((size_t)FY_PA_PARTITION + red) * sizeof(float);
    dim3 grid(p.n_heads, p.n_tokens, p.n_partitions);
    cudaError_t e = fy_kv_dispatch(p.kv_dtype, [&](auto kv) {
        fy_paged_attention_kernel<decltype(kv), true><<<grid, FY_PA_THREADS, smem, stream>>>(p);
        return cudaGetLastError();
    });
    if (e != cudaSuccess) {
        return e;
    }
    dim3 rgrid(p.n_heads, p.n_tokens);
    fy_paged_attention_reduce_kernel<<<rgrid, FY_PA_THREADS, 0, stream>>>(p);
    return cudaGetLastError();
}
