/* sched.c: the step planner. Lists are intrusive (fy_seq.prev/next): one
 * running list in admission order (the tail is the newest), one preempted
 * list in arrival order, and one FIFO per fairness key on a ring that the
 * admission pointer walks round-robin. */
#include "runner/engine/sched.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

struct fy__sched_keyq {
    char key[FY_SCHED_KEY_MAX];
    fy_seq *head, *tail;
    fy__sched_keyq *prev, *next; /* ring of non-empty queues */
};

typedef struct {
    fy_seq *head, *tail;
    int n;
} seq_list;

struct fy_sched {
    fy_sched_options o;
    fy_kv *kv;
    seq_list running, preempted;
    int running_slots;  /* sum of n_group over running sequences */
    fy__sched_keyq *rr; /* the key queue admitted from next (NULL: none waiting) */
    int n_waiting;
    uint64_t next_order;
    uint64_t steps, preemptions;
    fy_sched_batch batch;
};

/* --- Lists ------------------------------------------------------------------------------- */

static void list_unlink(seq_list *l, fy_seq *q)
{
    if (q->prev) {
        q->prev->next = q->next;
    } else {
        l->head = q->next;
    }
    if (q->next) {
        q->next->prev = q->prev;
    } else {
        l->tail = q->prev;
    }
    q->prev = q->next = NULL;
    l->n--;
}

static void list_insert_after(seq_list *l, fy_seq *after, fy_seq *q)
{
    q->prev = after;
    q->next = after ? after->next : l->head;
    if (q->next) {
        q->next->prev = q;
    } else {
        l->tail = q;
    }
    if (after) {
        after->next = q;
    } else {
        l->head = q;
    }
    l->n++;
}

static void list_append(seq_list *l, fy_seq *q)
{
    list_insert_after(l, l->tail, q);
}

/* Keeps the preempted list in arrival order (it is short). */
static void preempted_insert(fy_sched *s, fy_seq *q)
{
    fy_seq *after = s->preempted.tail;
    while (after && after->order > q->order) {
        after = after->prev;
    }
    list_insert_after(&s->preempted, after, q);
}

/* --- Key queues ------------------------------------------------------------------------- */

static fy__sched_keyq *keyq_find(fy_sched *s, const char *key)
{
    fy__sched_keyq *k = s->rr;
    if (!k) {
        return NULL;
    }
    do {
        if (strcmp(k->key, key) == 0) {
            return k;
        }
        k = k->next;
    } while (k != s->rr);
    return NULL;
}

/* A new key joins at the end of the current round (just before the pointer). */
static fy__sched_keyq *keyq_new(fy_sched *s, const char *key)
{
    fy__sched_keyq *k = calloc(1, sizeof *k);
    if (!k) {
        return NULL;
    }
    size_t n = strlen(key);
    if (n >= sizeof k->key) {
        n = sizeof k->key - 1;
    }
    memcpy(k->key, key, n);
    if (!s->rr) {
        k->prev = k->next = k;
        s->rr = k;
    } else {
        k->next = s->rr;
        k->prev = s->rr->prev;
        k->prev->next = k;
        s->rr->prev = k;
    }
    return k;
}

static void keyq_drop(fy_sched *s, fy__sched_keyq *k)
{
    if (k->next == k) {
        s->rr = NULL;
    } else {
        k->prev->next = k->next;
        k->next->prev = k->prev;
        if (s->rr == k) {
            s->rr = k->next;
        }
    }
    free(k);
}

static void keyq_unlink(fy_sched *s, fy_seq *q)
{
    fy__sched_keyq *k = q->keyq;
    if (q->prev) {
        q->prev->next = q->next;
    } else {
        k->head = q->next;
    }
    if (q->next) {
        q->next->prev = q->prev;
    } else {
        k->tail = q->prev;
    }
    q->prev = q->next = NULL;
    q->keyq = NULL;
    s->n_waiting--;
    if (!k->head) {
        keyq_drop(s, k);
    }
}

/* --- Lifecycle --------------------------------------------------------------------------- */

int fy_sched_new(const fy_sched_options *o, fy_kv *kv, fy_sched **out)
{
    *out = NULL;
    if (!o || !kv || o->max_seqs < 1 || o->max_step_tokens < 1 || o->max_waiting < 0 ||
        o->max_extra_rows < 0) {
        return FY_EINVAL;
    }
    fy_sched *s = calloc(1, sizeof *s);
    if (!s) {
        return FY_ENOMEM;
    }
    s->o = *o;
    s->kv = kv;
    size_t n = (size_t)o->max_seqs;
    s->batch.seqs = calloc(n, sizeof *s->batch.seqs);
    s->batch.failed = calloc(n, sizeof *s->batch.failed);
    s->batch.cow.src = calloc(n, sizeof *s->batch.cow.src);
    s->batch.cow.dst = calloc(n, sizeof *s->batch.cow.dst);
    s->batch.cow.cap = o->max_seqs;
    if (!s->batch.seqs || !s->batch.failed || !s->batch.cow.src || !s->batch.cow.dst) {
        fy_sched_free(s);
        return FY_ENOMEM;
    }
    *out = s;
    return 0;
}

void fy_sched_free(fy_sched *s)
{
    if (!s) {
        return;
    }
    while (s->running.head) {
        fy_sched_remove(s, s->running.head);
    }
    while (s->preempted.head) {
        fy_sched_remove(s, s->preempted.head);
    }
    while (s->rr) {
        fy_sched_remove(s, s->rr->head);
    }
    fy_kv_cow_done(s->kv, &s->batch.cow);
    free(s->batch.seqs);
    free(s->batch.failed);
    free(s->batch.cow.src);
    free(s->batch.cow.dst);
    free(s);
}

int fy_sched_add(fy_sched *s, fy_seq *seq, const char *key)
{
    if (seq->state != FY_SEQ_NEW || seq->n_tokens < 1 || seq->n_tokens > seq->cap ||
        seq->n_group < 1 || seq->n_group > s->o.max_seqs) {
        return FY_EINVAL;
    }
    if (s->n_waiting >= s->o.max_waiting) {
        return FY_ELIMIT;
    }
    if (!key) {
        key = "";
    }
    fy__sched_keyq *k = keyq_find(s, key);
    if (!k && !(k = keyq_new(s, key))) {
        return FY_ENOMEM;
    }
    fy_kv_table_init(&seq->table);
    seq->n_computed = 0;
    seq->order = s->next_order++;
    seq->keyq = k;
    seq->next = NULL;
    seq->prev = k->tail;
    if (k->tail) {
        k->tail->next = seq;
    } else {
        k->head = seq;
    }
    k->tail = seq;
    seq->state = FY_SEQ_WAITING;
    s->n_waiting++;
    return 0;
}

void fy_sched_remove(fy_sched *s, fy_seq *seq)
{
    switch (seq->state) {
    case FY_SEQ_WAITING:
        keyq_unlink(s, seq);
        break;
    case FY_SEQ_RUNNING:
        list_unlink(&s->running, seq);
        s->running_slots -= seq->n_group;
        break;
    case FY_SEQ_PREEMPTED:
        list_unlink(&s->preempted, seq);
        break;
    default:
        return;
    }
    /* A sequence removed between planning and commit leaves the batch. */
    if (seq->scheduled) {
        for (int i = 0; i < s->batch.n; i++) {
            if (s->batch.seqs[i] == seq) {
                s->batch.n_tokens -= seq->step_tokens;
                s->batch.n_rows -= seq->want_logits;
                memmove(&s->batch.seqs[i], &s->batch.seqs[i + 1],
                        (size_t)(s->batch.n - i - 1) * sizeof *s->batch.seqs);
                s->batch.n--;
                break;
            }
        }
        seq->scheduled = 0;
    }
    fy_kv_table_release(s->kv, &seq->table);
    seq->n_computed = 0;
    seq->step_tokens = 0;
    seq->state = FY_SEQ_DONE;
}

int fy_sched_fork(fy_sched *s, fy_seq *parent, fy_seq *child)
{
    if (parent->state != FY_SEQ_RUNNING || child->state != FY_SEQ_NEW) {
        return FY_EINVAL;
    }
    int rc = fy_kv_fork(s->kv, &parent->table, &child->table);
    if (rc < 0) {
        return rc;
    }
    child->n_computed = parent->n_computed;
    child->order = parent->order;
    child->cached_tokens = parent->cached_tokens;
    child->admitted = 1;
    child->state = FY_SEQ_RUNNING;
    /* The room admission reserved for the group moves to the child. */
    child->n_group = 1;
    if (parent->n_group > 1) {
        parent->n_group--;
    } else {
        s->running_slots++;
    }
    fy_seq *after = parent;
    while (after->next && after->next->order == parent->order) {
        after = after->next;
    }
    list_insert_after(&s->running, after, child);
    return 0;
}

/* --- Planning ---------------------------------------------------------------------------- */

static void preempt(fy_sched *s, fy_seq *q)
{
    list_unlink(&s->running, q);
    s->running_slots -= q->n_group;
    fy_kv_table_release(s->kv, &q->table);
    q->n_computed = 0;
    q->state = FY_SEQ_PREEMPTED;
    q->preemptions++;
    preempted_insert(s, q);
    s->preemptions++;
    s->batch.n_preempted++;
}

static void fail(fy_sched *s, fy_seq *q)
{
    fy_sched_remove(s, q);
    s->batch.failed[s->batch.n_failed++] = q;
}

/* Rows of logits Q's next TAKE tokens bring: every position from
 * logits_from on with prompt_logits, and the last token's. */
static int rows_of(const fy_seq *q, int take)
{
    int end = q->n_computed + take, rows = 0;
    if (q->prompt_logits) {
        int from = q->logits_from > q->n_computed ? q->logits_from : q->n_computed;
        rows = end > from ? end - from : 0;
    }
    return rows == 0 && end == q->n_tokens ? 1 : rows;
}

/* TAKE cut so Q's rows fit in one plus the step's extra rows left. */
static int fit_rows(const fy_sched *s, const fy_seq *q, int take)
{
    if (!q->prompt_logits || rows_of(q, take) <= 1 + s->batch.extra_rows) {
        return take;
    }
    int from = q->logits_from > q->n_computed ? q->logits_from : q->n_computed;
    /* Ending before the last token: rows = end - from. */
    return from - q->n_computed + 1 + s->batch.extra_rows;
}

static void schedule(fy_sched *s, fy_seq *q, int take)
{
    q->step_tokens = take;
    q->want_logits = rows_of(q, take);
    q->scheduled = 1;
    s->batch.seqs[s->batch.n++] = q;
    s->batch.n_tokens += take;
    s->batch.n_rows += q->want_logits;
    if (q->want_logits > 1) {
        s->batch.extra_rows -= q->want_logits - 1;
    }
}

/* The most tokens of Q that fit in the blocks available now (<= WANT). */
static int fit_tokens(const fy_sched *s, const fy_seq *q, int want)
{
    int lo = 0, hi = want;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (fy_kv_blocks_needed(s->kv, &q->table, q->n_computed + mid) <= fy_kv_available(s->kv)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

/* The newest running sequence after Q that is not in this step's batch. */
static fy_seq *victim_after(fy_sched *s, fy_seq *q)
{
    for (fy_seq *v = s->running.tail; v && v != q; v = v->prev) {
        if (!v->scheduled) {
            return v;
        }
    }
    return NULL;
}

/* Schedules running sequence Q for up to WANT tokens, preempting newer
 * sequences for blocks (DECODE: a decode must make progress; a prefill
 * chunk may shrink or wait instead of evicting itself). Returns 0, or 1
 * when Q itself left the running list. */
static int plan_running(fy_sched *s, fy_seq *q, int want, int decode)
{
    for (;;) {
        int take = fit_tokens(s, q, want);
        if (take == want || (!decode && take > 0)) {
            if (fy_kv_reserve(s->kv, &q->table, q->n_computed + take, &s->batch.cow) < 0) {
                return 0; /* out of memory or copy slots: try again next step */
            }
            schedule(s, q, take);
            return 0;
        }
        fy_seq *v = victim_after(s, q);
        if (v) {
            preempt(s, v);
            continue;
        }
        if (!decode) {
            return 0; /* waits for the decodes ahead of it to finish */
        }
        if (s->batch.n > 0 || s->running.n > 1) {
            preempt(s, q);
        } else {
            fail(s, q); /* alone and still no room: it can never fit */
        }
        return 1;
    }
}

/* Admits Q (waiting or preempted) if its first chunk fits. Returns 1 when admitted. */
static int admit(fy_sched *s, fy_seq *q, int budget)
{
    if (s->batch.n >= s->o.max_seqs || s->running_slots + q->n_group > s->o.max_seqs) {
        return 0;
    }
    /* Positions whose logits are wanted must be computed: the hit stops
     * before logits_from. */
    int lim = q->n_tokens;
    if (q->prompt_logits && q->logits_from + 1 < lim) {
        lim = q->logits_from > 0 ? q->logits_from + 1 : 1;
    }
    int hit = fy_kv_match_prefix(s->kv, &q->table, q->tokens, lim);
    if (hit < 0) {
        return 0;
    }
    int want = q->n_tokens - hit;
    int take = want < budget ? want : budget;
    q->n_computed = hit;
    take = fit_rows(s, q, take);
    if (fy_kv_blocks_needed(s->kv, &q->table, hit + take) > fy_kv_available(s->kv)) {
        /* Alone, a sequence starts with what fits (a pool smaller than one
         * step's chunk); otherwise it waits for room for the whole chunk. */
        take = s->running.n == 0 && s->batch.n == 0 ? fit_tokens(s, q, take) : 0;
        if (take < 1) {
            fy_kv_table_release(s->kv, &q->table);
            q->n_computed = 0;
            return 0;
        }
    }
    if (fy_kv_reserve(s->kv, &q->table, hit + take, &s->batch.cow) < 0) {
        fy_kv_table_release(s->kv, &q->table);
        q->n_computed = 0;
        return 0;
    }
    if (q->state == FY_SEQ_WAITING) {
        keyq_unlink(s, q);
    } else {
        list_unlink(&s->preempted, q);
    }
    fy_kv_count_prefix(s->kv, q->n_tokens, hit);
    if (!q->admitted) {
        q->cached_tokens = hit < q->n_prompt ? hit : q->n_prompt;
        q->admitted = 1;
    }
    q->state = FY_SEQ_RUNNING;
    list_append(&s->running, q);
    s->running_slots += q->n_group;
    schedule(s, q, take);
    return 1;
}

int fy_sched_step(fy_sched *s, fy_sched_batch **out)
{
    fy_sched_batch *b = &s->batch;
    for (int i = 0; i < b->n; i++) {
        b->seqs[i]->scheduled = 0;
        b->seqs[i]->step_tokens = 0;
    }
    fy_kv_cow_done(s->kv, &b->cow);
    b->n = b->n_tokens = b->n_failed = b->n_preempted = b->n_rows = 0;
    b->extra_rows = s->o.max_extra_rows;
    *out = b;

    /* 1. Decodes, oldest first. Preemption only removes sequences after Q,
     * so Q->next is read after planning Q. */
    for (fy_seq *q = s->running.head; q;) {
        if (q->n_tokens - q->n_computed != 1 || q->n_computed < q->n_prompt) {
            q = q->next;
            continue;
        }
        if (b->n >= s->o.max_seqs || b->n_tokens >= s->o.max_step_tokens) {
            break;
        }
        if (plan_running(s, q, 1, 1)) {
            break; /* Q had nothing after it and left: the pass is over */
        }
        q = q->next;
    }
    /* 2. Prefill chunks of sequences already running. */
    for (fy_seq *q = s->running.head; q;) {
        int budget = s->o.max_step_tokens - b->n_tokens;
        if (b->n >= s->o.max_seqs || budget <= 0) {
            break;
        }
        int want = q->n_tokens - q->n_computed;
        if (!q->scheduled && want > 0) {
            plan_running(s, q, fit_rows(s, q, want < budget ? want : budget), 0);
        }
        q = q->next;
    }
    /* 3. New and preempted sequences, unless this step had to preempt. */
    while (b->n_preempted == 0) {
        int budget = s->o.max_step_tokens - b->n_tokens;
        if (budget <= 0) {
            break;
        }
        fy_seq *q = s->preempted.head ? s->preempted.head : (s->rr ? s->rr->head : NULL);
        if (!q) {
            break;
        }
        fy__sched_keyq *k = q->state == FY_SEQ_WAITING ? q->keyq : NULL;
        fy__sched_keyq *after = k ? k->next : NULL;
        int last_of_key = k && k->head == q && k->tail == q;
        if (!admit(s, q, budget)) {
            break;
        }
        if (k) {
            /* Round-robin: the next admission comes from the next key. */
            s->rr = last_of_key ? s->rr : after;
        }
    }
    s->steps++;
    return b->n;
}

void fy_sched_commit(fy_sched *s)
{
    fy_sched_batch *b = &s->batch;
    for (int i = 0; i < b->n; i++) {
        fy_seq *q = b->seqs[i];
        q->n_computed += q->step_tokens;
        fy_kv_commit(s->kv, &q->table, q->tokens, q->n_computed);
    }
}

void fy_sched_get_stats(const fy_sched *s, fy_sched_stats *st)
{
    st->running = s->running.n;
    st->waiting = s->n_waiting;
    st->preempted_waiting = s->preempted.n;
    st->steps = s->steps;
    st->preemptions = s->preemptions;
}

int fy_sched_has_work(const fy_sched *s)
{
    return s->running.n > 0 || s->preempted.n > 0 || s->n_waiting > 0;
}
