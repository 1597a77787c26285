/* Fuzz target: a model from arbitrary GGUF bytes (runner/engine/model_gguf.c
 * on what the GGUF reader accepts). A refusal must name the file; an
 * accepted model must be consistent with its metadata: every tensor it
 * hands the forward pass lies inside the input (or an aligned copy) and has
 * the shape the config implies, and the config's values are in range. */
#include "runner/engine/model_gguf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_tensor(const fy_tensor *t, int64_t rows, int64_t cols, int optional)
{
    if (!t->data) {
        if (!optional) {
            __builtin_trap();
        }
        return;
    }
    uint64_t bytes = 0;
    if (t->rows != rows || t->cols != cols || fy_dtype_bytes(t->dtype, (uint64_t)cols, &bytes)) {
        __builtin_trap();
    }
    /* Touch the first and last byte: outside the input, ASan reports it. */
    const volatile uint8_t *p = t->data;
    (void)p[0];
    (void)p[bytes * (uint64_t)rows - 1];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fy_gguf *g = NULL;
    char err[512] = "";
    if (fy_gguf_parse(data, size, "fuzz.gguf", &g, err, sizeof err) != 0) {
        return 0;
    }
    fy_model *m = NULL;
    if (fy__model_gguf_from(g, NULL, &m, err, sizeof err) != 0) {
        if (m || strncmp(err, "fuzz.gguf: ", 11) != 0) {
            __builtin_trap(); /* a refusal names the file and says why */
        }
        return 0;
    }
    const fy_model_config *c = &m->cfg;
    if (c->vocab_size < 1 || c->hidden < 1 || c->n_layers < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads || c->head_dim < 2 || c->head_dim % 2 ||
        !(c->rms_eps > 0) || !(c->rope_theta > 0) || c->bos_id >= c->vocab_size ||
        c->n_eos > FY_MODEL_MAX_EOS || !m->name[0]) {
        __builtin_trap();
    }
    for (int i = 0; i < c->n_eos; i++) {
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size) {
            __builtin_trap();
        }
    }
    int64_t H = c->hidden, Q = (int64_t)c->n_heads * c->head_dim,
            KV = (int64_t)c->n_kv_heads * c->head_dim, I = c->intermediate;
    check_tensor(&m->embed, c->vocab_size, H, 0);
    check_tensor(&m->lm_head, c->vocab_size, H, 0);
    check_tensor(&m->norm, 1, H, 0);
    for (int l = 0; l < c->n_layers; l++) {
        const fy_layer *L = &m->layers[l];
        check_tensor(&L->attn_norm, 1, H, 0);
        check_tensor(&L->q, Q, H, 0);
        check_tensor(&L->k, KV, H, 0);
        check_tensor(&L->v, KV, H, 0);
        check_tensor(&L->o, H, Q, 0);
        check_tensor(&L->q_bias, 1, Q, 1);
        check_tensor(&L->k_bias, 1, KV, 1);
        check_tensor(&L->v_bias, 1, KV, 1);
        check_tensor(&L->q_norm, 1, c->head_dim, 1);
        check_tensor(&L->k_norm, 1, c->head_dim, 1);
        check_tensor(&L->mlp_norm, 1, H, 0);
        check_tensor(&L->gate, I, H, 0);
        check_tensor(&L->up, I, H, 0);
        check_tensor(&L->down, H, I, 0);
    }
    if (c->rope_freq_factors) {
        float inv[FY_MODEL_MAX_HEAD_DIM / 2];
        fy_model_rope_inv_freq(c, inv);
    }
    fy_model_free(m);
    return 0;
}
