/* gguf_quantize.c: a GGUF file rewritten under a quantization mix
 * (gguf_quantize.h). */
#include "runner/engine/gguf_quantize.h"

#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"
#include "runner/engine/gguf_write.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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
    if (strcmp(name, "output.weight") == 0 || (tied && strcmp(name, "token_embd.weight") == 0)) {
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

typedef struct {
    const fy_gguf_tensor *src;
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
        const uint8_t *in = (const uint8_t *)j->src->data + (j->row0 + r) * j->src->row_bytes;
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
    int rc = fy_gguf_w_u32(w, "general.quantization_version", 2);
    rc = rc ? rc : fy_gguf_w_u32(w, "general.file_type", mixes[mix].file_type);
    if (rc) {
        snprintf(err, errlen, "%s: metadata: %s", g->label, fy_strerror(rc));
    }
    return rc;
}

int fy_quantize_gguf(const char *in, const char *out, fy_qmix mix, int threads,
                     fy_quantize_progress cb, void *cb_data, char *err, size_t errlen)
{
    if ((unsigned)mix >= FY_QMIX_COUNT) {
        snprintf(err, errlen, "unknown quantization mix");
        return FY_EINVAL;
    }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    threads = threads > 64 ? 64 : threads;
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
    int tied = fy_gguf_tensor_find(g, "output.weight") == NULL;
    fy_gguf_writer *w = NULL;
    fy_dtype *to = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *to);
    int *fb = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *fb);
    uint8_t *buf = NULL;
    if (!to || !fb || (rc = fy_gguf_w_new(g->alignment, &w)) < 0) {
        rc = rc ? rc : FY_ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if ((rc = copy_metadata(g, w, mix, err, errlen)) < 0) {
        goto out;
    }
    uint64_t max_row = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fy_gguf_tensor *t = &g->t[i];
        to[i] =
            fy_qmix_tensor_type(mix, t->name, t->n_dims, t->dims[0], (int)n_layers, tied, &fb[i]);
        if (t->n_dims < 2) {
            to[i] = t->type; /* 1-D tensors are copied as they are */
        }
        if ((rc = fy_gguf_w_tensor(w, t->name, to[i], t->n_dims, t->dims)) < 0) {
            rc = fail(err, errlen, rc, "%s: tensor '%s': %s", out, t->name);
            goto out;
        }
        uint64_t rb = fy_gguf_w_tensor_bytes(w, (size_t)i) / t->n_rows;
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
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const fy_gguf_tensor *t = &g->t[i];
        fy_quantize_step st = {(size_t)i, (size_t)g->n_tensors, t->name, t->type, to[i], fb[i]};
        if (cb) {
            cb(cb_data, &st);
        }
        if (to[i] == t->type) {
            rc = fy_gguf_w_tensor_data(w, t->data, (size_t)t->n_bytes, err, errlen);
            if (rc) {
                goto out;
            }
            continue;
        }
        uint64_t orb = fy_gguf_w_tensor_bytes(w, (size_t)i) / t->n_rows;
        uint64_t per = chunk_bytes / orb;
        conv_job j = {
            .src = t, .to = to[i], .out_row_bytes = orb, .out = buf, .n_threads = threads};
        pthread_mutex_init(&j.mu, NULL);
        for (uint64_t r = 0; rc == 0 && r < t->n_rows; r += per) {
            j.row0 = r;
            j.rows = t->n_rows - r < per ? t->n_rows - r : per;
            if ((rc = conv_rows(&j)) < 0) {
                snprintf(err, errlen, "%s: tensor '%s': %s", in, t->name,
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
        fy_quantize_step st = {
            (size_t)g->n_tensors, (size_t)g->n_tensors, NULL, FY_DT_F32, FY_DT_F32, 0};
        cb(cb_data, &st);
    }
    rc = fy_gguf_w_commit(w, err, errlen);
out:
    free(buf);
    free(to);
    free(fb);
    fy_gguf_w_free(w);
    fy_gguf_free(g);
    return rc;
}
