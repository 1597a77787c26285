// embed.cuh: embedding gather and row gather.
#ifndef FY_CUDA_EMBED_CUH
#define FY_CUDA_EMBED_CUH

#include <cuda_runtime.h>
#include <stdint.h>

// out[t] = table[ids[t]] as f32, rows of DIM; TABLE is ROWS x DIM of dtype
// DT (a block type: rows of fy_cu_row_bytes(DT, DIM) packed bytes, DIM whole
// blocks). An id outside [0, ROWS) writes a zero row and sets FLAG in *FLAGS.
cudaError_t fy_embed_launch(cudaStream_t stream, float *out, const void *table, int dt,
                            int64_t rows, int dim, const int32_t *ids, int T, int *flags, int flag);

// out[i] = in[rows[i]] for N rows of DIM floats. A negative index writes a
// zero row and sets FLAG in *FLAGS (the caller bounds the upper end).
cudaError_t fy_gather_rows_launch(cudaStream_t stream, float *out, const float *in,
                                  const int32_t *rows, int n, int dim, int *flags, int flag);

#endif
