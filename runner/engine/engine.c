/* engine.c: the engine thread's step loop and the hand-off to the loop thread.
 *
 * Threads and ownership:
 *   - The loop thread submits (requests go on the inbox), aborts (the abort
 *     list) and delivers events (the uv_async_t callback). It owns the live
 *     table (id -> request) and each request's `aborted` flag.
 *   - The engine thread owns the scheduler, the block manager, the forward
 *     pass, the sampler, and each sample's sequence, detokenizer and stop
 *     matcher once the request left the inbox.
 *   - Everything else shared (inbox, abort list, each sample's outbox, the
 *     ready list, reference counts, stats) is under e->mu.
 * A request is freed when its reference count reaches zero: one reference
 * for the engine side (dropped when all its samples finished or it was
 * aborted), one for the loop side (dropped when the last final event was
 * delivered or at abort), one per sample sitting on the ready list.
 *
 * Events coalesce: the engine appends tokens and text to a sample's outbox
 * and queues the sample once; the loop swaps the outbox for its delivery
 * buffers, so a slow loop gets several tokens per event. */
#include "runner/engine/engine.h"

#include "common/crypto.h"
#include "common/err.h"
#include "common/log.h"
#include "runner/engine/forward.h"
#include "runner/engine/grammar.h"
#include "runner/engine/kvcache.h"
#include "runner/engine/sampler.h"
#include "runner/engine/sched.h"
#include "runner/engine/stop.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FY_ENGINE_MAX_N        128        /* parallel samples per request */
#define FY_ENGINE_MAX_STOP_IDS 64         /* extra stop token ids per request */
#define FY_ENGINE_TEXT_MAX     (16 << 20) /* text one sample may have waiting for the loop */
#define FY_ENGINE_LIVE_BUCKETS 1024
#define FY_ENGINE_MAX_TRIGGER  64 /* bytes of a lazy grammar's marker */

typedef struct fy__req fy__req;

/* One buffer of output for one sample: filled by the engine (outbox) or
 * being delivered by the loop. */
/* A growable list of tokens. */
typedef struct {
    fy_gen_token *v;
    int n, cap;
} toklist;

typedef struct {
    toklist tok;  /* generated */
    toklist ptok; /* prompt tokens' logprobs */
    fy_buf text;
    fy_finish finish;
    char error[160];
    int completion; /* completion tokens after these */
    int cached;     /* prompt tokens served from the prefix cache */
} outbuf;

typedef struct {
    fy__req *req;
    int index;
    /* Engine thread. */
    fy_seq seq;
    fy_detok *detok;
    size_t text_bytes; /* the detokenizer's text so far (tokens' text offsets) */
    fy_stop stop;
    fy_gstate *gs;                    /* constrained decoding's parse state, or NULL */
    int gs_active;                    /* the grammar applies now (always, unless it is lazy) */
    char tail[FY_ENGINE_MAX_TRIGGER]; /* lazy: the text's last bytes, for a marker across tokens */
    size_t tail_len;
    int finished;
    /* Under mu. */
    outbuf out;
    int queued;
    /* Loop thread. */
    outbuf dl;
} fy__sample;

struct fy__req {
    uint64_t id;
    int n;
    fy_sampling sp;
    int32_t *stop_ids;
    fy_logit_bias *logit_bias;
    char trigger[FY_ENGINE_MAX_TRIGGER]; /* a lazy grammar's marker ("" when none) */
    size_t trigger_len;
    char key[FY_SCHED_KEY_MAX];
    fy_engine_cb cb;
    void *arg;
    int n_prompt;
    int max_tokens; /* clamped to the context */
    uint64_t seed;
    fy__sample *samples;
    /* Engine thread. */
    int forked;
    int n_finished;
    int prompt_next; /* prompt_logprobs: the next prompt token to report (1 .. n_prompt) */
    /* Under mu. */
    int refs;
    int engine_done;
    int abort_req;
    fy__req *inbox_next, *abort_next;
    fy__req *all_prev, *all_next;
    /* Loop thread. */
    int aborted;
    int finals;
    int loop_release; /* 1: the last final event went out; 2: its reference dropped */
    fy__req *live_next;
};

/* A sequence's rows of logits in a step: ROWS rows from ROW, for its
 * positions END - ROWS .. END - 1. */
typedef struct {
    fy__sample *s;
    int row, rows, end;
} step_out;

typedef struct ready_item {
    fy__sample *s;
    struct ready_item *next;
} ready_item;

struct fy_engine {
    fy_engine_options o;
    fy_model *model;
    fy_tokenizer *tok;
    fy_backend *be;
    fy_fwd *fwd;
    fy_kv *kv;
    fy_sched *sched;
    fy_sampler *sampler;
    float *logits;     /* [rows x vocab] */
    int32_t *ids;      /* [rows] argmax ids of a greedy-only step */
    float *row;        /* [vocab] a copy for each of n samples */
    fy_fwd_seq *fs;    /* [max_seqs] */
    step_out *stepped; /* [max_seqs] sequences whose logits came out of a step */
    int rows;          /* rows of logits a step may return (fy_fwd_max_logit_rows) */
    fy_buf scratch;    /* one sample's new text in a step */
    /* Constrained decoding: each token's bytes (NULL for special tokens),
     * the masker (made at the first constrained request) and a mask. */
    const char **tok_bytes;
    size_t *tok_lens;
    fy_gmasker *masker;
    uint32_t *allow;
    int vocab, max_ctx, block_size;
    size_t block_bytes;
    int eos[FY_MODEL_MAX_EOS + 1];
    int n_eos;

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    fy__req *inbox_head, *inbox_tail;
    int inbox_n;
    fy__req *aborts;
    ready_item *ready;      /* samples with output for the loop (LIFO; reversed on delivery) */
    ready_item *ready_free; /* spare list items */
    fy__req *all;           /* every request not yet freed */
    int sched_waiting;
    fy_engine_stats stats;
    uint64_t prompt_tokens, generated_tokens;

    uv_async_t async;
    fy__req *live[FY_ENGINE_LIVE_BUCKETS]; /* loop thread */
    uint64_t next_id;                      /* loop thread */
};

/* --- Requests -------------------------------------------------------------------------- */

static void outbuf_free(outbuf *b)
{
    free(b->tok.v);
    free(b->ptok.v);
    fy_buf_free(&b->text);
}

static int toklist_push(toklist *l, const fy_gen_token *g)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        fy_gen_token *p = realloc(l->v, (size_t)cap * sizeof *p);
        if (!p) {
            return FY_ENOMEM;
        }
        l->v = p;
        l->cap = cap;
    }
    l->v[l->n++] = *g;
    return 0;
}

static void sample_engine_free(fy__sample *s)
{
    fy_detok_free(s->detok);
    s->detok = NULL;
    fy_gstate_free(s->gs);
    s->gs = NULL;
    fy_stop_free(&s->stop);
    free(s->seq.tokens);
    s->seq.tokens = NULL;
}

/* Frees R (mu held or the engine thread gone). */
static void req_free(fy_engine *e, fy__req *r)
{
    if (!r) {
        return;
    }
    if (r->all_prev) {
        r->all_prev->all_next = r->all_next;
    } else if (e->all == r) {
        e->all = r->all_next;
    }
    if (r->all_next) {
        r->all_next->all_prev = r->all_prev;
    }
    for (int i = 0; r->samples && i < r->n; i++) {
        sample_engine_free(&r->samples[i]);
        outbuf_free(&r->samples[i].out);
        outbuf_free(&r->samples[i].dl);
    }
    free(r->samples);
    free(r->stop_ids);
    free(r->logit_bias);
    fy_grammar_unref(r->sp.grammar);
    free(r);
}

/* Drops one reference (mu held). */
static void req_unref(fy_engine *e, fy__req *r)
{
    if (--r->refs == 0) {
        req_free(e, r);
    }
}

static void live_insert(fy_engine *e, fy__req *r)
{
    fy__req **b = &e->live[r->id % FY_ENGINE_LIVE_BUCKETS];
    r->live_next = *b;
    *b = r;
}

static fy__req *live_take(fy_engine *e, uint64_t id)
{
    for (fy__req **p = &e->live[id % FY_ENGINE_LIVE_BUCKETS]; *p; p = &(*p)->live_next) {
        if ((*p)->id == id) {
            fy__req *r = *p;
            *p = r->live_next;
            r->live_next = NULL;
            return r;
        }
    }
    return NULL;
}

/* --- Output (engine thread) ---------------------------------------------------------- */

/* Queues S for the loop (its outbox has news). mu held. */
static int queue_locked(fy_engine *e, fy__sample *s)
{
    if (!s->queued) {
        ready_item *it = e->ready_free;
        if (it) {
            e->ready_free = it->next;
        } else if (!(it = malloc(sizeof *it))) {
            return FY_ENOMEM;
        }
        it->s = s;
        it->next = e->ready;
        e->ready = it;
        s->queued = 1;
        s->req->refs++;
    }
    return 0;
}

/* Appends a token and text to S's outbox and queues S for the loop. mu held. */
static int emit_locked(fy_engine *e, fy__sample *s, const fy_gen_token *g, const char *text,
                       size_t len, fy_finish finish, const char *error)
{
    outbuf *o = &s->out;
    if (g && toklist_push(&o->tok, g) < 0) {
        return FY_ENOMEM;
    }
    if (len && fy_buf_append(&o->text, text, len) < 0) {
        return FY_ENOMEM;
    }
    o->completion = s->seq.n_tokens - s->seq.n_prompt;
    o->cached = s->seq.cached_tokens;
    if (finish != FY_FINISH_NONE) {
        o->finish = finish;
        snprintf(o->error, sizeof o->error, "%s", error ? error : "");
    }
    return queue_locked(e, s);
}

/* The engine side of R is over (all samples finished, or aborted). mu held. */
static void req_engine_done_locked(fy_engine *e, fy__req *r)
{
    if (!r->engine_done) {
        r->engine_done = 1;
        req_unref(e, r);
    }
}

/* Ends sample S: leaves the scheduler, emits FINISH (with the text still
 * held when it is not a stop-string match), frees its engine state. */
static void sample_finish(fy_engine *e, fy__sample *s, fy_finish finish, const char *error,
                          int flush)
{
    fy__req *r = s->req;
    fy_sched_remove(e->sched, &s->seq);
    fy_buf_reset(&e->scratch);
    if (flush && s->detok) {
        const char *t = NULL;
        size_t n = 0;
        if (fy_detok_finish(s->detok, &t, &n) == 0 && n > 0) {
            if (fy_stop_push(&s->stop, t, n, &e->scratch) == 1) {
                finish = FY_FINISH_STOP;
            }
        }
        fy_stop_flush(&s->stop, &e->scratch);
    }
    /* Once the last sample's end is queued the loop thread may free R at
     * any moment: the engine state goes first, and nothing of R is touched
     * after the unlock. */
    sample_engine_free(s);
    s->finished = 1;
    r->n_finished++;
    uint64_t id = r->id;
    pthread_mutex_lock(&e->mu);
    if (emit_locked(e, s, NULL, e->scratch.data, e->scratch.len, finish, error) < 0) {
        FY_ERROR("engine", "out of memory queueing the end of request %llu",
                 (unsigned long long)id);
    }
    if (r->n_finished == r->n) {
        req_engine_done_locked(e, r);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Ends every unfinished sample of R. R may be gone when this returns (the
 * loop reads only what is left to finish, counted first). */
static void finish_all(fy_engine *e, fy__req *r, fy_finish finish, const char *why, int flush)
{
    fy__sample *samples = r->samples;
    int n = r->n, left = r->n - r->n_finished;
    for (int i = 0; i < n && left > 0; i++) {
        if (!samples[i].finished) {
            left--;
            sample_finish(e, &samples[i], finish, why, flush);
        }
    }
}

static int is_stop_token(const fy_engine *e, const fy__req *r, int32_t id)
{
    if (!r->sp.ignore_eos) {
        for (int i = 0; i < e->n_eos; i++) {
            if (e->eos[i] == id) {
                return 1;
            }
        }
    }
    for (int i = 0; i < r->sp.n_stop_ids; i++) {
        if (r->stop_ids[i] == id) {
            return 1;
        }
    }
    return 0;
}

static void sample_accept(fy_engine *e, fy__sample *s, const fy_gen_token *g);

/* The tokens S's grammar allows next (NULL: S is unconstrained, or it must
 * end: *WHY then says how, FY_FINISH_NONE when it need not). */
static const uint32_t *grammar_mask(fy_engine *e, fy__sample *s, fy_finish *why)
{
    *why = FY_FINISH_NONE;
    if (!s->gs || !s->gs_active) {
        return NULL;
    }
    if (!e->masker) {
        int rc =
            fy_gmasker_new(e->vocab, e->tok_bytes, e->tok_lens, e->eos, e->n_eos, 0, &e->masker);
        if (rc < 0) {
            *why = FY_FINISH_ERROR;
            return NULL;
        }
    }
    int n = 0;
    const uint32_t *m = fy_gmasker_mask(e->masker, s->gs, &n);
    if (!m) {
        *why = FY_FINISH_ERROR;
        return NULL;
    }
    int words = fy_gmasker_words(e->masker);
    memcpy(e->allow, m, (size_t)words * sizeof *m);
    if (s->req->sp.ignore_eos) {
        for (int i = 0; i < e->n_eos; i++) {
            if (e->allow[e->eos[i] >> 5] & (1u << (e->eos[i] & 31))) {
                e->allow[e->eos[i] >> 5] &= ~(1u << (e->eos[i] & 31));
                n--;
            }
        }
    }
    if (n <= 0) {
        /* Only EOS could follow (ignore_eos), or no token spells what the
         * grammar needs next. */
        *why = fy_gstate_accepting(s->gs) ? FY_FINISH_STOP : FY_FINISH_ERROR;
        return NULL;
    }
    return e->allow;
}

/* Samples S's next token from ROW (overwritten) and emits what it makes final. */
static void sample_next(fy_engine *e, fy__sample *s, float *row)
{
    fy__req *r = s->req;
    fy_seq *q = &s->seq;
    fy_gen_token g;
    fy_finish why;
    const uint32_t *allow = grammar_mask(e, s, &why);
    if (why != FY_FINISH_NONE) {
        sample_finish(e, s, why,
                      why == FY_FINISH_ERROR
                          ? "constrained decoding: no token of the vocabulary can continue the "
                            "output"
                          : NULL,
                      1);
        return;
    }
    fy_sampler_pick_masked(e->sampler, &r->sp, allow, r->seed, s->index, row, q->tokens,
                           q->n_tokens, q->n_prompt, &g);
    sample_accept(e, s, &g);
}

/* 1 when R's next token is the plain argmax of the raw logits (one sample,
 * fy_sampling_is_plain_argmax), which the backend can compute where the
 * logits are, so only the id crosses to the host. */
static int argmax_only(const fy__req *r)
{
    return r->n == 1 && !r->sp.grammar && fy_sampling_is_plain_argmax(&r->sp);
}

/* A lazy grammar's sample took TEXT[0..N): when its marker is complete,
 * the grammar starts on the bytes after it. TAIL keeps the last bytes
 * before, so a marker split across tokens is found. */
static void lazy_watch(fy__sample *s, const char *text, size_t n)
{
    const fy__req *r = s->req;
    char buf[2 * FY_ENGINE_MAX_TRIGGER];
    size_t keep = r->trigger_len - 1;
    /* TEXT in pieces of at most FY_ENGINE_MAX_TRIGGER bytes, each after the
     * tail the previous one left. */
    size_t from = 0;
    const char *hit = NULL;
    while (!hit && from < n) {
        size_t take = n - from < FY_ENGINE_MAX_TRIGGER ? n - from : FY_ENGINE_MAX_TRIGGER;
        memcpy(buf, s->tail, s->tail_len);
        memcpy(buf + s->tail_len, text + from, take);
        size_t len = s->tail_len + take;
        hit = memmem(buf, len, r->trigger, r->trigger_len);
        if (hit) {
            size_t end = (size_t)(hit - buf) + r->trigger_len; /* in buf */
            size_t after = end - s->tail_len + from;           /* in text */
            s->gs_active =
                fy_gstate_reset(s->gs) == 0 && fy_gstate_feed(s->gs, text + after, n - after) == 0;
            s->tail_len = 0;
            return;
        }
        /* Keep the last KEEP bytes as the tail and go on. */
        size_t k = len < keep ? len : keep;
        memmove(s->tail, buf + len - k, k);
        s->tail_len = k;
        from += take;
    }
}

/* Appends G's token to S and emits what it makes final. */
static void sample_accept(fy_engine *e, fy__sample *s, const fy_gen_token *gp)
{
    fy__req *r = s->req;
    fy_seq *q = &s->seq;
    fy_gen_token g = *gp;
    int32_t id = g.id;
    q->tokens[q->n_tokens++] = id;
    g.text_offset = s->text_bytes;
    fy_finish finish = FY_FINISH_NONE;
    const char *why = NULL;
    int stop_string = 0;
    fy_buf_reset(&e->scratch);
    if (is_stop_token(e, r, id)) {
        finish = FY_FINISH_STOP;
    } else {
        const char *t = NULL;
        size_t n = 0;
        if (fy_detok_push(s->detok, id, &t, &n) == 0 && n > 0) {
            s->text_bytes += n;
            if (fy_stop_push(&s->stop, t, n, &e->scratch) == 1) {
                finish = FY_FINISH_STOP;
                stop_string = 1;
            }
        }
        if (s->gs && s->gs_active) {
            size_t nb = 0;
            const char *bytes = fy_tokenizer_token_bytes(e->tok, id, &nb);
            /* The mask allowed only what the state takes (the walk and the
             * feed are the same steps), so a refusal is a bug: the sample
             * ends with an error rather than leave the language. A
             * sentence that can't go on is over (a lazy grammar waits for
             * its marker). */
            int frc = fy_gstate_feed(s->gs, bytes, nb);
            if (frc < 0 && finish == FY_FINISH_NONE) {
                finish = FY_FINISH_ERROR;
                why = frc == FY_ENOMEM ? "constrained decoding: out of memory"
                                       : "constrained decoding: the grammar refused a token "
                                         "its mask allowed";
            } else if (frc == 0 && fy_gstate_accepting(s->gs) && !fy_gstate_can_continue(s->gs) &&
                       finish == FY_FINISH_NONE) {
                if (r->trigger_len) {
                    s->gs_active = 0;
                    s->tail_len = 0;
                } else {
                    finish = FY_FINISH_STOP;
                }
            }
        } else if (s->gs && n > 0) {
            lazy_watch(s, t, n);
        }
    }
    int done = q->n_tokens - q->n_prompt;
    if (finish == FY_FINISH_NONE && (done >= r->max_tokens || q->n_tokens >= e->max_ctx)) {
        finish = FY_FINISH_LENGTH;
    }
    pthread_mutex_lock(&e->mu);
    e->generated_tokens++;
    emit_locked(e, s, &g, e->scratch.data, e->scratch.len, FY_FINISH_NONE, NULL);
    pthread_mutex_unlock(&e->mu);
    if (finish != FY_FINISH_NONE) {
        /* A stop string ends the text where it matched; otherwise whatever
         * the detokenizer and the matcher still hold is final. */
        sample_finish(e, s, finish, why, !stop_string);
    }
}

/* The parent's first logits: the other n - 1 samples start from its blocks. */
static int fork_samples(fy_engine *e, fy__req *r)
{
    fy__sample *p = &r->samples[0];
    for (int i = 1; i < r->n; i++) {
        fy__sample *c = &r->samples[i];
        memcpy(c->seq.tokens, p->seq.tokens, (size_t)p->seq.n_tokens * sizeof *c->seq.tokens);
        c->seq.n_tokens = p->seq.n_tokens;
        int rc = fy_sched_fork(e->sched, &p->seq, &c->seq);
        if (rc < 0) {
            return rc;
        }
    }
    r->forked = 1;
    return 0;
}

/* Ends every unfinished sample of R with an error (R may be gone after). */
static void req_fail(fy_engine *e, fy__req *r, const char *why)
{
    finish_all(e, r, FY_FINISH_ERROR, why, 0);
}

/* prompt_logprobs: reports the prompt tokens whose logits are among O's
 * rows, in order (a row at position P scores token P + 1); once the last is
 * out, the sequence wants only its last token's logits again. */
static void report_prompt_rows(fy_engine *e, fy__sample *s, const step_out *o)
{
    fy__req *r = s->req;
    for (int k = 0; k < o->rows && r->prompt_next < r->n_prompt; k++) {
        int p = o->end - o->rows + k;
        if (p + 1 != r->prompt_next) {
            continue;
        }
        fy_gen_token g;
        fy_sampler_logprobs(e->sampler, e->logits + (size_t)(o->row + k) * (size_t)e->vocab,
                            s->seq.tokens[p + 1], r->sp.prompt_logprobs, &g);
        pthread_mutex_lock(&e->mu);
        int rc = toklist_push(&s->out.ptok, &g);
        if (rc == 0) {
            rc = queue_locked(e, s);
        }
        pthread_mutex_unlock(&e->mu);
        if (rc < 0) {
            FY_ERROR("engine", "out of memory queueing prompt logprobs of request %llu",
                     (unsigned long long)r->id);
        }
        r->prompt_next++;
    }
    s->seq.logits_from = r->prompt_next - 1;
    if (r->prompt_next >= r->n_prompt) {
        s->seq.prompt_logits = 0;
    }
}

/* Returns the number of sequences run. */
static int run_step(fy_engine *e)
{
    fy_sched_batch *b;
    int n = fy_sched_step(e->sched, &b);
    for (int i = 0; i < b->n_failed; i++) {
        fy__sample *s = b->failed[i]->data;
        fy__req *r = s->req;
        /* Too long for the whole KV cache: the context's end for this pool.
         * Before the fork, the parent stands for all n samples. */
        if (r->forked) {
            sample_finish(e, s, FY_FINISH_LENGTH, NULL, 1);
        } else {
            finish_all(e, r, FY_FINISH_LENGTH, NULL, 1);
        }
    }
    if (n == 0) {
        return 0;
    }
    if (b->cow.n > 0) {
        int rc = fy_fwd_copy_blocks(e->fwd, b->cow.src, b->cow.dst, b->cow.n);
        if (rc < 0) {
            FY_ERROR("engine", "KV block copy failed: %s", fy_strerror(rc));
        }
    }
    fy_kv_cow_done(e->kv, &b->cow);
    for (int i = 0; i < n; i++) {
        fy_seq *q = b->seqs[i];
        e->fs[i] = (fy_fwd_seq){.tokens = q->tokens + q->n_computed,
                                .n_tokens = q->step_tokens,
                                .start = q->n_computed,
                                .block_table = q->table.blocks,
                                .n_blocks = q->table.n_blocks,
                                .want_logits = q->want_logits};
    }
    /* Greedy-only steps ask the backend for ids, not logits (on a GPU: 4
     * bytes per sequence cross instead of 4 x vocab); prompt logprobs need
     * the logits. */
    int ids_only = 1;
    for (int i = 0; i < n && ids_only; i++) {
        fy_seq *q = b->seqs[i];
        ids_only =
            !q->want_logits || (!q->prompt_logits && argmax_only(((fy__sample *)q->data)->req));
    }
    int rc = ids_only ? fy_fwd_step_argmax(e->fwd, e->fs, n, e->ids)
                      : fy_fwd_step(e->fwd, e->fs, n, e->logits);
    if (rc < 0) {
        char why[128];
        snprintf(why, sizeof why, "forward pass failed: %s", fy_strerror(rc));
        FY_ERROR("engine", "%s", why);
        /* The batch's requests can't go on. Finishing a sequence takes it
         * out of the batch, so this ends. */
        while (b->n > 0) {
            req_fail(e, ((fy__sample *)b->seqs[0]->data)->req, why);
        }
        return n;
    }
    fy_sched_commit(e->sched);
    /* Finishing a sequence removes it from the batch: take the list first. */
    int nl = 0, row = 0;
    step_out *stepped = e->stepped;
    for (int i = 0; i < n; i++) {
        fy_seq *q = b->seqs[i];
        if (q->want_logits) {
            stepped[nl++] = (step_out){q->data, row, q->want_logits, q->n_computed};
            row += q->want_logits;
        }
    }
    for (int i = 0; i < nl; i++) {
        fy__sample *s = stepped[i].s;
        fy__req *r = s->req;
        int last = stepped[i].row + stepped[i].rows - 1;
        if (s->seq.prompt_logits) {
            report_prompt_rows(e, s, &stepped[i]);
        }
        if (stepped[i].end < s->seq.n_tokens) {
            continue; /* a prompt chunk: no token to sample yet */
        }
        if (r->max_tokens == 0) {
            /* The prompt only: every sample ends here. Nothing generated:
             * what the primed detokenizer holds is the prompt's. */
            finish_all(e, r, FY_FINISH_LENGTH, NULL, 0);
            continue;
        }
        if (ids_only) {
            fy_gen_token g = {.id = e->ids[last]};
            sample_accept(e, s, &g);
            continue;
        }
        float *lrow = e->logits + (size_t)last * (size_t)e->vocab;
        if (r->n > 1 && !r->forked) {
            if (fork_samples(e, r) < 0) {
                req_fail(e, r, "out of memory forking parallel samples");
                continue;
            }
            /* The last sample to finish may free R: N is read first. */
            for (int k = 0, nk = r->n; k < nk; k++) {
                memcpy(e->row, lrow, (size_t)e->vocab * sizeof *lrow);
                sample_next(e, &r->samples[k], e->row);
            }
        } else {
            sample_next(e, s, lrow);
        }
    }
    return n;
}

/* --- Engine thread --------------------------------------------------------------------- */

/* Moves new requests into the scheduler and applies aborts. mu held. */
static void take_queues(fy_engine *e)
{
    fy__req *in = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->inbox_n = 0;
    for (fy__req *r = in, *next; r; r = next) {
        next = r->inbox_next;
        r->inbox_next = NULL;
        if (r->abort_req) {
            continue; /* the abort list has it too */
        }
        fy__sample *s = &r->samples[0];
        int rc = fy_sched_add(e->sched, &s->seq, r->key[0] ? r->key : NULL);
        if (rc < 0) {
            pthread_mutex_unlock(&e->mu);
            req_fail(e, r, "the waiting queue is full");
            pthread_mutex_lock(&e->mu);
            continue;
        }
        e->prompt_tokens += (uint64_t)r->n_prompt;
    }
    fy__req *ab = e->aborts;
    e->aborts = NULL;
    for (fy__req *r = ab, *next; r; r = next) {
        next = r->abort_next;
        r->abort_next = NULL;
        for (int i = 0; i < r->n; i++) {
            fy__sample *s = &r->samples[i];
            if (!s->finished) {
                fy_sched_remove(e->sched, &s->seq);
                s->finished = 1;
                r->n_finished++;
            }
            sample_engine_free(s);
        }
        req_engine_done_locked(e, r);
        req_unref(e, r); /* the abort list's */
    }
    fy_sched_stats ss;
    fy_sched_get_stats(e->sched, &ss);
    e->sched_waiting = ss.waiting;
}

/* Refreshes the stats snapshot. mu held. */
static void update_stats(fy_engine *e)
{
    fy_kv_stats ks;
    fy_sched_stats ss;
    fy_kv_get_stats(e->kv, &ks);
    fy_sched_get_stats(e->sched, &ss);
    fy_engine_stats *st = &e->stats;
    st->blocks_total = ks.total;
    st->blocks_used = ks.used;
    st->blocks_cached = ks.cached;
    st->blocks_free = ks.free;
    st->prefix_queries = ks.queries;
    st->prefix_hits = ks.hits;
    st->prefix_hit_rate = ks.queries ? (double)ks.hits / (double)ks.queries : 0.0;
    st->kv_bytes_wasted = ks.wasted_bytes;
    st->running = ss.running;
    st->waiting = ss.waiting + ss.preempted_waiting + e->inbox_n;
    st->steps = ss.steps;
    st->preemptions = ss.preemptions;
    st->prompt_tokens = e->prompt_tokens;
    st->generated_tokens = e->generated_tokens;
    st->block_size = e->block_size;
    st->block_bytes = e->block_bytes;
    e->sched_waiting = ss.waiting;
}

static void *engine_main(void *arg)
{
    fy_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        take_queues(e);
        update_stats(e);
        int notify = e->ready != NULL;
        if (notify) {
            uv_async_send(&e->async);
        }
        if (!fy_sched_has_work(e->sched)) {
            pthread_cond_wait(&e->cv, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);
        int ran = run_step(e);
        pthread_mutex_lock(&e->mu);
        update_stats(e);
        if (e->ready) {
            uv_async_send(&e->async);
        }
        if (!ran && !e->stop && !e->inbox_head && !e->aborts) {
            /* Work waits but none fits now (it can't happen with a sane
             * pool; don't spin if it does). */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 2000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &ts);
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* --- Loop thread: delivery ------------------------------------------------------------- */

static void swap_outbuf(outbuf *a, outbuf *b)
{
    outbuf t = *a;
    *a = *b;
    *b = t;
}

static void async_cb(uv_async_t *h)
{
    fy_engine *e = h->data;
    pthread_mutex_lock(&e->mu);
    ready_item *list = NULL;
    /* The ready list is LIFO; reverse it so samples are delivered in the
     * order their output appeared. */
    for (ready_item *it = e->ready, *next; it; it = next) {
        next = it->next;
        it->next = list;
        list = it;
        swap_outbuf(&it->s->out, &it->s->dl);
        it->s->out.tok.n = 0;
        it->s->out.ptok.n = 0;
        fy_buf_reset(&it->s->out.text);
        it->s->out.finish = FY_FINISH_NONE;
        it->s->out.error[0] = 0;
        it->s->queued = 0;
    }
    e->ready = NULL;
    pthread_mutex_unlock(&e->mu);

    for (ready_item *it = list; it; it = it->next) {
        fy__sample *s = it->s;
        fy__req *r = s->req;
        outbuf *d = &s->dl;
        if (r->aborted || r->loop_release ||
            (d->tok.n == 0 && d->ptok.n == 0 && d->text.len == 0 && d->finish == FY_FINISH_NONE)) {
            continue;
        }
        fy_engine_event ev = {
            .request_id = r->id,
            .index = s->index,
            .text = d->text.len ? d->text.data : "",
            .text_len = d->text.len,
            .tokens = d->tok.v,
            .n_tokens = d->tok.n,
            .prompt_logprobs = d->ptok.v,
            .n_prompt_logprobs = d->ptok.n,
            .finish = d->finish,
            .error = d->finish == FY_FINISH_ERROR ? d->error : NULL,
            .prompt_tokens = r->n_prompt,
            .cached_tokens = d->cached,
            .completion_tokens = d->completion,
        };
        if (d->finish != FY_FINISH_NONE && ++r->finals == r->n) {
            /* The last event of the request: the loop side lets go after it. */
            live_take(e, r->id);
            r->loop_release = 1;
        }
        r->cb(&ev, r->arg);
    }
    pthread_mutex_lock(&e->mu);
    for (ready_item *it = list, *next; it; it = next) {
        next = it->next;
        fy__req *r = it->s->req;
        if (r->loop_release == 1) {
            r->loop_release = 2;
            req_unref(e, r);
        }
        it->s->dl.tok.n = 0;
        it->s->dl.ptok.n = 0;
        fy_buf_reset(&it->s->dl.text);
        it->s->dl.finish = FY_FINISH_NONE;
        req_unref(e, r);
        it->next = e->ready_free;
        e->ready_free = it;
    }
    pthread_mutex_unlock(&e->mu);
}

/* --- Public API ------------------------------------------------------------------------ */

void fy_engine_abort(fy_engine *e, uint64_t id)
{
    fy__req *r = live_take(e, id);
    if (!r) {
        return;
    }
    r->aborted = 1;
    pthread_mutex_lock(&e->mu);
    r->abort_req = 1;
    if (!r->engine_done) {
        r->abort_next = e->aborts;
        e->aborts = r;
        r->refs++; /* the abort list's */
        pthread_cond_signal(&e->cv);
    }
    req_unref(e, r); /* the loop side's */
    pthread_mutex_unlock(&e->mu);
}

static int req_new(fy_engine *e, const fy_engine_request *q, fy__req **out, char *err,
                   size_t errlen)
{
    const fy_sampling *sp = &q->sampling;
    fy__req *r = calloc(1, sizeof *r);
    if (!r) {
        return FY_ENOMEM;
    }
    *out = r;
    r->n = q->n;
    r->sp = *sp;
    r->sp.stop = NULL;
    r->sp.stop_ids = NULL;
    r->sp.logit_bias = NULL; /* the copy below */
    r->sp.grammar = fy_grammar_ref(sp->grammar);
    r->sp.grammar_trigger = NULL; /* the copy: */
    if (sp->grammar && sp->grammar_trigger) {
        r->trigger_len = strlen(sp->grammar_trigger);
        memcpy(r->trigger, sp->grammar_trigger, r->trigger_len);
    }
    r->cb = q->cb;
    r->arg = q->arg;
    r->n_prompt = q->n_prompt;
    if (q->key_id) {
        snprintf(r->key, sizeof r->key, "%s", q->key_id);
    }
    int room = e->max_ctx - q->n_prompt;
    r->max_tokens = sp->max_tokens < room ? sp->max_tokens : room;
    if (sp->has_seed) {
        r->seed = sp->seed;
    } else if (fy_random_bytes(&r->seed, sizeof r->seed) < 0) {
        r->seed = (uint64_t)time(NULL) ^ ((uint64_t)e->next_id << 32);
    }
    if (sp->n_stop_ids > 0) {
        r->stop_ids = malloc((size_t)sp->n_stop_ids * sizeof *r->stop_ids);
        if (!r->stop_ids) {
            return FY_ENOMEM;
        }
        memcpy(r->stop_ids, sp->stop_ids, (size_t)sp->n_stop_ids * sizeof *r->stop_ids);
    }
    if (sp->n_logit_bias > 0) {
        r->logit_bias = malloc((size_t)sp->n_logit_bias * sizeof *r->logit_bias);
        if (!r->logit_bias) {
            return FY_ENOMEM;
        }
        memcpy(r->logit_bias, sp->logit_bias, (size_t)sp->n_logit_bias * sizeof *r->logit_bias);
        r->sp.logit_bias = r->logit_bias;
    }
    r->samples = calloc((size_t)r->n, sizeof *r->samples);
    if (!r->samples) {
        return FY_ENOMEM;
    }
    int cap = q->n_prompt + r->max_tokens + 1;
    for (int i = 0; i < r->n; i++) {
        fy__sample *s = &r->samples[i];
        s->req = r;
        s->index = i;
        fy_buf_init(&s->out.text, FY_ENGINE_TEXT_MAX);
        fy_buf_init(&s->dl.text, FY_ENGINE_TEXT_MAX);
        int rc = fy_stop_init(&s->stop, sp->stop, sp->n_stop);
        if (rc < 0) {
            return rc == FY_EINVAL ? fy_fail(err, errlen, rc,
                                             "stop: at most %d non-empty UTF-8 strings of at most "
                                             "%d bytes",
                                             FY_STOP_MAX, FY_STOP_MAX_BYTES)
                                   : rc;
        }
        s->detok = fy_detok_new(e->tok, !sp->keep_special);
        if (sp->grammar && (rc = fy_gstate_new(sp->grammar, &s->gs)) < 0) {
            return rc;
        }
        s->gs_active = r->trigger_len == 0;
        s->seq.tokens = malloc((size_t)cap * sizeof *s->seq.tokens);
        if (!s->detok || !s->seq.tokens ||
            fy_detok_prime(s->detok, q->prompt, (size_t)q->n_prompt) < 0) {
            return FY_ENOMEM;
        }
        s->seq.cap = cap;
        s->seq.n_prompt = q->n_prompt;
        s->seq.data = s;
        s->seq.n_group = i == 0 ? r->n : 1;
    }
    memcpy(r->samples[0].seq.tokens, q->prompt, (size_t)q->n_prompt * sizeof *q->prompt);
    r->samples[0].seq.n_tokens = q->n_prompt;
    r->prompt_next = 1;
    if (sp->prompt_logprobs >= 0 && q->n_prompt > 1) {
        r->samples[0].seq.prompt_logits = 1; /* the parent's prefill stands for all n */
        r->samples[0].seq.logits_from = 0;
    }
    return 0;
}

static int check_request(fy_engine *e, const fy_engine_request *q, char *err, size_t errlen)
{
    if (!q || !q->cb) {
        return fy_fail(err, errlen, FY_EINVAL, "request: a callback is required");
    }
    if (!q->prompt || q->n_prompt < 1) {
        return fy_fail(err, errlen, FY_EINVAL, "prompt: at least one token is required");
    }
    if (q->n_prompt + (q->sampling.max_tokens > 0) > e->max_ctx) {
        return fy_fail(err, errlen, FY_ETOOBIG,
                       "prompt: %d tokens leave no room to generate in a context of %d",
                       q->n_prompt, e->max_ctx);
    }
    for (int i = 0; i < q->n_prompt; i++) {
        if (q->prompt[i] < 0 || q->prompt[i] >= e->vocab) {
            return fy_fail(err, errlen, FY_EINVAL,
                           "prompt: token %d (id %d) is outside the vocabulary", i,
                           (int)q->prompt[i]);
        }
    }
    int max_n = e->o.max_seqs < FY_ENGINE_MAX_N ? e->o.max_seqs : FY_ENGINE_MAX_N;
    if (q->n < 1 || q->n > max_n) {
        return fy_fail(err, errlen, FY_EINVAL, "n must be between 1 and %d", max_n);
    }
    int rc = fy_sampling_validate(&q->sampling, err, errlen);
    if (rc < 0) {
        return rc;
    }
    const fy_sampling *sp = &q->sampling;
    if (sp->n_stop < 0 || sp->n_stop > FY_STOP_MAX || (sp->n_stop > 0 && !sp->stop)) {
        return fy_fail(err, errlen, FY_EINVAL, "stop: at most %d strings", FY_STOP_MAX);
    }
    if (sp->n_stop_ids < 0 || sp->n_stop_ids > FY_ENGINE_MAX_STOP_IDS ||
        (sp->n_stop_ids > 0 && !sp->stop_ids)) {
        return fy_fail(err, errlen, FY_EINVAL, "stop_token_ids: at most %d ids",
                       FY_ENGINE_MAX_STOP_IDS);
    }
    for (int i = 0; i < sp->n_stop_ids; i++) {
        if (sp->stop_ids[i] < 0 || sp->stop_ids[i] >= e->vocab) {
            return fy_fail(err, errlen, FY_EINVAL,
                           "stop_token_ids: id %d is outside the vocabulary", (int)sp->stop_ids[i]);
        }
    }
    if (sp->grammar_trigger && (!sp->grammar || !sp->grammar_trigger[0] ||
                                strlen(sp->grammar_trigger) >= FY_ENGINE_MAX_TRIGGER)) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "grammar_trigger: 1 to %d bytes, and only with a grammar",
                       FY_ENGINE_MAX_TRIGGER - 1);
    }
    for (int i = 0; i < sp->n_logit_bias; i++) {
        if (sp->logit_bias[i].id < 0 || sp->logit_bias[i].id >= e->vocab) {
            return fy_fail(err, errlen, FY_EINVAL, "logit_bias: id %d is outside the vocabulary",
                           (int)sp->logit_bias[i].id);
        }
    }
    return 0;
}

int fy_engine_submit(fy_engine *e, const fy_engine_request *q, uint64_t *id, char *err,
                     size_t errlen)
{
    int rc = check_request(e, q, err, errlen);
    if (rc < 0) {
        return rc;
    }
    pthread_mutex_lock(&e->mu);
    int full = e->inbox_n + e->sched_waiting >= e->o.max_waiting;
    pthread_mutex_unlock(&e->mu);
    if (full) {
        return fy_fail(err, errlen, FY_ELIMIT, "the engine's waiting queue is full (%d requests)",
                       e->o.max_waiting);
    }
    fy__req *r = NULL;
    rc = req_new(e, q, &r, err, errlen);
    if (rc < 0) {
        if (rc == FY_ENOMEM) {
            fy_fail(err, errlen, rc, "out of memory for the request");
        }
        req_free(e, r);
        return rc;
    }
    r->id = ++e->next_id;
    r->refs = 2; /* the engine side's and the loop side's */
    live_insert(e, r);
    pthread_mutex_lock(&e->mu);
    r->all_next = e->all;
    if (e->all) {
        e->all->all_prev = r;
    }
    e->all = r;
    if (e->inbox_tail) {
        e->inbox_tail->inbox_next = r;
    } else {
        e->inbox_head = r;
    }
    e->inbox_tail = r;
    e->inbox_n++;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    *id = r->id;
    return 0;
}

void fy_engine_get_stats(fy_engine *e, fy_engine_stats *s)
{
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    pthread_mutex_unlock(&e->mu);
}

const fy_model_config *fy_engine_config(const fy_engine *e)
{
    return &e->model->cfg;
}

const fy_tokenizer *fy_engine_tokenizer(const fy_engine *e)
{
    return e->tok;
}

const fy_model *fy_engine_model(const fy_engine *e)
{
    return e->model;
}

const char *fy_engine_model_name(const fy_engine *e)
{
    return e->model->name;
}

int fy_engine_max_context(const fy_engine *e)
{
    return e->max_ctx;
}

int fy_engine_tensor_parallel(const fy_engine *e)
{
    return fy_fwd_tensor_parallel(e->fwd);
}

/* --- Lifecycle ------------------------------------------------------------------------- */

static void engine_free_parts(fy_engine *e)
{
    while (e->all) {
        req_free(e, e->all);
    }
    for (ready_item *it = e->ready, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    for (ready_item *it = e->ready_free, *next; it; it = next) {
        next = it->next;
        free(it);
    }
    e->ready = e->ready_free = NULL;
    fy_sched_free(e->sched);
    fy_kv_free(e->kv);
    fy_fwd_destroy(e->fwd);
    if (e->be) {
        fy_backend_destroy(e->be);
    }
    fy_model_free(e->model);
    fy_tokenizer_free(e->tok);
    fy_sampler_free(e->sampler);
    free(e->logits);
    free(e->ids);
    free(e->row);
    free(e->fs);
    free(e->stepped);
    fy_buf_free(&e->scratch);
    fy_gmasker_free(e->masker);
    free(e->tok_bytes);
    free(e->tok_lens);
    free(e->allow);
    e->masker = NULL;
    e->tok_bytes = NULL;
    e->tok_lens = NULL;
    e->allow = NULL;
    e->sched = NULL;
    e->kv = NULL;
    e->fwd = NULL;
    e->be = NULL;
    e->model = NULL;
    e->tok = NULL;
    e->sampler = NULL;
}

static void engine_close_cb(uv_handle_t *h)
{
    fy_engine *e = h->data;
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

static void defaults(fy_engine_options *o)
{
    if (o->kv_bytes == 0) {
        o->kv_bytes = (size_t)1 << 30;
    }
    if (o->block_size == 0) {
        o->block_size = 16;
    }
    if (o->max_seqs == 0) {
        o->max_seqs = 64;
    }
    if (o->max_step_tokens == 0) {
        o->max_step_tokens = 512;
    }
    if (o->max_waiting == 0) {
        o->max_waiting = 256;
    }
}

static int engine_setup(fy_engine *e, char *err, size_t errlen)
{
    const fy_engine_options *o = &e->o;
    int rc = fy_model_load(o->model_dir, &e->model, err, errlen);
    if (rc < 0) {
        return rc;
    }
    const fy_model *m = e->model;
    if (!o->tokenizer && m->gguf) {
        rc = fy_tokenizer_from_gguf(m->gguf, &e->tok, err, errlen);
    } else {
        rc = fy_tokenizer_load(o->tokenizer ? o->tokenizer : o->model_dir, &e->tok, err, errlen);
    }
    if (rc < 0) {
        return rc;
    }
    rc = fy_backend_create(o->device ? o->device : "cpu", o->threads, &e->be, err, errlen);
    if (rc < 0) {
        return rc;
    }
    fy_fwd_options fo = {.block_size = o->block_size,
                         .kv_bytes = o->kv_bytes,
                         .max_batch_tokens = o->max_step_tokens,
                         .max_seqs = o->max_seqs,
                         .max_logit_rows = o->max_seqs + FY_MAX_PROMPT_ROWS,
                         .tensor_parallel = o->tensor_parallel,
                         .kv_mem_fraction = o->kv_mem_fraction,
                         .kv_dtype = o->kv_dtype};
    rc = fy_fwd_create(e->model, e->be, &fo, &e->fwd, err, errlen);
    if (rc < 0) {
        return rc;
    }
    const fy_model_config *c = &e->model->cfg;
    e->vocab = c->vocab_size;
    e->block_size = o->block_size;
    e->block_bytes = fy_fwd_kv_block_bytes(e->model, fy_fwd_kv_dtype(e->fwd), o->block_size);
    int nb = fy_fwd_num_blocks(e->fwd);
    long cap = (long)nb * o->block_size;
    e->max_ctx = c->max_pos < cap ? c->max_pos : (int)cap;
    for (int i = 0; i < c->n_eos; i++) {
        e->eos[e->n_eos++] = c->eos_ids[i];
    }
    int teos = fy_tokenizer_eos(e->tok);
    if (teos >= 0) {
        e->eos[e->n_eos++] = teos;
    }
    fy_kv_options ko = {.num_blocks = nb,
                        .block_size = o->block_size,
                        .block_bytes = e->block_bytes,
                        .prefix_caching = !o->no_prefix_caching};
    fy_sched_options so = {.max_seqs = o->max_seqs,
                           .max_step_tokens = o->max_step_tokens,
                           .max_waiting = o->max_waiting,
                           .max_extra_rows = FY_MAX_PROMPT_ROWS};
    if ((rc = fy_kv_new(&ko, &e->kv)) < 0 || (rc = fy_sched_new(&so, e->kv, &e->sched)) < 0 ||
        (rc = fy_sampler_new(e->vocab, &e->sampler)) < 0) {
        return fy_fail(err, errlen, rc, "engine: %s setting up the scheduler", fy_strerror(rc));
    }
    e->rows = fy_fwd_max_logit_rows(e->fwd);
    e->logits = malloc((size_t)e->rows * (size_t)e->vocab * sizeof *e->logits);
    e->ids = malloc((size_t)e->rows * sizeof *e->ids);
    e->row = malloc((size_t)e->vocab * sizeof *e->row);
    e->fs = calloc((size_t)o->max_seqs, sizeof *e->fs);
    e->stepped = calloc((size_t)o->max_seqs, sizeof *e->stepped);
    e->tok_bytes = calloc((size_t)e->vocab, sizeof *e->tok_bytes);
    e->tok_lens = calloc((size_t)e->vocab, sizeof *e->tok_lens);
    e->allow = calloc((size_t)(e->vocab + 31) / 32, sizeof *e->allow);
    if (!e->logits || !e->ids || !e->row || !e->fs || !e->stepped || !e->tok_bytes ||
        !e->tok_lens || !e->allow) {
        return fy_fail(err, errlen, FY_ENOMEM, "engine: out of memory for %d x %d logits", e->rows,
                       e->vocab);
    }
    for (int i = 0; i < e->vocab; i++) {
        if (!fy_tokenizer_is_special(e->tok, i)) {
            e->tok_bytes[i] = fy_tokenizer_token_bytes(e->tok, i, &e->tok_lens[i]);
        }
    }
    fy_buf_init(&e->scratch, FY_ENGINE_TEXT_MAX);
    e->stats.blocks_total = e->stats.blocks_free = nb;
    e->stats.block_size = e->block_size;
    e->stats.block_bytes = e->block_bytes;
    e->stats.kv_dtype = fy_dtype_name(fy_fwd_kv_dtype(e->fwd));
    return 0;
}

int fy_engine_create(const fy_engine_options *o, fy_engine **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!o || !o->model_dir || !o->loop) {
        return fy_fail(err, errlen, FY_EINVAL, "engine: a model directory and a loop are required");
    }
    if (o->block_size < 0 || o->block_size > 1024 || o->max_seqs < 0 || o->max_seqs > 4096 ||
        o->max_step_tokens < 0 || o->max_waiting < 0 || o->threads < 0) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "engine: block_size (<= 1024), max_seqs (<= 4096), max_step_tokens, "
                       "max_waiting and threads must be >= 0");
    }
    fy_engine *e = calloc(1, sizeof *e);
    if (!e) {
        return fy_fail(err, errlen, FY_ENOMEM, "engine: out of memory");
    }
    e->o = *o;
    defaults(&e->o);
    if (e->o.max_step_tokens < e->o.max_seqs) {
        e->o.max_step_tokens = e->o.max_seqs; /* every running sequence can decode each step */
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    int rc = engine_setup(e, err, errlen);
    if (rc == 0 && (rc = uv_async_init(o->loop, &e->async, async_cb)) < 0) {
        rc = fy_fail(err, errlen, fy_err_from_uv(rc), "engine: uv_async_init: %s", uv_strerror(rc));
    }
    if (rc < 0) {
        engine_free_parts(e);
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
        free(e);
        return rc;
    }
    e->async.data = e;
    if ((rc = pthread_create(&e->thread, NULL, engine_main, e)) != 0) {
        engine_free_parts(e);
        uv_close((uv_handle_t *)&e->async, engine_close_cb);
        return fy_fail(err, errlen, FY_ENOMEM, "engine: pthread_create: %s", strerror(rc));
    }
    e->thread_started = 1;
    *out = e;
    return 0;
}

void fy_engine_destroy(fy_engine *e)
{
    if (!e) {
        return;
    }
    pthread_mutex_lock(&e->mu);
    e->stop = 1;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
    }
    engine_free_parts(e);
    uv_close((uv_handle_t *)&e->async, engine_close_cb);
}
