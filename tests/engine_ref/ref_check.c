/* ref_check: compares ferry's CPU forward pass with torch_ref.py's logits.
 *
 *   ref_check MODEL_DIR...
 *
 * Each MODEL_DIR holds a model (or, when ref.json says "model", that file:
 * a GGUF) and ref.json (prompt ids) + ref_logits.f32
 * ([prompt_len x vocab], computed in float64 by the reference). ferry runs
 * the prompt three ways: a prefill of the first PREFILL tokens and then one
 * decode step per token (every position's logits compared), the whole
 * prompt as one prefill (last position compared), and with the portable
 * (non-SIMD) kernels. Tolerance: max|ferry - ref| <= 2e-5 x max|ref| per
 * position, for every dtype: the reference uses exactly the stored
 * (F16/BF16-rounded) weights, and ferry keeps activations in f32, so the
 * only difference is f32 rounding in sums of a few hundred terms (~1e-6
 * relative, measured); 2e-5 leaves room for that yet catches any real mistake (a
 * wrong RoPE pair, bias or scaling moves logits by 1e-2 or more). */
#include "common/err.h"
#include "runner/engine/forward.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFILL 10
#define BS      4
#define TOL     2e-5

int fy__cpu_backend_simd(fy_backend *be, int on);

static double compare(const float *got, const float *ref, int n)
{
    double mx = 0, md = 0;
    for (int i = 0; i < n; i++) {
        mx = fmax(mx, fabs(ref[i]));
        md = fmax(md, fabs((double)got[i] - ref[i]));
    }
    return mx > 0 ? md / mx : md;
}

static int check_model(const char *dir, int simd)
{
    char path[4096], err[512] = "";
    snprintf(path, sizeof path, "%s/ref.json", dir);
    json_error_t jerr;
    json_t *ref = json_load_file(path, 0, &jerr);
    if (!ref) {
        fprintf(stderr, "%s: %s\n", path, jerr.text);
        return 1;
    }
    json_t *pj = json_object_get(ref, "prompt");
    int n = (int)json_array_size(pj), V = (int)json_integer_value(json_object_get(ref, "vocab"));
    int32_t ids[256], bt[64];
    for (int i = 0; i < n && i < 256; i++) {
        ids[i] = (int32_t)json_integer_value(json_array_get(pj, (size_t)i));
    }
    float *want = malloc((size_t)n * V * sizeof *want), *got = malloc((size_t)V * sizeof *got);
    snprintf(path, sizeof path, "%s/ref_logits.f32", dir);
    FILE *f = fopen(path, "rb");
    size_t rd = f ? fread(want, sizeof *want, (size_t)n * V, f) : 0;
    if (f) {
        fclose(f);
    }
    fy_model *m = NULL;
    fy_backend *be = NULL;
    fy_fwd *fw = NULL;
    int bad = 0;
    if (rd != (size_t)n * V || n < PREFILL + 1 || n > 256) {
        fprintf(stderr, "%s: bad reference files\n", dir);
        bad = 1;
        goto out;
    }
    /* "model": a file in DIR (a GGUF) to load instead of DIR itself. */
    const char *file = json_string_value(json_object_get(ref, "model"));
    char model_path[4200];
    snprintf(model_path, sizeof model_path, "%s%s%s", dir, file ? "/" : "", file ? file : "");
    if (fy_model_load(model_path, &m, err, sizeof err) < 0 ||
        fy_backend_create("cpu", 2, &be, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", dir, err);
        bad = 1;
        goto out;
    }
    if (!simd) {
        fy__cpu_backend_simd(be, 0);
    }
    fy_fwd_options o = {.block_size = BS,
                        .kv_bytes = fy_fwd_block_bytes(m, be, BS) * 64,
                        .max_batch_tokens = 64,
                        .max_seqs = 4};
    if (fy_fwd_create(m, be, &o, &fw, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", dir, err);
        bad = 1;
        goto out;
    }
    for (int i = 0; i < 64; i++) {
        bt[i] = 63 - i;
    }
    double worst = 0;
    /* Prefill PREFILL tokens, then decode one by one. */
    fy_fwd_seq s = {ids, PREFILL, 0, bt, 32, 1};
    for (int p = PREFILL - 1; p < n; p++) {
        if (fy_fwd_step(fw, &s, 1, got) < 0) {
            fprintf(stderr, "%s: step at position %d failed\n", dir, p);
            bad = 1;
            goto out;
        }
        double e = compare(got, want + (size_t)p * V, V);
        worst = fmax(worst, e);
        if (!(e <= TOL)) {
            fprintf(stderr, "%s: position %d: max |diff| / max |ref| = %.3g > %g\n", dir, p, e,
                    TOL);
            bad = 1;
        }
        s = (fy_fwd_seq){ids + p + 1, 1, p + 1, bt, 32, 1};
    }
    /* The whole prompt at once, in other blocks. */
    fy_fwd_seq all = {ids, n, 0, bt + 32, 32, 1};
    if (fy_fwd_step(fw, &all, 1, got) < 0) {
        bad = 1;
        goto out;
    }
    double e = compare(got, want + (size_t)(n - 1) * V, V);
    worst = fmax(worst, e);
    if (!(e <= TOL)) {
        fprintf(stderr, "%s: one-step prefill: max |diff| / max |ref| = %.3g > %g\n", dir, e, TOL);
        bad = 1;
    }
    printf("%-28s %-4s %s  %d positions  max |diff|/max|ref| %.2e  %s\n", m->name,
           fy_dtype_name(m->embed.dtype), simd ? "simd    " : "portable", n - PREFILL + 2, worst,
           bad ? "FAIL" : "ok");
out:
    fy_fwd_destroy(fw);
    fy_backend_destroy(be);
    fy_model_free(m);
    free(want);
    free(got);
    json_decref(ref);
    return bad;
}

int main(int argc, char **argv)
{
    int bad = 0;
    if (argc < 2) {
        fprintf(stderr, "usage: ref_check MODEL_DIR...\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        bad |= check_model(argv[i], 1);
        bad |= check_model(argv[i], 0);
    }
    return bad;
}
