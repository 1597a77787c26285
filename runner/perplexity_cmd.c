/* perplexity_cmd.c: `ferry-runner perplexity --model M --file TEXT`.
 *
 * The perplexity of a text under a model, computed as llama.cpp's
 * llama-perplexity does so the figures compare: the text's tokens are cut
 * into chunks of CTX tokens, each chunk's first token is replaced by BOS
 * (when the model has one), and each chunk scores its second half, every
 * token given all the chunk's tokens before it (the first half is context
 * only). PPL = exp(mean negative log-likelihood of the scored tokens). The
 * chunks go to the engine together (prompt_logprobs, max_tokens 0), so it
 * batches them like any other requests. */
#include "common/args.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/engine.h"
#include "runner/runner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PPL_MAX_TEXT (256u << 20)

typedef struct {
    int ctx;
    size_t n_chunks, done, failed;
    double *nll;   /* per chunk: sum of -logprob of its scored tokens */
    double *nll2;  /* per chunk: sum of squares (for the error estimate) */
    size_t *count; /* per chunk: scored tokens so far */
    char error[512];
} ppl_run;

typedef struct {
    ppl_run *run;
    size_t chunk;
    int seen; /* prompt logprobs seen so far: the next one scores token seen + 1 */
} ppl_req;

static void on_event(const fy_engine_event *ev, void *arg)
{
    ppl_req *q = arg;
    ppl_run *r = q->run;
    for (int i = 0; i < ev->n_prompt_logprobs; i++, q->seen++) {
        int pos = q->seen + 1; /* the token this logprob is of */
        if (pos >= r->ctx / 2) {
            double l = -(double)ev->prompt_logprobs[i].logprob;
            r->nll[q->chunk] += l;
            r->nll2[q->chunk] += l * l;
            r->count[q->chunk]++;
        }
    }
    if (ev->finish == FY_FINISH_NONE) {
        return;
    }
    if (ev->finish == FY_FINISH_ERROR || q->seen != r->ctx - 1) {
        r->failed++;
        snprintf(r->error, sizeof r->error, "chunk %zu: %s", q->chunk + 1,
                 ev->error ? ev->error : "the engine ended it before its last token");
    }
    r->done++;
}

/* Sum and mean over the first N chunks, and the standard error of the mean
 * NLL per token. */
static void totals(const ppl_run *r, size_t n, double *ppl, double *err)
{
    double s = 0, s2 = 0, c = 0;
    for (size_t i = 0; i < n; i++) {
        s += r->nll[i];
        s2 += r->nll2[i];
        c += (double)r->count[i];
    }
    double mean = c > 0 ? s / c : 0, var = c > 1 ? (s2 / c - mean * mean) * c / (c - 1) : 0;
    *ppl = exp(mean);
    *err = c > 1 ? *ppl * sqrt(var > 0 ? var : 0) / sqrt(c) : 0; /* d exp(m) = exp(m) dm */
}

int fy_rn_perplexity_main(int argc, char **argv)
{
    const char *model = NULL, *file = NULL, *device = NULL;
    long long ctx = 512, threads = 0, chunks = 0;
    int help = 0;
    const fy_opt opts[] = {
        {"model", FY_OPT_STR, &model, "PATH",
         "the model: a .gguf file or a Hugging Face directory"},
        {"file", FY_OPT_STR, &file, "TEXT", "the text to score (UTF-8)"},
        {"ctx", FY_OPT_INT, &ctx, "N", "tokens per chunk (default 512; the second half is scored)"},
        {"chunks", FY_OPT_INT, &chunks, "N", "score only the first N chunks (default: all)"},
        {"threads", FY_OPT_INT, &threads, "N", "CPU threads (default: one per core)"},
        {"device", FY_OPT_STR, &device, "cpu|cuda[:N]", "where to compute (default cpu)"},
        {"help", FY_OPT_FLAG, &help, NULL, "show this help"},
        {0},
    };
    char err[1024];
    char *pos[argc > 0 ? argc : 1];
    int npos = 0;
    int rc =
        fy_args_command(opts, argc, argv, pos, &npos, "ferry-runner perplexity", &help,
                        "Usage: ferry-runner perplexity --model PATH --file TEXT [--ctx N]\n\n"
                        "Prints the perplexity of TEXT under the model, computed as llama.cpp's\n"
                        "llama-perplexity does (chunks of N tokens, each starting with BOS, each\n"
                        "scoring its second half), so figures compare across the two and across\n"
                        "quantizations of one model: run it on the F32 file and on the output of\n"
                        "'ferry-runner quantize' to see what a mix costs.\n\n"
                        "Options:\n");
    if (rc >= 0) {
        return rc;
    }
    if (npos || !model || !file) {
        fprintf(stderr, "ferry-runner perplexity: give --model PATH and --file TEXT\n");
        return 2;
    }
    if (ctx < 4 || ctx > 1 << 20 || chunks < 0 || threads < 0 || threads > 1024) {
        fprintf(stderr, "ferry-runner perplexity: --ctx takes 4..1048576, --chunks and "
                        "--threads a count\n");
        return 2;
    }
    char *text = NULL;
    size_t text_len = 0;
    rc = fy_file_read(file, PPL_MAX_TEXT, &text, &text_len);
    if (rc) {
        fprintf(stderr, "ferry-runner perplexity: %s: %s\n", file,
                rc == FY_ETOOBIG ? "larger than 256 MiB" : fy_strerror(rc));
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    fy_engine_options eo = {.model_dir = model,
                            .device = device,
                            .threads = (int)threads,
                            .max_step_tokens = (int)(ctx < 512 ? 512 : ctx),
                            .no_prefix_caching = 1,
                            .loop = &loop};
    fy_engine *e = NULL;
    if ((rc = fy_engine_create(&eo, &e, err, sizeof err))) {
        fprintf(stderr, "ferry-runner perplexity: cannot load the model: %s\n", err);
        free(text);
        uv_loop_close(&loop);
        return rc == FY_ENOMEM ? 1 : 2;
    }
    int ret = 2;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    ppl_run run = {.ctx = (int)ctx};
    ppl_req *reqs = NULL;
    if (ctx > fy_engine_max_context(e)) {
        fprintf(stderr, "ferry-runner perplexity: --ctx %lld is beyond the model's context (%d)\n",
                ctx, fy_engine_max_context(e));
        goto out;
    }
    fy_encode_options enc = {0};
    if ((rc = fy_tokenizer_encode(fy_engine_tokenizer(e), text, text_len, &enc, &ids, &n_ids))) {
        fprintf(stderr, "ferry-runner perplexity: %s: cannot tokenize: %s\n", file,
                rc == FY_EINVAL ? "not valid UTF-8" : fy_strerror(rc));
        goto out;
    }
    run.n_chunks = n_ids / (size_t)ctx;
    if (chunks > 0 && (size_t)chunks < run.n_chunks) {
        run.n_chunks = (size_t)chunks;
    }
    if (run.n_chunks == 0) {
        fprintf(stderr,
                "ferry-runner perplexity: %s has %zu tokens: at least --ctx (%lld) are needed\n",
                file, n_ids, ctx);
        goto out;
    }
    run.nll = calloc(run.n_chunks, sizeof *run.nll);
    run.nll2 = calloc(run.n_chunks, sizeof *run.nll2);
    run.count = calloc(run.n_chunks, sizeof *run.count);
    reqs = calloc(run.n_chunks, sizeof *reqs);
    if (!run.nll || !run.nll2 || !run.count || !reqs) {
        fprintf(stderr, "ferry-runner perplexity: out of memory\n");
        ret = 1;
        goto out;
    }
    int bos = fy_tokenizer_bos(fy_engine_tokenizer(e));
    fprintf(stderr, "perplexity: %zu tokens, %zu chunks of %lld, scoring the second halves\n",
            n_ids, run.n_chunks, ctx);
    size_t submitted = 0, reported = 0;
    while (run.done < run.n_chunks) {
        /* Keep the engine's queue fed without overflowing it. */
        while (submitted < run.n_chunks && submitted - run.done < 32) {
            int32_t *chunk = ids + submitted * (size_t)ctx;
            if (bos >= 0) {
                chunk[0] = bos;
            }
            fy_engine_request rq = {.prompt = chunk, .n_prompt = (int)ctx, .n = 1};
            fy_sampling_defaults(&rq.sampling);
            rq.sampling.max_tokens = 0;
            rq.sampling.prompt_logprobs = 0;
            reqs[submitted] = (ppl_req){&run, submitted, 0};
            rq.cb = on_event;
            rq.arg = &reqs[submitted];
            uint64_t id; /* never aborted: the id is not kept */
            if ((rc = fy_engine_submit(e, &rq, &id, err, sizeof err))) {
                fprintf(stderr, "ferry-runner perplexity: chunk %zu: %s\n", submitted + 1, err);
                goto out;
            }
            submitted++;
        }
        uv_run(&loop, UV_RUN_ONCE);
        /* Running figures in chunk order, as llama-perplexity prints them. */
        while (reported < submitted && reqs[reported].seen == (int)ctx - 1) {
            double p, pe;
            totals(&run, reported + 1, &p, &pe);
            printf("[%zu]%.4f%s", reported + 1, p, (reported + 1) % 10 ? "," : "\n");
            fflush(stdout);
            reported++;
        }
    }
    if (run.failed) {
        fprintf(stderr, "\nferry-runner perplexity: %s\n", run.error);
        goto out;
    }
    double p, pe;
    totals(&run, run.n_chunks, &p, &pe);
    printf("%sFinal estimate: PPL = %.4f +/- %.5f\n", reported % 10 ? "\n" : "", p, pe);
    ret = 0;
out:
    fy_engine_destroy(e);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(reqs);
    free(run.nll);
    free(run.nll2);
    free(run.count);
    free(ids);
    free(text);
    return ret;
}
