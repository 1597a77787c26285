// embed.cu: one block per output row. A block-type table (GGUF's
// token_embd is often Q8_0, Q4_K or Q6_K) is gathered by row and the row
// dequantized 8 weights per thread, bit for bit as the CPU does (quant.cuh).
#include "kernels/cuda/embed.cuh"

#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/quant.cuh"

// DT is the table's block type, or F32 for the plain types (their element
// type then comes from PLAIN_DT at run time).
template <int DT>
__global__ void fy_embed_kernel(float *out, const void *table, int plain_dt, size_t row_bytes,
                                int64_t rows, int dim, const int32_t *ids, int *flags, int flag)
{
    const int t = blockIdx.x;
    const int id = ids[t];
    float *o = out + (size_t)t * dim;
    const bool ok = id >= 0 && id < rows;
    if (!ok && threadIdx.x == 0) {
        atomicOr(flags, flag);
    }
    if (!fy_cu_is_block(DT)) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            o[i] = ok ? fy_load_elem(table, plain_dt, (size_t)id * dim + i) : 0.0f;
        }
        return;
    }
    constexpr int BW = fy_cu_block_weights(DT), BB = fy_cu_block_bytes(DT);
    const uint8_t *row = (const uint8_t *)table + (size_t)(ok ? id : 0) * row_bytes;
    for (int k = 8 * threadIdx.x; k < dim; k += 8 * blockDim.x) {
        fy_w8 v = {};
        if (ok) {
            v = fy_q_dequant8<DT>(row + (size_t)(k / BW) * BB, k % BW);
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            o[k + i] = v.v[i];
        }
    }
}

cudaError_t fy_embed_launch(cudaStream_t stream, float *out, const void *table, int dt,
                            int64_t rows, int dim, const int32_t *ids, int T, int *flags, int flag)
{
    if (fy_cu_is_block(dt)) {
        const size_t rb = fy_cu_row_bytes(dt, dim);
        return fy_q_dispatch(dt, [&](auto tag) {
            fy_embed_kernel<decltype(tag)::dt>
                <<<T, 128, 0, stream>>>(out, table, dt, rb, rows, dim, ids, flags, flag);
            return cudaGetLastError();
        });
    }
    fy_embed_kernel<FY_DT_F32>
        <<<T, 256, 0, stream>>>(out, table, dt, 0, rows, dim, ids, flags, flag);
    return cudaGetLastError();
}

__global__ void fy_gather_rows_kernel(float *out, const float *in, const int32_t *rows, int dim,
                                      int *flags, int flag)
{
    const int r = rows[blockIdx.x];
    float *o = out + (size_t)blockIdx.x * dim;
    if (r < 0 && threadIdx.x == 0) {
        atomicOr(flags, flag);
    }
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = r >= 0 ? in[(size_t)r * dim + i] : 0.0f;
    }
}

cudaError_t fy_gather_rows_launch(cudaStream_t stream, float *out, const float *in,
                                  const int32_t *rows, int n, int dim, int *flags, int flag)
{
    fy_gather_rows_kernel<<<n, 256, 0, stream>>>(out, in, rows, dim, flags, flag);
    return cudaGetLastError();
}
