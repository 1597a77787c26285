/* test_gpu_greedy.c: the whole forward pass on the CUDA backend. stories260K
 * decoded greedily must produce expected_greedy.json's 196 ids (an
 * independent reference implementation's output), with the prompt run in
 * one prefill and again in chunks over a permuted block table, and a batch
 * of 8 sequences decoded together must give each sequence the same ids.
 * Then the GGUF files llama.cpp wrote (gguf/tiny256-*.gguf, block-type
 * weights): greedy ids as llama.cpp's reference where its margins allow,
 * and a long prefill (the batch kernels) agreeing with decoding.
 *
 * Exit status: 0 pass, 1 failure, 77 skipped (no usable GPU, no CUDA build,
 * or FERRY_TESTDATA absent). */
#include "common/err.h"
#include "runner/engine/forward.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BS       16
#define MAX_TOK  256
#define N_BATCH  8
#define N_BLOCKS (MAX_TOK / BS)

static int argmax(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) {
        if (l[i] > l[b]) {
            b = i;
        }
    }
    return b;
}

/* Greedy decode of PROMPT (NP ids) for NC tokens into OUT; the prompt goes
 * in chunks of CHUNK tokens. Block i of the sequence is BT[i]. */
static int greedy(fy_fwd *f, int vocab, const int32_t *prompt, int np, int nc, int chunk,
                  const int32_t *bt, int32_t *out)
{
    int32_t toks[MAX_TOK];
    float *logits = malloc((size_t)vocab * sizeof *logits);
    int rc = 0;
    memcpy(toks, prompt, (size_t)np * sizeof *toks);
    for (int at = 0; at < np && rc == 0; at += chunk) {
        int n = np - at < chunk ? np - at : chunk;
        fy_fwd_seq s = {toks + at, n, at, bt, N_BLOCKS, at + n == np};
        rc = fy_fwd_step(f, &s, 1, logits);
    }
    for (int i = 0; i < nc && rc == 0; i++) {
        out[i] = argmax(logits, vocab);
        toks[np + i] = out[i];
        fy_fwd_seq d = {&toks[np + i], 1, np + i, bt, N_BLOCKS, 1};
        rc = fy_fwd_step(f, &d, 1, logits);
    }
    free(logits);
    return rc;
}

/* PATH parsed, or NULL after saying why. */
static json_t *load_json(const char *path)
{
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) {
        printf("FAIL: %s: %s\n", path, jerr.text);
    }
    return j;
}

/* --- tiny256-*.gguf: block-type weights against llama.cpp ------------------------------ */

#define GGUF_STEPS 32  /* greedy ids llama_cpp_reference.json has per case */
#define MARGIN     0.1 /* nats: tests/unit/test_engine_gguf.c's, below which ids may differ */
#define TF_MARGIN  0.5 /* nats: a decode step the f16 batch path must reproduce */

/* log p(best) - log p(second) of a row of logits (the softmax's normalizer
 * cancels), and the best id. */
static double top2_margin(const float *l, int n, int *best)
{
    int b = argmax(l, n);
    float second = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (i != b && l[i] > second) {
            second = l[i];
        }
    }
    *best = b;
    return (double)l[b] - (double)second;
}

/* Steps of case C where ferry must give llama.cpp's greedy ids, as the CPU
 * test (tests/unit/test_engine_gguf.c) requires: up to the first whose
 * top-2 margin in llama.cpp's row is below MARGIN. llama-server folds a
 * token it holds back (an incomplete UTF-8 byte) into the next row, so rows
 * are taken as steps only while each row's best id is that step's id; the
 * CPU test, which has the tokenizer to group them, agrees on these. */
static int agreed_steps(const json_t *c)
{
    const json_t *ids = json_object_get(c, "greedy_ids"),
                 *rows = json_object_get(c, "top5_logprobs");
    int j = 0;
    for (; j < (int)json_array_size(ids) && j < (int)json_array_size(rows); j++) {
        const json_t *r = json_array_get(rows, (size_t)j);
        const json_t *t0 = json_array_get(r, 0), *t1 = json_array_get(r, 1);
        if (json_integer_value(json_array_get(t0, 0)) !=
                json_integer_value(json_array_get(ids, (size_t)j)) ||
            json_real_value(json_array_get(t0, 1)) - json_real_value(json_array_get(t1, 1)) <
                MARGIN) {
            break;
        }
    }
    return j;
}

/* One case of one file on BE: greedy decode (prompt prefill of a few tokens,
 * then one token per step: the decode kernels), the agreed steps against
 * llama.cpp's ids; then the prompt and ferry's own ids in one prefill
 * (T > 8: the tensor-core kernels) with every step's logits, whose best id
 * must be the decoded one wherever decoding had a margin of TF_MARGIN. */
static int gguf_case(fy_backend *be, fy_model *m, const char *file, const json_t *c)
{
    char err[512] = "";
    const json_t *pj = json_object_get(c, "prompt_ids_with_bos"),
                 *gj = json_object_get(c, "greedy_ids");
    const int np = (int)json_array_size(pj), n = GGUF_STEPS, vocab = m->cfg.vocab_size;
    if (np < 1 || np + n > MAX_TOK || (int)json_array_size(gj) < n) {
        printf("FAIL %s: unexpected reference sizes %d/%zu\n", file, np, json_array_size(gj));
        return 1;
    }
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * N_BLOCKS * 2,
                        .max_batch_tokens = 64,
                        .max_seqs = 1,
                        .max_logit_rows = n};
    fy_fwd *f = NULL;
    if (fy_fwd_create(m, be, &o, &f, err, sizeof err) != 0) {
        printf("FAIL %s: fy_fwd_create: %s\n", file, err);
        return 1;
    }
    int32_t toks[MAX_TOK], bt[N_BLOCKS];
    float *logits = malloc((size_t)n * vocab * sizeof *logits);
    double margin[GGUF_STEPS];
    int fails = 0, rc = 0;
    for (int i = 0; i < N_BLOCKS; i++) {
        bt[i] = i;
    }
    for (int i = 0; i < np; i++) {
        toks[i] = (int32_t)json_integer_value(json_array_get(pj, (size_t)i));
    }
    fy_fwd_seq s = {toks, np, 0, bt, N_BLOCKS, 1};
    rc = fy_fwd_step(f, &s, 1, logits);
    for (int j = 0; j < n && rc == 0; j++) {
        margin[j] = top2_margin(logits, vocab, &toks[np + j]);
        fy_fwd_seq d = {&toks[np + j], 1, np + j, bt, N_BLOCKS, 1};
        rc = j + 1 < n ? fy_fwd_step(f, &d, 1, logits) : 0;
    }
    const int agreed = agreed_steps(c);
    for (int j = 0; j < agreed && rc == 0; j++) {
        int want = (int)json_integer_value(json_array_get(gj, (size_t)j));
        if (toks[np + j] != want) {
            printf("FAIL %s: greedy step %d is %d (margin %.3f), llama.cpp's is %d\n", file, j,
                   toks[np + j], margin[j], want);
            fails = 1;
            break;
        }
    }
    /* Teacher forcing on the other blocks of the pool: positions np-1 ..
     * np+n-2 predict steps 0 .. n-1. */
    int checked = 0;
    for (int i = 0; i < N_BLOCKS; i++) {
        bt[i] = N_BLOCKS + i;
    }
    fy_fwd_seq tf = {toks, np + n - 1, 0, bt, N_BLOCKS, n};
    if (rc == 0) {
        rc = fy_fwd_step(f, &tf, 1, logits);
    }
    for (int j = 0; j < n && rc == 0; j++) {
        int best;
        double mj = top2_margin(logits + (size_t)j * vocab, vocab, &best);
        if (margin[j] < TF_MARGIN) {
            continue;
        }
        checked++;
        if (best != toks[np + j]) {
            printf("FAIL %s: one prefill of %d tokens predicts %d at step %d (margin %.3f), "
                   "decoding gave %d (margin %.3f)\n",
                   file, np + n - 1, best, j, mj, toks[np + j], margin[j]);
            fails = 1;
            break;
        }
    }
    if (rc != 0) {
        printf("FAIL %s: step: %s\n", file, fy_strerror(rc));
        fails = 1;
    } else if (checked == 0) {
        printf("FAIL %s: no decode step had a margin of %.1f nats to check the batch path on\n",
               file, TF_MARGIN);
        fails = 1;
    } else if (!fails) {
        printf("ok   %s: %d greedy ids as llama.cpp's (then a margin < %.1f), and a %d-token "
               "prefill agrees on the %d steps with a margin of %.1f\n",
               file, agreed, MARGIN, np + n - 1, checked, TF_MARGIN);
    }
    free(logits);
    fy_fwd_destroy(f);
    return fails;
}

/* Every tiny256 file (block types Q8_0, Q4_0 + Q6_K output, Q4_K + Q6_K,
 * Q5_K + Q6_K, Q6_K; F32 for contrast) and both prompts of the reference. */
static int test_gguf(fy_backend *be, const char *td)
{
    static const char *const files[] = {"tiny256-F32.gguf",    "tiny256-Q8_0.gguf",
                                        "tiny256-Q4_0.gguf",   "tiny256-Q4_K_M.gguf",
                                        "tiny256-Q5_K_M.gguf", "tiny256-Q6_K.gguf"};
    char path[1100], err[512] = "";
    snprintf(path, sizeof path, "%s/gguf/llama_cpp_reference.json", td);
    if (access(path, R_OK) != 0) {
        printf("skipped: %s is absent\n", path);
        return 0;
    }
    json_t *ref = load_json(path);
    if (!ref) {
        return 1;
    }
    int fails = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const json_t *cases = json_object_get(ref, files[i]);
        fy_model *m = NULL;
        snprintf(path, sizeof path, "%s/gguf/%s", td, files[i]);
        if (!cases || fy_model_load(path, &m, err, sizeof err) != 0) {
            printf("FAIL %s: %s\n", files[i], cases ? err : "not in the reference");
            fails++;
            continue;
        }
        for (size_t k = 0; k < json_array_size(cases); k++) {
            fails += gguf_case(be, m, files[i], json_array_get(cases, k));
        }
        fy_model_free(m);
    }
    json_decref(ref);
    return fails;
}

static int compare(const char *what, const int32_t *got, const json_t *want, int nc)
{
    for (int i = 0; i < nc; i++) {
        int w = (int)json_integer_value(json_array_get(want, (size_t)i));
        if (got[i] != w) {
            printf("FAIL %s: token %d is %d, expected %d\n", what, i, got[i], w);
            return 1;
        }
    }
    printf("ok   %s: %d ids match\n", what, nc);
    return 0;
}

int main(void)
{
    char err[512] = "", dir[1024], path[1100];
    const char *td = getenv("FERRY_TESTDATA");
    if (!td) {
        printf("SKIPPED: FERRY_TESTDATA is not set\n");
        return 77;
    }
    snprintf(dir, sizeof dir, "%s/models/stories260K", td);
    snprintf(path, sizeof path, "%s/expected_greedy.json", dir);
    if (access(path, R_OK) != 0) {
        printf("SKIPPED: %s is absent\n", path);
        return 77;
    }
    const char *dev = getenv("FERRY_GPU_DEVICE");
    dev = dev && *dev ? dev : "cuda";
    fy_backend *be = NULL;
    int rc = fy_backend_create(dev, 1, &be, err, sizeof err);
    if (rc == FY_ENOTSUP) {
        printf("SKIPPED: no GPU to test: %s\n", err);
        return 77;
    }
    if (rc != 0) {
        printf("FAIL: %s: %s\n", dev, err);
        return 1;
    }
    fy_model *m = NULL;
    if (fy_model_load(dir, &m, err, sizeof err) != 0) {
        printf("FAIL: %s\n", err);
        return 1;
    }
    json_t *exp = load_json(path);
    if (!exp) {
        return 1;
    }
    const json_t *pj = json_object_get(exp, "prompt_ids_with_bos"),
                 *cj = json_object_get(exp, "completion_ids");
    int np = (int)json_array_size(pj), nc = (int)json_array_size(cj);
    int vocab = m->cfg.vocab_size, fails = 0;
    if (np < 1 || nc < 1 || np + nc >= MAX_TOK) {
        printf("FAIL: %s: unexpected prompt/completion sizes %d/%d\n", path, np, nc);
        return 1;
    }
    int32_t prompt[MAX_TOK], out[MAX_TOK];
    for (int i = 0; i < np; i++) {
        prompt[i] = (int32_t)json_integer_value(json_array_get(pj, (size_t)i));
    }
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * N_BLOCKS * (N_BATCH + 1),
                        .max_batch_tokens = 64,
                        .max_seqs = N_BATCH};
    fy_fwd *f = NULL;
    if (fy_fwd_create(m, be, &o, &f, err, sizeof err) != 0) {
        printf("FAIL: fy_fwd_create on %s: %s\n", dev, err);
        return 1;
    }

    /* 1. One prefill, blocks in order. */
    int32_t bt[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS; i++) {
        bt[i] = i;
    }
    rc = greedy(f, vocab, prompt, np, nc, np, bt, out);
    fails += rc != 0 ? (printf("FAIL: step: %s\n", fy_strerror(rc)), 1)
                     : compare("greedy, one prefill", out, cj, nc);

    /* 2. Prompt in chunks of 2, blocks reversed in another part of the pool. */
    for (int i = 0; i < N_BLOCKS; i++) {
        bt[i] = 2 * N_BLOCKS - 1 - i;
    }
    rc = greedy(f, vocab, prompt, np, nc, 2, bt, out);
    fails += rc != 0 ? (printf("FAIL: step: %s\n", fy_strerror(rc)), 1)
                     : compare("greedy, chunked prefill, reversed blocks", out, cj, nc);

    /* 3. N_BATCH copies of the prompt decoded in one batch per step. */
    {
        int32_t toks[N_BATCH][MAX_TOK], tables[N_BATCH][N_BLOCKS];
        float *logits = malloc((size_t)N_BATCH * vocab * sizeof *logits);
        fy_fwd_seq s[N_BATCH];
        for (int q = 0; q < N_BATCH; q++) {
            memcpy(toks[q], prompt, (size_t)np * sizeof prompt[0]);
            for (int i = 0; i < N_BLOCKS; i++) {
                tables[q][i] = (N_BATCH - q) * N_BLOCKS + i; /* skips blocks 0..15 */
            }
            s[q] = (fy_fwd_seq){toks[q], np, 0, tables[q], N_BLOCKS, 1};
        }
        rc = fy_fwd_step(f, s, N_BATCH, logits);
        int bad = 0;
        for (int i = 0; i < nc && rc == 0; i++) {
            int w = (int)json_integer_value(json_array_get(cj, (size_t)i));
            for (int q = 0; q < N_BATCH; q++) {
                int id = argmax(logits + (size_t)q * vocab, vocab);
                if (id != w && !bad++) {
                    printf("FAIL batched: sequence %d token %d is %d, expected %d\n", q, i, id, w);
                }
                toks[q][np + i] = id;
                s[q] = (fy_fwd_seq){&toks[q][np + i], 1, np + i, tables[q], N_BLOCKS, 1};
            }
            rc = fy_fwd_step(f, s, N_BATCH, logits);
        }
        free(logits);
        if (rc != 0) {
            printf("FAIL: batched step: %s\n", fy_strerror(rc));
            bad++;
        } else if (!bad) {
            printf("ok   greedy, %d sequences per step: every sequence matches\n", N_BATCH);
        }
        fails += bad != 0;
    }

    fy_fwd_destroy(f);
    fy_model_free(m);
    fails += test_gguf(be, td);
    fy_backend_destroy(be);
    json_decref(exp);
    return fails ? 1 : 0;
}
