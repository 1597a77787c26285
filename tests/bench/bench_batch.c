/* bench_batch: continuous batching through the whole engine (scheduler,
 * paged KV cache, forward pass, sampler, event hand-off to a libuv loop).
 *
 *   build-dir/bench/bench_batch [THREADS] [MODEL_DIR] [all|decode|waste]
 *
 * Model: the same generated shape as bench_engine (Llama, 12 layers, hidden
 * 768, 12 heads, intermediate 2048, vocab 32000, BF16, random weights),
 * written to MODEL_DIR (default $TMPDIR/ferry_bench_batch_model, reused when
 * present). The tokenizer is Llama 2's from $FERRY_TESTDATA (vocab 32000).
 *
 * Figures:
 *  - decode tokens/s with 1, 4, 16 and 64 concurrent greedy requests (32-token
 *    prompts), counted from the moment every request has its first token
 *    (prefill over) to the last one finishing, and the ratio to 1;
 *  - KV waste under a mixed workload (32 requests, prompts of 64..512 tokens,
 *    16..128 generated, submitted at once; about the lengths of chat traffic
 *    such as ShareGPT's, shorter on output): the engine's kv_bytes_wasted
 *    over the bytes of used blocks, sampled at every event while >= 8
 *    sequences run; mean and max. Only a sequence's last block is ever
 *    partly empty, so the waste is about (block_size / 2) / length.
 * Goals (issue 5): 64 sequences >= 10x single-stream tokens/s; KV waste < 4%. */
#include "common/err.h"
#include "runner/engine/engine.h"
#include "tests/unit/support/model_fixture.h"

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

/* The fixture writes max_position_embeddings 256; the mixed workload needs
 * 640 positions, so the config gets 2048 (RoPE has no trained length here). */
static int widen_context(const char *dir)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "r");
    if (!f) {
        return -1;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *key = "\"max_position_embeddings\": 256,";
    char *at = strstr(buf, key);
    if (!at) {
        return 0;
    }
    if (!(f = fopen(p, "w"))) {
        return -1;
    }
    fprintf(f, "%.*s\"max_position_embeddings\": 2048,%s", (int)(at - buf), buf, at + strlen(key));
    return fclose(f);
}

static int ensure_model(const char *dir)
{
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    if (access(p, R_OK) == 0) {
        return widen_context(dir);
    }
    mkdir(dir, 0700);
    fx_shape s = {.vocab = 32000,
                  .hidden = 768,
                  .inter = 2048,
                  .layers = 12,
                  .heads = 12,
                  .kv_heads = 12,
                  .dt = FY_DT_BF16};
    printf("writing a 12-layer BF16 model to %s ...\n", dir);
    fflush(stdout);
    return fx_write_model(dir, &s, 42) == 0 ? widen_context(dir) : -1;
}

typedef struct {
    fy_engine *e;
    int pending;     /* requests not finished */
    int started;     /* requests with their first token */
    int n;           /* requests in this round */
    double t_all;    /* when the last request got its first token */
    uint64_t tokens; /* generated after t_all */
    int sample_waste;
    double waste_sum, waste_max;
    int waste_n;
} round_t;

typedef struct {
    round_t *r;
    int got_first;
} req_t;

static void on_event(const fy_engine_event *ev, void *arg)
{
    req_t *q = arg;
    round_t *r = q->r;
    if (!q->got_first && ev->n_tokens > 0) {
        q->got_first = 1;
        if (++r->started == r->n) {
            r->t_all = now_s();
        }
    } else if (r->started == r->n) {
        r->tokens += (uint64_t)ev->n_tokens;
    }
    if (r->sample_waste) {
        fy_engine_stats st;
        fy_engine_get_stats(r->e, &st);
        double used = (double)st.blocks_used * (double)st.block_bytes;
        if (st.running >= 8 && used > 0) {
            double w = (double)st.kv_bytes_wasted / used;
            r->waste_sum += w;
            r->waste_max = w > r->waste_max ? w : r->waste_max;
            r->waste_n++;
        }
    }
    if (ev->finish != FY_FINISH_NONE) {
        r->pending--;
    }
}

static void mkprompt(int32_t *p, int n, uint32_t seed)
{
    p[0] = 1;
    for (int i = 1; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = 100 + (int32_t)((seed >> 8) % 31000);
    }
}

/* Submits N requests (prompt lengths and max tokens from the ranges) and
 * runs the loop until all finish. */
static int run_round(uv_loop_t *loop, round_t *r, int n, int plo, int phi, int tlo, int thi,
                     uint32_t seed)
{
    static int32_t prompts[64][512];
    static req_t reqs[64];
    r->n = n;
    r->pending = n;
    for (int i = 0; i < n; i++) {
        int len = plo + (phi > plo ? (i * 37) % (phi - plo + 1) : 0);
        mkprompt(prompts[i], len, seed + (uint32_t)i * 7919u);
        reqs[i] = (req_t){.r = r};
        fy_engine_request q = {
            .prompt = prompts[i], .n_prompt = len, .n = 1, .cb = on_event, .arg = &reqs[i]};
        fy_sampling_defaults(&q.sampling);
        q.sampling.temperature = 0;
        q.sampling.ignore_eos = 1;
        q.sampling.max_tokens = tlo + (thi > tlo ? (i * 53) % (thi - tlo + 1) : 0);
        uint64_t id;
        char err[256];
        int rc = fy_engine_submit(r->e, &q, &id, err, sizeof err);
        if (rc < 0) {
            fprintf(stderr, "submit: %s\n", err);
            return rc;
        }
    }
    while (r->pending > 0) {
        uv_run(loop, UV_RUN_ONCE);
    }
    return 0;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    const char *what = argc > 3 ? argv[3] : "all";
    int do_decode = strcmp(what, "waste") != 0, do_waste = strcmp(what, "decode") != 0;
    char dir[1024];
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (argc > 2) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
    } else {
        snprintf(dir, sizeof dir, "%s/ferry_bench_batch_model", tmp);
    }
    const char *td = getenv("FERRY_TESTDATA") ? getenv("FERRY_TESTDATA") : "../shared/testdata";
    char tok[1100];
    snprintf(tok, sizeof tok, "%s/tokenizers/llama2/tokenizer.json", td);
    if (access(tok, R_OK) != 0) {
        fprintf(stderr, "bench_batch: %s not found (set FERRY_TESTDATA)\n", tok);
        return 1;
    }
    if (ensure_model(dir) != 0) {
        fprintf(stderr, "bench_batch: could not write the model to %s\n", dir);
        return 1;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    fy_engine_options o = {.model_dir = dir,
                           .tokenizer = tok,
                           .threads = threads,
                           .kv_bytes = (size_t)1 << 30,
                           .max_seqs = 64,
                           .max_step_tokens = 512,
                           .loop = &loop};
    fy_engine *e = NULL;
    char err[512] = "";
    if (fy_engine_create(&o, &e, err, sizeof err) != 0) {
        fprintf(stderr, "bench_batch: %s\n", err);
        return 1;
    }
    fy_engine_stats st;
    fy_engine_get_stats(e, &st);
    printf("engine: %d KV blocks of %d tokens (%.2f MB each), max 64 sequences, 512 tokens/step\n",
           st.blocks_total, st.block_size, (double)st.block_bytes / 1e6);

    static const int ns[4] = {1, 4, 16, 64};
    static const int gen[4] = {48, 40, 32, 24};
    double tps[4] = {0};
    printf("\ndecode through the engine (greedy, 32-token prompts):\n");
    for (int k = 0; k < 4 && do_decode; k++) {
        round_t r = {.e = e};
        if (run_round(&loop, &r, ns[k], 32, 32, gen[k], gen[k], 1000u + (uint32_t)k) < 0) {
            return 1;
        }
        double t = now_s() - r.t_all;
        tps[k] = t > 0 ? (double)r.tokens / t : 0;
        printf("  %2d sequences: %8.1f tokens/s  (%.2fx single stream)\n", ns[k], tps[k],
               tps[0] > 0 ? tps[k] / tps[0] : 0);
        fflush(stdout);
    }

    round_t w = {.e = e, .sample_waste = 1};
    if (do_waste && run_round(&loop, &w, 32, 64, 512, 16, 128, 5000u) < 0) {
        return 1;
    }
    fy_engine_get_stats(e, &st);
    printf("\nKV waste, mixed workload (32 requests, prompts 64..512, 16..128 generated):\n");
    printf("  mean %.2f%%, max %.2f%% of used block bytes over %d samples (goal < 4%%)\n",
           w.waste_n ? 100.0 * w.waste_sum / w.waste_n : 0.0, 100.0 * w.waste_max, w.waste_n);
    printf("  steps %llu, preemptions %llu, prefix hit rate %.2f\n", (unsigned long long)st.steps,
           (unsigned long long)st.preemptions, st.prefix_hit_rate);
    if (do_decode) {
        printf("\ngoal 64 sequences >= 10x single stream: %.2fx (%s)\n", tps[3] / tps[0],
               tps[3] >= 10 * tps[0] ? "met" : "missed");
    }
    fy_engine_destroy(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return 0;
}
