// backend_cuda.cuh: the CUDA backend's state, shared by backend_cuda.cu (the
// ops table), gemm.cu and nccl.cu. Not for C callers: they use
// kernels/backend.h and kernels/cuda/cuda_api.h.
#ifndef FY_BACKEND_CUDA_CUH
#define FY_BACKEND_CUDA_CUH

#include "kernels/cuda/backend_c.cuh"
#include "kernels/cuda/check.cuh"

#include <cublas_v2.h>
#include <cuda_runtime.h>

// Scratch areas reused from op to op (grown on demand, stream-ordered).
enum { FY_CUDA_SCRATCH_GEMM = 0, FY_CUDA_SCRATCH_ATTN, FY_CUDA_SCRATCH_N };

typedef struct fy_cuda_be {
    fy_backend base;     // base.impl points back here
    int device;          // CUDA ordinal
    int sm_count;        // streaming multiprocessors (attention dispatch)
    size_t smem_optin;   // max dynamic shared memory per block (opt-in)
    cudaStream_t stream; // every op of this backend is queued here
    cublasHandle_t blas; // bound to STREAM (one handle per stream)
    void *scratch[FY_CUDA_SCRATCH_N];
    size_t scratch_bytes[FY_CUDA_SCRATCH_N];
    int *d_flags; // device-side error flags (FY_CUDA_FLAG_*), checked by sync()
    int *h_flags; // pinned host mirror, copied at every sync
    void *comm;   // ncclComm_t when part of a tensor-parallel group (nccl.cu)
    int tp_rank, tp_size;
    fy_cuda_err err; // first failure; later ops are skipped
    char name[96];   // device name for messages
} fy_cuda_be;

// Bits a kernel may set in *d_flags when it meets input it cannot trust.
enum {
    FY_CUDA_FLAG_TOKEN_RANGE = 1, // embed: a token id outside the table
    FY_CUDA_FLAG_ROW_RANGE = 2,   // gather_rows: a negative row index
};

static inline fy_cuda_be *fy_cuda__be(fy_backend *be)
{
    return (fy_cuda_be *)be->impl;
}

// Device scratch of at least BYTES in area SLOT (NULL after recording an error).
void *fy_cuda__scratch(fy_cuda_be *c, int slot, size_t bytes);

// 1 when BE was made by fy_cuda_backend_create.
int fy_cuda__is(fy_backend *be);

// Makes C's device current for this host thread; 0 or nonzero after recording.
int fy_cuda__enter(fy_cuda_be *c);

#endif
