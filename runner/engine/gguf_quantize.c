/* gguf_quantize.c: a GGUF file rewritten under a quantization mix
 * (gguf_quantize.h). */
#include "runner/engine/gguf_quantize.h"

#include "common/err.h"
#include "common/fsutil.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"
#include "runner/engine/gguf_write.h"
#include "runner/engine/model.h"
#include "runner/engine/tokenizer.h"

#include <jansson.h>
#include <math.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct {
    const char *name;
    fy_dtype base;
    uint32_t file_type; /* llama.cpp's llama_ftype */
} mixes[FY_QMIX_COUNT] = {
    [FY_QMIX_F16] = {"f16", FY_DT_F16, 1},         [FY_QMIX_Q8_0] = {"q8_0", FY_DT_Q8_0, 7},
    [FY_QMIX_Q4_0] = {"q4_0", FY_DT_Q4_0, 2},      [FY_QMIX_Q4_K_M] = {"q4_k_m", FY_DT_Q4_K, 15},
    [FY_QMIX_Q5_K_M] = {"q5_k_m", FY_DT_Q5_K, 17}, [FY_QMIX_Q6_K] = {"q6_k", FY_DT_Q6_K, 18},
};

int fy_qmix_parse(const char *s, fy_qmix *out)
{
    for (int i = 0; s && i < FY_QMIX_COUNT; i++) {
        if (strcasecmp(s, mixes[i].name) == 0) {
            *out = (fy_qmix)i;
            return 0;
        }
    }
    return FY_EINVAL;
}

const char *fy_qmix_name(fy_qmix m)
{
    return (unsigned)m < FY_QMIX_COUNT ? mixes[m].name : "?";
}

const char *fy_qmix_names(void)
{
    return "f16|q8_0|q4_0|q4_k_m|q5_k_m|q6_k";
}

/* llama.cpp's choice of the layers that get more bits in the _M mixes. */
static int use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* The layer of a "blk.N." tensor, or -1. */
static int layer_of(const char *name)
{
    if (strncmp(name, "blk.", 4) != 0) {
        return -1;
    }
    char *end;
    long l = strtol(name + 4, &end, 10);
    return end != name + 4 && *end == '.' && l >= 0 && l < 100000 ? (int)l : -1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

fy_dtype fy_qmix_tensor_type(fy_qmix mix, const char *name, int n_dims, uint64_t cols, int n_layers,
                             int tied, int *fallback)
{
    if (fallback) {
        *fallback = 0;
    }
    if (n_dims < 2 || !ends_with(name, ".weight")) {
        return FY_DT_F32;
    }
    fy_dtype t = mixes[mix].base;
    int km = mix == FY_QMIX_Q4_K_M || mix == FY_QMIX_Q5_K_M, layer = layer_of(name);
    if (t == FY_DT_F16) {
        /* "every matrix F16", the output head too (as convert_hf_to_gguf.py
         * --outtype f16 writes it): it is not a quantization to correct. */
    } else if (strcmp(name, "output.weight") == 0 ||
               (tied && strcmp(name, "token_embd.weight") == 0)) {
        if (cols % 256) {
            t = FY_DT_Q8_0;
        } else if (t != FY_DT_Q8_0 && t != FY_DT_F16) {
            t = FY_DT_Q6_K;
        }
    } else if (km && layer >= 0 &&
               (ends_with(name, ".attn_v.weight") || ends_with(name, ".ffn_down.weight")) &&
               use_more_bits(layer, n_layers)) {
        t = FY_DT_Q6_K;
    }
    if (cols % fy_dtype_block_weights(t)) {
        t = t == FY_DT_Q4_K ? FY_DT_Q5_0 : t == FY_DT_Q5_K ? FY_DT_Q5_1 : FY_DT_Q8_0;
        if (cols % fy_dtype_block_weights(t)) {
            t = FY_DT_F16;
        }
        if (fallback) {
            *fallback = 1;
        }
    }
    return t;
}

/* --- Converting rows, in parallel ------------------------------------------------------ */

/* Row R of a tensor whose rows are permuted per head of HD rows: GGUF's
 * adjacent-pair RoPE order from HF's rotate-half order, as llama.cpp's
 * converter permutes llama's q and k (row 2i + j of a head is HF row
 * j * HD/2 + i). HD 0: rows in order. */
static uint64_t src_row(uint64_t r, uint32_t hd)
{
    if (!hd) {
        return r;
    }
    uint64_t h = r / hd, w = r % hd;
    return h * hd + (w % 2) * (hd / 2) + w / 2;
}

typedef struct {
    const fy_gguf_tensor *src;
    uint32_t perm_hd;
    fy_dtype to;
    uint64_t row0, rows; /* the chunk */
    uint64_t out_row_bytes;
    uint8_t *out;
    int n_threads;
    int rc;
    pthread_mutex_t mu;
} conv_job;

typedef struct {
    conv_job *j;
    int k;
} conv_arg;

static void *conv_thread(void *arg)
{
    conv_arg *a = arg;
    conv_job *j = a->j;
    uint64_t cols = j->src->dims[0];
    float *row = malloc((size_t)cols * sizeof *row);
    int rc = row ? 0 : FY_ENOMEM;
    for (uint64_t r = (uint64_t)a->k; rc == 0 && r < j->rows; r += (uint64_t)j->n_threads) {
        const uint8_t *in =
            (const uint8_t *)j->src->data + src_row(j->row0 + r, j->perm_hd) * j->src->row_bytes;
        rc = fy_q_dequant(j->src->type, in, row, (size_t)cols);
        if (rc == 0) {
            rc = fy_q_quantize(j->to, row, j->out + r * j->out_row_bytes, (size_t)cols);
        }
    }
    free(row);
    if (rc) {
        pthread_mutex_lock(&j->mu);
        j->rc = rc;
        pthread_mutex_unlock(&j->mu);
    }
    return NULL;
}

/* Converts rows [row0, row0 + rows) of J->src into J->out on N threads
 * (this one included; a share whose thread cannot start runs here). */
static int conv_rows(conv_job *j)
{
    pthread_t th[64];
    conv_arg args[64];
    int started[64] = {0};
    j->rc = 0;
    for (int k = 1; k < j->n_threads; k++) {
        args[k] = (conv_arg){j, k};
        started[k] = pthread_create(&th[k], NULL, conv_thread, &args[k]) == 0;
    }
    args[0] = (conv_arg){j, 0};
    conv_thread(&args[0]);
    for (int k = 1; k < j->n_threads; k++) {
        if (started[k]) {
            pthread_join(th[k], NULL);
        } else {
            conv_thread(&args[k]);
        }
    }
    return j->rc;
}

/* --- The file ---------------------------------------------------------------------------- */

static int fail(char *err, size_t errlen, int rc, const char *fmt, const char *a, const char *b)
{
    snprintf(err, errlen, fmt, a, b, fy_strerror(rc));
    return rc;
}

static int normalize_threads(int threads)
{
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    return threads > 64 ? 64 : threads;
}

/* What the GGUF and the Hugging Face paths hand the shared writer: the
 * tensors in file order, as views of their source bytes. */
typedef struct {
    const char *label; /* the input, for messages */
    const fy_gguf_tensor *t;
    size_t n;
    const uint32_t *perm_hd; /* [n] fy_src_row's HD per tensor; NULL: none permuted */
    int keep_vectors;        /* 1-D tensors keep their type (else F32) */
    int n_layers, tied;
} q_plan;

/* Declares P's tensors in W (its metadata already added) under MIX, then
 * writes the file at OUT: each tensor copied when its type stays and its
 * rows keep their order, else converted row by row. */
static int write_tensors(fy_gguf_writer *w, const char *out, fy_qmix mix, int threads,
                         const q_plan *p, fy_quantize_progress cb, void *cb_data, char *err,
                         size_t errlen)
{
    size_t n = p->n;
    fy_dtype *to = calloc(n ? n : 1, sizeof *to);
    int *fb = calloc(n ? n : 1, sizeof *fb);
    uint8_t *buf = NULL;
    int rc = 0;
    if (!to || !fb) {
        rc = FY_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    uint64_t max_row = 0;
    for (size_t i = 0; i < n; i++) {
        const fy_gguf_tensor *t = &p->t[i];
        to[i] =
            fy_qmix_tensor_type(mix, t->name, t->n_dims, t->dims[0], p->n_layers, p->tied, &fb[i]);
        if (t->n_dims < 2 && p->keep_vectors) {
            to[i] = t->type; /* 1-D tensors are copied as they are */
        }
        if ((rc = fy_gguf_w_tensor(w, t->name, to[i], t->n_dims, t->dims)) < 0) {
            rc = fail(err, errlen, rc, "%s: tensor '%s': %s", out, t->name);
            goto out;
        }
        uint64_t rb = fy_gguf_w_tensor_bytes(w, i) / t->n_rows;
        max_row = rb > max_row ? rb : max_row;
    }
    /* Rows are converted a chunk at a time: at most 64 MiB of output held. */
    uint64_t chunk_bytes = 64u << 20;
    if (max_row > chunk_bytes) {
        chunk_bytes = max_row;
    }
    if (!(buf = malloc((size_t)chunk_bytes))) {
        rc = FY_ENOMEM;
        snprintf(err, errlen, "out of memory for a %llu-byte conversion buffer",
                 (unsigned long long)chunk_bytes);
        goto out;
    }
    if ((rc = fy_gguf_w_begin(w, out, err, errlen)) < 0) {
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const fy_gguf_tensor *t = &p->t[i];
        uint32_t hd = p->perm_hd ? p->perm_hd[i] : 0;
        fy_quantize_step st = {i, n, t->name, t->type, to[i], fb[i]};
        if (cb) {
            cb(cb_data, &st);
        }
        if (to[i] == t->type && !hd) {
            rc = fy_gguf_w_tensor_data(w, t->data, (size_t)t->n_bytes, err, errlen);
            if (rc) {
                goto out;
            }
            continue;
        }
        uint64_t orb = fy_gguf_w_tensor_bytes(w, i) / t->n_rows;
        uint64_t per = chunk_bytes / orb;
        conv_job j = {.src = t,
                      .perm_hd = hd,
                      .to = to[i],
                      .out_row_bytes = orb,
                      .out = buf,
                      .n_threads = normalize_threads(threads)};
        pthread_mutex_init(&j.mu, NULL);
        for (uint64_t r = 0; rc == 0 && r < t->n_rows; r += per) {
            j.row0 = r;
            j.rows = t->n_rows - r < per ? t->n_rows - r : per;
            if ((rc = conv_rows(&j)) < 0) {
                snprintf(err, errlen, "%s: tensor '%s': %s", p->label, t->name,
                         rc == FY_EINVAL ? "a weight is NaN or infinite" : fy_strerror(rc));
            } else {
                rc = fy_gguf_w_tensor_data(w, buf, (size_t)(j.rows * orb), err, errlen);
            }
        }
        pthread_mutex_destroy(&j.mu);
        if (rc) {
            goto out;
        }
    }
    if (cb) {
        fy_quantize_step st = {n, n, NULL, FY_DT_F32, FY_DT_F32, 0};
        cb(cb_data, &st);
    }
    rc = fy_gguf_w_commit(w, err, errlen);
out:
    free(buf);
    free(to);
    free(fb);
    return rc;
}

static int put_file_type(fy_gguf_writer *w, fy_qmix mix, const char *label, char *err,
                         size_t errlen)
{
    int rc = fy_gguf_w_u32(w, "general.quantization_version", 2);
    rc = rc ? rc : fy_gguf_w_u32(w, "general.file_type", mixes[mix].file_type);
    if (rc) {
        snprintf(err, errlen, "%s: metadata: %s", label, fy_strerror(rc));
    }
    return rc;
}

static int copy_metadata(const fy_gguf *g, fy_gguf_writer *w, fy_qmix mix, char *err, size_t errlen)
{
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const char *k = g->kv[i].key;
        if (strcmp(k, "general.alignment") == 0 || strcmp(k, "general.file_type") == 0 ||
            strcmp(k, "general.quantization_version") == 0) {
            continue;
        }
        int rc = fy_gguf_w_copy(w, k, &g->kv[i].v);
        if (rc) {
            return fail(err, errlen, rc, "%s: key '%s' cannot be copied: %s", g->label, k);
        }
    }
    return put_file_type(w, mix, g->label, err, errlen);
}

static int quantize_gguf(const char *in, const char *out, fy_qmix mix, int threads,
                         fy_quantize_progress cb, void *cb_data, char *err, size_t errlen)
{
    fy_gguf *g = NULL;
    int rc = fy_gguf_open(in, &g, err, errlen);
    if (rc) {
        return rc;
    }
    fy_gguf_str arch;
    uint32_t n_layers = 0;
    char key[128];
    if (fy_gguf_get_str(g, "general.architecture", &arch, err, errlen) == 0 && arch.len < 64) {
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.p);
        fy_gguf_get_u32(g, key, &n_layers, err, errlen);
    }
    q_plan p = {.label = in,
                .t = g->t,
                .n = (size_t)g->n_tensors,
                .keep_vectors = 1,
                .n_layers = (int)n_layers,
                .tied = fy_gguf_tensor_find(g, "output.weight") == NULL};
    fy_gguf_writer *w = NULL;
    if ((rc = fy_gguf_w_new(g->alignment, &w)) < 0) {
        snprintf(err, errlen, "out of memory");
    } else if ((rc = copy_metadata(g, w, mix, err, errlen)) == 0) {
        rc = write_tensors(w, out, mix, threads, &p, cb, cb_data, err, errlen);
    }
    fy_gguf_w_free(w);
    fy_gguf_free(g);
    return rc;
}

/* --- A Hugging Face directory ------------------------------------------------------------ */

/* The tensors of a Hugging Face model under the names, shapes and row order
 * llama.cpp's convert_hf_to_gguf.py gives them. */
typedef struct {
    fy_gguf_tensor *t;
    uint32_t *perm_hd;
    char (*names)[FY_GGUF_MAX_NAME + 1];
    size_t n, cap;
} hf_list;

static void hf_add(hf_list *l, const char *name, const fy_tensor *src, uint32_t perm_hd)
{
    if (!src->data || l->n == l->cap) {
        return; /* absent (no bias); the list was sized for every tensor */
    }
    size_t i = l->n++;
    fy_gguf_tensor *t = &l->t[i];
    snprintf(l->names[i], sizeof l->names[i], "%s", name);
    memset(t, 0, sizeof *t);
    t->name = l->names[i];
    t->type = src->dtype;
    t->n_dims = src->rows > 1 ? 2 : 1;
    t->dims[0] = (uint64_t)src->cols;
    t->dims[1] = (uint64_t)src->rows;
    t->dims[2] = t->dims[3] = 1;
    t->n_rows = (uint64_t)src->rows;
    t->n_elems = t->n_rows * t->dims[0];
    t->row_bytes = t->dims[0] * fy_dtype_size(src->dtype);
    t->n_bytes = t->n_rows * t->row_bytes;
    t->data = src->data;
    l->perm_hd[i] = perm_hd;
}

static int hf_tensors(const fy_model *m, int permute, const float *rope_freqs, hf_list *l)
{
    const fy_model_config *c = &m->cfg;
    l->cap = 4 + (size_t)c->n_layers * 12;
    l->t = calloc(l->cap, sizeof *l->t);
    l->perm_hd = calloc(l->cap, sizeof *l->perm_hd);
    l->names = calloc(l->cap, sizeof *l->names);
    if (!l->t || !l->perm_hd || !l->names) {
        return FY_ENOMEM;
    }
    uint32_t hd = permute ? (uint32_t)c->head_dim : 0;
    fy_tensor freqs = {rope_freqs, FY_DT_F32, 1, c->head_dim / 2};
    hf_add(l, "rope_freqs.weight", &freqs, 0);
    hf_add(l, "token_embd.weight", &m->embed, 0);
    hf_add(l, "output_norm.weight", &m->norm, 0);
    if (!c->tie_embeddings) {
        hf_add(l, "output.weight", &m->lm_head, 0);
    }
    for (int i = 0; i < c->n_layers; i++) {
        const fy_layer *y = &m->layers[i];
        const struct {
            const char *name;
            const fy_tensor *t;
            uint32_t hd;
        } ts[] = {
            {"attn_norm.weight", &y->attn_norm, 0}, {"attn_q.weight", &y->q, hd},
            {"attn_q.bias", &y->q_bias, 0},         {"attn_k.weight", &y->k, hd},
            {"attn_k.bias", &y->k_bias, 0},         {"attn_v.weight", &y->v, 0},
            {"attn_v.bias", &y->v_bias, 0},         {"attn_output.weight", &y->o, 0},
            {"ffn_norm.weight", &y->mlp_norm, 0},   {"ffn_gate.weight", &y->gate, 0},
            {"ffn_up.weight", &y->up, 0},           {"ffn_down.weight", &y->down, 0},
        };
        for (size_t k = 0; k < sizeof ts / sizeof ts[0]; k++) {
            char name[FY_GGUF_MAX_NAME + 1];
            snprintf(name, sizeof name, "blk.%d.%s", i, ts[k].name);
            hf_add(l, name, ts[k].t, ts[k].hd);
        }
    }
    return 0;
}

static void hf_list_free(hf_list *l)
{
    free(l->t);
    free(l->perm_hd);
    free(l->names);
}

/* The chat template beside the weights (chat_template.jinja, else
 * tokenizer_config.json's "chat_template": a string, or the "default" of a
 * list of named ones); *OUT NULL when there is none. */
static int hf_chat_template(const char *dir, char **out, size_t *len, char *err, size_t errlen)
{
    char path[4096];
    *out = NULL;
    *len = 0;
    if (fy_path_join(path, sizeof path, dir, "chat_template.jinja") == 0 && fy_file_exists(path)) {
        int rc = fy_file_read(path, 4u << 20, out, len);
        if (rc) {
            snprintf(err, errlen, "%s: %s", path, fy_strerror(rc));
        }
        return rc;
    }
    if (fy_path_join(path, sizeof path, dir, "tokenizer_config.json") < 0 ||
        !fy_file_exists(path)) {
        return 0;
    }
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *ct = json_object_get(root, "chat_template");
    const char *s = json_is_string(ct) ? json_string_value(ct) : NULL;
    for (size_t i = 0; json_is_array(ct) && i < json_array_size(ct); i++) {
        json_t *e = json_array_get(ct, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        if (name && strcmp(name, "default") == 0) {
            s = json_string_value(json_object_get(e, "template"));
        }
    }
    int rc = 0;
    if (!root) {
        snprintf(err, errlen, "%s: line %d: %s", path, je.line, je.text);
        rc = FY_EPARSE;
    } else if (s && !(*out = strdup(s))) {
        rc = FY_ENOMEM;
        snprintf(err, errlen, "out of memory");
    } else if (s) {
        *len = strlen(s);
    }
    json_decref(root);
    return rc;
}

/* llama.cpp's general.architecture for a config.json architecture, and
 * whether its q/k rows are permuted; NULL for one it has no mapping for. */
static const char *hf_arch(const char *hf, int *permute)
{
    *permute = strcmp(hf, "Qwen2ForCausalLM") != 0;
    return strcmp(hf, "LlamaForCausalLM") == 0 || strcmp(hf, "MistralForCausalLM") == 0 ? "llama"
           : strcmp(hf, "Qwen2ForCausalLM") == 0                                        ? "qwen2"
                                                                                        : NULL;
}

static int hf_metadata(const fy_model *m, const char *arch, fy_gguf_writer *w)
{
    const fy_model_config *c = &m->cfg;
    char k[160];
#define AKEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    int rc = fy_gguf_w_str(w, "general.architecture", arch, strlen(arch));
    rc = rc ? rc : fy_gguf_w_str(w, "general.name", m->name, strlen(m->name));
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("block_count"), (uint32_t)c->n_layers);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("context_length"), (uint32_t)c->max_pos);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("embedding_length"), (uint32_t)c->hidden);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("feed_forward_length"), (uint32_t)c->intermediate);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("attention.head_count"), (uint32_t)c->n_heads);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("attention.head_count_kv"), (uint32_t)c->n_kv_heads);
    rc = rc ? rc : fy_gguf_w_f32(w, AKEY("rope.freq_base"), c->rope_theta);
    rc = rc ? rc : fy_gguf_w_f32(w, AKEY("attention.layer_norm_rms_epsilon"), c->rms_eps);
    if (rc == 0 && c->head_dim * c->n_heads != c->hidden) {
        rc = fy_gguf_w_u32(w, AKEY("attention.key_length"), (uint32_t)c->head_dim);
        rc = rc ? rc : fy_gguf_w_u32(w, AKEY("attention.value_length"), (uint32_t)c->head_dim);
    }
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("vocab_size"), (uint32_t)c->vocab_size);
    rc = rc ? rc : fy_gguf_w_u32(w, AKEY("rope.dimension_count"), (uint32_t)c->head_dim);
    if (rc == 0 && c->rope_type == FY_ROPE_LINEAR) {
        rc = fy_gguf_w_str(w, AKEY("rope.scaling.type"), "linear", 6);
        rc = rc ? rc : fy_gguf_w_f32(w, AKEY("rope.scaling.factor"), c->rope_factor);
    }
#undef AKEY
    return rc;
}

static int quantize_hf(const char *dir, const char *out, fy_qmix mix, int threads,
                       fy_quantize_progress cb, void *cb_data, char *err, size_t errlen)
{
    fy_model *m = NULL;
    fy_tokenizer *tok = NULL;
    fy_gguf_writer *w = NULL;
    hf_list l = {0};
    float *freqs = NULL;
    char *tmpl = NULL;
    size_t tmpl_len = 0;
    int permute = 0, rc = fy_model_load(dir, &m, err, errlen);
    if (rc) {
        return rc;
    }
    const fy_model_config *c = &m->cfg;
    const char *arch = hf_arch(c->arch, &permute);
    if (!arch) {
        rc = FY_ENOTSUP;
        snprintf(err, errlen, "%s: architecture '%s' has no GGUF conversion in ferry", dir,
                 c->arch);
        goto out;
    }
    if ((rc = fy_tokenizer_load(dir, &tok, err, errlen)) ||
        (rc = hf_chat_template(dir, &tmpl, &tmpl_len, err, errlen))) {
        goto out;
    }
    if (fy_tokenizer_vocab_size(tok) > c->vocab_size) {
        rc = FY_EINVAL;
        snprintf(err, errlen,
                 "%s: tokenizer.json has %d tokens but config.json's vocab_size is %d: the "
                 "model has no embedding for the last ones",
                 dir, fy_tokenizer_vocab_size(tok), c->vocab_size);
        goto out;
    }
    if (c->rope_type == FY_ROPE_LLAMA3) {
        /* llama.cpp stores Llama 3's scaling as per-frequency divisors. */
        int half = c->head_dim / 2;
        float *inv = malloc((size_t)half * sizeof *inv);
        if ((freqs = malloc((size_t)half * sizeof *freqs)) && inv) {
            fy_model_rope_inv_freq(c, inv);
            for (int i = 0; i < half; i++) {
                freqs[i] = powf(c->rope_theta, -2.0f * (float)i / (float)c->head_dim) / inv[i];
            }
        }
        free(inv);
    }
    if ((c->rope_type == FY_ROPE_LLAMA3 && !freqs) || hf_tensors(m, permute, freqs, &l) ||
        fy_gguf_w_new(0, &w)) {
        rc = FY_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    rc = hf_metadata(m, arch, w);
    rc = rc ? rc : put_file_type(w, mix, dir, err, errlen);
    if (rc == 0 && (rc = fy_tokenizer_to_gguf(tok, c->vocab_size, w, err, errlen))) {
        goto out;
    }
    if (rc == 0 && tmpl) {
        rc = fy_gguf_w_str(w, "tokenizer.chat_template", tmpl, tmpl_len);
    }
    if (rc) {
        snprintf(err, errlen, "%s: metadata: %s", dir, fy_strerror(rc));
        goto out;
    }
    q_plan p = {.label = dir,
                .t = l.t,
                .n = l.n,
                .perm_hd = l.perm_hd,
                .n_layers = c->n_layers,
                .tied = c->tie_embeddings};
    rc = write_tensors(w, out, mix, threads, &p, cb, cb_data, err, errlen);
out:
    fy_gguf_w_free(w);
    hf_list_free(&l);
    free(freqs);
    free(tmpl);
    fy_tokenizer_free(tok);
    fy_model_free(m);
    return rc;
}

int fy_quantize_gguf(const char *in, const char *out, fy_qmix mix, int threads,
                     fy_quantize_progress cb, void *cb_data, char *err, size_t errlen)
{
    if ((unsigned)mix >= FY_QMIX_COUNT) {
        snprintf(err, errlen, "unknown quantization mix");
        return FY_EINVAL;
    }
    struct stat st;
    if (stat(in, &st) == 0 && S_ISDIR(st.st_mode)) {
        return quantize_hf(in, out, mix, threads, cb, cb_data, err, errlen);
    }
    return quantize_gguf(in, out, mix, threads, cb, cb_data, err, errlen);
}
