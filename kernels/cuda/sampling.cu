// sampling.cu: argmax and the logit filters, one block per row.
//
// Top-k and top-p need a threshold, not a sort: the k-th largest logit (and
// the smallest probability of the nucleus) is found by a 32-step bitwise
// search over the order-preserving integer image of the floats, each step one
// counting (or summing) pass over the row. 32 passes over a 150k vocabulary
// read ~19 MB per row from L2/L1, cheap next to a decode step's GEMMs, and
// the result is exact and deterministic.
#include "kernels/cuda/sampling.cuh"

#include "kernels/math.h"

#include <float.h>

#define FY_SAMPLE_THREADS 256

// Float -> uint32 with the same order (negative floats flipped).
__device__ __forceinline__ uint32_t fy_ord(float f)
{
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float fy_unord(uint32_t u)
{
    return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

// Block-wide sum; every thread gets the result. SH: FY_SAMPLE_THREADS/32 floats.
__device__ float fy_block_sum(float v, float *sh)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    __syncthreads(); // SH may still be read by the previous call
    if ((threadIdx.x & 31) == 0) {
        sh[threadIdx.x / 32] = v;
    }
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < FY_SAMPLE_THREADS / 32; w++) {
        s += sh[w];
    }
    return s;
}

__device__ float fy_block_max(float v, float *sh)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
        sh[threadIdx.x / 32] = v;
    }
    __syncthreads();
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < FY_SAMPLE_THREADS / 32; w++) {
        m = fmaxf(m, sh[w]);
    }
    return m;
}

__global__ void __launch_bounds__(FY_SAMPLE_THREADS)
    fy_argmax_kernel(int32_t *out, const float *logits, int vocab)
{
    __shared__ float sv[FY_SAMPLE_THREADS / 32];
    __shared__ int si[FY_SAMPLE_THREADS / 32];
    const float *row = logits + (size_t)blockIdx.x * vocab;
    float best = -INFINITY;
    int bi = vocab; // "none yet": loses every tie
    for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
        float x = row[i];
        if (x == x && (x > best || bi == vocab)) { // NaN never wins
            best = x;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > best || (ov == best && oi < bi)) {
            best = ov;
            bi = oi;
        }
    }
    if ((threadIdx.x & 31) == 0) {
        sv[threadIdx.x / 32] = best;
        si[threadIdx.x / 32] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < FY_SAMPLE_THREADS / 32; w++) {
            if (sv[w] > best || (sv[w] == best && si[w] < bi)) {
                best = sv[w];
                bi = si[w];
            }
        }
        out[blockIdx.x] = bi < vocab ? bi : 0; // an all-NaN row yields 0
    }
}

cudaError_t fy_argmax_launch(cudaStream_t stream, int32_t *out, const float *logits, int n,
                             int vocab)
{
    fy_argmax_kernel<<<n, FY_SAMPLE_THREADS, 0, stream>>>(out, logits, vocab);
    return cudaGetLastError();
}

__global__ void __launch_bounds__(FY_SAMPLE_THREADS)
    fy_sample_filter_kernel(float *logits, const int32_t *counts, const fy_sample_params *params,
                            int vocab)
{
    __shared__ float sh[FY_SAMPLE_THREADS / 32];
    float *row = logits + (size_t)blockIdx.x * vocab;
    const int32_t *cnt = counts ? counts + (size_t)blockIdx.x * vocab : NULL;
    const fy_sample_params sp = params[blockIdx.x];

    for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
        float x = row[i];
        if (cnt && cnt[i] > 0) {
            x = fy_logit_repetition(x, sp.repetition);
            x = fy_logit_presence_frequency(x, cnt[i], sp.presence, sp.frequency);
        }
        row[i] = fy_logit_temperature(x, sp.inv_temperature);
    }
    __syncthreads();

    // Top-k: the largest threshold u with count(ord(x) >= u) >= k, built bit
    // by bit from the top; logits below it become -inf (ties at it are kept).
    if (sp.top_k > 0 && sp.top_k < vocab) {
        uint32_t u = 0;
        for (int bit = 31; bit >= 0; bit--) {
            const uint32_t cand = u | (1u << bit);
            float c = 0.0f;
            for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
                c += fy_ord(row[i]) >= cand ? 1.0f : 0.0f;
            }
            if (fy_block_sum(c, sh) >= (float)sp.top_k) {
                u = cand;
            }
        }
        const float kth = fy_unord(u);
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
            if (row[i] < kth) {
                row[i] = -INFINITY;
            }
        }
        __syncthreads();
    }

    // Top-p: probabilities by softmax; the largest logit threshold whose
    // kept set (logits >= it) holds at least top_p of the mass.
    if (sp.top_p > 0.0f && sp.top_p < 1.0f) {
        float m = -INFINITY;
        for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
            m = fmaxf(m, row[i]);
        }
        m = fy_block_max(m, sh);
        float s = 0.0f;
        for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
            s += expf(row[i] - m);
        }
        const float total = fy_block_sum(s, sh);
        uint32_t u = 0;
        for (int bit = 31; bit >= 0; bit--) {
            const uint32_t cand = u | (1u << bit);
            float mass = 0.0f;
            for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
                mass += fy_ord(row[i]) >= cand ? expf(row[i] - m) : 0.0f;
            }
            if (fy_block_sum(mass, sh) >= sp.top_p * total) {
                u = cand;
            }
        }
        const float cut = fy_unord(u);
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += FY_SAMPLE_THREADS) {
            if (row[i] < cut) {
                row[i] = -INFINITY;
            }
        }
    }
}

cudaError_t fy_sample_filter_launch(cudaStream_t stream, float *logits, const int32_t *counts,
                                    const fy_sample_params *params, int n, int vocab)
{
    fy_sample_filter_kernel<<<n, FY_SAMPLE_THREADS, 0, stream>>>(logits, counts, params, vocab);
    return cudaGetLastError();
}
