// tp_comm.cu: the communicator of kernels/backend.h over NCCL, for the
// forward pass's tensor parallelism.
//
// Unlike fy_cuda_tp_create (nccl.cu), which makes all N backends itself, the
// group here adopts the caller's backend as rank 0 (the runner already made
// it for --device cuda:D) and adds ranks on devices D+1 .. D+N-1, so device
// D does not carry a second context. The NCCL plumbing is nccl.cu's: each
// rank's fy_cuda_be gets its ncclComm_t, rank and size, and all-reduce and
// sharding go through fy_cuda_tp_all_reduce and fy_cuda_tp_shard.
#include "kernels/cuda/nccl.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace
{

struct nccl_group {
    fy_comm base;
#ifdef FY_CUDA_WITH_NCCL
    ncclComm_t comm[FY_COMM_MAX];
#endif
};

void group_destroy(fy_comm *c)
{
    if (!c) {
        return;
    }
    nccl_group *g = (nccl_group *)c->impl;
    for (int r = 0; r < c->size; r++) {
#ifdef FY_CUDA_WITH_NCCL
        if (g->comm[r]) {
            (void)ncclCommDestroy(g->comm[r]);
        }
#endif
        if (!c->be[r]) {
            continue;
        }
        fy_cuda_be *b = fy_cuda__be(c->be[r]);
        b->comm = NULL;
        b->tp_rank = 0;
        b->tp_size = 1;
        if (r > 0) {
            c->be[r]->ops->destroy(c->be[r]);
        }
    }
    free(g);
}

void group_all_reduce(fy_comm *c, int rank, float *buf, size_t n)
{
    if (rank >= 0 && rank < c->size) {
        fy_cuda_tp_all_reduce(c->be[rank], buf, n);
    }
}

int group_shard(fy_comm *c, int rank, const fy_tensor *w, int column, fy_tensor *out, char *err,
                size_t errlen)
{
    if (rank < 0 || rank >= c->size) {
        snprintf(err, errlen, "nccl group: rank %d of %d", rank, c->size);
        return FY_EINVAL;
    }
    return fy_cuda_tp_shard(c->be[rank], w, column, rank, c->size, out, err, errlen);
}

const fy_comm_ops nccl_ops = {
    "nccl",
    group_destroy,
    group_all_reduce,
    group_shard,
};

} // namespace

extern "C" int fy_cuda_comm_create(fy_backend *rank0, int n, fy_comm **out, char *err,
                                   size_t errlen)
{
    *out = NULL;
    if (!rank0 || !fy_cuda__is(rank0)) {
        snprintf(err, errlen, "cuda tensor-parallel group: rank 0 is not a CUDA backend");
        return FY_EINVAL;
    }
    if (n < 1 || n > FY_COMM_MAX) {
        snprintf(err, errlen, "--tensor-parallel %d: must be between 1 and %d", n, FY_COMM_MAX);
        return FY_EINVAL;
    }
    fy_cuda_be *b0 = fy_cuda__be(rank0);
    if (b0->tp_size > 1) {
        snprintf(err, errlen, "cuda tensor-parallel group: device %d is already in a group",
                 b0->device);
        return FY_EINVAL;
    }
#ifndef FY_CUDA_WITH_NCCL
    if (n > 1) {
        snprintf(err, errlen,
                 "--tensor-parallel %d: this build has no NCCL (install libnccl-dev and rebuild)",
                 n);
        return FY_ENOTSUP;
    }
#endif
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess || b0->device + n > count) {
        snprintf(err, errlen,
                 "--tensor-parallel %d on cuda:%d: needs devices %d..%d, %d present%s%s", n,
                 b0->device, b0->device, b0->device + n - 1, ce == cudaSuccess ? count : 0,
                 ce != cudaSuccess ? ": " : "", ce != cudaSuccess ? cudaGetErrorString(ce) : "");
        (void)cudaGetLastError();
        return FY_ENOTSUP;
    }
    nccl_group *g = (nccl_group *)calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "cuda tensor-parallel group: out of host memory");
        return FY_ENOMEM;
    }
    fy_comm *c = &g->base;
    c->ops = &nccl_ops;
    c->impl = g;
    c->be[0] = rank0;
    c->size = 1;
    int devs[FY_COMM_MAX];
    devs[0] = b0->device;
    for (int r = 1; r < n; r++) {
        devs[r] = b0->device + r;
        int rc = fy_cuda_backend_create(devs[r], &c->be[r], err, errlen);
        if (rc < 0) {
            group_destroy(c);
            return rc;
        }
        c->size = r + 1;
    }
#ifdef FY_CUDA_WITH_NCCL
    if (n > 1) {
        fy_cuda_err e;
        memset(&e, 0, sizeof e);
        if (NCCL_CHECK(&e, ncclCommInitAll(g->comm, n, devs))) {
            snprintf(err, errlen, "--tensor-parallel %d: %s", n, e.msg);
            memset(g->comm, 0, sizeof g->comm); // InitAll leaves nothing to destroy on failure
            group_destroy(c);
            return e.code;
        }
        for (int r = 0; r < n; r++) {
            fy_cuda_be *b = fy_cuda__be(c->be[r]);
            b->comm = g->comm[r];
            b->tp_rank = r;
            b->tp_size = n;
        }
    }
#endif
    *out = c;
    return 0;
}
