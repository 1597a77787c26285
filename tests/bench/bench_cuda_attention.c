/* bench_cuda_attention: the CUDA paged-attention decode kernel against the
 * device's measured copy bandwidth, and decode tokens/s of a generated
 * Llama-shaped model on the CUDA backend.
 *
 *   build-dir/bench/bench_cuda_attention [cuda:N] [MODEL_DIR]
 *
 * Needs a GPU; without one it prints why and exits 77.
 *
 * 1. Copy bandwidth: cudaMemcpy device to device of 1 GiB, best of 5,
 *    counted as bytes read + bytes written (what a streaming kernel moves).
 * 2. Paged attention, Llama-3-8B attention shape (32 query heads, 8 KV heads,
 *    head_dim 128, F16 cache, 16-token blocks, permuted block tables): for
 *    batch sizes 1..256 and contexts 128..32768, the time per call and the
 *    achieved bandwidth = K+V bytes of every sequence's context / time (each
 *    KV head's rows are read once from DRAM; the 4 query heads of a group
 *    share them through L2), as a fraction of the copy bandwidth; the v1/v2
 *    column says which kernel the dispatch rule picked.
 * 3. Decode tokens/s through fy_fwd_step with 1 and 64 sequences at context
 *    ~128 on a generated Llama-3.2-1B-shaped BF16 model (16 layers, hidden
 *    2048, 32/8 heads, intermediate 8192, vocab 32000; ~2.2 GB written to
 *    MODEL_DIR or a temporary directory), against the weight-streaming
 *    roofline (copy bandwidth / weight bytes). */
#include "common/err.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_api.h"
#include "runner/engine/forward.h"
#include "tests/unit/support/model_fixture.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_cuda_attention: %s: %s\n", what, rc ? fy_strerror(rc) : "failed");
    exit(1);
}

static double copy_bandwidth(int dev)
{
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0, e1;
    if (cudaSetDevice(dev) != cudaSuccess || cudaMalloc(&a, n) != cudaSuccess ||
        cudaMalloc(&b, n) != cudaSuccess || cudaEventCreate(&e0) != cudaSuccess ||
        cudaEventCreate(&e1) != cudaSuccess) {
        die("copy bandwidth setup", 0);
    }
    cudaMemset(a, 1, n);
    float best = 1e30f;
    for (int i = 0; i < 6; i++) {
        float ms = 0;
        cudaEventRecord(e0, 0);
        cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        cudaEventElapsedTime(&ms, e0, e1);
        if (i > 0 && ms < best) {
            best = ms;
        }
    }
    cudaFree(a), cudaFree(b), cudaEventDestroy(e0), cudaEventDestroy(e1);
    return 2.0 * (double)n / (best / 1e3);
}

static void *dev_alloc(fy_backend *be, size_t n)
{
    void *p = be->ops->alloc(be, n);
    if (!p) {
        die("device alloc", FY_ENOMEM);
    }
    return p;
}

/* Seconds per attention call for BATCH sequences at context CTX. */
static double time_attention(fy_backend *be, int batch, int ctx, int *variant)
{
    const int H = 32, KV = 8, HD = 128, BS = 16;
    const int bps = (ctx + BS - 1) / BS, nblocks = batch * bps;
    const size_t cache = (size_t)nblocks * KV * BS * HD * 2;
    const fy_backend_ops *o = be->ops;
    void *kc = dev_alloc(be, cache), *vc = dev_alloc(be, cache);
    cudaMemset(kc, 0x3c, cache); /* every half 0x3c3c ~ 1.06: finite values */
    cudaMemset(vc, 0x3c, cache);
    cudaDeviceSynchronize(); /* the backend's stream does not wait for the legacy one */
    int32_t *pos = malloc((size_t)batch * 4), *ss = malloc((size_t)(batch + 1) * 4),
            *cl = malloc((size_t)batch * 4), *bt = malloc((size_t)nblocks * 4);
    for (int i = 0; i < nblocks; i++) {
        bt[i] = i;
    }
    for (int i = nblocks - 1; i > 0; i--) { /* permuted block tables */
        int j = (int)(((unsigned)i * 2654435761u) % (unsigned)(i + 1));
        int32_t t = bt[i];
        bt[i] = bt[j], bt[j] = t;
    }
    for (int s = 0; s < batch; s++) {
        pos[s] = ctx - 1, ss[s] = s, cl[s] = ctx;
    }
    ss[batch] = batch;
    float *q = malloc((size_t)batch * H * HD * 4);
    for (int i = 0; i < batch * H * HD; i++) {
        q[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    }
    int32_t *dpos = dev_alloc(be, (size_t)batch * 4), *dss = dev_alloc(be, (size_t)(batch + 1) * 4),
            *dcl = dev_alloc(be, (size_t)batch * 4), *dbt = dev_alloc(be, (size_t)nblocks * 4);
    float *dq = dev_alloc(be, (size_t)batch * H * HD * 4),
          *dout = dev_alloc(be, (size_t)batch * H * HD * 4);
    o->upload(be, dpos, pos, (size_t)batch * 4);
    o->upload(be, dss, ss, (size_t)(batch + 1) * 4);
    o->upload(be, dcl, cl, (size_t)batch * 4);
    o->upload(be, dbt, bt, (size_t)nblocks * 4);
    o->upload(be, dq, q, (size_t)batch * H * HD * 4);
    fy_attn_batch b = {batch, batch, dpos, NULL, dss, dcl, dbt, bps, ctx, 1, ss, cl};
    fy_attn_shape sh = {H, KV, HD, BS, 1.0f / sqrtf((float)HD), be->ops->kv_dtype};
    *variant = fy_cuda_attention_variant(be, ctx, batch, H);
    o->attention(be, dout, dq, kc, vc, &b, &sh); /* warm-up */
    int rc = o->sync(be);
    if (rc < 0) {
        die("attention", rc);
    }
    int iters = 3;
    double t = 0;
    for (;;) { /* at least 50 ms of work */
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            o->attention(be, dout, dq, kc, vc, &b, &sh);
        }
        if ((rc = o->sync(be)) < 0) {
            die("attention", rc);
        }
        t = (now_s() - t0) / iters;
        if (t * iters > 0.05 || iters > 10000) {
            break;
        }
        iters *= 4;
    }
    o->free(be, kc), o->free(be, vc), o->free(be, dpos), o->free(be, dss), o->free(be, dcl);
    o->free(be, dbt), o->free(be, dq), o->free(be, dout);
    free(pos), free(ss), free(cl), free(bt), free(q);
    return t;
}

static void bench_attention(fy_backend *be, double copy_bw)
{
    const int batches[] = {1, 8, 32, 64, 128, 256};
    const int ctxs[] = {128, 512, 1024, 2048, 4096, 8192, 16384, 32768};
    size_t budget = be->ops->mem_free(be) / 5 * 2; /* both caches under 40% of free memory */
    printf("\npaged attention decode: 32 q heads, 8 kv heads, head_dim 128, F16 cache, blocks of "
           "16\n");
    printf("%6s %7s %4s %11s %10s %9s\n", "batch", "ctx", "ker", "us/call", "GB/s", "of copy");
    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
        for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
            int batch = batches[bi], ctx = ctxs[ci], variant = 0;
            double kv_bytes = 2.0 * batch * (double)ctx * 8 * 128 * 2; /* K and V, F16 */
            if (kv_bytes > (double)budget) {
                continue;
            }
            double t = time_attention(be, batch, ctx, &variant);
            double bw = kv_bytes / t;
            printf("%6d %7d %4s %11.1f %10.1f %8.0f%%\n", batch, ctx, variant == 1 ? "v1" : "v2",
                   t * 1e6, bw / 1e9, 100.0 * bw / copy_bw);
            fflush(stdout);
        }
    }
}

static double decode_tps(fy_fwd *f, int n, int ctx, int steps, int bps, int vocab)
{
    fy_fwd_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *bt = malloc((size_t)n * bps * 4), *tok = calloc((size_t)n, 4);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    for (int s = 0; s < n * bps; s++) {
        bt[s] = s;
    }
    double t0 = 0;
    for (int k = -1; k < steps; k++) { /* step -1 is the warm-up */
        if (k == 0) {
            t0 = now_s();
        }
        for (int s = 0; s < n; s++) {
            tok[s] = (int32_t)((s * 7919 + (k + 1) * 104729) % vocab);
            seqs[s] = (fy_fwd_seq){&tok[s], 1, ctx + k + 1, &bt[s * bps], bps, 1};
        }
        int rc = fy_fwd_step(f, seqs, n, logits);
        if (rc < 0) {
            die("decode step", rc);
        }
    }
    double dt = now_s() - t0;
    free(seqs), free(bt), free(tok), free(logits);
    return (double)n * steps / dt;
}

static void bench_decode(fy_backend *be, const char *dir_arg, double copy_bw)
{
    char dir[512], err[512];
    if (dir_arg) {
        snprintf(dir, sizeof dir, "%s", dir_arg);
    } else {
        snprintf(dir, sizeof dir, "/tmp/ferry-bench-cuda-%d", (int)getpid());
    }
    mkdir(dir, 0700);
    char probe[600];
    snprintf(probe, sizeof probe, "%s/model.safetensors", dir);
    fx_shape s = {.vocab = 32000,
                  .hidden = 2048,
                  .inter = 8192,
                  .layers = 16,
                  .heads = 32,
                  .kv_heads = 8,
                  .dt = FY_DT_BF16};
    if (access(probe, R_OK) != 0) {
        printf("\nwriting a Llama-3.2-1B-shaped BF16 model to %s ...\n", dir);
        fflush(stdout);
        if (fx_write_model(dir, &s, 42) != 0) {
            die("writing the model", 0);
        }
    }
    fy_model *m = NULL;
    if (fy_model_load(dir, &m, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        die("loading the model", 0);
    }
    const int BS = 16, CTX = 128, STEPS = 32, MAXN = 64;
    const int bps = (CTX + STEPS + 2 + BS - 1) / BS;
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * (size_t)bps * MAXN,
                        .max_batch_tokens = CTX,
                        .max_seqs = MAXN};
    fy_fwd *f = NULL;
    if (fy_fwd_create(m, be, &o, &f, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        die("placing the model on the GPU", 0);
    }
    /* Prefill every sequence once (not timed). */
    int32_t *tok = malloc((size_t)CTX * 4), *bt = malloc((size_t)bps * 4);
    float *logits = malloc((size_t)m->cfg.vocab_size * 4);
    for (int i = 0; i < CTX; i++) {
        tok[i] = (int32_t)((i * 31 + 7) % m->cfg.vocab_size);
    }
    for (int q = 0; q < MAXN; q++) {
        for (int i = 0; i < bps; i++) {
            bt[i] = q * bps + i;
        }
        fy_fwd_seq sq = {tok, CTX, 0, bt, bps, 1};
        int rc = fy_fwd_step(f, &sq, 1, logits);
        if (rc < 0) {
            die("prefill", rc);
        }
    }
    double roof = copy_bw / (double)m->weight_bytes; /* every weight read once per step */
    printf("\ndecode, %.2f GB of BF16 weights, context ~%d; roofline %.0f tokens/s per sequence\n",
           (double)m->weight_bytes / 1e9, CTX, roof);
    double one = decode_tps(f, 1, CTX, STEPS, bps, m->cfg.vocab_size);
    printf("  1 sequence:   %8.1f tokens/s (%.0f%% of roofline)\n", one, 100.0 * one / roof);
    double many = decode_tps(f, MAXN, CTX, STEPS, bps, m->cfg.vocab_size);
    printf("  %d sequences: %8.1f tokens/s (%.1fx one sequence)\n", MAXN, many, many / one);
    free(tok), free(bt), free(logits);
    fy_fwd_destroy(f);
    fy_model_free(m);
}

int main(int argc, char **argv)
{
    const char *dev = argc > 1 ? argv[1] : "cuda";
    char err[512];
    fy_backend *be = NULL;
    int rc = fy_backend_create(dev, 1, &be, err, sizeof err);
    if (rc != 0) {
        printf("bench_cuda_attention: needs a GPU: %s\n", err);
        return rc == FY_ENOTSUP ? 77 : 1;
    }
    int ord = strncmp(dev, "cuda:", 5) == 0 ? atoi(dev + 5) : 0;
    struct cudaDeviceProp p;
    cudaGetDeviceProperties(&p, ord);
    double bw = copy_bandwidth(ord);
    printf("%s: %s, %d SMs; device copy bandwidth %.0f GB/s (read + write)\n", dev, p.name,
           p.multiProcessorCount, bw / 1e9);
    bench_attention(be, bw);
    bench_decode(be, argc > 2 ? argv[2] : NULL, bw);
    fy_backend_destroy(be);
    return 0;
}
