/* model.c: config.json, safetensors files mapped read-only, and the tensors
 * of one Llama-family model checked against the config (see model.h). */
#include "runner/engine/model.h"

#include "common/err.h"
#include "common/fsutil.h"
#include "runner/engine/model_gguf.h"
#include "runner/engine/ollama.h"
#include "runner/engine/safetensors.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Upper bounds on config values (model.h). */
#define MODEL_MAX_VOCAB        FY_MODEL_MAX_VOCAB
#define MODEL_MAX_HIDDEN       FY_MODEL_MAX_HIDDEN
#define MODEL_MAX_INTERMEDIATE FY_MODEL_MAX_INTERMEDIATE
#define MODEL_MAX_LAYERS       FY_MODEL_MAX_LAYERS
#define MODEL_MAX_HEADS        FY_MODEL_MAX_HEADS
#define MODEL_MAX_HEAD_DIM     FY_MODEL_MAX_HEAD_DIM
#define MODEL_MAX_POS          FY_MODEL_MAX_POS
#define MODEL_MAX_CONFIG       (4u << 20)
#define MODEL_MAX_INDEX        (64u << 20)
#define MODEL_MAX_SHARDS       4096

/* --- config.json ------------------------------------------------------------------ */

typedef struct {
    json_t *root;
    char *err;
    size_t errlen;
} cfg_ctx;

/* Integer field KEY in [lo, hi]; DEF when absent or null (DEF < lo: required). */
static int cfg_int(cfg_ctx *c, const char *key, int lo, int hi, int def, int *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        if (def < lo) {
            return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is missing", key);
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is not an integer", key);
    }
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is %lld, outside [%d, %d]",
                       key, (long long)x, lo, hi);
    }
    *out = (int)x;
    return 0;
}

/* Number field KEY of OBJ, in (lo, hi] (or [lo, hi] when LO_INCL); DEF when absent. */
static int cfg_num(cfg_ctx *c, json_t *obj, const char *key, double lo, double hi, double def,
                   int required, float *out)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        if (required) {
            return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is missing", key);
        }
        *out = (float)def;
        return 0;
    }
    if (!json_is_number(v)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is not a number", key);
    }
    double x = json_number_value(v);
    if (!(x > lo && x <= hi)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is %g, outside (%g, %g]",
                       key, x, lo, hi);
    }
    *out = (float)x;
    return 0;
}

static int cfg_bool(cfg_ctx *c, const char *key, int def, int *out)
{
    json_t *v = json_object_get(c->root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL, "config.json: '%s' is not true or false", key);
    }
    *out = json_is_true(v);
    return 0;
}

static int cfg_arch(cfg_ctx *c, fy_model_config *cfg)
{
    static const char *const known[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                        "Qwen2ForCausalLM"};
    json_t *a = json_object_get(c->root, "architectures");
    if (!json_is_array(a) || json_array_size(a) != 1 || !json_is_string(json_array_get(a, 0))) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: 'architectures' must be an array of one string");
    }
    const char *s = json_string_value(json_array_get(a, 0));
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (strcmp(s, known[i]) == 0) {
            snprintf(cfg->arch, sizeof cfg->arch, "%s", s);
            cfg->qkv_bias = strcmp(s, "Qwen2ForCausalLM") == 0;
            return 0;
        }
    }
    return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                   "config.json: architecture '%.64s' is not supported (LlamaForCausalLM, "
                   "MistralForCausalLM, Qwen2ForCausalLM)",
                   s);
}

static int cfg_sizes(cfg_ctx *c, fy_model_config *cfg)
{
    int rc;
    if ((rc = cfg_int(c, "vocab_size", 1, MODEL_MAX_VOCAB, -1, &cfg->vocab_size)) < 0 ||
        (rc = cfg_int(c, "hidden_size", 1, MODEL_MAX_HIDDEN, -1, &cfg->hidden)) < 0 ||
        (rc = cfg_int(c, "intermediate_size", 1, MODEL_MAX_INTERMEDIATE, -1, &cfg->intermediate)) <
            0 ||
        (rc = cfg_int(c, "num_hidden_layers", 1, MODEL_MAX_LAYERS, -1, &cfg->n_layers)) < 0 ||
        (rc = cfg_int(c, "num_attention_heads", 1, MODEL_MAX_HEADS, -1, &cfg->n_heads)) < 0 ||
        (rc = cfg_int(c, "num_key_value_heads", 1, MODEL_MAX_HEADS, cfg->n_heads,
                      &cfg->n_kv_heads)) < 0 ||
        (rc = cfg_int(c, "max_position_embeddings", 1, MODEL_MAX_POS, 2048, &cfg->max_pos)) < 0) {
        return rc;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: num_attention_heads %d is not a multiple of "
                       "num_key_value_heads %d",
                       cfg->n_heads, cfg->n_kv_heads);
    }
    json_t *hd = json_object_get(c->root, "head_dim");
    if (!hd || json_is_null(hd)) {
        if (cfg->hidden % cfg->n_heads) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "config.json: hidden_size %d is not a multiple of num_attention_heads "
                           "%d (and no head_dim)",
                           cfg->hidden, cfg->n_heads);
        }
        cfg->head_dim = cfg->hidden / cfg->n_heads;
    } else if ((rc = cfg_int(c, "head_dim", 2, MODEL_MAX_HEAD_DIM, -1, &cfg->head_dim)) < 0) {
        return rc;
    }
    if (cfg->head_dim % 2 || cfg->head_dim < 2 || cfg->head_dim > MODEL_MAX_HEAD_DIM) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: head_dim %d must be even and in [2, %d]", cfg->head_dim,
                       MODEL_MAX_HEAD_DIM);
    }
    if ((int64_t)cfg->n_heads * cfg->head_dim > MODEL_MAX_HIDDEN * 4) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: num_attention_heads x head_dim = %lld is too large",
                       (long long)cfg->n_heads * cfg->head_dim);
    }
    return 0;
}

static int cfg_rope(cfg_ctx *c, fy_model_config *cfg)
{
    int rc;
    if ((rc = cfg_num(c, c->root, "rope_theta", 0.0, 1e12, 10000.0, 0, &cfg->rope_theta)) < 0) {
        return rc;
    }
    cfg->rope_type = FY_ROPE_NONE;
    cfg->rope_factor = 1.0f;
    json_t *rs = json_object_get(c->root, "rope_scaling");
    if (!rs || json_is_null(rs)) {
        return 0;
    }
    if (!json_is_object(rs)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: 'rope_scaling' is not an object or null");
    }
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) {
        t = json_object_get(rs, "type");
    }
    if (!json_is_string(t)) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: 'rope_scaling.rope_type' is missing or not a string");
    }
    const char *ty = json_string_value(t);
    if (strcmp(ty, "default") == 0) {
        return 0;
    }
    cfg_ctx sub = *c;
    if (strcmp(ty, "linear") == 0) {
        cfg->rope_type = FY_ROPE_LINEAR;
        return cfg_num(&sub, rs, "factor", 0.0, 1e6, 1.0, 1, &cfg->rope_factor);
    }
    if (strcmp(ty, "llama3") == 0) {
        cfg->rope_type = FY_ROPE_LLAMA3;
        float orig = 0;
        if ((rc = cfg_num(&sub, rs, "factor", 0.0, 1e6, 1.0, 1, &cfg->rope_factor)) < 0 ||
            (rc = cfg_num(&sub, rs, "low_freq_factor", 0.0, 1e6, 1.0, 1,
                          &cfg->rope_low_freq_factor)) < 0 ||
            (rc = cfg_num(&sub, rs, "high_freq_factor", 0.0, 1e6, 1.0, 1,
                          &cfg->rope_high_freq_factor)) < 0 ||
            (rc = cfg_num(&sub, rs, "original_max_position_embeddings", 0.0, MODEL_MAX_POS, 1.0, 1,
                          &orig)) < 0) {
            return rc;
        }
        if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "config.json: rope_scaling high_freq_factor %g must exceed "
                           "low_freq_factor %g",
                           cfg->rope_high_freq_factor, cfg->rope_low_freq_factor);
        }
        if (orig != floorf(orig)) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "config.json: rope_scaling original_max_position_embeddings is not an "
                           "integer");
        }
        cfg->rope_orig_max_pos = (int)orig;
        return 0;
    }
    return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                   "config.json: rope_scaling type '%.32s' is not supported (linear, llama3)", ty);
}

static int cfg_token_ids(cfg_ctx *c, fy_model_config *cfg)
{
    int rc;
    if ((rc = cfg_int(c, "bos_token_id", 0, MODEL_MAX_VOCAB, -1, &cfg->bos_id)) < 0) {
        json_t *v = json_object_get(c->root, "bos_token_id");
        if (v && !json_is_null(v)) {
            return rc;
        }
        cfg->bos_id = -1;
    }
    cfg->n_eos = 0;
    json_t *e = json_object_get(c->root, "eos_token_id");
    if (!e || json_is_null(e)) {
        return 0;
    }
    json_t *one = json_is_array(e) ? NULL : e;
    size_t n = one ? 1 : json_array_size(e);
    if (n > FY_MODEL_MAX_EOS) {
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "config.json: 'eos_token_id' lists %zu ids (at most %d)", n,
                       FY_MODEL_MAX_EOS);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = one ? one : json_array_get(e, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) >= cfg->vocab_size) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "config.json: 'eos_token_id' is not a token id below vocab_size %d",
                           cfg->vocab_size);
        }
        cfg->eos_ids[cfg->n_eos++] = (int)json_integer_value(v);
    }
    return 0;
}

/* Fields that would change the math in ways ferry does not implement. */
static int cfg_unsupported(cfg_ctx *c, fy_model_config *cfg)
{
    json_t *act = json_object_get(c->root, "hidden_act");
    if (act && !json_is_null(act) &&
        (!json_is_string(act) || strcmp(json_string_value(act), "silu") != 0)) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP, "config.json: 'hidden_act' must be \"silu\"");
    }
    int ab = 0, mb = 0, rc;
    if ((rc = cfg_bool(c, "attention_bias", 0, &ab)) < 0 ||
        (rc = cfg_bool(c, "mlp_bias", 0, &mb)) < 0) {
        return rc;
    }
    if ((ab && !cfg->qkv_bias) || mb) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "config.json: '%s' true is not supported for %s",
                       mb ? "mlp_bias" : "attention_bias", cfg->arch);
    }
    return 0;
}

int fy_model_config_parse(const char *json, size_t len, fy_model_config *cfg, char *err,
                          size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        return fy_fail(err, errlen, FY_EPARSE, "config.json: %s at line %d", jerr.text, jerr.line);
    }
    cfg_ctx c = {root, err, errlen};
    int rc;
    if (!json_is_object(root)) {
        rc = fy_fail(err, errlen, FY_EPARSE, "config.json: not a JSON object");
        goto out;
    }
    float eps = 0;
    if ((rc = cfg_arch(&c, cfg)) < 0 || (rc = cfg_sizes(&c, cfg)) < 0 ||
        (rc = cfg_rope(&c, cfg)) < 0 ||
        (rc = cfg_num(&c, root, "rms_norm_eps", 0.0, 1.0, 1e-6, 0, &eps)) < 0 ||
        (rc = cfg_bool(&c, "tie_word_embeddings", 0, &cfg->tie_embeddings)) < 0 ||
        (rc = cfg_token_ids(&c, cfg)) < 0 || (rc = cfg_unsupported(&c, cfg)) < 0) {
        goto out;
    }
    cfg->rms_eps = eps;
    if (cfg->bos_id >= cfg->vocab_size) {
        rc = fy_fail(err, errlen, FY_EINVAL, "config.json: 'bos_token_id' %d >= vocab_size %d",
                     cfg->bos_id, cfg->vocab_size);
    }
out:
    json_decref(root);
    return rc;
}

void fy_model_rope_inv_freq(const fy_model_config *c, float *inv_freq)
{
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow((double)c->rope_theta, (2.0 * i) / (double)c->head_dim);
        if (c->rope_type == FY_ROPE_LINEAR) {
            f /= c->rope_factor;
        } else if (c->rope_type == FY_ROPE_LLAMA3) {
            /* Meta's scheme: high frequencies (short wavelengths) kept, low ones
             * divided by factor, a smooth blend between. */
            double old = c->rope_orig_max_pos;
            double lo_wl = old / c->rope_low_freq_factor, hi_wl = old / c->rope_high_freq_factor;
            double wl = 2.0 * M_PI / f;
            if (wl > lo_wl) {
                f /= c->rope_factor;
            } else if (wl >= hi_wl) {
                double s = (old / wl - c->rope_low_freq_factor) /
                           (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0 - s) * f / c->rope_factor + s * f;
            }
        }
        if (c->rope_freq_factors) {
            f /= c->rope_freq_factors[i];
        }
        inv_freq[i] = (float)f;
    }
}

/* --- Files ----------------------------------------------------------------------- */

typedef struct {
    char name[256];
    uint8_t *map;
    size_t len;
    fy_st_header hdr;
} model_file;

typedef struct {
    model_file *files;
    int n_files;
    json_t *weight_map; /* sharded: tensor name -> file name */
    void **copies;      /* realigned tensors */
    int n_copies;
} model_priv;

static int file_map(const char *dir, const char *name, model_file *f, char *err, size_t errlen)
{
    char path[4096];
    snprintf(f->name, sizeof f->name, "%s", name);
    if (fy_path_join(path, sizeof path, dir, name) < 0) {
        return fy_fail(err, errlen, FY_ETOOBIG, "%s: path too long", name);
    }
    void *map;
    int rc = fy_file_map(path, &map, &f->len, err, errlen);
    if (rc < 0) {
        return rc;
    }
    f->map = map;
    if (f->len < 8) {
        return fy_fail(err, errlen, FY_EPARSE, "%s: file is %zu bytes, truncated", name, f->len);
    }
    char msg[384];
    if ((rc = fy_st_parse(f->map, f->len, &f->hdr, msg, sizeof msg)) < 0) {
        fy_fail(err, errlen, rc, "%s: %s", name, msg);
    }
    return rc;
}

static void priv_free(model_priv *p)
{
    if (!p) {
        return;
    }
    for (int i = 0; i < p->n_files; i++) {
        fy_st_header_free(&p->files[i].hdr);
        fy_file_unmap(p->files[i].map, p->files[i].len);
    }
    for (int i = 0; i < p->n_copies; i++) {
        free(p->copies[i]);
    }
    free(p->copies);
    free(p->files);
    json_decref(p->weight_map);
    free(p);
}

/* A shard name from the index: a plain file name in the model directory. */
static int shard_name_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 200 && !strchr(s, '/') && strcmp(s, ".") && strcmp(s, "..");
}

static int load_index(const char *dir, model_priv *p, char *err, size_t errlen)
{
    char path[4096], *text = NULL;
    size_t len = 0;
    if (fy_path_join(path, sizeof path, dir, "model.safetensors.index.json") < 0) {
        return fy_fail(err, errlen, FY_ETOOBIG, "model directory path too long");
    }
    int rc = fy_file_read(path, MODEL_MAX_INDEX, &text, &len);
    if (rc < 0) {
        return fy_fail(err, errlen, rc, "model.safetensors.index.json: %s", fy_strerror(rc));
    }
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root) {
        return fy_fail(err, errlen, FY_EPARSE, "model.safetensors.index.json: %s at line %d",
                       jerr.text, jerr.line);
    }
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(root);
        return fy_fail(err, errlen, FY_EPARSE,
                       "model.safetensors.index.json: 'weight_map' is missing or not an object");
    }
    p->weight_map = json_incref(wm);
    json_decref(root);
    p->files = calloc(MODEL_MAX_SHARDS, sizeof *p->files);
    if (!p->files) {
        return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    const char *key;
    json_t *val;
    json_object_foreach(p->weight_map, key, val)
    {
        if (!json_is_string(val) || !shard_name_ok(json_string_value(val))) {
            return fy_fail(err, errlen, FY_EPARSE,
                           "model.safetensors.index.json: tensor '%.128s' maps to an invalid file "
                           "name",
                           key);
        }
        const char *fn = json_string_value(val);
        int seen = 0;
        for (int i = 0; i < p->n_files && !seen; i++) {
            seen = strcmp(p->files[i].name, fn) == 0;
        }
        if (seen) {
            continue;
        }
        if (p->n_files == MODEL_MAX_SHARDS) {
            return fy_fail(err, errlen, FY_ETOOBIG,
                           "model.safetensors.index.json: more than %d shards", MODEL_MAX_SHARDS);
        }
        if ((rc = file_map(dir, fn, &p->files[p->n_files++], err, errlen)) < 0) {
            return rc;
        }
    }
    return 0;
}

/* The file holding tensor NAME (NULL when absent; ERR set). */
static model_file *find_file(model_priv *p, const char *name)
{
    if (!p->weight_map) {
        return p->n_files ? &p->files[0] : NULL;
    }
    json_t *v = json_object_get(p->weight_map, name);
    if (!json_is_string(v)) {
        return NULL;
    }
    for (int i = 0; i < p->n_files; i++) {
        if (strcmp(p->files[i].name, json_string_value(v)) == 0) {
            return &p->files[i];
        }
    }
    return NULL;
}

static int tensor_dtype(fy_st_dtype st, fy_dtype *dt)
{
    switch (st) {
    case FY_ST_F32:
        *dt = FY_DT_F32;
        return 0;
    case FY_ST_F16:
        *dt = FY_DT_F16;
        return 0;
    case FY_ST_BF16:
        *dt = FY_DT_BF16;
        return 0;
    default:
        return -1;
    }
}

typedef struct {
    fy_model *m;
    model_priv *p;
    char *err;
    size_t errlen;
} load_ctx;

/* Looks up NAME, checks it is ROWS x COLS (COLS 0: a 1-D tensor of ROWS) in
 * F32/F16/BF16, and points T at its bytes. OPTIONAL: absence is not an error
 * (T->data stays NULL, returns 1). */
static int get_tensor(load_ctx *c, const char *name, int64_t rows, int64_t cols, int optional,
                      fy_tensor *t)
{
    memset(t, 0, sizeof *t);
    model_file *f = find_file(c->p, name);
    const fy_st_tensor *st = f ? fy_st_find(&f->hdr, name) : NULL;
    if (!st) {
        if (optional) {
            return 1;
        }
        return fy_fail(c->err, c->errlen, FY_ENOENT, "%s: tensor '%s' is missing",
                       f ? f->name : "model.safetensors.index.json", name);
    }
    if (tensor_dtype(st->dtype, &t->dtype) < 0) {
        return fy_fail(c->err, c->errlen, FY_ENOTSUP,
                       "%s: tensor '%s' has dtype %s (F32, F16 or BF16 needed)", f->name, name,
                       fy_st_dtype_name(st->dtype));
    }
    int want_dims = cols ? 2 : 1;
    if (st->ndim != want_dims || st->shape[0] != rows || (cols && st->shape[1] != cols)) {
        char got[128] = "";
        size_t o = 0;
        for (int i = 0; i < st->ndim && o < sizeof got - 24; i++) {
            o += (size_t)snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "",
                                  (long long)st->shape[i]);
        }
        if (cols) {
            return fy_fail(c->err, c->errlen, FY_EINVAL,
                           "%s: tensor '%s' has shape [%s] but the config needs [%lld, %lld]",
                           f->name, name, got, (long long)rows, (long long)cols);
        }
        return fy_fail(c->err, c->errlen, FY_EINVAL,
                       "%s: tensor '%s' has shape [%s] but the config needs [%lld]", f->name, name,
                       got, (long long)rows);
    }
    t->rows = cols ? rows : 1;
    t->cols = cols ? cols : rows;
    const uint8_t *data = f->map + st->begin;
    size_t bytes = st->end - st->begin;
    if ((uintptr_t)data % fy_dtype_size(t->dtype)) {
        /* Files written without header padding leave tensors misaligned; the
         * kernels read whole elements, so such a tensor gets an aligned copy. */
        void *copy = malloc(bytes ? bytes : 1), **cs;
        cs = copy ? realloc(c->p->copies, (size_t)(c->p->n_copies + 1) * sizeof *cs) : NULL;
        if (!cs) {
            free(copy);
            return fy_fail(c->err, c->errlen, FY_ENOMEM, "%s: out of memory copying '%s'", f->name,
                           name);
        }
        c->p->copies = cs;
        cs[c->p->n_copies++] = copy;
        memcpy(copy, data, bytes);
        data = copy;
    }
    t->data = data;
    c->m->weight_bytes += bytes;
    return 0;
}

static int load_layer(load_ctx *c, int i, fy_layer *L)
{
    const fy_model_config *g = &c->m->cfg;
    int64_t H = g->hidden, Q = (int64_t)g->n_heads * g->head_dim,
            KV = (int64_t)g->n_kv_heads * g->head_dim, I = g->intermediate;
    char n[160];
    int rc;
#define LT(field, suffix, rows, cols)                                \
    do {                                                             \
        snprintf(n, sizeof n, "model.layers.%d.%s", i, suffix);      \
        if ((rc = get_tensor(c, n, rows, cols, 0, &L->field)) < 0) { \
            return rc;                                               \
        }                                                            \
    } while (0)
    LT(attn_norm, "input_layernorm.weight", H, 0);
    LT(q, "self_attn.q_proj.weight", Q, H);
    LT(k, "self_attn.k_proj.weight", KV, H);
    LT(v, "self_attn.v_proj.weight", KV, H);
    LT(o, "self_attn.o_proj.weight", H, Q);
    if (g->qkv_bias) {
        LT(q_bias, "self_attn.q_proj.bias", Q, 0);
        LT(k_bias, "self_attn.k_proj.bias", KV, 0);
        LT(v_bias, "self_attn.v_proj.bias", KV, 0);
    }
    LT(mlp_norm, "post_attention_layernorm.weight", H, 0);
    LT(gate, "mlp.gate_proj.weight", I, H);
    LT(up, "mlp.up_proj.weight", I, H);
    LT(down, "mlp.down_proj.weight", H, I);
#undef LT
    return 0;
}

static int load_config(const char *dir, fy_model_config *cfg, char *err, size_t errlen)
{
    char path[4096], *text = NULL;
    size_t len = 0;
    if (fy_path_join(path, sizeof path, dir, "config.json") < 0) {
        return fy_fail(err, errlen, FY_ETOOBIG, "model directory path too long");
    }
    int rc = fy_file_read(path, MODEL_MAX_CONFIG, &text, &len);
    if (rc < 0) {
        return fy_fail(err, errlen, rc, "%s: %s", path, fy_strerror(rc));
    }
    rc = fy_model_config_parse(text, len, cfg, err, errlen);
    free(text);
    return rc;
}

static void model_name(const char *dir, char *out, size_t outlen)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') {
        n--;
    }
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/') {
        b--;
    }
    snprintf(out, outlen, "%.*s", (int)(n - b), dir + b);
}

int fy_model_load(const char *dir, fy_model **out, char *err, size_t errlen)
{
    *out = NULL;
    if (strncmp(dir, FY_OLLAMA_PREFIX, strlen(FY_OLLAMA_PREFIX)) == 0) {
        fy_ollama_model om;
        int rc = fy_ollama_resolve(dir + strlen(FY_OLLAMA_PREFIX), &om, err, errlen);
        return rc < 0 ? rc : fy__model_gguf_load(om.blob, om.name, out, err, errlen);
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        return fy_fail(err, errlen, FY_ENOENT,
                       "%s: no such file or directory (a model is a Hugging Face directory, a "
                       "GGUF file or ollama:NAME[:TAG])",
                       dir);
    }
    if (S_ISREG(st.st_mode)) {
        return fy__model_gguf_load(dir, NULL, out, err, errlen);
    }
    fy_model *m = calloc(1, sizeof *m);
    model_priv *p = calloc(1, sizeof *p);
    int rc = 0;
    if (!m || !p) {
        free(m);
        free(p);
        return fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    m->priv = p;
    model_name(dir, m->name, sizeof m->name);
    if ((rc = load_config(dir, &m->cfg, err, errlen)) < 0) {
        goto out;
    }
    char path[4096];
    if (fy_path_join(path, sizeof path, dir, "model.safetensors.index.json") == 0 &&
        fy_file_exists(path)) {
        rc = load_index(dir, p, err, errlen);
    } else {
        p->files = calloc(1, sizeof *p->files);
        rc = p->files ? file_map(dir, "model.safetensors", &p->files[p->n_files++], err, errlen)
                      : fy_fail(err, errlen, FY_ENOMEM, "out of memory");
    }
    if (rc < 0) {
        goto out;
    }
    const fy_model_config *g = &m->cfg;
    load_ctx c = {m, p, err, errlen};
    m->layers = calloc((size_t)g->n_layers, sizeof *m->layers);
    if (!m->layers) {
        rc = fy_fail(err, errlen, FY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = get_tensor(&c, "model.embed_tokens.weight", g->vocab_size, g->hidden, 0, &m->embed)) <
            0 ||
        (rc = get_tensor(&c, "model.norm.weight", g->hidden, 0, 0, &m->norm)) < 0) {
        goto out;
    }
    rc = g->tie_embeddings
             ? 1
             : get_tensor(&c, "lm_head.weight", g->vocab_size, g->hidden, 1, &m->lm_head);
    if (rc < 0) {
        goto out;
    }
    if (rc == 1) {
        m->lm_head = m->embed; /* tied, or no separate head in the files */
        m->cfg.tie_embeddings = 1;
    }
    for (int i = 0; i < g->n_layers; i++) {
        if ((rc = load_layer(&c, i, &m->layers[i])) < 0) {
            goto out;
        }
    }
    rc = 0;
out:
    if (rc < 0) {
        fy_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void fy_model_free(fy_model *m)
{
    if (!m) {
        return;
    }
    if (m->gguf) {
        fy__model_gguf_free(m);
        return;
    }
    priv_free(m->priv);
    free(m->layers);
    free(m);
}
