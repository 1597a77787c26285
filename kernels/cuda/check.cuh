// check.cuh: CUDA_CHECK / CUBLAS_CHECK / NCCL_CHECK around every runtime,
// cuBLAS and NCCL call of the CUDA backend.
//
// The ops of kernels/backend.h return void (they are queued on a stream), so
// a failure cannot be returned where it happens. Each backend keeps the FIRST
// error it met in a fy_cuda_err (code, "file:line: call: reason"); later ops
// become no-ops and sync() returns it. Each macro evaluates to 0 on success
// and to nonzero after recording the failure, so callers write
//     if (CUDA_CHECK(&be->err, cudaMalloc(&p, n))) return NULL;
#ifndef FY_CUDA_CHECK_CUH
#define FY_CUDA_CHECK_CUH

extern "C" {
#include "common/err.h"
}

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>

typedef struct {
    int code;      // 0, or the first FY_E* code recorded
    char msg[320]; // what failed, where and why
} fy_cuda_err;

// Records CODE with a printf-style message unless an error is already held.
void fy_cuda__err_set(fy_cuda_err *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// FY_E* code for a CUDA runtime error: no device / no driver -> FY_ENOTSUP,
// out of memory -> FY_ENOMEM, anything else -> FY_EIO.
int fy_cuda__code(cudaError_t e);
const char *fy_cublas__str(cublasStatus_t s);

int fy_cuda__check_rt(fy_cuda_err *e, cudaError_t r, const char *file, int line, const char *what);
int fy_cuda__check_blas(fy_cuda_err *e, cublasStatus_t r, const char *file, int line,
                        const char *what);

#define CUDA_CHECK(errp, stmt)   fy_cuda__check_rt((errp), (stmt), __FILE__, __LINE__, #stmt)
#define CUBLAS_CHECK(errp, stmt) fy_cuda__check_blas((errp), (stmt), __FILE__, __LINE__, #stmt)

#ifdef FY_CUDA_WITH_NCCL
#include <nccl.h>
int fy_cuda__check_nccl(fy_cuda_err *e, ncclResult_t r, const char *file, int line,
                        const char *what);
#define NCCL_CHECK(errp, stmt) fy_cuda__check_nccl((errp), (stmt), __FILE__, __LINE__, #stmt)
#endif

#endif
