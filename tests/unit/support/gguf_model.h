/* gguf_model.h: a loaded model (usually a model_fixture.h directory)
 * written back as a GGUF file the way llama.cpp's converter writes one:
 * llama.cpp's tensor names and metadata keys, dims with the row length
 * first, and for the llama architecture q/k rows (and biases) permuted
 * from Hugging Face's rotate-half order into ggml's adjacent pairs. Options
 * change the type of the matrices, the architecture, the file's version and
 * alignment, or break one thing (a tensor left out, grown, retyped, added;
 * a key left out) so refusals can be tested. Header-only. */
#ifndef FY_TEST_GGUF_MODEL_H
#define FY_TEST_GGUF_MODEL_H

#include "gguf_writer.h"
#include "model_fixture.h"
#include "runner/engine/model.h"

#include <math.h>
#include <sys/stat.h>

typedef struct {
    const char *arch;     /* general.architecture; NULL: "llama" */
    const char *name;     /* general.name; NULL: none */
    uint32_t wtype;       /* ggml type of the 2-D weights: GW_F32 (0), GW_F16, GW_BF16, GW_Q8_0 */
    uint32_t version;     /* 0: 3 */
    uint32_t align;       /* 0: 32 (not written); else written as general.alignment */
    int key_length;       /* 1: write <arch>.attention.key_length */
    int rope_freqs;       /* 1: write rope_freqs.weight (factors 1 + i/4) */
    int qk_norm;          /* 1: add attn_q_norm/attn_k_norm (qwen3) */
    int tokens;           /* 1: write tokenizer.ggml.tokens (one per row) */
    const char *skip;     /* a tensor left out */
    const char *grow;     /* a tensor written with one more row */
    const char *retype;   /* a tensor written as RETYPE_TO */
    uint32_t retype_to;   /* ggml type */
    const char *extra;    /* an extra 1-D F32 tensor of 32 weights */
    const char *skip_key; /* a metadata key left out */
    void (*more_kv)(gw_writer *w, const char *arch); /* keys appended after the rest */
} gm_opts;

static inline float gm_get(const fy_tensor *t, int64_t i)
{
    if (t->dtype == FY_DT_F32) {
        float f;
        memcpy(&f, (const float *)t->data + i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const uint16_t *)t->data + i, 2);
    return t->dtype == FY_DT_F16 ? fy_f16_to_f32(h) : fy_bf16_to_f32(h);
}

/* Q8_0: blocks of 32 weights, an f16 scale max|x|/127 and 32 int8. */
static inline void gm_q8_0(const float *x, size_t n, uint8_t *out)
{
    for (size_t b = 0; b < n / 32; b++) {
        float mx = 0;
        for (int i = 0; i < 32; i++) {
            mx = fmaxf(mx, fabsf(x[b * 32 + i]));
        }
        float d = mx / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        uint16_t h = fy_f32_to_f16(d);
        memcpy(out + b * 34, &h, 2);
        for (int i = 0; i < 32; i++) {
            out[b * 34 + 2 + i] = (uint8_t)(int8_t)lrintf(x[b * 32 + i] * id);
        }
    }
}

/* Encodes N floats as ggml TYPE into a new buffer; *BYTES its size. */
static inline void *gm_encode(const float *x, size_t n, uint32_t type, size_t *bytes)
{
    size_t sz = type == GW_F32 ? n * 4 : type == GW_Q8_0 ? n / 32 * 34 : n * 2;
    uint8_t *p = calloc(sz ? sz : 1, 1);
    if (!p) {
        abort();
    }
    for (size_t i = 0; type != GW_Q8_0 && i < n; i++) {
        if (type == GW_F32) {
            memcpy(p + 4 * i, &x[i], 4);
        } else {
            uint16_t h = type == GW_F16 ? fy_f32_to_f16(x[i]) : fy_f32_to_bf16(x[i]);
            memcpy(p + 2 * i, &h, 2);
        }
    }
    if (type == GW_Q8_0) {
        gm_q8_0(x, n, p);
    }
    *bytes = sz;
    return p;
}

/* Writes T (ROWS x COLS, or a vector when VEC) as NAME of ggml TYPE;
 * PERM_HD > 0 permutes rows within heads of PERM_HD rows into adjacent
 * pairs (new row 2i + j of a head = old row j * PERM_HD/2 + i). */
static inline void gm_put(gw_writer *w, const gm_opts *o, const char *name, const fy_tensor *t,
                          int vec, uint32_t type, int perm_hd)
{
    if (o->skip && strcmp(o->skip, name) == 0) {
        return;
    }
    /* A vector is laid out as a column, so the same row permutation applies. */
    int64_t rows = vec ? t->rows * t->cols : t->rows, cols = vec ? 1 : t->cols;
    int64_t grow = o->grow && strcmp(o->grow, name) == 0;
    if (o->retype && strcmp(o->retype, name) == 0) {
        type = o->retype_to;
    }
    size_t n = (size_t)((rows + grow) * cols);
    float *x = calloc(n, sizeof *x);
    for (int64_t r = 0; r < rows; r++) {
        int64_t src = r;
        if (perm_hd > 0) {
            int64_t h = r / perm_hd, in = r % perm_hd, half = perm_hd / 2;
            src = h * perm_hd + (in % 2) * half + in / 2;
        }
        for (int64_t c = 0; c < cols; c++) {
            x[r * cols + c] = gm_get(t, src * cols + c);
        }
    }
    size_t bytes;
    void *p = gm_encode(x, n, type, &bytes);
    uint64_t dims[2] = {(uint64_t)cols, (uint64_t)(rows + grow)};
    if (vec) {
        dims[0] = (uint64_t)(rows + grow);
    }
    gw_tensor(w, name, type, vec ? 1 : 2, dims, p, bytes);
    free(p);
    free(x);
}

static inline void gm_meta_u32(gw_writer *w, const gm_opts *o, const char *arch, const char *suffix,
                               uint32_t v)
{
    char k[160];
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    if (!o->skip_key || strcmp(o->skip_key, k) != 0) {
        gw_kv_u32(w, k, v);
    }
}

/* Writes M as a GGUF file at PATH with options O (may be NULL). Returns 0 or -1. */
static inline int gm_write(const char *path, const fy_model *m, const gm_opts *opts)
{
    gm_opts none = {0};
    const gm_opts *o = opts ? opts : &none;
    const fy_model_config *c = &m->cfg;
    const char *arch = o->arch ? o->arch : "llama";
    int llama = strcmp(arch, "llama") == 0;
    uint32_t wt = o->wtype;
    gw_writer w;
    gw_init_as(&w, o->version ? o->version : 3, o->align ? o->align : 32);
    if (!o->skip_key || strcmp(o->skip_key, "general.architecture") != 0) {
        gw_kv_str(&w, "general.architecture", arch);
    }
    if (o->name) {
        gw_kv_str(&w, "general.name", o->name);
    }
    if (o->align) {
        gw_kv_u32(&w, "general.alignment", o->align);
    }
    gm_meta_u32(&w, o, arch, "context_length", (uint32_t)c->max_pos);
    gm_meta_u32(&w, o, arch, "embedding_length", (uint32_t)c->hidden);
    gm_meta_u32(&w, o, arch, "feed_forward_length", (uint32_t)c->intermediate);
    gm_meta_u32(&w, o, arch, "block_count", (uint32_t)c->n_layers);
    gm_meta_u32(&w, o, arch, "attention.head_count", (uint32_t)c->n_heads);
    gm_meta_u32(&w, o, arch, "attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gm_meta_u32(&w, o, arch, "rope.dimension_count", (uint32_t)c->head_dim);
    if (o->key_length) {
        gm_meta_u32(&w, o, arch, "attention.key_length", (uint32_t)c->head_dim);
    }
    char k[160];
    snprintf(k, sizeof k, "%s.rope.freq_base", arch);
    gw_kv_f32(&w, k, c->rope_theta);
    snprintf(k, sizeof k, "%s.attention.layer_norm_rms_epsilon", arch);
    if (!o->skip_key || strcmp(o->skip_key, k) != 0) {
        gw_kv_f32(&w, k, c->rms_eps);
    }
    if (c->rope_type == FY_ROPE_LINEAR) {
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        gw_kv_str(&w, k, "linear");
        snprintf(k, sizeof k, "%s.rope.scaling.factor", arch);
        gw_kv_f32(&w, k, c->rope_factor);
    }
    gw_kv_u32(&w, "tokenizer.ggml.bos_token_id",
              c->bos_id >= 0 ? (uint32_t)c->bos_id : 0xffffffffu);
    if (c->n_eos) {
        gw_kv_u32(&w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos_ids[0]);
    }
    if (o->tokens) {
        const char **toks = calloc((size_t)c->vocab_size, sizeof *toks);
        char(*buf)[16] = calloc((size_t)c->vocab_size, sizeof *buf);
        for (int i = 0; i < c->vocab_size; i++) {
            snprintf(buf[i], sizeof buf[i], "t%d", i);
            toks[i] = buf[i];
        }
        gw_kv_strs(&w, "tokenizer.ggml.tokens", toks, (size_t)c->vocab_size);
        free(toks);
        free(buf);
    }
    if (o->more_kv) {
        o->more_kv(&w, arch);
    }
    int hd = c->head_dim;
    gm_put(&w, o, "token_embd.weight", &m->embed, 0, wt, 0);
    gm_put(&w, o, "output_norm.weight", &m->norm, 1, GW_F32, 0);
    if (m->lm_head.data != m->embed.data) {
        gm_put(&w, o, "output.weight", &m->lm_head, 0, wt, 0);
    }
    if (o->rope_freqs) {
        float *f = calloc((size_t)hd / 2, sizeof *f);
        for (int i = 0; i < hd / 2; i++) {
            f[i] = 1.0f + (float)i / 4.0f;
        }
        fy_tensor t = {f, FY_DT_F32, 1, hd / 2};
        gm_put(&w, o, "rope_freqs.weight", &t, 1, GW_F32, 0);
        free(f);
    }
    uint32_t seed = 7;
    for (int l = 0; l < c->n_layers; l++) {
        const fy_layer *L = &m->layers[l];
        char n[96];
#define GM(field, suffix, vec, type, perm)                \
    do {                                                  \
        snprintf(n, sizeof n, "blk.%d.%s", l, suffix);    \
        if (L->field.data) {                              \
            gm_put(&w, o, n, &L->field, vec, type, perm); \
        }                                                 \
    } while (0)
        GM(attn_norm, "attn_norm.weight", 1, GW_F32, 0);
        GM(q, "attn_q.weight", 0, wt, llama ? hd : 0);
        GM(k, "attn_k.weight", 0, wt, llama ? hd : 0);
        GM(v, "attn_v.weight", 0, wt, 0);
        GM(q_bias, "attn_q.bias", 1, GW_F32, llama ? hd : 0);
        GM(k_bias, "attn_k.bias", 1, GW_F32, llama ? hd : 0);
        GM(v_bias, "attn_v.bias", 1, GW_F32, 0);
        GM(o, "attn_output.weight", 0, wt, 0);
        GM(mlp_norm, "ffn_norm.weight", 1, GW_F32, 0);
        GM(gate, "ffn_gate.weight", 0, wt, 0);
        GM(up, "ffn_up.weight", 0, wt, 0);
        GM(down, "ffn_down.weight", 0, wt, 0);
#undef GM
        if (o->qk_norm) {
            float *f = calloc((size_t)hd, sizeof *f);
            fy_tensor t = {f, FY_DT_F32, 1, hd};
            for (int pass = 0; pass < 2; pass++) {
                for (int i = 0; i < hd; i++) {
                    seed = seed * 1664525u + 1013904223u;
                    f[i] = 0.75f + (float)(seed >> 8) / 16777216.0f * 0.5f;
                }
                snprintf(n, sizeof n, "blk.%d.%s", l,
                         pass ? "attn_k_norm.weight" : "attn_q_norm.weight");
                gm_put(&w, o, n, &t, 1, GW_F32, 0);
            }
            free(f);
        }
    }
    if (o->extra) {
        float z[32] = {0};
        fy_tensor t = {z, FY_DT_F32, 1, 32};
        gm_put(&w, o, o->extra, &t, 1, GW_F32, 0);
    }
    int rc = gw_save(&w, path);
    gw_free(&w);
    return rc;
}

/* A small random llama model (vocab 64, hidden 32, FFN 64, one layer, 4
 * heads, 2 KV heads, seed SEED) written as a Hugging Face directory DIR
 * (created) and then as the GGUF file PATH with options O (may be NULL).
 * Returns 0 or -1. */
static inline int gm_write_small(const char *dir, const char *path, uint32_t seed, const gm_opts *o)
{
    fx_shape s = {.vocab = 64,
                  .hidden = 32,
                  .inter = 64,
                  .layers = 1,
                  .heads = 4,
                  .kv_heads = 2,
                  .dt = FY_DT_F32};
    fy_model *m = NULL;
    char err[256];
    if (mkdir(dir, 0700) != 0 || fx_write_model(dir, &s, seed) != 0 ||
        fy_model_load(dir, &m, err, sizeof err) != 0) {
        return -1;
    }
    int rc = gm_write(path, m, o);
    fy_model_free(m);
    return rc;
}

#endif
