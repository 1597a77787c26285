/* test_gpu_greedy.c: the whole forward pass on the CUDA backend. stories260K
 * decoded greedily must produce expected_greedy.json's 196 ids (an
 * independent reference implementation's output), with the prompt run in
 * one prefill and again in chunks over a permuted block table, and a batch
 * of 8 sequences decoded together must give each sequence the same ids.
 *
 * Exit status: 0 pass, 1 failure, 77 skipped (no usable GPU, no CUDA build,
 * or FERRY_TESTDATA absent). */
#include "common/err.h"
#include "runner/engine/forward.h"

#include <jansson.h>
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
    json_error_t jerr;
    json_t *exp = json_load_file(path, 0, &jerr);
    if (!exp) {
        printf("FAIL: %s: %s\n", path, jerr.text);
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
    fy_backend_destroy(be);
    json_decref(exp);
    return fails ? 1 : 0;
}
