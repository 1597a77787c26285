/* backend.h: the compute backends ferry can run on, behind one interface.
 *
 * The engine's forward pass (runner/engine/forward.c) calls only the ops
 * table below; the CPU backend (kernels/cpu/, always built, the reference)
 * and the CUDA backend (kernels/cuda/, built when nvcc is found) implement
 * it. Every pointer an op takes lives in the backend's memory (host memory
 * for the CPU backend, device memory for CUDA), except where a comment says
 * "host". Ops are asynchronous on CUDA (one stream per backend) and
 * synchronous on the CPU; download() and sync() wait.
 *
 * Shapes: activations are row-major float32 [T x dim] for a batch of T
 * tokens. A weight matrix W is [rows x cols] row-major in its own dtype
 * (F32, F16 or BF16); matmul computes out = x . W^T (+ bias), i.e. out[t][r]
 * = sum_c x[t][c] * W[r][c], as Hugging Face's nn.Linear stores it.
 *
 * KV cache layout (one K and one V array per layer, kv_dtype elements):
 *   cache[block][kv_head][slot_in_block][head_dim]
 * A token's "slot" is block * block_size + slot_in_block; block ids come
 * from the engine's block manager (runner/engine/kvcache.h), which never
 * touches the memory itself. */
#ifndef FY_BACKEND_H
#define FY_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* "cpu", "cuda" */
    int compiled;     /* 1 when built into this binary */
    int usable;       /* 1 when it can run here (CUDA: a device is present) */
    char detail[160]; /* human-readable: SIMD flags, device names, or why not usable */
} fy_backend_info;

/* Fills up to MAX entries (cpu first) and returns how many were written.
 * CUDA is listed without being probed: probing loads the CUDA module and
 * its libraries (~200 MB resident), so its entry says "compiled, not
 * probed (module PATH)" (usable 0); fy_cuda_probe() probes. */
int fy_backend_list(fy_backend_info *out, int max);

/* CPU: y[i] += a * x[i] for i < n. The reference implementation of the op
 * the CUDA probe runs. */
void fy_cpu_axpy(size_t n, float a, const float *x, float *y);

#ifdef FY_HAVE_CUDA
/* The CUDA backend lives in a module, libferry_cuda.so (kernels/cuda/module.h),
 * that every fy_cuda_* function below and in kernels/cuda/cuda_api.h reaches
 * through kernels/cuda_loader.c: the first call that needs it dlopen()s
 * $FERRY_CUDA_LIB, or <dir of the executable>/../lib/libferry_cuda.so. When
 * it cannot be loaded those calls fail with FY_ENOTSUP and a message naming
 * the file and why (calls on a CUDA object do nothing: there can be none).
 *
 * Loads the module now if it is not loaded. Returns 0, or FY_ENOTSUP with
 * ERR saying why it cannot be loaded. Thread-safe. */
int fy_cuda_module_load(char *err, size_t errlen);
/* The module's path: the one loaded, or the one a load would try. */
void fy_cuda_module_path(char *out, size_t outlen);

/* CUDA (kernels/cuda/probe.cu). Fills INFO; returns 0 when a device is usable. */
int fy_cuda_probe(fy_backend_info *info);
/* Runs y += a*x on device 0 (copies in and out). Returns 0, or a negative
 * FY_E* code (FY_ENOTSUP with no device); MSG gets CUDA's error text. */
int fy_cuda_axpy(size_t n, float a, const float *x, float *y, char *msg, size_t msglen);
#endif

/* --- Tensors ------------------------------------------------------------------ */

/* Element types. F32, F16 and BF16 are plain arrays; the others are ggml's
 * packed block types (weights only; kernels/cpu/quant.h has their layouts):
 * a row of COLS weights is COLS / block_weights blocks of block_bytes each,
 * so COLS must be a multiple of the block. */
typedef enum {
    FY_DT_F32 = 0,
    FY_DT_F16 = 1,
    FY_DT_BF16 = 2,
    FY_DT_Q8_0,
    FY_DT_Q4_0,
    FY_DT_Q4_1,
    FY_DT_Q5_0,
    FY_DT_Q5_1,
    FY_DT_Q4_K,
    FY_DT_Q5_K,
    FY_DT_Q6_K,
    FY_DT_COUNT
} fy_dtype;

/* Bytes per element of F32, F16 and BF16; 0 for the block types. */
size_t fy_dtype_size(fy_dtype dt);
/* "F32", "F16", "BF16", "Q8_0", "Q4_K", ... ("?" outside the enum). */
const char *fy_dtype_name(fy_dtype dt);
/* 1 for the packed block types. */
int fy_dtype_is_block(fy_dtype dt);
/* Weights per block (1 for F32/F16/BF16); 0 outside the enum. */
uint32_t fy_dtype_block_weights(fy_dtype dt);
/* Bytes per block (the element size for F32/F16/BF16); 0 outside the enum. */
uint32_t fy_dtype_block_bytes(fy_dtype dt);
/* Bytes that N weights of DT occupy. Returns 0 and sets *BYTES, or
 * FY_EINVAL when DT is not a type or N is not a multiple of its block, or
 * FY_ETOOBIG when the size does not fit in 64 bits. */
int fy_dtype_bytes(fy_dtype dt, uint64_t n, uint64_t *bytes);
/* Bytes of a row of COLS weights of DT, for a COLS already checked to be
 * whole blocks (a tensor's cols, or a slice of them); 0 outside the enum. */
size_t fy_dtype_row_bytes(fy_dtype dt, int64_t cols);

/* A 1-D or 2-D tensor in backend memory. 1-D tensors have rows == 1. */
typedef struct {
    const void *data; /* NULL: absent (e.g. no bias) */
    fy_dtype dtype;
    int64_t rows, cols; /* block types: cols is a multiple of the block */
} fy_tensor;

/* Scalar conversions, shared by every backend's reference path. */
float fy_f16_to_f32(uint16_t h);
uint16_t fy_f32_to_f16(float f);
float fy_bf16_to_f32(uint16_t h);
uint16_t fy_f32_to_bf16(float f); /* round to nearest even */

/* --- The batch an attention op sees ------------------------------------------- */

/* One engine step: T tokens from n_seqs sequences, in sequence order (all
 * tokens of seqs[0], then seqs[1], ...). Decode sequences contribute one
 * token, prefill (or chunked-prefill) sequences several. All arrays are in
 * backend memory except where "host" is said. */
typedef struct {
    int n_tokens;                /* T */
    int n_seqs;                  /* S */
    const int32_t *positions;    /* [T] absolute position of each token */
    const int32_t *slots;        /* [T] cache slot where its K/V is written */
    const int32_t *seq_start;    /* [S+1] first token of each sequence; seq_start[S] == T */
    const int32_t *ctx_len;      /* [S] tokens in the cache once this step's are written */
    const int32_t *block_tables; /* [S x max_blocks] block ids, row per sequence */
    int max_blocks;
    int max_ctx_len;               /* max over ctx_len (host value) */
    int max_query_len;             /* max tokens of one sequence in this step (host value) */
    const int32_t *host_seq_start; /* host copy of seq_start */
    const int32_t *host_ctx_len;   /* host copy of ctx_len */
} fy_attn_batch;

typedef struct {
    int n_heads, n_kv_heads, head_dim; /* GQA: n_heads % n_kv_heads == 0 */
    int block_size;                    /* tokens per KV block */
    float scale;                       /* usually 1/sqrt(head_dim) */
    fy_dtype kv_dtype;                 /* the caches' element type: F32, F16 or BF16, one the
                                        * backend lists in ops->kv_dtypes */
} fy_attn_shape;

/* Which elements of a head rotary embedding rotates together, pair i of
 * head_dim/2: HF's rotate-half layout, (i, i + head_dim/2), as safetensors
 * checkpoints and GGUF's qwen2/qwen3 store q and k; or ggml's "normal" mode,
 * (2i, 2i + 1), as GGUF's llama files store them (llama.cpp's converter
 * permutes q/k rows into that order). */
enum { FY_ROPE_PAIRS_HALF = 0, FY_ROPE_PAIRS_ADJACENT = 1 };

/* --- The ops table ---------------------------------------------------------------- */

typedef struct fy_backend fy_backend;

typedef struct fy_backend_ops {
    const char *name;
    fy_dtype kv_dtype;  /* the KV cache element type "auto" picks (fy_kv_dtype_parse) */
    unsigned kv_dtypes; /* the KV element types cache_write and attention take: bit 1 << dtype */
    int host_memory;    /* 1: backend memory is host memory (weights used in place) */
    unsigned weight_dtypes; /* the weight types embed and matmul take: bit 1 << dtype */

    void (*destroy)(fy_backend *be);
    void *(*alloc)(fy_backend *be, size_t bytes); /* NULL when out of memory */
    void (*free)(fy_backend *be, void *p);
    int (*upload)(fy_backend *be, void *dst, const void *host_src, size_t bytes);
    int (*download)(fy_backend *be, void *host_dst, const void *src, size_t bytes);
    int (*sync)(fy_backend *be); /* waits for every queued op; returns 0 or an FY_E* code */
    /* Bytes of device memory free now (CPU: 0 = not applicable). */
    size_t (*mem_free)(fy_backend *be);

    /* out[t] = table[ids[t]] (converted to f32). ids: [T] in backend memory. */
    void (*embed)(fy_backend *be, float *out, const fy_tensor *table, const int32_t *ids, int T);
    /* out[t] = x[t] / rms(x[t]) * w, rms over DIM with EPS. OUT may equal X. */
    void (*rmsnorm)(fy_backend *be, float *out, const float *x, const fy_tensor *w, int T, int dim,
                    float eps);
    /* out[T x w->rows] = x[T x w->cols] . W^T + bias (bias may be NULL or have data NULL). */
    void (*matmul)(fy_backend *be, float *out, const float *x, const fy_tensor *w,
                   const fy_tensor *bias, int T);
    /* Rotary embedding: for each head, pair i of PAIRS (fy_rope_pairs) is rotated by
     * angle = pos * inv_freq[i]. Q: [T x n_heads*head_dim], K: [T x n_kv_heads*head_dim].
     * inv_freq: [head_dim/2] in backend memory (scaling already applied). */
    void (*rope)(fy_backend *be, float *q, float *k, const int32_t *pos, int T, int n_heads,
                 int n_kv_heads, int head_dim, const float *inv_freq, int pairs);
    /* Reshape-and-cache: K and V rows [T x n_kv_heads*head_dim] written to their slots
     * (a slot < 0 is padding and skipped). */
    void (*cache_write)(fy_backend *be, void *k_cache, void *v_cache, const float *k,
                        const float *v, const fy_attn_batch *b, const fy_attn_shape *sh);
    /* Causal attention over the paged cache: token t of sequence s at position p attends
     * to positions 0..p of s (all in the cache, this step's included). Q: [T x
     * n_heads*head_dim]; OUT the same shape. Covers decode (one token per sequence) and
     * (chunked) prefill; implementations may dispatch to different kernels. */
    void (*attention)(fy_backend *be, float *out, const float *q, const void *k_cache,
                      const void *v_cache, const fy_attn_batch *b, const fy_attn_shape *sh);
    /* out[t][i] = silu(gate[t][i]) * up[t][i], for DIM columns. OUT may equal GATE. */
    void (*silu_mul)(fy_backend *be, float *out, const float *gate, const float *up, int T,
                     int dim);
    /* out[i] = a[i] + b[i] for N elements. OUT may equal A. */
    void (*add)(fy_backend *be, float *out, const float *a, const float *b, size_t n);
    /* out[i] = in[rows[i]] for N rows of DIM floats (rows: backend memory). */
    void (*gather_rows)(fy_backend *be, float *out, const float *in, const int32_t *rows, int n,
                        int dim);
    /* Copy-on-write: for each pair i, block dst[i] of the K and V caches of one layer
     * becomes a copy of block src[i]. BLOCK_BYTES: bytes of one block in one cache. */
    void (*block_copy)(fy_backend *be, void *k_cache, void *v_cache, const int32_t *src,
                       const int32_t *dst, int n_pairs, size_t block_bytes);
    /* out[r] = argmax over VOCAB of logits[r] (lowest index on ties), for N rows. */
    void (*argmax)(fy_backend *be, int32_t *out, const float *logits, int n, int vocab);
} fy_backend_ops;

struct fy_backend {
    const fy_backend_ops *ops;
    void *impl;
};

/* The KV cache element type NAME asks for on a backend with OPS: "auto" (or
 * NULL) is ops->kv_dtype; "f32", "f16", "bf16" (any case) are themselves. OPS
 * NULL checks the name only (auto gives F32). Returns 0 and sets *OUT, or
 * FY_EINVAL for another name, or FY_ENOTSUP when the backend has no kernels
 * for that type; ERR says which. */
int fy_kv_dtype_parse(const char *name, const fy_backend_ops *ops, fy_dtype *out, char *err,
                      size_t errlen);

/* Creates the backend named by DEVICE: "cpu" or "cuda[:N]". THREADS: CPU
 * worker threads (0 = one per core). On failure returns an FY_E* code and
 * writes why to ERR. */
int fy_backend_create(const char *device, int threads, fy_backend **out, char *err, size_t errlen);
void fy_backend_destroy(fy_backend *be);

/* The CPU backend (kernels/cpu/). */
int fy_cpu_backend_create(int threads, fy_backend **out, char *err, size_t errlen);

#ifdef FY_HAVE_CUDA
/* The CUDA backend (kernels/cuda/) on device DEVICE. */
int fy_cuda_backend_create(int device, fy_backend **out, char *err, size_t errlen);
#endif

/* --- Tensor-parallel groups ------------------------------------------------------- */

/* A communicator joins N backends ("ranks") that each hold a shard of the
 * weights and run the same step in lock-step, one host thread per rank
 * (runner/engine/forward.c). Two implementations: N CPU backends in one
 * process summing through shared memory (kernels/cpu/comm_cpu.c, the tested
 * reference), and N CUDA devices joined by NCCL (kernels/cuda/tp_comm.cu).
 *
 * Rank 0's backend is the caller's: the group adopts it and never destroys
 * it; ranks 1..N-1 are made by the group and die with it. */
#define FY_COMM_MAX 16

typedef struct fy_comm fy_comm;

typedef struct fy_comm_ops {
    const char *name; /* "cpu", "nccl" */
    /* Frees the group and the backends of ranks 1..N-1 (rank 0's is left alone).
     * No rank may be inside a collective. */
    void (*destroy)(fy_comm *c);
    /* Sum of BUF (N floats in rank RANK's backend memory) over every rank, in
     * place. A collective: each rank's thread calls it with the same N, in the
     * same order. Ordered after the ops queued before it on the rank's backend
     * (CPU: returns when every rank's buffer holds the sum; CUDA: queued on the
     * rank's stream). Every rank gets bit-identical sums. */
    void (*all_reduce)(fy_comm *c, int rank, float *buf, size_t n);
    /* Optional (NULL: the caller slices and uploads itself). Rank RANK's shard
     * of host weight W [R x C], in that rank's backend memory: column-parallel
     * (COLUMN = 1) rows [rank*R/N, (rank+1)*R/N), row-parallel (COLUMN = 0)
     * columns [rank*C/N, (rank+1)*C/N); a 1-D tensor (rows == 1) is split along
     * its only dimension when column-parallel. *OUT is freed with the rank's
     * ops->free. Returns 0 or an FY_E* code with ERR saying why. */
    int (*shard)(fy_comm *c, int rank, const fy_tensor *w, int column, fy_tensor *out, char *err,
                 size_t errlen);
} fy_comm_ops;

struct fy_comm {
    const fy_comm_ops *ops;
    int size;                    /* N, 1..FY_COMM_MAX */
    fy_backend *be[FY_COMM_MAX]; /* rank r's backend; be[0] is the adopted one */
    void *impl;
};

/* N CPU ranks: RANK0 (a CPU backend) and N-1 new CPU backends of THREADS
 * worker threads each (0: as many as RANK0 has). All-reduce sums the ranks'
 * buffers in rank order through shared memory between two barriers. */
int fy_cpu_comm_create(fy_backend *rank0, int n, int threads, fy_comm **out, char *err,
                       size_t errlen);

#ifdef FY_HAVE_CUDA
/* N CUDA ranks joined by NCCL: RANK0 (a CUDA backend on device D) and new
 * backends on devices D+1 .. D+N-1. FY_ENOTSUP when the build has no NCCL or
 * those devices are absent. */
int fy_cuda_comm_create(fy_backend *rank0, int n, fy_comm **out, char *err, size_t errlen);
#endif

/* Destroys C (NULL is fine). */
static inline void fy_comm_destroy(fy_comm *c)
{
    if (c) {
        c->ops->destroy(c);
    }
}

#endif
