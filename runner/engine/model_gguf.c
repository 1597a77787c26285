/* model_gguf.c: a Llama-family model from a GGUF file's metadata and
 * tensors, each checked against the other (see model_gguf.h). */
#include "runner/engine/model_gguf.h"

#include "common/err.h"
#include "runner/engine/stop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define GGUF_NO_TOKEN 0xffffffffu /* llama.cpp's "no such token" (-1 as u32) */

typedef enum { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3 } gguf_arch;

static const char *const arch_names[] = {"llama", "qwen2", "qwen3"};

typedef struct {
    fy_gguf *g;
    uint8_t *used; /* [n_tensors]: 1 once a tensor is taken */
    void **copies; /* aligned copies of misaligned tensors */
    int n_copies;
    float *factors; /* rope_freqs.weight as f32, or NULL */
} gguf_priv;

typedef struct {
    fy_model *m;
    gguf_priv *p;
    const fy_gguf *g;
    gguf_arch arch;
    char key[160]; /* the "<arch>.<suffix>" being read */
    char *err;
    size_t errlen;
} gctx;

/* --- Metadata ----------------------------------------------------------------------- */

static const char *akey(gctx *c, const char *suffix)
{
    snprintf(c->key, sizeof c->key, "%s.%s", arch_names[c->arch], suffix);
    return c->key;
}

/* Integer KEY in [LO, HI], of any integer type; DEF when absent (DEF < LO:
 * required). */
static int meta_int(gctx *c, const char *key, int64_t lo, int64_t hi, int64_t def, int64_t *out)
{
    const fy_gguf_kv *kv = fy_gguf_find(c->g, key);
    const char *f = c->g->label;
    if (!kv) {
        if (def < lo) {
            return fy_fail(c->err, c->errlen, FY_ENOENT, "%s: key '%s' is missing", f, key);
        }
        *out = def;
        return 0;
    }
    int64_t v;
    switch (kv->v.type) {
    case FY_GGUF_U8:
    case FY_GGUF_U16:
    case FY_GGUF_U32:
    case FY_GGUF_U64:
        v = kv->v.u > INT64_MAX ? INT64_MAX : (int64_t)kv->v.u;
        break;
    case FY_GGUF_I8:
    case FY_GGUF_I16:
    case FY_GGUF_I32:
    case FY_GGUF_I64:
        v = kv->v.i;
        break;
    case FY_GGUF_ARR:
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: key '%s' is an array (per-layer values are not supported)", f, key);
    default:
        return fy_fail(c->err, c->errlen, FY_EPARSE, "%s: key '%s' is %s, not an integer", f, key,
                       fy_gguf_type_name(kv->v.type));
    }
    if (v < lo || v > hi) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "%s: key '%s' is %lld, outside [%lld, %lld]",
                       f, key, (long long)v, (long long)lo, (long long)hi);
    }
    *out = v;
    return 0;
}

/* meta_int into an int (HI fits). */
static int meta_i(gctx *c, const char *key, int lo, int hi, int64_t def, int *out)
{
    int64_t v = 0;
    int rc = meta_int(c, key, lo, hi, def, &v);
    *out = (int)v;
    return rc;
}

/* Float KEY (f32 or f64) in (LO, HI]; DEF when absent unless REQUIRED. */
static int meta_float(gctx *c, const char *key, double lo, double hi, double def, int required,
                      float *out)
{
    const fy_gguf_kv *kv = fy_gguf_find(c->g, key);
    const char *f = c->g->label;
    if (!kv) {
        if (required) {
            return fy_fail(c->err, c->errlen, FY_ENOENT, "%s: key '%s' is missing", f, key);
        }
        *out = (float)def;
        return 0;
    }
    if (kv->v.type != FY_GGUF_F32 && kv->v.type != FY_GGUF_F64) {
        return fy_fail(c->err, c->errlen, FY_EPARSE, "%s: key '%s' is %s, not f32", f, key,
                       kv->v.type == FY_GGUF_ARR ? "an array" : fy_gguf_type_name(kv->v.type));
    }
    double x = kv->v.f;
    if (!(x > lo && x <= hi)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "%s: key '%s' is %g, outside (%g, %g]", f, key,
                       x, lo, hi);
    }
    *out = (float)x;
    return 0;
}

/* Token id KEY: -1 when absent or "none" (0xffffffff, a negative value);
 * otherwise below VOCAB. */
static int meta_token(gctx *c, const char *key, int vocab, int *out)
{
    *out = -1;
    const fy_gguf_kv *kv = fy_gguf_find(c->g, key);
    if (!kv) {
        return 0;
    }
    fy_gguf_type t = kv->v.type;
    int is_signed = t == FY_GGUF_I8 || t == FY_GGUF_I16 || t == FY_GGUF_I32 || t == FY_GGUF_I64;
    if ((t == FY_GGUF_U32 && kv->v.u == GGUF_NO_TOKEN) || (is_signed && kv->v.i < 0)) {
        return 0;
    }
    int64_t v = 0;
    int rc = meta_int(c, key, 0, vocab - 1, -1, &v);
    if (rc == FY_EINVAL) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: key '%s' is not a token id below the vocabulary's %d", c->g->label, key,
                       vocab);
    }
    *out = (int)v;
    return rc;
}

static int read_arch(gctx *c)
{
    fy_gguf_str s;
    int rc = fy_gguf_get_str(c->g, "general.architecture", &s, c->err, c->errlen);
    if (rc < 0) {
        return rc;
    }
    for (size_t i = 0; i < sizeof arch_names / sizeof arch_names[0]; i++) {
        if (s.len == strlen(arch_names[i]) && memcmp(s.p, arch_names[i], s.len) == 0) {
            c->arch = (gguf_arch)i;
            snprintf(c->m->cfg.arch, sizeof c->m->cfg.arch, "%s", arch_names[i]);
            return 0;
        }
    }
    char shown[72];
    size_t n = s.len < 64 ? (size_t)s.len : 64;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.p[i];
        shown[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    shown[n] = 0;
    return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                   "%s: architecture '%s%s' (key 'general.architecture') is not supported: ferry "
                   "serves llama, qwen2 and qwen3",
                   c->g->label, shown, s.len > 64 ? "..." : "");
}

static int read_shapes(gctx *c, fy_model_config *cfg)
{
    int rc, n_kv = 0, hd = 0, vd = 0, rot = 0, experts = 0;
    if ((rc = meta_i(c, akey(c, "embedding_length"), 1, FY_MODEL_MAX_HIDDEN, -1, &cfg->hidden)) <
            0 ||
        (rc = meta_i(c, akey(c, "block_count"), 1, FY_MODEL_MAX_LAYERS, -1, &cfg->n_layers)) < 0 ||
        (rc = meta_i(c, akey(c, "feed_forward_length"), 1, FY_MODEL_MAX_INTERMEDIATE, -1,
                     &cfg->intermediate)) < 0 ||
        (rc = meta_i(c, akey(c, "attention.head_count"), 1, FY_MODEL_MAX_HEADS, -1,
                     &cfg->n_heads)) < 0 ||
        (rc = meta_i(c, akey(c, "attention.head_count_kv"), 1, FY_MODEL_MAX_HEADS, cfg->n_heads,
                     &n_kv)) < 0 ||
        (rc = meta_i(c, akey(c, "context_length"), 1, FY_MODEL_MAX_POS, -1, &cfg->max_pos)) < 0 ||
        (rc = meta_i(c, akey(c, "expert_count"), 0, 1 << 20, 0, &experts)) < 0) {
        return rc;
    }
    const char *f = c->g->label;
    if (experts > 0) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: key '%s' is %d: mixtures of experts are not supported", f, c->key,
                       experts);
    }
    cfg->n_kv_heads = n_kv;
    if (cfg->n_heads % n_kv) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: %s.attention.head_count %d is not a multiple of head_count_kv %d", f,
                       arch_names[c->arch], cfg->n_heads, n_kv);
    }
    int def_hd = cfg->hidden % cfg->n_heads ? -1 : cfg->hidden / cfg->n_heads;
    if ((rc = meta_i(c, akey(c, "attention.key_length"), 2, FY_MODEL_MAX_HEAD_DIM, def_hd, &hd)) <
        0) {
        if (rc == FY_ENOENT) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "%s: embedding_length %d is not a multiple of head_count %d (and no "
                           "'%s')",
                           f, cfg->hidden, cfg->n_heads, c->key);
        }
        return rc;
    }
    if (hd % 2) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "%s: the head size %d is odd", f, hd);
    }
    cfg->head_dim = hd;
    if ((rc = meta_i(c, akey(c, "attention.value_length"), 1, FY_MODEL_MAX_HEAD_DIM, hd, &vd)) <
        0) {
        return rc;
    }
    if (vd != hd) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: key '%s' is %d but the key length is %d: different key and value "
                       "head sizes are not supported",
                       f, c->key, vd, hd);
    }
    if ((rc = meta_i(c, akey(c, "rope.dimension_count"), 1, FY_MODEL_MAX_HEAD_DIM, hd, &rot)) < 0) {
        return rc;
    }
    if (rot != hd) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: key '%s' is %d but heads have %d dimensions: partial rotary "
                       "embeddings are not supported",
                       f, c->key, rot, hd);
    }
    if ((int64_t)cfg->n_heads * hd > (int64_t)FY_MODEL_MAX_HIDDEN * 4) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: head_count x key_length = %lld is too large", f,
                       (long long)cfg->n_heads * hd);
    }
    return meta_float(c, akey(c, "attention.layer_norm_rms_epsilon"), 0.0, 1.0, 0, 1,
                      &cfg->rms_eps);
}

static int read_rope(gctx *c, fy_model_config *cfg)
{
    int rc, orig = 0;
    const char *f = c->g->label;
    cfg->rope_type = FY_ROPE_NONE;
    cfg->rope_factor = 1.0f;
    if ((rc = meta_float(c, akey(c, "rope.freq_base"), 0.0, 1e12, 10000.0, 0, &cfg->rope_theta)) <
            0 ||
        (rc = meta_i(c, akey(c, "rope.scaling.original_context_length"), 0, FY_MODEL_MAX_POS, 0,
                     &orig)) < 0) {
        return rc;
    }
    cfg->rope_orig_max_pos = orig;
    /* As llama.cpp reads it: the type defaults to linear, the factor comes
     * from rope.scaling.factor or the older rope.scale_linear; 1 is none. */
    fy_gguf_str ty = {"linear", 6};
    const char *tkey = akey(c, "rope.scaling.type");
    if (fy_gguf_find(c->g, tkey) &&
        (rc = fy_gguf_get_str(c->g, tkey, &ty, c->err, c->errlen)) < 0) {
        return rc;
    }
    if (ty.len == 4 && memcmp(ty.p, "none", 4) == 0) {
        return 0;
    }
    if (!(ty.len == 6 && memcmp(ty.p, "linear", 6) == 0)) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: key '%s' is '%.*s': ferry supports none and linear (llama3-style "
                       "scaling comes as the tensor rope_freqs.weight)",
                       f, tkey, ty.len < 32 ? (int)ty.len : 32, ty.p);
    }
    float factor = 1.0f;
    const char *fkey = akey(c, "rope.scaling.factor");
    if (!fy_gguf_find(c->g, fkey)) {
        fkey = akey(c, "rope.scale_linear");
    }
    if ((rc = meta_float(c, fkey, 0.0, 1e6, 1.0, 0, &factor)) < 0) {
        return rc;
    }
    if (factor != 1.0f) {
        cfg->rope_type = FY_ROPE_LINEAR;
        cfg->rope_factor = factor;
    }
    return 0;
}

static int read_tokens(gctx *c, fy_model_config *cfg)
{
    int rc, vs = 0;
    const char *f = c->g->label;
    if ((rc = meta_i(c, akey(c, "vocab_size"), 1, FY_MODEL_MAX_VOCAB, cfg->vocab_size, &vs)) < 0) {
        return rc;
    }
    if (vs != cfg->vocab_size) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: key '%s' is %d but tensor 'token_embd.weight' has %d rows", f, c->key,
                       vs, cfg->vocab_size);
    }
    if (fy_gguf_find(c->g, "tokenizer.ggml.tokens")) {
        fy_gguf_arr a;
        if ((rc = fy_gguf_get_arr(c->g, "tokenizer.ggml.tokens", FY_GGUF_STR, &a, c->err,
                                  c->errlen)) < 0) {
            return rc;
        }
        if (a.n != (uint64_t)cfg->vocab_size) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "%s: key 'tokenizer.ggml.tokens' lists %llu tokens but tensor "
                           "'token_embd.weight' has %d rows",
                           f, (unsigned long long)a.n, cfg->vocab_size);
        }
    }
    if ((rc = meta_token(c, "tokenizer.ggml.bos_token_id", cfg->vocab_size, &cfg->bos_id)) < 0) {
        return rc;
    }
    static const char *const stops[] = {"tokenizer.ggml.eos_token_id",
                                        "tokenizer.ggml.eot_token_id",
                                        "tokenizer.ggml.eom_token_id"};
    cfg->n_eos = 0;
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        int id = -1, dup = 0;
        if ((rc = meta_token(c, stops[i], cfg->vocab_size, &id)) < 0) {
            return rc;
        }
        for (int j = 0; j < cfg->n_eos; j++) {
            dup |= cfg->eos_ids[j] == id;
        }
        if (id >= 0 && !dup) {
            cfg->eos_ids[cfg->n_eos++] = id;
        }
    }
    return 0;
}

/* --- Tensors ------------------------------------------------------------------------ */

static void fmt_dims(const uint64_t *d, int n, char *out, size_t outlen)
{
    size_t o = 0;
    out[0] = 0;
    for (int i = 0; i < n && o + 24 < outlen; i++) {
        o += (size_t)snprintf(out + o, outlen - o, "%s%llu", i ? ", " : "",
                              (unsigned long long)d[i]);
    }
}

static int keep_copy(gctx *c, void *p)
{
    void **cs = realloc(c->p->copies, (size_t)(c->p->n_copies + 1) * sizeof *cs);
    if (!cs) {
        free(p);
        return FY_ENOMEM;
    }
    c->p->copies = cs;
    cs[c->p->n_copies++] = p;
    return 0;
}

/* Looks up NAME, checks it has dims [D0] (D1 0) or [D0, D1] and, when WHAT
 * names a norm or bias, a plain type, and points T at it (rows D1, or 1, of
 * D0). OPTIONAL: absence is no error (returns 1, T->data NULL). */
static int get_tensor(gctx *c, const char *name, int64_t d0, int64_t d1, const char *what,
                      int optional, fy_tensor *t)
{
    memset(t, 0, sizeof *t);
    const char *f = c->g->label;
    const fy_gguf_tensor *gt = fy_gguf_tensor_find(c->g, name);
    if (!gt) {
        return optional
                   ? 1
                   : fy_fail(c->err, c->errlen, FY_ENOENT, "%s: tensor '%s' is missing", f, name);
    }
    c->p->used[gt - c->g->t] = 1;
    uint64_t want[FY_GGUF_MAX_DIMS] = {(uint64_t)d0, d1 ? (uint64_t)d1 : 1, 1, 1};
    if (memcmp(want, gt->dims, sizeof want) != 0) {
        char got[128], need[64];
        fmt_dims(gt->dims, gt->n_dims, got, sizeof got);
        fmt_dims(want, d1 ? 2 : 1, need, sizeof need);
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: tensor '%s' has dims [%s] but the metadata needs [%s]", f, name, got,
                       need);
    }
    int block = fy_dtype_is_block(gt->type);
    if (what && block) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: tensor '%s' is %s, but a %s must be F32, F16 or BF16", f, name,
                       fy_dtype_name(gt->type), what);
    }
    t->dtype = gt->type;
    t->rows = d1 ? d1 : 1;
    t->cols = d0;
    t->data = gt->data;
    if (!block && (uintptr_t)gt->data % fy_dtype_size(gt->type)) {
        /* general.alignment below the element size leaves the tensor
         * misaligned; the kernels load whole elements. */
        void *copy = malloc((size_t)gt->n_bytes);
        if (!copy || keep_copy(c, copy) < 0) {
            return fy_fail(c->err, c->errlen, FY_ENOMEM, "%s: out of memory copying '%s'", f, name);
        }
        memcpy(copy, gt->data, (size_t)gt->n_bytes);
        t->data = copy;
    }
    c->m->weight_bytes += (size_t)gt->n_bytes;
    return 0;
}

/* rope_freqs.weight: [head_dim/2] divisors, kept as f32. */
static int get_rope_factors(gctx *c, fy_model_config *cfg)
{
    fy_tensor t;
    int half = cfg->head_dim / 2;
    int rc = get_tensor(c, "rope_freqs.weight", half, 0, "RoPE frequency factor", 1, &t);
    if (rc != 0) {
        return rc < 0 ? rc : 0;
    }
    float *fac = malloc((size_t)half * sizeof *fac);
    if (!fac) {
        return fy_fail(c->err, c->errlen, FY_ENOMEM, "%s: out of memory", c->g->label);
    }
    c->p->factors = fac;
    for (int i = 0; i < half; i++) {
        uint16_t h;
        if (t.dtype == FY_DT_F32) {
            memcpy(&fac[i], (const float *)t.data + i, sizeof fac[i]);
        } else {
            memcpy(&h, (const uint16_t *)t.data + i, sizeof h);
            fac[i] = t.dtype == FY_DT_F16 ? fy_f16_to_f32(h) : fy_bf16_to_f32(h);
        }
        if (!(fac[i] > 0.0f) || !isfinite(fac[i])) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "%s: tensor 'rope_freqs.weight' has factor %g at %d (each must be "
                           "finite and > 0)",
                           c->g->label, (double)fac[i], i);
        }
    }
    cfg->rope_freq_factors = fac;
    return 0;
}

static int load_layer(gctx *c, int i, fy_layer *L)
{
    const fy_model_config *g = &c->m->cfg;
    int64_t H = g->hidden, Q = (int64_t)g->n_heads * g->head_dim,
            KV = (int64_t)g->n_kv_heads * g->head_dim, I = g->intermediate, D = g->head_dim;
    int bias_needed = c->arch == ARCH_QWEN2, rc, n_bias = 0;
    char n[FY_GGUF_MAX_NAME + 32];
#define LT(field, suffix, d0, d1, what, optional)                             \
    do {                                                                      \
        snprintf(n, sizeof n, "blk.%d.%s", i, suffix);                        \
        if ((rc = get_tensor(c, n, d0, d1, what, optional, &L->field)) < 0) { \
            return rc;                                                        \
        }                                                                     \
    } while (0)
    LT(attn_norm, "attn_norm.weight", H, 0, "norm", 0);
    LT(q, "attn_q.weight", H, Q, NULL, 0);
    LT(k, "attn_k.weight", H, KV, NULL, 0);
    LT(v, "attn_v.weight", H, KV, NULL, 0);
    LT(o, "attn_output.weight", Q, H, NULL, 0);
    if (c->arch != ARCH_QWEN3) {
        /* qwen2 needs them; a llama file may have them (attention_bias). */
        LT(q_bias, "attn_q.bias", Q, 0, "bias", !bias_needed);
        n_bias += L->q_bias.data != NULL;
        LT(k_bias, "attn_k.bias", KV, 0, "bias", !bias_needed);
        n_bias += L->k_bias.data != NULL;
        LT(v_bias, "attn_v.bias", KV, 0, "bias", !bias_needed);
        n_bias += L->v_bias.data != NULL;
    }
    if (c->arch == ARCH_QWEN3) {
        LT(q_norm, "attn_q_norm.weight", D, 0, "norm", 0);
        LT(k_norm, "attn_k_norm.weight", D, 0, "norm", 0);
    }
    LT(mlp_norm, "ffn_norm.weight", H, 0, "norm", 0);
    LT(gate, "ffn_gate.weight", H, I, NULL, 0);
    LT(up, "ffn_up.weight", H, I, NULL, 0);
    LT(down, "ffn_down.weight", I, H, NULL, 0);
#undef LT
    if (n_bias) {
        c->m->cfg.qkv_bias = 1;
    }
    return 0;
}

/* Every tensor of the file was taken: one that was not means the file is
 * not the model its metadata describes. */
static int check_all_used(gctx *c)
{
    for (uint64_t i = 0; i < c->g->n_tensors; i++) {
        if (!c->p->used[i]) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "%s: tensor '%s' is not part of a %s model with %d layers (the "
                           "tensors disagree with the metadata)",
                           c->g->label, c->g->t[i].name, arch_names[c->arch], c->m->cfg.n_layers);
        }
    }
    return 0;
}

static int load_tensors(gctx *c)
{
    fy_model *m = c->m;
    fy_model_config *cfg = &m->cfg;
    const char *f = c->g->label;
    const fy_gguf_tensor *te = fy_gguf_tensor_find(c->g, "token_embd.weight");
    if (!te) {
        return fy_fail(c->err, c->errlen, FY_ENOENT, "%s: tensor 'token_embd.weight' is missing",
                       f);
    }
    if (te->n_dims != 2 || te->dims[1] > FY_MODEL_MAX_VOCAB) {
        char got[128];
        fmt_dims(te->dims, te->n_dims, got, sizeof got);
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: tensor 'token_embd.weight' has dims [%s] but needs [%d, vocabulary "
                       "size <= %d]",
                       f, got, cfg->hidden, FY_MODEL_MAX_VOCAB);
    }
    cfg->vocab_size = (int)te->dims[1];
    int rc;
    if ((rc = read_tokens(c, cfg)) < 0 ||
        (rc = get_tensor(c, "token_embd.weight", cfg->hidden, cfg->vocab_size, NULL, 0,
                         &m->embed)) < 0 ||
        (rc = get_tensor(c, "output_norm.weight", cfg->hidden, 0, "norm", 0, &m->norm)) < 0 ||
        (rc = get_tensor(c, "output.weight", cfg->hidden, cfg->vocab_size, NULL, 1, &m->lm_head)) <
            0) {
        return rc;
    }
    if (rc == 1) { /* no output.weight: the head is the embedding */
        m->lm_head = m->embed;
        cfg->tie_embeddings = 1;
    }
    if ((rc = get_rope_factors(c, cfg)) < 0) {
        return rc;
    }
    if (!(m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers))) {
        return fy_fail(c->err, c->errlen, FY_ENOMEM, "%s: out of memory", f);
    }
    for (int i = 0; i < cfg->n_layers; i++) {
        if ((rc = load_layer(c, i, &m->layers[i])) < 0) {
            return rc;
        }
    }
    return check_all_used(c);
}

/* NAME; else general.name when it is printable UTF-8 that fits; else the
 * file's name without its directory and ".gguf". */
static void set_name(gctx *c, const char *path, const char *name)
{
    char *out = c->m->name;
    size_t outlen = sizeof c->m->name;
    if (name) {
        snprintf(out, outlen, "%s", name);
        return;
    }
    const fy_gguf_kv *kv = fy_gguf_find(c->g, "general.name");
    if (kv && kv->v.type == FY_GGUF_STR && kv->v.s.len > 0 && kv->v.s.len < outlen &&
        fy_utf8_valid(kv->v.s.p, (size_t)kv->v.s.len)) {
        int printable = 1;
        for (uint64_t i = 0; i < kv->v.s.len; i++) {
            printable &= (unsigned char)kv->v.s.p[i] >= 0x20 && kv->v.s.p[i] != 0x7f;
        }
        if (printable) {
            snprintf(out, outlen, "%.*s", (int)kv->v.s.len, kv->v.s.p);
            return;
        }
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcasecmp(base + n - 5, ".gguf") == 0) {
        n -= 5;
    }
    snprintf(out, outlen, "%.*s", (int)(n < outlen ? n : outlen - 1), base);
}

void fy__model_gguf_free(fy_model *m)
{
    if (!m) {
        return;
    }
    gguf_priv *p = m->priv;
    if (p) {
        for (int i = 0; i < p->n_copies; i++) {
            free(p->copies[i]);
        }
        free(p->copies);
        free(p->factors);
        free(p->used);
        fy_gguf_free(p->g);
        free(p);
    }
    free(m->layers);
    free(m);
}

int fy__model_gguf_load(const char *path, const char *name, fy_model **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    fy_gguf *g = NULL;
    int rc = fy_gguf_open(path, &g, err, errlen);
    return rc < 0 ? rc : fy__model_gguf_from(g, name, out, err, errlen);
}

int fy__model_gguf_from(fy_gguf *g, const char *name, fy_model **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *path = g->label;
    fy_model *m = calloc(1, sizeof *m);
    gguf_priv *p = calloc(1, sizeof *p);
    if (!m || !p) {
        free(m);
        free(p);
        fy_gguf_free(g);
        return fy_fail(err, errlen, FY_ENOMEM, "%s: out of memory", path);
    }
    m->priv = p;
    p->g = g;
    m->gguf = p->g;
    int rc;
    gctx c = {.m = m, .p = p, .g = p->g, .err = err, .errlen = errlen};
    if (!(p->used = calloc((size_t)p->g->n_tensors + 1, 1))) {
        rc = fy_fail(err, errlen, FY_ENOMEM, "%s: out of memory", path);
    } else if ((rc = read_arch(&c)) == 0 && (rc = read_shapes(&c, &m->cfg)) == 0 &&
               (rc = read_rope(&c, &m->cfg)) == 0) {
        m->cfg.rope_pairs = c.arch == ARCH_LLAMA ? FY_ROPE_PAIRS_ADJACENT : FY_ROPE_PAIRS_HALF;
        m->cfg.qkv_bias = c.arch == ARCH_QWEN2;
        rc = load_tensors(&c);
    }
    if (rc < 0) {
        fy__model_gguf_free(m);
        return rc;
    }
    set_name(&c, path, name);
    *out = m;
    return 0;
}
