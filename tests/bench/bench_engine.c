/* bench_engine: the CPU forward pass on a model of realistic shape, against
 * the machine's memory bandwidth measured in the same run.
 *
 *   build-dir/bench/bench_engine [THREADS] [KEEP_DIR]
 *
 * Model: Llama shape, 12 layers, hidden 768, 12 heads (MHA), intermediate
 * 2048, vocab 32000, untied head, BF16, random weights (~134M parameters,
 * 268 MB), written to a temporary directory (or KEEP_DIR, reused if it holds
 * one) and memory-mapped like any model.
 *
 * Figures:
 *  - read bandwidth: THREADS threads summing a 1 GiB buffer, best of 5;
 *  - single-stream decode tokens/s, and the fraction of the roofline
 *    (bandwidth / weight bytes read per token; decode must read every
 *    weight once per token);
 *  - prefill tokens/s (a 512-token prompt in 256-token chunks);
 *  - decode tokens/s with 1, 4, 16 and 64 sequences per step through
 *    fy_fwd_step (each sequence at context 32..64), and the ratio to 1.
 * Goals (issue 5): single-stream decode >= 60% of the roofline; 64
 * sequences >= 10x single-stream tokens/s. bench_engine_decode() is the
 * batched-decode measurement, reusable for other workloads. */
#include "common/err.h"
#include "runner/engine/forward.h"
#include "tests/bench/bench_util.h"
#include "tests/unit/support/model_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

int fy__cpu_backend_threads(const fy_backend *be, int *avx2);

/* CPU seconds this process used (all threads): with other load on the
 * machine, wall-clock rates drop while CPU per token shows the kernels' own cost. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* --- The model ---------------------------------------------------------------------- */

static int ensure_model(const char *dir)
{
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (access(p, R_OK) == 0) {
        return 0;
    }
    fx_shape s = {.vocab = 32000,
                  .hidden = 768,
                  .inter = 2048,
                  .layers = 12,
                  .heads = 12,
                  .kv_heads = 12,
                  .dt = FY_DT_BF16};
    printf("writing a %s model to %s ...\n", "12-layer BF16", dir);
    fflush(stdout);
    return fx_write_model(dir, &s, 42);
}

/* Decodes STEPS tokens for N sequences per step (each already holding CTX
 * tokens in blocks [seq*BPS, (seq+1)*BPS)); returns tokens/s. */
double bench_engine_decode(fy_fwd *f, int n, int ctx, int steps, int bps, int block_size,
                           int vocab);

double bench_engine_decode(fy_fwd *f, int n, int ctx, int steps, int bps, int block_size, int vocab)
{
    fy_fwd_seq *seqs = calloc((size_t)n, sizeof *seqs);
    int32_t *bt = malloc((size_t)n * bps * sizeof *bt), *tok = calloc((size_t)n, sizeof *tok);
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < bps; i++) {
            bt[s * bps + i] = s * bps + i;
        }
    }
    (void)block_size;
    double t0 = bench_now_s();
    for (int k = 0; k < steps; k++) {
        for (int s = 0; s < n; s++) {
            tok[s] = (int32_t)((s * 7919 + k * 104729) % vocab);
            seqs[s] = (fy_fwd_seq){&tok[s], 1, ctx + k, &bt[s * bps], bps, 1};
        }
        if (fy_fwd_step(f, seqs, n, logits) < 0) {
            fprintf(stderr, "decode step failed\n");
            exit(1);
        }
    }
    double dt = bench_now_s() - t0;
    free(seqs);
    free(bt);
    free(tok);
    free(logits);
    return (double)n * steps / dt;
}

/* Prefills CTX tokens into each of N sequences (not timed). */
static void prefill_all(fy_fwd *f, int n, int ctx, int bps, int vocab)
{
    int32_t *tok = malloc((size_t)ctx * sizeof *tok), *bt = malloc((size_t)bps * sizeof *bt);
    float *logits = malloc((size_t)vocab * sizeof *logits);
    for (int i = 0; i < ctx; i++) {
        tok[i] = (int32_t)((i * 31 + 7) % vocab);
    }
    for (int s = 0; s < n; s++) {
        for (int i = 0; i < bps; i++) {
            bt[i] = s * bps + i;
        }
        fy_fwd_seq q = {tok, ctx, 0, bt, bps, 1};
        if (fy_fwd_step(f, &q, 1, logits) < 0) {
            fprintf(stderr, "prefill failed\n");
            exit(1);
        }
    }
    free(tok);
    free(bt);
    free(logits);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    char dir[512], err[512] = "";
    int tmp = argc <= 2;
    if (tmp) {
        snprintf(dir, sizeof dir, "/tmp/fy_bench_engine_XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
    } else {
        snprintf(dir, sizeof dir, "%s", argv[2]);
        mkdir(dir, 0755);
    }
    if (ensure_model(dir) < 0) {
        fprintf(stderr, "cannot write the model to %s\n", dir);
        return 1;
    }
    fy_model *m = NULL;
    fy_backend *be = NULL;
    fy_fwd *f = NULL;
    if (fy_model_load(dir, &m, err, sizeof err) < 0 ||
        fy_backend_create("cpu", threads, &be, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int avx2 = 0, nt = fy__cpu_backend_threads(be, &avx2);
    enum { BS = 16, BPS = 8, NSEQ = 64, CTX = 32, STEPS = 16 };
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * NSEQ * BPS,
                        .max_batch_tokens = 512,
                        .max_seqs = NSEQ};
    if (fy_fwd_create(m, be, &o, &f, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const fy_model_config *c = &m->cfg;
    /* Bytes a decode step reads per token: every weight but the embedding table
     * (only one row of it is read). */
    double per_tok = (double)m->weight_bytes - (double)c->vocab_size * c->hidden * 2.0;
    printf("model: %d layers, hidden %d, %d heads, intermediate %d, vocab %d, BF16, %.1f MB "
           "of weights, %.1f MB read per decoded token\n",
           c->n_layers, c->hidden, c->n_heads, c->intermediate, c->vocab_size,
           m->weight_bytes / 1e6, per_tok / 1e6);
    printf("cpu backend: %d threads, %s\n", nt, avx2 ? "AVX2+FMA" : "portable");

    double bw = bench_read_bandwidth((size_t)1 << 30, nt, 5, 0);
    printf("memory read bandwidth (%d threads, 1 GiB, best of 5): %.2f GB/s\n", nt, bw / 1e9);

    /* Prefill: a 512-token prompt in chunks of 256 (best of 3). */
    int32_t *ptok = malloc(512 * sizeof *ptok), pbt[32];
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    for (int i = 0; i < 512; i++) {
        ptok[i] = (int32_t)((i * 131 + 3) % c->vocab_size);
    }
    for (int i = 0; i < 32; i++) {
        pbt[i] = i;
    }
    double best_pf = 0;
    for (int r = 0; r < 3; r++) {
        double t0 = bench_now_s();
        for (int p = 0; p < 512; p += 256) {
            fy_fwd_seq q = {ptok + p, 256, p, pbt, 32, 1};
            if (fy_fwd_step(f, &q, 1, logits) < 0) {
                fprintf(stderr, "prefill failed\n");
                return 1;
            }
        }
        double tps = 512 / (bench_now_s() - t0);
        best_pf = tps > best_pf ? tps : best_pf;
    }
    printf("prefill: %.0f tokens/s (512-token prompt, 256-token chunks, best of 3)\n", best_pf);

    prefill_all(f, NSEQ, CTX, BPS, c->vocab_size);
    static const int ns[] = {1, 4, 16, 64};
    double single = 0;
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        int steps = ns[i] == 1 ? 64 : STEPS;
        bench_engine_decode(f, ns[i], CTX, 2, BPS, BS, c->vocab_size); /* warm-up */
        double c0 = cpu_s();
        double tps = bench_engine_decode(f, ns[i], CTX + 2, steps, BPS, BS, c->vocab_size);
        if (ns[i] == 1) {
            single = tps;
            double roof = bw / per_tok;
            printf("decode, 1 sequence: %.1f tokens/s; roofline %.1f tokens/s; %.0f%% of the "
                   "roofline (goal >= 60%%)\n",
                   tps, roof, 100 * tps / roof);
            printf("  (%.1f ms of CPU per token over %d threads; wall %.1f ms)\n",
                   1e3 * (cpu_s() - c0) / steps, nt, 1e3 / tps);
        } else {
            printf("decode, %d sequences: %.1f tokens/s (%.1fx single-stream%s)\n", ns[i], tps,
                   tps / single, ns[i] == 64 ? "; goal >= 10x" : "");
        }
    }
    free(ptok);
    free(logits);
    fy_fwd_destroy(f);
    fy_backend_destroy(be);
    fy_model_free(m);
    if (tmp) {
        char p[600];
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        unlink(p);
        snprintf(p, sizeof p, "%s/config.json", dir);
        unlink(p);
        rmdir(dir);
    }
    return 0;
}
