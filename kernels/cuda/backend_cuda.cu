// backend_cuda.cu: the CUDA implementation of kernels/backend.h's ops table.
//
// One backend = one device + one non-blocking stream + one cuBLAS handle
// bound to that stream. Every op validates its arguments on the host, queues
// its kernel(s) on the stream and returns; the first failure (bad argument,
// launch error, cuBLAS status, a device-side range check) is kept in
// be->err, later ops are skipped, and sync()/download() return it.
// Weights are uploaded once by the forward pass (alloc + upload); per step
// only token ids, positions, slots, block tables (uploads) and the sampled
// tokens or logits (download) cross the bus.
#include "kernels/cuda/backend_cuda.cuh"

#include "kernels/cuda/act.cuh"
#include "kernels/cuda/cache.cuh"
#include "kernels/cuda/cuda_api.h"
#include "kernels/cuda/dtype.cuh"
#include "kernels/cuda/embed.cuh"
#include "kernels/cuda/gemm.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/paged_attention.cuh"
#include "kernels/cuda/prefill_attention.cuh"
#include "kernels/cuda/quant.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/sampling.cuh"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- errors (check.cuh) --------------------------------------------------------

void fy_cuda__err_set(fy_cuda_err *e, int code, const char *fmt, ...)
{
    if (e->code) {
        return;
    }
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

int fy_cuda__code(cudaError_t e)
{
    switch (e) {
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
        return FY_ENOTSUP;
    case cudaErrorMemoryAllocation:
        return FY_ENOMEM;
    case cudaErrorInvalidValue:
        return FY_EINVAL;
    default:
        return FY_EIO;
    }
}

const char *fy_cublas__str(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS:
        return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "cuBLAS not initialised";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "cuBLAS allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "not supported";
    default:
        return "unknown cuBLAS status";
    }
}

int fy_cuda__check_rt(fy_cuda_err *e, cudaError_t r, const char *file, int line, const char *what)
{
    if (r == cudaSuccess) {
        return 0;
    }
    fy_cuda__err_set(e, fy_cuda__code(r), "%s:%d: %s: %s", file, line, what, cudaGetErrorString(r));
    return 1;
}

int fy_cuda__check_blas(fy_cuda_err *e, cublasStatus_t r, const char *file, int line,
                        const char *what)
{
    if (r == CUBLAS_STATUS_SUCCESS) {
        return 0;
    }
    fy_cuda__err_set(e, r == CUBLAS_STATUS_ALLOC_FAILED ? FY_ENOMEM : FY_EIO, "%s:%d: %s: %s", file,
                     line, what, fy_cublas__str(r));
    return 1;
}

// --- state -----------------------------------------------------------------------

int fy_cuda__enter(fy_cuda_be *c)
{
    if (c->err.code) {
        return 1;
    }
    return CUDA_CHECK(&c->err, cudaSetDevice(c->device));
}

void *fy_cuda__scratch(fy_cuda_be *c, int slot, size_t bytes)
{
    if (c->scratch_bytes[slot] >= bytes) {
        return c->scratch[slot];
    }
    // Grow by half again so a slowly rising size does not reallocate every step.
    size_t want = bytes + bytes / 2;
    if (c->scratch[slot] && CUDA_CHECK(&c->err, cudaFreeAsync(c->scratch[slot], c->stream))) {
        return NULL;
    }
    c->scratch[slot] = NULL;
    c->scratch_bytes[slot] = 0;
    if (CUDA_CHECK(&c->err, cudaMallocAsync(&c->scratch[slot], want, c->stream))) {
        return NULL;
    }
    c->scratch_bytes[slot] = want;
    return c->scratch[slot];
}

static fy_cuda_be *fy_cuda__op(fy_backend *be)
{
    fy_cuda_be *c = fy_cuda__be(be);
    return fy_cuda__enter(c) ? NULL : c;
}

#define FY_BAD(c, ...) fy_cuda__err_set(&(c)->err, FY_EINVAL, __VA_ARGS__)

static void fy_cuda__launched(fy_cuda_be *c, cudaError_t e, const char *op)
{
    if (e != cudaSuccess) {
        fy_cuda__err_set(&c->err, fy_cuda__code(e), "cuda %s: kernel launch: %s", op,
                         cudaGetErrorString(e));
    }
}

static int fy_dtype_ok(fy_dtype dt)
{
    return dt == FY_DT_F32 || dt == FY_DT_F16 || dt == FY_DT_BF16;
}

// A weight of a matrix op (embed, matmul): a plain type, or a block type of
// whole blocks per row.
static int fy_weight_ok(const fy_tensor *w)
{
    return fy_dtype_ok(w->dtype) ||
           (fy_cu_is_block(w->dtype) && w->cols % fy_cu_block_weights(w->dtype) == 0);
}

// --- memory ----------------------------------------------------------------------

static void *cu_alloc(fy_backend *be, size_t bytes)
{
    fy_cuda_be *c = fy_cuda__op(be);
    void *p = NULL;
    if (!c || bytes == 0) {
        return NULL;
    }
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
        // Out of memory is the caller's to handle (NULL), not a sticky failure.
        (void)cudaGetLastError();
        if (e != cudaErrorMemoryAllocation) {
            (void)CUDA_CHECK(&c->err, e);
        }
        return NULL;
    }
    return p;
}

static void cu_free(fy_backend *be, void *p)
{
    fy_cuda_be *c = fy_cuda__be(be);
    if (p && !CUDA_CHECK(&c->err, cudaSetDevice(c->device))) {
        (void)CUDA_CHECK(&c->err, cudaFree(p));
    }
}

static int cu_upload(fy_backend *be, void *dst, const void *src, size_t bytes)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return fy_cuda__be(be)->err.code;
    }
    if (bytes == 0) {
        return 0;
    }
    // From pageable memory the call returns once SRC has been staged, so the
    // caller may reuse its buffer at once.
    if (CUDA_CHECK(&c->err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream))) {
        return c->err.code;
    }
    return 0;
}

// Waits for the stream, then turns device-side range flags into an error.
static int cu_sync(fy_backend *be)
{
    fy_cuda_be *c = fy_cuda__be(be);
    if (c->err.code) {
        return c->err.code;
    }
    if (CUDA_CHECK(&c->err, cudaSetDevice(c->device)) ||
        CUDA_CHECK(&c->err, cudaMemcpyAsync(c->h_flags, c->d_flags, sizeof(int),
                                            cudaMemcpyDeviceToHost, c->stream)) ||
        CUDA_CHECK(&c->err, cudaStreamSynchronize(c->stream))) {
        return c->err.code;
    }
    int f = *c->h_flags;
    if (f & FY_CUDA_FLAG_TOKEN_RANGE) {
        FY_BAD(c, "cuda embed: a token id is outside the embedding table");
    } else if (f & FY_CUDA_FLAG_ROW_RANGE) {
        FY_BAD(c, "cuda gather_rows: a negative row index");
    }
    return c->err.code;
}

static int cu_download(fy_backend *be, void *dst, const void *src, size_t bytes)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return fy_cuda__be(be)->err.code;
    }
    if (bytes &&
        CUDA_CHECK(&c->err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream))) {
        return c->err.code;
    }
    return cu_sync(be);
}

static size_t cu_mem_free(fy_backend *be)
{
    fy_cuda_be *c = fy_cuda__op(be);
    size_t fr = 0, total = 0;
    if (!c || CUDA_CHECK(&c->err, cudaMemGetInfo(&fr, &total))) {
        return 0;
    }
    return fr;
}

// --- ops ---------------------------------------------------------------------------

static void cu_embed(fy_backend *be, float *out, const fy_tensor *table, const int32_t *ids, int T)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return;
    }
    if (T <= 0 || !out || !ids || !table || !table->data || !fy_weight_ok(table) ||
        table->rows <= 0 || table->cols <= 0 || table->cols > INT32_MAX) {
        FY_BAD(c, "cuda embed: bad arguments (T=%d)", T);
        return;
    }
    fy_cuda__launched(c,
                      fy_embed_launch(c->stream, out, table->data, table->dtype, table->rows,
                                      (int)table->cols, ids, T, c->d_flags,
                                      FY_CUDA_FLAG_TOKEN_RANGE),
                      "embed");
}

static void cu_rmsnorm(fy_backend *be, float *out, const float *x, const fy_tensor *w, int T,
                       int dim, float eps)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return;
    }
    if (T <= 0 || dim <= 0 || !out || !x || !w || !w->data || !fy_dtype_ok(w->dtype) ||
        w->rows * w->cols != dim || !(eps >= 0.0f)) {
        FY_BAD(c, "cuda rmsnorm: bad arguments (T=%d dim=%d)", T, dim);
        return;
    }
    fy_cuda__launched(c, fy_rmsnorm_launch(c->stream, out, x, w->data, w->dtype, T, dim, eps),
                      "rmsnorm");
}

static void cu_matmul(fy_backend *be, float *out, const float *x, const fy_tensor *w,
                      const fy_tensor *bias, int T)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return;
    }
    if (T <= 0 || !out || !x || !w || !w->data || !fy_weight_ok(w) || w->rows <= 0 ||
        w->cols <= 0 || w->rows > INT32_MAX || w->cols > INT32_MAX ||
        (bias && bias->data && (!fy_dtype_ok(bias->dtype) || bias->rows * bias->cols != w->rows))) {
        FY_BAD(c, "cuda matmul: bad arguments (T=%d)", T);
        return;
    }
    fy_cuda_gemm(c, out, x, w, bias, T);
}

static void cu_rope(fy_backend *be, float *q, float *k, const int32_t *pos, int T, int n_heads,
                    int n_kv_heads, int head_dim, const float *inv_freq, int pairs)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return;
    }
    if (T <= 0 || !q || !pos || !inv_freq || n_heads <= 0 || (k && n_kv_heads <= 0) ||
        head_dim <= 0 || head_dim % 2 ||
        (pairs != FY_ROPE_PAIRS_HALF && pairs != FY_ROPE_PAIRS_ADJACENT)) {
        FY_BAD(c, "cuda rope: bad arguments (T=%d heads=%d/%d head_dim=%d)", T, n_heads, n_kv_heads,
               head_dim);
        return;
    }
    fy_cuda__launched(
        c, fy_rope_launch(c->stream, q, k, pos, T, n_heads, n_kv_heads, head_dim, inv_freq, pairs),
        "rope");
}

// Shape rules the attention kernels rely on.
static int fy_attn_shape_ok(fy_cuda_be *c, const fy_attn_batch *b, const fy_attn_shape *sh,
                            const char *op)
{
    if (!b || !sh || b->n_tokens <= 0 || b->n_seqs <= 0 || b->n_seqs > b->n_tokens ||
        sh->n_heads <= 0 || sh->n_kv_heads <= 0 || sh->n_heads % sh->n_kv_heads ||
        sh->head_dim <= 0 || sh->head_dim % FY_KV_VEC || sh->head_dim > FY_PA_MAX_HEAD_DIM ||
        sh->block_size <= 0 ||
        (sh->kv_dtype != FY_DT_F16 && sh->kv_dtype != FY_DT_BF16 && sh->kv_dtype != FY_DT_F32) ||
        b->max_blocks <= 0 || b->n_tokens > 65535 ||
        (long)b->max_blocks * sh->block_size > INT32_MAX) {
        FY_BAD(c,
               "cuda %s: unsupported shape (tokens=%d seqs=%d heads=%d/%d head_dim=%d, "
               "block_size=%d kv=%s; head_dim must be a multiple of 8 up to %d, the KV cache F16, "
               "BF16 or F32)",
               op, b ? b->n_tokens : 0, b ? b->n_seqs : 0, sh ? sh->n_heads : 0,
               sh ? sh->n_kv_heads : 0, sh ? sh->head_dim : 0, sh ? sh->block_size : 0,
               fy_cu_dtype_name(sh ? sh->kv_dtype : FY_DT_F16), FY_PA_MAX_HEAD_DIM);
        return 0;
    }
    return 1;
}

static void cu_cache_write(fy_backend *be, void *k_cache, void *v_cache, const float *k,
                           const float *v, const fy_attn_batch *b, const fy_attn_shape *sh)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || !fy_attn_shape_ok(c, b, sh, "cache_write")) {
        return;
    }
    if (!k_cache || !v_cache || !k || !v || !b->slots) {
        FY_BAD(c, "cuda cache_write: NULL pointer");
        return;
    }
    fy_cuda__launched(c,
                      fy_cache_write_launch(c->stream, sh->kv_dtype, k_cache, v_cache, k, v,
                                            b->slots, b->n_tokens, sh->n_kv_heads, sh->head_dim,
                                            sh->block_size),
                      "cache_write");
}

/* The fields the prefill (fy_pf_params) and decode (fy_pa_params) attention
 * launches share, zeroing the rest. */
template <typename P>
static void attn_params(P *p, float *out, const float *q, const void *k_cache, const void *v_cache,
                        const fy_attn_batch *b, const fy_attn_shape *sh)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->q = q;
    p->k_cache = k_cache;
    p->v_cache = v_cache;
    p->kv_dtype = sh->kv_dtype;
    p->positions = b->positions;
    p->seq_start = b->seq_start;
    p->ctx_len = b->ctx_len;
    p->block_tables = b->block_tables;
    p->n_seqs = b->n_seqs;
    p->max_blocks = b->max_blocks;
    p->n_heads = sh->n_heads;
    p->n_kv_heads = sh->n_kv_heads;
    p->head_dim = sh->head_dim;
    p->block_size = sh->block_size;
    p->scale = sh->scale;
}

static void cu_attention(fy_backend *be, float *out, const float *q, const void *k_cache,
                         const void *v_cache, const fy_attn_batch *b, const fy_attn_shape *sh)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || !fy_attn_shape_ok(c, b, sh, "attention")) {
        return;
    }
    if (!out || !q || !k_cache || !v_cache || !b->positions || !b->seq_start || !b->ctx_len ||
        !b->block_tables || b->max_ctx_len <= 0 || b->max_query_len <= 0 ||
        b->max_ctx_len > b->max_blocks * sh->block_size) {
        FY_BAD(c, "cuda attention: bad batch (max_ctx_len=%d max_query_len=%d max_blocks=%d)",
               b->max_ctx_len, b->max_query_len, b->max_blocks);
        return;
    }
    if (b->max_query_len > FY_PF_MIN_QUERY) {
        fy_pf_params p;
        attn_params(&p, out, q, k_cache, v_cache, b, sh);
        if (fy_pf_smem_bytes(sh->head_dim) > c->smem_optin) {
            fy_cuda__err_set(&c->err, FY_ENOTSUP,
                             "cuda attention: head_dim %d needs %zu bytes of shared memory, "
                             "device allows %zu",
                             sh->head_dim, fy_pf_smem_bytes(sh->head_dim), c->smem_optin);
            return;
        }
        fy_cuda__launched(c, fy_pf_launch(c->stream, &p, b->max_query_len), "prefill attention");
        return;
    }
    fy_pa_params p;
    attn_params(&p, out, q, k_cache, v_cache, b, sh);
    p.n_tokens = b->n_tokens;
    int v1 = fy_pa_use_v1(b->max_ctx_len, b->n_tokens, sh->n_heads, c->sm_count);
    float *tmp = NULL;
    if (!v1) {
        int parts = (b->max_ctx_len + FY_PA_PARTITION - 1) / FY_PA_PARTITION;
        size_t n = fy_pa_v2_scratch_floats(b->n_tokens, sh->n_heads, sh->head_dim, parts);
        tmp = (float *)fy_cuda__scratch(c, FY_CUDA_SCRATCH_ATTN, n * sizeof(float));
        if (!tmp) {
            return;
        }
    }
    fy_cuda__launched(c, fy_pa_launch(c->stream, p, b->max_ctx_len, v1, tmp), "paged attention");
}

static void cu_silu_mul(fy_backend *be, float *out, const float *gate, const float *up, int T,
                        int dim)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c) {
        return;
    }
    if (T <= 0 || dim <= 0 || !out || !gate || !up) {
        FY_BAD(c, "cuda silu_mul: bad arguments (T=%d dim=%d)", T, dim);
        return;
    }
    fy_cuda__launched(c, fy_silu_mul_launch(c->stream, out, gate, up, (size_t)T * dim), "silu_mul");
}

static void cu_add(fy_backend *be, float *out, const float *a, const float *b, size_t n)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || n == 0) {
        return;
    }
    if (!out || !a || !b) {
        FY_BAD(c, "cuda add: NULL pointer");
        return;
    }
    fy_cuda__launched(c, fy_add_launch(c->stream, out, a, b, n), "add");
}

static void cu_gather_rows(fy_backend *be, float *out, const float *in, const int32_t *rows, int n,
                           int dim)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || n == 0) {
        return;
    }
    if (n < 0 || dim <= 0 || !out || !in || !rows) {
        FY_BAD(c, "cuda gather_rows: bad arguments (n=%d dim=%d)", n, dim);
        return;
    }
    fy_cuda__launched(
        c,
        fy_gather_rows_launch(c->stream, out, in, rows, n, dim, c->d_flags, FY_CUDA_FLAG_ROW_RANGE),
        "gather_rows");
}

static void cu_block_copy(fy_backend *be, void *k_cache, void *v_cache, const int32_t *src,
                          const int32_t *dst, int n_pairs, size_t block_bytes)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || n_pairs == 0) {
        return;
    }
    if (n_pairs < 0 || n_pairs > 65535 || !k_cache || !v_cache || !src || !dst ||
        block_bytes == 0 || block_bytes % 16) {
        FY_BAD(c, "cuda block_copy: bad arguments (pairs=%d block_bytes=%zu)", n_pairs,
               block_bytes);
        return;
    }
    fy_cuda__launched(
        c, fy_block_copy_launch(c->stream, k_cache, v_cache, src, dst, n_pairs, block_bytes),
        "block_copy");
}

static void cu_argmax(fy_backend *be, int32_t *out, const float *logits, int n, int vocab)
{
    fy_cuda_be *c = fy_cuda__op(be);
    if (!c || n == 0) {
        return;
    }
    if (n < 0 || vocab <= 0 || !out || !logits) {
        FY_BAD(c, "cuda argmax: bad arguments (n=%d vocab=%d)", n, vocab);
        return;
    }
    fy_cuda__launched(c, fy_argmax_launch(c->stream, out, logits, n, vocab), "argmax");
}

static void cu_destroy(fy_backend *be);

// KV cache: auto is F16, as before (half the memory of F32, and test_gpu_ops
// holds it to the CPU's F32 cache); BF16 and F32 run too (dtype.cuh).
#define FY_CUDA_KV_TYPES (1u << FY_DT_F16 | 1u << FY_DT_BF16 | 1u << FY_DT_F32)

// Weights: every type of kernels/backend.h, the block types through
// qmatmul.cu and embed.cu.
#define FY_CUDA_WEIGHT_TYPES ((1u << FY_DT_COUNT) - 1)

static const fy_backend_ops fy_cuda_ops = {
    "cuda",         FY_DT_F16,      FY_CUDA_KV_TYPES, 0,           FY_CUDA_WEIGHT_TYPES,
    cu_destroy,     cu_alloc,       cu_free,          cu_upload,   cu_download,
    cu_sync,        cu_mem_free,    cu_embed,         cu_rmsnorm,  cu_matmul,
    cu_rope,        cu_cache_write, cu_attention,     cu_silu_mul, cu_add,
    cu_gather_rows, cu_block_copy,  cu_argmax,
};

// --- C API beyond the table (cuda_api.h) -----------------------------------------

static fy_cuda_be *fy_cuda__of(fy_backend *be)
{
    return be && be->ops == &fy_cuda_ops ? fy_cuda__be(be) : NULL;
}

extern "C" void fy_cuda_sample_filter(fy_backend *be, float *logits, const int32_t *counts,
                                      const fy_sample_params *params, int n, int vocab)
{
    fy_cuda_be *c = fy_cuda__of(be);
    if (!c || fy_cuda__enter(c) || n == 0) {
        return;
    }
    if (n < 0 || vocab <= 0 || !logits || !params) {
        FY_BAD(c, "cuda sample_filter: bad arguments (n=%d vocab=%d)", n, vocab);
        return;
    }
    fy_cuda__launched(c, fy_sample_filter_launch(c->stream, logits, counts, params, n, vocab),
                      "sample_filter");
}

extern "C" size_t fy_cuda_kv_budget(fy_backend *be, double fraction)
{
    if (!fy_cuda__of(be) || !(fraction > 0.0 && fraction <= 1.0)) {
        return 0;
    }
    size_t fr = cu_mem_free(be);
    size_t b = (size_t)((double)fr * fraction);
    return b & ~(size_t)((1u << 20) - 1);
}

extern "C" int fy_cuda_attention_variant(fy_backend *be, int max_ctx, int n_tokens, int n_heads)
{
    fy_cuda_be *c = fy_cuda__of(be);
    if (!c) {
        return 0;
    }
    return fy_pa_use_v1(max_ctx, n_tokens, n_heads, c->sm_count) ? 1 : 2;
}

int fy_cuda__is(fy_backend *be)
{
    return fy_cuda__of(be) != NULL;
}

// --- lifetime ----------------------------------------------------------------------

static void cu_destroy(fy_backend *be)
{
    if (!be) {
        return;
    }
    fy_cuda_be *c = fy_cuda__be(be);
    if (cudaSetDevice(c->device) == cudaSuccess) {
        for (int i = 0; i < FY_CUDA_SCRATCH_N; i++) {
            if (c->scratch[i]) {
                (void)cudaFreeAsync(c->scratch[i], c->stream); // stream-ordered, like its malloc
            }
        }
        if (c->stream) {
            (void)cudaStreamSynchronize(c->stream);
        }
        if (c->blas) {
            (void)cublasDestroy(c->blas);
        }
        if (c->d_flags) {
            (void)cudaFree(c->d_flags);
        }
        if (c->h_flags) {
            (void)cudaFreeHost(c->h_flags);
        }
        if (c->stream) {
            (void)cudaStreamDestroy(c->stream);
        }
    }
    (void)cudaGetLastError();
    free(c);
}

extern "C" int fy_cuda_backend_create(int device, fy_backend **out, char *err, size_t errlen)
{
    *out = NULL;
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        snprintf(err, errlen, "--device cuda: no usable CUDA device (%s)",
                 e != cudaSuccess ? cudaGetErrorString(e) : "0 devices found");
        (void)cudaGetLastError();
        return FY_ENOTSUP;
    }
    if (device < 0 || device >= count) {
        snprintf(err, errlen, "--device cuda:%d: this machine has %d CUDA device(s) (0..%d)",
                 device, count, count - 1);
        return FY_EINVAL;
    }
    cudaDeviceProp prop;
    memset(&prop, 0, sizeof prop);
    e = cudaGetDeviceProperties(&prop, device);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cuda:%d: cudaGetDeviceProperties: %s", device,
                 cudaGetErrorString(e));
        return fy_cuda__code(e);
    }
    if (prop.major < 8) {
        snprintf(err, errlen,
                 "cuda:%d: %s is compute capability %d.%d; ferry's CUDA kernels need 8.0 or "
                 "newer (Ampere, Ada, Hopper, Blackwell)",
                 device, prop.name, prop.major, prop.minor);
        return FY_ENOTSUP;
    }
    fy_cuda_be *c = (fy_cuda_be *)calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "cuda:%d: out of host memory", device);
        return FY_ENOMEM;
    }
    c->base.ops = &fy_cuda_ops;
    c->base.impl = c;
    c->device = device;
    c->sm_count = prop.multiProcessorCount;
    c->tp_size = 1;
    snprintf(c->name, sizeof c->name, "%.*s", (int)sizeof c->name - 1, prop.name);
    int optin = 0;
    size_t pf_smem = fy_pf_smem_bytes(FY_PA_MAX_HEAD_DIM);
    if (CUDA_CHECK(&c->err, cudaSetDevice(device)) ||
        CUDA_CHECK(&c->err, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin,
                                                   device)) ||
        CUDA_CHECK(&c->err, cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) ||
        CUBLAS_CHECK(&c->err, cublasCreate(&c->blas)) ||
        CUBLAS_CHECK(&c->err, cublasSetStream(c->blas, c->stream)) ||
        CUDA_CHECK(&c->err, cudaMalloc(&c->d_flags, sizeof(int))) ||
        CUDA_CHECK(&c->err, cudaMemset(c->d_flags, 0, sizeof(int))) ||
        CUDA_CHECK(&c->err, cudaHostAlloc(&c->h_flags, sizeof(int), cudaHostAllocDefault))) {
        goto fail;
    }
    c->smem_optin = (size_t)optin;
    // Let the prefill kernel use what the largest supported head_dim needs.
    if (CUDA_CHECK(&c->err, fy_pf_set_smem(pf_smem < c->smem_optin ? pf_smem : c->smem_optin))) {
        goto fail;
    }
    *out = &c->base;
    return 0;
fail:
    snprintf(err, errlen, "cuda:%d (%s): %s", device, prop.name, c->err.msg);
    {
        int code = c->err.code;
        cu_destroy(&c->base);
        return code;
    }
}
