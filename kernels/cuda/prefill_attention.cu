// prefill_attention.cu: causal attention over the paged cache, FlashAttention
// style in fp32 on the SIMT cores.
//
// A block owns FY_PF_QT query rows of one sequence and one head; it walks the
// key positions 0 .. (its last row's position) in tiles of FY_PF_KT slots,
// loads each K/V tile from the paged cache into shared memory (16-byte F16
// loads, converted to fp32), scores it, and folds the tile into each row's
// online-softmax state with fy_softmax_merge (kernels/math.h), rescaling the
// row's output accumulator by the factor the merge returns. Row r only sees
// keys at positions <= positions[r] (causal; rows of a chunk start past the
// cached prefix, which is what makes chunked prefill work).
#include "kernels/cuda/prefill_attention.cuh"

#include "kernels/cuda/dtype.cuh"
#include "kernels/math.h"

// Shared layout (floats): Q[QT][D] (pre-scaled), O[QT][D], K[KT][D+1] (the +1
// keeps the score loop's column walk free of bank conflicts), V[KT][D],
// P[QT][KT], row state m, l, and the rescale factor of the current tile.
size_t fy_pf_smem_bytes(int head_dim)
{
    size_t D = (size_t)head_dim;
    size_t floats =
        2 * FY_PF_QT * D + FY_PF_KT * (D + 1) + FY_PF_KT * D + FY_PF_QT * FY_PF_KT + 3 * FY_PF_QT;
    return floats * sizeof(float);
}

template <typename KV>
__global__ void __launch_bounds__(FY_PF_THREADS) fy_prefill_attention_kernel(fy_pf_params p)
{
    const KV *k_cache = (const KV *)p.k_cache, *v_cache = (const KV *)p.v_cache;
    extern __shared__ float smem[];
    const int head = blockIdx.x, seq = blockIdx.y, tile = blockIdx.z;
    const int D = p.head_dim, nvec = D / FY_KV_VEC, KD = D + 1;
    const int q0 = p.seq_start[seq], qn = p.seq_start[seq + 1] - q0;
    const int r0 = tile * FY_PF_QT;
    if (r0 >= qn) {
        return;
    }
    const int rows = min(FY_PF_QT, qn - r0);
    const int kvh = head / (p.n_heads / p.n_kv_heads);
    const int32_t *bt = p.block_tables + (size_t)seq * p.max_blocks;
    const size_t block_stride = (size_t)p.n_kv_heads * p.block_size * D;
    const size_t head_off = (size_t)kvh * p.block_size * D;
    // Last key position any row may see: the block table's reach and the
    // sequence's context bound every row's causal limit.
    const int cap = min(p.max_blocks * p.block_size, p.ctx_len[seq]);

    float *Qs = smem;
    float *Os = Qs + FY_PF_QT * D;
    float *Ks = Os + FY_PF_QT * D;
    float *Vs = Ks + FY_PF_KT * KD;
    float *Ps = Vs + FY_PF_KT * D;
    float *row_m = Ps + FY_PF_QT * FY_PF_KT;
    float *row_l = row_m + FY_PF_QT;
    float *row_f = row_l + FY_PF_QT;

    for (int e = threadIdx.x; e < FY_PF_QT * D; e += FY_PF_THREADS) {
        const int r = e / D, d = e % D;
        Qs[e] = r < rows ? p.q[((size_t)(q0 + r0 + r) * p.n_heads + head) * D + d] * p.scale : 0.0f;
        Os[e] = 0.0f;
    }
    if (threadIdx.x < FY_PF_QT) {
        row_m[threadIdx.x] = -INFINITY;
        row_l[threadIdx.x] = 0.0f;
    }
    // Keys this tile needs: up to the largest position among its rows.
    int last = -1;
    for (int r = 0; r < rows; r++) {
        last = max(last, p.positions[q0 + r0 + r]);
    }
    last = min(last, cap - 1);
    __syncthreads();

    for (int k0 = 0; k0 <= last; k0 += FY_PF_KT) {
        // Load the K/V tile: FY_PF_KT rows of nvec 16-byte vectors each.
        for (int e = threadIdx.x; e < FY_PF_KT * nvec; e += FY_PF_THREADS) {
            const int j = e / nvec, v = e % nvec, tok = k0 + j;
            fy_f8 kk, vv;
            if (tok <= last) {
                const int blk = bt[tok / p.block_size];
                const size_t off = (size_t)blk * block_stride + head_off +
                                   (size_t)(tok % p.block_size) * D + (size_t)v * FY_KV_VEC;
                kk = fy_kv_load8(k_cache + off);
                vv = fy_kv_load8(v_cache + off);
            } else {
#pragma unroll
                for (int x = 0; x < FY_KV_VEC; x++) {
                    kk.v[x] = 0.0f;
                    vv.v[x] = 0.0f;
                }
            }
#pragma unroll
            for (int x = 0; x < FY_KV_VEC; x++) {
                Ks[j * KD + v * FY_KV_VEC + x] = kk.v[x];
                Vs[j * D + v * FY_KV_VEC + x] = vv.v[x];
            }
        }
        __syncthreads();

        // Scores, causally masked.
        for (int e = threadIdx.x; e < FY_PF_QT * FY_PF_KT; e += FY_PF_THREADS) {
            const int r = e / FY_PF_KT, j = e % FY_PF_KT, tok = k0 + j;
            float s = -INFINITY;
            if (r < rows && tok <= min(p.positions[q0 + r0 + r], last)) {
                float dot = 0.0f;
                for (int d = 0; d < D; d++) {
                    dot = fmaf(Qs[r * D + d], Ks[j * KD + d], dot);
                }
                s = dot;
            }
            Ps[e] = s;
        }
        __syncthreads();

        // Fold the tile into each row's softmax state.
        if (threadIdx.x < FY_PF_QT) {
            const int r = threadIdx.x;
            float *pr = Ps + r * FY_PF_KT;
            fy_softmax_state tile_st = fy_softmax_init();
            for (int j = 0; j < FY_PF_KT; j++) {
                if (pr[j] != -INFINITY) {
                    float w;
                    (void)fy_softmax_push(&tile_st, pr[j], &w);
                }
            }
            fy_softmax_state st;
            st.m = row_m[r];
            st.l = row_l[r];
            float fa, fb;
            fy_softmax_merge(&st, tile_st, &fa, &fb);
            for (int j = 0; j < FY_PF_KT; j++) {
                pr[j] = pr[j] == -INFINITY ? 0.0f : expf(pr[j] - tile_st.m) * fb;
            }
            row_m[r] = st.m;
            row_l[r] = st.l;
            row_f[r] = fa;
        }
        __syncthreads();

        // O = O * fa + P . V
        for (int e = threadIdx.x; e < FY_PF_QT * D; e += FY_PF_THREADS) {
            const int r = e / D, d = e % D;
            float o = Os[e] * row_f[r];
            for (int j = 0; j < FY_PF_KT; j++) {
                o = fmaf(Ps[r * FY_PF_KT + j], Vs[j * D + d], o);
            }
            Os[e] = o;
        }
        __syncthreads();
    }

    for (int e = threadIdx.x; e < rows * D; e += FY_PF_THREADS) {
        const int r = e / D, d = e % D;
        const float l = row_l[r];
        p.out[((size_t)(q0 + r0 + r) * p.n_heads + head) * D + d] = l > 0.0f ? Os[e] / l : 0.0f;
    }
}

cudaError_t fy_pf_set_smem(size_t bytes)
{
    if (bytes <= 48 * 1024) {
        return cudaSuccess;
    }
    cudaError_t e = cudaSuccess;
    for (int dt : {FY_DT_F16, FY_DT_BF16, FY_DT_F32}) {
        if (e == cudaSuccess) {
            e = fy_kv_dispatch(dt, [&](auto kv) {
                return cudaFuncSetAttribute(fy_prefill_attention_kernel<decltype(kv)>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)bytes);
            });
        }
    }
    return e;
}

cudaError_t fy_pf_launch(cudaStream_t stream, const fy_pf_params *p, int max_query_len)
{
    dim3 grid(p->n_heads, p->n_seqs, (max_query_len + FY_PF_QT - 1) / FY_PF_QT);
    size_t smem = fy_pf_smem_bytes(p->head_dim);
    return fy_kv_dispatch(p->kv_dtype, [&](auto kv) {
        fy_prefill_attention_kernel<decltype(kv)><<<grid, FY_PF_THREADS, smem, stream>>>(*p);
        return cudaGetLastError();
    });
}
