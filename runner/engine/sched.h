/* sched.h: iteration-level (continuous) batching over the paged KV cache.
 *
 * Each step (fy_sched_step) picks, within a token budget and a limit on
 * sequences:
 *   1. every running sequence's decode token, oldest first;
 *   2. the next chunk of every running sequence still in prefill (chunked
 *      prefill: a long prompt is split across steps so decodes keep going);
 *   3. if nothing was preempted, new sequences: preempted ones first (by
 *      arrival), then waiting ones, first-come first-served within a key
 *      and round-robin across keys, each admitted with its longest cached
 *      prefix (kvcache.h) and as long a first chunk as the budget allows.
 * A sequence whose owner wants the logits of its prompt positions
 * (prompt_logits, for prompt logprobs) gets a row of logits for each of its
 * tokens from logits_from on: its chunks are cut so that a step's rows stay
 * within one per sequence plus max_extra_rows, and a prefix-cache hit never
 * covers logits_from (those positions are computed, not found).
 * When a running sequence needs a block and none is left, the newest
 * running sequence not yet scheduled this step is preempted: its blocks are
 * freed and it is recomputed later (prompt and generated tokens prefilled
 * again), so its output is unchanged. A sequence that can't get a block even
 * alone is failed (returned in the batch for its owner to finish).
 *
 * The owner (the engine) runs the batch, calls fy_sched_commit, appends
 * sampled tokens to the sequences and removes finished or aborted ones with
 * fy_sched_remove. Not thread-safe: the engine thread owns it. */
#ifndef FY_ENGINE_SCHED_H
#define FY_ENGINE_SCHED_H

#include "runner/engine/kvcache.h"

#include <stdint.h>

#define FY_SCHED_KEY_MAX 128 /* bytes of a fairness key kept (longer keys are cut) */

enum { FY_SEQ_NEW = 0, FY_SEQ_WAITING, FY_SEQ_RUNNING, FY_SEQ_PREEMPTED, FY_SEQ_DONE };

typedef struct fy__sched_keyq fy__sched_keyq;

typedef struct fy_seq {
    /* Set by the owner. TOKENS holds the prompt then the generated tokens;
     * the owner appends (N_TOKENS < CAP). */
    int32_t *tokens;
    int n_tokens, cap;
    int n_prompt;
    int n_group; /* sequences it will become (a request's n before its fork); >= 1 */
    void *data;  /* the owner's */
    /* 1: the logits of every token at a position >= logits_from are wanted,
     * not only the last token's (the owner may change both between steps,
     * e.g. as it reports positions; 0 = the last token's only). */
    int prompt_logits;
    int logits_from;

    /* Owned by the scheduler (read-only for the owner). */
    int state;      /* FY_SEQ_* */
    int n_computed; /* tokens whose KV is in the cache */
    fy_kv_table table;
    uint64_t order;    /* arrival order (fy_sched_add), lower is older */
    int cached_tokens; /* prompt tokens found in the prefix cache at first admission */
    int admitted;      /* 1 once admitted (cached_tokens is final) */
    int step_tokens;   /* tokens scheduled in the current step */
    int want_logits;   /* rows of logits this step: its last want_logits tokens' (0: none;
                        * 1 when it reaches its last token; more with prompt_logits) */
    int scheduled;     /* 1 while in the current step's batch */
    uint64_t preemptions;
    struct fy_seq *prev, *next; /* in the running or preempted list, or a key queue */
    fy__sched_keyq *keyq;
} fy_seq;

typedef struct {
    int max_seqs;        /* sequences per step (and running at once) */
    int max_step_tokens; /* token budget per step */
    int max_waiting;     /* waiting sequences (not counting preempted ones) */
    int max_extra_rows;  /* logit rows per step beyond one per sequence (prompt_logits) */
} fy_sched_options;

typedef struct {
    fy_seq **seqs; /* scheduled, in batch order: decodes first, then prefill chunks */
    int n;
    int n_tokens;    /* sum of step_tokens */
    fy_kv_cow cow;   /* copies to run before the step (then fy_kv_cow_done) */
    fy_seq **failed; /* could not get KV blocks even alone: removed, the owner finishes them */
    int n_failed;
    int n_preempted; /* this step */
    int n_rows;      /* rows of logits (sum of want_logits) */
    int extra_rows;  /* of max_extra_rows, left this step */
} fy_sched_batch;

typedef struct fy_sched fy_sched;

/* KV must outlive the scheduler. Returns 0, FY_EINVAL or FY_ENOMEM. */
int fy_sched_new(const fy_sched_options *o, fy_kv *kv, fy_sched **out);
/* Sequences still queued or running are released (blocks freed), not freed. */
void fy_sched_free(fy_sched *s);

/* Queues SEQ (state NEW, n_tokens >= 1) under fairness key KEY (NULL =
 * anonymous). Returns 0, FY_ELIMIT when max_waiting sequences wait, FY_EINVAL. */
int fy_sched_add(fy_sched *s, fy_seq *seq, const char *key);

/* Plans one step. The batch (owned by S) is valid until the next call.
 * Returns the number of sequences scheduled (0: nothing to do). */
int fy_sched_step(fy_sched *s, fy_sched_batch **out);

/* After the step ran: every scheduled sequence's step_tokens are recorded
 * as computed (full blocks enter the prefix cache). */
void fy_sched_commit(fy_sched *s);

/* CHILD (owner-initialised, state NEW, same tokens as PARENT) shares
 * PARENT's blocks and runs right after it. PARENT must be running. The
 * group's reserved room moves from PARENT to CHILD. Returns 0 or FY_ENOMEM. */
int fy_sched_fork(fy_sched *s, fy_seq *parent, fy_seq *child);

/* Removes SEQ wherever it is (waiting, running, preempted) and frees its
 * blocks at once. Safe on a DONE or NEW sequence. */
void fy_sched_remove(fy_sched *s, fy_seq *seq);

typedef struct {
    int running, waiting, preempted_waiting;
    uint64_t steps, preemptions;
} fy_sched_stats;

void fy_sched_get_stats(const fy_sched *s, fy_sched_stats *st);
int fy_sched_has_work(const fy_sched *s);

#endif
