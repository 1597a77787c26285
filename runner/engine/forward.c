/* forward.c: a Llama-family forward pass over the backend ops table (see
 * forward.h). One step: embeddings; per layer RMSNorm, q/k/v projections
 * (+bias for Qwen2), RoPE, K/V written to the paged cache, causal attention
 * over it, o projection and residual; RMSNorm, SiLU-gated MLP and residual;
 * then the final norm and lm_head only on the rows whose logits are wanted. */
#include "runner/engine/forward.h"

#include "common/err.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fy_fwd {
    const fy_model *m;
    fy_backend *be;
    const fy_backend_ops *ops;
    fy_fwd_options o;
    int num_blocks;
    size_t layer_block_bytes; /* one block of one layer's K (or V) cache */
    void **kc, **vc;          /* [n_layers] */

    /* Weights as the backend sees them (the model's own on host-memory backends). */
    fy_tensor embed, norm, lm_head;
    fy_layer *layers;
    void **owned; /* uploaded copies to free */
    int n_owned;

    /* Backend scratch, sized for max_batch_tokens / max_seqs. */
    float *x, *xn, *q, *k, *v, *att, *gate, *up, *sel, *logits, *inv_freq;
    int32_t *d_ids, *d_pos, *d_slots, *d_seq_start, *d_ctx_len, *d_rows, *d_bt, *d_cow;
    size_t bt_cap, cow_cap; /* int32 elements */

    /* Host staging for the same arrays. */
    int32_t *h_ids, *h_pos, *h_slots, *h_seq_start, *h_ctx_len, *h_rows, *h_bt;
    size_t h_bt_cap;
};

static int ffail(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int ffail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

size_t fy_fwd_block_bytes(const fy_model *m, const fy_backend *be, int block_size)
{
    const fy_model_config *c = &m->cfg;
    return (size_t)c->n_layers * 2 * (size_t)block_size * (size_t)c->n_kv_heads *
           (size_t)c->head_dim * fy_dtype_size(be->ops->kv_dtype);
}

int fy_fwd_num_blocks(const fy_fwd *f)
{
    return f->num_blocks;
}

static size_t tensor_bytes(const fy_tensor *t)
{
    return (size_t)t->rows * (size_t)t->cols * fy_dtype_size(t->dtype);
}

/* Copies host tensor SRC to the backend (or uses it in place on host memory). */
static int place(fy_fwd *f, const fy_tensor *src, fy_tensor *dst)
{
    *dst = *src;
    if (!src->data || f->ops->host_memory) {
        return 0;
    }
    size_t n = tensor_bytes(src);
    void *p = f->ops->alloc(f->be, n);
    if (!p) {
        return FY_ENOMEM;
    }
    f->owned[f->n_owned++] = p;
    dst->data = p;
    return f->ops->upload(f->be, p, src->data, n);
}

static int place_weights(fy_fwd *f)
{
    const fy_model *m = f->m;
    int n = m->cfg.n_layers, rc;
    f->layers = calloc((size_t)n, sizeof *f->layers);
    f->owned = calloc((size_t)n * 12 + 3, sizeof *f->owned);
    if (!f->layers || !f->owned) {
        return FY_ENOMEM;
    }
    if ((rc = place(f, &m->embed, &f->embed)) < 0 || (rc = place(f, &m->norm, &f->norm)) < 0) {
        return rc;
    }
    if (m->lm_head.data == m->embed.data) {
        f->lm_head = f->embed;
    } else if ((rc = place(f, &m->lm_head, &f->lm_head)) < 0) {
        return rc;
    }
    for (int i = 0; i < n; i++) {
        const fy_layer *s = &m->layers[i];
        fy_layer *d = &f->layers[i];
        if ((rc = place(f, &s->attn_norm, &d->attn_norm)) < 0 ||
            (rc = place(f, &s->q, &d->q)) < 0 || (rc = place(f, &s->k, &d->k)) < 0 ||
            (rc = place(f, &s->v, &d->v)) < 0 || (rc = place(f, &s->o, &d->o)) < 0 ||
            (rc = place(f, &s->q_bias, &d->q_bias)) < 0 ||
            (rc = place(f, &s->k_bias, &d->k_bias)) < 0 ||
            (rc = place(f, &s->v_bias, &d->v_bias)) < 0 ||
            (rc = place(f, &s->mlp_norm, &d->mlp_norm)) < 0 ||
            (rc = place(f, &s->gate, &d->gate)) < 0 || (rc = place(f, &s->up, &d->up)) < 0 ||
            (rc = place(f, &s->down, &d->down)) < 0) {
            return rc;
        }
    }
    return 0;
}

static void *balloc(fy_fwd *f, size_t n, size_t elem, int *ok)
{
    void *p = f->ops->alloc(f->be, n * elem);
    if (!p) {
        *ok = 0;
    }
    return p;
}

static int alloc_scratch(fy_fwd *f)
{
    const fy_model_config *c = &f->m->cfg;
    size_t T = (size_t)f->o.max_batch_tokens, S = (size_t)f->o.max_seqs, H = (size_t)c->hidden;
    size_t Q = (size_t)c->n_heads * c->head_dim, KV = (size_t)c->n_kv_heads * c->head_dim;
    size_t I = (size_t)c->intermediate, V = (size_t)c->vocab_size;
    int ok = 1;
    f->x = balloc(f, T * H, 4, &ok);
    f->xn = balloc(f, T * H, 4, &ok);
    f->q = balloc(f, T * Q, 4, &ok);
    f->att = balloc(f, T * Q, 4, &ok);
    f->k = balloc(f, T * KV, 4, &ok);
    f->v = balloc(f, T * KV, 4, &ok);
    f->gate = balloc(f, T * I, 4, &ok);
    f->up = balloc(f, T * I, 4, &ok);
    f->sel = balloc(f, S * H, 4, &ok);
    f->logits = balloc(f, S * V, 4, &ok);
    f->inv_freq = balloc(f, (size_t)c->head_dim / 2, 4, &ok);
    f->d_ids = balloc(f, T, 4, &ok);
    f->d_pos = balloc(f, T, 4, &ok);
    f->d_slots = balloc(f, T, 4, &ok);
    f->d_seq_start = balloc(f, S + 1, 4, &ok);
    f->d_ctx_len = balloc(f, S, 4, &ok);
    f->d_rows = balloc(f, S, 4, &ok);
    f->h_ids = calloc(T, 4);
    f->h_pos = calloc(T, 4);
    f->h_slots = calloc(T, 4);
    f->h_seq_start = calloc(S + 1, 4);
    f->h_ctx_len = calloc(S, 4);
    f->h_rows = calloc(S, 4);
    if (!ok || !f->h_ids || !f->h_pos || !f->h_slots || !f->h_seq_start || !f->h_ctx_len ||
        !f->h_rows) {
        return FY_ENOMEM;
    }
    float *inv = malloc((size_t)c->head_dim / 2 * sizeof *inv);
    if (!inv) {
        return FY_ENOMEM;
    }
    fy_model_rope_inv_freq(c, inv);
    int rc = f->ops->upload(f->be, f->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof *inv);
    free(inv);
    return rc;
}

static int alloc_cache(fy_fwd *f)
{
    int n = f->m->cfg.n_layers;
    f->kc = calloc((size_t)n, sizeof *f->kc);
    f->vc = calloc((size_t)n, sizeof *f->vc);
    if (!f->kc || !f->vc) {
        return FY_ENOMEM;
    }
    size_t bytes = f->layer_block_bytes * (size_t)f->num_blocks;
    for (int i = 0; i < n; i++) {
        f->kc[i] = f->ops->alloc(f->be, bytes);
        f->vc[i] = f->ops->alloc(f->be, bytes);
        if (!f->kc[i] || !f->vc[i]) {
            return FY_ENOMEM;
        }
    }
    return 0;
}

int fy_fwd_create(const fy_model *m, fy_backend *be, const fy_fwd_options *o, fy_fwd **out,
                  char *err, size_t errlen)
{
    *out = NULL;
    if (o->block_size < 1 || o->block_size > 1024 || o->max_batch_tokens < 1 ||
        o->max_batch_tokens > (1 << 20) || o->max_seqs < 1 || o->max_seqs > o->max_batch_tokens) {
        return ffail(err, errlen, FY_EINVAL,
                     "forward: block_size %d, max_batch_tokens %d, max_seqs %d out of range",
                     o->block_size, o->max_batch_tokens, o->max_seqs);
    }
    size_t bb = fy_fwd_block_bytes(m, be, o->block_size);
    if (o->kv_bytes / bb < 1) {
        return ffail(err, errlen, FY_EINVAL,
                     "forward: KV cache memory %zu bytes holds no block (one block of %d tokens "
                     "needs %zu bytes)",
                     o->kv_bytes, o->block_size, bb);
    }
    if (o->kv_bytes / bb > INT32_MAX / (size_t)o->block_size) {
        return ffail(err, errlen, FY_EINVAL, "forward: KV cache of %zu bytes is too large",
                     o->kv_bytes);
    }
    fy_fwd *f = calloc(1, sizeof *f);
    if (!f) {
        return ffail(err, errlen, FY_ENOMEM, "forward: out of memory");
    }
    f->m = m;
    f->be = be;
    f->ops = be->ops;
    f->o = *o;
    f->num_blocks = (int)(o->kv_bytes / bb);
    f->layer_block_bytes = bb / ((size_t)m->cfg.n_layers * 2);
    int rc;
    if ((rc = place_weights(f)) < 0 || (rc = alloc_scratch(f)) < 0 || (rc = alloc_cache(f)) < 0) {
        fy_fwd_destroy(f);
        return ffail(err, errlen, rc,
                     "forward: cannot allocate weights, scratch or a KV cache of %zu bytes on %s: "
                     "%s",
                     o->kv_bytes, be->ops->name, fy_strerror(rc));
    }
    *out = f;
    return 0;
}

void fy_fwd_destroy(fy_fwd *f)
{
    if (!f) {
        return;
    }
    fy_backend *be = f->be;
    void (*bfree)(fy_backend *, void *) = f->ops->free;
    for (int i = 0; f->kc && i < f->m->cfg.n_layers; i++) {
        bfree(be, f->kc[i]);
        bfree(be, f->vc[i]);
    }
    free(f->kc);
    free(f->vc);
    for (int i = 0; i < f->n_owned; i++) {
        bfree(be, f->owned[i]);
    }
    free(f->owned);
    free(f->layers);
    void *dev[] = {f->x,         f->xn,     f->q,     f->k,       f->v,
                   f->att,       f->gate,   f->up,    f->sel,     f->logits,
                   f->inv_freq,  f->d_ids,  f->d_pos, f->d_slots, f->d_seq_start,
                   f->d_ctx_len, f->d_rows, f->d_bt,  f->d_cow};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) {
        bfree(be, dev[i]);
    }
    free(f->h_ids);
    free(f->h_pos);
    free(f->h_slots);
    free(f->h_seq_start);
    free(f->h_ctx_len);
    free(f->h_rows);
    free(f->h_bt);
    free(f);
}

/* Grows the backend int32 buffer *P (capacity *CAP elements) to hold N. */
static int grow_dev(fy_fwd *f, int32_t **p, size_t *cap, size_t n)
{
    if (n <= *cap) {
        return 0;
    }
    size_t nc = n < 256 ? 256 : n + n / 2;
    int32_t *q = f->ops->alloc(f->be, nc * sizeof *q);
    if (!q) {
        return FY_ENOMEM;
    }
    f->ops->free(f->be, *p);
    *p = q;
    *cap = nc;
    return 0;
}

/* Checks the step and fills the host arrays; returns T or an FY_E* code. */
static int build_batch(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, int *max_blocks, int *max_ctx,
                       int *max_q, int *n_out)
{
    const fy_model_config *c = &f->m->cfg;
    int bs = f->o.block_size, T = 0;
    *max_blocks = 1;
    *max_ctx = *max_q = *n_out = 0;
    if (n_seqs < 1 || n_seqs > f->o.max_seqs) {
        return FY_EINVAL;
    }
    for (int s = 0; s < n_seqs; s++) {
        const fy_fwd_seq *q = &seqs[s];
        if (q->n_tokens < 1 || q->start < 0 || q->n_tokens > f->o.max_batch_tokens - T ||
            q->start > INT32_MAX - q->n_tokens || !q->tokens || !q->block_table) {
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
        *max_blocks = need > *max_blocks ? need : *max_blocks;
        *max_ctx = ctx > *max_ctx ? ctx : *max_ctx;
        *max_q = q->n_tokens > *max_q ? q->n_tokens : *max_q;
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
        if (q->want_logits) {
            f->h_rows[(*n_out)++] = T - 1;
        }
    }
    f->h_seq_start[n_seqs] = T;
    size_t need = (size_t)n_seqs * (size_t)*max_blocks;
    if (need > f->h_bt_cap) {
        int32_t *nb = realloc(f->h_bt, need * sizeof *nb);
        if (!nb) {
            return FY_ENOMEM;
        }
        f->h_bt = nb;
        f->h_bt_cap = need;
    }
    for (int s = 0; s < n_seqs; s++) {
        int32_t *row = f->h_bt + (size_t)s * *max_blocks;
        int need_s = (f->h_ctx_len[s] + bs - 1) / bs;
        memcpy(row, seqs[s].block_table, (size_t)need_s * sizeof *row);
        for (int i = need_s; i < *max_blocks; i++) {
            row[i] = 0; /* never read: past the sequence's context */
        }
    }
    return T;
}

static int upload_batch(fy_fwd *f, int T, int S, int max_blocks, int n_out)
{
    const fy_backend_ops *o = f->ops;
    fy_backend *be = f->be;
    int rc;
    if ((rc = grow_dev(f, &f->d_bt, &f->bt_cap, (size_t)S * max_blocks)) < 0) {
        return rc;
    }
    if ((rc = o->upload(be, f->d_ids, f->h_ids, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, f->d_pos, f->h_pos, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, f->d_slots, f->h_slots, (size_t)T * 4)) < 0 ||
        (rc = o->upload(be, f->d_seq_start, f->h_seq_start, (size_t)(S + 1) * 4)) < 0 ||
        (rc = o->upload(be, f->d_ctx_len, f->h_ctx_len, (size_t)S * 4)) < 0 ||
        (rc = o->upload(be, f->d_bt, f->h_bt, (size_t)S * max_blocks * 4)) < 0) {
        return rc;
    }
    return n_out ? o->upload(be, f->d_rows, f->h_rows, (size_t)n_out * 4) : 0;
}

static void run_layer(fy_fwd *f, int l, int T, const fy_attn_batch *b, const fy_attn_shape *sh)
{
    const fy_backend_ops *o = f->ops;
    fy_backend *be = f->be;
    const fy_model_config *c = &f->m->cfg;
    const fy_layer *L = &f->layers[l];
    size_t TH = (size_t)T * c->hidden;
    o->rmsnorm(be, f->xn, f->x, &L->attn_norm, T, c->hidden, c->rms_eps);
    o->matmul(be, f->q, f->xn, &L->q, &L->q_bias, T);
    o->matmul(be, f->k, f->xn, &L->k, &L->k_bias, T);
    o->matmul(be, f->v, f->xn, &L->v, &L->v_bias, T);
    o->rope(be, f->q, f->k, f->d_pos, T, c->n_heads, c->n_kv_heads, c->head_dim, f->inv_freq);
    o->cache_write(be, f->kc[l], f->vc[l], f->k, f->v, b, sh);
    o->attention(be, f->att, f->q, f->kc[l], f->vc[l], b, sh);
    o->matmul(be, f->xn, f->att, &L->o, NULL, T);
    o->add(be, f->x, f->x, f->xn, TH);
    o->rmsnorm(be, f->xn, f->x, &L->mlp_norm, T, c->hidden, c->rms_eps);
    o->matmul(be, f->gate, f->xn, &L->gate, NULL, T);
    o->matmul(be, f->up, f->xn, &L->up, NULL, T);
    o->silu_mul(be, f->gate, f->gate, f->up, T, c->intermediate);
    o->matmul(be, f->xn, f->gate, &L->down, NULL, T);
    o->add(be, f->x, f->x, f->xn, TH);
}

int fy_fwd_step(fy_fwd *f, const fy_fwd_seq *seqs, int n_seqs, float *logits)
{
    const fy_model_config *c = &f->m->cfg;
    const fy_backend_ops *o = f->ops;
    fy_backend *be = f->be;
    int max_blocks, max_ctx, max_q, n_out, rc;
    int T = build_batch(f, seqs, n_seqs, &max_blocks, &max_ctx, &max_q, &n_out);
    if (T < 0) {
        return T;
    }
    if ((rc = upload_batch(f, T, n_seqs, max_blocks, n_out)) < 0) {
        return rc;
    }
    fy_attn_batch b = {
        .n_tokens = T,
        .n_seqs = n_seqs,
        .positions = f->d_pos,
        .slots = f->d_slots,
        .seq_start = f->d_seq_start,
        .ctx_len = f->d_ctx_len,
        .block_tables = f->d_bt,
        .max_blocks = max_blocks,
        .max_ctx_len = max_ctx,
        .max_query_len = max_q,
        .host_seq_start = f->h_seq_start,
        .host_ctx_len = f->h_ctx_len,
    };
    fy_attn_shape sh = {c->n_heads, c->n_kv_heads, c->head_dim, f->o.block_size,
                        1.0f / sqrtf((float)c->head_dim)};
    o->embed(be, f->x, &f->embed, f->d_ids, T);
    for (int l = 0; l < c->n_layers; l++) {
        run_layer(f, l, T, &b, &sh);
    }
    if (n_out > 0) {
        o->gather_rows(be, f->sel, f->x, f->d_rows, n_out, c->hidden);
        o->rmsnorm(be, f->sel, f->sel, &f->norm, n_out, c->hidden, c->rms_eps);
        o->matmul(be, f->logits, f->sel, &f->lm_head, NULL, n_out);
        if ((rc = o->download(be, logits, f->logits,
                              (size_t)n_out * (size_t)c->vocab_size * sizeof(float))) < 0) {
            return rc;
        }
    }
    return o->sync(be);
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
    int rc = grow_dev(f, &f->d_cow, &f->cow_cap, 2 * (size_t)n);
    if (rc < 0 || (rc = f->ops->upload(f->be, f->d_cow, src, (size_t)n * 4)) < 0 ||
        (rc = f->ops->upload(f->be, f->d_cow + n, dst, (size_t)n * 4)) < 0) {
        return rc;
    }
    for (int l = 0; l < f->m->cfg.n_layers; l++) {
        f->ops->block_copy(f->be, f->kc[l], f->vc[l], f->d_cow, f->d_cow + n, n,
                           f->layer_block_bytes);
    }
    return f->ops->sync(f->be);
}
