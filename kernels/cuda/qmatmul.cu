// qmatmul.cu: matmul over packed block weights, dequantized in the kernel.
//
// Decode (T <= FY_QMV_MAX_T): one warp per weight row, FY_QMV_WARPS rows per
// block. The block walks the rows FY_QMV_K weights at a time: its threads
// copy the chunk of every token's activations into shared memory, and each
// warp copies its row's packed bytes of the chunk into its own shared stage
// with 16-byte loads (the aligned window around them; the partial 16 bytes at
// either end byte by byte, so nothing outside the row is read), so each block
// of weights is read from memory once. A lane then dequantizes 8 weights at a
// time in registers and multiplies them with every token's activations;
// a warp-shuffle reduction gives each token's sum.
//
// Batches (T > FY_QMV_MAX_T): a 64-row x 64-token tile per block of 4 warps.
// Each step of 32 weights dequantizes the tile's weights into shared memory
// as f16 and rounds the activations to f16 beside them; each warp multiplies
// its 32 x 32 corner with WMMA m16n16k16 (mma.sync on the tensor cores, f32
// accumulation). Chosen over dequantizing the whole matrix to an F16 scratch
// for cuBLAS because that would write and read back 2 bytes per weight on
// every call (4 to 7 times the packed size) and hold a scratch the size of
// the largest matrix; the tile here lives in shared memory only.
#include "kernels/cuda/qmatmul.cuh"

#include "kernels/cuda/quant.cuh"

#include <mma.h>

#define FY_QMV_WARPS 8
#define FY_QMV_K     512 // weights per step: 2 units of 8 per lane
// A warp's stage: the packed bytes of FY_QMV_K weights (Q8_0's 16 blocks of
// 34 bytes are the most) and up to 15 bytes before them in the aligned window.
#define FY_QMV_STAGE (16 * 34 + 32)

template <int DT>
__global__ void __launch_bounds__(FY_QMV_WARPS * 32)
    fy_qmv_kernel(float *out, const uint8_t *w, size_t row_bytes, const float *x, int R, int C,
                  int T)
{
    constexpr int BW = fy_cu_block_weights(DT), BB = fy_cu_block_bytes(DT);
    __shared__ __align__(16) float xs[FY_QMV_MAX_T][FY_QMV_K]; // read as float4
    __shared__ __align__(16) uint8_t stage[FY_QMV_WARPS][FY_QMV_STAGE];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * FY_QMV_WARPS + warp;
    const bool live = r < R;
    uint8_t *st = stage[warp];
    float acc[FY_QMV_MAX_T];
#pragma unroll
    for (int t = 0; t < FY_QMV_MAX_T; t++) {
        acc[t] = 0.0f;
    }
    for (int k0 = 0; k0 < C; k0 += FY_QMV_K) {
        const int nw = min(FY_QMV_K, C - k0);
        __syncthreads(); // the previous chunk is consumed
        for (int i = threadIdx.x; i < T * FY_QMV_K; i += FY_QMV_WARPS * 32) {
            const int t = i / FY_QMV_K, k = i % FY_QMV_K;
            if (k < nw) {
                xs[t][k] = x[(size_t)t * C + k0 + k];
            }
        }
        int off = 0;
        if (live) {
            const uint8_t *g = w + (size_t)r * row_bytes + (size_t)(k0 / BW) * BB;
            off = fy_q_stage(st, g, nw / BW * BB, lane, 32);
        }
        __syncthreads();
        if (!live) {
            continue;
        }
#pragma unroll
        for (int h = 0; h < FY_QMV_K / 256; h++) {
            const int k = 8 * (lane + 32 * h);
            if (k < nw) {
                const fy_w8 v = fy_q_dequant8<DT>(st + off + (k / BW) * BB, k % BW);
#pragma unroll
                for (int t = 0; t < FY_QMV_MAX_T; t++) {
                    if (t < T) {
                        const float4 xa = *(const float4 *)&xs[t][k];
                        const float4 xb = *(const float4 *)&xs[t][k + 4];
                        float s = acc[t];
                        s = fmaf(v.v[0], xa.x, s);
                        s = fmaf(v.v[1], xa.y, s);
                        s = fmaf(v.v[2], xa.z, s);
                        s = fmaf(v.v[3], xa.w, s);
                        s = fmaf(v.v[4], xb.x, s);
                        s = fmaf(v.v[5], xb.y, s);
                        s = fmaf(v.v[6], xb.z, s);
                        s = fmaf(v.v[7], xb.w, s);
                        acc[t] = s;
                    }
                }
            }
        }
    }
    if (!live) {
        return;
    }
#pragma unroll
    for (int t = 0; t < FY_QMV_MAX_T; t++) {
        float s = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            s += __shfl_xor_sync(0xffffffffu, s, o);
        }
        if (lane == 0 && t < T) {
            out[(size_t)t * R + r] = s;
        }
    }
}

#define FY_QMM_BM      64              // weight rows per block
#define FY_QMM_BN      64              // tokens per block
#define FY_QMM_BK      32              // weights per step
#define FY_QMM_LD      (FY_QMM_BK + 8) // halves per tile row: 80 bytes, staggers the banks
#define FY_QMM_LDC     (FY_QMM_BM + 4)
#define FY_QMM_THREADS 128

template <int DT>
__global__ void __launch_bounds__(FY_QMM_THREADS)
    fy_qmm_kernel(float *out, const uint8_t *w, size_t row_bytes, const float *x, int R, int C,
                  int T)
{
    using namespace nvcuda;
    constexpr int BW = fy_cu_block_weights(DT), BB = fy_cu_block_bytes(DT);
    __shared__ __align__(32) __half ws[FY_QMM_BM][FY_QMM_LD]; // [row][k]
    __shared__ __align__(32) __half xs[FY_QMM_BN][FY_QMM_LD]; // [token][k]
    __shared__ __align__(32) float cs[FY_QMM_BN][FY_QMM_LDC]; // [token][row]
    const int r0 = blockIdx.x * FY_QMM_BM, t0 = blockIdx.y * FY_QMM_BN;
    const int warp = threadIdx.x >> 5, wm = (warp & 1) * 32, wn = (warp >> 1) * 32;
    // A = activations (tokens x k, row-major), B = W^T (k x rows), which is
    // W's rows read column-major: the output tile is tokens x rows.
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::fill_fragment(acc[i][j], 0.0f);
        }
    }
    for (int k0 = 0; k0 < C; k0 += FY_QMM_BK) {
        // 64 rows x 4 runs of 8 weights: 2 runs per thread.
        for (int u = threadIdx.x; u < FY_QMM_BM * FY_QMM_BK / 8; u += FY_QMM_THREADS) {
            const int row = u / (FY_QMM_BK / 8), kk = (u % (FY_QMM_BK / 8)) * 8;
            const int k = k0 + kk;
            uint4 h = make_uint4(0, 0, 0, 0);
            if (r0 + row < R) {
                const fy_w8 v = fy_q_dequant8<DT>(
                    w + (size_t)(r0 + row) * row_bytes + (size_t)(k / BW) * BB, k % BW);
                __half2 *p = (__half2 *)&h;
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    p[i] = __floats2half2_rn(v.v[2 * i], v.v[2 * i + 1]);
                }
            }
            *(uint4 *)&ws[row][kk] = h;
        }
        for (int i = threadIdx.x; i < FY_QMM_BN * FY_QMM_BK; i += FY_QMM_THREADS) {
            const int t = i / FY_QMM_BK, kk = i % FY_QMM_BK;
            xs[t][kk] = __float2half_rn(t0 + t < T ? x[(size_t)(t0 + t) * C + k0 + kk] : 0.0f);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < FY_QMM_BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                wmma::load_matrix_sync(a[i], &xs[wn + 16 * i][kk], FY_QMM_LD);
                wmma::load_matrix_sync(b[i], &ws[wm + 16 * i][kk], FY_QMM_LD);
            }
#pragma unroll
            for (int i = 0; i < 2; i++) {
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(&cs[wn + 16 * i][wm + 16 * j], acc[i][j], FY_QMM_LDC,
                                    wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < FY_QMM_BN * FY_QMM_BM; i += FY_QMM_THREADS) {
        const int t = i / FY_QMM_BM, r = i % FY_QMM_BM;
        if (t0 + t < T && r0 + r < R) {
            out[(size_t)(t0 + t) * R + r0 + r] = cs[t][r];
        }
    }
}

cudaError_t fy_qmatmul_launch(cudaStream_t stream, float *out, const float *x, const void *w,
                              int dt, int R, int C, int T)
{
    const size_t rb = fy_cu_row_bytes(dt, C);
    const uint8_t *wb = (const uint8_t *)w;
    return fy_q_dispatch(dt, [&](auto tag) {
        constexpr int DT = decltype(tag)::dt;
        if (T <= FY_QMV_MAX_T) {
            const unsigned blocks = (unsigned)((R + FY_QMV_WARPS - 1) / FY_QMV_WARPS);
            fy_qmv_kernel<DT><<<blocks, FY_QMV_WARPS * 32, 0, stream>>>(out, wb, rb, x, R, C, T);
        } else {
            const dim3 grid((unsigned)((R + FY_QMM_BM - 1) / FY_QMM_BM),
                            (unsigned)((T + FY_QMM_BN - 1) / FY_QMM_BN));
            fy_qmm_kernel<DT><<<grid, FY_QMM_THREADS, 0, stream>>>(out, wb, rb, x, R, C, T);
        }
        return cudaGetLastError();
    });
}
