// nccl.cu: tensor parallelism over the GPUs of one box.
//
// fy_cuda_tp_create makes one backend per device and one NCCL communicator
// per rank with ncclCommInitAll (single process, no bootstrap needed). Each
// rank's host thread then drives its own backend; fy_cuda_tp_all_reduce
// queues ncclAllReduce(sum, in place) on that backend's stream, so the
// reduce orders after the rank's matmul without a host wait.
#include "kernels/cuda/nccl.cuh"
#include "kernels/cuda/quant.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fy_cuda_tp {
    int n;
    fy_backend *be[FY_CUDA_TP_MAX];
#ifdef FY_CUDA_WITH_NCCL
    ncclComm_t comm[FY_CUDA_TP_MAX];
#endif
};

#ifdef FY_CUDA_WITH_NCCL
int fy_cuda__check_nccl(fy_cuda_err *e, ncclResult_t r, const char *file, int line,
                        const char *what)
{
    if (r == ncclSuccess) {
        return 0;
    }
    fy_cuda__err_set(e, r == ncclUnhandledCudaError || r == ncclSystemError ? FY_EIO : FY_EINVAL,
                     "%s:%d: %s: %s", file, line, what, ncclGetErrorString(r));
    return 1;
}
#endif

extern "C" int fy_cuda_tp_size(const fy_cuda_tp *tp)
{
    return tp ? tp->n : 0;
}

extern "C" fy_backend *fy_cuda_tp_backend(fy_cuda_tp *tp, int r)
{
    return tp && r >= 0 && r < tp->n ? tp->be[r] : NULL;
}

extern "C" void fy_cuda_tp_destroy(fy_cuda_tp *tp)
{
    if (!tp) {
        return;
    }
    for (int r = 0; r < tp->n; r++) {
#ifdef FY_CUDA_WITH_NCCL
        if (tp->comm[r]) {
            (void)ncclCommDestroy(tp->comm[r]);
        }
#endif
        if (tp->be[r]) {
            tp->be[r]->ops->destroy(tp->be[r]);
        }
    }
    free(tp);
}

extern "C" int fy_cuda_tp_create(int n, const int *devices, fy_cuda_tp **out, char *err,
                                 size_t errlen)
{
    *out = NULL;
    if (n < 1 || n > FY_CUDA_TP_MAX) {
        snprintf(err, errlen, "--tensor-parallel %d: must be between 1 and %d", n, FY_CUDA_TP_MAX);
        return FY_EINVAL;
    }
#ifndef FY_CUDA_WITH_NCCL
    if (n > 1) {
        snprintf(err, errlen,
                 "--tensor-parallel %d: this build has no NCCL (install libnccl-dev and "
                 "rebuild)",
                 n);
        return FY_ENOTSUP;
    }
#endif
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || count < n) {
        snprintf(err, errlen, "--tensor-parallel %d: needs %d CUDA devices, found %d%s%s", n, n,
                 ce == cudaSuccess ? count : 0, ce != cudaSuccess ? ": " : "",
                 ce != cudaSuccess ? cudaGetErrorString(ce) : "");
        (void)cudaGetLastError();
        return FY_ENOTSUP;
    }
    fy_cuda_tp *tp = (fy_cuda_tp *)calloc(1, sizeof *tp);
    if (!tp) {
        snprintf(err, errlen, "tensor-parallel: out of host memory");
        return FY_ENOMEM;
    }
    int devs[FY_CUDA_TP_MAX];
    for (int r = 0; r < n; r++) {
        devs[r] = devices ? devices[r] : r;
        for (int q = 0; q < r; q++) {
            if (devs[q] == devs[r]) {
                snprintf(err, errlen, "tensor-parallel: device %d listed twice", devs[r]);
                free(tp);
                return FY_EINVAL;
            }
        }
    }
    for (int r = 0; r < n; r++) {
        int rc = fy_cuda_backend_create(devs[r], &tp->be[r], err, errlen);
        if (rc < 0) {
            fy_cuda_tp_destroy(tp);
            return rc;
        }
        tp->n = r + 1;
        fy_cuda_be *c = fy_cuda__be(tp->be[r]);
        c->tp_rank = r;
        c->tp_size = n;
    }
#ifdef FY_CUDA_WITH_NCCL
    if (n > 1) {
        fy_cuda_err e;
        memset(&e, 0, sizeof e);
        if (NCCL_CHECK(&e, ncclCommInitAll(tp->comm, n, devs))) {
            snprintf(err, errlen, "tensor-parallel %d: %s", n, e.msg);
            memset(tp->comm, 0, sizeof tp->comm); // InitAll leaves nothing to destroy on failure
            fy_cuda_tp_destroy(tp);
            return e.code;
        }
        for (int r = 0; r < n; r++) {
            fy_cuda__be(tp->be[r])->comm = tp->comm[r];
        }
    }
#endif
    *out = tp;
    return 0;
}

extern "C" void fy_cuda_tp_all_reduce(fy_backend *be, float *buf, size_t n)
{
    if (!be || !fy_cuda__is(be)) {
        return;
    }
    fy_cuda_be *c = fy_cuda__be(be);
    if (fy_cuda__enter(c) || c->tp_size <= 1 || n == 0) {
        return;
    }
#ifdef FY_CUDA_WITH_NCCL
    if (!buf) {
        fy_cuda__err_set(&c->err, FY_EINVAL, "cuda all_reduce: NULL buffer");
        return;
    }
    (void)NCCL_CHECK(
        &c->err, ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, (ncclComm_t)c->comm, c->stream));
#else
    (void)buf;
    fy_cuda__err_set(&c->err, FY_ENOTSUP, "cuda all_reduce: built without NCCL");
#endif
}

extern "C" int fy_cuda_tp_shard(fy_backend *be, const fy_tensor *w, int column, int rank, int n,
                                fy_tensor *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!be || !fy_cuda__is(be) || !w || !w->data || w->rows <= 0 || w->cols <= 0 || n < 1 ||
        rank < 0 || rank >= n) {
        snprintf(err, errlen, "tp shard: bad arguments (rank %d of %d)", rank, n);
        return FY_EINVAL;
    }
    fy_cuda_be *c = fy_cuda__be(be);
    // Bytes of a row of the source and of the shard: a block type's rows are
    // packed blocks, so a column split must fall on whole blocks.
    const int bw = fy_cu_block_weights(w->dtype);
    if (!bw || w->cols % bw) {
        snprintf(err, errlen, "tp shard: a %s tensor with rows of %lld weights",
                 fy_cu_dtype_name(w->dtype), (long long)w->cols);
        return FY_EINVAL;
    }
    // A 1-D tensor (rows == 1) is split along its only dimension when
    // column-parallel (a q/k/v bias) and replicated otherwise.
    const int one_d = w->rows == 1;
    int64_t rows = w->rows, cols = w->cols, r0 = 0, c0 = 0;
    if (column && !one_d) {
        if (w->rows % n) {
            snprintf(err, errlen, "tp shard: %lld rows do not split over %d ranks",
                     (long long)w->rows, n);
            return FY_EINVAL;
        }
        rows = w->rows / n;
        r0 = rows * rank;
    } else if (column || !one_d) {
        if (w->cols % ((int64_t)n * bw)) {
            snprintf(err, errlen,
                     "tp shard: %lld columns do not split over %d ranks in whole %s blocks of %d",
                     (long long)w->cols, n, fy_cu_dtype_name(w->dtype), bw);
            return FY_EINVAL;
        }
        cols = w->cols / n;
        c0 = cols * rank;
    }
    const size_t src_rb = fy_cu_row_bytes(w->dtype, w->cols), rb = fy_cu_row_bytes(w->dtype, cols);
    void *d = be->ops->alloc(be, (size_t)rows * rb);
    if (!d) {
        snprintf(err, errlen, "tp shard: out of device memory for %lld x %lld", (long long)rows,
                 (long long)cols);
        return FY_ENOMEM;
    }
    const char *src = (const char *)w->data + (size_t)r0 * src_rb + fy_cu_row_bytes(w->dtype, c0);
    if (fy_cuda__enter(c) ||
        CUDA_CHECK(&c->err, cudaMemcpy2DAsync(d, rb, src, src_rb, rb, (size_t)rows,
                                              cudaMemcpyHostToDevice, c->stream)) ||
        CUDA_CHECK(&c->err, cudaStreamSynchronize(c->stream))) {
        snprintf(err, errlen, "tp shard: %s", c->err.msg);
        be->ops->free(be, d);
        return c->err.code ? c->err.code : FY_EIO;
    }
    out->data = d;
    out->dtype = w->dtype;
    out->rows = rows;
    out->cols = cols;
    return 0;
}
