/* Quantization mixes (runner/engine/gguf_quantize.h) on the files llama.cpp
 * wrote: ferry quantizes tiny256-F32.gguf under each mix and the result has,
 * tensor for tensor, the types llama.cpp's llama-quantize chose for the same
 * model (../shared/testdata/gguf/tiny256-<MIX>.gguf), the same file type,
 * the input's metadata, and weights close to the F32 ones. stories260K,
 * whose 172-wide FFN rows llama.cpp cannot quantize, gets wider types for
 * exactly the tensors that do not fit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/err.h"
#include "kernels/cpu/quant.h"
#include "runner/engine/gguf.h"
#include "runner/engine/gguf_quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_td[512], g_dir[256];

static int setup(void **state)
{
    (void)state;
    const char *td = getenv("FERRY_TESTDATA");
    snprintf(g_td, sizeof g_td, "%s", td ? td : "");
    snprintf(g_dir, sizeof g_dir, "/tmp/fy_gguf_quantize.XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static fy_gguf *open_or_fail(const char *path)
{
    fy_gguf *g;
    char err[512];
    if (fy_gguf_open(path, &g, err, sizeof err)) {
        fail_msg("%s", err);
    }
    return g;
}

static void need(const char *path)
{
    if (access(path, R_OK) != 0) {
        print_message("skipping: %s is absent (FERRY_TESTDATA=%s)\n", path, g_td);
        skip();
    }
}

typedef struct {
    size_t n;
    char names[64][80];
} fallbacks;

static void collect(void *data, const fy_quantize_step *s)
{
    fallbacks *f = data;
    if (s->name && s->fallback && f->n < 64) {
        snprintf(f->names[f->n++], 80, "%s=%s", s->name, fy_dtype_name(s->to));
    }
}

/* Relative RMS difference between the dequantized tensors A and B. */
static double tensor_rel_rms(const fy_gguf_tensor *a, const fy_gguf_tensor *b)
{
    size_t n = (size_t)a->n_elems;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    assert_non_null(x);
    assert_non_null(y);
    for (uint64_t r = 0; r < a->n_rows; r++) {
        size_t c = (size_t)a->dims[0];
        assert_int_equal(
            fy_q_dequant(a->type, (const uint8_t *)a->data + r * a->row_bytes, x + r * c, c), 0);
        assert_int_equal(
            fy_q_dequant(b->type, (const uint8_t *)b->data + r * b->row_bytes, y + r * c, c), 0);
    }
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    free(x);
    free(y);
    return s > 0 ? sqrt(e / s) : 0;
}

static void test_mixes_match_llama_cpp(void **state)
{
    (void)state;
    char in[700], ref[700], out[400], err[1024];
    snprintf(in, sizeof in, "%s/gguf/tiny256-F32.gguf", g_td);
    need(in);
    static const struct {
        fy_qmix mix;
        const char *ref; /* llama.cpp's file of the mix */
        double max_err;  /* relative RMS error of any matrix (random normal weights) */
    } cases[] = {
        {FY_QMIX_Q8_0, "Q8_0", 0.01},     {FY_QMIX_Q4_0, "Q4_0", 0.13},
        {FY_QMIX_Q4_K_M, "Q4_K_M", 0.13}, {FY_QMIX_Q5_K_M, "Q5_K_M", 0.065},
        {FY_QMIX_Q6_K, "Q6_K", 0.035},    {FY_QMIX_F16, NULL, 0.001},
    };
    fy_gguf *src = open_or_fail(in);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        snprintf(out, sizeof out, "%s/tiny256-%s.gguf", g_dir, fy_qmix_name(cases[k].mix));
        fallbacks fb = {0};
        if (fy_quantize_gguf(in, out, cases[k].mix, k % 2 ? 3 : 1, collect, &fb, err, sizeof err)) {
            fail_msg("quantize %s: %s", fy_qmix_name(cases[k].mix), err);
        }
        assert_int_equal(fb.n, 0);
        fy_gguf *q = open_or_fail(out);
        assert_int_equal(q->n_tensors, src->n_tensors);
        /* Every key of the input, with its value (file type and quantization version aside). */
        for (uint64_t i = 0; i < src->n_kv; i++) {
            const char *key = src->kv[i].key;
            const fy_gguf_kv *kv = fy_gguf_find(q, key);
            if (strcmp(key, "general.file_type") == 0) {
                continue;
            }
            if (!kv || kv->v.type != src->kv[i].v.type) {
                fail_msg("%s: key %s missing or retyped", out, key);
            }
            if (kv->v.type == FY_GGUF_STR) {
                assert_int_equal(kv->v.s.len, src->kv[i].v.s.len);
                assert_memory_equal(kv->v.s.p, src->kv[i].v.s.p, (size_t)kv->v.s.len);
            } else if (kv->v.type == FY_GGUF_ARR) {
                assert_int_equal(kv->v.a.n, src->kv[i].v.a.n);
                fy_gguf_val a, b;
                uint64_t last = kv->v.a.n - 1;
                assert_int_equal(fy_gguf_arr_get(&kv->v.a, last, &a), 0);
                assert_int_equal(fy_gguf_arr_get(&src->kv[i].v.a, last, &b), 0);
                if (a.type == FY_GGUF_STR) {
                    assert_int_equal(a.s.len, b.s.len);
                    assert_memory_equal(a.s.p, b.s.p, (size_t)a.s.len);
                }
            }
        }
        uint32_t ft = 0, qv = 0;
        assert_int_equal(fy_gguf_get_u32(q, "general.quantization_version", &qv, err, sizeof err),
                         0);
        assert_int_equal(qv, 2);
        assert_int_equal(fy_gguf_get_u32(q, "general.file_type", &ft, err, sizeof err), 0);
        fy_gguf *r = NULL;
        if (cases[k].ref) {
            snprintf(ref, sizeof ref, "%s/gguf/tiny256-%s.gguf", g_td, cases[k].ref);
            r = open_or_fail(ref);
            uint32_t rft = 0;
            assert_int_equal(fy_gguf_get_u32(r, "general.file_type", &rft, err, sizeof err), 0);
            assert_int_equal(ft, rft);
        }
        double worst = 0;
        for (uint64_t i = 0; i < src->n_tensors; i++) {
            const fy_gguf_tensor *s = &src->t[i], *t = fy_gguf_tensor_find(q, s->name);
            assert_non_null(t);
            assert_int_equal(t->n_dims, s->n_dims);
            assert_memory_equal(t->dims, s->dims, sizeof t->dims);
            if (r) {
                const fy_gguf_tensor *u = fy_gguf_tensor_find(r, s->name);
                assert_non_null(u);
                if (t->type != u->type) {
                    fail_msg("%s: %s is %s, llama.cpp's %s has %s", fy_qmix_name(cases[k].mix),
                             s->name, fy_dtype_name(t->type), cases[k].ref, fy_dtype_name(u->type));
                }
                assert_int_equal(t->n_bytes, u->n_bytes);
            }
            double e = tensor_rel_rms(s, t);
            worst = e > worst ? e : worst;
        }
        print_message("%-6s %s; worst relative rms error %.4f\n", fy_qmix_name(cases[k].mix),
                      r ? "every tensor's type as llama.cpp's" : "no llama.cpp file", worst);
        assert_true(worst <= cases[k].max_err);
        fy_gguf_free(r);
        fy_gguf_free(q);
    }
    fy_gguf_free(src);
}

static void test_stories_fallbacks(void **state)
{
    (void)state;
    char in[700], out[400], err[1024];
    snprintf(in, sizeof in, "%s/models/stories260K/stories260K.gguf", g_td);
    need(in);
    snprintf(out, sizeof out, "%s/stories-q4_k_m.gguf", g_dir);
    fallbacks fb = {0};
    if (fy_quantize_gguf(in, out, FY_QMIX_Q4_K_M, 2, collect, &fb, err, sizeof err)) {
        fail_msg("%s", err);
    }
    /* hidden 64: every matrix's rows are 64 (Q5_0, llama.cpp's Q4_K fallback; Q8_0 for the
     * tied head and the Q6_K layers) but ffn_down's 172, which is F16. */
    fy_gguf *q = open_or_fail(out);
    size_t want = 0;
    for (uint64_t i = 0; i < q->n_tensors; i++) {
        const fy_gguf_tensor *t = &q->t[i];
        if (t->n_dims < 2) {
            assert_int_equal(t->type, FY_DT_F32);
            continue;
        }
        want += strcmp(t->name, "token_embd.weight") != 0; /* Q8_0 by the head's own rule */
        if (strstr(t->name, "ffn_down")) {
            assert_int_equal(t->type, FY_DT_F16);
        } else {
            assert_true(t->type == FY_DT_Q5_0 || t->type == FY_DT_Q8_0);
        }
    }
    assert_int_equal(fb.n, want);
    fy_gguf_free(q);
}

static void test_refusals(void **state)
{
    (void)state;
    char out[400], err[1024] = "";
    snprintf(out, sizeof out, "%s/never.gguf", g_dir);
    assert_int_equal(
        fy_quantize_gguf("/nonexistent.gguf", out, FY_QMIX_Q8_0, 1, NULL, NULL, err, sizeof err),
        FY_ENOENT);
    assert_non_null(strstr(err, "/nonexistent.gguf"));
    assert_int_equal(access(out, F_OK), -1);
    fy_qmix m;
    assert_int_equal(fy_qmix_parse("Q4_K_M", &m), 0);
    assert_int_equal(m, FY_QMIX_Q4_K_M);
    assert_int_equal(fy_qmix_parse("q3_k_m", &m), FY_EINVAL);
    /* The choice itself, on a 32-layer model. */
    int fb;
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.0.attn_v.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K);
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.5.attn_v.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q4_K); /* (5 - 4) % 3 != 2 */
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.6.ffn_down.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K); /* (6 - 4) % 3 == 2 */
    assert_int_equal(
        fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "blk.28.ffn_down.weight", 2, 4096, 32, 0, &fb),
        FY_DT_Q6_K); /* the last eighth */
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q4_K_M, "token_embd.weight", 2, 4096, 32, 1, &fb),
                     FY_DT_Q6_K); /* tied: the head */
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q4_0, "output.weight", 2, 4096, 32, 0, &fb),
                     FY_DT_Q6_K);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q8_0, "output.weight", 2, 4096, 32, 0, &fb),
                     FY_DT_Q8_0);
    assert_int_equal(fb, 0);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "blk.0.ffn_up.weight", 2, 96, 32, 0, &fb),
                     FY_DT_Q8_0);
    assert_int_equal(fb, 1);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "blk.0.ffn_up.weight", 2, 100, 32, 0, &fb),
                     FY_DT_F16);
    assert_int_equal(fy_qmix_tensor_type(FY_QMIX_Q6_K, "output_norm.weight", 1, 4096, 32, 0, &fb),
                     FY_DT_F32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mixes_match_llama_cpp),
        cmocka_unit_test(test_stories_fallbacks),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
