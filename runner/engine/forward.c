/* forward.c: a Llama-family forward pass over the backend ops table (see
 * forward.h). One step: embeddings; per layer RMSNorm, q/k/v projections
 * (+bias for Qwen2), RoPE, K/V written to the paged cache, causal attention
 * over it, o projection and residual; RMSNorm, SiLU-gated MLP and residual;
 * then the final norm and lm_head only on the rows whose logits are wanted.
 *
 * Tensor parallelism (Megatron): with N ranks each rank holds its slice of
 * the heads and MLP columns and runs the same step on its own backend, rank 0
 * on the caller's thread and ranks 1..N-1 on threads of their own, in
 * lock-step. The o and down projections yield partial sums that the
 * communicator adds across ranks before the residual add, so every rank
 * keeps the same full residual stream. N == 1 is the same code with no
 * threads, no communicator and the weights used as loaded. */
#include "runner/engine/forward.h"

#include "common/err.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a rank's share of a weight is. */
enum { SPLIT_NONE = 0, SPLIT_COL, SPLIT_ROW };

/* Work the rank threads run in lock-step. */
enum { JOB_UPLOAD = 1, JOB_COMPUTE, JOB_COPY, JOB_QUIT };

/* Everything that lives on one rank's backend. */
typedef struct {
    int rank;
    fy_backend *be;
    const fy_backend_ops *ops;
    int n_heads, n_kv_heads, inter; /* this rank's share */
    void **kc, **vc;                /* [n_layers] */

    /* Weights as the backend sees them (the model's own, or slices of them, on
     * host-memory backends). norm and lm_head only on rank 0. */
    fy_tensor embed, norm, lm_head;
    fy_layer *layers;
    void **owned; /* copies to free */
    int n_owned;

    /* Backend scratch, sized for max_batch_tokens / max_seqs / the logit rows
     * (sel, logits and ids only on rank 0). */
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *sel, *logits, *inv_freq;
    int32_t *d_ids, *d_pos, *d_slots, *d_seq_start, *d_ctx_len, *d_rows, *d_bt, *d_cow, *d_out;
    size_t bt_cap, cow_cap; /* int32 elements */

    pthread_t thread; /* ranks > 0 */
    int started;
    int rc; /* result of the last job */
} fwd_rank;

struct fy_fwd {
    const fy_model *m;
    fy_fwd_options o;
    int n_ranks;
    fwd_rank *rk;  /* [n_ranks] */
    fy_comm *comm; /* NULL when n_ranks == 1 */
    int num_blocks;
    fy_dtype kv_dtype;        /* o.kv_dtype resolved */
    size_t layer_block_bytes; /* one block of one layer's K (or V) cache on one rank */

    /* Host staging for the step's arrays (shared read-only by the ranks). */
    int32_t *h_ids, *h_pos, *h_slots, *h_seq_start, *h_ctx_len, *h_rows, *h_bt;
    size_t h_bt_cap;

    /* The job being run (written by the caller before the ranks start it). */
    struct {
        int T, S, max_blocks, max_ctx, max_q, n_out;
        float *logits;      /* host: full logits out, or NULL */
        int32_t *ids;       /* host: argmax ids out, or NULL */
        const int32_t *src; /* copy_blocks */
        const int32_t *dst;
        int n_pairs;
    } job;

    /* Lock-step hand-off to ranks 1..N-1. */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen; /* bumped for each job */
    int kind;          /* JOB_* */
    int pending;       /* ranks still running the job */
    int sync_init;
};

size_t fy_fwd_kv_block_bytes(const fy_model *m, fy_dtype kv_dtype, int block_size)
{
    const fy_model_config *c = &m->cfg;
    return (size_t)c->n_layers * 2 * (size_t)block_size * (size_t)c->n_kv_heads *
           (size_t)c->head_dim * fy_dtype_size(kv_dtype);
}

size_t fy_fwd_block_bytes(const fy_model *m, const fy_backend *be, int block_size)
{
    return fy_fwd_kv_block_bytes(m, be->ops->kv_dtype, block_size);
}

fy_dtype fy_fwd_kv_dtype(const fy_fwd *f)
{
    return f->kv_dtype;
}

int fy_fwd_num_blocks(const fy_fwd *f)
{
    return f->num_blocks;
}

int fy_fwd_max_logit_rows(const fy_fwd *f)
{
    return f->o.max_logit_rows;
}

int fy_fwd_tensor_parallel(const fy_fwd *f)
{
    return f->n_ranks;
}

/* --- Weights ------------------------------------------------------------------------ */

/* Bytes of one row of COLS weights of T's type (the model loader has checked
 * that the row is whole blocks). */
static size_t row_bytes(const fy_tensor *t, int64_t cols)
{
    return fy_dtype_row_bytes(t->dtype, cols);
}

static size_t tensor_bytes(const fy_tensor *t)
{
    return (size_t)t->rows * row_bytes(t, t->cols);
}

static int own(fwd_rank *rk, void *p)
{
    rk->owned[rk->n_owned++] = p;
    return 0;
}

/* Copies host tensor SRC to the rank's backend (or uses it in place on host memory). */
static int place(fwd_rank *rk, const fy_tensor *src, fy_tensor *dst)
{
    *dst = *src;
    if (!src->data || rk->ops->host_memory) {
        return 0;
    }
    size_t n = tensor_bytes(src);
    void *p = rk->ops->alloc(rk->be, n);
    if (!p) {
        return FY_ENOMEM;
    }
    own(rk, p);
    dst->data = p;
    return rk->ops->upload(rk->be, p, src->data, n);
}

/* Rank RK's slice of SRC: SPLIT_COL takes rows [r*R/N, (r+1)*R/N) (of a 1-D
 * tensor, its elements), SPLIT_ROW columns [r*C/N, (r+1)*C/N) of every row.
 * A row slice is contiguous and used in place on host memory; a column slice
 * is copied (on device backends the communicator's shard op, when it has one,
 * copies it without host staging). */
static int place_split(fy_fwd *f, fwd_rank *rk, const fy_tensor *src, int split, fy_tensor *dst,
                       char *err, size_t errlen)
{
    int N = f->n_ranks;
    if (src->data && !(rk->ops->weight_dtypes & 1u << src->dtype)) {
        /* Before the first matmul, with the message naming what is missing. */
        return fy_fail(err, errlen, FY_ENOTSUP,
                       "the %s backend has no kernels for %s weights (a %lld x %lld tensor of "
                       "this model): serve it with --device cpu",
                       rk->ops->name, fy_dtype_name(src->dtype), (long long)src->rows,
                       (long long)src->cols);
    }
    if (!src->data || N == 1 || split == SPLIT_NONE) {
        return place(rk, src, dst);
    }
    int column = split == SPLIT_COL;
    if (!rk->ops->host_memory && f->comm->ops->shard) {
        int rc = f->comm->ops->shard(f->comm, rk->rank, src, column, dst, err, errlen);
        return rc < 0 ? rc : own(rk, (void *)dst->data);
    }
    int64_t rows = src->rows, cols = src->cols, r0 = 0, c0 = 0;
    if (column && rows > 1) {
        rows /= N;
        r0 = rows * rk->rank;
    } else {
        cols /= N;
        c0 = cols * rk->rank;
        if (cols % fy_dtype_block_weights(src->dtype)) {
            snprintf(err, errlen,
                     "tensor parallel %d: a %s tensor's rows of %lld weights do not split into "
                     "whole blocks of %u",
                     N, fy_dtype_name(src->dtype), (long long)src->cols,
                     fy_dtype_block_weights(src->dtype));
            return FY_ENOTSUP;
        }
    }
    *dst = (fy_tensor){NULL, src->dtype, rows, cols};
    const char *base =
        (const char *)src->data + (size_t)r0 * row_bytes(src, src->cols) + row_bytes(src, c0);
    size_t bytes = (size_t)rows * row_bytes(src, cols);
    if (cols == src->cols) { /* contiguous */
        if (rk->ops->host_memory) {
            dst->data = base;
            return 0;
        }
        fy_tensor whole = {base, src->dtype, rows, cols};
        return place(rk, &whole, dst);
    }
    void *p = rk->ops->alloc(rk->be, bytes);
    if (!p) {
        return FY_ENOMEM;
    }
    own(rk, p);
    dst->data = p;
    char *stage = rk->ops->host_memory ? p : malloc(bytes);
    if (!stage) {
        return FY_ENOMEM;
    }
    size_t rb = row_bytes(src, cols), src_stride = row_bytes(src, src->cols);
    for (int64_t r = 0; r < rows; r++) {
        memcpy(stage + (size_t)r * rb, base + (size_t)r * src_stride, rb);
    }
    int rc = 0;
    if (stage != p) {
        rc = rk->ops->upload(rk->be, p, stage, bytes);
        free(stage);
    }
    return rc;
}

static int place_weights(fy_fwd *f, fwd_rank *rk, char *err, size_t errlen)
{
    const fy_model *m = f->m;
    int n = m->cfg.n_layers, rc;
    rk->layers = calloc((size_t)n, sizeof *rk->layers);
    rk->owned = calloc((size_t)n * 14 + 3, sizeof *rk->owned);
    if (!rk->layers || !rk->owned) {
        return FY_ENOMEM;
    }
    if ((rc = place_split(f, rk, &m->embed, SPLIT_NONE, &rk->embed, err, errlen)) < 0) {
        return rc;
    }
    if (rk->rank == 0) {
        if ((rc = place_split(f, rk, &m->norm, SPLIT_NONE, &rk->norm, err, errlen)) < 0) {
            return rc;
        }
        if (m->lm_head.data == m->embed.data) {
            rk->lm_head = rk->embed;
        } else if ((rc = place_split(f, rk, &m->lm_head, SPLIT_NONE, &rk->lm_head, err, errlen)) <
                   0) {
            return rc;
        }
    }
    for (int i = 0; i < n; i++) {
        const fy_layer *s = &m->layers[i];
        fy_layer *d = &rk->layers[i];
        const struct {
            const fy_tensor *src;
            fy_tensor *dst;
            int split;
        } t[] = {
            {&s->attn_norm, &d->attn_norm, SPLIT_NONE},
            {&s->q, &d->q, SPLIT_COL},
            {&s->k, &d->k, SPLIT_COL},
            {&s->v, &d->v, SPLIT_COL},
            {&s->q_bias, &d->q_bias, SPLIT_COL},
            {&s->k_bias, &d->k_bias, SPLIT_COL},
            {&s->v_bias, &d->v_bias, SPLIT_COL},
            {&s->q_norm, &d->q_norm, SPLIT_NONE},
            {&s->k_norm, &d->k_norm, SPLIT_NONE},
            {&s->o, &d->o, SPLIT_ROW},
            {&s->mlp_norm, &d->mlp_norm, SPLIT_NONE},
            {&s->gate, &d->gate, SPLIT_COL},
            {&s->up, &d->up, SPLIT_COL},
            {&s->down, &d->down, SPLIT_ROW},
        };
        for (size_t j = 0; j < sizeof t / sizeof t[0]; j++) {
            if ((rc = place_split(f, rk, t[j].src, t[j].split, t[j].dst, err, errlen)) < 0) {
                return rc;
            }
        }
    }
    return 0;
}

/* --- Scratch and cache ------------------------------------------------------------- */

static void *balloc(fwd_rank *rk, size_t n, size_t elem, int *ok)
{
    void *p = rk->ops->alloc(rk->be, n * elem);
    if (!p) {
        *ok = 0;
    }
    return p;
}

static int alloc_scratch(fy_fwd *f, fwd_rank *rk)
{
    const fy_model_config *c = &f->m->cfg;
    size_t T = (size_t)f->o.max_batch_tokens, S = (size_t)f->o.max_seqs, H = (size_t)c->hidden;
    size_t R = (size_t)f->o.max_logit_rows;
    size_t Q = (size_t)rk->n_heads * c->head_dim, KV = (size_t)rk->n_kv_heads * c->head_dim;
    size_t I = (size_t)rk->inter, V = (size_t)c->vocab_size;
    int ok = 1;
    rk->x = balloc(rk, T * H, 4, &ok);
    rk->xn = balloc(rk, T * H, 4, &ok);
    rk->q = balloc(rk, T * Q, 4, &ok);
    rk->att = balloc(rk, T * Q, 4, &ok);
    rk->k = balloc(rk, T * KV, 4, &ok);
    rk->v = balloc(rk, T * KV, 4, &ok);
    rk->gate = balloc(rk, T * I, 4, &ok);
    rk->up = balloc(rk, T * I, 4, &ok);
    if (rk->rank == 0) {
        rk->sel = balloc(rk, R * H, 4, &ok);
        rk->logits = balloc(rk, R * V, 4, &ok);
        rk->d_rows = balloc(rk, R, 4, &ok);
        rk->d_out = balloc(rk, R, 4, &ok);
    }
    rk->inv_freq = balloc(rk, (size_t)c->head_dim / 2, 4, &ok);
    rk->d_ids = balloc(rk, T, 4, &ok);
    rk->d_pos = balloc(rk, T, 4, &ok);
    rk->d_slots = balloc(rk, T, 4, &ok);
    rk->d_seq_start = balloc(rk, S + 1, 4, &ok);
    rk->d_ctx_len = balloc(rk, S, 4, &ok);
    if (!ok) {
        return FY_ENOMEM;
    }
    float *inv = malloc((size_t)c->head_dim / 2 * sizeof *inv);
    if (!inv) {
        return FY_ENOMEM;
    }
    fy_model_rope_inv_freq(c, inv);
    int rc = rk->ops->upload(rk->be, rk->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof *inv);
    free(inv);
    return rc < 0 ? rc : rk->ops->sync(rk->be);
}

static int alloc_host(fy_fwd *f)
{
    size_t T = (size_t)f->o.max_batch_tokens, S = (size_t)f->o.max_seqs;
    f->h_ids = calloc(T, 4);
    f->h_pos = calloc(T, 4);
    f->h_slots = calloc(T, 4);
    f->h_seq_start = calloc(S + 1, 4);
    f->h_ctx_len = calloc(S, 4);
    f->h_rows = calloc((size_t)f->o.max_logit_rows, 4);
    return f->h_ids && f->h_pos && f->h_slots && f->h_seq_start && f->h_ctx_len && f->h_rows
               ? 0
               : FY_ENOMEM;
}

static int alloc_cache(fy_fwd *f, fwd_rank *rk)
{
    int n = f->m->cfg.n_layers;
    rk->kc = calloc((size_t)n, sizeof *rk->kc);
    rk->vc = calloc((size_t)n, sizeof *rk->vc);
    if (!rk->kc || !rk->vc) {
        return FY_ENOMEM;
    }
    size_t bytes = f->layer_block_bytes * (size_t)f->num_blocks;
    for (int i = 0; i < n; i++) {
        rk->kc[i] = rk->ops->alloc(rk->be, bytes);
        rk->vc[i] = rk->ops->alloc(rk->be, bytes);
        if (!rk->kc[i] || !rk->vc[i]) {
            return FY_ENOMEM;
        }
    }
    return 0;
}

static void free_rank(const fy_fwd *f, fwd_rank *rk)
{
    if (!rk->be) {
        return;
    }
    fy_backend *be = rk->be;
    void (*bfree)(fy_backend *, void *) = rk->ops->free;
    for (int i = 0; rk->kc && i < f->m->cfg.n_layers; i++) {
        bfree(be, rk->kc[i]);
        bfree(be, rk->vc[i]);
    }
    free(rk->kc);
    free(rk->vc);
    for (int i = 0; i < rk->n_owned; i++) {
        bfree(be, rk->owned[i]);
    }
    free(rk->owned);
    free(rk->layers);
    void *dev[] = {rk->x,         rk->xn,     rk->q,     rk->k,       rk->v,
                   rk->att,       rk->gate,   rk->up,    rk->sel,     rk->logits,
                   rk->inv_freq,  rk->d_ids,  rk->d_pos, rk->d_slots, rk->d_seq_start,
                   rk->d_ctx_len, rk->d_rows, rk->d_bt,  rk->d_cow,   rk->d_out};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) {
        bfree(be, dev[i]);
    }
}

/* --- The step on one rank ------------------------------------------------------------ */

/* Grows the rank's int32 buffer *P (capacity *CAP elements) to hold N. */
static int grow_dev(fwd_rank *rk, int32_t **p, size_t *cap, size_t n)
{
    if (n <= *cap) {
        return 0;
    }
    size_t nc = n < 256 ? 256 : n + n / 2;
    int32_t *q = rk->ops->alloc(rk->be, nc * sizeof *q);
    if (!q) {
        return FY_ENOMEM;
    }
    rk->ops->free(rk->be, *p);
    *p = q;
    *cap = nc;
    return 0;
}

static int upload_batch(const fy_fwd *f, fwd_rank *rk)
{
    const fy_backend_ops *o = rk->ops;
    fy_backend *be = rk->be;
    int T = f->job.T, S = f->job.S, n_out = f->job.n_out, rc;
    size_t bt = (size_t)S * (size_t)f->job.max_blocks;
    if ((rc = grow_dev(rk, &rk->d_bt, &rk->bt_cap, bt)) < 0) {
        return rc;
    }
    if ((rc = o->upload(be, rk->d_ids, f->h_ids, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, rk->d_pos, f->h_pos, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, rk->d_slots, f->h_slots, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, rk->d_seq_start, f->h_seq_start, (size_t)(S + 1) * 4)) < 0 ||
        (rc = o->upload(be, rk->d_ctx_len, f->h_ctx_len, (size_t)S * 4)) < 0 ||
        (rc = o->upload(be, rk->d_bt, f->h_bt, bt * 4)) < 0) {
        return rc;
    }
    return n_out && rk->rank == 0 ? o->upload(be, rk->d_rows, f->h_rows, (size_t)n_out * 4) : 0;
}

/* Adds the ranks' partial sums of a row-parallel projection (no-op for N == 1). */
static void all_reduce(const fy_fwd *f, const fwd_rank *rk, float *buf, size_t n)
{
    if (f->comm) {
        f->comm->ops->all_reduce(f->comm, rk->rank, buf, n);
    }
}

static void run_layer(const fy_fwd *f, fwd_rank *rk, int l, int T, const fy_attn_batch *b,
                      const fy_attn_shape *sh)
{
    const fy_backend_ops *o = rk->ops;
    fy_backend *be = rk->be;
    const fy_model_config *c = &f->m->cfg;
    const fy_layer *L = &rk->layers[l];
    size_t TH = (size_t)T * c->hidden;
    o->rmsnorm(be, rk->xn, rk->x, &L->attn_norm, T, c->hidden, c->rms_eps);
    o->matmul(be, rk->q, rk->xn, &L->q, &L->q_bias, T);
    o->matmul(be, rk->k, rk->xn, &L->k, &L->k_bias, T);
    o->matmul(be, rk->v, rk->xn, &L->v, &L->v_bias, T);
    if (L->q_norm.data) { /* per head: rows of head_dim */
        o->rmsnorm(be, rk->q, rk->q, &L->q_norm, T * rk->n_heads, c->head_dim, c->rms_eps);
        o->rmsnorm(be, rk->k, rk->k, &L->k_norm, T * rk->n_kv_heads, c->head_dim, c->rms_eps);
    }
    o->rope(be, rk->q, rk->k, rk->d_pos, T, rk->n_heads, rk->n_kv_heads, c->head_dim, rk->inv_freq,
            c->rope_pairs);
    o->cache_write(be, rk->kc[l], rk->vc[l], rk->k, rk->v, b, sh);
    o->attention(be, rk->att, rk->q, rk->kc[l], rk->vc[l], b, sh);
    o->matmul(be, rk->xn, rk->att, &L->o, NULL, T);
    all_reduce(f, rk, rk->xn, TH);
    o->add(be, rk->x, rk->x, rk->xn, TH);
    o->rmsnorm(be, rk->xn, rk->x, &L->mlp_norm, T, c->hidden, c->rms_eps);
    o->matmul(be, rk->gate, rk->xn, &L->gate, NULL, T);
    o->matmul(be, rk->up, rk->xn, &L->up, NULL, T);
    o->silu_mul(be, rk->gate, rk->gate, rk->up, T, rk->inter);
    o->matmul(be, rk->xn, rk->gate, &L->down, NULL, T);
    all_reduce(f, rk, rk->xn, TH);
    o->add(be, rk->x, rk->x, rk->xn, TH);
}

static int compute(const fy_fwd *f, fwd_rank *rk)
{
    const fy_model_config *c = &f->m->cfg;
    const fy_backend_ops *o = rk->ops;
    fy_backend *be = rk->be;
    int T = f->job.T, n_out = f->job.n_out, rc;
    fy_attn_batch b = {
        .n_tokens = T,
        .n_seqs = f->job.S,
        .positions = rk->d_pos,
        .slots = rk->d_slots,
        .seq_start = rk->d_seq_start,
        .ctx_len = rk->d_ctx_len,
        .block_tables = rk->d_bt,
        .max_blocks = f->job.max_blocks,
        .max_ctx_len = f->job.max_ctx,
        .max_query_len = f->job.max_q,
        .host_seq_start = f->h_seq_start,
        .host_ctx_len = f->h_ctx_len,
    };
    fy_attn_shape sh = {
        rk->n_heads, rk->n_kv_heads, c->head_dim, f->o.block_size, 1.0f / sqrtf((float)c->head_dim),
        f->kv_dtype};
    o->embed(be, rk->x, &rk->embed, rk->d_ids, T);
    for (int l = 0; l < c->n_layers; l++) {
        run_layer(f, rk, l, T, &b, &sh);
    }
    if (rk->rank == 0 && n_out > 0) {
        o->gather_rows(be, rk->sel, rk->x, rk->d_rows, n_out, c->hidden);
        o->rmsnorm(be, rk->sel, rk->sel, &rk->norm, n_out, c->hidden, c->rms_eps);
        o->matmul(be, rk->logits, rk->sel, &rk->lm_head, NULL, n_out);
        if (f->job.ids) {
            o->argmax(be, rk->d_out, rk->logits, n_out, c->vocab_size);
            rc = o->download(be, f->job.ids, rk->d_out, (size_t)n_out * sizeof(int32_t));
        } else {
            rc = o->download(be, f->job.logits, rk->logits,
                             (size_t)n_out * (size_t)c->vocab_size * sizeof(float));
        }
        if (rc < 0) {
            return rc;
        }
    }
    return o->sync(be);
}

static int copy_blocks(const fy_fwd *f, fwd_rank *rk)
{
    int n = f->job.n_pairs;
    int rc = grow_dev(rk, &rk->d_cow, &rk->cow_cap, 2 * (size_t)n);
    if (rc < 0 || (rc = rk->ops->upload(rk->be, rk->d_cow, f->job.src, (size_t)n * 4)) < 0 ||
        (rc = rk->ops->upload(rk->be, rk->d_cow + n, f->job.dst, (size_t)n * 4)) < 0) {
        return rc;
    }
    for (int l = 0; l < f->m->cfg.n_layers; l++) {
        rk->ops->block_copy(rk->be, rk->kc[l], rk->vc[l], rk->d_cow, rk->d_cow + n, n,
                            f->layer_block_bytes);
    }
    return rk->ops->sync(rk->be);
}

static int rank_job(const fy_fwd *f, fwd_rank *rk, int kind)
{
    switch (kind) {
    case JOB_UPLOAD:
        return upload_batch(f, rk);
    case JOB_COMPUTE:
        return compute(f, rk);
    case JOB_COPY:
        return copy_blocks(f, rk);
    }
    return 0;
}

/* --- Lock-step ranks --------------------------------------------------------------- */

typedef struct {
    fy_fwd *f;
    int rank;
} rank_arg;

static void *rank_main(void *arg)
{
    fy_fwd *f = ((rank_arg *)arg)->f;
    fwd_rank *rk = &f->rk[((rank_arg *)arg)->rank];
    free(arg);
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        while (f->gen == seen) {
            pthread_cond_wait(&f->go, &f->mu);
        }
        seen = f->gen;
        int kind = f->kind;
        pthread_mutex_unlock(&f->mu);
        if (kind == JOB_QUIT) {
            return NULL;
        }
        int rc = rank_job(f, rk, kind);
        pthread_mutex_lock(&f->mu);
        rk->rc = rc;
        if (--f->pending == 0) {
            pthread_cond_signal(&f->done);
        }
        pthread_mutex_unlock(&f->mu);
    }
}

/* Runs job KIND on every rank (rank 0 here) and waits for all; returns the
 * first rank's error, or 0. */
static int run_all(fy_fwd *f, int kind)
{
    if (f->n_ranks == 1) {
        return rank_job(f, &f->rk[0], kind);
    }
    pthread_mutex_lock(&f->mu);
    f->kind = kind;
    f->pending = f->n_ranks - 1;
    f->gen++;
    pthread_cond_broadcast(&f->go);
    pthread_mutex_unlock(&f->mu);
    int rc = rank_job(f, &f->rk[0], kind);
    pthread_mutex_lock(&f->mu);
    while (f->pending > 0) {
        pthread_cond_wait(&f->done, &f->mu);
    }
    pthread_mutex_unlock(&f->mu);
    for (int r = 1; r < f->n_ranks && rc == 0; r++) {
        rc = f->rk[r].rc;
    }
    return rc;
}

static int start_ranks(fy_fwd *f)
{
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->go, NULL);
    pthread_cond_init(&f->done, NULL);
    f->sync_init = 1;
    for (int r = 1; r < f->n_ranks; r++) {
        rank_arg *a = malloc(sizeof *a);
        if (!a) {
            return FY_ENOMEM;
        }
        *a = (rank_arg){f, r};
        if (pthread_create(&f->rk[r].thread, NULL, rank_main, a) != 0) {
            free(a);
            return FY_ENOMEM;
        }
        f->rk[r].started = 1;
    }
    return 0;
}

static void stop_ranks(fy_fwd *f)
{
    if (!f->sync_init) {
        return;
    }
    pthread_mutex_lock(&f->mu);
    f->kind = JOB_QUIT;
    f->gen++;
    pthread_cond_broadcast(&f->go);
    pthread_mutex_unlock(&f->mu);
    for (int r = 1; r < f->n_ranks; r++) {
        if (f->rk[r].started) {
            pthread_join(f->rk[r].thread, NULL);
        }
    }
    pthread_cond_destroy(&f->go);
    pthread_cond_destroy(&f->done);
    pthread_mutex_destroy(&f->mu);
}

/* --- Create / destroy ------------------------------------------------------------- */

static int check_options(const fy_model *m, fy_backend *be, const fy_fwd_options *o,
                         fy_dtype *kv_dtype, char *err, size_t errlen)
{
    const fy_model_config *c = &m->cfg;
    int N = o->tensor_parallel > 1 ? o->tensor_parallel : 1;
    if (o->block_size < 1 || o->block_size > 1024 || o->max_batch_tokens < 1 ||
        o->max_batch_tokens > (1 << 20) || o->max_seqs < 1 || o->max_seqs > o->max_batch_tokens) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "forward: block_size %d, max_batch_tokens %d, max_seqs %d out of range",
                       o->block_size, o->max_batch_tokens, o->max_seqs);
    }
    if (o->tensor_parallel < 0 || o->tensor_parallel > FY_COMM_MAX) {
        return fy_fail(err, errlen, FY_EINVAL, "--tensor-parallel %d: must be between 1 and %d",
                       o->tensor_parallel, FY_COMM_MAX);
    }
    int rc = fy_kv_dtype_parse(o->kv_dtype, be->ops, kv_dtype, err, errlen);
    if (rc < 0) {
        return rc;
    }
    if (c->n_heads % N || c->n_kv_heads % N || c->intermediate % N) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "--tensor-parallel %d: the model's attention heads (%d), key/value heads "
                       "(%d) and intermediate_size (%d) must all divide by %d",
                       N, c->n_heads, c->n_kv_heads, c->intermediate, N);
    }
    if (o->kv_mem_fraction != 0.0) {
        if (!(o->kv_mem_fraction > 0.0 && o->kv_mem_fraction <= 1.0)) {
            return fy_fail(err, errlen, FY_EINVAL, "--gpu-memory-utilization %g: must be in (0, 1]",
                           o->kv_mem_fraction);
        }
        if (be->ops->mem_free(be) == 0) {
            return fy_fail(err, errlen, FY_EINVAL,
                           "--gpu-memory-utilization needs a GPU backend; use --kv-cache-memory "
                           "(backend %s reports no device memory)",
                           be->ops->name);
        }
        return 0;
    }
    size_t bb = fy_fwd_kv_block_bytes(m, *kv_dtype, o->block_size);
    if (o->kv_bytes / bb < 1) {
        return fy_fail(err, errlen, FY_EINVAL,
                       "forward: KV cache memory %zu bytes holds no block (one block of %d tokens "
                       "needs %zu bytes)",
                       o->kv_bytes, o->block_size, bb);
    }
    if (o->kv_bytes / bb > INT32_MAX / (size_t)o->block_size) {
        return fy_fail(err, errlen, FY_EINVAL, "forward: KV cache of %zu bytes is too large",
                       o->kv_bytes);
    }
    return 0;
}

static int make_comm(fy_backend *be, int n, fy_comm **out, char *err, size_t errlen)
{
    if (strcmp(be->ops->name, "cpu") == 0) {
        return fy_cpu_comm_create(be, n, 0, out, err, errlen);
    }
#ifdef FY_HAVE_CUDA
    if (strcmp(be->ops->name, "cuda") == 0) {
        return fy_cuda_comm_create(be, n, out, err, errlen);
    }
#endif
    return fy_fail(err, errlen, FY_ENOTSUP, "--tensor-parallel %d: not supported on backend %s", n,
                   be->ops->name);
}

/* Blocks that the fraction F of every rank's free memory holds (after the
 * weights and scratch are in place). */
static int blocks_from_fraction(fy_fwd *f, char *err, size_t errlen)
{
    size_t rank_block = f->layer_block_bytes * 2 * (size_t)f->m->cfg.n_layers, best = SIZE_MAX;
    int worst = 0;
    size_t worst_free = 0;
    for (int r = 0; r < f->n_ranks; r++) {
        fwd_rank *rk = &f->rk[r];
        size_t fr = rk->ops->mem_free(rk->be);
        size_t blocks = (size_t)((double)fr * f->o.kv_mem_fraction) / rank_block;
        if (blocks < best) {
            best = blocks;
            worst = r;
            worst_free = fr;
        }
    }
    if (best < 1) {
        return fy_fail(err, errlen, FY_ENOMEM,
                       "--gpu-memory-utilization %g: rank %d (%s) has %zu bytes free after the "
                       "weights, too little for one KV block of %d tokens (%zu bytes)",
                       f->o.kv_mem_fraction, worst, f->rk[worst].ops->name, worst_free,
                       f->o.block_size, rank_block);
    }
    size_t cap = INT32_MAX / (size_t)f->o.block_size;
    f->num_blocks = (int)(best < cap ? best : cap);
    return 0;
}

static int create_ranks(fy_fwd *f, char *err, size_t errlen)
{
    const fy_model_config *c = &f->m->cfg;
    int rc;
    for (int r = 0; r < f->n_ranks; r++) {
        fwd_rank *rk = &f->rk[r];
        rk->rank = r;
        rk->be = f->comm ? f->comm->be[r] : f->rk[0].be;
        rk->ops = rk->be->ops;
        rk->n_heads = c->n_heads / f->n_ranks;
        rk->n_kv_heads = c->n_kv_heads / f->n_ranks;
        rk->inter = c->intermediate / f->n_ranks;
        char why[256] = "", where[32] = "";
        if (f->n_ranks > 1) {
            snprintf(where, sizeof where, " rank %d", r);
        }
        if ((rc = place_weights(f, rk, why, sizeof why)) < 0 || (rc = alloc_scratch(f, rk)) < 0) {
            return fy_fail(err, errlen, rc,
                           "forward: cannot place the weights or scratch on %s%s: %s",
                           rk->ops->name, where, why[0] ? why : fy_strerror(rc));
        }
    }
    if (f->o.kv_mem_fraction != 0.0 && (rc = blocks_from_fraction(f, err, errlen)) < 0) {
        return rc;
    }
    for (int r = 0; r < f->n_ranks; r++) {
        if ((rc = alloc_cache(f, &f->rk[r])) < 0) {
            return fy_fail(err, errlen, rc,
                           "forward: cannot allocate a KV cache of %d blocks (%zu bytes) on %s: %s",
                           f->num_blocks,
                           f->layer_block_bytes * 2 * (size_t)c->n_layers * (size_t)f->num_blocks,
                           f->rk[r].ops->name, fy_strerror(rc));
        }
    }
    return 0;
}

int fy_fwd_create(const fy_model *m, fy_backend *be, const fy_fwd_options *o, fy_fwd **out,
                  char *err, size_t errlen)
{
    *out = NULL;
    fy_dtype kv_dtype;
    int rc = check_options(m, be, o, &kv_dtype, err, errlen);
    if (rc < 0) {
        return rc;
    }
    fy_fwd *f = calloc(1, sizeof *f);
    int N = o->tensor_parallel > 1 ? o->tensor_parallel : 1;
    if (f) {
        f->rk = calloc((size_t)N, sizeof *f->rk);
    }
    if (!f || !f->rk) {
        free(f);
        return fy_fail(err, errlen, FY_ENOMEM, "forward: out of memory");
    }
    f->m = m;
    f->o = *o;
    f->o.kv_dtype = NULL; /* the caller's string need not outlive this call */
    f->kv_dtype = kv_dtype;
    if (f->o.max_logit_rows < f->o.max_seqs) {
        f->o.max_logit_rows = f->o.max_seqs;
    }
    if (f->o.max_logit_rows > f->o.max_batch_tokens) {
        f->o.max_logit_rows = f->o.max_batch_tokens; /* a row is a token of the step */
    }
    f->n_ranks = N;
    f->rk[0].be = be;
    size_t bb = fy_fwd_kv_block_bytes(m, kv_dtype, o->block_size);
    f->layer_block_bytes = bb / ((size_t)m->cfg.n_layers * 2 * (size_t)N);
    f->num_blocks = o->kv_mem_fraction != 0.0 ? 0 : (int)(o->kv_bytes / bb);
    if (N > 1 && (rc = make_comm(be, N, &f->comm, err, errlen)) < 0) {
        fy_fwd_destroy(f);
        return rc;
    }
    if ((rc = alloc_host(f)) < 0) {
        fy_fwd_destroy(f);
        return fy_fail(err, errlen, rc, "forward: out of memory");
    }
    if ((rc = create_ranks(f, err, errlen)) < 0) {
        fy_fwd_destroy(f);
        return rc;
    }
    if (N > 1 && (rc = start_ranks(f)) < 0) {
        fy_fwd_destroy(f);
        return fy_fail(err, errlen, rc, "forward: cannot start %d rank threads", N - 1);
    }
    *out = f;
    return 0;
}

void fy_fwd_destroy(fy_fwd *f)
{
    if (!f) {
        return;
    }
    stop_ranks(f);
    for (int r = 0; f->rk && r < f->n_ranks; r++) {
        free_rank(f, &f->rk[r]);
    }
    fy_comm_destroy(f->comm);
    free(f->rk);
    free(f->h_ids);
    free(f->h_pos);
    free(f->h_slots);
    free(f->h_seq_start);
    free(f->h_ctx_len);
    free(f->h_rows);
    free(f->h_bt);
    free(f);
}

/* --- Steps --------------------------------------------------------------------------- */

/* Checks the step and fills the host arrays and f->job's shape; returns T or
 * an FY_E* code. */
static int build_batch(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs)
{
    const fy_model_config *c = &f->m->cfg;
    int bs = f->o.block_size, T = 0, max_blocks = 1, max_ctx = 0, max_q = 0, n_out = 0;
    if (n_seqs < 1 || n_seqs > f->o.max_seqs || !seqs) {
        return FY_EINVAL;
    }
    for (int s = 0; s < n_seqs; s++) {
        const fy_fwd_seq *q = &seqs[s];
        if (q->n_tokens < 1 || q->start < 0 || q->n_tokens > f->o.max_batch_tokens - T ||
            q->start > INT32_MAX - q->n_tokens || !q->tokens || !q->block_table ||
            q->want_logits < 0 || q->want_logits > q->n_tokens ||
            q->want_logits > f->o.max_logit_rows - n_out) {
            return FY_EINVAL;
        }
        int ctx = q->start + q->n_tokens;
        int need = (ctx + bs - 1) / bs;
        if (q->n_blocks < need) {
            return FY_EINVAL;
        }
        for (int i = 0; i < need; i++) {
            if (q->block_table[i] < 0 || q->block_table[i] >= f->num_blocks) {
                return FY_EINVAL;
            }
        }
        max_blocks = need > max_blocks ? need : max_blocks;
        max_ctx = ctx > max_ctx ? ctx : max_ctx;
        max_q = q->n_tokens > max_q ? q->n_tokens : max_q;
        f->h_seq_start[s] = T;
        f->h_ctx_len[s] = ctx;
        for (int i = 0; i < q->n_tokens; i++, T++) {
            int p = q->start + i;
            if (q->tokens[i] < 0 || q->tokens[i] >= c->vocab_size) {
                return FY_EINVAL;
            }
            f->h_ids[T] = q->tokens[i];
            f->h_pos[T] = p;
            f->h_slots[T] = q->block_table[p / bs] * bs + p % bs;
        }
        for (int i = T - q->want_logits; i < T; i++) {
            f->h_rows[n_out++] = i;
        }
    }
    f->h_seq_start[n_seqs] = T;
    size_t need = (size_t)n_seqs * (size_t)max_blocks;
    if (need > f->h_bt_cap) {
        int32_t *nb = realloc(f->h_bt, need * sizeof *nb);
        if (!nb) {
            return FY_ENOMEM;
        }
        f->h_bt = nb;
        f->h_bt_cap = need;
    }
    for (int s = 0; s < n_seqs; s++) {
        int32_t *row = f->h_bt + (size_t)s * max_blocks;
        int need_s = (f->h_ctx_len[s] + bs - 1) / bs;
        memcpy(row, seqs[s].block_table, (size_t)need_s * sizeof *row);
        for (int i = need_s; i < max_blocks; i++) {
            row[i] = 0; /* never read: past the sequence's context */
        }
    }
    f->job.T = T;
    f->job.S = n_seqs;
    f->job.max_blocks = max_blocks;
    f->job.max_ctx = max_ctx;
    f->job.max_q = max_q;
    f->job.n_out = n_out;
    return T;
}

static int step(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, float *logits, int32_t *ids)
{
    int rc = build_batch(f, seqs, n_seqs);
    if (rc < 0) {
        return rc;
    }
    if (f->job.n_out > 0 && !logits && !ids) {
        return FY_EINVAL;
    }
    f->job.logits = logits;
    f->job.ids = ids;
    if ((rc = run_all(f, JOB_UPLOAD)) < 0) {
        return rc;
    }
    return run_all(f, JOB_COMPUTE);
}

int fy_fwd_step(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, float *logits)
{
    return step(f, seqs, n_seqs, logits, NULL);
}

int fy_fwd_step_argmax(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, int32_t *ids)
{
    return step(f, seqs, n_seqs, NULL, ids);
}

int fy_fwd_copy_blocks(fy_fwd *f, const int32_t *src, const int32_t *dst, int n)
{
    if (n <= 0) {
        return n == 0 ? 0 : FY_EINVAL;
    }
    for (int i = 0; i < n; i++) {
        if (src[i] < 0 || src[i] >= f->num_blocks || dst[i] < 0 || dst[i] >= f->num_blocks) {
            return FY_EINVAL;
        }
    }
    f->job.src = src;
    f->job.dst = dst;
    f->job.n_pairs = n;
    return run_all(f, JOB_COPY);
}
