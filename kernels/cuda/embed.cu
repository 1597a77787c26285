// embed.cu: one block per output row.
#include "kernels/cuda/embed.cuh"

#include "kernels/cuda/dtype.cuh"

__global__ void fy_embed_kernel(float *out, const void *table, int dt, int64_t rows, int dim,
                                const int32_t *ids, int *flags, int flag)
{
    const int t = blockIdx.x;
    const int id = ids[t];
    float *o = out + (size_t)t * dim;
    const bool ok = id >= 0 && id < rows;
    if (!ok && threadIdx.x == 0) {
        atomicOr(flags, flag);
    }
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        o[i] = ok ? fy_load_elem(table, dt, (size_t)id * dim + i) : 0.0f;
    }
}

cudaError_t fy_embed_launch(cudaStream_t stream, float *out, const void *table, int dt,
                            int64_t rows, int dim, const int32_t *ids, int T, int *flags, int flag)
{
    fy_embed_kernel<<<T, 256, 0, stream>>>(out, table, dt, rows, dim, ids, flags, flag);
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
