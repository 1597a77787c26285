/* model_fixture.h: tiny random Llama-family models written to a directory
 * (config.json + model.safetensors), for the model, backend and forward
 * tests. Header-only; include from one test file. */
#ifndef FY_TEST_MODEL_FIXTURE_H
#define FY_TEST_MODEL_FIXTURE_H

#include "kernels/backend.h"
#include "runner/engine/forward.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int vocab, hidden, inter, layers, heads, kv_heads, head_dim; /* head_dim 0: hidden/heads */
    int qwen; /* Qwen2ForCausalLM with q/k/v biases */
    int tied; /* tie_word_embeddings, no lm_head.weight */
    fy_dtype dt;
    const char *skip;      /* a tensor left out */
    const char *bad_shape; /* a tensor written with one row too many */
} fx_shape;

static inline uint32_t fx_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* Uniform in [-a, a). */
static inline float fx_uniform(uint32_t *s, float a)
{
    return ((float)(fx_rand(s) >> 8) / 16777216.0f * 2.0f - 1.0f) * a;
}

typedef struct {
    char name[128];
    int64_t rows, cols; /* cols 0: 1-D */
    int norm;           /* 1: values near 1 (norm weights) */
} fx_tensor;

static inline int fx_tensors(const fx_shape *s, fx_tensor *t)
{
    int n = 0, hd = s->head_dim ? s->head_dim : s->hidden / s->heads;
    int64_t Q = (int64_t)s->heads * hd, KV = (int64_t)s->kv_heads * hd;
#define FX_ADD(nm, r, c, nrm)                               \
    do {                                                    \
        snprintf(t[n].name, sizeof t[n].name, "%s", nm);    \
        t[n].rows = r, t[n].cols = c, t[n].norm = nrm, n++; \
    } while (0)
    FX_ADD("model.embed_tokens.weight", s->vocab, s->hidden, 0);
    FX_ADD("model.norm.weight", s->hidden, 0, 1);
    if (!s->tied) {
        FX_ADD("lm_head.weight", s->vocab, s->hidden, 0);
    }
    for (int l = 0; l < s->layers; l++) {
        char b[128];
#define FX_L(suffix, r, c, nrm)                                 \
    do {                                                        \
        snprintf(b, sizeof b, "model.layers.%d.%s", l, suffix); \
        FX_ADD(b, r, c, nrm);                                   \
    } while (0)
        FX_L("input_layernorm.weight", s->hidden, 0, 1);
        FX_L("self_attn.q_proj.weight", Q, s->hidden, 0);
        FX_L("self_attn.k_proj.weight", KV, s->hidden, 0);
        FX_L("self_attn.v_proj.weight", KV, s->hidden, 0);
        if (s->qwen) {
            FX_L("self_attn.q_proj.bias", Q, 0, 0);
            FX_L("self_attn.k_proj.bias", KV, 0, 0);
            FX_L("self_attn.v_proj.bias", KV, 0, 0);
        }
        FX_L("self_attn.o_proj.weight", s->hidden, Q, 0);
        FX_L("post_attention_layernorm.weight", s->hidden, 0, 1);
        FX_L("mlp.gate_proj.weight", s->inter, s->hidden, 0);
        FX_L("mlp.up_proj.weight", s->inter, s->hidden, 0);
        FX_L("mlp.down_proj.weight", s->hidden, s->inter, 0);
#undef FX_L
    }
#undef FX_ADD
    return n;
}

static inline void fx_put(void *dst, fy_dtype dt, size_t i, float v)
{
    if (dt == FY_DT_F32) {
        ((float *)dst)[i] = v;
    } else if (dt == FY_DT_F16) {
        ((uint16_t *)dst)[i] = fy_f32_to_f16(v);
    } else {
        ((uint16_t *)dst)[i] = fy_f32_to_bf16(v);
    }
}

static inline int fx_write_config(const char *dir, const fx_shape *s, const char *extra)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        return -1;
    }
    fprintf(f,
            "{\"architectures\": [\"%s\"], \"vocab_size\": %d, \"hidden_size\": %d, "
            "\"intermediate_size\": %d, \"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
            "\"num_key_value_heads\": %d, \"max_position_embeddings\": 256, \"rms_norm_eps\": "
            "1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": %s, \"bos_token_id\": 1, "
            "\"eos_token_id\": 2",
            s->qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM", s->vocab, s->hidden, s->inter,
            s->layers, s->heads, s->kv_heads, s->tied ? "true" : "false");
    if (s->head_dim) {
        fprintf(f, ", \"head_dim\": %d", s->head_dim);
    }
    fprintf(f, "%s%s}\n", extra ? ", " : "", extra ? extra : "");
    return fclose(f);
}

/* Writes DIR/config.json and DIR/model.safetensors; returns 0 or -1. */
static inline int fx_write_model(const char *dir, const fx_shape *s, uint32_t seed)
{
    fx_tensor *t = calloc(16 + 16 * (size_t)s->layers, sizeof *t);
    int n = fx_tensors(s, t), rc = -1;
    size_t es = fy_dtype_size(s->dt), off = 0;
    json_t *hdr = json_object();
    for (int i = 0; i < n; i++) {
        if (s->skip && strcmp(s->skip, t[i].name) == 0) {
            t[i].rows = 0;
            continue;
        }
        if (s->bad_shape && strcmp(s->bad_shape, t[i].name) == 0) {
            t[i].rows++;
        }
        size_t cnt = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        json_t *shape = t[i].cols ? json_pack("[II]", (json_int_t)t[i].rows, (json_int_t)t[i].cols)
                                  : json_pack("[I]", (json_int_t)t[i].rows);
        json_object_set_new(hdr, t[i].name,
                            json_pack("{s:s, s:o, s:[II]}", "dtype", fy_dtype_name(s->dt), "shape",
                                      shape, "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + cnt * es)));
        off += cnt * es;
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t hl = strlen(text), pad = (8 - hl % 8) % 8;
    uint8_t *data = calloc(off ? off : 1, 1);
    size_t pos = 0;
    for (int i = 0; i < n; i++) {
        size_t cnt = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        for (size_t j = 0; j < cnt; j++) {
            float v = t[i].norm ? 1.0f + fx_uniform(&seed, 0.2f) : fx_uniform(&seed, 0.5f);
            fx_put(data + pos, s->dt, j, v);
        }
        pos += cnt * es;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (f) {
        uint64_t len = hl + pad;
        uint8_t lb[8];
        for (int i = 0; i < 8; i++) {
            lb[i] = (uint8_t)(len >> (8 * i));
        }
        fwrite(lb, 1, 8, f);
        fwrite(text, 1, hl, f);
        fwrite("        ", 1, pad, f);
        fwrite(data, 1, off, f);
        rc = fclose(f) == 0 && fx_write_config(dir, s, NULL) == 0 ? 0 : -1;
    }
    free(text);
    free(data);
    free(t);
    return rc;
}

/* Writes a safetensors file with header HDR (verbatim) and DATA_LEN zero bytes. */
static inline int fx_write_raw(const char *path, const char *hdr, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        return -1;
    }
    uint64_t len = strlen(hdr);
    for (int i = 0; i < 8; i++) {
        fputc((int)(uint8_t)(len >> (8 * i)), f);
    }
    fputs(hdr, f);
    for (size_t i = 0; i < data_len; i++) {
        fputc(0, f);
    }
    return fclose(f);
}

/* $FERRY_TESTDATA/models/stories260K, or NULL (with a line saying why the
 * caller skips) when it is not there. */
static inline const char *fx_stories_dir(void)
{
    static char dir[1024];
    const char *td = getenv("FERRY_TESTDATA");
    if (!td) {
        printf("skipped: FERRY_TESTDATA is not set\n");
        return NULL;
    }
    snprintf(dir, sizeof dir, "%s/models/stories260K", td);
    if (access(dir, R_OK) != 0) {
        printf("skipped: %s is absent\n", dir);
        return NULL;
    }
    return dir;
}

/* The index of the largest of L[0..N) (lowest on ties). */
static inline int fx_argmax(const float *l, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++) {
        if (l[i] > l[b]) {
            b = i;
        }
    }
    return b;
}

/* expected_greedy.json of stories260K: the prompt (with BOS) and the greedy ids. */
typedef struct {
    int32_t prompt[16];
    int n_prompt;
    int32_t ids[256];
    int n_ids;
} fx_greedy;

/* Reads DIR/expected_greedy.json into G. Returns 0 or -1. */
static inline int fx_greedy_load(const char *dir, fx_greedy *g)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/expected_greedy.json", dir);
    json_error_t jerr;
    json_t *exp = json_load_file(path, 0, &jerr);
    json_t *pj = json_object_get(exp, "prompt_ids_with_bos"),
           *cj = json_object_get(exp, "completion_ids");
    memset(g, 0, sizeof *g);
    if (!json_is_array(pj) || !json_is_array(cj) || json_array_size(pj) > 16 ||
        json_array_size(cj) > 256) {
        json_decref(exp);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(pj); i++) {
        g->prompt[g->n_prompt++] = (int32_t)json_integer_value(json_array_get(pj, i));
    }
    for (size_t i = 0; i < json_array_size(cj); i++) {
        g->ids[g->n_ids++] = (int32_t)json_integer_value(json_array_get(cj, i));
    }
    json_decref(exp);
    return 0;
}

/* Decodes G's prompt greedily on F (a model of VOCAB tokens, KV blocks of
 * BS tokens, blocks 0 .. as many as the sequence needs free). Returns -1
 * when all of G's ids came out, else the first step whose id differs (*GOT:
 * that id, or -1 when the step failed to run). */
static inline int fx_greedy_run(fy_fwd *f, int vocab, const fx_greedy *g, int bs, int *got)
{
    int32_t toks[16 + 256], bt[256];
    int n_blocks = (g->n_prompt + g->n_ids + bs - 1) / bs, bad = -1;
    for (int i = 0; i < n_blocks; i++) {
        bt[i] = i;
    }
    memcpy(toks, g->prompt, (size_t)g->n_prompt * sizeof *toks);
    float *logits = malloc((size_t)vocab * sizeof *logits);
    fy_fwd_seq s = {toks, g->n_prompt, 0, bt, n_blocks, 1};
    *got = -1;
    for (int i = 0; i < g->n_ids && bad < 0; i++) {
        if (!logits || fy_fwd_step(f, &s, 1, logits) != 0) {
            bad = i;
            break;
        }
        int id = fx_argmax(logits, vocab);
        if (id != g->ids[i]) {
            *got = id;
            bad = i;
        }
        toks[g->n_prompt + i] = id;
        s = (fy_fwd_seq){&toks[g->n_prompt + i], 1, g->n_prompt + i, bt, n_blocks, 1};
    }
    free(logits);
    return bad;
}

/* Logits of every position of a fixed NP-token prompt (NP <= 64), [NP x
 * vocab], malloc'd; NULL when the model does not run (ERR says why). */
static inline float *fx_prompt_logits(const fy_model *m, int np, char *err, size_t errlen)
{
    fy_backend *be = NULL;
    fy_fwd *f = NULL;
    float *l = NULL;
    int32_t toks[64], bt[4] = {3, 1, 0, 2};
    if (np > 64 || fy_backend_create("cpu", 1, &be, err, errlen) != 0) {
        return NULL;
    }
    fy_fwd_options o = {.block_size = 16,
                        .kv_bytes = fy_fwd_block_bytes(m, be, 16) * 4,
                        .max_batch_tokens = np,
                        .max_seqs = 1,
                        .max_logit_rows = np};
    if (fy_fwd_create(m, be, &o, &f, err, errlen) == 0) {
        for (int i = 0; i < np; i++) {
            toks[i] = (int32_t)((i * 37 + 5) % m->cfg.vocab_size);
        }
        l = malloc((size_t)np * (size_t)m->cfg.vocab_size * sizeof *l);
        fy_fwd_seq s = {toks, np, 0, bt, 4, np};
        if (l && fy_fwd_step(f, &s, 1, l) != 0) {
            free(l);
            l = NULL;
            snprintf(err, errlen, "fy_fwd_step failed");
        }
        fy_fwd_destroy(f);
    }
    fy_backend_destroy(be);
    return l;
}

/* max |a - b| / max |b| over N values. */
static inline double fx_max_rel_diff(const float *a, const float *b, size_t n)
{
    double mx = 0, md = 0;
    for (size_t i = 0; i < n; i++) {
        mx = fabs(b[i]) > mx ? fabs(b[i]) : mx;
        md = fabs((double)a[i] - b[i]) > md ? fabs((double)a[i] - b[i]) : md;
    }
    return mx > 0 ? md / mx : md;
}

#endif
