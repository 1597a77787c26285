/* Unit tests for the demo model (runner/demo_model.c): what it writes passes
 * the model loader's validation, its tokenizer round-trips any bytes, its
 * chat template compiles, and the same seed writes the same weights. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/fsutil.h"
#include "runner/api/jinja.h"
#include "runner/engine/model.h"
#include "runner/engine/tokenizer.h"
#include "runner/runner.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *make_dir(const char *tag)
{
    char tmpl[] = "/tmp/ferry-demo-XXXXXX";
    char *d = mkdtemp(tmpl);
    assert_non_null(d);
    char *out = malloc(strlen(d) + 32);
    sprintf(out, "%s/%s", d, tag);
    return out;
}

static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[4096];
    fy_path_join(path, sizeof path, dir, name);
    char *s = NULL;
    assert_int_equal(fy_file_read(path, 64u << 20, &s, len), 0);
    return s;
}

static void test_loads(void **state)
{
    (void)state;
    for (int bf16 = 0; bf16 <= 1; bf16++) {
        char *dir = make_dir(bf16 ? "bf16" : "f32");
        char err[512] = "";
        if (fy_rn_demo_model_write(dir, 7, bf16, err, sizeof err)) {
            fail_msg("write: %s", err);
        }
        fy_model *m = NULL;
        if (fy_model_load(dir, &m, err, sizeof err)) {
            fail_msg("the loader refused the demo model: %s", err);
        }
        assert_string_equal(m->cfg.arch, "LlamaForCausalLM");
        assert_int_equal(m->cfg.n_layers, 2);
        assert_int_equal(m->cfg.n_kv_heads, 2);
        assert_false(m->cfg.tie_embeddings); /* its own lm_head: see demo_model.c */
        assert_int_equal(m->cfg.n_eos, 2);
        fy_model_free(m);

        fy_tokenizer *t = NULL;
        if (fy_tokenizer_load(dir, &t, err, sizeof err)) {
            fail_msg("tokenizer: %s", err);
        }
        assert_int_equal(fy_tokenizer_bos(t), 1);
        /* Any text round-trips: ASCII, merges, UTF-8 through byte fallback. */
        static const char *const texts[] = {
            "Once upon a time, the cat and the dog were out.",
            "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80\n\ttabs  and  spaces",
            "<|im_start|>user\nhi<|im_end|>",
        };
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            fy_encode_options eo = {.add_special = 0, .parse_special = 1};
            int32_t *ids = NULL;
            size_t n = 0;
            assert_int_equal(fy_tokenizer_encode(t, texts[i], strlen(texts[i]), &eo, &ids, &n), 0);
            assert_true(n > 0);
            for (size_t k = 0; k < n; k++) {
                assert_true(ids[k] >= 0 && ids[k] < fy_tokenizer_vocab_size(t));
            }
            char *back = NULL;
            size_t bl = 0;
            assert_int_equal(fy_tokenizer_decode(t, ids, n, 0, &back, &bl), 0);
            if (strcmp(back, texts[i]) != 0) {
                fail_msg("round trip of '%s' gave '%s'", texts[i], back);
            }
            free(back);
            free(ids);
        }
        /* The merges are used: " the" is one token. */
        fy_encode_options eo = {0};
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(fy_tokenizer_encode(t, " the", 4, &eo, &ids, &n), 0);
        assert_int_equal(n, 1);
        free(ids);
        fy_tokenizer_free(t);

        /* The chat template compiles and renders ChatML. */
        size_t len;
        char *tc = slurp(dir, "tokenizer_config.json", &len);
        json_t *root = json_loads(tc, 0, NULL);
        free(tc);
        const char *src = json_string_value(json_object_get(root, "chat_template"));
        assert_non_null(src);
        fy_jinja *j = NULL;
        if (fy_jinja_compile(src, strlen(src), FY_JINJA_TRIM_BLOCKS | FY_JINJA_LSTRIP_BLOCKS, &j,
                             err, sizeof err)) {
            fail_msg("template: %s", err);
        }
        json_t *vars = json_pack("{s:[{s:s, s:s}], s:b}", "messages", "role", "user", "content",
                                 "hi", "add_generation_prompt", 1);
        char *out = NULL;
        assert_int_equal(fy_jinja_render(j, vars, NULL, &out, NULL, err, sizeof err), 0);
        assert_string_equal(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        free(out);
        json_decref(vars);
        fy_jinja_free(j);
        json_decref(root);
        free(dir);
    }
}

static void test_deterministic(void **state)
{
    (void)state;
    char *a = make_dir("a"), *b = make_dir("b"), *c = make_dir("c");
    char err[256];
    assert_int_equal(fy_rn_demo_model_write(a, 42, 0, err, sizeof err), 0);
    assert_int_equal(fy_rn_demo_model_write(b, 42, 0, err, sizeof err), 0);
    assert_int_equal(fy_rn_demo_model_write(c, 43, 0, err, sizeof err), 0);
    size_t la, lb, lc;
    char *wa = slurp(a, "model.safetensors", &la);
    char *wb = slurp(b, "model.safetensors", &lb);
    char *wc = slurp(c, "model.safetensors", &lc);
    assert_int_equal(la, lb);
    assert_memory_equal(wa, wb, la);
    assert_int_equal(la, lc);
    assert_true(memcmp(wa, wc, la) != 0);
    free(wa);
    free(wb);
    free(wc);
    /* The README says plainly that the weights are random. */
    char *rd = slurp(a, "README.md", &la);
    assert_non_null(strstr(rd, "RANDOM"));
    free(rd);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loads),
        cmocka_unit_test(test_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
